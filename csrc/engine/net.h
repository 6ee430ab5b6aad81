// The inference network: a Darknet .cfg + .weights built into layers (one source file per
// layer type in engine/layers/), planned once per (batch, threads) into oneDNN primitives over
// one arena of activation buffers (engine/plan.cpp), run on the CPU in fp32 or bf16, or on a
// CUDA device through cuBLAS (engine/cuda/).  The same construction rules and error messages
// as the Python model (darknet_kd/model/layers.py, darknet.py).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "engine/cfg.h"

namespace dkd {
namespace engine {

struct Shape {
    int64_t c = 0, h = 0, w = 0;
    int64_t size() const { return c * h * w; }
    std::string str() const;  // Darknet's "%4d x%4d x%4d" (w x h x c)
};

// Darknet activations (src/activations.c) with the Python model's formulas.
enum class Act {
    kLinear, kLeaky, kRelu, kRelu6, kLogistic, kTanh, kMish, kHardMish, kSwish, kElu, kSelu, kGelu,
    kRelie, kHardtan, kLhtan, kLoggy
};
Act parse_activation(const Section& sec, const std::string& def);
float activate(Act a, float x);  // scalar reference (CUDA kernels and the non-oneDNN ones)

enum class Precision { kF32 = 0, kBF16 = 1 };

class Plan;
class Net;

// What the network input looks like for one layer while it is planned.
class Layer {
public:
    virtual ~Layer() = default;
    int index = 0;
    int line = 0;
    std::string kind;  // Darknet's table name: conv, max, route, ...
    Shape in, out;
    double bflops = 0;

    virtual std::string describe() const { return ""; }
    // Layers whose outputs this one reads besides its input (route, shortcut).
    virtual std::vector<int> sources() const { return {}; }
    // A plain channel concatenation of these layers' whole outputs ([route] without groups,
    // two or more inputs), else empty: the plan lets the first producers write into it.
    virtual std::vector<int> concat_sources() const { return {}; }
    // Floats this layer takes from a .weights file, in file order.
    virtual int64_t num_weights() const { return 0; }
    virtual int64_t num_parameters() const { return 0; }
    virtual void set_weights(const float* /*data*/) {}
    // Adds this layer's CPU steps (oneDNN primitives / kernels) to the plan.
    virtual void plan_cpu(Plan& p) const = 0;
#ifdef DKD_ENGINE_CUDA
    // Runs the layer on the CUDA device (engine/cuda/): device buffers, NCHW float32.
    virtual void forward_cuda(class CudaContext& ctx) const = 0;
#endif
};

// Layer constructors (engine/layers/*.cpp); they validate as the Python layers do.
std::unique_ptr<Layer> make_convolutional(int index, const Shape& in, const Section& sec);
std::unique_ptr<Layer> make_maxpool(int index, const Shape& in, const Section& sec);
std::unique_ptr<Layer> make_route(int index, const Shape& in, const Section& sec, const std::vector<Shape>& shapes);
std::unique_ptr<Layer> make_shortcut(int index, const Shape& in, const Section& sec, const std::vector<Shape>& shapes);
std::unique_ptr<Layer> make_upsample(int index, const Shape& in, const Section& sec);
std::unique_ptr<Layer> make_dropout(int index, const Shape& in, const Section& sec);
std::unique_ptr<Layer> make_avgpool(int index, const Shape& in, const Section& sec);
std::unique_ptr<Layer> make_yolo(int index, const Shape& in, const Section& sec, int64_t net_w, int64_t net_h);

// [yolo] settings the post-processing needs.
struct YoloInfo {
    int layer = 0;
    int64_t classes = 0, h = 0, w = 0;
    std::vector<float> anchors;  // masked anchors, [A][2] in input pixels
    int64_t num_anchors() const { return (int64_t)anchors.size() / 2; }
    double scale_x_y = 1;
    int new_coords = 0;
    int nms_kind = 0;  // dkd_nms_kind
    float beta_nms = 0.6f;
};
const YoloInfo& yolo_info(const Layer& layer);  // the layer must be a [yolo]

// [net] options the engine uses (parser.c:parse_net_options; all others are read, for the
// same type errors and unused-field warnings as the Python NetOptions).
struct NetInfo {
    int64_t batch = 1, width = 416, height = 416, channels = 3;
    int64_t letter_box = 0;
};

struct Detection {
    float x, y, w, h;  // centre and size relative to the original image (Darknet's)
    float prob;        // objectness * class probability
    int32_t class_id;
    int32_t box;       // which NMS survivor it belongs to (one box may carry several classes)
};

struct DetectOptions {
    float thresh = 0.25f;  // Darknet detector test's default
    float nms = 0.45f;
    int letterbox = -1;    // -1: the cfg's [net] letter_box, 0: stretch, 1: letterbox
};

class Net {
public:
    // width/height 0 keep the cfg's; bf16 falls back to fp32 where the CPU has no AVX512-BF16.
    Net(const std::string& cfg_path, int64_t width, int64_t height, Precision precision, int device);
    ~Net();
    Net(const Net&) = delete;
    Net& operator=(const Net&) = delete;

