// Winograd F(4x4, 3x3) and F(2x2, 3x3) tile transforms (Lavin & Gray, "Fast Algorithms for
// Convolutional Neural Networks", 2016; points 0, +-1, +-2, inf and 0, +-1, inf), compiled
// once per ISA (common/isa.h).  Channels-last data: each tile is processed 16 channels at a
// time as fixed-width lane loops that GCC turns into one vector per row (no intrinsics).
//
// F(4x4, 3x3):
//   B^T = | 4  0 -5  0  1  0 |    A^T = | 1  1  1  1  1  0 |
//         | 0 -4 -4  1  1  0 |          | 0  1 -1  2 -2  0 |
//         | 0  4 -4 -1  1  0 |          | 0  1  1  4  4  0 |
//         | 0 -2 -1  2  1  0 |          | 0  1 -1  8 -8  1 |
//         | 0  2 -1 -2  1  0 |
//         | 0  4  0 -5  0  1 |
// F(2x2, 3x3):
//   B^T = | 1  0 -1  0 |          A^T = | 1  1  1  0 |
//         | 0  1  1  0 |                | 0  1 -1 -1 |
//         | 0 -1  1  0 |
//         | 0  1  0 -1 |
//
// input tile V = B^T d B (A x A from an A x A patch, A = M + 2), output Y = A^T M A (M x M);
// the filter transform G g G^T is done once at load (winograd.cpp).
#include <algorithm>
#include <cstdint>

#include "engine/layers/winograd.h"

#ifndef DKD_ISA_NS
#define DKD_ISA_NS isa_base
#endif

