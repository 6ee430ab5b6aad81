// yolo_decode dispatcher: argument checks shared by every device, then the kernel.
#include "ops/yolo_decode/yolo_decode.h"

#include <cmath>

#include "common/error.h"

namespace dkd {

void yolo_decode(const YoloDecodeArgs& a) {
    const char* op = "yolo_decode";
    check_device(a.device, op);
    check_not_null(a.num_candidates, op, "num_candidates");
    check_size(a.batch, op, "shape[0] (batch)");
    check_size(a.channels, op, "shape[1] (channels)", 1);
    check_size(a.height, op, "shape[2] (height)");
    check_size(a.width, op, "shape[3] (width)");
    check_size(a.anchors_n, op, "num_anchors", 1);
    for (int i = 0; i < 4; ++i)
        if (a.stride[i] < 0) fail(DKD_ERR_SIZE, op, ": strides[", i, "]=", a.stride[i], " is negative");
    if (a.channels % a.anchors_n != 0 || a.channels / a.anchors_n < 6)
        fail(DKD_ERR_SIZE, op, ": shape[1]=", a.channels, " is not num_anchors*(5+classes) = ", a.anchors_n,
             "*(5+classes) with classes >= 1");
    // The largest element offset must be representable.
    int64_t last = 0;
    const int64_t dims[4] = {a.batch, a.channels, a.height, a.width};
    for (int i = 0; i < 4; ++i)
        if (dims[i] > 0) {
            int64_t span = mul_size(dims[i] - 1, a.stride[i], op, "head extent");
            if (last > INT64_MAX / 16 - span) fail(DKD_ERR_SIZE, op, ": head extent overflows");
            last += span;
        }
    const int64_t rows = mul_size(mul_size(a.batch, a.anchors_n, op, "rows"), mul_size(a.height, a.width, op, "rows"), op,
                                  "rows (batch*anchors*height*width)");
    (void)rows;
    if (a.net_w <= 0 || a.net_h <= 0) fail(DKD_ERR_SIZE, op, ": net_w=", a.net_w, ", net_h=", a.net_h, " must be positive");
    check_not_null(a.anchors, op, "anchors");
    if (!std::isfinite(a.scale_x_y)) fail(DKD_ERR_VALUE, op, ": scale_x_y=", a.scale_x_y, " is not finite");
    if (std::isnan(a.thresh)) fail(DKD_ERR_VALUE, op, ": thresh is NaN");
    if (a.new_coords != 0 && a.new_coords != 1) fail(DKD_ERR_VALUE, op, ": new_coords=", a.new_coords, " is not 0 or 1");
    check_size(a.capacity, op, "capacity");
    mul_size(a.capacity, a.channels / a.anchors_n, op, "capacity * (5+classes)");
    if (a.capacity > 0) {
        check_not_null(a.out, op, "out");
        check_not_null(a.out_index, op, "out_index");
    }
    *a.num_candidates = 0;
    if (a.batch == 0 || a.height == 0 || a.width == 0) return;
    check_not_null(a.head, op, "head");
    if (a.device == DKD_DEVICE_CPU) cpu::yolo_decode(a);
#ifdef DKD_WITH_CUDA
    else cuda::yolo_decode(a);
#endif
}

}  // namespace dkd
