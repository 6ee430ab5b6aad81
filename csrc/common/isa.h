// Runtime CPU dispatch.  Hot CPU kernels are compiled three times (csrc/ops/*/cpu/*_isa.cpp
// includes the kernel source under different -march flags): base x86-64, x86-64-v3 (AVX2,
// FMA) and x86-64-v4 (AVX-512, 512-bit vectors).  best_isa() picks the widest the CPU runs;
// DKD_ISA=base|avx2|avx512 forces one (tests use it to check every variant).
#pragma once

namespace dkd {

enum class Isa { kBase = 0, kAvx2 = 1, kAvx512 = 2 };

Isa active_isa();
const char* isa_name(Isa isa);

}  // namespace dkd

// Picks the variant of a kernel for the active ISA.  The kernel source is compiled once per
// ISA into namespaces dkd::isa_base, dkd::isa_avx2, dkd::isa_avx512 (CMake: dkd_multi_isa),
// e.g. DKD_ISA_SELECT(isa_base::f, isa_avx2::f, isa_avx512::f).
#if defined(DKD_MULTI_ISA)
#define DKD_ISA_SELECT(base_fn, avx2_fn, avx512_fn)                        \
    (::dkd::active_isa() == ::dkd::Isa::kAvx512 ? (avx512_fn)              \
     : ::dkd::active_isa() == ::dkd::Isa::kAvx2 ? (avx2_fn) : (base_fn))
#else
#define DKD_ISA_SELECT(base_fn, avx2_fn, avx512_fn) (base_fn)
#endif
