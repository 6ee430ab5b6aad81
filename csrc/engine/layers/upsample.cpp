// [upsample]: nearest-neighbour by `stride` (default 2), times `scale` (upsample_layer.c),
// a oneDNN nearest resampling (index floor(y/stride) for integer factors) and, for scale != 1,
// an in-place linear eltwise.  Validation as layers.py Upsample.
#include "engine/layers/util.h"
#ifdef DKD_ENGINE_CUDA
#include "engine/cuda/cuda_net.h"
#include "engine/cuda/kernels.h"
#endif

namespace dkd {
namespace engine {
namespace {

class Upsample : public Layer {
public:
    int64_t stride = 2;
    double scale = 1.0;

    std::string describe() const override { return std::string(14, ' ') + fmt_int(stride, 2) + "x"; }

    void plan_cpu(Plan& p) const override {
        using namespace dnnl;
        int src = p.dense(p.input_of(*this));
        int dst = src;
        if (stride > 1) {
            resampling_forward::desc d(prop_kind::forward_inference, algorithm::resampling_nearest, p.desc(src),
                                       p.any(out, p.desc(src).data_type()));
            resampling_forward::primitive_desc pd(d, p.attr(), p.eng);
            dst = p.add_tensor(pd.dst_desc());
            p.add(resampling_forward(pd), pd.scratchpad_desc(), {{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, dst}});
        }
        if (scale != 1.0) {
            if (dst == src) {  // stride 1: scale into a new buffer, the input may be read later
                int copy = p.add_tensor(p.desc(src));
                eltwise(p, src, copy);
                dst = copy;
            } else {
                eltwise(p, dst, dst);
            }
        }
        p.set_output(index, dst);
    }

#ifdef DKD_ENGINE_CUDA
    void forward_cuda(CudaContext& ctx) const override {
        if (stride == 1 && scale == 1.0) {
            ctx.alias_output(*this, ctx.input(*this));
            return;
        }
        cuda::upsample(ctx.input(*this), ctx.batch * in.c, in.h, in.w, stride, (float)scale, ctx.alloc_output(*this),
                       ctx.stream);
    }
#endif

    void eltwise(Plan& p, int src, int dst) const {
        using namespace dnnl;
        eltwise_forward::desc d(prop_kind::forward_inference, algorithm::eltwise_linear, p.desc(src), (float)scale, 0.f);
        eltwise_forward::primitive_desc pd(d, p.attr(), p.eng);
        p.add(eltwise_forward(pd), pd.scratchpad_desc(), {{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, dst}});
    }
};

}  // namespace

std::unique_ptr<Layer> make_upsample(int index, const Shape& in, const Section& sec) {
    auto l = std::make_unique<Upsample>();
    l->index = index, l->line = sec.line, l->kind = "upsample", l->in = in;
    l->stride = sec.get_int("stride", 2);
    l->scale = sec.get_float("scale", 1.0);
    if (l->stride < 1) sec.error("downsampling [upsample] (negative stride) is not supported", "stride");
    l->out = Shape{in.c, in.h * l->stride, in.w * l->stride};
    return l;
}

}  // namespace engine
}  // namespace dkd
