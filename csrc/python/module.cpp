// darknet_kd._C: the pybind11 view of libdkd.  It calls the C API (dkd/dkd.h) with the raw
// pointers that darknet_kd/ops.py takes from tensors (tensor.data_ptr()), so Python, cffi
// and the CLI share one implementation and one set of argument checks.  A failed call
// raises darknet_kd._C.Error(status, message); ops.py turns it into a DarknetKDError.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "dkd/dkd.h"

namespace py = pybind11;

void register_engine(py::module_& m);  // engine.cpp: the dkd_net_* functions

namespace {

struct StatusError {
    int status;
    std::string message;
};

PyObject* g_error = nullptr;

void check(int status) {
    if (status != DKD_OK) throw StatusError{status, dkd_last_error()};
}

template <typename T>
T* ptr(uintptr_t p) {
    return reinterpret_cast<T*>(p);
}

}  // namespace

PYBIND11_MODULE(_C, m) {
    m.doc() = "darknet-kd C++/CUDA core (libdkd) — use darknet_kd.ops, not this module directly";
    g_error = PyErr_NewExceptionWithDoc("darknet_kd._C.Error", "libdkd call failed: args (status, message)",
                                        PyExc_RuntimeError, nullptr);
    m.attr("Error") = py::handle(g_error);
    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const StatusError& e) {
            py::tuple args = py::make_tuple(e.status, e.message);
            PyErr_SetObject(g_error, args.ptr());
        }
    });

    m.def("version", &dkd_version);
    m.def("version_string", [] { return std::string(dkd_version_string()); });
    m.def("status_name", [](int s) { return std::string(dkd_status_name(s)); });
    m.def("cuda_compiled", [] { return dkd_cuda_compiled() != 0; });
    m.def("cuda_device_count", &dkd_cuda_device_count);
    m.def("cpu_isa", [] { return std::string(dkd_cpu_isa()); });
    m.def("set_num_threads", [](int n) { check(dkd_set_num_threads(n)); });
    m.def("get_num_threads", &dkd_get_num_threads);

    m.def(
        "nms",
        [](uintptr_t boxes, uintptr_t scores, uintptr_t batch, int64_t n, int64_t classes, int64_t images,
           float iou_thresh, float score_thresh, int kind, float beta, int64_t max_det, uintptr_t keep, int device,
           uintptr_t stream) {
            int st;
            {
                py::gil_scoped_release nogil;
                st = dkd_nms(ptr<const float>(boxes), ptr<const float>(scores), ptr<const int64_t>(batch), n, classes,
                             images, iou_thresh, score_thresh, kind, beta, max_det, ptr<uint8_t>(keep), device,
                             ptr<void>(stream));
            }
            check(st);
        },
        "dkd_nms (see dkd/dkd.h)");

    m.def(
        "yolo_decode",
        [](uintptr_t head, int64_t b, int64_t c, int64_t h, int64_t w, int64_t sb, int64_t sc, int64_t sh, int64_t sw,
           int64_t num_anchors, uintptr_t anchors, int32_t net_w, int32_t net_h, double scale_x_y, int new_coords,
           float thresh, uintptr_t letterbox_wh, uintptr_t out, uintptr_t out_index, int64_t capacity, int device,
           uintptr_t stream) {
            const int64_t shape[4] = {b, c, h, w}, strides[4] = {sb, sc, sh, sw};
            int64_t count = 0;
            int st;
            {
                py::gil_scoped_release nogil;
                st = dkd_yolo_decode(ptr<const float>(head), shape, strides, num_anchors, ptr<const float>(anchors),
                                     net_w, net_h, scale_x_y, new_coords, thresh, ptr<const int32_t>(letterbox_wh),
                                     ptr<float>(out), ptr<int64_t>(out_index), capacity, &count, device,
                                     ptr<void>(stream));
            }
            check(st);
            return count;
        },
        "dkd_yolo_decode (see dkd/dkd.h); returns the number of candidates");

    m.def(
        "kd_loss",
        [](uintptr_t student, uintptr_t teacher, uintptr_t weight, uintptr_t mask, int64_t outer, int64_t k,
           int64_t inner, int kind, double temperature, double beta, int dtype, uintptr_t loss, uintptr_t grad,
           int device, uintptr_t stream) {
            int st;
            {
                py::gil_scoped_release nogil;
                st = dkd_kd_loss(ptr<const void>(student), ptr<const void>(teacher), ptr<const void>(weight),
                                 ptr<const uint8_t>(mask), outer, k, inner, kind, temperature, beta, dtype,
                                 ptr<void>(loss), ptr<void>(grad), device, ptr<void>(stream));
            }
            check(st);
        },
        "dkd_kd_loss (see dkd/dkd.h)");

    m.attr("NMS_IOU") = static_cast<int>(DKD_NMS_IOU);
    m.attr("NMS_GREEDY_DIOU") = static_cast<int>(DKD_NMS_GREEDY_DIOU);
    m.attr("NMS_DIOU") = static_cast<int>(DKD_NMS_DIOU);
    m.attr("KD_KL") = static_cast<int>(DKD_KD_KL);
    m.attr("KD_QFL") = static_cast<int>(DKD_KD_QFL);
    m.attr("FLOAT32") = static_cast<int>(DKD_FLOAT32);
    m.attr("FLOAT64") = static_cast<int>(DKD_FLOAT64);
    m.attr("DEVICE_CPU") = static_cast<int>(DKD_DEVICE_CPU);
    m.attr("DEVICE_CUDA") = static_cast<int>(DKD_DEVICE_CUDA);
    register_engine(m);
}
