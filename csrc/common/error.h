// dkd::Error — how the core reports bad arguments and failures.  Op dispatchers throw it;
// the C API turns it into a dkd_status + dkd_last_error(), the pybind11 module into a
// Python exception.  No torch, no Python here.
#pragma once

#include <cstdint>
#include <functional>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <string>

#include "dkd/dkd.h"

namespace dkd {

class Error : public std::runtime_error {
public:
    Error(dkd_status status, const std::string& msg) : std::runtime_error(msg), status_(status) {}
    dkd_status status() const { return status_; }

private:
    dkd_status status_;
};

template <typename... Args>
std::string str(const Args&... args) {
    std::ostringstream os;
    (os << ... << args);
    return os.str();
}

template <typename... Args>
[[noreturn]] void fail(dkd_status status, const Args&... args) {
    throw Error(status, str(args...));
}

// Argument checks shared by every op (op name first in every message).
inline void check_not_null(const void* p, const char* op, const char* name) {
    if (p == nullptr) fail(DKD_ERR_NULL, op, ": ", name, " is NULL");
}

inline void check_size(int64_t v, const char* op, const char* name, int64_t min_value = 0) {
    if (v < min_value) fail(DKD_ERR_SIZE, op, ": ", name, "=", v, " must be >= ", min_value);
}

// a*b, failing (not wrapping) when the product does not fit in int64 / size_t bytes.
inline int64_t mul_size(int64_t a, int64_t b, const char* op, const char* what) {
    if (a < 0 || b < 0) fail(DKD_ERR_SIZE, op, ": negative size in ", what);
    if (a != 0 && b > std::numeric_limits<int64_t>::max() / a)
        fail(DKD_ERR_SIZE, op, ": ", what, " overflows (", a, " x ", b, ")");
    int64_t r = a * b;
    // Must also be addressable as a byte count of 8-byte elements.
    if (r > std::numeric_limits<int64_t>::max() / 8) fail(DKD_ERR_SIZE, op, ": ", what, " is too large (", r, ")");
    return r;
}

inline void check_device(int device, const char* op) {
    if (device != DKD_DEVICE_CPU && device != DKD_DEVICE_CUDA)
        fail(DKD_ERR_DEVICE, op, ": device=", device, " is neither DKD_DEVICE_CPU (0) nor DKD_DEVICE_CUDA (1)");
#ifndef DKD_WITH_CUDA
    if (device == DKD_DEVICE_CUDA)
        fail(DKD_ERR_DEVICE, op, ": this libdkd was built without CUDA (configure with nvcc and -DDKD_CUDA=ON)");
#else
    if (device == DKD_DEVICE_CUDA && dkd_cuda_device_count() == 0)
        fail(DKD_ERR_DEVICE, op, ": no CUDA device is available (driver missing or no GPU)");
#endif
}

// Runs f for a C API entry point: catches every exception into a dkd_status and the
// per-thread dkd_last_error() message (defined in capi/dkd_capi.cpp).
int capi_guard(const std::function<void()>& f);

}  // namespace dkd
