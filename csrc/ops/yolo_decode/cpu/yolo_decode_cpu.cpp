// CPU yolo_decode: count candidates per (image, anchor) plane, prefix-sum the counts, then
// write each plane's rows at its offset — (b, anchor, row, col) order for any thread count.
// Float arithmetic as darknet_kd/model/layers.py Yolo.decode (and Darknet's get_yolo_box);
// compiled with -ffp-contract=off.
#include <cmath>
#include <vector>

#include "common/error.h"
#include "common/parallel.h"
#include "ops/yolo_decode/yolo_decode.h"

namespace dkd {
namespace cpu {
namespace {

inline float logistic(float x) { return 1.f / (1.f + std::exp(-x)); }

}  // namespace

void yolo_decode(const YoloDecodeArgs& a) {
    const int64_t B = a.batch, A = a.anchors_n, H = a.height, W = a.width, C = a.classes(), per = C + 5;
    const int64_t sb = a.stride[0], sc = a.stride[1], sh = a.stride[2], sw = a.stride[3];
    const int64_t planes = B * A, hw = H * W;
    if (a.letterbox_wh)
        for (int64_t b = 0; b < B; ++b)
            if (a.letterbox_wh[2 * b] <= 0 || a.letterbox_wh[2 * b + 1] <= 0)
                fail(DKD_ERR_VALUE, "yolo_decode: letterbox image size of image ", b, " is ", a.letterbox_wh[2 * b], "x",
                     a.letterbox_wh[2 * b + 1], ", not positive");
    const bool raw = a.new_coords != 0;
    const float thresh = a.thresh;
    auto objectness = [&](const float* p) { return raw ? *p : logistic(*p); };

    std::vector<int64_t> count(planes + 1, 0);
    parallel_for(planes, 1, [&](int64_t pa) {
        const int64_t b = pa / A, an = pa % A;
        const float* obj = a.head + b * sb + (an * per + 4) * sc;
        int64_t cnt = 0;
        for (int64_t r = 0; r < H; ++r)
            for (int64_t c = 0; c < W; ++c) cnt += objectness(obj + r * sh + c * sw) > thresh;
        count[pa + 1] = cnt;
    });
    for (int64_t p = 0; p < planes; ++p) count[p + 1] += count[p];
    *a.num_candidates = count[planes];
    if (a.capacity == 0 || count[planes] == 0) return;

    const double s = a.scale_x_y;
    const float sf = static_cast<float>(s), soff = static_cast<float>((s - 1) / 2);
    parallel_for(planes, 1, [&](int64_t pa) {
        int64_t pos = count[pa];
        if (pos >= a.capacity) return;
        const int64_t b = pa / A, an = pa % A;
        const float* base = a.head + b * sb + an * per * sc;
        const float aw = a.anchors[2 * an] / static_cast<float>(a.net_w);
        const float ah = a.anchors[2 * an + 1] / static_cast<float>(a.net_h);
        Letterbox lb{};
        if (a.letterbox_wh) lb = letterbox_geometry(a.letterbox_wh[2 * b], a.letterbox_wh[2 * b + 1], a.net_w, a.net_h);
        for (int64_t r = 0; r < H && pos < a.capacity; ++r)
            for (int64_t c = 0; c < W && pos < a.capacity; ++c) {
                const float* p = base + r * sh + c * sw;
                float obj = objectness(p + 4 * sc);
                if (!(obj > thresh)) continue;
                float* o = a.out + pos * per;
                float x = p[0], y = p[sc], tw = p[2 * sc], th = p[3 * sc];
                if (!raw) {
                    x = logistic(x);
                    y = logistic(y);
                }
                if (s != 1.0) {
                    x = x * sf - soff;
                    y = y * sf - soff;
                }
                o[0] = (static_cast<float>(c) + x) / static_cast<float>(W);
                o[1] = (static_cast<float>(r) + y) / static_cast<float>(H);
                if (raw) {
                    o[2] = tw * tw * 4 * aw;
                    o[3] = th * th * 4 * ah;
                } else {
                    o[2] = std::exp(tw) * aw;
                    o[3] = std::exp(th) * ah;
                }
                if (a.letterbox_wh) letterbox_correct(lb, o);
                o[4] = obj;
                for (int64_t k = 0; k < C; ++k) {
                    float v = p[(5 + k) * sc];
                    o[5 + k] = raw ? v : logistic(v);
                }
                a.out_index[pos] = pa * hw + r * W + c;
                ++pos;
            }
    });
}

}  // namespace cpu
}  // namespace dkd
