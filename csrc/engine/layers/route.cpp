// [route]: the outputs of `layers` (negative = relative) concatenated on channels; with
// groups=G, group_id=g each input contributes its g-th channel slice (route_layer.c).
// One input without groups is the same buffer, one grouped input a channel-slice view of it
// (no copy either).  Several inputs without groups: producers that can (the Winograd
// convolutions) have written straight into their channel slice of this layer's output
// (Plan::concat_slot) and only the others are copied; otherwise a oneDNN concat of the
// inputs or of channel-slice views of them.  Validation as layers.py Route.
#include <map>

#include "engine/layers/util.h"
#ifdef DKD_ENGINE_CUDA
#include "engine/cuda/cuda_net.h"
#include "engine/cuda/kernels.h"
#endif

namespace dkd {
namespace engine {
namespace {

class Route : public Layer {
public:
    std::vector<int> srcs;
    int64_t groups = 1, group_id = 0;

    std::string describe() const override {
        std::string s;
        for (size_t i = 0; i < srcs.size(); ++i) s += (i ? " " : "") + std::to_string(srcs[i]);
        if (groups > 1) s += str(" ", group_id, "/", groups);
        return s;
    }
    std::vector<int> sources() const override { return srcs; }
    std::vector<int> concat_sources() const override {
        return groups == 1 && srcs.size() > 1 ? srcs : std::vector<int>{};
    }

    void plan_cpu(Plan& p) const override {
        using namespace dnnl;
        if (srcs.size() == 1 && groups == 1) {
            p.set_output(index, p.output(srcs[0]));
            return;
        }
        // A plain concat whose sources wrote into their slice (Plan::concat_slot): copy the rest.
        if (int whole = p.concat_output(index, srcs); whole >= 0) {
            p.set_output(index, whole);
            return;
        }
        std::vector<md_t> mds;
        std::vector<int> tids;
        for (int s : srcs) {
            int tid = p.output(s);
            if (p.desc(tid).data_type() != p.act_dt()) {
                md_t want = p.desc(tid);
                tid = p.as(tid, md_t(want.dims(), p.act_dt(), tag::nchw));
            }
            if (groups > 1) {
                memory::dims d = p.desc(tid).dims();
                int64_t c = d[1] / groups;
                memory::dims sub = {d[0], c, d[2], d[3]}, off = {0, c * group_id, 0, 0};
                md_t view;
                try {
                    view = p.desc(tid).submemory_desc(sub, off);
                } catch (const dnnl::error&) {  // a slice that cuts a channel block: go through nchw
                    tid = p.as(tid, md_t(d, p.act_dt(), tag::nchw));
                    view = p.desc(tid).submemory_desc(sub, off);
                }
                tid = p.add_view(tid, view);
            }
            if (srcs.size() == 1) {  // one grouped input: the slice view itself, no copy (the
                p.set_output(index, tid);  // Winograd convolution reads strided channels-last
                return;                    // input, other layers take it via Plan::as / dense)
            }
            mds.push_back(p.desc(tid));
            tids.push_back(tid);
        }
        md_t dst_md = p.any(out, p.act_dt());
        concat::primitive_desc pd(dst_md, 1, mds, p.eng, p.attr());
        int dst = p.add_tensor(pd.dst_desc());
        std::vector<std::pair<int, int>> args = {{DNNL_ARG_DST, dst}};
        for (size_t i = 0; i < tids.size(); ++i) args.emplace_back(DNNL_ARG_MULTIPLE_SRC + (int)i, tids[i]);
        p.add(concat(pd), pd.scratchpad_desc(), args);
        p.set_output(index, dst);
    }

#ifdef DKD_ENGINE_CUDA
    void forward_cuda(CudaContext& ctx) const override {
        if (srcs.size() == 1 && groups == 1) {
            ctx.alias_output(*this, ctx.output(srcs[0]));
            return;
        }
        float* y = ctx.alloc_output(*this);
        int64_t at = 0;
        for (int s : srcs) {
            const int64_t c = shape_c_.at(s), part = c / groups;
            cuda::copy_channels(ctx.output(s), ctx.batch, c, part * group_id, part, out.h * out.w, y, out.c, at, ctx.stream);
            at += part;
        }
    }
#endif
    std::map<int, int64_t> shape_c_;  // channels of each source layer
};

}  // namespace

std::unique_ptr<Layer> make_route(int index, const Shape& in, const Section& sec, const std::vector<Shape>& shapes) {
    auto l = std::make_unique<Route>();
    l->index = index, l->line = sec.line, l->kind = "route", l->in = in;
    std::vector<int64_t> layers = sec.get_ints("layers");
    if (layers.empty()) sec.error("[route] needs layers=", "layers");
    for (int64_t r : layers) l->srcs.push_back(resolve_layer(sec, "layers", r, index));
    l->groups = sec.get_int("groups", 1);
    l->group_id = sec.get_int("group_id", 0);
    sec.mark_used({"stopbackward"});
    if (l->groups < 1 || !(0 <= l->group_id && l->group_id < l->groups))
        sec.error(str("group_id=", l->group_id, " must lie in [0, groups=", l->groups, ")"), "group_id");
    const Shape& first = shapes[l->srcs[0]];
    int64_t c = 0;
    for (int s : l->srcs) {
        const Shape& sh = shapes[s];
        if (sh.h != first.h || sh.w != first.w)
            sec.error(str("route inputs differ in size: layer ", l->srcs[0], " is ", first.w, "x", first.h, ", layer ", s,
                          " is ", sh.w, "x", sh.h),
                      "layers");
        if (sh.c % l->groups) sec.error(str("groups=", l->groups, " does not divide the ", sh.c, " channels of layer ", s), "groups");
        c += sh.c / l->groups;
        l->shape_c_[s] = sh.c;
    }
    l->out = Shape{c, first.h, first.w};
    return l;
}

}  // namespace engine
}  // namespace dkd
