// kd_loss: fused dense distillation loss + gradient w.r.t. the student logits.
// KL (LD's knowledge_distillation_kl_div_loss, class KD) and the quality-focal BCE used by
// CrossKD.  See dkd_kd_loss in dkd/dkd.h for the contract.
#pragma once

#include <cstdint>

namespace dkd {

struct KdLossArgs {
    const void* student = nullptr;
    const void* teacher = nullptr;
    const void* weight = nullptr;   // [outer][inner] or nullptr
    const uint8_t* mask = nullptr;  // [outer][inner] or nullptr
    int64_t outer = 0, k = 0, inner = 0;
    int kind = 0;  // dkd_kd_kind
    double temperature = 1.0, beta = 1.0;
    int dtype = 0;  // dkd_dtype
    void* loss = nullptr;  // one element of dtype, on device
    void* grad = nullptr;  // [outer][k][inner] of dtype, or nullptr
    int device = 0;
    void* stream = nullptr;
};

void kd_loss(const KdLossArgs& args);

namespace cpu {
void kd_loss(const KdLossArgs& args);
}
namespace cuda {
void kd_loss(const KdLossArgs& args);
}

// The CPU work is split into fixed units (independent of the thread count); each unit
// returns its partial loss and the partials are summed in unit order (deterministic).
struct KdPlan {
    int64_t units = 0;
    int64_t tiles = 0;  // per outer index (layout with inner > 1)
};
KdPlan kd_plan(const KdLossArgs& args);

namespace isa_base {
double kd_unit(const KdLossArgs& args, const KdPlan& plan, int64_t unit);
}
namespace isa_avx2 {
double kd_unit(const KdLossArgs& args, const KdPlan& plan, int64_t unit);
}
namespace isa_avx512 {
double kd_unit(const KdLossArgs& args, const KdPlan& plan, int64_t unit);
}

// Unit sizes (see kd_plan): KL with inner > 1 works on 16 consecutive locations at a time;
// QFL with inner > 1 on 256; both with inner == 1 on blocks of 16 rows.
constexpr int64_t kKdTile = 16;
constexpr int64_t kKdSpan = 256;
constexpr int64_t kKdRows = 16;

}  // namespace dkd
