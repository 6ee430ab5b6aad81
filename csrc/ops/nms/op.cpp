// nms dispatcher: argument checks shared by every device, then the CPU or CUDA kernel.
#include "ops/nms/nms.h"

#include <cmath>
#include <cstdint>

#include "common/error.h"

namespace dkd {

void nms(const NmsArgs& a) {
    const char* op = "nms";
    check_device(a.device, op);
    check_size(a.n, op, "n");
    check_size(a.classes, op, "num_classes", 1);
    check_size(a.images, op, "num_images", 1);
    check_size(a.max_det, op, "max_det");
    mul_size(a.n, 4, op, "boxes size");
    mul_size(a.n, a.classes, op, "scores size (n * num_classes)");
    mul_size(a.images, a.classes, op, "num_images * num_classes");
    if (a.classes > INT32_MAX) fail(DKD_ERR_SIZE, op, ": num_classes=", a.classes, " exceeds 2^31-1");
    if (a.n > 0) {
        check_not_null(a.boxes, op, "boxes");
        check_not_null(a.scores, op, "scores");
        check_not_null(a.keep, op, "keep");
    }
    if (!std::isfinite(a.iou_thresh)) fail(DKD_ERR_VALUE, op, ": iou_thresh=", a.iou_thresh, " is not finite");
    if (!std::isfinite(a.score_thresh)) fail(DKD_ERR_VALUE, op, ": score_thresh=", a.score_thresh, " is not finite");
    if (a.kind != DKD_NMS_IOU && a.kind != DKD_NMS_GREEDY_DIOU && a.kind != DKD_NMS_DIOU)
        fail(DKD_ERR_VALUE, op, ": kind=", a.kind, " is not DKD_NMS_IOU (0), DKD_NMS_GREEDY_DIOU (1) or DKD_NMS_DIOU (2)");
    if (a.kind == DKD_NMS_DIOU && !(std::isfinite(a.beta) && a.beta > 0))
        fail(DKD_ERR_VALUE, op, ": beta_nms=", a.beta, " must be a positive number");
    if (a.n == 0) return;
    if (a.device == DKD_DEVICE_CPU) cpu::nms(a);
#ifdef DKD_WITH_CUDA
    else cuda::nms(a);
#endif
}

}  // namespace dkd
