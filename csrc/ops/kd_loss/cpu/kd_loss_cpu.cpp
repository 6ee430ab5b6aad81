// CPU kd_loss driver: fixed work units (kd_plan) over std::threads, per-unit partial
// losses summed in unit order, so the loss is bit-identical for any thread count.
#include <vector>

#include "common/error.h"
#include "common/isa.h"
#include "common/parallel.h"
#include "ops/kd_loss/kd_loss.h"

namespace dkd {

KdPlan kd_plan(const KdLossArgs& a) {
    KdPlan p;
    if (a.inner == 1 || a.inner == 0) {
        p.units = (a.outer + kKdRows - 1) / kKdRows;
    } else {
        int64_t width = a.kind == DKD_KD_KL ? kKdTile : kKdSpan;
        p.tiles = (a.inner + width - 1) / width;
        p.units = a.outer * p.tiles;
    }
    if (a.inner == 0) p.units = 0;
    return p;
}

namespace cpu {

void kd_loss(const KdLossArgs& a) {
    const KdPlan plan = kd_plan(a);
    std::vector<double> partial(plan.units, 0.0);
    auto unit_fn = DKD_ISA_SELECT(isa_base::kd_unit, isa_avx2::kd_unit, isa_avx512::kd_unit);
    parallel_for(plan.units, 4, [&](int64_t u) { partial[u] = unit_fn(a, plan, u); });
    double total = 0.0;
    for (double v : partial) total += v;
    if (a.dtype == DKD_FLOAT32) *static_cast<float*>(a.loss) = static_cast<float>(total);
    else *static_cast<double*>(a.loss) = total;
}

}  // namespace cpu
}  // namespace dkd
