// C++ tests of the inference engine through the C API (ctest; under ASan/UBSan by
// `make asan-test`): a known network's forward, and seeded mutations of a cfg and of its
// .weights -- every load either succeeds or fails with DKD_ERR_CFG / DKD_ERR_WEIGHTS and a
// message naming the file and the line (or byte offset), never a crash or a leak.
// The Python tests (tests/test_engine.py) check the messages against the Python parser.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "dkd/dkd.h"

static int g_failures = 0, g_checks = 0;
#define CHECK(cond)                                                                         \
    do {                                                                                    \
        ++g_checks;                                                                         \
        if (!(cond)) {                                                                      \
            ++g_failures;                                                                   \
            std::fprintf(stderr, "%s:%d: CHECK failed: %s (%s)\n", __FILE__, __LINE__, #cond, \
                         dkd_last_error());                                                 \
        }                                                                                   \
    } while (0)

static const char* kCfg =
    "[net]\nwidth=32\nheight=32\nchannels=3\n\n"
    "[convolutional]\nbatch_normalize=1\nfilters=8\nsize=3\nstride=1\npad=1\nactivation=mish\n\n"
    "[maxpool]\nsize=2\nstride=2\n\n"
    "[convolutional]\nfilters=8\nsize=1\nstride=1\nactivation=leaky\n\n"
    "[shortcut]\nfrom=-2\nactivation=linear\n\n"
    "[route]\nlayers=-1\ngroups=2\ngroup_id=1\n\n"
    "[upsample]\nstride=2\n\n"
    "[route]\nlayers=-1,0\n\n"
    "[convolutional]\nfilters=18\nsize=1\nstride=1\nactivation=linear\n\n"
    "[yolo]\nmask=0,1,2\nanchors=4,5, 8,9, 12,14\nclasses=1\nnum=3\n";

static void write_file(const std::string& path, const std::string& data) {
    FILE* f = std::fopen(path.c_str(), "wb");
    if (!f) return;
    std::fwrite(data.data(), 1, data.size(), f);
    std::fclose(f);
}

static std::string weights_for(uint32_t seed) {
    // floats of kCfg's convolutions: 4*8 + 8*27, 8 + 8*8, 18 + 18*12
    const int floats = 4 * 8 + 8 * 27 + 8 + 8 * 8 + 18 + 18 * 12;
    std::string w;
    int32_t head[3] = {0, 2, 5};
    uint64_t seen = 0;
    w.append(reinterpret_cast<char*>(head), 12);
    w.append(reinterpret_cast<char*>(&seen), 8);
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> u(0.5f, 1.0f);  // also fine as BN variances
    for (int i = 0; i < floats; ++i) {
        float v = u(rng) * ((i % 3) ? 0.3f : 1.0f);
        w.append(reinterpret_cast<char*>(&v), 4);
    }
    return w;
}

static std::string mutate(const std::string& s, std::mt19937& rng, const std::string& alphabet) {
    std::string b = s;
    int ops = 1 + (int)(rng() % 4);
    for (int k = 0; k < ops; ++k) {
        size_t i = b.empty() ? 0 : rng() % (b.size() + 1);
        switch (rng() % 5) {
            case 0: if (i < b.size()) b.erase(i, 1 + rng() % 8); break;
            case 1: b.insert(i, 1, alphabet[rng() % alphabet.size()]); break;
            case 2: if (!b.empty()) b[std::min(i, b.size() - 1)] = alphabet[rng() % alphabet.size()]; break;
            case 3: { size_t j = rng() % (b.size() + 1); b.insert(i, b.substr(j, 1 + rng() % 40)); break; }
            default: b.resize(i); break;
        }
    }
    return b;
}

