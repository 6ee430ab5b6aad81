// Winograd F(4x4, 3x3) convolution for fp32 3x3 stride-1 convolutions (engine/layers/
// winograd.cpp): input tiles transformed by our kernels (winograd_kernels.cpp, one per ISA),
// the 36 independent [tiles x C_in] x [C_in x C_out] products as one batched oneDNN matmul,
// output tiles transformed back with the bias and a leaky/relu/linear activation fused.
// 4x fewer multiplications than the direct convolution; oneDNN 2.6 has no Winograd on this
// CPU (AVX512-BF16 class), OpenCV DNN 4.x uses F(6x6, 3x3).
#pragma once

#include <cstdint>

#include "engine/net.h"

namespace dkd {
namespace engine {

class Plan;

enum class WinoAct { kLinear = 0, kLeaky = 1, kRelu = 2 };

// One 6x6 input patch (origin y0, x0 in the image, may lie outside: zeros there) of a
// channels-last image -> v[k * plane + c] for the 36 transformed positions k.
struct WinoInTile {
    const float* src;  // image origin (channel 0 of pixel (0, 0))
    int64_t height, width, row_stride, pixel_stride, channels;
    int64_t y0, x0;
    float* v;
    int64_t plane;
};
// m[k * plane + c] (36 positions) -> a rows x cols (<= 4x4) block of the channels-last output.
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
void wino_input_tile(const WinoInTile& t);
void wino_output_tile(const WinoOutTile& t);
}  // namespace isa_base
namespace isa_avx2 {
void wino_input_tile(const WinoInTile& t);
void wino_output_tile(const WinoOutTile& t);
}  // namespace isa_avx2
namespace isa_avx512 {
void wino_input_tile(const WinoInTile& t);
void wino_output_tile(const WinoOutTile& t);
}  // namespace isa_avx512

// The convolution a [convolutional] layer asks for.
struct ConvSpec {
    int64_t n, size, sx, sy, dilation, padding, groups;
    Act act;
    const float* weights;  // [n][c][3][3], BN folded
    const float* bias;     // [n]
};

// True when `plan_winograd` would take this layer (fp32 plan, 3x3, stride 1, no dilation,
// one group, at least 16 input and output channels, enough tiles to fill the matmul);
// $DKD_WINOGRAD=0 turns it off, =1 takes every eligible geometry regardless of size.
bool use_winograd(const Plan& p, const Layer& l, const ConvSpec& c);
// Adds the steps of the layer to the plan and returns its output tensor (channels-last f32).
int plan_winograd(Plan& p, const Layer& l, const ConvSpec& c);

}  // namespace engine
}  // namespace dkd
