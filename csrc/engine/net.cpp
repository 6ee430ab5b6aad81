#include "engine/net.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "common/parallel.h"
#include "engine/image.h"
#include "engine/layers/util.h"
#include "engine/plan.h"
#include "engine/weights.h"
#include "ops/nms/nms.h"
#include "ops/yolo_decode/yolo_decode.h"
#ifdef DKD_ENGINE_CUDA
#include "engine/cuda/cuda_net.h"
#endif

namespace dkd {
namespace engine {

std::string pad_left(const std::string& s, size_t width) {
    return s.size() >= width ? s : std::string(width - s.size(), ' ') + s;
}
std::string pad_right(const std::string& s, size_t width) {
    return s.size() >= width ? s : s + std::string(width - s.size(), ' ');
}
std::string fmt_int(int64_t v, int width) { return pad_left(std::to_string(v), (size_t)width); }

std::string Shape::str() const { return fmt_int(w, 4) + " x" + fmt_int(h, 4) + " x" + fmt_int(c, 4); }

bool cpu_has_bf16() {
    static const bool has = [] {
        auto isa = dnnl::get_effective_cpu_isa();
        return isa == dnnl::cpu_isa::avx512_core_bf16 || isa == dnnl::cpu_isa::avx512_core_amx;
    }();
    return has;
}

namespace {

// [net] as darknet_kd/model/darknet.py NetOptions.from_section: every field read in the same
// order with its type (for the same type errors), then the same checks.
NetInfo parse_net(const Section& sec) {
    NetInfo o;
    o.batch = sec.get_int("batch", 1);
    int64_t subdivisions = sec.get_int("subdivisions", 1);
    o.width = sec.get_int("width", 416);
    o.height = sec.get_int("height", 416);
    o.channels = sec.get_int("channels", 3);
    for (const char* k : {"learning_rate", "momentum", "decay"}) sec.get_float(k, 0);
    sec.get_int("burn_in", 0);
    sec.get_float("power", 4);
    sec.get_int("max_batches", 0);
    std::string policy = sec.get_str("policy", "constant");
    bool has_steps = false, has_scales = false;
    size_t steps = sec.get_ints("steps", &has_steps).size();
    size_t scales = sec.get_floats("scales", &has_scales).size();
    sec.get_int("step", 1);
    for (const char* k : {"scale", "gamma", "angle", "saturation", "exposure", "hue"}) sec.get_float(k, 0);
    for (const char* k : {"flip", "mosaic"}) sec.get_int(k, 0);
    o.letter_box = sec.get_int("letter_box", 0);
    for (const char* k : {"blur", "mixup"}) sec.get_int(k, 0);
    sec.get_float("label_smooth_eps", 0);
    sec.get_float("resize_step", 32);
    sec.get_float("ema_alpha", 0);
    sec.mark_used({"learning_rate_min", "sgdr_cycle", "sgdr_mult", "track", "augment_speed", "sequential_subdivisions",
                   "try_fix_nan", "weights_reject_freq", "equidistant_point", "badlabels_rejection_percentage",
                   "num_sigmas_reject_badlabels", "use_cuda_graph", "loss_scale", "dynamic_minibatch",
                   "optimized_memory", "workspace_size_limit_MB", "adam", "B1", "B2", "eps", "inputs",
                   "gaussian_noise", "cutmix", "mosaic_bound", "contrastive", "contrastive_jit_flip",
                   "contrastive_color", "unsupervised", "attention", "adversarial_lr", "max_chart_loss", "aspect",
                   "seq_scales", "time_steps", "max_crop", "min_crop", "center", "stream", "wait_stream", "notruth",
                   "random", "train_only_bn", "rotate", "max_batches"});
    if (!(1 <= o.width && o.width <= 16384 && 1 <= o.height && o.height <= 16384 && 1 <= o.channels &&
          o.channels <= 4096))
        sec.error(str("width=", o.width, " height=", o.height, " channels=", o.channels,
                      " must be positive (and at most 16384 x 16384 x 4096)"));
    if (o.batch < 1 || subdivisions < 1)
        sec.error(str("batch=", o.batch, " and subdivisions=", subdivisions, " must be positive"));
    if (policy == "steps" && steps != scales)
        sec.error(str("steps has ", steps, " values, scales has ", scales), "scales");
    return o;
}

}  // namespace

// Defined here so that unique_ptr<CudaState> sees the complete type.
struct Net::CudaState {
#ifdef DKD_ENGINE_CUDA
    std::unique_ptr<CudaNet> net;
#endif
};

Net::Net(const std::string& cfg_path, int64_t width, int64_t height, Precision precision, int device)
    : cfg_(parse_cfg_file(cfg_path)), precision_(precision), device_(device) {
    if (device != DKD_DEVICE_CPU && device != DKD_DEVICE_CUDA)
        fail(DKD_ERR_DEVICE, "net_load: device=", device, " is neither DKD_DEVICE_CPU (0) nor DKD_DEVICE_CUDA (1)");
#ifndef DKD_ENGINE_CUDA
    if (device == DKD_DEVICE_CUDA)
        fail(DKD_ERR_DEVICE, "net_load: this libdkd was built without the engine's CUDA path (needs nvcc and cuBLAS)");
#else
    if (device == DKD_DEVICE_CUDA && dkd_cuda_device_count() == 0) fail(DKD_ERR_DEVICE, "net_load: no CUDA device");
#endif
    if (width < 0 || height < 0 || width > 16384 || height > 16384)
        fail(DKD_ERR_VALUE, "net_load: width=", width, ", height=", height, " must lie in [0, 16384] (0: the cfg's)");
    if (precision != Precision::kF32 && precision != Precision::kBF16)
        fail(DKD_ERR_VALUE, "net_load: precision=", (int)precision, " is neither DKD_PRECISION_FP32 nor DKD_PRECISION_BF16");
    if (precision_ == Precision::kBF16 && (device == DKD_DEVICE_CUDA || !cpu_has_bf16())) precision_ = Precision::kF32;
    info_ = parse_net(cfg_.net);
    if (width) info_.width = width;
    if (height) info_.height = height;
    Shape shape{info_.channels, info_.height, info_.width};
    std::vector<Shape> shapes;
    for (const Section& sec : cfg_.layers) {
        int i = sec.index;
        std::unique_ptr<Layer> l;
        if (sec.name == "convolutional") l = make_convolutional(i, shape, sec);
        else if (sec.name == "maxpool") l = make_maxpool(i, shape, sec);
        else if (sec.name == "route") l = make_route(i, shape, sec, shapes);
        else if (sec.name == "shortcut") l = make_shortcut(i, shape, sec, shapes);
        else if (sec.name == "upsample") l = make_upsample(i, shape, sec);
        else if (sec.name == "dropout") l = make_dropout(i, shape, sec);
        else if (sec.name == "avgpool") l = make_avgpool(i, shape, sec);
        else if (sec.name == "yolo") l = make_yolo(i, shape, sec, info_.width, info_.height);
        else sec.error("unsupported section");
        // Activations of any layer must stay addressable (the Python model would not allocate them either).
        if ((long double)l->out.c * l->out.h * l->out.w > (long double)(int64_t(1) << 40))
            sec.error(str("output ", l->out.str(), " is too large"));
        shapes.push_back(l->out);
        shape = l->out;
        layers_.push_back(std::move(l));
    }
    std::vector<int64_t> classes;
    for (const auto& l : layers_)
        if (l->kind == "yolo") {
            yolo_.push_back(l.get());
            classes.push_back(yolo_info(*l).classes);
        }
    if (yolo_.empty()) cfg_.layers.back().error("the network has no [yolo] layer: not a detector");
    std::vector<int64_t> distinct(classes);
    std::sort(distinct.begin(), distinct.end());
    distinct.erase(std::unique(distinct.begin(), distinct.end()), distinct.end());
    if (distinct.size() != 1) {
        std::string list;
        for (size_t i = 0; i < distinct.size(); ++i) list += (i ? ", " : "") + std::to_string(distinct[i]);
        cfg_.layers[yolo_.back()->index].error("[yolo] layers disagree on classes: [" + list + "]", "classes");
    }
    classes_ = distinct[0];
    rows_ = 0;
    for (const Layer* y : yolo_) {
        const YoloInfo& yi = yolo_info(*y);
        rows_ += yi.num_anchors() * yi.h * yi.w;
    }
    cfg_.collect_unused();
    cuda_ = std::make_unique<CudaState>();
}

Net::~Net() = default;

void Net::load_weights(const std::string& path) {
    WeightsFile wf = read_weights(path, layers_);
    for (size_t i = 0; i < 3; ++i) weights_version[i] = wf.version[i];
    seen = wf.seen;
    if (wf.layers_loaded < (int64_t)layers_.size())
        cfg_.warnings.push_back(str(path, ": partial weights: layers 0..", wf.layers_loaded - 1,
                                    " loaded, the later layers keep zero weights"));
    plans_.clear();
    last_ = nullptr;
    profile_.clear();
#ifdef DKD_ENGINE_CUDA
    cuda_->net.reset();
#endif
}

void Net::set_threads(int threads) {
    if (threads < 0) fail(DKD_ERR_VALUE, "net_set_threads: threads=", threads, " is negative (0 = default)");
    threads_ = threads;
}

int64_t Net::parameters() const {
    int64_t s = 0;
    for (const auto& l : layers_) s += l->num_parameters();
    return s;
}

double Net::bflops() const {
    double s = 0;
    for (const auto& l : layers_)
        if (l->bflops > 0) s += l->bflops;
    return s;
}

std::string Net::layer_table() const {
    std::string t = "   layer   filters  size/strd(dil)      input                output\n";
    char bf[64];
    for (const auto& l : layers_) {
        std::string b;
        if (l->bflops > 0) {
            std::snprintf(bf, sizeof bf, " %5.3f BF", l->bflops);
            b = bf;
        }
        std::string row = fmt_int(l->index, 4) + " ";
        const std::string& k = l->kind;
        if (k == "conv" || k == "max" || k == "avg")
            row += pad_right(k, 8) + pad_right(l->describe(), 22) + l->in.str() + " -> " + l->out.str() + b;
        else if (k == "upsample")
            row += pad_right(k, 8) + pad_right(l->describe(), 22) + l->in.str() + " -> " + l->out.str();
        else if (k == "route")
            row += pad_right(k, 8) + pad_right(l->describe(), 22) + std::string(20, ' ') + "-> " + l->out.str();
        else if (k == "shortcut")
            row += pad_right(l->describe(), 30) + std::string(12, ' ') + "  wt = 0, wn = 0, outputs: " + l->out.str() + b;
        else
            row += pad_right(k, 8) + l->describe();
        t += row + "\n";
    }
    std::snprintf(bf, sizeof bf, "Total BFLOPS %5.3f", bflops());
    return t + bf;
}

std::string Net::profile_table() const {
    if (device_ != DKD_DEVICE_CPU) fail(DKD_ERR_DEVICE, "net_text: the per-layer profile is measured on the CPU only");
    if (last_ && last_->profiled_runs() == 0 && !profile_.empty()) return profile_;  // asked again (e.g. for its length)
    if (!last_ || last_->profiled_runs() == 0) fail(DKD_ERR_VALUE, "net_text: no forward has run yet");
    const double runs = (double)last_->profiled_runs();
    const std::vector<double>& ms = last_->layer_ms();
    double total = 0;
    for (double v : ms) total += v;
    total /= runs;
    std::string t = str("   layer   filters  size/strd(dil)      ms/forward      %  GFLOP/s   (batch ", last_->batch, ", ",
                        last_->threads, " threads, ", (int64_t)runs, " forwards)\n");
    char buf[96];
    for (const auto& l : layers_) {
        double m = ms[l->index] / runs;
        std::string desc = l->kind == "shortcut" ? "" : l->describe();
        std::snprintf(buf, sizeof buf, "%10.3f %6.1f", m, total > 0 ? 100.0 * m / total : 0.0);
        std::string row = fmt_int(l->index, 4) + " " + pad_right(l->kind, 8) + pad_right(desc, 22) + buf;
        if (l->bflops > 0 && m > 0) {
            std::snprintf(buf, sizeof buf, " %8.1f", l->bflops * last_->batch / m * 1e3);
            row += buf;
        }
        t += row + "\n";
    }
    std::snprintf(buf, sizeof buf, "Total %.3f ms per forward, %.1f GFLOP/s", total, total > 0 ? bflops() * last_->batch / total * 1e3 : 0.0);
    last_->reset_profile();
    return profile_ = t + buf;
}

Plan& Net::plan_for(int64_t batch) {
    int threads = threads_ > 0 ? threads_ : dkd::num_threads();
    auto key = std::make_pair(batch, threads);
    auto it = plans_.find(key);
    if (it == plans_.end()) {
        try {
            it = plans_.emplace(key, std::make_unique<Plan>(layers_, info_, batch, precision_, threads)).first;
        } catch (const dnnl::error& e) {
            fail(DKD_ERR_INTERNAL, "oneDNN could not plan the network (batch ", batch, "): ", e.what());
        }
    }
    return *it->second;
}

void Net::forward(const float* input, int64_t batch) {
    check_not_null(input, "net_forward", "input");
    if (batch < 1 || batch > 4096) fail(DKD_ERR_SIZE, "net_forward: batch=", batch, " must lie in [1, 4096]");
#ifdef DKD_ENGINE_CUDA
    if (device_ == DKD_DEVICE_CUDA) {
        if (!cuda_->net) cuda_->net = std::make_unique<CudaNet>(layers_, info_);
        cuda_->net->forward(input, batch);
        last_batch_ = batch;
        return;
    }
#endif
    Plan& p = plan_for(batch);
    try {
        p.run(input);
    } catch (const dnnl::error& e) {
        fail(DKD_ERR_INTERNAL, "oneDNN failed: ", e.what());
    }
    last_ = &p;
    last_batch_ = batch;
}

const float* Net::head(size_t i) const {
    if (i >= yolo_.size()) fail(DKD_ERR_VALUE, "net_head: index ", i, " is not below the ", yolo_.size(), " [yolo] layers");
    if (last_batch_ == 0) fail(DKD_ERR_VALUE, "net_head: no forward has run");
#ifdef DKD_ENGINE_CUDA
    if (device_ == DKD_DEVICE_CUDA) return cuda_->net->head(i);
#endif
    return static_cast<const float*>(last_->data(last_->heads[i]));
}

namespace {

// One image's candidates of one head through the one decoder (ops/yolo_decode).
int64_t decode_head(const YoloInfo& yi, const float* head, int64_t b, const NetInfo& info, float thresh,
                    const int32_t* letterbox_wh, int device, std::vector<float>& rows) {
    const int64_t A = yi.num_anchors(), C = A * (yi.classes + 5), per = yi.classes + 5;
    YoloDecodeArgs a;
    a.head = head + b * C * yi.h * yi.w;
    a.batch = 1;
    a.channels = C;
    a.height = yi.h;
    a.width = yi.w;
    a.stride[0] = C * yi.h * yi.w, a.stride[1] = yi.h * yi.w, a.stride[2] = yi.w, a.stride[3] = 1;
    a.anchors_n = A;
    a.anchors = yi.anchors.data();
    a.net_w = (int32_t)info.width;
    a.net_h = (int32_t)info.height;
    a.scale_x_y = yi.scale_x_y;
    a.new_coords = yi.new_coords;
    a.thresh = thresh;
    a.letterbox_wh = letterbox_wh;
    int64_t cap = A * yi.h * yi.w;
    std::vector<int64_t> index(cap);
    size_t start = rows.size();
    rows.resize(start + cap * per);
    a.out = rows.data() + start;
    a.out_index = index.data();
    a.capacity = cap;
    int64_t n = 0;
    a.num_candidates = &n;
    a.device = device;
    yolo_decode(a);
    rows.resize(start + n * per);
    return n;
}

}  // namespace

void Net::decoded(float* out) const {
    check_not_null(out, "net_forward", "output");
    if (last_batch_ == 0) fail(DKD_ERR_VALUE, "net_decoded: no forward has run");
    const int64_t per = classes_ + 5;
    std::vector<float> rows;
    for (int64_t b = 0; b < last_batch_; ++b) {
        rows.clear();
        for (size_t i = 0; i < yolo_.size(); ++i)
            decode_head(yolo_info(*yolo_[i]), head(i), b, info_, -std::numeric_limits<float>::infinity(),
                        nullptr, DKD_DEVICE_CPU, rows);
        if ((int64_t)rows.size() != rows_ * per)
            fail(DKD_ERR_VALUE, "net_forward: the network output has NaN objectness (image ", b, ")");
        std::memcpy(out + b * rows_ * per, rows.data(), rows.size() * sizeof(float));
    }
}

std::vector<std::vector<Detection>> Net::postprocess(int64_t batch, const std::vector<int32_t>* letterbox_wh,
                                                     float thresh, float nms_thresh) {
    const int64_t C = classes_, per = C + 5;
    const YoloInfo& last = yolo_info(*yolo_.back());
    std::vector<std::vector<Detection>> result(batch);
    for (int64_t b = 0; b < batch; ++b) {
        std::vector<float> rows;
        for (size_t i = 0; i < yolo_.size(); ++i)
            decode_head(yolo_info(*yolo_[i]), head(i), b, info_, thresh,
                        letterbox_wh ? letterbox_wh->data() + 2 * b : nullptr, DKD_DEVICE_CPU, rows);
        const int64_t n = (int64_t)rows.size() / per;
        if (n == 0) continue;
        // Darknet's get_yolo_detections: prob = objectness * class prob, zeroed unless > thresh.
        std::vector<float> boxes(n * 4), probs(n * C);
        for (int64_t i = 0; i < n; ++i) {
            const float* r = rows.data() + i * per;
            std::copy(r, r + 4, boxes.begin() + i * 4);
            for (int64_t k = 0; k < C; ++k) {
                float p = r[4] * r[5 + k];
                probs[i * C + k] = p > thresh ? p : 0.f;
            }
        }
        std::vector<uint8_t> keep(n * C);
        NmsArgs a;
        a.boxes = boxes.data();
        a.scores = probs.data();
        a.n = n;
        a.classes = C;
        a.images = 1;
        a.iou_thresh = nms_thresh;
        a.score_thresh = thresh;
        a.kind = last.nms_kind;
        a.beta = last.beta_nms;
        a.keep = keep.data();
        a.device = DKD_DEVICE_CPU;
        nms(a);
        auto& dets = result[b];
        for (int64_t i = 0; i < n; ++i)
            for (int64_t k = 0; k < C; ++k)
                if (keep[i * C + k])
                    dets.push_back({boxes[i * 4], boxes[i * 4 + 1], boxes[i * 4 + 2], boxes[i * 4 + 3], probs[i * C + k],
                                    (int32_t)k, (int32_t)i});
        std::stable_sort(dets.begin(), dets.end(), [](const Detection& x, const Detection& y) { return x.prob > y.prob; });
    }
    return result;
}

std::vector<std::vector<Detection>> Net::detect_batch(const std::vector<const uint8_t*>& rgb,
                                                      const std::vector<int64_t>& w, const std::vector<int64_t>& h,
                                                      const DetectOptions& opt) {
    const int64_t batch = (int64_t)rgb.size();
    if (batch < 1) fail(DKD_ERR_SIZE, "net_detect: no images");
    if (info_.channels != 3) fail(DKD_ERR_VALUE, "net_detect: the network takes ", info_.channels, " channels, images have 3");
    if (!(opt.thresh >= 0 && opt.thresh < 1)) fail(DKD_ERR_VALUE, "net_detect: thresh=", opt.thresh, " must lie in [0, 1)");
    if (!std::isfinite(opt.nms)) fail(DKD_ERR_VALUE, "net_detect: nms=", opt.nms, " is not finite");
    bool lb = opt.letterbox < 0 ? info_.letter_box != 0 : opt.letterbox != 0;
    const int64_t plane = 3 * info_.width * info_.height;
    input_buf_.resize(batch * plane);
    std::vector<int32_t> wh;
    for (int64_t b = 0; b < batch; ++b) {
        check_not_null(rgb[b], "net_detect", "image");
        if (w[b] < 1 || h[b] < 1 || w[b] > 65536 || h[b] > 65536)
            fail(DKD_ERR_SIZE, "net_detect: image ", b, " is ", w[b], "x", h[b], " (each side must lie in [1, 65536])");
        wh.push_back((int32_t)w[b]);
        wh.push_back((int32_t)h[b]);
    }
    parallel_for(batch, 1, [&](int64_t b) {
        preprocess(rgb[b], w[b], h[b], w[b] * 3, lb, info_.width, info_.height, input_buf_.data() + b * plane);
    });
    forward(input_buf_.data(), batch);
    return postprocess(batch, lb ? &wh : nullptr, opt.thresh, opt.nms);
}

std::vector<Detection> Net::detect(const uint8_t* rgb, int64_t w, int64_t h, int64_t stride, const DetectOptions& opt) {
    if (stride == w * 3 || rgb == nullptr) return detect_batch({rgb}, {w}, {h}, opt)[0];
    if (stride < w * 3) fail(DKD_ERR_SIZE, "net_detect: row stride ", stride, " is below width*3 = ", w * 3);
    std::vector<uint8_t> dense((size_t)w * h * 3);
    for (int64_t y = 0; y < h; ++y) std::memcpy(dense.data() + y * w * 3, rgb + y * stride, (size_t)w * 3);
    return detect_batch({dense.data()}, {w}, {h}, opt)[0];
}

}  // namespace engine
}  // namespace dkd