static void test_forward(const std::string& dir) {
    std::string cfg = dir + "/dkd_engine_test.cfg", w = dir + "/dkd_engine_test.weights";
    write_file(cfg, kCfg);
    write_file(w, weights_for(1));
    dkd_net* net = nullptr;
    CHECK(dkd_net_load(cfg.c_str(), w.c_str(), 0, 0, DKD_PRECISION_FP32, DKD_DEVICE_CPU, &net) == DKD_OK);
    if (!net) return;
    dkd_net_desc d;
    CHECK(dkd_net_describe(net, &d) == DKD_OK);
    CHECK(d.width == 32 && d.classes == 1 && d.rows == 3 * 32 * 32 && d.num_layers == 9);
    std::vector<float> x(2 * 3 * 32 * 32), y(2 * d.rows * 6, NAN);
    for (size_t i = 0; i < x.size(); ++i) x[i] = (float)((i * 7919) % 255) / 255.f;
    CHECK(dkd_net_forward(net, x.data(), 2, y.data()) == DKD_OK);
    bool finite = true, in_range = true;
    for (size_t i = 0; i < y.size(); ++i) {
        finite &= std::isfinite(y[i]);
        if (i % 6 >= 4) in_range &= y[i] >= 0.f && y[i] <= 1.f;  // objectness, class prob
    }
    CHECK(finite && in_range);
    // threads do not change the result beyond rounding
    std::vector<float> y1(y.size());
    CHECK(dkd_net_set_threads(net, 1) == DKD_OK);
    CHECK(dkd_net_forward(net, x.data(), 2, y1.data()) == DKD_OK);
    float worst = 0;
    for (size_t i = 0; i < y.size(); ++i) worst = std::max(worst, std::fabs(y[i] - y1[i]));
    CHECK(worst < 1e-5f);
    std::vector<uint8_t> img(40 * 30 * 3, 128);
    dkd_detection dets[8];
    int64_t count = -1;
    CHECK(dkd_net_detect(net, img.data(), 40, 30, 120, 0.25f, 0.45f, -1, dets, 8, &count) == DKD_OK && count >= 0);
    CHECK(dkd_net_detect(net, img.data(), 40, 30, 100, 0.25f, 0.45f, -1, dets, 8, &count) == DKD_ERR_SIZE);
    CHECK(dkd_net_forward(net, nullptr, 1, nullptr) == DKD_ERR_NULL);
    CHECK(dkd_net_text(net, 7, nullptr, 0, nullptr) == DKD_ERR_VALUE);
    CHECK(dkd_net_free(net) == DKD_OK);
    CHECK(dkd_net_load(cfg.c_str(), nullptr, 0, 0, 9, DKD_DEVICE_CPU, &net) == DKD_ERR_VALUE && net == nullptr);
}

static void test_fuzz(const std::string& dir, int cases) {
    std::string cfg = dir + "/dkd_engine_fuzz.cfg", w = dir + "/dkd_engine_fuzz.weights";
    std::mt19937 rng(20240607);
    const std::string alphabet = "0123456789-=,.#;[]_ \nabcxyz\t\xff\xc3";
    const std::string good_w = weights_for(2);
    int errors = 0;
    for (int k = 0; k < cases; ++k) {
        bool mutate_cfg = k % 2 == 0;
        write_file(cfg, mutate_cfg ? mutate(kCfg, rng, alphabet) : std::string(kCfg));
        write_file(w, mutate_cfg ? good_w : mutate(good_w, rng, std::string("\0\1\x7f\xff", 4)));
        dkd_net* net = nullptr;
        int st = dkd_net_load(cfg.c_str(), w.c_str(), 0, 0, DKD_PRECISION_FP32, DKD_DEVICE_CPU, &net);
        if (st == DKD_OK) {
            // a mutated cfg that still builds must also run
            dkd_net_desc d;
            CHECK(dkd_net_describe(net, &d) == DKD_OK);
            if (d.width * d.height <= 256 * 256 && d.channels == 3) {
                std::vector<float> x((size_t)d.channels * d.width * d.height, 0.5f);
                std::vector<float> y((size_t)d.rows * (d.classes + 5));
                int fst = dkd_net_forward(net, x.data(), 1, y.data());
                CHECK(fst == DKD_OK || fst == DKD_ERR_CFG);  // a oneDNN-refused geometry names its line
            }
            dkd_net_free(net);
            continue;
        }
        ++errors;
        std::string msg = dkd_last_error();
        const std::string& file = (st == DKD_ERR_CFG) ? cfg : w;
        CHECK(st == DKD_ERR_CFG || st == DKD_ERR_WEIGHTS);
        CHECK(net == nullptr);
        CHECK(msg.compare(0, file.size(), file) == 0 &&
              (msg.compare(file.size(), 1, ":") == 0 || msg.compare(file.size(), 7, " (byte ") == 0));
    }
    CHECK(errors > cases / 5 && errors < cases);
}

int main() {
    const char* tmp = std::getenv("TMPDIR");
    std::string dir = tmp ? tmp : "/tmp";
    test_forward(dir);
    test_fuzz(dir, std::getenv("DKD_FUZZ_CASES") ? std::atoi(std::getenv("DKD_FUZZ_CASES")) : 400);
    std::printf("dkd_engine_tests: %d checks, %d failures\n", g_checks, g_failures);
    return g_failures ? 1 : 0;
}
