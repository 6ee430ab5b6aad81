// [maxpool]: Darknet's maxpool_layer.c: `padding` is the total padding (default size-1), the
// window starts at -(padding/2), out = (in + padding - size)/stride + 1; cells outside the
// image never win.  oneDNN max pooling with left padding padding/2 and right padding the rest
// (its padded cells are ignored, as Darknet's).  Validation as layers.py MaxPool.
#include "engine/layers/util.h"
#ifdef DKD_ENGINE_CUDA
#include "engine/cuda/cuda_net.h"
#include "engine/cuda/kernels.h"
#endif

namespace dkd {
namespace engine {
namespace {

class MaxPool : public Layer {
public:
    int64_t size = 1, sx = 1, sy = 1, padding = 0;

    std::string describe() const override {
        return std::string(5, ' ') + "       " + fmt_int(size, 2) + "x" + fmt_int(size, 2) + "/" + fmt_int(sx, 2);
    }

    void plan_cpu(Plan& p) const override {
        using namespace dnnl;
        int src = p.dense(p.input_of(*this));
        int64_t p0 = padding / 2, p1 = padding - p0;
        pooling_forward::desc d(prop_kind::forward_inference, algorithm::pooling_max, p.desc(src),
                                p.any(out, p.desc(src).data_type()), {sy, sx}, {size, size}, {p0, p0}, {p1, p1});
        pooling_forward::primitive_desc pd;
        try {
            pd = pooling_forward::primitive_desc(d, p.attr(), p.eng);
        } catch (const dnnl::error&) {
            cfg_fail_layer("oneDNN has no max pooling for this geometry (padding larger than the window?)");
        }
        int dst = p.add_tensor(pd.dst_desc());
        p.add(pooling_forward(pd), pd.scratchpad_desc(), {{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, dst}});
        p.set_output(index, dst);
    }

#ifdef DKD_ENGINE_CUDA
    void forward_cuda(CudaContext& ctx) const override {
        cuda::maxpool(ctx.input(*this), ctx.batch * in.c, in.h, in.w, size, sy, sx, padding, out.h, out.w,
                      ctx.alloc_output(*this), ctx.stream);
    }
#endif

    std::string cfg_path;
    [[noreturn]] void cfg_fail_layer(const std::string& msg) const {
        cfg_fail(cfg_path, line, str("layer ", index, " [maxpool]: ", msg));
    }
};

}  // namespace

std::unique_ptr<Layer> make_maxpool(int index, const Shape& in, const Section& sec) {
    auto l = std::make_unique<MaxPool>();
    l->index = index, l->line = sec.line, l->kind = "max", l->in = in, l->cfg_path = sec.path;
    int64_t stride = sec.get_int("stride", 1);
    int64_t sx = sec.get_int("stride_x", stride);
    int64_t sy = sec.get_int("stride_y", stride);
    int64_t size = sec.get_int("size", stride);
    int64_t padding = sec.get_int("padding", size - 1);
    for (const char* key : {"maxpool_depth", "antialiasing"})
        if (sec.get_int(key, 0)) sec.error(str(key, "=1 is not supported"), key);
    sec.mark_used({"out_channels", "maxpool_zero_nonmax"});
    if (size < 1 || sx < 1 || sy < 1 || padding < 0)
        sec.error(str("bad geometry: size=", size, " stride=", sx, "x", sy, " padding=", padding));
    int64_t out_h = floordiv(in.h + padding - size, sy) + 1;
    int64_t out_w = floordiv(in.w + padding - size, sx) + 1;
    if (out_h < 1 || out_w < 1)
        sec.error(str("output size ", out_w, "x", out_h, " from input ", in.w, "x", in.h, " is empty"));
    l->size = size, l->sx = sx, l->sy = sy, l->padding = padding;
    l->out = Shape{in.c, out_h, out_w};
    l->bflops = (double)size * size * in.c * out_h * out_w / 1e9;
    return l;
}

}  // namespace engine
}  // namespace dkd
