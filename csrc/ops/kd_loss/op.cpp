// kd_loss dispatcher: argument checks shared by every device, then the kernel.
#include "ops/kd_loss/kd_loss.h"

#include <cmath>

#include "common/error.h"

namespace dkd {

void kd_loss(const KdLossArgs& a) {
    const char* op = "kd_loss";
    check_device(a.device, op);
    check_size(a.outer, op, "outer");
    check_size(a.k, op, "k", 1);
    check_size(a.inner, op, "inner");
    int64_t locations = mul_size(a.outer, a.inner, op, "outer * inner");
    mul_size(locations, a.k, op, "outer * k * inner");
    if (a.kind != DKD_KD_KL && a.kind != DKD_KD_QFL)
        fail(DKD_ERR_VALUE, op, ": kind=", a.kind, " is not DKD_KD_KL (0) or DKD_KD_QFL (1)");
    if (a.dtype != DKD_FLOAT32 && a.dtype != DKD_FLOAT64)
        fail(DKD_ERR_VALUE, op, ": dtype=", a.dtype, " is not DKD_FLOAT32 (0) or DKD_FLOAT64 (1)");
    if (a.kind == DKD_KD_KL && !(std::isfinite(a.temperature) && a.temperature > 0))
        fail(DKD_ERR_VALUE, op, ": temperature=", a.temperature, " must be a positive number");
    if (a.kind == DKD_KD_QFL && !(std::isfinite(a.beta) && a.beta > 0))
        fail(DKD_ERR_VALUE, op, ": beta=", a.beta, " must be a positive number");
    check_not_null(a.loss, op, "loss");
    if (locations > 0) {
        check_not_null(a.student, op, "student");
        check_not_null(a.teacher, op, "teacher");
    }
    if (a.device == DKD_DEVICE_CPU) cpu::kd_loss(a);
#ifdef DKD_WITH_CUDA
    else cuda::kd_loss(a);
#endif
}

}  // namespace dkd
