// darknet_kd._C's engine functions (the dkd_net_* C API), used by darknet_kd/engine.py.
// Like module.cpp they call the C API with raw pointers; a failed call raises
// darknet_kd._C.Error(status, message).  Registered from module.cpp (register_engine).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <string>
#include <vector>

#include "dkd/dkd.h"

namespace py = pybind11;

namespace {

py::object g_error_type;

void check(int status) {
    if (status != DKD_OK) {
        py::tuple args = py::make_tuple(status, std::string(dkd_last_error()));
        PyErr_SetObject(g_error_type.ptr(), args.ptr());
        throw py::error_already_set();
    }
}

dkd_net* net_of(uintptr_t h) { return reinterpret_cast<dkd_net*>(h); }

}  // namespace

void register_engine(py::module_& m) {
    g_error_type = m.attr("Error");
    m.def("cpu_has_bf16", [] { return dkd_cpu_has_bf16() != 0; });
    m.def(
        "net_load",
        [](const std::string& cfg, py::object weights, int32_t width, int32_t height, int precision, int device) {
            std::string w = weights.is_none() ? std::string() : weights.cast<std::string>();
            dkd_net* net = nullptr;
            int st;
            {
                py::gil_scoped_release nogil;
                st = dkd_net_load(cfg.c_str(), weights.is_none() ? nullptr : w.c_str(), width, height, precision,
                                  device, &net);
            }
            check(st);
            return reinterpret_cast<uintptr_t>(net);
        },
        "dkd_net_load; returns the handle");
    m.def("net_free", [](uintptr_t h) { check(dkd_net_free(net_of(h))); });
    m.def("net_describe", [](uintptr_t h) {
        dkd_net_desc d;
        check(dkd_net_describe(net_of(h), &d));
        py::dict r;
        r["width"] = d.width;
        r["height"] = d.height;
        r["channels"] = d.channels;
        r["classes"] = d.classes;
        r["rows"] = d.rows;
        r["precision"] = d.precision == DKD_PRECISION_BF16 ? "bf16" : "fp32";
        r["device"] = d.device == DKD_DEVICE_CUDA ? "cuda" : "cpu";
        r["num_layers"] = d.num_layers;
        r["num_yolo"] = d.num_yolo;
        r["letter_box"] = d.letter_box;
        r["threads"] = d.threads;
        r["bflops"] = d.bflops;
        r["parameters"] = d.parameters;
        return r;
    });
    m.def("net_set_threads", [](uintptr_t h, int n) { check(dkd_net_set_threads(net_of(h), n)); });
    m.def("net_forward", [](uintptr_t h, uintptr_t input, int64_t batch, uintptr_t output) {
        int st;
        {
            py::gil_scoped_release nogil;
            st = dkd_net_forward(net_of(h), reinterpret_cast<const float*>(input), batch,
                                 reinterpret_cast<float*>(output));
        }
        check(st);
    });
    m.def("net_head", [](uintptr_t h, int32_t i) {
        const float* data = nullptr;
        int64_t shape[4];
        check(dkd_net_head(net_of(h), i, &data, shape));
        return py::make_tuple(reinterpret_cast<uintptr_t>(data), py::make_tuple(shape[0], shape[1], shape[2], shape[3]));
    });
    m.def("net_detect", [](uintptr_t h, uintptr_t rgb, int32_t w, int32_t hgt, int64_t stride, float thresh, float nms,
                           int letterbox) {
        std::vector<dkd_detection> dets(256);
        int64_t count = 0;
        int st;
        {
            py::gil_scoped_release nogil;
            st = dkd_net_detect(net_of(h), reinterpret_cast<const uint8_t*>(rgb), w, hgt, stride, thresh, nms,
                                letterbox, dets.data(), (int64_t)dets.size(), &count);
            if (st == DKD_OK && count > (int64_t)dets.size()) {  // rare: many objects, run again with room
                dets.resize(count);
                st = dkd_net_detect(net_of(h), reinterpret_cast<const uint8_t*>(rgb), w, hgt, stride, thresh, nms,
                                    letterbox, dets.data(), (int64_t)dets.size(), &count);
            }
        }
        check(st);
        py::list out;
        for (int64_t i = 0; i < count; ++i) {
            const auto& d = dets[i];
            out.append(py::make_tuple(d.class_id, d.prob, py::make_tuple(d.x, d.y, d.w, d.h), d.box));
        }
        return out;
    });
    m.def("net_text", [](uintptr_t h, int what) {
        size_t len = 0;
        check(dkd_net_text(net_of(h), what, nullptr, 0, &len));
        std::string buf(len + 1, '\0');
        check(dkd_net_text(net_of(h), what, buf.data(), buf.size(), &len));
        buf.resize(len);
        return buf;
    });
    m.attr("PRECISION_FP32") = static_cast<int>(DKD_PRECISION_FP32);
    m.attr("PRECISION_BF16") = static_cast<int>(DKD_PRECISION_BF16);
    m.attr("NET_TEXT_LAYERS") = static_cast<int>(DKD_NET_TEXT_LAYERS);
    m.attr("NET_TEXT_WARNINGS") = static_cast<int>(DKD_NET_TEXT_WARNINGS);
    m.attr("NET_TEXT_PROFILE") = static_cast<int>(DKD_NET_TEXT_PROFILE);
    m.attr("ERR_CFG") = static_cast<int>(DKD_ERR_CFG);
    m.attr("ERR_WEIGHTS") = static_cast<int>(DKD_ERR_WEIGHTS);
    m.attr("ERR_IO") = static_cast<int>(DKD_ERR_IO);
}
