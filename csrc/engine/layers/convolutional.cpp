// [convolutional]: convolution, batch-norm folded into the weights and bias (Darknet's
// network.c:fuse_conv_batchnorm, in double), activation fused as a oneDNN post-op.
// Validation and geometry as darknet_kd/model/layers.py Convolutional (parser.c:parse_convolutional):
// pad=1 means padding=size/2, out = (in + 2*padding - size)/stride + 1 (floored), groups as torch.
#include <cmath>

#include "engine/layers/util.h"
#include "engine/layers/winograd.h"
#ifdef DKD_ENGINE_CUDA
#include "engine/cuda/cuda_net.h"
#include "engine/cuda/kernels.h"
#endif

namespace dkd {
namespace engine {
namespace {

constexpr int64_t kMaxWeights = int64_t(1) << 28;  // a single conv above this (1 GiB of fp32) is a typo

class Convolutional : public Layer {
public:
    int64_t n = 1, size = 1, sx = 1, sy = 1, dilation = 1, padding = 0, groups = 1;
    bool bn = false;
    Act act = Act::kLogistic;
    std::vector<float> weights, bias;  // BN folded: [n][c/groups][size][size], [n]

    std::string describe() const override {
        std::string g = groups > 1 ? str(" ", groups, "/", groups) : "";
        std::string s = sx == sy ? fmt_int(sx, 2) : str(sx, "x", sy);
        return fmt_int(out.c, 5) + pad_left(g, 5) + "  " + fmt_int(size, 2) + " x" + fmt_int(size, 2) + "/" + s;
    }

    int64_t per_filter() const { return (in.c / groups) * size * size; }
    int64_t num_weights() const override { return (bn ? 4 * n : n) + n * per_filter(); }
    int64_t num_parameters() const override { return (bn ? 2 * n : n) + n * per_filter(); }

    // Darknet order: biases[n], (scales, rolling_mean, rolling_variance)[n] if BN, weights.
    void set_weights(const float* d) override {
        const float* b = d;
        const float* w = d + (bn ? 4 * n : n);
        int64_t k = per_filter();
        weights.assign(w, w + n * k);
        bias.assign(b, b + n);
        if (!bn) return;
        const float *scales = d + n, *mean = d + 2 * n, *var = d + 3 * n;
        for (int64_t f = 0; f < n; ++f) {
            double pre = (double)scales[f] / std::sqrt((double)var[f] + .00001);
            bias[f] = (float)((double)b[f] - (double)scales[f] * mean[f] / std::sqrt((double)var[f] + .00001));
            for (int64_t i = 0; i < k; ++i) weights[f * k + i] = (float)(weights[f * k + i] * pre);
        }
    }

