// CUDA NMS (bitmask NMS, as torchvision's, per (image, class) group):
//  1. candidates: flat (box, class) indices with score > score_thresh (cub::DeviceSelect);
//  2. one stable radix sort by (group = image*C + class, score descending) — ties keep
//     the lower box index first, as on the CPU;
//  3. per group, a 64x64-tile kernel sets bit q of row p when later candidate q has
//     criterion(p, q) > iou_thresh (the same float arithmetic as the CPU: --fmad=false);
//  4. one warp per group walks its rows in order and ORs the mask rows of survivors;
//  5. max_det: a second stable sort of survivors by (image, score descending) ranks them.
// Two host syncs: the candidate count and the mask size.
#include <cub/cub.cuh>
#include <thrust/iterator/counting_iterator.h>

#include "common/cuda_util.cuh"
#include "ops/nms/nms.h"

namespace dkd {
namespace cuda {
namespace {

constexpr int kThreads = 256;

// Order-preserving map of a float to uint32 (ascending), then complemented: descending.
__device__ inline uint32_t desc_key(float f) {
    uint32_t u = __float_as_uint(f);
    u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
    return ~u;
}

struct IsCandidate {
    const float* scores;
    float thresh;
    __device__ bool operator()(int64_t e) const { return scores[e] > thresh; }
};

__global__ void check_batch(const int64_t* batch, int64_t n, int64_t images, unsigned long long* first_bad) {
    for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x)
        if (batch[i] < 0 || batch[i] >= images) atomicMin(first_bad, static_cast<unsigned long long>(i));
}

__global__ void make_keys(const int64_t* cand, int64_t m, const float* scores, const int64_t* batch, int64_t classes,
                          uint64_t* keys, int64_t* group_count) {
    for (int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; j < m;
         j += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        const int64_t e = cand[j], i = e / classes, c = e % classes;
        const int64_t g = (batch ? batch[i] : 0) * classes + c;
        keys[j] = (static_cast<uint64_t>(g) << 32) | desc_key(scores[e]);
        atomicAdd(reinterpret_cast<unsigned long long*>(group_count + g), 1ull);
    }
}

// Per group: words of mask (n * ceil(n/64)) — scanned into offsets; and the largest
// column-tile count.
__global__ void group_sizes(const int64_t* count, int64_t groups, int64_t* words, unsigned long long* max_tiles) {
    for (int64_t g = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; g < groups;
         g += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        const int64_t n = count[g], t = (n + 63) / 64;
        words[g] = n * t;
        atomicMax(max_tiles, static_cast<unsigned long long>(t));
    }
}

struct Boxes {
    const float* boxes;  // [n][4] cx, cy, w, h (original order)
    const int64_t* cand_sorted;
    int64_t classes;
};

__device__ inline void corners(const Boxes& b, int64_t j, float* x1, float* y1, float* x2, float* y2, float* area,
                               float* cx, float* cy) {
    const float* p = b.boxes + (b.cand_sorted[j] / b.classes) * 4;
    *x1 = p[0] - p[2] / 2;
    *x2 = p[0] + p[2] / 2;
    *y1 = p[1] - p[3] / 2;
    *y2 = p[1] + p[3] / 2;
    *area = p[2] * p[3];
    *cx = p[0];
    *cy = p[1];
}

// Darknet's criterion between kept box a (earlier) and candidate b: box_iou, box_diou,
// box_diounms (src/box.c), float arithmetic as the CPU kernel.
__device__ inline bool suppresses(const Boxes& bx, int64_t ja, int64_t jb, float thresh, int kind, float beta) {
    float ax1, ay1, ax2, ay2, aa, acx, acy, bx1, by1, bx2, by2, ba, bcx, bcy;
    corners(bx, ja, &ax1, &ay1, &ax2, &ay2, &aa, &acx, &acy);
    corners(bx, jb, &bx1, &by1, &bx2, &by2, &ba, &bcx, &bcy);
    float w = fminf(ax2, bx2) - fmaxf(ax1, bx1);
    float h = fminf(ay2, by2) - fmaxf(ay1, by1);
    float inter = (w < 0.f || h < 0.f) ? 0.f : w * h;
    float uni = aa + ba - inter;
    float iou = (inter != 0.f && uni != 0.f) ? inter / uni : 0.f;
    if (kind == DKD_NMS_IOU || !(iou > thresh)) return iou > thresh;
    float cw = fmaxf(ax2, bx2) - fminf(ax1, bx1), ch = fmaxf(ay2, by2) - fminf(ay1, by1);
    float c = cw * cw + ch * ch;
    if (c == 0.f) return iou > thresh;
    float dx = acx - bcx, dy = acy - bcy;
    float d = dx * dx + dy * dy;
    double e = kind == DKD_NMS_GREEDY_DIOU ? 0.6 : static_cast<double>(beta);
    float u = static_cast<float>(pow(static_cast<double>(d / c), e));
    return iou - u > thresh;
}

struct MaskArgs {
    Boxes boxes;
    const uint64_t* keys;        // sorted
    const int64_t* group_start;  // [groups + 1]
    const int64_t* mask_off;     // [groups]
    uint64_t* mask;
    int64_t m;
    float thresh;
    int kind;
    float beta;
};

// grid.x: 64-row blocks of the sorted candidates; grid.y: column tile within the row's group.
__global__ void mask_kernel(MaskArgs a) {
    const int64_t j = static_cast<int64_t>(blockIdx.x) * 64 + threadIdx.x;
    if (j >= a.m) return;
    const int64_t g = static_cast<int64_t>(a.keys[j] >> 32);
    const int64_t start = a.group_start[g], n = a.group_start[g + 1] - start, p = j - start;
    const int64_t tiles = (n + 63) / 64, tile = blockIdx.y;
    if (tile >= tiles) return;
    uint64_t bits = 0;
    const int64_t q0 = tile * 64;
    for (int64_t q = max(q0, p + 1); q < min(n, q0 + 64); ++q)
        if (suppresses(a.boxes, j, start + q, a.thresh, a.kind, a.beta)) bits |= 1ull << (q - q0);
    a.mask[a.mask_off[g] + p * tiles + tile] = bits;
}

// One warp per group: the greedy walk over the mask rows.
__global__ void reduce_kernel(const int64_t* group_start, const int64_t* mask_off, const uint64_t* mask,
                              int64_t groups, uint64_t* removed, uint8_t* kept) {
    const int64_t g = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (g >= groups) return;
    const int64_t start = group_start[g], n = group_start[g + 1] - start, tiles = (n + 63) / 64;
    if (n == 0) return;
    uint64_t* rem = removed + start;  // tiles <= n words, disjoint across groups
    for (int64_t w = lane; w < tiles; w += 32) rem[w] = 0;
    __syncwarp();
    const uint64_t* rows = mask + mask_off[g];
    for (int64_t p = 0; p < n; ++p) {
        const bool gone = (rem[p >> 6] >> (p & 63)) & 1ull;
        __syncwarp();
        if (lane == 0) kept[start + p] = !gone;
        if (!gone)
            for (int64_t w = (p >> 6) + lane; w < tiles; w += 32) rem[w] |= rows[p * tiles + w];
        __syncwarp();
    }
}

__global__ void write_all(const int64_t* cand, const uint8_t* kept, int64_t m, uint8_t* keep) {
    for (int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; j < m;
         j += static_cast<int64_t>(gridDim.x) * blockDim.x)
        if (kept[j]) keep[cand[j]] = 1;
}

// max_det: survivors keyed by (image, score desc), others last; count survivors per image.
__global__ void rank_keys(const uint64_t* keys, const uint8_t* kept, int64_t m, int64_t classes, uint64_t* keys2,
                          int64_t* vals2, int64_t* image_count) {
    for (int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; j < m;
         j += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        vals2[j] = j;
        if (!kept[j]) {
            keys2[j] = ~0ull;
            continue;
        }
        const uint64_t image = (keys[j] >> 32) / classes;
        keys2[j] = (image << 32) | (keys[j] & 0xffffffffull);
        atomicAdd(reinterpret_cast<unsigned long long*>(image_count + image), 1ull);
    }
}

__global__ void write_top(const uint64_t* keys2, const int64_t* vals2, const int64_t* image_start, const int64_t* cand,
                          int64_t m, int64_t max_det, uint8_t* keep) {
    for (int64_t q = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; q < m;
         q += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        if (keys2[q] == ~0ull) continue;
        const int64_t image = static_cast<int64_t>(keys2[q] >> 32);
        if (q - image_start[image] < max_det) keep[cand[vals2[q]]] = 1;
    }
}

template <typename F>
size_t temp_bytes(F&& f) {
    size_t bytes = 0;
    DKD_CUDA_CHECK(f(nullptr, bytes));
    return bytes;
}

}  // namespace

void nms(const NmsArgs& a) {
    cudaStream_t stream = as_stream(a.stream);
    const int64_t n = a.n, C = a.classes, B = a.images, total = n * C, groups = B * C;
    if (groups >= (int64_t(1) << 32)) fail(DKD_ERR_SIZE, "nms: num_images * num_classes = ", groups, " exceeds 2^32 on CUDA");
    DKD_CUDA_CHECK(cudaMemsetAsync(a.keep, 0, static_cast<size_t>(total), stream));

    // 1. batch check + candidates.
    Scratch head(sizeof(unsigned long long) + sizeof(int64_t), stream);
    unsigned long long* first_bad = head.as<unsigned long long>();
    int64_t* num_sel = reinterpret_cast<int64_t*>(first_bad + 1);
    DKD_CUDA_CHECK(cudaMemsetAsync(first_bad, 0xff, sizeof(unsigned long long), stream));
    if (a.batch) {
        check_batch<<<blocks_for(n, kThreads, 65535), kThreads, 0, stream>>>(a.batch, n, B, first_bad);
        DKD_CUDA_LAUNCHED();
    }
    Scratch cand_all(2 * total * sizeof(int64_t), stream);
    int64_t* cand = cand_all.as<int64_t>();
    int64_t* cand_sorted = cand + total;
    thrust::counting_iterator<int64_t> iota(0);
    IsCandidate pred{a.scores, a.score_thresh};
    size_t sel_bytes = temp_bytes([&](void* p, size_t& b) {
        return cub::DeviceSelect::If(p, b, iota, cand, num_sel, total, pred, stream);
    });
    {
        Scratch tmp(sel_bytes, stream);
        DKD_CUDA_CHECK(cub::DeviceSelect::If(tmp.as<void>(), sel_bytes, iota, cand, num_sel, total, pred, stream));
    }
    struct {
        unsigned long long bad;
        int64_t m;
    } host{};
    to_host(&host.bad, first_bad, 1, stream);
    to_host(&host.m, num_sel, 1, stream);
    if (host.bad != ~0ull) {
        int64_t bad_value = 0;
        to_host(&bad_value, a.batch + host.bad, 1, stream);
        fail(DKD_ERR_VALUE, "nms: batch[", host.bad, "]=", bad_value, " is outside [0, ", B, ")");
    }
    const int64_t m = host.m;
    if (m == 0) return;
    const unsigned mgrid = blocks_for(m, kThreads, 65535);

    // 2. keys, group counts, one stable sort.
    Scratch keys_buf(2 * m * sizeof(uint64_t), stream);
    uint64_t* keys = keys_buf.as<uint64_t>();
    uint64_t* keys_sorted = keys + m;
    Scratch gbuf((3 * groups + 2) * sizeof(int64_t), stream);
    int64_t* group_count = gbuf.as<int64_t>();
    int64_t* group_start = group_count + groups;  // [groups + 1]
    int64_t* words = group_start + groups + 1;    // [groups + 1]: mask words, then offsets
    DKD_CUDA_CHECK(cudaMemsetAsync(group_count, 0, groups * sizeof(int64_t), stream));
    make_keys<<<mgrid, kThreads, 0, stream>>>(cand, m, a.scores, a.batch, C, keys, group_count);
    DKD_CUDA_LAUNCHED();
    int end_bit = 32;
    while (end_bit < 64 && (int64_t(1) << (end_bit - 32)) < groups) ++end_bit;
    size_t sort_bytes = temp_bytes([&](void* p, size_t& b) {
        return cub::DeviceRadixSort::SortPairs(p, b, keys, keys_sorted, cand, cand_sorted, m, 0, end_bit, stream);
    });
    {
        Scratch tmp(sort_bytes, stream);
        DKD_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(tmp.as<void>(), sort_bytes, keys, keys_sorted, cand,
                                                       cand_sorted, m, 0, end_bit, stream));
    }

