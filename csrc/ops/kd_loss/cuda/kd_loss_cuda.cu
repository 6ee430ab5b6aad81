// CUDA kd_loss: the same per-location math as the CPU kernels (cpu/kd_kernels.cpp).
// inner > 1 (head layout [outer][K][inner]): one thread per location, consecutive threads
// on consecutive locations (coalesced).  inner == 1 (rows of K): one warp per row.  Each
// block leaves a double partial; a last one-block kernel sums them in order
// (deterministic for a given shape).
#include "common/cuda_util.cuh"
#include "ops/kd_loss/kd_loss.h"

namespace dkd {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 4096;

template <typename T>
struct Args {
    const T* s;
    const T* t;
    const T* w;
    const uint8_t* mask;
    T* g;
    int64_t outer, K, inner;
    T temp, beta;
    bool beta_one;
};

__device__ inline float dexp(float x) { return expf(x); }
__device__ inline double dexp(double x) { return exp(x); }
__device__ inline float dlog(float x) { return logf(x); }
__device__ inline double dlog(double x) { return log(x); }
__device__ inline float dlog1p(float x) { return log1pf(x); }
__device__ inline double dlog1p(double x) { return log1p(x); }
__device__ inline float dpow(float x, float y) { return powf(x, y); }
__device__ inline double dpow(double x, double y) { return pow(x, y); }

template <typename T>
__device__ inline T weight_at(const Args<T>& a, int64_t loc) {
    T w = a.w ? a.w[loc] : T(1);
    if (a.mask && !a.mask[loc]) w = T(0);
    return w;
}

template <typename T>
__device__ inline T sigmoid_abs(T x, T* e_abs) {  // sigmoid via exp(-|x|); also returns exp(-|x|)
    T e = dexp(-(x < T(0) ? -x : x));
    *e_abs = e;
    return x >= T(0) ? T(1) / (T(1) + e) : e / (T(1) + e);
}

// QFL of one element; writes the gradient when g != nullptr.
template <typename T>
__device__ inline T qfl_elem(const Args<T>& a, T sv, T tv, T w, T* g) {
    T et, en;
    T y = sigmoid_abs(tv, &et);
    T q = sigmoid_abs(sv, &en);
    T bce = (sv > T(0) ? sv : T(0)) - sv * y + dlog1p(en);
    T d = q - y;
    T ad = d < T(0) ? -d : d;
    T f = a.beta_one ? ad : (ad > T(0) ? dpow(ad, a.beta) : T(0));
    if (g) *g = w * (d * f + (ad > T(0) ? bce * a.beta * (f / d) * q * (T(1) - q) : T(0)));
    return w * bce * f;
}

template <typename T>
__device__ inline void block_sum(double v, double* partial) {
    __shared__ double warp_sums[kThreads / 32];
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    if ((threadIdx.x & 31) == 0) warp_sums[threadIdx.x >> 5] = v;
    __syncthreads();
    if (threadIdx.x == 0) {
        double s = 0;
        for (int i = 0; i < kThreads / 32; ++i) s += warp_sums[i];
        partial[blockIdx.x] = s;
    }
}

// One thread per location (o, i); logit k at o*K*inner + k*inner + i.
template <typename T, int KIND>
__global__ void loc_kernel(Args<T> a, double* partial) {
    const int64_t locations = a.outer * a.inner;
    double acc = 0;
    for (int64_t loc = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; loc < locations;
         loc += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        const int64_t o = loc / a.inner, i = loc % a.inner;
        const int64_t base = o * a.K * a.inner + i, ks = a.inner;
        const T w = weight_at(a, loc);
        if (w == T(0)) {
            if (a.g)
                for (int64_t k = 0; k < a.K; ++k) a.g[base + k * ks] = T(0);
            continue;
        }
        if (KIND == DKD_KD_QFL) {
            for (int64_t k = 0; k < a.K; ++k)
                acc += qfl_elem(a, a.s[base + k * ks], a.t[base + k * ks], w, a.g ? a.g + base + k * ks : nullptr);
            continue;
        }
        const T inv = T(1) / a.temp;
        T ms = a.s[base], mt = a.t[base];
        for (int64_t k = 1; k < a.K; ++k) {
            ms = max(ms, a.s[base + k * ks]);
            mt = max(mt, a.t[base + k * ks]);
        }
        ms *= inv;
        mt *= inv;
        T zs = 0, zt = 0, cross = 0;
        for (int64_t k = 0; k < a.K; ++k) {
            T sv = a.s[base + k * ks] * inv, tv = a.t[base + k * ks] * inv;
            T et = dexp(tv - mt);
            zs += dexp(sv - ms);
            zt += et;
            cross += et * (tv - sv);
        }
        T kl = cross / zt + (ms + dlog(zs)) - (mt + dlog(zt));
        acc += static_cast<double>(w * a.temp * a.temp * kl);
        if (a.g) {
            T cs = w * a.temp / zs, ct = w * a.temp / zt;
            for (int64_t k = 0; k < a.K; ++k) {
                T sv = a.s[base + k * ks] * inv, tv = a.t[base + k * ks] * inv;
                a.g[base + k * ks] = cs * dexp(sv - ms) - ct * dexp(tv - mt);
            }
        }
    }
    block_sum<T>(acc, partial);
}

__device__ inline float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
__device__ inline double warp_max(double v) {
    for (int o = 16; o > 0; o >>= 1) v = fmax(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
template <typename T>
__device__ inline T warp_sum(T v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// One warp per row of K contiguous logits (inner == 1).
template <typename T, int KIND>
__global__ void row_kernel(Args<T> a, double* partial) {
    const int lane = threadIdx.x & 31;
    const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x / 32);
    double acc = 0;
    for (int64_t r = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + (threadIdx.x >> 5); r < a.outer;
         r += warps) {
        const T* s = a.s + r * a.K;
        const T* t = a.t + r * a.K;
        T* g = a.g ? a.g + r * a.K : nullptr;
        const T w = weight_at(a, r);
        if (w == T(0)) {
            if (g)
                for (int64_t k = lane; k < a.K; k += 32) g[k] = T(0);
            continue;
        }
        if (KIND == DKD_KD_QFL) {
            T part = 0;
            for (int64_t k = lane; k < a.K; k += 32) part += qfl_elem(a, s[k], t[k], w, g ? g + k : nullptr);
            acc += static_cast<double>(part);
            continue;
        }
        const T inv = T(1) / a.temp;
        T ms = -INFINITY, mt = -INFINITY;
        for (int64_t k = lane; k < a.K; k += 32) {
            ms = max(ms, s[k]);
            mt = max(mt, t[k]);
        }
        ms = warp_max(ms) * inv;
        mt = warp_max(mt) * inv;
        T zs = 0, zt = 0, cross = 0;
        for (int64_t k = lane; k < a.K; k += 32) {
            T sv = s[k] * inv, tv = t[k] * inv;
            T et = dexp(tv - mt);
            zs += dexp(sv - ms);
            zt += et;
            cross += et * (tv - sv);
        }
        zs = warp_sum(zs);
        zt = warp_sum(zt);
        cross = warp_sum(cross);
        if (lane == 0) {
            T kl = cross / zt + (ms + dlog(zs)) - (mt + dlog(zt));
            acc += static_cast<double>(w * a.temp * a.temp * kl);
        }
        if (g) {
            T cs = w * a.temp / zs, ct = w * a.temp / zt;
            for (int64_t k = lane; k < a.K; k += 32) g[k] = cs * dexp(s[k] * inv - ms) - ct * dexp(t[k] * inv - mt);
        }
    }
    block_sum<T>(acc, partial);
}

template <typename T>
__global__ void finish_kernel(const double* partial, int64_t n, T* loss) {
    if (threadIdx.x == 0 && blockIdx.x == 0) {
        double s = 0;
        for (int64_t i = 0; i < n; ++i) s += partial[i];
        *loss = static_cast<T>(s);
    }
}

template <typename T>
void run(const KdLossArgs& k) {
    cudaStream_t stream = as_stream(k.stream);
    Args<T> a;
    a.s = static_cast<const T*>(k.student);
    a.t = static_cast<const T*>(k.teacher);
    a.w = static_cast<const T*>(k.weight);
    a.mask = k.mask;
    a.g = static_cast<T*>(k.grad);
    a.outer = k.outer;
    a.K = k.k;
    a.inner = k.inner;
    a.temp = static_cast<T>(k.temperature);
    a.beta = static_cast<T>(k.beta);
    a.beta_one = k.beta == 1.0;
    const bool rows = k.inner == 1;
    const int64_t work = rows ? k.outer * 32 : k.outer * k.inner;
    const unsigned blocks = blocks_for(work, kThreads, kMaxBlocks);
    Scratch partial(blocks * sizeof(double), stream);
    double* p = partial.as<double>();
    if (rows) {
        if (k.kind == DKD_KD_KL) row_kernel<T, DKD_KD_KL><<<blocks, kThreads, 0, stream>>>(a, p);
        else row_kernel<T, DKD_KD_QFL><<<blocks, kThreads, 0, stream>>>(a, p);
    } else {
        if (k.kind == DKD_KD_KL) loc_kernel<T, DKD_KD_KL><<<blocks, kThreads, 0, stream>>>(a, p);
        else loc_kernel<T, DKD_KD_QFL><<<blocks, kThreads, 0, stream>>>(a, p);
    }
    DKD_CUDA_LAUNCHED();
    finish_kernel<T><<<1, 32, 0, stream>>>(p, blocks, static_cast<T*>(k.loss));
    DKD_CUDA_LAUNCHED();
}

}  // namespace

void kd_loss(const KdLossArgs& a) {
    if (a.dtype == DKD_FLOAT32) run<float>(a);
    else run<double>(a);
}

}  // namespace cuda
}  // namespace dkd
