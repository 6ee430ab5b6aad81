// CPU NMS: bucket the (box, class) candidates by image, sort each image's candidates by
// (class, score descending, index), run the greedy pass per (image, class) group on
// std::threads, then apply max_det per image.  Every step writes to its own slots, so the
// result does not depend on the number of threads.
#include <algorithm>
#include <cstring>
#include <vector>

#include "common/error.h"
#include "common/isa.h"
#include "common/parallel.h"
#include "ops/nms/nms.h"

namespace dkd {
namespace cpu {
namespace {

struct Cand {
    float score;
    int32_t cls;
    int64_t index;
};

// Darknet's order within a class: score descending; ties by lower index (qsort is unstable
// in Darknet; we fix the order so the result is reproducible, as cv2.dnn.NMSBoxes does).
inline bool by_class_score(const Cand& a, const Cand& b) {
    if (a.cls != b.cls) return a.cls < b.cls;
    if (a.score != b.score) return a.score > b.score;
    return a.index < b.index;
}

inline bool by_score(const Cand& a, const Cand& b) {
    if (a.score != b.score) return a.score > b.score;
    if (a.cls != b.cls) return a.cls < b.cls;
    return a.index < b.index;
}

struct Group {
    int64_t begin, end;  // range in the candidate array
};

}  // namespace

void nms(const NmsArgs& a) {
    const int64_t n = a.n, C = a.classes, B = a.images;
    std::memset(a.keep, 0, static_cast<size_t>(n * C));

    // 1. per-image candidate counts (and the batch index check).
    std::vector<int64_t> offset(B + 1, 0);
    for (int64_t i = 0; i < n; ++i) {
        int64_t b = a.batch ? a.batch[i] : 0;
        if (b < 0 || b >= B) fail(DKD_ERR_VALUE, "nms: batch[", i, "]=", b, " is outside [0, ", B, ")");
        const float* s = a.scores + i * C;
        int64_t cnt = 0;
        for (int64_t c = 0; c < C; ++c) cnt += s[c] > a.score_thresh;
        offset[b + 1] += cnt;
    }
    for (int64_t b = 0; b < B; ++b) offset[b + 1] += offset[b];
    const int64_t m = offset[B];
    if (m == 0) return;

    // 2. scatter candidates to their image bucket, in (index, class) order.
    std::vector<Cand> cand(m);
    {
        std::vector<int64_t> fill(offset.begin(), offset.end() - 1);
        for (int64_t i = 0; i < n; ++i) {
            int64_t b = a.batch ? a.batch[i] : 0;
            const float* s = a.scores + i * C;
            for (int64_t c = 0; c < C; ++c)
                if (s[c] > a.score_thresh) cand[fill[b]++] = Cand{s[c], static_cast<int32_t>(c), i};
        }
    }

    // 3. sort each image, find its class groups.
    std::vector<std::vector<Group>> groups_of(B);
    parallel_for(B, 1, [&](int64_t b) {
        auto first = cand.begin() + offset[b], last = cand.begin() + offset[b + 1];
        std::sort(first, last, by_class_score);
        for (int64_t i = offset[b]; i < offset[b + 1];) {
            int64_t j = i;
            while (j < offset[b + 1] && cand[j].cls == cand[i].cls) ++j;
            groups_of[b].push_back({i, j});
            i = j;
        }
    });
    std::vector<Group> groups;
    for (auto& g : groups_of) groups.insert(groups.end(), g.begin(), g.end());
    // Largest groups first: better load balance across threads.
    std::sort(groups.begin(), groups.end(), [](const Group& x, const Group& y) {
        return (x.end - x.begin) > (y.end - y.begin) || ((x.end - x.begin) == (y.end - y.begin) && x.begin < y.begin);
    });

    // 4. greedy pass per group.
    std::vector<uint8_t> kept(m, 0);
    auto group_fn = DKD_ISA_SELECT(isa_base::nms_group, isa_avx2::nms_group, isa_avx512::nms_group);
    parallel_for(static_cast<int64_t>(groups.size()), 1, [&](int64_t gi) {
        const Group& g = groups[gi];
        const int64_t k = g.end - g.begin;
        std::vector<float> soa(7 * k);
        float *x1 = soa.data(), *y1 = x1 + k, *x2 = y1 + k, *y2 = x2 + k, *area = y2 + k, *cx = area + k, *cy = cx + k;
        for (int64_t j = 0; j < k; ++j) {
            const float* bx = a.boxes + cand[g.begin + j].index * 4;
            // Darknet (box.c overlap): l = x - w/2, r = x + w/2; area = w*h of the box itself.
            x1[j] = bx[0] - bx[2] / 2;
            x2[j] = bx[0] + bx[2] / 2;
            y1[j] = bx[1] - bx[3] / 2;
            y2[j] = bx[1] + bx[3] / 2;
            area[j] = bx[2] * bx[3];
            cx[j] = bx[0];
            cy[j] = bx[1];
        }
        NmsGroup ng{x1, y1, x2, y2, area, cx, cy, k, a.iou_thresh, a.kind, a.beta, kept.data() + g.begin};
        group_fn(ng);
    });

    // 5. max_det per image, then the keep mask.
    parallel_for(B, 1, [&](int64_t b) {
        std::vector<Cand> out;
        for (int64_t i = offset[b]; i < offset[b + 1]; ++i)
            if (kept[i]) out.push_back(cand[i]);
        if (a.max_det > 0 && static_cast<int64_t>(out.size()) > a.max_det) {
            std::partial_sort(out.begin(), out.begin() + a.max_det, out.end(), by_score);
            out.resize(a.max_det);
        }
        for (const Cand& c : out) a.keep[c.index * C + c.cls] = 1;
    });
}

}  // namespace cpu
}  // namespace dkd