    // 3. group starts, mask offsets, the mask.
    Scratch small(sizeof(unsigned long long), stream);
    unsigned long long* max_tiles = small.as<unsigned long long>();
    DKD_CUDA_CHECK(cudaMemsetAsync(max_tiles, 0, sizeof(unsigned long long), stream));
    DKD_CUDA_CHECK(cudaMemsetAsync(words + groups, 0, sizeof(int64_t), stream));
    group_sizes<<<blocks_for(groups, kThreads, 65535), kThreads, 0, stream>>>(group_count, groups, words, max_tiles);
    DKD_CUDA_LAUNCHED();
    size_t scan_bytes = temp_bytes([&](void* p, size_t& b) {
        return cub::DeviceScan::ExclusiveSum(p, b, words, words, groups + 1, stream);
    });
    {
        // group_start = exclusive scan of counts (count array padded with a 0 at the end).
        Scratch counts1((groups + 1) * sizeof(int64_t), stream);
        DKD_CUDA_CHECK(cudaMemcpyAsync(counts1.as<int64_t>(), group_count, groups * sizeof(int64_t),
                                       cudaMemcpyDeviceToDevice, stream));
        DKD_CUDA_CHECK(cudaMemsetAsync(counts1.as<int64_t>() + groups, 0, sizeof(int64_t), stream));
        Scratch tmp(scan_bytes, stream);
        DKD_CUDA_CHECK(cub::DeviceScan::ExclusiveSum(tmp.as<void>(), scan_bytes, counts1.as<int64_t>(), group_start,
                                                     groups + 1, stream));
        DKD_CUDA_CHECK(cub::DeviceScan::ExclusiveSum(tmp.as<void>(), scan_bytes, words, words, groups + 1, stream));
    }
    struct {
        int64_t words;
        unsigned long long tiles;
    } sizes{};
    to_host(&sizes.words, words + groups, 1, stream);
    to_host(&sizes.tiles, max_tiles, 1, stream);
    if (sizes.tiles > 65535) fail(DKD_ERR_SIZE, "nms: one (image, class) group has more than 4194240 candidates on CUDA");
    Scratch mask_buf(sizes.words * sizeof(uint64_t), stream);
    MaskArgs ma;
    ma.boxes = Boxes{a.boxes, cand_sorted, C};
    ma.keys = keys_sorted;
    ma.group_start = group_start;
    ma.mask_off = words;
    ma.mask = mask_buf.as<uint64_t>();
    ma.m = m;
    ma.thresh = a.iou_thresh;
    ma.kind = a.kind;
    ma.beta = a.beta;
    dim3 mgrid2(static_cast<unsigned>((m + 63) / 64), static_cast<unsigned>(sizes.tiles));
    mask_kernel<<<mgrid2, 64, 0, stream>>>(ma);
    DKD_CUDA_LAUNCHED();

