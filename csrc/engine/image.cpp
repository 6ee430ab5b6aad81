#include "engine/image.h"

#include <algorithm>
#include <cmath>

namespace dkd {
namespace engine {
namespace {

constexpr int kCoefBits = 11;
constexpr int kCoefScale = 1 << kCoefBits;

// OpenCV's cvRound / saturate_cast<short>(float): round half to even.
inline int32_t round_even(float v) { return (int32_t)std::nearbyint(v); }

struct Taps {
    std::vector<int64_t> i0, i1;
    std::vector<int32_t> w0, w1;
};

// resize.cpp:resize(): fx = (float)((dx + 0.5) * scale - 0.5), sx = floor(fx), fx -= sx.
// Columns clamp the tap and its weight at the borders (xofs/alpha); rows keep the weights
// and only clip the row index (the vertical pass fetches rows clip(sy + k, 0, h - 1)).
Taps taps(int64_t src, int64_t dst, bool clamp_weights) {
    Taps t;
    double scale = 1.0 / ((double)dst / (double)src);
    for (int64_t d = 0; d < dst; ++d) {
        float f = (float)((d + 0.5) * scale - 0.5);
        int64_t s = (int64_t)std::floor(f);
        f -= (float)s;
        if (clamp_weights) {
            if (s < 0) f = 0, s = 0;
            if (s >= src - 1) f = 0, s = src - 1;
        }
        t.i0.push_back(std::clamp<int64_t>(s, 0, src - 1));
        t.i1.push_back(std::clamp<int64_t>(s + 1, 0, src - 1));
        t.w0.push_back(round_even((1.f - f) * kCoefScale));
        t.w1.push_back(round_even(f * kCoefScale));
    }
    return t;
}

}  // namespace

void resize_linear_u8(const uint8_t* src, int64_t sw, int64_t sh, int64_t src_stride, int cn, uint8_t* dst,
                      int64_t dw, int64_t dh) {
    Taps tx = taps(sw, dw, true), ty = taps(sh, dh, false);
    const int64_t row = dw * cn;
    // Horizontal pass for every source row any output row needs (computed once each).
    std::vector<int32_t> hor((size_t)sh * row);
    std::vector<char> needed(sh, 0);
    for (int64_t y = 0; y < dh; ++y) needed[ty.i0[y]] = needed[ty.i1[y]] = 1;
    for (int64_t y = 0; y < sh; ++y) {
        if (!needed[y]) continue;
        const uint8_t* s = src + y * src_stride;
        int32_t* h = hor.data() + y * row;
        for (int64_t x = 0; x < dw; ++x) {
            const uint8_t* p0 = s + tx.i0[x] * cn;
            const uint8_t* p1 = s + tx.i1[x] * cn;
            for (int c = 0; c < cn; ++c) h[x * cn + c] = p0[c] * tx.w0[x] + p1[c] * tx.w1[x];
        }
    }
    for (int64_t y = 0; y < dh; ++y) {
        const int32_t* s0 = hor.data() + ty.i0[y] * row;
        const int32_t* s1 = hor.data() + ty.i1[y] * row;
        const int32_t b0 = ty.w0[y], b1 = ty.w1[y];
        uint8_t* d = dst + y * row;
        for (int64_t x = 0; x < row; ++x) {
            int32_t v = (((b0 * (s0[x] >> 4)) >> 16) + ((b1 * (s1[x] >> 4)) >> 16) + 2) >> 2;
            d[x] = (uint8_t)std::clamp(v, 0, 255);
        }
    }
}

void letterbox_geometry_px(int64_t ow, int64_t oh, int64_t w, int64_t h, int64_t* new_w, int64_t* new_h, int64_t* dx,
                           int64_t* dy) {
    // dataset.py:letterbox_size: w/ow < h/oh in Python float (double) arithmetic.
    if ((double)w / (double)ow < (double)h / (double)oh) {
        *new_w = w;
        *new_h = (oh * w) / ow;
    } else {
        *new_w = (ow * h) / oh;
        *new_h = h;
    }
    *dx = (w - *new_w) / 2;
    *dy = (h - *new_h) / 2;
}

void preprocess(const uint8_t* rgb, int64_t w, int64_t h, int64_t stride, bool letterbox, int64_t net_w,
                int64_t net_h, float* out) {
    std::vector<uint8_t> img((size_t)net_w * net_h * 3, 128);
    if (letterbox) {
        int64_t nw, nh, dx, dy;
        letterbox_geometry_px(w, h, net_w, net_h, &nw, &nh, &dx, &dy);
        std::vector<uint8_t> inner((size_t)std::max<int64_t>(nw, 1) * std::max<int64_t>(nh, 1) * 3);
        if (nw > 0 && nh > 0) {
            resize_linear_u8(rgb, w, h, stride, 3, inner.data(), nw, nh);
            for (int64_t y = 0; y < nh; ++y)
                std::copy(inner.begin() + y * nw * 3, inner.begin() + (y + 1) * nw * 3,
                          img.begin() + ((dy + y) * net_w + dx) * 3);
        }
    } else {
        resize_linear_u8(rgb, w, h, stride, 3, img.data(), net_w, net_h);
    }
    const int64_t plane = net_w * net_h;
    for (int64_t i = 0; i < plane; ++i)
        for (int c = 0; c < 3; ++c) out[c * plane + i] = img[i * 3 + c] / 255.0f;
}

}  // namespace engine
}  // namespace dkd