    void plan_cpu(Plan& p) const override {
        using namespace dnnl;
        std::vector<float> zeros;
        const float* w = weights.data();
        const float* b = bias.data();
        if (weights.empty()) {  // no .weights loaded: zeros (e.g. `dkd info`, benchmarks of the graph)
            zeros.assign(n * per_filter(), 0.f);
            w = b = zeros.data();
        }
        const ConvSpec spec{n, size, sx, sy, dilation, padding, groups, act, w, b};
        if (int m = winograd_tile(p, *this, spec)) {
            p.set_output(index, plan_winograd(p, *this, spec, m));
            return;
        }
        const int64_t pd_ = padding * dilation;
        md_t src_md = p.any(in, p.act_dt());
        md_t dst_md = p.any(out, p.out_dt(index));
        memory::dims wdims = groups > 1 ? memory::dims{groups, n / groups, in.c / groups, size, size}
                                        : memory::dims{n, in.c, size, size};
        md_t w_md(wdims, p.act_dt(), tag::any);
        md_t w_given(wdims, dt::f32, groups > 1 ? tag::goihw : tag::oihw);
        md_t b_md({n}, dt::f32, tag::a);
        post_ops po;
        bool fused = activation_post_ops(act, po);
        primitive_attr attr = p.attr();
        attr.set_post_ops(po);
        convolution_forward::desc d(prop_kind::forward_inference, algorithm::convolution_direct, src_md, w_md, b_md,
                                    dst_md, {sy, sx}, {dilation - 1, dilation - 1}, {pd_, pd_}, {pd_, pd_});
        convolution_forward::primitive_desc pd(d, attr, p.eng);
        int src = p.as(p.input_of(*this), pd.src_desc());
        int dst = p.add_tensor(pd.dst_desc());
        memory wm = p.constant(pd.weights_desc(), w, w_given);
        memory bm = p.constant(b_md, b, b_md);
        p.add(convolution_forward(pd), pd.scratchpad_desc(), {{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, dst}},
              {{DNNL_ARG_WEIGHTS, wm}, {DNNL_ARG_BIAS, bm}});
        if (!fused) apply_activation(p, dst, act);
        p.set_output(index, dst);
    }

#ifdef DKD_ENGINE_CUDA
    // im2col + SGEMM per image and group (Darknet's forward_convolutional_layer_gpu without
    // cuDNN), then bias + activation.
    void forward_cuda(CudaContext& ctx) const override {
        const float* x = ctx.input(*this);
        float* y = ctx.alloc_output(*this);
        const int64_t cg = in.c / groups, m = n / groups, k = cg * size * size, hw = out.h * out.w;
        const float* w = ctx.constant(*this, 0, weights, n * per_filter());
        const float* b = ctx.constant(*this, 1, bias, n);
        const bool direct = size == 1 && sx == 1 && sy == 1 && padding == 0;
        float* col = direct ? nullptr : ctx.workspace(k * hw);
        for (int64_t i = 0; i < ctx.batch; ++i)
            for (int64_t g = 0; g < groups; ++g) {
                const float* im = x + (i * in.c + g * cg) * in.h * in.w;
                if (!direct) cuda::im2col(im, cg, in.h, in.w, size, sy, sx, padding, dilation, out.h, out.w, col, ctx.stream);
                cuda::gemm(ctx.cublas, m, hw, k, w + g * m * k, direct ? im : col, y + (i * n + g * m) * hw);
            }
        cuda::bias_act(y, b, ctx.batch, n, hw, static_cast<int>(act), ctx.stream);
    }
#endif
};

}  // namespace

std::unique_ptr<Layer> make_convolutional(int index, const Shape& in, const Section& sec) {
    auto l = std::make_unique<Convolutional>();
    l->index = index;
    l->line = sec.line;
    l->kind = "conv";
    l->in = in;
    int64_t n = sec.get_int("filters", 1);
    int64_t size = sec.get_int("size", 1);
    int64_t stride = sec.get_int("stride", 1);
    int64_t stride_x = sec.get_int("stride_x", -1);
    int64_t stride_y = sec.get_int("stride_y", -1);
    int64_t sx = stride_x >= 1 ? stride_x : stride;
    int64_t sy = stride_y >= 1 ? stride_y : stride;
    int64_t dilation = sec.get_int("dilation", 1);
    int64_t pad = sec.get_int("pad", 0);
    int64_t padding = sec.get_int("padding", 0);
    if (pad) padding = floordiv(size, 2);
    int64_t groups = sec.get_int("groups", 1);
    bool bn = sec.get_bool("batch_normalize", false);
    l->act = parse_activation(sec, "logistic");
    const std::pair<const char*, const char*> unsupported[] = {
        {"xnor", "XNOR (binary) convolutions"}, {"binary", "binary weights"}, {"share_index", "shared weights"},
        {"flipped", "flipped weights"},         {"antialiasing", "antialiasing"}, {"deform", "deformable convolution"},
        {"coordconv", "coordconv"},             {"assisted_excitation", "assisted excitation"}};
    for (const auto& u : unsupported)
        if (sec.get_int(u.first, 0)) sec.error(str(u.second, " (", u.first, "=1) are not supported"), u.first);
    sec.mark_used({"stopbackward", "train_only_bn", "dontload", "dontloadscales", "learning_rate", "sway", "rotate",
                   "stretch", "stretch_sway", "angle", "grad_centr", "cbn"});
    if (n < 1 || size < 1 || sx < 1 || sy < 1 || groups < 1 || dilation < 1 || padding < 0)
        sec.error(str("bad geometry: filters=", n, " size=", size, " stride=", sx, "x", sy, " groups=", groups,
                      " dilation=", dilation, " padding=", padding));
    int64_t c = in.c;
    if ((long double)floordiv(c, std::max<int64_t>(groups, 1)) * n * size * size > (long double)kMaxWeights)
        sec.error(str("filters=", n, " x size=", size, "x", size, " x ", floordiv(c, groups),
                      " input channels is more than 268,435,456 weights: refusing to allocate"));
    if (c % groups || n % groups)
        sec.error(str("groups=", groups, " must divide input channels ", c, " and filters ", n), "groups");
    int64_t out_h = floordiv(in.h + 2 * padding - size, sy) + 1;
    int64_t out_w = floordiv(in.w + 2 * padding - size, sx) + 1;
    if (out_h < 1 || out_w < 1)
        sec.error(str("output size ", out_w, "x", out_h, " from input ", in.w, "x", in.h, " is empty"));
    // torch/oneDNN output size with dilation: (in + 2*p*d - d*(k-1) - 1)/s + 1
    if (dilation > 1) {
        int64_t th = floordiv(in.h + 2 * padding * dilation - dilation * (size - 1) - 1, sy) + 1;
        int64_t tw = floordiv(in.w + 2 * padding * dilation - dilation * (size - 1) - 1, sx) + 1;
        if (th != out_h || tw != out_w)
            sec.error(str("dilation=", dilation, " with size=", size, " padding=", padding,
                          " gives a ", tw, "x", th, " output, not Darknet's ", out_w, "x", out_h, ": not supported"),
                      "dilation");
    }
    l->n = n, l->size = size, l->sx = sx, l->sy = sy, l->dilation = dilation, l->padding = padding;
    l->groups = groups, l->bn = bn;
    l->out = Shape{n, out_h, out_w};
    l->bflops = 2.0 * (double)(c / groups) * n * size * size * out_h * out_w / 1e9;
    return l;
}

}  // namespace engine
}  // namespace dkd
