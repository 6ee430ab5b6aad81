// kd_loss CPU kernels, compiled once per ISA (see common/isa.h).  Written as fixed-width
// lane loops over plain arrays so GCC vectorizes them without -ffast-math; exp/log are the
// branch-free ones from common/vmath.h.
//
// KL, per location with K logits s (student) and t (teacher), temperature T:
//   l = T^2 * sum_k p_t,k (log p_t,k - log p_s,k),  p = softmax(logits / T)
//   dl/ds_k = T * (p_s,k - p_t,k)
// QFL, per element with y = sigmoid(t), q = sigmoid(s), d = q - y:
//   l = BCE(s, y) * |d|^beta,  BCE = max(s,0) - s*y + log1p(exp(-|s|))
//   dl/ds = d * |d|^beta + BCE * beta * |d|^beta / d * q * (1 - q)   (0 where d = 0)
// Every location's loss and gradient are multiplied by its weight; weight 0 or mask 0
// gives exactly 0 (even for non-finite logits there).
#include <algorithm>
#include <cmath>
#include <vector>

#include "common/vmath.h"
#include "dkd/dkd.h"
#include "ops/kd_loss/kd_loss.h"

#ifndef DKD_ISA_NS
#define DKD_ISA_NS isa_base
#endif

namespace dkd {
namespace DKD_ISA_NS {
namespace {

template <typename T>
std::vector<T>& scratch() {
    thread_local std::vector<T> buf;
    return buf;
}

template <typename T>
inline T location_weight(const KdLossArgs& a, int64_t j) {
    T w = a.weight ? static_cast<const T*>(a.weight)[j] : T(1);
    if (a.mask && !a.mask[j]) w = T(0);
    return w;
}

// KL over L consecutive locations; logit k of lane l at s[k*ks + l].  G: write the
// gradient to g (a template flag, so the loops have no branches and vectorize).
template <typename T, int L, bool G>
double kl_tile(const T* __restrict s, const T* __restrict t, T* __restrict g, int64_t K, int64_t ks,
               const T* w, T temp) {
    const T inv = T(1) / temp;
    bool any = false;
    for (int l = 0; l < L; ++l) any |= w[l] != T(0);
    if (!any) {
        if (G)
            for (int64_t k = 0; k < K; ++k)
                for (int l = 0; l < L; ++l) g[k * ks + l] = T(0);
        return 0.0;
    }
    T ms[L], mt[L], zs[L], zt[L], acc[L];
    for (int l = 0; l < L; ++l) {
        ms[l] = s[l];
        mt[l] = t[l];
        zs[l] = zt[l] = acc[l] = T(0);
    }
    for (int64_t k = 1; k < K; ++k)
        for (int l = 0; l < L; ++l) {
            T sv = s[k * ks + l], tv = t[k * ks + l];
            ms[l] = sv > ms[l] ? sv : ms[l];
            mt[l] = tv > mt[l] ? tv : mt[l];
        }
    for (int l = 0; l < L; ++l) {
        ms[l] *= inv;
        mt[l] *= inv;
    }
    std::vector<T>& et_buf = scratch<T>();
    if (G && static_cast<int64_t>(et_buf.size()) < K * L) et_buf.resize(K * L);
    T* __restrict et_all = et_buf.data();
    for (int64_t k = 0; k < K; ++k)
        for (int l = 0; l < L; ++l) {
            T sv = s[k * ks + l] * inv, tv = t[k * ks + l] * inv;
            T es = vm::exp(sv - ms[l]), et = vm::exp(tv - mt[l]);
            zs[l] += es;
            zt[l] += et;
            acc[l] += et * (tv - sv);
            if (G) {
                g[k * ks + l] = es;
                et_all[k * L + l] = et;
            }
        }
    double total = 0.0;
    T cs[L], ct[L];
    for (int l = 0; l < L; ++l) {
        T kl = acc[l] / zt[l] + (ms[l] + vm::log(zs[l])) - (mt[l] + vm::log(zt[l]));
        T v = w[l] * temp * temp * kl;
        total += w[l] != T(0) ? static_cast<double>(v) : 0.0;
        cs[l] = w[l] * temp / zs[l];
        ct[l] = w[l] * temp / zt[l];
    }
    if (G)
        for (int64_t k = 0; k < K; ++k)
            for (int l = 0; l < L; ++l) {
                T v = cs[l] * g[k * ks + l] - ct[l] * et_all[k * L + l];
                g[k * ks + l] = w[l] != T(0) ? v : T(0);
            }
    return total;
}

// KL over one location whose K logits are contiguous; vectorized over k with L partial
// accumulators (fixed order: deterministic).
template <typename T, bool G>
double kl_row(const T* __restrict s, const T* __restrict t, T* __restrict g, int64_t K, T w, T temp) {
    constexpr int L = 16;
    if (w == T(0)) {
        if (G) std::fill(g, g + K, T(0));
        return 0.0;
    }
    const T inv = T(1) / temp;
    T ms = s[0], mt = t[0];
    {
        T vs[L], vt[L];
        for (int l = 0; l < L; ++l) vs[l] = ms, vt[l] = mt;
        int64_t k = 0;
        for (; k + L <= K; k += L)
            for (int l = 0; l < L; ++l) {
                vs[l] = s[k + l] > vs[l] ? s[k + l] : vs[l];
                vt[l] = t[k + l] > vt[l] ? t[k + l] : vt[l];
            }
        for (; k < K; ++k) {
            vs[0] = s[k] > vs[0] ? s[k] : vs[0];
            vt[0] = t[k] > vt[0] ? t[k] : vt[0];
        }
        for (int l = 0; l < L; ++l) ms = vs[l] > ms ? vs[l] : ms, mt = vt[l] > mt ? vt[l] : mt;
    }
    ms *= inv;
    mt *= inv;
    std::vector<T>& et_buf = scratch<T>();
    if (G && static_cast<int64_t>(et_buf.size()) < K) et_buf.resize(K);
    T* __restrict et_all = et_buf.data();
    T zs_l[L] = {}, zt_l[L] = {}, acc_l[L] = {};
    int64_t k = 0;
    auto body = [&](int64_t kk, int l) {
        T sv = s[kk] * inv, tv = t[kk] * inv;
        T es = vm::exp(sv - ms), et = vm::exp(tv - mt);
        zs_l[l] += es;
        zt_l[l] += et;
        acc_l[l] += et * (tv - sv);
        if (G) {
            g[kk] = es;
            et_all[kk] = et;
        }
    };
    for (; k + L <= K; k += L)
        for (int l = 0; l < L; ++l) body(k + l, l);
    for (; k < K; ++k) body(k, 0);
    T zs = 0, zt = 0, acc = 0;
    for (int l = 0; l < L; ++l) zs += zs_l[l], zt += zt_l[l], acc += acc_l[l];
    T kl = acc / zt + (ms + vm::log(zs)) - (mt + vm::log(zt));
    if (G) {
        T cs = w * temp / zs, ct = w * temp / zt;
        for (int64_t kk = 0; kk < K; ++kk) g[kk] = cs * g[kk] - ct * et_all[kk];
    }
    return static_cast<double>(w * temp * temp * kl);
}

// QFL over n contiguous elements; element e has weight w[e * WSTEP] (0: one weight).
// B1: beta == 1 (|d|^beta = |d|, no exp/log).
template <typename T, int WSTEP, bool G, bool B1>
double qfl_span(const T* __restrict s, const T* __restrict t, T* __restrict g, int64_t n, const T* __restrict w,
                T beta) {
    T acc[16] = {};
    int64_t e = 0;
    auto body = [&](int64_t i, int l) {
        T wv = w[i * WSTEP];
        T sv = s[i], tv = t[i];
        // sigmoid through exp(-|x|) (no overflow); the same formula for y and q, so s = t
        // gives d = 0 exactly.
        T et = vm::exp(-(tv < T(0) ? -tv : tv));
        T y = tv >= T(0) ? T(1) / (T(1) + et) : et / (T(1) + et);
        T en = vm::exp(-(sv < T(0) ? -sv : sv));
        T q = sv >= T(0) ? T(1) / (T(1) + en) : en / (T(1) + en);
        T bce = (sv > T(0) ? sv : T(0)) - sv * y + vm::log1p(en);
        T d = q - y;
        T ad = d < T(0) ? -d : d;
        T f = B1 ? ad : (ad > T(0) ? vm::exp(beta * vm::log(ad)) : T(0));
        T v = wv * bce * f;
        T gr = wv * (d * f + (ad > T(0) ? bce * beta * (f / d) * q * (T(1) - q) : T(0)));
        bool on = wv != T(0);
        acc[l] += on ? v : T(0);
        if (G) g[i] = on ? gr : T(0);
    };
    for (; e + 16 <= n; e += 16)
        for (int l = 0; l < 16; ++l) body(e + l, l);
    for (; e < n; ++e) body(e, 0);
    double total = 0.0;
    for (int l = 0; l < 16; ++l) total += acc[l];
    return total;
}

template <typename T, bool G, bool B1>
double unit_impl(const KdLossArgs& a, const KdPlan& p, int64_t u) {
    const T* s = static_cast<const T*>(a.student);
    const T* t = static_cast<const T*>(a.teacher);
    T* g = static_cast<T*>(a.grad);
    const int64_t K = a.k, I = a.inner;
    const T temp = static_cast<T>(a.temperature), beta = static_cast<T>(a.beta);
    double total = 0.0;
    if (I == 1) {  // rows: [outer][K]
        int64_t r0 = u * kKdRows, r1 = std::min(a.outer, r0 + kKdRows);
        for (int64_t r = r0; r < r1; ++r) {
            T w = location_weight<T>(a, r);
            T* gr = G ? g + r * K : nullptr;
            if (a.kind == DKD_KD_KL) {
                total += kl_row<T, G>(s + r * K, t + r * K, gr, K, w, temp);
            } else if (w == T(0)) {
                if (G) std::fill(gr, gr + K, T(0));
            } else {
                total += qfl_span<T, 0, G, B1>(s + r * K, t + r * K, gr, K, &w, beta);
            }
        }
        return total;
    }
    const int64_t o = u / p.tiles, tile = u % p.tiles;
    const int64_t base = o * K * I;
    if (a.kind == DKD_KD_KL) {
        const int64_t i0 = tile * kKdTile, n = std::min<int64_t>(kKdTile, I - i0);
        T w[kKdTile];
        for (int64_t l = 0; l < n; ++l) w[l] = location_weight<T>(a, o * I + i0 + l);
        const int64_t off = base + i0;
        if (n == kKdTile) return kl_tile<T, kKdTile, G>(s + off, t + off, G ? g + off : nullptr, K, I, w, temp);
        for (int64_t l = 0; l < n; ++l)
            total += kl_tile<T, 1, G>(s + off + l, t + off + l, G ? g + off + l : nullptr, K, I, &w[l], temp);
        return total;
    }
    const int64_t i0 = tile * kKdSpan, n = std::min<int64_t>(kKdSpan, I - i0);
    T w[kKdSpan];
    bool any = false;
    for (int64_t l = 0; l < n; ++l) {
        w[l] = location_weight<T>(a, o * I + i0 + l);
        any |= w[l] != T(0);
    }
    for (int64_t k = 0; k < K; ++k) {
        const int64_t off = base + k * I + i0;
        if (!any) {
            if (G) std::fill(g + off, g + off + n, T(0));
            continue;
        }
        total += qfl_span<T, 1, G, B1>(s + off, t + off, G ? g + off : nullptr, n, w, beta);
    }
    return total;
}

template <typename T>
double unit(const KdLossArgs& a, const KdPlan& p, int64_t u) {
    const bool g = a.grad != nullptr, b1 = a.kind == DKD_KD_QFL && a.beta == 1.0;
    if (g) return b1 ? unit_impl<T, true, true>(a, p, u) : unit_impl<T, true, false>(a, p, u);
    return b1 ? unit_impl<T, false, true>(a, p, u) : unit_impl<T, false, false>(a, p, u);
}

}  // namespace

double kd_unit(const KdLossArgs& a, const KdPlan& plan, int64_t u) {
    return a.dtype == DKD_FLOAT32 ? unit<float>(a, plan, u) : unit<double>(a, plan, u);
}

}  // namespace DKD_ISA_NS
}  // namespace dkd
