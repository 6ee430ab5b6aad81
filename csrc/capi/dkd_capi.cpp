// The C API (dkd/dkd.h): every entry point catches dkd::Error and any other exception,
// records the message for dkd_last_error() (per thread) and returns a dkd_status.
#include <cstring>
#include <exception>
#include <functional>
#include <new>
#include <string>

#include "common/error.h"
#include "common/isa.h"
#include "common/parallel.h"
#include "dkd/dkd.h"
#include "ops/kd_loss/kd_loss.h"
#include "ops/nms/nms.h"
#include "ops/yolo_decode/yolo_decode.h"

#ifdef DKD_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

#define DKD_STR2(x) #x
#define DKD_STR(x) DKD_STR2(x)

namespace {

thread_local std::string g_last_error;

template <typename F>
int guarded(F&& f) {
    try {
        g_last_error.clear();
        f();
        return DKD_OK;
    } catch (const dkd::Error& e) {
        g_last_error = e.what();
        return e.status();
    } catch (const std::bad_alloc&) {
        g_last_error = "out of memory";
        return DKD_ERR_ALLOC;
    } catch (const std::exception& e) {
        g_last_error = std::string("internal error: ") + e.what();
        return DKD_ERR_INTERNAL;
    } catch (...) {
        g_last_error = "internal error: unknown exception";
        return DKD_ERR_INTERNAL;
    }
}

}  // namespace

// For the other C API sources (csrc/engine/capi.cpp): the same guard and last-error slot.
int dkd::capi_guard(const std::function<void()>& f) { return guarded(f); }

extern "C" {

int dkd_version(void) { return DKD_VERSION_MAJOR * 10000 + DKD_VERSION_MINOR * 100 + DKD_VERSION_PATCH; }
int dkd_api_version(void) { return DKD_API_VERSION; }
const char* dkd_version_string(void) {
    return DKD_STR(DKD_VERSION_MAJOR) "." DKD_STR(DKD_VERSION_MINOR) "." DKD_STR(DKD_VERSION_PATCH);
}
const char* dkd_last_error(void) { return g_last_error.c_str(); }

const char* dkd_status_name(int status) {
    switch (status) {
        case DKD_OK: return "DKD_OK";
        case DKD_ERR_NULL: return "DKD_ERR_NULL";
        case DKD_ERR_SIZE: return "DKD_ERR_SIZE";
        case DKD_ERR_VALUE: return "DKD_ERR_VALUE";
        case DKD_ERR_DEVICE: return "DKD_ERR_DEVICE";
        case DKD_ERR_CUDA: return "DKD_ERR_CUDA";
        case DKD_ERR_ALLOC: return "DKD_ERR_ALLOC";
        case DKD_ERR_INTERNAL: return "DKD_ERR_INTERNAL";
        case DKD_ERR_CFG: return "DKD_ERR_CFG";
        case DKD_ERR_WEIGHTS: return "DKD_ERR_WEIGHTS";
        case DKD_ERR_IO: return "DKD_ERR_IO";
        default: return "DKD_UNKNOWN_STATUS";
    }
}

int dkd_cuda_compiled(void) {
#ifdef DKD_WITH_CUDA
    return 1;
#else
    return 0;
#endif
}

int dkd_cuda_device_count(void) {
#ifdef DKD_WITH_CUDA
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();  // clear the sticky "no device" error
        return 0;
    }
    return n;
#else
    return 0;
#endif
}

int dkd_set_num_threads(int n) {
    return guarded([&] {
        if (n < 0) dkd::fail(DKD_ERR_VALUE, "set_num_threads: n=", n, " is negative (0 = default)");
        dkd::set_num_threads(n);
    });
}
int dkd_get_num_threads(void) { return dkd::num_threads(); }
const char* dkd_cpu_isa(void) { return dkd::isa_name(dkd::active_isa()); }

int dkd_nms(const float* boxes, const float* scores, const int64_t* batch, int64_t n, int64_t num_classes,
            int64_t num_images, float iou_thresh, float score_thresh, int kind, float beta_nms, int64_t max_det,
            uint8_t* keep, int device, void* stream) {
    return guarded([&] {
        dkd::NmsArgs a;
        a.boxes = boxes;
        a.scores = scores;
        a.batch = batch;
        a.n = n;
        a.classes = num_classes;
        a.images = num_images;
        a.iou_thresh = iou_thresh;
        a.score_thresh = score_thresh;
        a.kind = kind;
        a.beta = beta_nms;
        a.max_det = max_det;
        a.keep = keep;
        a.device = device;
        a.stream = stream;
        dkd::nms(a);
    });
}

int dkd_yolo_decode(const float* head, const int64_t* shape, const int64_t* strides, int64_t num_anchors,
                    const float* anchors, int32_t net_w, int32_t net_h, double scale_x_y, int new_coords, float thresh,
                    const int32_t* letterbox_wh, float* out, int64_t* out_index, int64_t capacity,
                    int64_t* num_candidates, int device, void* stream) {
    return guarded([&] {
        dkd::check_not_null(shape, "yolo_decode", "shape");
        dkd::check_not_null(strides, "yolo_decode", "strides");
        dkd::YoloDecodeArgs a;
        a.head = head;
        a.batch = shape[0];
        a.channels = shape[1];
        a.height = shape[2];
        a.width = shape[3];
        for (int i = 0; i < 4; ++i) a.stride[i] = strides[i];
        a.anchors_n = num_anchors;
        a.anchors = anchors;
        a.net_w = net_w;
        a.net_h = net_h;
        a.scale_x_y = scale_x_y;
        a.new_coords = new_coords;
        a.thresh = thresh;
        a.letterbox_wh = letterbox_wh;
        a.out = out;
        a.out_index = out_index;
        a.capacity = capacity;
        a.num_candidates = num_candidates;
        a.device = device;
        a.stream = stream;
        dkd::yolo_decode(a);
    });
}

int dkd_kd_loss(const void* student, const void* teacher, const void* weight, const uint8_t* mask, int64_t outer,
                int64_t k, int64_t inner, int kind, double temperature, double beta, int dtype, void* loss, void* grad,
                int device, void* stream) {
    return guarded([&] {
        dkd::KdLossArgs a;
        a.student = student;
        a.teacher = teacher;
        a.weight = weight;
        a.mask = mask;
        a.outer = outer;
        a.k = k;
        a.inner = inner;
        a.kind = kind;
        a.temperature = temperature;
        a.beta = beta;
        a.dtype = dtype;
        a.loss = loss;
        a.grad = grad;
        a.device = device;
        a.stream = stream;
        dkd::kd_loss(a);
    });
}

}  // extern "C"
