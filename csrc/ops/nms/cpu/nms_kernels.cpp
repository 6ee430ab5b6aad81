// The greedy pass of one (image, class) group; compiled once per ISA (see common/isa.h).
// Exactly Darknet's float arithmetic (src/box.c box_iou, box_diou, box_diounms): the
// build compiles this file with -ffp-contract=off so no FMA changes a rounding.
#include <cmath>
#include <vector>

#include "dkd/dkd.h"
#include "ops/nms/nms.h"

#ifndef DKD_ISA_NS
#define DKD_ISA_NS isa_base
#endif

namespace dkd {
namespace DKD_ISA_NS {
namespace {

constexpr int kLanes = 16;

// Darknet's box_diou / box_diounms for kept box a and candidate b, given their IoU.
inline float diou(const NmsGroup& g, int64_t a, int64_t b, float iou) {
    float left = std::fmin(g.x1[a], g.x1[b]), right = std::fmax(g.x2[a], g.x2[b]);
    float top = std::fmin(g.y1[a], g.y1[b]), bot = std::fmax(g.y2[a], g.y2[b]);
    float w = right - left, h = bot - top;
    float c = w * w + h * h;
    if (c == 0) return iou;
    float dx = g.cx[a] - g.cx[b], dy = g.cy[a] - g.cy[b];
    float d = dx * dx + dy * dy;
    // greedynms: pow(d / c, 0.6) (a double literal); diounms: pow(d / c, beta_nms).
    double e = g.kind == DKD_NMS_GREEDY_DIOU ? 0.6 : static_cast<double>(g.beta);
    float u = static_cast<float>(std::pow(static_cast<double>(d / c), e));
    return iou - u;
}

}  // namespace

int64_t nms_group(const NmsGroup& g) {
    // Kept boxes as SoA, padded with boxes that overlap nothing (left=+inf, right=-inf).
    const int64_t cap = (g.n + kLanes - 1) / kLanes * kLanes;
    std::vector<float> buf(5 * cap);
    float *kx1 = buf.data(), *ky1 = kx1 + cap, *kx2 = ky1 + cap, *ky2 = kx2 + cap, *ka = ky2 + cap;
    std::vector<int64_t> kidx(cap);
    for (int64_t i = 0; i < cap; ++i) {
        kx1[i] = ky1[i] = INFINITY;
        kx2[i] = ky2[i] = -INFINITY;
        ka[i] = 0.f;
    }
    const float thr = g.thresh;
    int64_t nk = 0;
    for (int64_t j = 0; j < g.n; ++j) {
        const float jx1 = g.x1[j], jy1 = g.y1[j], jx2 = g.x2[j], jy2 = g.y2[j], ja = g.area[j];
        bool suppressed = false;
        for (int64_t base = 0; base < nk && !suppressed; base += kLanes) {
            float iou[kLanes];
            int hit = 0;
            for (int l = 0; l < kLanes; ++l) {
                const int64_t k = base + l;
                float w = std::min(kx2[k], jx2) - std::max(kx1[k], jx1);
                float h = std::min(ky2[k], jy2) - std::max(ky1[k], jy1);
                float inter = (w < 0.f || h < 0.f) ? 0.f : w * h;
                float uni = ka[k] + ja - inter;
                float v = (inter != 0.f && uni != 0.f) ? inter / uni : 0.f;
                iou[l] = v;
                hit |= (v > thr) & (k < nk);  // padding lanes never count (thr may be < 0)
            }
            if (!hit) continue;
            if (g.kind == DKD_NMS_IOU) {
                suppressed = true;
            } else {
                // DIoU <= IoU, so only lanes whose IoU passed can suppress.
                for (int l = 0; l < kLanes && !suppressed; ++l)
                    if (base + l < nk && iou[l] > thr && diou(g, kidx[base + l], j, iou[l]) > thr) suppressed = true;
            }
        }
        g.keep[j] = !suppressed;
        if (!suppressed) {
            kx1[nk] = jx1;
            ky1[nk] = jy1;
            kx2[nk] = jx2;
            ky2[nk] = jy2;
            ka[nk] = ja;
            kidx[nk] = j;
            ++nk;
        }
    }
    return nk;
}

}  // namespace DKD_ISA_NS
}  // namespace dkd
