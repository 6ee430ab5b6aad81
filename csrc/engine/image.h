// Image preprocessing for detection, bit-exact to what `darknet-kd detect` feeds its model
// (darknet_kd/data/dataset.py EvalDataset): OpenCV 4.x cv::resize INTER_LINEAR on 8-bit RGB
// (stretch to the network size), or Darknet's letterbox geometry with grey (128) padding and
// the same resize of the inner part; then planar float RGB / 255.
#pragma once

#include <cstdint>
#include <vector>

namespace dkd {
namespace engine {

// cv::resize(src, dst, (dw, dh), INTER_LINEAR) for 8-bit interleaved images with `cn` channels:
// 11-bit fixed-point coefficients, the horizontal pass in int, the vertical pass rounded as
// OpenCV's SIMD path does ((b0*(S0>>4))>>16 + (b1*(S1>>4))>>16 + 2) >> 2.
void resize_linear_u8(const uint8_t* src, int64_t sw, int64_t sh, int64_t src_stride, int cn, uint8_t* dst,
                      int64_t dw, int64_t dh);

// Darknet's image.c:letterbox_image geometry: new_w, new_h (integer fit) and the offsets.
void letterbox_geometry_px(int64_t ow, int64_t oh, int64_t w, int64_t h, int64_t* new_w, int64_t* new_h, int64_t* dx,
                           int64_t* dy);

// RGB 8-bit (h x w x 3, row stride in bytes) -> planar float [3][net_h][net_w] in [0, 1].
void preprocess(const uint8_t* rgb, int64_t w, int64_t h, int64_t stride, bool letterbox, int64_t net_w,
                int64_t net_h, float* out);

}  // namespace engine
}  // namespace dkd