    // 4. greedy walk per group.
    Scratch walk(m * sizeof(uint64_t) + m, stream);
    uint64_t* removed = walk.as<uint64_t>();
    uint8_t* kept = reinterpret_cast<uint8_t*>(removed + m);
    reduce_kernel<<<blocks_for(groups * 32, kThreads, INT32_MAX), kThreads, 0, stream>>>(
        group_start, words, ma.mask, groups, removed, kept);
    DKD_CUDA_LAUNCHED();

    // 5. the keep mask (top max_det per image).
    if (a.max_det == 0) {
        write_all<<<mgrid, kThreads, 0, stream>>>(cand_sorted, kept, m, a.keep);
        DKD_CUDA_LAUNCHED();
        return;
    }
    Scratch rank_buf(m * (2 * sizeof(uint64_t) + 2 * sizeof(int64_t)) + 2 * (B + 1) * sizeof(int64_t), stream);
    uint64_t* keys2 = rank_buf.as<uint64_t>();
    uint64_t* keys2_sorted = keys2 + m;
    int64_t* vals2 = reinterpret_cast<int64_t*>(keys2_sorted + m);
    int64_t* vals2_sorted = vals2 + m;
    int64_t* image_count = vals2_sorted + m;  // [B + 1]
    int64_t* image_start = image_count + B + 1;
    DKD_CUDA_CHECK(cudaMemsetAsync(image_count, 0, (B + 1) * sizeof(int64_t), stream));
    rank_keys<<<mgrid, kThreads, 0, stream>>>(keys_sorted, kept, m, C, keys2, vals2, image_count);
    DKD_CUDA_LAUNCHED();
    size_t sort2_bytes = temp_bytes([&](void* p, size_t& b) {
        return cub::DeviceRadixSort::SortPairs(p, b, keys2, keys2_sorted, vals2, vals2_sorted, m, 0, 64, stream);
    });
    size_t scan2_bytes = temp_bytes([&](void* p, size_t& b) {
        return cub::DeviceScan::ExclusiveSum(p, b, image_count, image_start, B + 1, stream);
    });
    {
        Scratch tmp(std::max(sort2_bytes, scan2_bytes), stream);
        DKD_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(tmp.as<void>(), sort2_bytes, keys2, keys2_sorted, vals2,
                                                       vals2_sorted, m, 0, 64, stream));
        DKD_CUDA_CHECK(cub::DeviceScan::ExclusiveSum(tmp.as<void>(), scan2_bytes, image_count, image_start, B + 1,
                                                     stream));
    }
    write_top<<<mgrid, kThreads, 0, stream>>>(keys2_sorted, vals2_sorted, image_start, cand_sorted, m, a.max_det,
                                              a.keep);
    DKD_CUDA_LAUNCHED();
}

}  // namespace cuda
}  // namespace dkd
