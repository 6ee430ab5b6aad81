// [avgpool]: global average over H x W (avgpool_layer.c), a oneDNN average pooling with the
// whole plane as window.  As layers.py AvgPool.
#include "engine/layers/util.h"
#ifdef DKD_ENGINE_CUDA
#include "engine/cuda/cuda_net.h"
#include "engine/cuda/kernels.h"
#endif

namespace dkd {
namespace engine {
namespace {

class AvgPool : public Layer {
public:
    void plan_cpu(Plan& p) const override {
        using namespace dnnl;
        int src = p.dense(p.input_of(*this));
        pooling_forward::desc d(prop_kind::forward_inference, algorithm::pooling_avg_exclude_padding, p.desc(src),
                                p.any(out, p.desc(src).data_type()), {1, 1}, {in.h, in.w}, {0, 0}, {0, 0});
        pooling_forward::primitive_desc pd(d, p.attr(), p.eng);
        int dst = p.add_tensor(pd.dst_desc());
        p.add(pooling_forward(pd), pd.scratchpad_desc(), {{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, dst}});
        p.set_output(index, dst);
    }
#ifdef DKD_ENGINE_CUDA
    void forward_cuda(CudaContext& ctx) const override {
        cuda::avgpool(ctx.input(*this), ctx.batch * in.c, in.h * in.w, ctx.alloc_output(*this), ctx.stream);
    }
#endif
};

}  // namespace

std::unique_ptr<Layer> make_avgpool(int index, const Shape& in, const Section& sec) {
    auto l = std::make_unique<AvgPool>();
    l->index = index, l->line = sec.line, l->kind = "avg", l->in = in;
    l->out = Shape{in.c, 1, 1};
    l->bflops = (double)in.c * in.h * in.w / 1e9;
    return l;
}

}  // namespace engine
}  // namespace dkd
