// CUDA yolo_decode: count candidates per 256-row block, scan the block counts, then each
// block writes its candidates at its offset (warp ballots give the order inside a block),
// so the rows come out in (b, anchor, row, col) order as on the CPU.  Compiled with
// --fmad=false: the same float arithmetic as the CPU kernel (expf may differ by an ulp).
#include "common/cuda_util.cuh"
#include "ops/yolo_decode/yolo_decode.h"

namespace dkd {
namespace cuda {
namespace {

constexpr int kThreads = 256;

struct Geometry {
    const float* head;
    int64_t B, A, H, W, C, per;
    int64_t sb, sc, sh, sw;
    int64_t rows;
    bool raw;
    float thresh;
};

__device__ inline float logistic(float x) { return 1.f / (1.f + expf(-x)); }

__device__ inline const float* cell(const Geometry& g, int64_t r, int64_t* b, int64_t* a, int64_t* row, int64_t* col) {
    *col = r % g.W;
    int64_t t = r / g.W;
    *row = t % g.H;
    t /= g.H;
    *a = t % g.A;
    *b = t / g.A;
    return g.head + *b * g.sb + *a * g.per * g.sc + *row * g.sh + *col * g.sw;
}

__device__ inline bool candidate(const Geometry& g, int64_t r) {
    if (r >= g.rows) return false;
    int64_t b, a, row, col;
    const float* p = cell(g, r, &b, &a, &row, &col);
    float v = p[4 * g.sc];
    float obj = g.raw ? v : logistic(v);
    return obj > g.thresh;
}

__global__ void count_kernel(Geometry g, int64_t* block_counts) {
    int64_t r = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
    int n = __syncthreads_count(candidate(g, r));
    if (threadIdx.x == 0) block_counts[blockIdx.x] = n;
}

// Exclusive scan of n values in one block of 1024 threads; total to offsets[n].
__global__ void scan_kernel(const int64_t* counts, int64_t* offsets, int64_t n) {
    __shared__ int64_t sums[1024];
    const int64_t per = (n + 1023) / 1024;
    const int64_t lo = threadIdx.x * per, hi = min(n, lo + per);
    int64_t s = 0;
    for (int64_t i = lo; i < hi; ++i) s += counts[i];
    sums[threadIdx.x] = s;
    __syncthreads();
    for (int off = 1; off < 1024; off <<= 1) {
        int64_t v = threadIdx.x >= off ? sums[threadIdx.x - off] : 0;
        __syncthreads();
        sums[threadIdx.x] += v;
        __syncthreads();
    }
    int64_t run = threadIdx.x ? sums[threadIdx.x - 1] : 0;
    for (int64_t i = lo; i < hi; ++i) {
        offsets[i] = run;
        run += counts[i];
    }
    if (threadIdx.x == 1023) offsets[n] = sums[1023];
}

struct Output {
    float* out;
    int64_t* index;
    int64_t capacity;
    const float* anchors;
    int32_t net_w, net_h;
    float sf, soff;
    bool scale;
    const int32_t* letterbox_wh;
};

__global__ void write_kernel(Geometry g, Output o, const int64_t* offsets) {
    __shared__ int warp_counts[kThreads / 32];
    const int64_t r = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
    const bool keep = candidate(g, r);
    const unsigned lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const unsigned ballot = __ballot_sync(0xffffffffu, keep);
    if (lane == 0) warp_counts[warp] = __popc(ballot);
    __syncthreads();
    if (!keep) return;
    int64_t pos = offsets[blockIdx.x] + __popc(ballot & ((1u << lane) - 1));
    for (unsigned w = 0; w < warp; ++w) pos += warp_counts[w];
    if (pos >= o.capacity) return;
    int64_t b, a, row, col;
    const float* p = cell(g, r, &b, &a, &row, &col);
    float* out = o.out + pos * g.per;
    const float aw = o.anchors[2 * a] / static_cast<float>(o.net_w);
    const float ah = o.anchors[2 * a + 1] / static_cast<float>(o.net_h);
    float x = p[0], y = p[g.sc], tw = p[2 * g.sc], th = p[3 * g.sc];
    if (!g.raw) {
        x = logistic(x);
        y = logistic(y);
    }
    if (o.scale) {
        x = x * o.sf - o.soff;
        y = y * o.sf - o.soff;
    }
    out[0] = (static_cast<float>(col) + x) / static_cast<float>(g.W);
    out[1] = (static_cast<float>(row) + y) / static_cast<float>(g.H);
    if (g.raw) {
        out[2] = tw * tw * 4 * aw;
        out[3] = th * th * 4 * ah;
    } else {
        out[2] = expf(tw) * aw;
        out[3] = expf(th) * ah;
    }
    if (o.letterbox_wh) {
        Letterbox lb = letterbox_geometry(o.letterbox_wh[2 * b], o.letterbox_wh[2 * b + 1], o.net_w, o.net_h);
        letterbox_correct(lb, out);
    }
    float v = p[4 * g.sc];
    out[4] = g.raw ? v : logistic(v);
    for (int64_t k = 0; k < g.C; ++k) {
        float c = p[(5 + k) * g.sc];
        out[5 + k] = g.raw ? c : logistic(c);
    }
    o.index[pos] = r;
}

}  // namespace

void yolo_decode(const YoloDecodeArgs& a) {
    cudaStream_t stream = as_stream(a.stream);
    Geometry g;
    g.head = a.head;
    g.B = a.batch;
    g.A = a.anchors_n;
    g.H = a.height;
    g.W = a.width;
    g.C = a.classes();
    g.per = g.C + 5;
    g.sb = a.stride[0];
    g.sc = a.stride[1];
    g.sh = a.stride[2];
    g.sw = a.stride[3];
    g.rows = g.B * g.A * g.H * g.W;
    g.raw = a.new_coords != 0;
    g.thresh = a.thresh;
    const int64_t blocks = (g.rows + kThreads - 1) / kThreads;
    if (blocks > INT32_MAX) fail(DKD_ERR_SIZE, "yolo_decode: ", g.rows, " rows exceed one CUDA grid");
    Scratch counts((2 * blocks + 1) * sizeof(int64_t), stream);
    int64_t* block_counts = counts.as<int64_t>();
    int64_t* offsets = block_counts + blocks;
    count_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(g, block_counts);
    DKD_CUDA_LAUNCHED();
    scan_kernel<<<1, 1024, 0, stream>>>(block_counts, offsets, blocks);
    DKD_CUDA_LAUNCHED();
    to_host(a.num_candidates, offsets + blocks, 1, stream);
    if (a.capacity == 0 || *a.num_candidates == 0) return;
    Output o;
    o.out = a.out;
    o.index = a.out_index;
    o.capacity = a.capacity;
    o.anchors = a.anchors;
    o.net_w = a.net_w;
    o.net_h = a.net_h;
    o.scale = a.scale_x_y != 1.0;
    o.sf = static_cast<float>(a.scale_x_y);
    o.soff = static_cast<float>((a.scale_x_y - 1) / 2);
    o.letterbox_wh = a.letterbox_wh;
    write_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(g, o, offsets);
    DKD_CUDA_LAUNCHED();
}

}  // namespace cuda
}  // namespace dkd
