// `dkd`: the compiled inference CLI over libdkd's C API (dkd/dkd.h).
//
//   dkd detect CFG WEIGHTS IMAGE|DIR|LIST [--names FILE] [--thresh T] [--nms N] [--letterbox]
//              [--bf16] [--json OUT] [--draw DIR] [--threads N] [--device cpu|cuda] [--quiet]
//   dkd bench  CFG WEIGHTS [--batch N] [--runs N] [--warmup N] [--bf16] [--threads N] [--device cpu|cuda]
//              [--width W] [--height H] [--json OUT] [--profile]
//   dkd info   CFG [WEIGHTS] [--width W] [--height H]
//
// `detect` prints and writes what `darknet-kd detect` does (Darknet's detector test: lines per
// object, Darknet's JSON with relative coordinates; drawn images as DIR/<stem>.jpg).  `info`
// prints the layer table and BFLOPs as `darknet-kd info`.  Errors: "dkd CMD: error: ...",
// exit status 2 (bad input) or 1 (usage).
#include <dirent.h>
#include <unistd.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "cli/image_io.h"
#include "dkd/dkd.h"
#include "common/error.h"

namespace {

using dkd::cli::Image;

struct UsageError : std::runtime_error {
    using std::runtime_error::runtime_error;
};
struct InputError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

const char* kUsage =
    "usage: dkd detect CFG WEIGHTS IMAGE|DIR|LIST [--names FILE] [--thresh T] [--nms N] [--letterbox]\n"
    "                  [--bf16] [--json OUT] [--draw DIR] [--threads N] [--device cpu|cuda] [--quiet]\n"
    "       dkd bench  CFG WEIGHTS [--batch N] [--runs N] [--warmup N] [--bf16] [--threads N] [--device cpu|cuda]\n"
    "                  [--width W] [--height H] [--json OUT] [--profile]\n"
    "       dkd info   CFG [WEIGHTS] [--width W] [--height H]\n";

// ---- arguments -----------------------------------------------------------------------
struct Args {
    std::vector<std::string> pos;
    std::map<std::string, std::string> opt;
    bool flag(const std::string& k) const { return opt.count(k) > 0; }
    std::string get(const std::string& k, const std::string& def = "") const {
        auto it = opt.find(k);
        return it == opt.end() ? def : it->second;
    }
    double num(const std::string& k, double def) const {
        auto it = opt.find(k);
        if (it == opt.end()) return def;
        char* end = nullptr;
        double v = std::strtod(it->second.c_str(), &end);
        if (it->second.empty() || *end || !std::isfinite(v)) throw UsageError("--" + k + " " + it->second + ": not a number");
        return v;
    }
    int integer(const std::string& k, int def, int lo, int hi) const {
        double v = num(k, def);
        if (v != std::floor(v) || v < lo || v > hi)
            throw UsageError(dkd::str("--", k, " must be an integer in [", lo, ", ", hi, "]"));
        return (int)v;
    }
};

Args parse_args(int argc, char** argv, const std::vector<std::string>& flags, const std::vector<std::string>& valued) {
    Args a;
    for (int i = 2; i < argc; ++i) {
        std::string s = argv[i];
        if (s.rfind("--", 0) == 0 && s.size() > 2) {
            std::string k = s.substr(2);
            if (std::find(flags.begin(), flags.end(), k) != flags.end()) {
                a.opt[k] = "1";
            } else if (std::find(valued.begin(), valued.end(), k) != valued.end()) {
                if (i + 1 >= argc) throw UsageError("--" + k + " needs a value");
                a.opt[k] = argv[++i];
            } else {
                throw UsageError("unknown option " + s);
            }
        } else {
            a.pos.push_back(s);
        }
    }
    return a;
}

// ---- the C API --------------------------------------------------------------------------
void check(int status) {
    if (status == DKD_OK) return;
    std::string msg = dkd_last_error();
    if (status == DKD_ERR_CFG || status == DKD_ERR_WEIGHTS || status == DKD_ERR_IO) throw InputError(msg);
    throw std::runtime_error(msg);
}

struct NetHandle {
    dkd_net* net = nullptr;
    dkd_net_desc desc{};
    NetHandle(const std::string& cfg, const std::string* weights, int w, int h, bool bf16, int threads,
              const std::string& device = "cpu") {
        if (device != "cpu" && device != "cuda") throw UsageError("--device must be cpu or cuda");
        check(dkd_net_load(cfg.c_str(), weights ? weights->c_str() : nullptr, w, h,
                           bf16 ? DKD_PRECISION_BF16 : DKD_PRECISION_FP32,
                           device == "cuda" ? DKD_DEVICE_CUDA : DKD_DEVICE_CPU, &net));
        if (threads) check(dkd_net_set_threads(net, threads));
        check(dkd_net_describe(net, &desc));
    }
    ~NetHandle() { dkd_net_free(net); }
    std::string text(int what) const {
        size_t len = 0;
        check(dkd_net_text(net, what, nullptr, 0, &len));
        std::string s(len + 1, '\0');
        check(dkd_net_text(net, what, s.data(), s.size(), &len));
        s.resize(len);
        return s;
    }
    void print_warnings() const {
        std::string w = text(DKD_NET_TEXT_WARNINGS);
        if (!w.empty()) std::fprintf(stderr, "%s", w.c_str());
    }
};

// ---- helpers -------------------------------------------------------------------------------
bool is_dir(const std::string& p) {
    struct stat st;
    return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}
bool exists(const std::string& p) {
    struct stat st;
    return ::stat(p.c_str(), &st) == 0;
}
std::string lower(std::string s) {
    std::transform(s.begin(), s.end(), s.begin(), ::tolower);
    return s;
}
std::string ext_of(const std::string& p) {
    size_t slash = p.find_last_of('/'), dot = p.find_last_of('.');
    if (dot == std::string::npos || (slash != std::string::npos && dot < slash)) return "";
    return lower(p.substr(dot));
}
std::string stem_of(const std::string& p) {
    size_t slash = p.find_last_of('/');
    std::string name = slash == std::string::npos ? p : p.substr(slash + 1);
    size_t dot = name.find_last_of('.');
    return dot == std::string::npos || dot == 0 ? name : name.substr(0, dot);
}
const std::vector<std::string> kImageExts = {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".tif", ".tiff"};
bool is_image(const std::string& p) {
    return std::find(kImageExts.begin(), kImageExts.end(), ext_of(p)) != kImageExts.end();
}

std::vector<std::string> read_lines(const std::string& path, const char* what) {
    std::string data;
    if (!dkd::cli::read_file(path, &data)) throw InputError(path + ": cannot read " + what + ": " + std::strerror(errno));
    std::vector<std::string> lines;
    size_t start = 0;
    while (start < data.size()) {
        size_t nl = data.find('\n', start);
        if (nl == std::string::npos) nl = data.size();
        std::string line = data.substr(start, nl - start);
        while (!line.empty() && (line.back() == '\r' || line.back() == ' ' || line.back() == '\t')) line.pop_back();
        size_t b = line.find_first_not_of(" \t");
        lines.push_back(b == std::string::npos ? "" : line.substr(b));
        start = nl + 1;
    }
    return lines;
}

// IMAGE, a folder of images (sorted by name), or a list file (one path a line).
std::vector<std::string> image_paths(const std::string& source) {
    std::vector<std::string> out;
    if (is_dir(source)) {
        DIR* d = ::opendir(source.c_str());
        if (!d) throw InputError(source + ": cannot list the folder: " + std::strerror(errno));
        while (dirent* e = ::readdir(d)) {
            std::string name = e->d_name;
            std::string full = source + (source.back() == '/' ? "" : "/") + name;
            if (name[0] != '.' && is_image(name) && !is_dir(full)) out.push_back(full);
        }
        ::closedir(d);
        std::sort(out.begin(), out.end());
        if (out.empty()) throw InputError(source + ": no images in this folder");
        return out;
    }
    if (!exists(source)) throw InputError(source + ": no such image, folder or list");
    if (is_image(source)) return {source};
    // Relative paths as darknet_kd.data.read_list: from the current folder when they exist
    // there, else from the list file's folder (also where a missing one is reported).
    size_t slash = source.find_last_of('/');
    std::string dir = slash == std::string::npos ? "" : source.substr(0, slash + 1);
    std::vector<std::string> lines = read_lines(source, "the image list");
    for (size_t i = 0; i < lines.size(); ++i) {
        const std::string& l = lines[i];
        if (l.empty() || l[0] == '#') continue;
        out.push_back(l[0] == '/' || dir.empty() || exists(l) ? l : dir + l);
    }
    if (out.empty()) throw InputError(source + ": the image list is empty");
    return out;
}

std::string json_escape(const std::string& s) {
    std::string o;
    for (unsigned char c : s) {
        if (c == '"' || c == '\\') {
            o += '\\';
            o += (char)c;
        } else if (c < 0x20) {
            char b[8];
            std::snprintf(b, sizeof b, "\\u%04x", c);
            o += b;
        } else {
            o += (char)c;
        }
    }
    return o;
}

std::string num6(double v) {  // Python's round(v, 6), printed without trailing zeros
    char b[64];
    std::snprintf(b, sizeof b, "%.6f", v);
    std::string s = b;
    while (s.size() > 1 && s.back() == '0') s.pop_back();
    if (s.back() == '.') s += '0';
    if (s == "-0.0") s = "0.0";
    return s;
}

void color_of(int k, uint8_t c[3]) {
    uint32_t h = (uint32_t)k * 2654435761u + 0x9e3779b9u;
    for (int i = 0; i < 3; ++i, h >>= 8) c[i] = (uint8_t)(60 + (h & 0xff) % 196);
}

// ---- commands ------------------------------------------------------------------------------
int cmd_detect(int argc, char** argv) {
    Args a = parse_args(argc, argv, {"letterbox", "bf16", "quiet"},
                        {"names", "thresh", "nms", "json", "draw", "threads", "device"});
    if (a.pos.size() != 3) throw UsageError("detect needs CFG WEIGHTS IMAGE|DIR|LIST");
    double thresh = a.num("thresh", 0.25), nms = a.num("nms", 0.45);
    if (thresh < 0 || thresh >= 1) throw UsageError("--thresh must lie in [0, 1)");
    NetHandle net(a.pos[0], &a.pos[1], 0, 0, a.flag("bf16"), a.integer("threads", 0, 0, 4096), a.get("device", "cpu"));
    net.print_warnings();
    std::vector<std::string> names;
    if (a.flag("names")) {
        for (auto& l : read_lines(a.get("names"), "names"))
            if (!l.empty()) names.push_back(l);
        if ((int)names.size() != net.desc.classes)
            throw InputError(dkd::str(a.get("names"), ": ", names.size(), " names, the network has classes=", net.desc.classes));
    } else {
        for (int k = 0; k < net.desc.classes; ++k) names.push_back(std::to_string(k));
    }
    std::vector<std::string> paths = image_paths(a.pos[2]);
    std::string draw_dir = a.get("draw");
    if (!draw_dir.empty() && !is_dir(draw_dir) && ::mkdir(draw_dir.c_str(), 0755) != 0)
        throw InputError(draw_dir + ": cannot create the folder: " + std::strerror(errno));
    int letterbox = a.flag("letterbox") ? 1 : -1;
    std::string json = "[\n";
    std::vector<dkd_detection> dets(1024);
    for (size_t f = 0; f < paths.size(); ++f) {
        Image img;
        try {
            img = dkd::cli::load_image(paths[f]);
        } catch (const std::runtime_error& e) {
            throw InputError(e.what());
        }
        int64_t count = 0;
        for (;;) {
            check(dkd_net_detect(net.net, img.rgb.data(), img.w, img.h, (int64_t)img.w * 3, (float)thresh, (float)nms,
                                 letterbox, dets.data(), (int64_t)dets.size(), &count));
            if (count <= (int64_t)dets.size()) break;
            dets.resize(count);
        }
        if (!a.flag("quiet")) std::printf("%s: %lld objects\n", paths[f].c_str(), (long long)count);
        json += dkd::str(" {\n  \"frame_id\": ", f + 1, ",\n  \"filename\": \"", json_escape(paths[f]), "\",\n  \"objects\": [");
        int thick = std::max(1, (int)std::lround(std::min(img.w, img.h) / 300.0));
        Image drawn = img;
        for (int64_t i = 0; i < count; ++i) {
            const dkd_detection& d = dets[i];
            double cx = d.x, cy = d.y, bw = d.w, bh = d.h;  // as the Python Detection.xyxy
            int x1 = (int)std::max(0.0, (cx - bw / 2) * img.w), y1 = (int)std::max(0.0, (cy - bh / 2) * img.h);
            int x2 = (int)std::min(img.w - 1.0, (cx + bw / 2) * img.w), y2 = (int)std::min(img.h - 1.0, (cy + bh / 2) * img.h);
            const std::string& name = names[d.class_id];
            if (!a.flag("quiet"))
                std::printf("  %s: %.0f%%\t(left_x: %4d   top_y: %4d   width: %4d   height: %4d)\n", name.c_str(),
                            100.0 * d.prob, x1, y1, x2 - x1, y2 - y1);
            json += dkd::str(i ? "," : "", "\n   {\"class_id\": ", d.class_id, ", \"name\": \"", json_escape(name),
                             "\", \"confidence\": ", num6(d.prob), ", \"relative_coordinates\": {\"center_x\": ", num6(cx),
                             ", \"center_y\": ", num6(cy), ", \"width\": ", num6(bw), ", \"height\": ", num6(bh), "}}");
            if (!draw_dir.empty()) {
                uint8_t c[3];
                color_of(d.class_id, c);
                dkd::cli::draw_box(drawn, x1, y1, x2, y2, c, thick);
                char tag[256];
                std::snprintf(tag, sizeof tag, "%s %.2f", name.c_str(), d.prob);
                int th = 9 * thick;
                dkd::cli::draw_label(drawn, x1, std::max(0, y1 - th), tag, c, thick);
            }
        }
        json += count ? "\n  ]\n }" : "]\n }";
        json += f + 1 < paths.size() ? ",\n" : "\n";
        if (!draw_dir.empty()) dkd::cli::save_image(draw_dir + "/" + stem_of(paths[f]) + ".jpg", drawn);
    }
    json += "]\n";
    std::string out = a.get("json");
    if (out.empty() && !draw_dir.empty()) out = draw_dir + "/result.json";
    if (!out.empty()) dkd::cli::write_atomic(out, json);
    return 0;
}

int cmd_bench(int argc, char** argv) {
    Args a = parse_args(argc, argv, {"bf16", "profile"},
                        {"batch", "runs", "warmup", "threads", "width", "height", "json", "device"});
    if (a.pos.size() != 2) throw UsageError("bench needs CFG WEIGHTS");
    int batch = a.integer("batch", 1, 1, 4096), runs = a.integer("runs", 20, 1, 100000);
    int warmup = a.integer("warmup", 3, 0, 100000);
    NetHandle net(a.pos[0], &a.pos[1], a.integer("width", 0, 0, 16384), a.integer("height", 0, 0, 16384), a.flag("bf16"),
                  a.integer("threads", 0, 0, 4096), a.get("device", "cpu"));
    const dkd_net_desc& d = net.desc;
    std::vector<float> input((size_t)batch * d.channels * d.height * d.width);
    uint32_t s = 12345;
    for (auto& v : input) v = (float)((s = s * 1664525u + 1013904223u) >> 8) / 16777216.0f;
    std::vector<float> output((size_t)batch * d.rows * (d.classes + 5));
    using clock = std::chrono::steady_clock;
    auto t0 = clock::now();
    check(dkd_net_forward(net.net, input.data(), batch, output.data()));  // plans the network
    double plan_ms = std::chrono::duration<double, std::milli>(clock::now() - t0).count();
    for (int i = 0; i < warmup; ++i) check(dkd_net_forward(net.net, input.data(), batch, output.data()));
    const bool profile = a.flag("profile");
    if (profile && d.device == DKD_DEVICE_CUDA) throw UsageError("--profile measures the CPU path only");
    if (profile) net.text(DKD_NET_TEXT_PROFILE);  // starts the per-layer sums after the warm-up
    std::vector<double> ms;
    for (int i = 0; i < runs; ++i) {
        auto t = clock::now();
        check(dkd_net_forward(net.net, input.data(), batch, output.data()));
        ms.push_back(std::chrono::duration<double, std::milli>(clock::now() - t).count());
    }
    std::sort(ms.begin(), ms.end());
    double med = ms[ms.size() / 2], best = ms.front();
    const char* prec = d.device == DKD_DEVICE_CUDA ? "cuda fp32" : d.precision == DKD_PRECISION_BF16 ? "bf16" : "fp32";
    std::printf("%s %dx%d batch %d %s, %d threads: median %.2f ms, min %.2f ms per batch; %.1f images/s "
                "(first forward with planning %.1f ms)\n",
                a.pos[0].c_str(), d.width, d.height, batch, prec, d.threads, med, best, 1000.0 * batch / med, plan_ms);
    if (profile) std::printf("%s\n", net.text(DKD_NET_TEXT_PROFILE).c_str());
    if (a.flag("json"))
        dkd::cli::write_atomic(a.get("json"),
                               dkd::str("{\"cfg\": \"", json_escape(a.pos[0]), "\", \"width\": ", d.width,
                                        ", \"height\": ", d.height, ", \"batch\": ", batch, ", \"precision\": \"", prec,
                                        "\", \"threads\": ", d.threads, ", \"runs\": ", runs, ", \"median_ms\": ", med,
                                        ", \"min_ms\": ", best, ", \"images_per_s\": ", 1000.0 * batch / med,
                                        ", \"plan_ms\": ", plan_ms, "}\n"));
    return 0;
}

int cmd_info(int argc, char** argv) {
    Args a = parse_args(argc, argv, {}, {"width", "height"});
    if (a.pos.empty() || a.pos.size() > 2) throw UsageError("info needs CFG [WEIGHTS]");
    NetHandle net(a.pos[0], a.pos.size() > 1 ? &a.pos[1] : nullptr, a.integer("width", 0, 0, 16384),
                  a.integer("height", 0, 0, 16384), false, 0);
    net.print_warnings();
    std::printf("%s\n", net.text(DKD_NET_TEXT_LAYERS).c_str());
    std::string params = std::to_string(net.desc.parameters);
    for (int i = (int)params.size() - 3; i > 0; i -= 3) params.insert((size_t)i, ",");
    std::printf("classes %d, parameters %s, input %dx%dx%d\n", net.desc.classes, params.c_str(), net.desc.width,
                net.desc.height, net.desc.channels);
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    // oneDNN runs on OpenMP; spinning worker threads (OpenMP's default) collapse when the cores
    // are shared with other processes (a 2-core machine under load: 4x slower).  Unless the
    // user chose, wait passively: the runtime reads the variable when it loads, so run again.
    if (!std::getenv("OMP_WAIT_POLICY") && !std::getenv("DKD_NO_REEXEC")) {
        ::setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
        ::setenv("DKD_NO_REEXEC", "1", 1);
        ::execv("/proc/self/exe", argv);  // returns only on failure: go on as we are
    }
    if (argc < 2 || !std::strcmp(argv[1], "-h") || !std::strcmp(argv[1], "--help")) {
        std::fputs(kUsage, argc < 2 ? stderr : stdout);
        return argc < 2 ? 1 : 0;
    }
    std::string cmd = argv[1];
    try {
        if (cmd == "detect") return cmd_detect(argc, argv);
        if (cmd == "bench") return cmd_bench(argc, argv);
        if (cmd == "info") return cmd_info(argc, argv);
        if (cmd == "--version") {
            std::printf("dkd %s (libdkd API %d)\n", dkd_version_string(), dkd_api_version());
            return 0;
        }
        throw UsageError("unknown command '" + cmd + "'");
    } catch (const UsageError& e) {
        std::fprintf(stderr, "dkd %s: %s\n%s", cmd.c_str(), e.what(), kUsage);
        return 1;
    } catch (const InputError& e) {
        std::fprintf(stderr, "dkd %s: error: %s\n", cmd.c_str(), e.what());
        return 2;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "dkd %s: error: %s\n", cmd.c_str(), e.what());
        return 2;
    }
}
