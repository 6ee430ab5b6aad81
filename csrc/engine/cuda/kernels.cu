// The engine's CUDA kernels (see kernels.h).  Grid-stride loops, one thread per output value.
#include <cuda_runtime.h>

#include <cfloat>

#include "common/error.h"
#include "engine/act_math.h"
#include "engine/cuda/kernels.h"

namespace dkd {
namespace engine {
namespace cuda {
namespace {

constexpr int kThreads = 256;

int blocks(int64_t n) { return (int)std::min<int64_t>((n + kThreads - 1) / kThreads, 65535 * 8); }

void check_launch(const char* what) {
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) fail(DKD_ERR_CUDA, what, ": ", cudaGetErrorString(e));
}

#define GRID_LOOP(i, n) for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < (n); i += (int64_t)blockDim.x * gridDim.x)

__global__ void im2col_k(const float* im, int64_t c, int64_t h, int64_t w, int64_t k, int64_t sy, int64_t sx,
                         int64_t pad, int64_t dil, int64_t oh, int64_t ow, float* col) {
    const int64_t n = c * k * k * oh * ow;
    GRID_LOOP(i, n) {
        int64_t ox = i % ow, oy = (i / ow) % oh, r = i / (ow * oh);
        int64_t kx = r % k, ky = (r / k) % k, ci = r / (k * k);
        int64_t iy = oy * sy - pad * dil + ky * dil, ix = ox * sx - pad * dil + kx * dil;
        col[i] = (iy >= 0 && iy < h && ix >= 0 && ix < w) ? im[(ci * h + iy) * w + ix] : 0.f;
    }
}

__global__ void bias_act_k(float* x, const float* bias, int64_t batch, int64_t c, int64_t hw, int act) {
    GRID_LOOP(i, batch * c * hw) {
        float v = x[i] + (bias ? bias[(i / hw) % c] : 0.f);
        x[i] = activate_code(act, v);
    }
}

__global__ void add_act_k(const float* a, const float* b, int64_t n, int act, float* out) {
    GRID_LOOP(i, n) out[i] = activate_code(act, a[i] + b[i]);
}

__global__ void maxpool_k(const float* in, int64_t nc, int64_t h, int64_t w, int64_t size, int64_t sy, int64_t sx,
                          int64_t pad, int64_t oh, int64_t ow, float* out) {
    GRID_LOOP(i, nc * oh * ow) {
        int64_t ox = i % ow, oy = (i / ow) % oh, p = i / (ow * oh);
        int64_t y0 = oy * sy - pad / 2, x0 = ox * sx - pad / 2;
        float m = -INFINITY;
        for (int64_t ky = 0; ky < size; ++ky)
            for (int64_t kx = 0; kx < size; ++kx) {
                int64_t y = y0 + ky, x = x0 + kx;
                if (y >= 0 && y < h && x >= 0 && x < w) m = fmaxf(m, in[(p * h + y) * w + x]);
            }
        out[i] = m;
    }
}

__global__ void upsample_k(const float* in, int64_t nc, int64_t h, int64_t w, int64_t s, float scale, float* out) {
    const int64_t oh = h * s, ow = w * s;
    GRID_LOOP(i, nc * oh * ow) {
        int64_t ox = i % ow, oy = (i / ow) % oh, p = i / (ow * oh);
        out[i] = scale * in[(p * h + oy / s) * w + ox / s];
    }
}

__global__ void avgpool_k(const float* in, int64_t nc, int64_t hw, float* out) {
    GRID_LOOP(p, nc) {
        float s = 0.f;
        for (int64_t j = 0; j < hw; ++j) s += in[p * hw + j];
        out[p] = s / hw;
    }
}

__global__ void copy_channels_k(const float* src, int64_t batch, int64_t src_c, int64_t src_c0, int64_t c, int64_t hw,
                                float* dst, int64_t dst_c, int64_t dst_c0) {
    GRID_LOOP(i, batch * c * hw) {
        int64_t j = i % hw, ch = (i / hw) % c, b = i / (hw * c);
        dst[(b * dst_c + dst_c0 + ch) * hw + j] = src[(b * src_c + src_c0 + ch) * hw + j];
    }
}

}  // namespace

#define LAUNCH(kernel, n, stream, ...)                                                                 \
    do {                                                                                               \
        if ((n) > 0) kernel<<<blocks(n), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(__VA_ARGS__); \
        check_launch(#kernel);                                                                         \
    } while (0)

void im2col(const float* im, int64_t c, int64_t h, int64_t w, int64_t k, int64_t sy, int64_t sx, int64_t pad,
            int64_t dilation, int64_t oh, int64_t ow, float* col, void* stream) {
    LAUNCH(im2col_k, c * k * k * oh * ow, stream, im, c, h, w, k, sy, sx, pad, dilation, oh, ow, col);
}
void bias_act(float* x, const float* bias, int64_t batch, int64_t c, int64_t hw, int act, void* stream) {
    LAUNCH(bias_act_k, batch * c * hw, stream, x, bias, batch, c, hw, act);
}
void add_act(const float* a, const float* b, int64_t count, int act, float* out, void* stream) {
    LAUNCH(add_act_k, count, stream, a, b, count, act, out);
}
void maxpool(const float* in, int64_t nc, int64_t h, int64_t w, int64_t size, int64_t sy, int64_t sx, int64_t pad,
             int64_t oh, int64_t ow, float* out, void* stream) {
    LAUNCH(maxpool_k, nc * oh * ow, stream, in, nc, h, w, size, sy, sx, pad, oh, ow, out);
}
void upsample(const float* in, int64_t nc, int64_t h, int64_t w, int64_t stride, float scale, float* out, void* stream) {
    LAUNCH(upsample_k, nc * h * w * stride * stride, stream, in, nc, h, w, stride, scale, out);
}
void avgpool(const float* in, int64_t nc, int64_t hw, float* out, void* stream) {
    LAUNCH(avgpool_k, nc, stream, in, nc, hw, out);
}
void copy_channels(const float* src, int64_t batch, int64_t src_c, int64_t src_c0, int64_t c, int64_t hw, float* dst,
                   int64_t dst_c, int64_t dst_c0, void* stream) {
    LAUNCH(copy_channels_k, batch * c * hw, stream, src, batch, src_c, src_c0, c, hw, dst, dst_c, dst_c0);
}

}  // namespace cuda
}  // namespace engine
}  // namespace dkd
