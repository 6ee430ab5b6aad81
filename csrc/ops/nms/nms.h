// nms: per-image, per-class greedy NMS with Darknet's criteria (src/box.c do_nms_sort,
// diounms_sort).  See dkd_nms in dkd/dkd.h for the contract.
#pragma once

#include <cstdint>

namespace dkd {

struct NmsArgs {
    const float* boxes = nullptr;    // [n][4] cx, cy, w, h
    const float* scores = nullptr;   // [n][classes]
    const int64_t* batch = nullptr;  // [n] image index, or nullptr
    int64_t n = 0, classes = 0, images = 1;
    float iou_thresh = 0.45f, score_thresh = 0.f;
    int kind = 0;  // dkd_nms_kind
    float beta = 0.6f;
    int64_t max_det = 0;
    uint8_t* keep = nullptr;  // [n][classes] out
    int device = 0;
    void* stream = nullptr;
};

// Validates and runs on args.device; throws dkd::Error.
void nms(const NmsArgs& args);

namespace cpu {
void nms(const NmsArgs& args);
}
namespace cuda {
void nms(const NmsArgs& args);
}

// One (image, class) group's greedy pass, compiled per ISA (cpu/nms_kernels.cpp).
// Boxes are the group's candidates in visiting order (score descending) as corners +
// centre + area; writes keep[j] = 1/0.  Returns the number kept.
struct NmsGroup {
    const float *x1, *y1, *x2, *y2, *area, *cx, *cy;
    int64_t n;
    float thresh;
    int kind;
    float beta;
    uint8_t* keep;
};
namespace isa_base { int64_t nms_group(const NmsGroup& g); }
namespace isa_avx2 { int64_t nms_group(const NmsGroup& g); }
namespace isa_avx512 { int64_t nms_group(const NmsGroup& g); }

}  // namespace dkd
