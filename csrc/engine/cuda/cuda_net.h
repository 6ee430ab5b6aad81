// The engine's CUDA path: every layer runs on one CUDA device in NCHW float32 (convolutions as
// im2col + cuBLAS SGEMM, the other layers as kernels in kernels.cu), the [yolo] heads come back
// to the host, where the one decoder and NMS (ops/) read them as on the CPU path.  Built when
// CMake finds cuBLAS (DKD_ENGINE_CUDA); each layer's steps are its forward_cuda().
#pragma once

#include <map>
#include <memory>
#include <utility>
#include <vector>

#include "engine/net.h"

namespace dkd {
namespace engine {

// What a layer's forward_cuda() sees: device buffers of the layer outputs for this batch.
class CudaContext {
public:
    int64_t batch = 0;
    void* stream = nullptr;  // cudaStream_t
    void* cublas = nullptr;  // cublasHandle_t

    const float* input(const Layer& l) const;  // the previous layer's output (the network input for layer 0)
    const float* output(int layer) const { return outputs_.at(layer); }
    float* alloc_output(const Layer& l);        // l's own buffer, batch * l.out.size() floats
    void alias_output(const Layer& l, const float* p) { outputs_[l.index] = p; }
    float* workspace(int64_t floats);            // scratch shared by the layers (im2col)
    // Device copy of host floats, made once per (layer, slot); zeros when `host` is empty.
    const float* constant(const Layer& l, int slot, const std::vector<float>& host, int64_t count);

    ~CudaContext();

private:
    friend class CudaNet;
    const float* net_input_ = nullptr;
    std::vector<const float*> outputs_;
    std::map<int, std::pair<float*, int64_t>> owned_;  // layer -> (buffer, floats)
    std::map<std::pair<int, int>, float*> constants_;
    float* work_ = nullptr;
    int64_t work_floats_ = 0;
};

class CudaNet {
public:
    CudaNet(const std::vector<std::unique_ptr<Layer>>& layers, const NetInfo& info);
    ~CudaNet();
    void forward(const float* host_input, int64_t batch);  // runs the layers, copies the heads back
    const float* head(size_t i) const { return heads_[i].data(); }

private:
    const std::vector<std::unique_ptr<Layer>>& layers_;
    NetInfo info_;
    CudaContext ctx_;
    float* input_ = nullptr;
    int64_t input_floats_ = 0;
    std::vector<std::vector<float>> heads_;
};

// CUDA errors -> dkd::Error(DKD_ERR_CUDA, "what: message").
void cuda_check(int err, const char* what);

}  // namespace engine
}  // namespace dkd
