// [yolo]: holds the anchors and decode settings; its step hands the head (the previous
// layer's output) over as plain NCHW float for the one decoder (ops/yolo_decode).  Every
// option the Python Yolo layer reads is read here in the same order, with the same checks.
#include <limits>

#include "dkd/dkd.h"
#include "engine/layers/util.h"
#ifdef DKD_ENGINE_CUDA
#include "engine/cuda/cuda_net.h"
#include "engine/cuda/kernels.h"
#endif

namespace dkd {
namespace engine {
namespace {

class Yolo : public Layer {
public:
    YoloInfo yi;
    std::vector<int64_t> mask;

    std::string describe() const override {
        std::string m;
        for (size_t i = 0; i < mask.size(); ++i) m += (i ? "," : "") + std::to_string(mask[i]);
        return str("classes ", yi.classes, ", mask ", m);
    }

    void plan_cpu(Plan& p) const override {
        int head = p.as(p.input_of(*this), p.plain(in, dt::f32));
        p.keep(head);
        p.heads.push_back(head);
        p.set_output(index, head);
    }
#ifdef DKD_ENGINE_CUDA
    // The head is the previous layer's output; CudaNet copies it to the host.
    void forward_cuda(CudaContext& ctx) const override { ctx.alias_output(*this, ctx.input(*this)); }
#endif
};

}  // namespace

const YoloInfo& yolo_info(const Layer& layer) { return dynamic_cast<const Yolo&>(layer).yi; }

std::unique_ptr<Layer> make_yolo(int index, const Shape& in, const Section& sec, int64_t net_w, int64_t net_h) {
    (void)net_w, (void)net_h;
    auto l = std::make_unique<Yolo>();
    l->index = index, l->line = sec.line, l->kind = "yolo", l->in = in, l->out = in;
    int64_t classes = sec.get_int("classes", 20);
    int64_t total = sec.get_int("num", 1);
    bool has_mask = false, has_anchors = false;
    std::vector<int64_t> mask = sec.get_ints("mask", &has_mask);
    if (!has_mask)
        for (int64_t i = 0; i < total; ++i) mask.push_back(i);
    std::vector<double> anchors = sec.get_floats("anchors", &has_anchors);
    if (!has_anchors) anchors.assign(total > 0 ? 2 * total : 0, 0.5);
    if (classes < 1) sec.error(str("classes=", classes, " must be positive"), "classes");
    if ((int64_t)anchors.size() != 2 * total)
        sec.error(str("anchors= has ", anchors.size(), " numbers, num=", total, " needs ", 2 * total), "anchors");
    for (int64_t m : mask)
        if (!(0 <= m && m < total)) sec.error(str("mask index ", m, " is outside the ", total, " anchors"), "mask");
    for (const char* k : {"jitter", "resize", "ignore_thresh", "truth_thresh", "iou_thresh"}) sec.get_float(k, 0);
    sec.get_choice("iou_thresh_kind", {"iou", "giou", "diou", "ciou"}, "iou");
    double sxy = sec.get_float("scale_x_y", 1.0);
    for (const char* k : {"iou_normalizer", "obj_normalizer", "cls_normalizer", "delta_normalizer"}) sec.get_float(k, 0);
    sec.get_choice("iou_loss", {"mse", "iou", "giou", "diou", "ciou"}, "mse");
    std::string nms_kind = sec.get_choice("nms_kind", {"default", "greedynms", "diounms", "cornersnms"}, "default");
    double beta = sec.get_float("beta_nms", 0.6);
    int64_t new_coords = sec.get_int("new_coords", 0);
    sec.get_float("random", 0);
    sec.get_int("max", 200);
    sec.get_float("max_delta", 0);
    sec.get_float("label_smooth_eps", 0);
    sec.get_int("objectness_smooth", 0);
    bool has_cpc = false;
    std::vector<int64_t> cpc = sec.get_ints("counters_per_class", &has_cpc);
    if (has_cpc && (int64_t)cpc.size() != classes)
        sec.error(str("counters_per_class has ", cpc.size(), " values, classes=", classes), "counters_per_class");
    if (sec.get_int("focal_loss", 0)) sec.error("focal_loss=1 is not supported by the trainer", "focal_loss");
    sec.mark_used({"show_details", "map", "embedding_layer", "track_history_size", "sim_thresh", "dets_for_track",
                   "dets_for_show", "track_ciou_norm", "embedding_size", "equidistant_point", "thresh", "bias_match",
                   "rescore", "absolute"});
    int64_t na = (int64_t)mask.size();
    long double expected = (long double)na * ((long double)classes + 5);
    if ((long double)in.c != expected)
        sec.error(str("the layer before [yolo] has filters=", in.c, ", but (classes+5)*len(mask) = (", classes, "+5)*", na,
                      " = ", (int64_t)expected));
    l->mask = mask;
    l->yi.layer = index;
    l->yi.classes = classes;
    l->yi.h = in.h;
    l->yi.w = in.w;
    for (int64_t m : mask) {
        l->yi.anchors.push_back((float)anchors[2 * m]);
        l->yi.anchors.push_back((float)anchors[2 * m + 1]);
    }
    l->yi.scale_x_y = sxy;
    l->yi.new_coords = new_coords != 0;
    l->yi.nms_kind = nms_kind == "greedynms" ? DKD_NMS_GREEDY_DIOU : nms_kind == "diounms" ? DKD_NMS_DIOU : DKD_NMS_IOU;
    l->yi.beta_nms = (float)beta;
    return l;
}

}  // namespace engine
}  // namespace dkd
