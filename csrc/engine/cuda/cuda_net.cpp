#include "engine/cuda/cuda_net.h"

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include "common/error.h"
#include "engine/cuda/kernels.h"

namespace dkd {
namespace engine {

void cuda_check(int err, const char* what) {
    if (err != cudaSuccess) {
        cudaGetLastError();
        fail(DKD_ERR_CUDA, what, ": ", cudaGetErrorString(static_cast<cudaError_t>(err)));
    }
}

namespace {

float* device_alloc(int64_t floats) {
    void* p = nullptr;
    cuda_check(cudaMalloc(&p, (size_t)std::max<int64_t>(floats, 1) * sizeof(float)), "cudaMalloc");
    return static_cast<float*>(p);
}

}  // namespace

CudaContext::~CudaContext() {
    for (auto& o : owned_) cudaFree(o.second.first);
    for (auto& c : constants_) cudaFree(c.second);
    cudaFree(work_);
}

const float* CudaContext::input(const Layer& l) const { return l.index == 0 ? net_input_ : outputs_.at(l.index - 1); }

float* CudaContext::alloc_output(const Layer& l) {
    int64_t need = batch * l.out.size();
    auto it = owned_.find(l.index);
    if (it == owned_.end() || it->second.second < need) {
        if (it != owned_.end()) cudaFree(it->second.first);
        owned_[l.index] = {device_alloc(need), need};
    }
    float* p = owned_[l.index].first;
    outputs_[l.index] = p;
    return p;
}

float* CudaContext::workspace(int64_t floats) {
    if (floats > work_floats_) {
        cudaFree(work_);
        work_ = device_alloc(floats);
        work_floats_ = floats;
    }
    return work_;
}

const float* CudaContext::constant(const Layer& l, int slot, const std::vector<float>& host, int64_t count) {
    auto key = std::make_pair(l.index, slot);
    auto it = constants_.find(key);
    if (it != constants_.end()) return it->second;
    float* p = device_alloc(count);
    if (host.empty()) {
        cuda_check(cudaMemset(p, 0, (size_t)count * sizeof(float)), "cudaMemset");
    } else {
        if ((int64_t)host.size() != count) fail(DKD_ERR_INTERNAL, "cuda: layer ", l.index, " constant size mismatch");
        cuda_check(cudaMemcpy(p, host.data(), (size_t)count * sizeof(float), cudaMemcpyHostToDevice), "cudaMemcpy");
    }
    constants_[key] = p;
    return p;
}

CudaNet::CudaNet(const std::vector<std::unique_ptr<Layer>>& layers, const NetInfo& info) : layers_(layers), info_(info) {
    int n = 0;
    cuda_check(cudaGetDeviceCount(&n), "cudaGetDeviceCount");
    if (n == 0) fail(DKD_ERR_DEVICE, "net: no CUDA device");
    cudaStream_t s;
    cuda_check(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "cudaStreamCreate");
    ctx_.stream = s;
    cublasHandle_t h;
    if (cublasCreate(&h) != CUBLAS_STATUS_SUCCESS) fail(DKD_ERR_CUDA, "cublasCreate failed");
    cublasSetStream(h, s);
    ctx_.cublas = h;
    ctx_.outputs_.assign(layers.size(), nullptr);
}

CudaNet::~CudaNet() {
    cudaFree(input_);
    if (ctx_.cublas) cublasDestroy(static_cast<cublasHandle_t>(ctx_.cublas));
    if (ctx_.stream) cudaStreamDestroy(static_cast<cudaStream_t>(ctx_.stream));
}

void CudaNet::forward(const float* host_input, int64_t batch) {
    auto stream = static_cast<cudaStream_t>(ctx_.stream);
    int64_t floats = batch * info_.channels * info_.height * info_.width;
    if (floats > input_floats_) {
        cudaFree(input_);
        input_ = device_alloc(floats);
        input_floats_ = floats;
    }
    cuda_check(cudaMemcpyAsync(input_, host_input, (size_t)floats * sizeof(float), cudaMemcpyHostToDevice, stream),
               "cudaMemcpyAsync (input)");
    ctx_.batch = batch;
    ctx_.net_input_ = input_;
    heads_.clear();
    for (const auto& l : layers_) {
        l->forward_cuda(ctx_);
        if (l->kind == "yolo") {
            heads_.emplace_back(batch * l->in.size());
            cuda_check(cudaMemcpyAsync(heads_.back().data(), ctx_.output(l->index), heads_.back().size() * sizeof(float),
                                       cudaMemcpyDeviceToHost, stream),
                       "cudaMemcpyAsync (head)");
        }
    }
    cuda_check(cudaStreamSynchronize(stream), "forward");
}

namespace cuda {

void gemm(void* cublas, int64_t m, int64_t n, int64_t k, const float* a, const float* b, float* c) {
    // Row-major C = A B is column-major C^T = B^T A^T: cuBLAS with the operands swapped.
    const float one = 1.f, zero = 0.f;
    cublasStatus_t st = cublasSgemm(static_cast<cublasHandle_t>(cublas), CUBLAS_OP_N, CUBLAS_OP_N, (int)n, (int)m,
                                    (int)k, &one, b, (int)n, a, (int)k, &zero, c, (int)n);
    if (st != CUBLAS_STATUS_SUCCESS) fail(DKD_ERR_CUDA, "cublasSgemm failed (status ", (int)st, ")");
}

}  // namespace cuda
}  // namespace engine
}  // namespace dkd
