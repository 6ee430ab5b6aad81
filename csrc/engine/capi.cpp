// The engine's section of the C API (dkd/dkd.h, dkd_net_*), with the same guard and
// dkd_last_error() as the rest of the C API (capi/dkd_capi.cpp).
#include <algorithm>
#include <cstring>

#include "common/error.h"
#include "common/parallel.h"
#include "dkd/dkd.h"
#include "engine/net.h"

using dkd::engine::Net;

struct dkd_net {
    std::unique_ptr<Net> net;
    std::vector<float> out;
};

namespace {

Net& get(const dkd_net* n, const char* fn) {
    if (n == nullptr || !n->net) dkd::fail(DKD_ERR_NULL, fn, ": net is NULL");
    return *n->net;
}

}  // namespace

extern "C" {

int dkd_net_load(const char* cfg_path, const char* weights_path, int32_t width, int32_t height, int precision,
                 int device, dkd_net** net) {
    if (net) *net = nullptr;
    return dkd::capi_guard([&] {
        dkd::check_not_null(net, "net_load", "net");
        dkd::check_not_null(cfg_path, "net_load", "cfg_path");
        auto h = std::make_unique<dkd_net>();
        h->net = std::make_unique<Net>(cfg_path, width, height, static_cast<dkd::engine::Precision>(precision), device);
        if (weights_path) h->net->load_weights(weights_path);
        *net = h.release();
    });
}

int dkd_net_free(dkd_net* net) {
    return dkd::capi_guard([&] { delete net; });
}

int dkd_net_describe(const dkd_net* net, dkd_net_desc* desc) {
    return dkd::capi_guard([&] {
        const Net& n = get(net, "net_describe");
        dkd::check_not_null(desc, "net_describe", "desc");
        dkd_net_desc d{};
        d.width = (int32_t)n.info().width;
        d.height = (int32_t)n.info().height;
        d.channels = (int32_t)n.info().channels;
        d.classes = (int32_t)n.classes();
        d.rows = n.rows();
        d.precision = (int32_t)n.precision();
        d.device = n.device();
        d.num_layers = (int32_t)n.layers().size();
        d.num_yolo = (int32_t)n.yolo_layers().size();
        d.letter_box = (int32_t)n.info().letter_box;
        d.threads = n.threads() > 0 ? n.threads() : dkd::num_threads();
        d.bflops = n.bflops();
        d.parameters = n.parameters();
        *desc = d;
    });
}

int dkd_net_set_threads(dkd_net* net, int threads) {
    return dkd::capi_guard([&] { get(net, "net_set_threads").set_threads(threads); });
}

int dkd_net_forward(dkd_net* net, const float* input, int64_t batch, float* output) {
    return dkd::capi_guard([&] {
        Net& n = get(net, "net_forward");
        n.forward(input, batch);
        if (output) n.decoded(output);
    });
}

int dkd_net_head(dkd_net* net, int32_t i, const float** data, int64_t* shape) {
    return dkd::capi_guard([&] {
        Net& n = get(net, "net_head");
        dkd::check_not_null(data, "net_head", "data");
        dkd::check_not_null(shape, "net_head", "shape");
        if (i < 0) dkd::fail(DKD_ERR_VALUE, "net_head: index ", i, " is negative");
        *data = n.head((size_t)i);
        const auto& y = n.yolo_layers()[i];
        shape[0] = n.last_batch();
        shape[1] = y->in.c;
        shape[2] = y->in.h;
        shape[3] = y->in.w;
    });
}

int dkd_net_detect(dkd_net* net, const uint8_t* rgb, int32_t width, int32_t height, int64_t stride, float thresh,
                   float nms_thresh, int letterbox, dkd_detection* dets, int64_t capacity, int64_t* count) {
    return dkd::capi_guard([&] {
        Net& n = get(net, "net_detect");
        dkd::check_not_null(rgb, "net_detect", "rgb");
        dkd::check_not_null(count, "net_detect", "count");
        dkd::check_size(capacity, "net_detect", "capacity");
        if (capacity > 0) dkd::check_not_null(dets, "net_detect", "dets");
        if (letterbox < -1 || letterbox > 1) dkd::fail(DKD_ERR_VALUE, "net_detect: letterbox=", letterbox, " is not -1, 0 or 1");
        dkd::engine::DetectOptions opt;
        opt.thresh = thresh;
        opt.nms = nms_thresh;
        opt.letterbox = letterbox;
        auto found = n.detect(rgb, width, height, stride, opt);
        *count = (int64_t)found.size();
        for (int64_t i = 0; i < std::min<int64_t>(capacity, *count); ++i) {
            const auto& d = found[i];
            dets[i] = dkd_detection{d.x, d.y, d.w, d.h, d.prob, d.class_id, d.box};
        }
    });
}

int dkd_net_text(const dkd_net* net, int what, char* buf, size_t cap, size_t* len) {
    return dkd::capi_guard([&] {
        const Net& n = get(net, "net_text");
        std::string s;
        if (what == DKD_NET_TEXT_LAYERS) {
            s = n.layer_table();
        } else if (what == DKD_NET_TEXT_WARNINGS) {
            for (const auto& w : n.warnings()) s += w + "\n";
        } else if (what == DKD_NET_TEXT_PROFILE) {
            s = n.profile_table();
        } else {
            dkd::fail(DKD_ERR_VALUE, "net_text: what=", what,
                      " is not DKD_NET_TEXT_LAYERS, DKD_NET_TEXT_WARNINGS or DKD_NET_TEXT_PROFILE");
        }
        if (len) *len = s.size();
        if (cap > 0) {
            dkd::check_not_null(buf, "net_text", "buf");
            size_t k = std::min(cap - 1, s.size());
            std::memcpy(buf, s.data(), k);
            buf[k] = '\0';
        }
    });
}

int dkd_cpu_has_bf16(void) { return dkd::engine::cpu_has_bf16() ? 1 : 0; }

}  // extern "C"