    void load_weights(const std::string& path);
    void set_threads(int threads);  // 0: $DKD_NUM_THREADS, else the hardware's

    const NetInfo& info() const { return info_; }
    Precision precision() const { return precision_; }
    int device() const { return device_; }
    int64_t classes() const { return classes_; }
    int64_t rows() const { return rows_; }  // decoded rows per image
    const std::vector<std::unique_ptr<Layer>>& layers() const { return layers_; }
    const std::vector<const Layer*>& yolo_layers() const { return yolo_; }
    const std::vector<std::string>& warnings() const { return cfg_.warnings; }
    std::string layer_table() const;  // `darknet-kd info`'s table and "Total BFLOPS"
    // Per-layer wall time (ms per forward, share, GFLOP/s) of the CPU forwards since the last
    // call (or since the plan of the last forward's batch size was built); then starts over.
    // Asked again with no forward in between, it gives the same table.
    std::string profile_table() const;
    double bflops() const;
    int threads() const { return threads_; }
    int64_t last_batch() const { return last_batch_; }
    int64_t parameters() const;  // as the PyTorch model counts them (conv weights, bias or BN scale+bias)
    int64_t weights_version[3] = {0, 2, 5};
    uint64_t seen = 0;

    // input [batch][C][H][W] float (host) -> the raw [yolo] heads, kept in the plan.
    void forward(const float* input, int64_t batch);
    // After forward: decoded rows [batch][rows][5+classes] as the PyTorch model's eval output.
    void decoded(float* out) const;
    // After forward: head `i` as plain NCHW float [batch][A*(5+C)][H][W].
    const float* head(size_t i) const;
    // One RGB 8-bit image (H x W x 3, row stride `stride` bytes) -> detections, Darknet's
    // detector test (resize or letterbox, decode, thresh, NMS), sorted by prob descending.
    std::vector<Detection> detect(const uint8_t* rgb, int64_t w, int64_t h, int64_t stride,
                                  const DetectOptions& opt);
    // Several images in one batched forward (all must be given; sizes may differ).
    std::vector<std::vector<Detection>> detect_batch(const std::vector<const uint8_t*>& rgb,
                                                     const std::vector<int64_t>& w, const std::vector<int64_t>& h,
                                                     const DetectOptions& opt);

private:
    Plan& plan_for(int64_t batch);
    std::vector<std::vector<Detection>> postprocess(int64_t batch, const std::vector<int32_t>* letterbox_wh,
                                                    float thresh, float nms);

    Cfg cfg_;
    NetInfo info_;
    Precision precision_;
    int device_;
    int threads_ = 0;
    int64_t classes_ = 0, rows_ = 0;
    std::vector<std::unique_ptr<Layer>> layers_;
    std::vector<const Layer*> yolo_;
    std::map<std::pair<int64_t, int>, std::unique_ptr<Plan>> plans_;
    Plan* last_ = nullptr;
    int64_t last_batch_ = 0;
    std::vector<float> input_buf_;
    mutable std::string profile_;
    struct CudaState;
    std::unique_ptr<CudaState> cuda_;
};

// True when the CPU runs oneDNN's bf16 kernels (AVX512-BF16 or AMX).
bool cpu_has_bf16();

}  // namespace engine
}  // namespace dkd
