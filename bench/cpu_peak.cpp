// The arithmetic peak of one core of this CPU, for bench/infer.py: fp32 FMA (vfmadd, 16 lanes
// x 2 flop) and AVX512-BF16 dot products (vdpbf16ps, 16 lanes x 2 products x 2 flop), on 12
// independent accumulator chains.  Thousands of short trials, the best kept: on a shared
// machine some trials run undisturbed.  Prints "fp32 GFLOPS bf16 GFLOPS" (bf16 0 without
// AVX512-BF16).   g++ -O2 bench/cpu_peak.cpp -o cpu_peak && ./cpu_peak
#include <immintrin.h>

#include <chrono>
#include <cstdio>

template <class F>
double best_rate(F body, double flop_per_iter) {
    double best = 0;
    for (int trial = 0; trial < 3000; ++trial) {
        const long iters = 20000;
        auto t = std::chrono::steady_clock::now();
        volatile float sink = body(iters);
        (void)sink;
        double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
        if (iters * flop_per_iter / dt / 1e9 > best) best = iters * flop_per_iter / dt / 1e9;
    }
    return best;
}

__attribute__((target("avx512f"))) float fma_body(long iters) {
    __m512 a[12];
    for (int i = 0; i < 12; i++) a[i] = _mm512_set1_ps(i * 0.001f);
    const __m512 b = _mm512_set1_ps(0.999f), c = _mm512_set1_ps(0.0001f);
    for (long k = 0; k < iters; k++) {
#pragma GCC unroll 12
        for (int i = 0; i < 12; i++) a[i] = _mm512_fmadd_ps(a[i], b, c);
    }
    __m512 s = a[0];
    for (int i = 1; i < 12; i++) s = _mm512_add_ps(s, a[i]);
    return _mm512_reduce_add_ps(s);
}

__attribute__((target("avx512f,avx512bf16"))) float bf16_body(long iters) {
    __m512 a[12];
    for (int i = 0; i < 12; i++) a[i] = _mm512_set1_ps(i * 0.001f);
    const __m512bh b = (__m512bh)_mm512_set1_epi16(0x3f80), c = (__m512bh)_mm512_set1_epi16(0x3a80);
    for (long k = 0; k < iters; k++) {
#pragma GCC unroll 12
        for (int i = 0; i < 12; i++) a[i] = _mm512_dpbf16_ps(a[i], b, c);
    }
    __m512 s = a[0];
    for (int i = 1; i < 12; i++) s = _mm512_add_ps(s, a[i]);
    return _mm512_reduce_add_ps(s);
}

int main() {
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx512f")) {
        std::printf("0 0\n");
        return 0;
    }
    double fp32 = best_rate(fma_body, 12 * 32.0);
    double bf16 = __builtin_cpu_supports("avx512bf16") ? best_rate(bf16_body, 12 * 64.0) : 0.0;
    std::printf("%.1f %.1f\n", fp32, bf16);
}
