// A CPU execution plan: the layers' oneDNN primitives in order, over tensors whose buffers
// are laid out once in one arena (a tensor's bytes are reused after its last reader ran).
// Built for one batch size and thread count (oneDNN picks kernels and work splits for them).
#pragma once

#include <oneapi/dnnl/dnnl.hpp>

#include <functional>
#include <unordered_map>
#include <utility>
#include <vector>

#include "engine/net.h"

namespace dkd {
namespace engine {

using md_t = dnnl::memory::desc;
using dt = dnnl::memory::data_type;
using tag = dnnl::memory::format_tag;

class Plan {
public:
    Plan(const std::vector<std::unique_ptr<Layer>>& layers, const NetInfo& info, int64_t batch,
         Precision precision, int threads);

    const int64_t batch;
    const Precision precision;
    const int threads;
    dnnl::engine eng;
    dnnl::stream strm;

    // Data type of the activations between layers (f32, or bf16 in bf16 mode).
    dt act_dt() const { return precision == Precision::kBF16 ? dt::bf16 : dt::f32; }
    md_t any(const Shape& s, dt type) const;  // [batch, c, h, w] with format_tag::any
    md_t plain(const Shape& s, dt type) const;  // [batch, c, h, w] nchw

    // ---- tensors (ids) ----
    int add_tensor(const md_t& md);
    const md_t& desc(int tid) const { return tensors_[tid].md; }
    // A view of `base`'s buffer with another descriptor (a channel slice): no copy.
    int add_view(int base, const md_t& md);
    int input_of(const Layer& l) const;  // the previous layer's output (the network input for layer 0)
    int output(int layer) const { return outputs_[layer]; }
    void set_output(int layer, int tid) { outputs_[layer] = tid; }
    // `tid` in layout `want`: the same tensor when it already is, else a reordered copy.
    int as(int tid, const md_t& want);
    // `tid` dense: a strided view (a channel slice) is copied into a dense tensor of the same
    // dimension order (nhwc or nchw), any other tensor is returned as it is.  For
    // the layers whose kernels want dense inputs (pooling, upsample, shortcut).
    int dense(int tid);
    // In-place concatenation: the channel slice (a view of the [route]'s output, channels-last)
    // that layer `producer` may write its output into instead of a tensor of its own, or -1
    // when its output is not the first use of it in a plain concat (or the plan is not fp32).
    // The concat's tensor is made at the first such request; the route copies the sources that
    // did not write in place (concat_output).
    int concat_slot(int producer);
    // For the [route] `layer`: its output tensor when some source wrote in place, else -1
    // (then the route runs a oneDNN concat); copies the other sources into their slices.
    int concat_output(int layer, const std::vector<int>& srcs);
    // Keeps a tensor alive until the end of the run (the [yolo] heads).
    void keep(int tid) { tensors_[tid].keep = true; }
    // Data type a layer's output must have: f32 for the convolutions that feed a [yolo]
    // layer (precise heads in bf16 mode), else act_dt().
    dt out_dt(int layer) const { return f32_out_[layer] ? dt::f32 : act_dt(); }

    // ---- weights: memory owned by the plan, filled now ----
    dnnl::memory constant(const md_t& want, const float* data, const md_t& given);

    // ---- steps ----
    dnnl::primitive_attr attr() const;  // user scratchpad
    void add(const dnnl::primitive& prim, const md_t& scratchpad, std::vector<std::pair<int, int>> args,
             std::vector<std::pair<int, dnnl::memory>> constants = {});
    void add_fn(std::function<void(Plan&)> fn, std::vector<int> uses);

    void finalize();
    void run(const float* input);
    // Wall time of each layer's steps (its primitives, kernels and the reorders it asked for),
    // summed over the runs since the plan was built or the last reset_profile().
    const std::vector<double>& layer_ms() const { return layer_ms_; }
    int64_t profiled_runs() const { return profiled_runs_; }
    void reset_profile();
    void* data(int tid) const;  // after finalize
    std::vector<int> heads;     // plain nchw f32 head tensor of each [yolo] layer
    size_t arena_bytes() const { return arena_size_; }

private:
    struct Tensor {
        md_t md;
        size_t bytes = 0, offset = 0;
        int first = -1, last = -1;
        bool keep = false, external = false;
        int base = -1;  // views: the tensor whose buffer they read
        dnnl::memory mem;
    };
    struct Step {
        dnnl::primitive prim;
        bool has_prim = false;
        std::vector<std::pair<int, int>> args;
        std::vector<std::pair<int, dnnl::memory>> constants;
        std::function<void(Plan&)> fn;
        std::unordered_map<int, dnnl::memory> bound;
        int layer = -1;  // the layer that planned it
    };
    void touch(int tid);
    std::vector<Tensor> tensors_;
    std::vector<Step> steps_;
    std::vector<int> outputs_;
    struct Slot {
        int route = -1;
        int64_t offset = 0;  // first channel of the producer in the route's output
        int view = -1;       // the slice, once the producer asked for it
    };
    // A view of channels [offset, offset + channels) of the [route] `route`'s output tensor.
    int concat_slice(int route, int64_t offset, int64_t channels);
    std::vector<Slot> slots_;              // per producer layer
    std::vector<int> concat_tensor_;       // per route layer: its output tensor, once made
    std::vector<Shape> out_shapes_;        // per layer
    std::vector<bool> f32_out_;
    size_t scratch_size_ = 0, arena_size_ = 0;
    void* arena_ = nullptr;
    dnnl::memory scratch_;
    int input_tid_ = -1;
    int cur_layer_ = -1;
    std::vector<double> layer_ms_;
    int64_t profiled_runs_ = 0;

public:
    ~Plan();
};

// oneDNN post-ops for a Darknet activation; false when oneDNN has no such eltwise (then
// apply_activation runs after the primitive).
bool activation_post_ops(Act a, dnnl::post_ops& po);
void apply_activation(Plan& p, int tid, Act a);  // in place, a custom step

}  // namespace engine
}  // namespace dkd
