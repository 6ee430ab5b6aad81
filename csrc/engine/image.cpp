#include "engine/image.h"

#include <algorithm>
#include <array>
#include <vector>

// Every value below is one float32 operation of Darknet's loops, in their order; this file is
// built with -std=c++17 (GCC: -ffp-contract=off, no FMA fusing a*b + c) and without -ffast-math,
// so the results are Darknet's to the bit (tests/test_image_exact.py checks it against a
// transcription of the loops and against darknet-kd's numpy version).

namespace dkd {
namespace engine {
namespace {

// load_image_stb: (float)v / 255. (computed in double, rounded to float).
const std::array<float, 256>& u8_to_float() {
    static const std::array<float, 256> lut = [] {
        std::array<float, 256> a{};
        for (int v = 0; v < 256; ++v) a[v] = (float)((double)v / 255.0);
        return a;
    }();
    return lut;
}

// resize_image's positions along one axis: s = k * ((float)(src-1) / (dst-1)) in float32,
// i = (int)s, d = s - i.  dst == 1 divides by zero in Darknet (then casts NaN to int, undefined):
// here it samples the last pixel, as Darknet does for the last output column.
struct Taps {
    std::vector<int64_t> i;
    std::vector<float> d;
};

Taps taps(int64_t src, int64_t dst) {
    Taps t{std::vector<int64_t>(dst), std::vector<float>(dst)};
    if (dst == 1) {
        t.i[0] = src - 1;
        t.d[0] = 0.f;
        return t;
    }
    const float scale = (float)(src - 1) / (float)(dst - 1);
    for (int64_t k = 0; k < dst; ++k) {
        float s = (float)k * scale;
        int64_t i = (int64_t)s;
        t.i[k] = std::min(i, src - 1);
        t.d[k] = s - (float)i;
    }
    return t;
}

}  // namespace

void letterbox_geometry_px(int64_t ow, int64_t oh, int64_t w, int64_t h, int64_t* new_w, int64_t* new_h, int64_t* dx,
                           int64_t* dy) {
    if ((float)w / (float)ow < (float)h / (float)oh) {
        *new_w = w;
        *new_h = (oh * w) / ow;
    } else {
        *new_w = (ow * h) / oh;
        *new_h = h;
    }
    *dx = (w - *new_w) / 2;
    *dy = (h - *new_h) / 2;
}

void resize_image(const uint8_t* rgb, int64_t sw, int64_t sh, int64_t stride, int64_t w, int64_t h, float* out,
                  int64_t pw, int64_t ph, int64_t ox, int64_t oy) {
    const float* f = u8_to_float().data();
    const int64_t plane = pw * ph;
    if (sw == w && sh == h) {  // resize_image returns a copy
        for (int64_t y = 0; y < h; ++y)
            for (int64_t x = 0; x < w; ++x)
                for (int c = 0; c < 3; ++c) out[c * plane + (oy + y) * pw + ox + x] = f[rgb[y * stride + x * 3 + c]];
        return;
    }
    Taps tx = taps(sw, w), ty = taps(sh, h);
    tx.i[w - 1] = sw - 1;  // c == w-1 (or im.w == 1): the last column, copied
    tx.d[w - 1] = 0.f;
    const bool two_rows = sh > 1 && h > 1;  // rows 0..h-2 add dy * part[iy+1]; none when im.h == 1
    // Horizontal pass (Darknet's `part`), only for the source rows the vertical pass reads,
    // each computed once: part row of source row y at slot[y], planar [3][w].
    std::vector<int64_t> iy1(h);  // the second row of each output row (in range: i <= sh-2 below h-1)
    for (int64_t r = 0; r < h; ++r) iy1[r] = std::min(ty.i[r] + 1, sh - 1);
    std::vector<int64_t> slot(sh, -1);
    int64_t n = 0;
    for (int64_t r = 0; r < h; ++r) {
        if (slot[ty.i[r]] < 0) slot[ty.i[r]] = n++;
        if (two_rows && r < h - 1 && slot[iy1[r]] < 0) slot[iy1[r]] = n++;
    }
    std::vector<float> part((size_t)n * 3 * w);
    for (int64_t y = 0; y < sh; ++y) {
        if (slot[y] < 0) continue;
        const uint8_t* s = rgb + y * stride;
        float* p = part.data() + slot[y] * 3 * w;
        for (int c = 0; c < 3; ++c)
            for (int64_t x = 0; x < w; ++x) {
                const int64_t i0 = tx.i[x], i1 = std::min(i0 + 1, sw - 1);
                const float dx = tx.d[x];
                p[c * w + x] = (1 - dx) * f[s[i0 * 3 + c]] + dx * f[s[i1 * 3 + c]];
            }
    }
    // Vertical pass: resized = (1-dy) * part[iy], then += dy * part[iy+1] except on the last row.
    for (int64_t r = 0; r < h; ++r) {
        const float dy = ty.d[r];
        const bool add = two_rows && r < h - 1;
        const float* q0 = part.data() + slot[ty.i[r]] * 3 * w;
        const float* q1 = add ? part.data() + slot[iy1[r]] * 3 * w : q0;
        for (int c = 0; c < 3; ++c) {
            float* o = out + c * plane + (oy + r) * pw + ox;
            for (int64_t x = 0; x < w; ++x) {
                float v = (1 - dy) * q0[c * w + x];
                if (add) v += dy * q1[c * w + x];
                o[x] = v;
            }
        }
    }
}

void preprocess(const uint8_t* rgb, int64_t w, int64_t h, int64_t stride, bool letterbox, int64_t net_w,
                int64_t net_h, float* out) {
    if (!letterbox) {
        resize_image(rgb, w, h, stride, net_w, net_h, out, net_w, net_h, 0, 0);
        return;
    }
    std::fill(out, out + 3 * net_w * net_h, 0.5f);  // letterbox_image: fill_image(boxed, .5)
    int64_t nw, nh, dx, dy;
    letterbox_geometry_px(w, h, net_w, net_h, &nw, &nh, &dx, &dy);
    if (nw > 0 && nh > 0) resize_image(rgb, w, h, stride, nw, nh, out, net_w, net_h, dx, dy);
}

}  // namespace engine
}  // namespace dkd
