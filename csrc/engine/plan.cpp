#include "engine/plan.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>

#include "common/error.h"

namespace dkd {
namespace engine {
namespace {

constexpr size_t kAlign = 64;
size_t align_up(size_t v) { return (v + kAlign - 1) / kAlign * kAlign; }

}  // namespace

Plan::Plan(const std::vector<std::unique_ptr<Layer>>& layers, const NetInfo& info, int64_t batch_,
           Precision precision_, int threads_)
    : batch(batch_), precision(precision_), threads(threads_), eng(dnnl::engine::kind::cpu, 0), strm(eng) {
    omp_set_num_threads(threads);
    outputs_.assign(layers.size(), -1);
    f32_out_.assign(layers.size(), false);
    for (const auto& l : layers)
        if (l->kind == "yolo" && l->index > 0) f32_out_[l->index - 1] = true;
    slots_.assign(layers.size(), Slot{});
    concat_tensor_.assign(layers.size(), -1);
    for (const auto& l : layers) {
        out_shapes_.push_back(l->out);
        int64_t at = 0;
        for (int s : l->concat_sources()) {  // each producer's first concat only
            if (slots_[s].route < 0) slots_[s] = Slot{l->index, at, -1};
            at += layers[s]->out.c;
        }
    }
    Shape in{info.channels, info.height, info.width};
    Tensor t;
    t.md = plain(in, dt::f32);
    t.bytes = t.md.get_size();
    t.external = true;
    tensors_.push_back(t);
    input_tid_ = 0;
    for (const auto& l : layers) {
        cur_layer_ = l->index;
        l->plan_cpu(*this);
    }
    layer_ms_.assign(layers.size(), 0.0);
    finalize();
}

Plan::~Plan() { std::free(arena_); }

md_t Plan::any(const Shape& s, dt type) const { return md_t({batch, s.c, s.h, s.w}, type, tag::any); }
md_t Plan::plain(const Shape& s, dt type) const { return md_t({batch, s.c, s.h, s.w}, type, tag::nchw); }

int Plan::add_tensor(const md_t& md) {
    Tensor t;
    t.md = md;
    t.bytes = align_up(md.get_size());
    tensors_.push_back(t);
    return (int)tensors_.size() - 1;
}

int Plan::add_view(int base, const md_t& md) {
    while (tensors_[base].base >= 0) base = tensors_[base].base;
    Tensor t;
    t.md = md;
    t.base = base;
    tensors_.push_back(t);
    return (int)tensors_.size() - 1;
}

int Plan::concat_slot(int producer) {
    Slot& sl = slots_[producer];
    if (sl.route < 0 || act_dt() != dt::f32) return -1;
    int& whole = concat_tensor_[sl.route];
    const Shape& o = out_shapes_[sl.route];
    if (whole < 0) whole = add_tensor(md_t({batch, o.c, o.h, o.w}, dt::f32, tag::nhwc));
    sl.view = concat_slice(sl.route, sl.offset, out_shapes_[producer].c);
    return sl.view;
}

int Plan::concat_slice(int route, int64_t offset, int64_t channels) {
    const int whole = concat_tensor_[route];
    const Shape& o = out_shapes_[route];
    return add_view(whole, desc(whole).submemory_desc({batch, channels, o.h, o.w}, {0, offset, 0, 0}));
}

int Plan::concat_output(int layer, const std::vector<int>& srcs) {
    const int whole = concat_tensor_[layer];
    if (whole < 0) return -1;
    int64_t at = 0;
    for (int s : srcs) {
        const int64_t c = out_shapes_[s].c;
        const Slot& sl = slots_[s];
        if (!(sl.route == layer && sl.offset == at && sl.view >= 0 && outputs_[s] == sl.view)) {  // copy it into its slice
            int view = concat_slice(layer, at, c);
            dnnl::reorder::primitive_desc pd(eng, desc(outputs_[s]), eng, desc(view), attr());
            add(dnnl::reorder(pd), pd.scratchpad_desc(), {{DNNL_ARG_FROM, outputs_[s]}, {DNNL_ARG_TO, view}});
        }
        at += c;
    }
    return whole;
}

int Plan::input_of(const Layer& l) const { return l.index == 0 ? input_tid_ : outputs_[l.index - 1]; }

int Plan::dense(int tid) {
    if (tensors_[tid].base < 0) return tid;
    const dnnl_memory_desc_t& d = tensors_[tid].md.data;
    int64_t elems = 1;
    for (int i = 0; i < d.ndims; ++i) elems *= d.dims[i];
    if (d.offset0 == 0 && tensors_[tid].md.get_size() == (size_t)elems * dnnl_data_type_size(d.data_type))
        return tid;  // a view that covers its whole buffer (another shape of it)
    const bool cl = d.format_kind == dnnl_blocked && d.ndims == 4 && d.format_desc.blocking.strides[1] == 1;
    const md_t& md = tensors_[tid].md;
    return as(tid, md_t(md.dims(), md.data_type(), cl ? tag::nhwc : tag::nchw));
}

int Plan::as(int tid, const md_t& want) {
    if (tensors_[tid].md == want) return tid;
    int out = add_tensor(want);
    dnnl::reorder::primitive_desc pd(eng, tensors_[tid].md, eng, want, attr());
    add(dnnl::reorder(pd), pd.scratchpad_desc(), {{DNNL_ARG_FROM, tid}, {DNNL_ARG_TO, out}});
    return out;
}

dnnl::primitive_attr Plan::attr() const {
    dnnl::primitive_attr a;
    a.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    return a;
}

dnnl::memory Plan::constant(const md_t& want, const float* data, const md_t& given) {
    dnnl::memory src(given, eng, const_cast<float*>(data));
    dnnl::memory dst(want, eng);
    if (want == given) {
        std::memcpy(dst.get_data_handle(), data, given.get_size());
    } else {
        dnnl::reorder(src, dst).execute(strm, src, dst);
        strm.wait();
    }
    return dst;
}

void Plan::touch(int tid) {
    if (tensors_[tid].base >= 0) touch(tensors_[tid].base);
    Tensor& t = tensors_[tid];
    int step = (int)steps_.size();
    if (t.first < 0) t.first = step;
    t.last = step;
}

void Plan::add(const dnnl::primitive& prim, const md_t& scratchpad, std::vector<std::pair<int, int>> args,
               std::vector<std::pair<int, dnnl::memory>> constants) {
    scratch_size_ = std::max(scratch_size_, scratchpad.get_size());
    for (auto& a : args) touch(a.second);
    Step s;
    s.layer = cur_layer_;
    s.prim = prim;
    s.has_prim = true;
    s.args = std::move(args);
    s.constants = std::move(constants);
    steps_.push_back(std::move(s));
}

void Plan::add_fn(std::function<void(Plan&)> fn, std::vector<int> uses) {
    for (int tid : uses) touch(tid);
    Step s;
    s.layer = cur_layer_;
    s.fn = std::move(fn);
    steps_.push_back(std::move(s));
}

// Lifetimes -> offsets: largest tensors first, each at the lowest offset that overlaps no
// tensor alive during an overlapping range of steps (greedy first fit).
void Plan::finalize() {
    int nsteps = (int)steps_.size();
    std::vector<int> order;
    for (int i = 0; i < (int)tensors_.size(); ++i) {
        Tensor& t = tensors_[i];
        if (t.external || t.first < 0 || t.base >= 0) continue;
        if (t.keep) t.last = nsteps;
        order.push_back(i);
    }
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return tensors_[a].bytes > tensors_[b].bytes; });
    std::vector<int> placed;
    arena_size_ = 0;
    for (int i : order) {
        Tensor& t = tensors_[i];
        std::vector<std::pair<size_t, size_t>> busy;
        for (int j : placed) {
            const Tensor& u = tensors_[j];
            if (u.first <= t.last && t.first <= u.last) busy.emplace_back(u.offset, u.offset + u.bytes);
        }
        std::sort(busy.begin(), busy.end());
        size_t off = 0;
        for (auto& b : busy) {
            if (off + t.bytes <= b.first) break;
            off = std::max(off, b.second);
        }
        t.offset = off;
        arena_size_ = std::max(arena_size_, off + t.bytes);
        placed.push_back(i);
    }
    arena_ = std::aligned_alloc(kAlign, std::max<size_t>(align_up(arena_size_), kAlign));
    if (!arena_) throw std::bad_alloc();
    for (int i : order) {
        Tensor& t = tensors_[i];
        t.mem = dnnl::memory(t.md, eng, static_cast<char*>(arena_) + t.offset);
    }
    tensors_[input_tid_].mem = dnnl::memory(tensors_[input_tid_].md, eng, DNNL_MEMORY_NONE);
    for (auto& t : tensors_)
        if (t.base >= 0) {
            const Tensor& b = tensors_[t.base];
            void* ptr = b.external ? DNNL_MEMORY_NONE : static_cast<char*>(arena_) + b.offset;
            t.mem = dnnl::memory(t.md, eng, ptr);
        }
    if (scratch_size_) scratch_ = dnnl::memory(md_t({(int64_t)scratch_size_}, dt::u8, tag::a), eng);
    for (auto& s : steps_) {
        if (!s.has_prim) continue;
        for (auto& a : s.args) s.bound[a.first] = tensors_[a.second].mem;
        for (auto& c : s.constants) s.bound[c.first] = c.second;
        if (scratch_size_) s.bound[DNNL_ARG_SCRATCHPAD] = scratch_;
    }
}

void* Plan::data(int tid) const { return tensors_[tid].mem.get_data_handle(); }

void Plan::run(const float* input) {
    omp_set_num_threads(threads);
    tensors_[input_tid_].mem.set_data_handle(const_cast<float*>(input));
    for (auto& t : tensors_)  // views of the input (a channel slice of it, via an aliasing layer)
        if (t.base == input_tid_) t.mem.set_data_handle(const_cast<float*>(input));
    using clock = std::chrono::steady_clock;
    auto t0 = clock::now();
    for (auto& s : steps_) {
        if (s.has_prim) {
            s.prim.execute(strm, s.bound);
            strm.wait();  // a no-op on the CPU engine (in-order, synchronous); keeps the timing honest
        } else {
            s.fn(*this);
        }
        auto t1 = clock::now();
        if (s.layer >= 0) layer_ms_[s.layer] += std::chrono::duration<double, std::milli>(t1 - t0).count();
        t0 = t1;
    }
    ++profiled_runs_;
}

void Plan::reset_profile() {
    std::fill(layer_ms_.begin(), layer_ms_.end(), 0.0);
    profiled_runs_ = 0;
}

}  // namespace engine
}  // namespace dkd
