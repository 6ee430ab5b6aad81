// CUDA helpers for the op kernels: error checks that throw dkd::Error, stream-ordered
// scratch buffers, and the copy-back-and-wait used where a size must reach the host.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "common/error.h"

#define DKD_CUDA_CHECK(expr)                                                                       \
    do {                                                                                           \
        cudaError_t dkd_err_ = (expr);                                                             \
        if (dkd_err_ != cudaSuccess) {                                                             \
            cudaGetLastError();                                                                    \
            ::dkd::fail(DKD_ERR_CUDA, __FILE__, ":", __LINE__, ": ", #expr, ": ", cudaGetErrorString(dkd_err_)); \
        }                                                                                          \
    } while (0)

#define DKD_CUDA_LAUNCHED() DKD_CUDA_CHECK(cudaGetLastError())

namespace dkd {
namespace cuda {

inline cudaStream_t as_stream(void* s) { return static_cast<cudaStream_t>(s); }

// Device memory freed (stream-ordered) when it goes out of scope.
class Scratch {
public:
    Scratch(size_t bytes, cudaStream_t stream) : stream_(stream) {
        if (bytes) DKD_CUDA_CHECK(cudaMallocAsync(&ptr_, bytes, stream));
    }
    ~Scratch() {
        if (ptr_) cudaFreeAsync(ptr_, stream_);
    }
    Scratch(const Scratch&) = delete;
    Scratch& operator=(const Scratch&) = delete;
    template <typename T>
    T* as() const {
        return static_cast<T*>(ptr_);
    }

private:
    void* ptr_ = nullptr;
    cudaStream_t stream_;
};

// Copies `count` values from the device and waits for the stream.
template <typename T>
void to_host(T* host, const T* device, size_t count, cudaStream_t stream) {
    DKD_CUDA_CHECK(cudaMemcpyAsync(host, device, count * sizeof(T), cudaMemcpyDeviceToHost, stream));
    DKD_CUDA_CHECK(cudaStreamSynchronize(stream));
}

inline unsigned blocks_for(int64_t n, int threads, int64_t cap = 1 << 20) {
    int64_t b = (n + threads - 1) / threads;
    if (b < 1) b = 1;
    return static_cast<unsigned>(b < cap ? b : cap);
}

}  // namespace cuda
}  // namespace dkd
