// Branch-free float exp/log that GCC vectorizes (glibc's expf/logf calls do not vectorize
// without -ffast-math).  Cephes-style range reduction + minimax polynomials; relative error
// below 2 ulp on the ranges used by the ops.  Double versions forward to <cmath> (the
// float64 path exists for gradcheck, not speed).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace dkd {
namespace vm {

static inline float bits_to_float(int32_t i) {
    float f;
    std::memcpy(&f, &i, sizeof f);
    return f;
}
static inline int32_t float_to_bits(float f) {
    int32_t i;
    std::memcpy(&i, &f, sizeof i);
    return i;
}

// e^x; 0 below -87.3 (no subnormals), e^88 above 88, NaN stays NaN.
static inline float exp(float x) {
    const float hi = 88.0f, lo = -87.3365447505531f;
    float xc = x > hi ? hi : x;
    xc = xc < lo ? lo : xc;
    // n = round(x / ln2) by the 1.5*2^23 shifter (round-to-nearest, no branch)
    const float shifter = 12582912.0f;
    float kd = xc * 1.44269504088896341f + shifter;
    // unsigned arithmetic: well defined for every input (NaN gives garbage n, then NaN out)
    uint32_t n = static_cast<uint32_t>(float_to_bits(kd)) - static_cast<uint32_t>(float_to_bits(shifter));
    float fn = kd - shifter;
    float r = xc - fn * 0.693359375f;
    r = r - fn * -2.12194440e-4f;
    float r2 = r * r;
    float p = 1.9875691500E-4f;
    p = p * r + 1.3981999507E-3f;
    p = p * r + 8.3334519073E-3f;
    p = p * r + 4.1665795894E-2f;
    p = p * r + 1.6666665459E-1f;
    p = p * r + 5.0000001201E-1f;
    p = p * r2 + r + 1.0f;
    float y = p * bits_to_float(static_cast<int32_t>((n + 127u) << 23));
    y = x < lo ? 0.f : y;
    return x != x ? x : y;
}

// natural log for x > 0 (x = 0 gives -inf, x < 0 or NaN gives NaN).
static inline float log(float x) {
    uint32_t ix = static_cast<uint32_t>(float_to_bits(x));
    // normalise the mantissa to [sqrt(0.5), sqrt(2))
    int32_t e = static_cast<int32_t>((ix >> 23) & 0xffu) - 127;
    float m = bits_to_float(static_cast<int32_t>((ix & 0x007fffffu) | 0x3f800000u));  // [1, 2)
    bool big = m > 1.41421356237f;
    m = big ? m * 0.5f : m;
    e = big ? e + 1 : e;
    float f = m - 1.0f;
    float z = f * f;
    float p = 7.0376836292E-2f;
    p = p * f - 1.1514610310E-1f;
    p = p * f + 1.1676998740E-1f;
    p = p * f - 1.2420140846E-1f;
    p = p * f + 1.4249322787E-1f;
    p = p * f - 1.6668057665E-1f;
    p = p * f + 2.0000714765E-1f;
    p = p * f - 2.4999993993E-1f;
    p = p * f + 3.3333331174E-1f;
    float y = f * z * p;
    float fe = static_cast<float>(e);
    y += -2.12194440e-4f * fe;
    y += -0.5f * z;
    float r = f + y + 0.693359375f * fe;
    r = x == 0.f ? -INFINITY : r;
    r = (x < 0.f || x != x) ? NAN : r;
    r = x == INFINITY ? x : r;
    return r;
}

// log(1 + x) for x >= 0, accurate for tiny x (Goldberg's correction: log(u) * x / (u - 1)).
static inline float log1p(float x) {
    float u = 1.0f + x;
    float d = u - 1.0f;
    float l = vm::log(u);
    return d == 0.f ? x : l * (x / d);
}

static inline double exp(double x) { return std::exp(x); }
static inline double log(double x) { return std::log(x); }
static inline double log1p(double x) { return std::log1p(x); }

}  // namespace vm
}  // namespace dkd
