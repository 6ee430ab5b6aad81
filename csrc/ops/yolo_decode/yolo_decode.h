// yolo_decode: raw [yolo] head -> candidate rows (objectness > thresh), as Darknet's
// yolo layer decodes (src/yolo_layer.c get_yolo_box, get_yolo_detections,
// correct_yolo_boxes).  See dkd_yolo_decode in dkd/dkd.h for the contract.
#pragma once

#include <cstdint>

namespace dkd {

struct YoloDecodeArgs {
    const float* head = nullptr;
    int64_t batch = 0, channels = 0, height = 0, width = 0;  // head shape
    int64_t stride[4] = {0, 0, 0, 0};                        // element strides of b, c, h, w
    int64_t anchors_n = 0;                                    // A (masked anchors)
    const float* anchors = nullptr;                           // [A][2] pixels
    int32_t net_w = 0, net_h = 0;
    double scale_x_y = 1.0;
    int new_coords = 0;
    float thresh = 0.f;
    const int32_t* letterbox_wh = nullptr;  // [B][2] or nullptr
    float* out = nullptr;                   // [capacity][5+C]
    int64_t* out_index = nullptr;           // [capacity]
    int64_t capacity = 0;
    int64_t* num_candidates = nullptr;      // host
    int device = 0;
    void* stream = nullptr;

    int64_t classes() const { return channels / anchors_n - 5; }
};

void yolo_decode(const YoloDecodeArgs& args);

namespace cpu {
void yolo_decode(const YoloDecodeArgs& args);
}
namespace cuda {
void yolo_decode(const YoloDecodeArgs& args);
}

// Darknet's correct_yolo_boxes letterbox geometry for one image (float math as Darknet).
struct Letterbox {
    double off_x, off_y;     // (netw - new_w) / 2. / netw, in double as Darknet
    float ratio_w, ratio_h;  // (float)new_w / netw
    float inv_w, inv_h;      // 1 / ratio (float)
};

#if defined(__CUDACC__)
#define DKD_HD __host__ __device__
#else
#define DKD_HD
#endif

DKD_HD inline Letterbox letterbox_geometry(int32_t im_w, int32_t im_h, int32_t net_w, int32_t net_h) {
    int64_t new_w, new_h;
    if ((float)net_w / im_w < (float)net_h / im_h) {
        new_w = net_w;
        new_h = ((int64_t)im_h * net_w) / im_w;
    } else {
        new_h = net_h;
        new_w = ((int64_t)im_w * net_h) / im_h;
    }
    Letterbox g;
    float deltaw = (float)(net_w - new_w), deltah = (float)(net_h - new_h);
    g.off_x = deltaw / 2. / net_w;
    g.off_y = deltah / 2. / net_h;
    g.ratio_w = (float)new_w / net_w;
    g.ratio_h = (float)new_h / net_h;
    g.inv_w = 1 / g.ratio_w;
    g.inv_h = 1 / g.ratio_h;
    return g;
}

// Applies the correction to one box in place (x, y, w, h relative to the network input).
DKD_HD inline void letterbox_correct(const Letterbox& g, float* b) {
    b[0] = (float)((b[0] - g.off_x) / g.ratio_w);
    b[1] = (float)((b[1] - g.off_y) / g.ratio_h);
    b[2] *= g.inv_w;
    b[3] *= g.inv_h;
}

}  // namespace dkd
