#include "common/isa.h"

#include <cstdlib>
#include <cstring>

namespace dkd {
namespace {

Isa detect() {
#if defined(DKD_MULTI_ISA) && (defined(__x86_64__) || defined(__i386__))
    __builtin_cpu_init();
    Isa best = Isa::kBase;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("bmi2"))
        best = Isa::kAvx2;
    if (best == Isa::kAvx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512cd"))
        best = Isa::kAvx512;
    // DKD_ISA can only lower the choice (a forced wider ISA would fault on this CPU).
    if (const char* env = std::getenv("DKD_ISA")) {
        Isa want = best;
        if (!std::strcmp(env, "base")) want = Isa::kBase;
        else if (!std::strcmp(env, "avx2")) want = Isa::kAvx2;
        else if (!std::strcmp(env, "avx512")) want = Isa::kAvx512;
        if (static_cast<int>(want) < static_cast<int>(best)) best = want;
    }
    return best;
#else
    return Isa::kBase;
#endif
}

}  // namespace

Isa active_isa() {
    static const Isa isa = detect();
    return isa;
}

const char* isa_name(Isa isa) {
    switch (isa) {
        case Isa::kAvx512: return "avx512";
        case Isa::kAvx2: return "avx2";
        default: return "base";
    }
}

}  // namespace dkd