namespace dkd {
namespace engine {
namespace DKD_ISA_NS {
namespace {

constexpr int L = 16;  // channels per step (one AVX-512 vector)

// r = B^T column transform of six rows d[0..5] (each L lanes).
inline void bt6(const float (*d)[L], int s, float (*r)[L], int rs) {
    for (int l = 0; l < L; ++l) {
        float d0 = d[0 * s][l], d1 = d[1 * s][l], d2 = d[2 * s][l], d3 = d[3 * s][l], d4 = d[4 * s][l],
              d5 = d[5 * s][l];
        r[0 * rs][l] = 4.f * d0 - 5.f * d2 + d4;
        r[1 * rs][l] = -4.f * (d1 + d2) + d3 + d4;
        r[2 * rs][l] = 4.f * (d1 - d2) - d3 + d4;
        r[3 * rs][l] = 2.f * (d3 - d1) - d2 + d4;
        r[4 * rs][l] = 2.f * (d1 - d3) - d2 + d4;
        r[5 * rs][l] = 4.f * d1 - 5.f * d3 + d5;
    }
}

// r = A^T transform of six rows m[0..5] into four.
inline void at6(const float (*m)[L], int s, float (*r)[L], int rs) {
    for (int l = 0; l < L; ++l) {
        float m0 = m[0 * s][l], m1 = m[1 * s][l], m2 = m[2 * s][l], m3 = m[3 * s][l], m4 = m[4 * s][l],
              m5 = m[5 * s][l];
        float a = m1 + m2, b = m1 - m2, c = m3 + m4, d = m3 - m4;
        r[0 * rs][l] = m0 + a + c;
        r[1 * rs][l] = b + 2.f * d;
        r[2 * rs][l] = a + 4.f * c;
        r[3 * rs][l] = b + 8.f * d + m5;
    }
}

// F(2x2, 3x3): r = B^T of four rows, r = A^T of four rows into two.
inline void bt4(const float (*d)[L], int s, float (*r)[L], int rs) {
    for (int l = 0; l < L; ++l) {
        float d0 = d[0 * s][l], d1 = d[1 * s][l], d2 = d[2 * s][l], d3 = d[3 * s][l];
        r[0 * rs][l] = d0 - d2;
        r[1 * rs][l] = d1 + d2;
        r[2 * rs][l] = d2 - d1;
        r[3 * rs][l] = d1 - d3;
    }
}

inline void at4(const float (*m)[L], int s, float (*r)[L], int rs) {
    for (int l = 0; l < L; ++l) {
        float m0 = m[0 * s][l], m1 = m[1 * s][l], m2 = m[2 * s][l], m3 = m[3 * s][l];
        r[0 * rs][l] = m0 + m1 + m2;
        r[1 * rs][l] = m1 - m2 - m3;
    }
}

struct F4 {
    static constexpr int A = 6, M = 4;
    static void bt(const float (*d)[L], int s, float (*r)[L], int rs) { bt6(d, s, r, rs); }
    static void at(const float (*m)[L], int s, float (*r)[L], int rs) { at6(m, s, r, rs); }
};
struct F2 {
    static constexpr int A = 4, M = 2;
    static void bt(const float (*d)[L], int s, float (*r)[L], int rs) { bt4(d, s, r, rs); }
    static void at(const float (*m)[L], int s, float (*r)[L], int rs) { at4(m, s, r, rs); }
};

template <class F>
void input_tile(const WinoInTile& t) {
    constexpr int A = F::A, P = A * A;
    alignas(64) float d[P][L], u[P][L], v[P][L];
    for (int64_t c0 = 0; c0 < t.channels; c0 += L) {
        const int n = (int)std::min<int64_t>(L, t.channels - c0);
        for (int i = 0; i < A; ++i) {
            const int64_t y = t.y0 + i;
            for (int j = 0; j < A; ++j) {
                const int64_t x = t.x0 + j;
                float* dst = d[i * A + j];
                if (y < 0 || y >= t.height || x < 0 || x >= t.width) {
                    for (int l = 0; l < L; ++l) dst[l] = 0.f;
                    continue;
                }
                const float* src = t.src + y * t.row_stride + x * t.pixel_stride + c0;
                if (n == L) {
                    for (int l = 0; l < L; ++l) dst[l] = src[l];
                } else {
                    for (int l = 0; l < L; ++l) dst[l] = l < n ? src[l] : 0.f;
                }
            }
        }
        for (int j = 0; j < A; ++j) F::bt(d + j, A, u + j, A);          // columns: u = B^T d
        for (int i = 0; i < A; ++i) F::bt(u + i * A, 1, v + i * A, 1);  // rows: v = u B
        for (int k = 0; k < P; ++k) {
            float* dst = t.v + k * t.plane + c0;
            if (n == L) {
                for (int l = 0; l < L; ++l) dst[l] = v[k][l];
            } else {
                for (int l = 0; l < n; ++l) dst[l] = v[k][l];
            }
        }
    }
}

template <class F>
void output_tile(const WinoOutTile& t) {
    constexpr int A = F::A, M = F::M, P = A * A;
    alignas(64) float m[P][L], u[M * A][L], y[M * M][L];
    const float slope = t.act == WinoAct::kLeaky ? 0.1f : 0.f;
    for (int64_t c0 = 0; c0 < t.channels; c0 += L) {
        const int n = (int)std::min<int64_t>(L, t.channels - c0);
        for (int k = 0; k < P; ++k) {
            const float* src = t.m + k * t.plane + c0;
            if (n == L) {
                for (int l = 0; l < L; ++l) m[k][l] = src[l];
            } else {
                for (int l = 0; l < L; ++l) m[k][l] = l < n ? src[l] : 0.f;
            }
        }
        for (int j = 0; j < A; ++j) F::at(m + j, A, u + j, A);          // columns: u = A^T m (M x A)
        for (int i = 0; i < M; ++i) F::at(u + i * A, 1, y + i * M, 1);  // rows: y = u A (M x M)
        alignas(64) float b[L];
        for (int l = 0; l < L; ++l) b[l] = l < n ? t.bias[c0 + l] : 0.f;
        for (int i = 0; i < t.rows; ++i)
            for (int j = 0; j < t.cols; ++j) {
                float* dst = t.dst + i * t.row_stride + j * t.pixel_stride + c0;
                float* r = y[i * M + j];
                for (int l = 0; l < L; ++l) {  // branch-free leaky/relu: exact, and one vector
                    float x = r[l] + b[l];
                    r[l] = t.act == WinoAct::kLinear ? x : std::max(x, 0.f) + slope * std::min(x, 0.f);
                }
                if (n == L) {
                    for (int l = 0; l < L; ++l) dst[l] = r[l];
                } else {
                    for (int l = 0; l < n; ++l) dst[l] = r[l];
                }
            }
    }
}

}  // namespace

void wino_input_tile(const WinoInTile& t) { input_tile<F4>(t); }
void wino_output_tile(const WinoOutTile& t) { output_tile<F4>(t); }
void wino2_input_tile(const WinoInTile& t) { input_tile<F2>(t); }
void wino2_output_tile(const WinoOutTile& t) { output_tile<F2>(t); }

}  // namespace DKD_ISA_NS
}  // namespace engine
}  // namespace dkd
