// C++ tests of libdkd through its C API (run by ctest, and under ASan/UBSan by
// `make asan-test`).  Small hand-checked cases plus invariants; the Python tests compare
// against references on random and adversarial inputs.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "common/vmath.h"
#include "dkd/dkd.h"

static int g_failures = 0;
static int g_checks = 0;

#define CHECK(cond)                                                              \
    do {                                                                         \
        ++g_checks;                                                              \
        if (!(cond)) {                                                           \
            ++g_failures;                                                        \
            std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                        \
    } while (0)

#define CHECK_STATUS(call, want)                                                                   \
    do {                                                                                           \
        int st_ = (call);                                                                          \
        ++g_checks;                                                                                \
        if (st_ != (want)) {                                                                       \
            ++g_failures;                                                                          \
            std::fprintf(stderr, "%s:%d: %s returned %s (%s), want %s\n", __FILE__, __LINE__, #call, \
                         dkd_status_name(st_), dkd_last_error(), dkd_status_name(want));          \
        }                                                                                          \
    } while (0)

static void test_version_and_errors() {
    CHECK(dkd_version() == DKD_VERSION_MAJOR * 10000 + DKD_VERSION_MINOR * 100 + DKD_VERSION_PATCH);
    CHECK(dkd_api_version() == DKD_API_VERSION);
    CHECK(std::string(dkd_version_string()) == "0.1.0");
    CHECK(std::string(dkd_status_name(DKD_ERR_NULL)) == "DKD_ERR_NULL");
    CHECK(std::string(dkd_status_name(12345)) == "DKD_UNKNOWN_STATUS");
    CHECK_STATUS(dkd_set_num_threads(-1), DKD_ERR_VALUE);
    CHECK(std::string(dkd_last_error()).find("negative") != std::string::npos);
    CHECK_STATUS(dkd_set_num_threads(2), DKD_OK);
    CHECK(dkd_get_num_threads() == 2);
    CHECK(std::string(dkd_last_error()).empty());
    std::string isa = dkd_cpu_isa();
    CHECK(isa == "base" || isa == "avx2" || isa == "avx512");
}

// Three boxes of one class: 0 and 1 overlap (IoU 0.036/0.044 = 0.818), 2 is apart.
static void test_nms_basic() {
    const float boxes[] = {0.5f, 0.5f, 0.2f, 0.2f, 0.52f, 0.5f, 0.2f, 0.2f, 0.1f, 0.1f, 0.05f, 0.05f};
    const float scores[] = {0.8f, 0.9f, 0.3f};
    uint8_t keep[3];
    CHECK_STATUS(dkd_nms(boxes, scores, nullptr, 3, 1, 1, 0.45f, 0.f, DKD_NMS_IOU, 0.6f, 0, keep, DKD_DEVICE_CPU,
                         nullptr),
                 DKD_OK);
    CHECK(keep[0] == 0 && keep[1] == 1 && keep[2] == 1);
    // Threshold above their IoU: both stay.
    CHECK_STATUS(dkd_nms(boxes, scores, nullptr, 3, 1, 1, 0.85f, 0.f, DKD_NMS_IOU, 0.6f, 0, keep, DKD_DEVICE_CPU,
                         nullptr),
                 DKD_OK);
    CHECK(keep[0] == 1 && keep[1] == 1 && keep[2] == 1);
    // Score threshold is strict (>), as Darknet's get_yolo_detections.
    CHECK_STATUS(dkd_nms(boxes, scores, nullptr, 3, 1, 1, 0.45f, 0.3f, DKD_NMS_IOU, 0.6f, 0, keep, DKD_DEVICE_CPU,
                         nullptr),
                 DKD_OK);
    CHECK(keep[2] == 0);
    // max_det = 1 keeps the best one only.
    CHECK_STATUS(dkd_nms(boxes, scores, nullptr, 3, 1, 1, 0.45f, 0.f, DKD_NMS_IOU, 0.6f, 1, keep, DKD_DEVICE_CPU,
                         nullptr),
                 DKD_OK);
    CHECK(keep[0] == 0 && keep[1] == 1 && keep[2] == 0);
    // Different images never suppress each other.
    const int64_t batch[] = {0, 1, 1};
    CHECK_STATUS(dkd_nms(boxes, scores, batch, 3, 1, 2, 0.45f, 0.f, DKD_NMS_IOU, 0.6f, 0, keep, DKD_DEVICE_CPU,
                         nullptr),
                 DKD_OK);
    CHECK(keep[0] == 1 && keep[1] == 1 && keep[2] == 1);
    // Nor do different classes: box 0 is class 0 only, box 1 class 1 only.
    const float two[] = {0.8f, 0.f, 0.f, 0.9f, 0.3f, 0.f};
    uint8_t keep2[6];
    CHECK_STATUS(dkd_nms(boxes, two, nullptr, 3, 2, 1, 0.45f, 0.f, DKD_NMS_IOU, 0.6f, 0, keep2, DKD_DEVICE_CPU,
                         nullptr),
                 DKD_OK);
    CHECK(keep2[0] == 1 && keep2[1] == 0 && keep2[2] == 0 && keep2[3] == 1 && keep2[4] == 1 && keep2[5] == 0);
}

// DIoU: same IoU, centres far apart relative to the enclosing box -> DIoU lower -> kept.
static void test_nms_diou() {
    // Two wide flat boxes side by side, overlapping half: IoU = 1/3.
    const float boxes[] = {0.0f, 0.0f, 2.0f, 1.0f, 1.0f, 0.0f, 2.0f, 1.0f};
    const float scores[] = {0.9f, 0.8f};
    uint8_t keep[2];
    CHECK_STATUS(dkd_nms(boxes, scores, nullptr, 2, 1, 1, 0.3f, 0.f, DKD_NMS_IOU, 0.6f, 0, keep, DKD_DEVICE_CPU,
                         nullptr),
                 DKD_OK);
    CHECK(keep[0] == 1 && keep[1] == 0);
    // d^2 = 1, c^2 = 3^2 + 1^2 = 10: DIoU = 1/3 - 0.1^0.6 = 0.0821 < 0.3 -> kept.
    CHECK_STATUS(dkd_nms(boxes, scores, nullptr, 2, 1, 1, 0.3f, 0.f, DKD_NMS_GREEDY_DIOU, 0.6f, 0, keep,
                         DKD_DEVICE_CPU, nullptr),
                 DKD_OK);
    CHECK(keep[0] == 1 && keep[1] == 1);
    // beta_nms large -> (0.1)^8 ~ 0 -> DIoU ~ IoU > 0.3 -> suppressed.
    CHECK_STATUS(dkd_nms(boxes, scores, nullptr, 2, 1, 1, 0.3f, 0.f, DKD_NMS_DIOU, 8.f, 0, keep, DKD_DEVICE_CPU,
                         nullptr),
                 DKD_OK);
    CHECK(keep[0] == 1 && keep[1] == 0);
}

static void test_nms_invalid() {
    const float boxes[4] = {0.5f, 0.5f, 0.1f, 0.1f};
    const float scores[1] = {0.5f};
    uint8_t keep[1];
    CHECK_STATUS(dkd_nms(nullptr, scores, nullptr, 1, 1, 1, 0.5f, 0.f, 0, 0.6f, 0, keep, 0, nullptr), DKD_ERR_NULL);
    CHECK(std::string(dkd_last_error()).find("boxes") != std::string::npos);
    CHECK_STATUS(dkd_nms(boxes, nullptr, nullptr, 1, 1, 1, 0.5f, 0.f, 0, 0.6f, 0, keep, 0, nullptr), DKD_ERR_NULL);
    CHECK_STATUS(dkd_nms(boxes, scores, nullptr, 1, 1, 1, 0.5f, 0.f, 0, 0.6f, 0, nullptr, 0, nullptr), DKD_ERR_NULL);
    CHECK_STATUS(dkd_nms(boxes, scores, nullptr, -1, 1, 1, 0.5f, 0.f, 0, 0.6f, 0, keep, 0, nullptr), DKD_ERR_SIZE);
    CHECK_STATUS(dkd_nms(boxes, scores, nullptr, 1, 0, 1, 0.5f, 0.f, 0, 0.6f, 0, keep, 0, nullptr), DKD_ERR_SIZE);
    CHECK_STATUS(dkd_nms(boxes, scores, nullptr, 1, 1, 0, 0.5f, 0.f, 0, 0.6f, 0, keep, 0, nullptr), DKD_ERR_SIZE);
    CHECK_STATUS(dkd_nms(boxes, scores, nullptr, 1, 1, 1, 0.5f, 0.f, 0, 0.6f, -1, keep, 0, nullptr), DKD_ERR_SIZE);
    CHECK_STATUS(dkd_nms(boxes, scores, nullptr, INT64_MAX / 2, 3, 1, 0.5f, 0.f, 0, 0.6f, 0, keep, 0, nullptr),
                 DKD_ERR_SIZE);
    CHECK_STATUS(dkd_nms(boxes, scores, nullptr, 1, 1, 1, NAN, 0.f, 0, 0.6f, 0, keep, 0, nullptr), DKD_ERR_VALUE);
    CHECK_STATUS(dkd_nms(boxes, scores, nullptr, 1, 1, 1, 0.5f, 0.f, 7, 0.6f, 0, keep, 0, nullptr), DKD_ERR_VALUE);
    CHECK_STATUS(dkd_nms(boxes, scores, nullptr, 1, 1, 1, 0.5f, 0.f, DKD_NMS_DIOU, -1.f, 0, keep, 0, nullptr),
                 DKD_ERR_VALUE);
    const int64_t bad_batch[1] = {3};
    CHECK_STATUS(dkd_nms(boxes, scores, bad_batch, 1, 1, 2, 0.5f, 0.f, 0, 0.6f, 0, keep, 0, nullptr), DKD_ERR_VALUE);
    CHECK(std::string(dkd_last_error()).find("batch[0]=3") != std::string::npos);
    CHECK_STATUS(dkd_nms(boxes, scores, nullptr, 1, 1, 1, 0.5f, 0.f, 0, 0.6f, 0, keep, 9, nullptr), DKD_ERR_DEVICE);
    if (!dkd_cuda_compiled())
        CHECK_STATUS(dkd_nms(boxes, scores, nullptr, 1, 1, 1, 0.5f, 0.f, 0, 0.6f, 0, keep, DKD_DEVICE_CUDA, nullptr),
                     DKD_ERR_DEVICE);
    // Empty input is fine, with NULL arrays.
    CHECK_STATUS(dkd_nms(nullptr, nullptr, nullptr, 0, 1, 1, 0.5f, 0.f, 0, 0.6f, 0, nullptr, 0, nullptr), DKD_OK);
}

// NMS results do not depend on the number of threads.
static void test_nms_threads() {
    std::mt19937 rng(1);
    std::uniform_real_distribution<float> u(0.f, 1.f);
    const int64_t n = 3000, C = 5, B = 4;
    std::vector<float> boxes(n * 4), scores(n * C);
    std::vector<int64_t> batch(n);
    for (int64_t i = 0; i < n; ++i) {
        boxes[i * 4] = u(rng), boxes[i * 4 + 1] = u(rng), boxes[i * 4 + 2] = 0.05f + 0.2f * u(rng),
        boxes[i * 4 + 3] = 0.05f + 0.2f * u(rng);
        for (int64_t c = 0; c < C; ++c) scores[i * C + c] = u(rng);
        batch[i] = i % B;
    }
    std::vector<uint8_t> k1(n * C), k4(n * C);
    dkd_set_num_threads(1);
    CHECK_STATUS(dkd_nms(boxes.data(), scores.data(), batch.data(), n, C, B, 0.45f, 0.2f, DKD_NMS_IOU, 0.6f, 50,
                         k1.data(), 0, nullptr),
                 DKD_OK);
    dkd_set_num_threads(4);
    CHECK_STATUS(dkd_nms(boxes.data(), scores.data(), batch.data(), n, C, B, 0.45f, 0.2f, DKD_NMS_IOU, 0.6f, 50,
                         k4.data(), 0, nullptr),
                 DKD_OK);
    CHECK(k1 == k4);
    int64_t per_image[4] = {0, 0, 0, 0};
    for (int64_t i = 0; i < n; ++i)
        for (int64_t c = 0; c < C; ++c) per_image[batch[i]] += k1[i * C + c];
    for (int b = 0; b < 4; ++b) CHECK(per_image[b] == 50);
    dkd_set_num_threads(0);
}

// One 2x2 head, one anchor, two classes: hand-computed decode.
static void test_yolo_decode() {
    const int64_t shape[4] = {1, 7, 2, 2}, strides[4] = {28, 4, 2, 1};
    std::vector<float> head(28, 0.f);
    auto at = [&](int c, int r, int col) -> float& { return head[c * 4 + r * 2 + col]; };
    at(4, 0, 0) = 2.f;   // obj 0.881 -> kept
    at(4, 1, 1) = -2.f;  // obj 0.119 -> dropped at thresh 0.25
    at(4, 0, 1) = -5.f;
    at(4, 1, 0) = -5.f;
    at(2, 0, 0) = std::log(2.f);  // w = 2 * anchor
    const float anchors[2] = {10.f, 20.f};
    float out[7 * 4];
    int64_t index[4], count = -1;
    CHECK_STATUS(dkd_yolo_decode(head.data(), shape, strides, 1, anchors, 100, 100, 1.0, 0, 0.25f, nullptr, out,
                                 index, 4, &count, 0, nullptr),
                 DKD_OK);
    CHECK(count == 1);
    CHECK(index[0] == 0);
    CHECK(std::fabs(out[0] - 0.25f) < 1e-6f);  // (0 + 0.5) / 2
    CHECK(std::fabs(out[1] - 0.25f) < 1e-6f);
    CHECK(std::fabs(out[2] - 0.2f) < 1e-6f);   // 2 * 10 / 100
    CHECK(std::fabs(out[3] - 0.2f) < 1e-6f);   // 1 * 20 / 100
    CHECK(std::fabs(out[4] - 1.f / (1.f + std::exp(-2.f))) < 1e-6f);
    CHECK(std::fabs(out[5] - 0.5f) < 1e-6f);
    // Count-only call.
    CHECK_STATUS(dkd_yolo_decode(head.data(), shape, strides, 1, anchors, 100, 100, 1.0, 0, 0.1f, nullptr, nullptr,
                                 nullptr, 0, &count, 0, nullptr),
                 DKD_OK);
    CHECK(count == 2);
    // Letterbox: a 200x100 image in a 100x100 net: new 100x50, y' = (y - 0.25) / 0.5, h' = 2h.
    const int32_t wh[2] = {200, 100};
    CHECK_STATUS(dkd_yolo_decode(head.data(), shape, strides, 1, anchors, 100, 100, 1.0, 0, 0.25f, wh, out, index, 4,
                                 &count, 0, nullptr),
                 DKD_OK);
    CHECK(std::fabs(out[0] - 0.25f) < 1e-6f && std::fabs(out[1] - 0.f) < 1e-6f);
    CHECK(std::fabs(out[2] - 0.2f) < 1e-6f && std::fabs(out[3] - 0.4f) < 1e-6f);
    // Invalid arguments.
    const int64_t bad_shape2[4] = {1, 7, 2, 2};
    CHECK_STATUS(dkd_yolo_decode(head.data(), bad_shape2, strides, 2, anchors, 100, 100, 1.0, 0, 0.25f, nullptr, out,
                                 index, 4, &count, 0, nullptr),
                 DKD_ERR_SIZE);
    CHECK_STATUS(dkd_yolo_decode(head.data(), nullptr, strides, 1, anchors, 100, 100, 1.0, 0, 0.25f, nullptr, out,
                                 index, 4, &count, 0, nullptr),
                 DKD_ERR_NULL);
    CHECK_STATUS(dkd_yolo_decode(head.data(), shape, strides, 1, nullptr, 100, 100, 1.0, 0, 0.25f, nullptr, out,
                                 index, 4, &count, 0, nullptr),
                 DKD_ERR_NULL);
    CHECK_STATUS(dkd_yolo_decode(head.data(), shape, strides, 1, anchors, 0, 100, 1.0, 0, 0.25f, nullptr, out, index,
                                 4, &count, 0, nullptr),
                 DKD_ERR_SIZE);
    CHECK_STATUS(dkd_yolo_decode(head.data(), shape, strides, 1, anchors, 100, 100, 1.0, 0, 0.25f, nullptr, nullptr,
                                 index, 4, &count, 0, nullptr),
                 DKD_ERR_NULL);
    const int32_t bad_wh[2] = {0, 100};
    CHECK_STATUS(dkd_yolo_decode(head.data(), shape, strides, 1, anchors, 100, 100, 1.0, 0, 0.25f, bad_wh, out, index,
                                 4, &count, 0, nullptr),
                 DKD_ERR_VALUE);
    const int64_t neg_strides[4] = {28, -4, 2, 1};
    CHECK_STATUS(dkd_yolo_decode(head.data(), shape, neg_strides, 1, anchors, 100, 100, 1.0, 0, 0.25f, nullptr, out,
                                 index, 4, &count, 0, nullptr),
                 DKD_ERR_SIZE);
    const int64_t huge_strides[4] = {INT64_MAX / 2, 4, 2, 1};
    const int64_t two_images[4] = {3, 7, 2, 2};
    CHECK_STATUS(dkd_yolo_decode(head.data(), two_images, huge_strides, 1, anchors, 100, 100, 1.0, 0, 0.25f, nullptr,
                                 out, index, 4, &count, 0, nullptr),
                 DKD_ERR_SIZE);
}

// kd_loss against a direct double-precision computation.
static void test_kd_loss() {
    std::mt19937 rng(7);
    std::normal_distribution<double> nd(0.0, 2.0);
    const int64_t O = 3, K = 37, I = 21;  // a full 16-lane tile and a tail
    std::vector<float> s(O * K * I), t(O * K * I), w(O * I), g(O * K * I);
    std::vector<uint8_t> mask(O * I, 1);
    for (auto& v : s) v = static_cast<float>(nd(rng));
    for (auto& v : t) v = static_cast<float>(nd(rng));
    for (auto& v : w) v = static_cast<float>(std::fabs(nd(rng)));
    mask[5] = 0;
    const double T = 2.0;
    double want = 0;
    std::vector<double> gwant(O * K * I, 0.0);
    for (int64_t o = 0; o < O; ++o)
        for (int64_t i = 0; i < I; ++i) {
            if (!mask[o * I + i]) continue;
            double ms = -1e300, mt = -1e300, zs = 0, zt = 0;
            auto S = [&](int64_t k) { return s[(o * K + k) * I + i] / T; };
            auto Tt = [&](int64_t k) { return t[(o * K + k) * I + i] / T; };
            for (int64_t k = 0; k < K; ++k) ms = std::max(ms, S(k)), mt = std::max(mt, Tt(k));
            for (int64_t k = 0; k < K; ++k) zs += std::exp(S(k) - ms), zt += std::exp(Tt(k) - mt);
            double kl = 0;
            for (int64_t k = 0; k < K; ++k) {
                double lpt = Tt(k) - mt - std::log(zt), lps = S(k) - ms - std::log(zs);
                kl += std::exp(lpt) * (lpt - lps);
                gwant[(o * K + k) * I + i] = w[o * I + i] * T * (std::exp(lps) - std::exp(lpt));
            }
            want += w[o * I + i] * T * T * kl;
        }
    float loss = 0;
    CHECK_STATUS(dkd_kd_loss(s.data(), t.data(), w.data(), mask.data(), O, K, I, DKD_KD_KL, T, 1.0, DKD_FLOAT32, &loss,
                             g.data(), 0, nullptr),
                 DKD_OK);
    CHECK(std::fabs(loss - want) <= 1e-4 * std::fabs(want));
    double gerr = 0;
    for (size_t e = 0; e < g.size(); ++e) gerr = std::max(gerr, std::fabs(g[e] - gwant[e]));
    CHECK(gerr < 1e-5);
    // Row layout (inner = 1) of the same numbers transposed gives the same loss.
    std::vector<float> sr(O * I * K), tr(O * I * K), wr(O * I), gr(O * I * K);
    std::vector<uint8_t> mr(O * I);
    for (int64_t o = 0; o < O; ++o)
        for (int64_t i = 0; i < I; ++i) {
            for (int64_t k = 0; k < K; ++k) {
                sr[(o * I + i) * K + k] = s[(o * K + k) * I + i];
                tr[(o * I + i) * K + k] = t[(o * K + k) * I + i];
            }
            wr[o * I + i] = w[o * I + i];
            mr[o * I + i] = mask[o * I + i];
        }
    float loss_r = 0;
    CHECK_STATUS(dkd_kd_loss(sr.data(), tr.data(), wr.data(), mr.data(), O * I, K, 1, DKD_KD_KL, T, 1.0, DKD_FLOAT32,
                             &loss_r, gr.data(), 0, nullptr),
                 DKD_OK);
    CHECK(std::fabs(loss_r - want) <= 1e-4 * std::fabs(want));
    // QFL, beta = 1, one element: s = 0 (q = 0.5), t = 0 (y = 0.5): |d| = 0 -> loss 0.
    float s1 = 0.f, t1 = 0.f, l1 = -1.f, g1 = -1.f;
    CHECK_STATUS(dkd_kd_loss(&s1, &t1, nullptr, nullptr, 1, 1, 1, DKD_KD_QFL, 1.0, 1.0, DKD_FLOAT32, &l1, &g1, 0,
                             nullptr),
                 DKD_OK);
    CHECK(l1 == 0.f && g1 == 0.f);
    // s = 2, t = -1: y = 0.2689, q = 0.8808, bce = 2 - 2y + log1p(e^-2), loss = bce * |q - y|.
    double y = 1 / (1 + std::exp(1.0)), q = 1 / (1 + std::exp(-2.0));
    double bce = 2 - 2 * y + std::log1p(std::exp(-2.0));
    s1 = 2.f;
    t1 = -1.f;
    CHECK_STATUS(dkd_kd_loss(&s1, &t1, nullptr, nullptr, 1, 1, 1, DKD_KD_QFL, 1.0, 1.0, DKD_FLOAT32, &l1, &g1, 0,
                             nullptr),
                 DKD_OK);
    CHECK(std::fabs(l1 - bce * (q - y)) < 1e-6);
    CHECK(std::fabs(g1 - ((q - y) * (q - y) + bce * q * (1 - q))) < 1e-6);
    // Invalid arguments.
    CHECK_STATUS(dkd_kd_loss(s.data(), t.data(), nullptr, nullptr, O, K, I, DKD_KD_KL, 0.0, 1.0, DKD_FLOAT32, &loss,
                             nullptr, 0, nullptr),
                 DKD_ERR_VALUE);
    CHECK_STATUS(dkd_kd_loss(s.data(), t.data(), nullptr, nullptr, O, K, I, DKD_KD_QFL, 1.0, -1.0, DKD_FLOAT32, &loss,
                             nullptr, 0, nullptr),
                 DKD_ERR_VALUE);
    CHECK_STATUS(dkd_kd_loss(s.data(), t.data(), nullptr, nullptr, O, K, I, 5, 1.0, 1.0, DKD_FLOAT32, &loss, nullptr,
                             0, nullptr),
                 DKD_ERR_VALUE);
    CHECK_STATUS(dkd_kd_loss(s.data(), t.data(), nullptr, nullptr, O, K, I, DKD_KD_KL, 1.0, 1.0, 9, &loss, nullptr, 0,
                             nullptr),
                 DKD_ERR_VALUE);
    CHECK_STATUS(dkd_kd_loss(nullptr, t.data(), nullptr, nullptr, O, K, I, DKD_KD_KL, 1.0, 1.0, DKD_FLOAT32, &loss,
                             nullptr, 0, nullptr),
                 DKD_ERR_NULL);
    CHECK_STATUS(dkd_kd_loss(s.data(), t.data(), nullptr, nullptr, O, K, I, DKD_KD_KL, 1.0, 1.0, DKD_FLOAT32, nullptr,
                             nullptr, 0, nullptr),
                 DKD_ERR_NULL);
    CHECK_STATUS(dkd_kd_loss(s.data(), t.data(), nullptr, nullptr, O, 0, I, DKD_KD_KL, 1.0, 1.0, DKD_FLOAT32, &loss,
                             nullptr, 0, nullptr),
                 DKD_ERR_SIZE);
    CHECK_STATUS(dkd_kd_loss(s.data(), t.data(), nullptr, nullptr, INT64_MAX / 4, 8, 8, DKD_KD_KL, 1.0, 1.0,
                             DKD_FLOAT32, &loss, nullptr, 0, nullptr),
                 DKD_ERR_SIZE);
}

// The vectorizable exp/log (header-only) against libm.
static void test_vmath() {
    double worst_exp = 0, worst_log = 0, worst_log1p = 0;
    for (int i = 0; i <= 200000; ++i) {
        float x = -87.0f + 175.0f * i / 200000.0f;
        double want = std::exp(static_cast<double>(x));
        worst_exp = std::max(worst_exp, std::fabs(dkd::vm::exp(x) - want) / want);
        float y = std::ldexp(1.0f + i / 200000.0f, (i % 200) - 100);
        worst_log = std::max(worst_log, std::fabs(dkd::vm::log(y) - std::log(static_cast<double>(y))) /
                                            std::max(1.0, std::fabs(std::log(static_cast<double>(y)))));
        float z = std::ldexp(1.0f + i / 200000.0f, -(i % 40));
        double l1p = std::log1p(static_cast<double>(z));
        worst_log1p = std::max(worst_log1p, std::fabs(dkd::vm::log1p(z) - l1p) / l1p);
    }
    CHECK(worst_exp < 3e-7);
    CHECK(worst_log < 3e-7);
    CHECK(worst_log1p < 5e-7);
    CHECK(dkd::vm::exp(-100.f) == 0.f);
    CHECK(std::isnan(dkd::vm::exp(NAN)));
    CHECK(std::isfinite(dkd::vm::exp(1000.f)));
    CHECK(dkd::vm::log(0.f) == -INFINITY);
    CHECK(std::isnan(dkd::vm::log(-1.f)));
    std::printf("vmath: exp rel err %.2e, log %.2e, log1p %.2e\n", worst_exp, worst_log, worst_log1p);
}

int main() {
    test_vmath();
    test_version_and_errors();
    test_nms_basic();
    test_nms_diou();
    test_nms_invalid();
    test_nms_threads();
    test_yolo_decode();
    test_kd_loss();
    std::printf("dkd_core_tests: %d checks, %d failures (cpu isa %s, cuda %s)\n", g_checks, g_failures, dkd_cpu_isa(),
                dkd_cuda_compiled() ? "compiled" : "not compiled");
    return g_failures == 0 ? 0 : 1;
}
