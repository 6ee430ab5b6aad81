// Darknet activations (src/activations.c, the Python model's ACTIVATIONS): names, a scalar
// reference, and their oneDNN eltwise post-ops (fused into the convolution / shortcut).
#include <cmath>
#include <cstring>

#include "engine/act_math.h"
#include "engine/plan.h"

namespace dkd {
namespace engine {
namespace {

struct ActName {
    const char* name;
    Act act;
};
const ActName kActs[] = {{"linear", Act::kLinear},     {"leaky", Act::kLeaky},     {"relu", Act::kRelu},
                         {"relu6", Act::kRelu6},       {"logistic", Act::kLogistic}, {"tanh", Act::kTanh},
                         {"mish", Act::kMish},         {"hard_mish", Act::kHardMish}, {"swish", Act::kSwish},
                         {"elu", Act::kElu},           {"selu", Act::kSelu},       {"gelu", Act::kGelu},
                         {"relie", Act::kRelie},       {"hardtan", Act::kHardtan}, {"lhtan", Act::kLhtan},
                         {"loggy", Act::kLoggy}};

inline float bf16_to_f32(uint16_t v) {
    uint32_t u = (uint32_t)v << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
inline uint16_t f32_to_bf16(float f) {  // round to nearest even, as oneDNN
    uint32_t u;
    std::memcpy(&u, &f, 4);
    if ((u & 0x7fffffff) > 0x7f800000) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fff + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

}  // namespace

Act parse_activation(const Section& sec, const std::string& def) {
    std::string name = sec.get_str("activation", def);
    for (const auto& a : kActs)
        if (name == a.name) return a.act;
    sec.error("unknown activation " + py_repr(name) + " (Darknet would silently use relu)", "activation");
}

float activate(Act a, float x) { return activate_code(static_cast<int>(a), x); }

bool activation_post_ops(Act a, dnnl::post_ops& po) {
    using alg = dnnl::algorithm;
    switch (a) {
        case Act::kLinear: return true;
        case Act::kLeaky: po.append_eltwise(1.f, alg::eltwise_relu, 0.1f, 0.f); return true;
        case Act::kRelu: po.append_eltwise(1.f, alg::eltwise_relu, 0.f, 0.f); return true;
        case Act::kRelu6: po.append_eltwise(1.f, alg::eltwise_clip, 0.f, 6.f); return true;
        case Act::kLogistic: po.append_eltwise(1.f, alg::eltwise_logistic, 0.f, 0.f); return true;
        case Act::kTanh: po.append_eltwise(1.f, alg::eltwise_tanh, 0.f, 0.f); return true;
        case Act::kMish: po.append_eltwise(1.f, alg::eltwise_mish, 0.f, 0.f); return true;
        case Act::kSwish: po.append_eltwise(1.f, alg::eltwise_swish, 1.f, 0.f); return true;
        case Act::kElu: po.append_eltwise(1.f, alg::eltwise_elu, 1.f, 0.f); return true;
        case Act::kSelu:
            po.append_eltwise(1.f, alg::eltwise_elu, 1.6732632423543772f, 0.f);
            po.append_eltwise(1.f, alg::eltwise_linear, 1.0507009873554805f, 0.f);
            return true;
        case Act::kGelu: po.append_eltwise(1.f, alg::eltwise_gelu_tanh, 0.f, 0.f); return true;
        case Act::kRelie: po.append_eltwise(1.f, alg::eltwise_relu, 0.01f, 0.f); return true;
        case Act::kHardtan: po.append_eltwise(1.f, alg::eltwise_clip, -1.f, 1.f); return true;
        case Act::kLoggy:
            po.append_eltwise(1.f, alg::eltwise_logistic, 0.f, 0.f);
            po.append_eltwise(1.f, alg::eltwise_linear, 2.f, -1.f);
            return true;
        case Act::kHardMish:
        case Act::kLhtan: return false;
    }
    return false;
}

// Element-wise in any layout: both activations map 0 to 0, so the padding of blocked
// layouts stays 0.
void apply_activation(Plan& p, int tid, Act a) {
    p.add_fn(
        [tid, a](Plan& pl) {
            const md_t& md = pl.desc(tid);
            size_t n = md.get_size() / (md.data_type() == dt::bf16 ? 2 : 4);
            void* d = pl.data(tid);
            if (md.data_type() == dt::bf16) {
                auto* v = static_cast<uint16_t*>(d);
#pragma omp parallel for schedule(static)
                for (int64_t i = 0; i < (int64_t)n; ++i) v[i] = f32_to_bf16(activate(a, bf16_to_f32(v[i])));
            } else {
                auto* v = static_cast<float*>(d);
#pragma omp parallel for schedule(static)
                for (int64_t i = 0; i < (int64_t)n; ++i) v[i] = activate(a, v[i]);
            }
        },
        {tid});
}

}  // namespace engine
}  // namespace dkd
