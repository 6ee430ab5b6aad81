// Winograd F(4x4, 3x3) and F(2x2, 3x3) convolution for fp32 3x3 stride-1 convolutions
// (engine/layers/winograd.cpp): input tiles transformed by our kernels (winograd_kernels.cpp,
// one per ISA), the 36 (16) independent [tiles x C_in] x [C_in x C_out] products as one batched
// oneDNN matmul, output tiles transformed back with the bias and a leaky/relu/linear activation
// fused.  4x (2.25x) fewer multiplications than the direct convolution; F(2x2) is for maps too
// small to give F(4x4) enough tiles.  oneDNN 2.6 has no Winograd on this CPU (AVX512-BF16
// class), OpenCV DNN 4.x uses F(6x6, 3x3).
#pragma once

#include <cstdint>

#include "engine/net.h"

namespace dkd {
namespace engine {

class Plan;

enum class WinoAct { kLinear = 0, kLeaky = 1, kRelu = 2 };

// One a x a input patch (a = 6 for F(4x4), 4 for F(2x2); origin y0, x0 in the image, may lie
// outside: zeros there) of a channels-last image -> v[k * plane + c] for the a^2 transformed
// positions k.
struct WinoInTile {
    const float* src;  // image origin (channel 0 of pixel (0, 0))
    int64_t height, width, row_stride, pixel_stride, channels;
    int64_t y0, x0;
    float* v;
    int64_t plane;
};
// m[k * plane + c] (a^2 positions) -> a rows x cols (<= m x m) block of the channels-last output.
struct WinoOutTile {
    const float* m;
    int64_t plane, channels;
    const float* bias;
    WinoAct act;
    float* dst;  // the block's first pixel
    int64_t row_stride, pixel_stride;
    int rows, cols;
};

namespace isa_base {
void wino_input_tile(const WinoInTile& t);   // F(4x4, 3x3): 6x6 patches
void wino_output_tile(const WinoOutTile& t);
void wino2_input_tile(const WinoInTile& t);  // F(2x2, 3x3): 4x4 patches
void wino2_output_tile(const WinoOutTile& t);
}  // namespace isa_base
namespace isa_avx2 {
void wino_input_tile(const WinoInTile& t);   // F(4x4, 3x3): 6x6 patches
void wino_output_tile(const WinoOutTile& t);
void wino2_input_tile(const WinoInTile& t);  // F(2x2, 3x3): 4x4 patches
void wino2_output_tile(const WinoOutTile& t);
}  // namespace isa_avx2
namespace isa_avx512 {
void wino_input_tile(const WinoInTile& t);   // F(4x4, 3x3): 6x6 patches
void wino_output_tile(const WinoOutTile& t);
void wino2_input_tile(const WinoInTile& t);  // F(2x2, 3x3): 4x4 patches
void wino2_output_tile(const WinoOutTile& t);
}  // namespace isa_avx512

// The convolution a [convolutional] layer asks for.
struct ConvSpec {
    int64_t n, size, sx, sy, dilation, padding, groups;
    Act act;
    const float* weights;  // [n][c][3][3], BN folded
    const float* bias;     // [n]
};

// The output tile size m (4 or 2) `plan_winograd` takes this layer with, or 0 (fp32 plan,
// 3x3, stride 1, no dilation, one group, at least 16 input and output channels, enough tiles
// to fill the matmul: F(4x4) where it has them, else F(2x2)); $DKD_WINOGRAD=0 turns it off,
// =1 takes F(4x4) and =2 F(2x2) for every eligible geometry regardless of size.
int winograd_tile(const Plan& p, const Layer& l, const ConvSpec& c);
// Adds the steps of the layer (F(m x m, 3x3)) to the plan and returns its output tensor
// (channels-last f32: its own, or its slice of a [route] concat).
int plan_winograd(Plan& p, const Layer& l, const ConvSpec& c, int m);

}  // namespace engine
}  // namespace dkd
