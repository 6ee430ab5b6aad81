// CUDA kernels of the engine's CUDA path (kernels.cu), callable from plain C++ (the layer
// sources): NCHW float32 on the device, `stream` is a cudaStream_t.  Launch errors throw
// dkd::Error(DKD_ERR_CUDA).
#pragma once

#include <cstdint>

namespace dkd {
namespace engine {
namespace cuda {

// Darknet's im2col_gpu for one image: col[(ci*k + ky)*k + kx][oy*ow + ox].
void im2col(const float* im, int64_t c, int64_t h, int64_t w, int64_t k, int64_t sy, int64_t sx, int64_t pad,
            int64_t dilation, int64_t oh, int64_t ow, float* col, void* stream);
// Row-major C[m][n] = A[m][k] * B[k][n] through cuBLAS.
void gemm(void* cublas, int64_t m, int64_t n, int64_t k, const float* a, const float* b, float* c);
// x[b][c][i] = act(x[b][c][i] + bias[c]) (bias may be null).
void bias_act(float* x, const float* bias, int64_t batch, int64_t c, int64_t hw, int act, void* stream);
// out = act(a + b) over count elements.
void add_act(const float* a, const float* b, int64_t count, int act, float* out, void* stream);
// Darknet's maxpool: window at -(padding/2), cells outside the image never win.
void maxpool(const float* in, int64_t nc, int64_t h, int64_t w, int64_t size, int64_t sy, int64_t sx, int64_t pad,
             int64_t oh, int64_t ow, float* out, void* stream);
// Nearest upsampling by an integer stride, times scale.
void upsample(const float* in, int64_t nc, int64_t h, int64_t w, int64_t stride, float scale, float* out,
              void* stream);
// Global average over each of nc planes of hw values.
void avgpool(const float* in, int64_t nc, int64_t hw, float* out, void* stream);
// dst[b][dst_c0 + j][:] = src[b][src_c0 + j][:] for j < c (planes of hw floats).
void copy_channels(const float* src, int64_t batch, int64_t src_c, int64_t src_c0, int64_t c, int64_t hw, float* dst,
                   int64_t dst_c, int64_t dst_c0, void* stream);

}  // namespace cuda
}  // namespace engine
}  // namespace dkd
