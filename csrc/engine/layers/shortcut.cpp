// [shortcut]: out = activation(previous + layer `from`) (shortcut_layer.c, same shapes only,
// no weights) as a oneDNN binary add with the activation as post-op.  Validation as layers.py Shortcut.
#include "engine/layers/util.h"
#ifdef DKD_ENGINE_CUDA
#include "engine/cuda/cuda_net.h"
#include "engine/cuda/kernels.h"
#endif

namespace dkd {
namespace engine {
namespace {

class Shortcut : public Layer {
public:
    int from = 0;
    Act act = Act::kLinear;

    std::string describe() const override { return str("Shortcut Layer: ", from); }
    std::vector<int> sources() const override { return {from}; }

    void plan_cpu(Plan& p) const override {
        using namespace dnnl;
        int a = p.dense(p.input_of(*this));
        md_t dst_md = p.desc(a);
        if (dst_md.data_type() != p.act_dt()) dst_md = md_t(dst_md.dims(), p.act_dt(), tag::nchw);
        a = p.as(a, dst_md);
        int b = p.as(p.output(from), dst_md);
        post_ops po;
        bool fused = activation_post_ops(act, po);
        primitive_attr attr = p.attr();
        attr.set_post_ops(po);
        binary::desc d(algorithm::binary_add, dst_md, dst_md, dst_md);
        binary::primitive_desc pd(d, attr, p.eng);
        int dst = p.add_tensor(pd.dst_desc());
        p.add(binary(pd), pd.scratchpad_desc(), {{DNNL_ARG_SRC_0, a}, {DNNL_ARG_SRC_1, b}, {DNNL_ARG_DST, dst}});
        if (!fused) apply_activation(p, dst, act);
        p.set_output(index, dst);
    }

#ifdef DKD_ENGINE_CUDA
    void forward_cuda(CudaContext& ctx) const override {
        cuda::add_act(ctx.input(*this), ctx.output(from), ctx.batch * in.size(), static_cast<int>(act),
                      ctx.alloc_output(*this), ctx.stream);
    }
#endif
};

}  // namespace

std::unique_ptr<Layer> make_shortcut(int index, const Shape& in, const Section& sec, const std::vector<Shape>& shapes) {
    auto l = std::make_unique<Shortcut>();
    l->index = index, l->line = sec.line, l->kind = "shortcut", l->in = in, l->out = in;
    std::vector<int64_t> frm = sec.get_ints("from");
    if (frm.empty()) sec.error("[shortcut] needs from=", "from");
    if (frm.size() != 1) sec.error("multi-input [shortcut] is not supported", "from");
    l->from = resolve_layer(sec, "from", frm[0], index);
    std::string wt = sec.get_str("weights_type", "none");
    if (wt != "none") sec.error(str("weights_type=", wt, " is not supported"), "weights_type");
    sec.mark_used({"weights_normalization"});
    l->act = parse_activation(sec, "linear");
    const Shape& other = shapes[l->from];
    if (other.c != in.c || other.h != in.h || other.w != in.w)
        sec.error(str("shortcut from layer ", l->from, " (", other.str(), ") to a different shape (", in.str(),
                      ") is not supported"),
                  "from");
    l->bflops = (double)in.c * in.h * in.w / 1e9;
    return l;
}

}  // namespace engine
}  // namespace dkd
