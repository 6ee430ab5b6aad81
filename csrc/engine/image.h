// Image preprocessing for detection, bit-exact to Darknet's `detector test` / `detector map`
// input (src/image.c: load_image's bytes / 255, resize_image, letterbox_image) and so to
// darknet-kd's EvalDataset (darknet_kd/data/dataset.py: resize_image, letterbox).
#pragma once

#include <cstdint>

namespace dkd {
namespace engine {

// Darknet's image.c:letterbox_image geometry: new_w, new_h (integer fit, chosen by Darknet's
// float32 test (float)w / ow < (float)h / oh) and the offsets of the fit inside w x h.
void letterbox_geometry_px(int64_t ow, int64_t oh, int64_t w, int64_t h, int64_t* new_w, int64_t* new_h, int64_t* dx,
                           int64_t* dy);

// Darknet's image.c:resize_image of an 8-bit interleaved RGB image (sw x sh, row stride in bytes),
// its bytes first turned into floats as load_image does (v / 255), written as planar float RGB into
// the w x h block at (ox, oy) of planes that are pw wide and ph high.
void resize_image(const uint8_t* rgb, int64_t sw, int64_t sh, int64_t stride, int64_t w, int64_t h, float* out,
                  int64_t pw, int64_t ph, int64_t ox, int64_t oy);

// RGB 8-bit (h x w x 3, row stride in bytes) -> planar float [3][net_h][net_w] in [0, 1]:
// resize_image to the network size, or (letterbox) letterbox_image: the fit on a 0.5 canvas.
void preprocess(const uint8_t* rgb, int64_t w, int64_t h, int64_t stride, bool letterbox, int64_t net_w,
                int64_t net_h, float* out);

}  // namespace engine
}  // namespace dkd
