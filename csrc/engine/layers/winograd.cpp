// Winograd F(m x m, 3x3) convolution steps, m = 4 or 2 (see winograd.h).  Per image the
// output is cut into ceil(H/m) x ceil(W/m) tiles; T = batch x tiles; a tile reads an
// a x a input patch, a = m + 2, P = a^2 positions.  Three steps:
//   1. input transform: channels-last src -> V [P][T][C_in]   (our kernels, OpenMP over tiles)
//   2. batched matmul:  M[k] = V[k] U[k], k < P, U [P][C_in][C_out] = G g G^T (done at load,
//      in double, and reordered once to the layout oneDNN's matmul wants)
//   3. output transform: M -> channels-last dst, + bias, activation (leaky/relu/linear fused,
//      any other Darknet activation as oneDNN eltwise steps in place after it).
#include "engine/layers/winograd.h"

#include <omp.h>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <unordered_map>
#include <string>
#include <vector>

#include "common/isa.h"
#include "engine/plan.h"

namespace dkd {
namespace engine {
namespace {

constexpr int64_t kMinTiles = 40;  // below this the matmul is too thin to beat oneDNN's direct kernel
// Layers whose transformed filters fit this many bytes run tile block by tile block, each
// thread taking a block through input transform, matmul and output transform while it is
// in its L2 cache; larger filters run as three whole-layer passes (the filters read once).
constexpr int64_t kBlockedWeightBytes = int64_t(1) << 20;
constexpr int64_t kBlockBytes = 640 << 10;  // V + M of one block

// G (6x3) of F(4x4, 3x3) and (4x3) of F(2x2, 3x3).
const double kG4[6][3] = {{1.0 / 4, 0, 0},
                         {-1.0 / 6, -1.0 / 6, -1.0 / 6},
                         {-1.0 / 6, 1.0 / 6, -1.0 / 6},
                         {1.0 / 24, 1.0 / 12, 1.0 / 6},
                         {1.0 / 24, -1.0 / 12, 1.0 / 6},
                         {0, 0, 1}};
const double kG2[4][3] = {{1, 0, 0}, {0.5, 0.5, 0.5}, {0.5, -0.5, 0.5}, {0, 0, 1}};

int64_t ceil_div(int64_t v, int64_t m) { return (v + m - 1) / m; }

// Strides (in floats) of a 4-D f32 channels-last descriptor, or false.
bool channels_last(const md_t& md, int64_t s[4], int64_t* offset) {
    const dnnl_memory_desc_t& d = md.data;
    if (d.ndims != 4 || d.data_type != dnnl_f32 || d.format_kind != dnnl_blocked) return false;
    if (d.format_desc.blocking.inner_nblks != 0 || d.format_desc.blocking.strides[1] != 1) return false;
    for (int i = 0; i < 4; ++i) s[i] = d.format_desc.blocking.strides[i];
    *offset = d.offset0;
    return s[3] >= d.dims[1] && s[2] >= s[3] * d.dims[3] && s[0] >= s[2] * d.dims[2];
}

}  // namespace

int winograd_tile(const Plan& p, const Layer& l, const ConvSpec& c) {
    if (p.act_dt() != dt::f32 || c.size != 3 || c.sx != 1 || c.sy != 1 || c.dilation != 1 || c.groups != 1) return 0;
    if (l.in.c < 16 || c.n < 16) return 0;
    const char* env = std::getenv("DKD_WINOGRAD");
    const std::string mode = env ? env : "";
    if (mode == "0") return 0;
    if (mode == "1") return 4;
    if (mode == "2") return 2;
    // F(2x2) where F(4x4) has too few tiles (small maps at batch 1, e.g. 13x13: 16 tiles of 4x4
    // but 49 of 2x2); its 2.25x fewer multiplications than direct still pay there (measured:
    // `dkd bench --profile` on yolov4-tiny 416, docs/results.md).
    auto tiles = [&](int64_t m) { return p.batch * ceil_div(l.out.h, m) * ceil_div(l.out.w, m); };
    return tiles(4) >= kMinTiles ? 4 : tiles(2) >= kMinTiles ? 2 : 0;
}

int plan_winograd(Plan& p, const Layer& l, const ConvSpec& c, int m) {
    using namespace dnnl;
    const int64_t C = l.in.c, N = c.n, B = p.batch, H = l.in.h, W = l.in.w, OH = l.out.h, OW = l.out.w;
    const int64_t th = ceil_div(OH, m), tw = ceil_div(OW, m), T = B * th * tw, pad = c.padding;
    const int a = m + 2, P = a * a;
    const double(*G)[3] = m == 4 ? kG4 : kG2;

    int src = p.input_of(l);
    int64_t s[4], off = 0;
    if (!channels_last(p.desc(src), s, &off)) {
        src = p.as(src, md_t({B, C, H, W}, dt::f32, tag::nhwc));
        channels_last(p.desc(src), s, &off);
    }
    int dst = p.concat_slot(l.index);  // its slice of a [route] concat, or a tensor of its own
    if (dst < 0) dst = p.add_tensor(md_t({B, N, OH, OW}, dt::f32, tag::nhwc));
    int64_t d[4], doff = 0;
    channels_last(p.desc(dst), d, &doff);

    // U[k][ci][o] = (G g G^T)[k], k = a i + j.
    std::vector<float> u((size_t)P * C * N);
    for (int64_t o = 0; o < N; ++o)
        for (int64_t ci = 0; ci < C; ++ci) {
            const float* g = c.weights + (o * C + ci) * 9;
            double gg[6][3];  // G g
            for (int i = 0; i < a; ++i)
                for (int j = 0; j < 3; ++j) gg[i][j] = G[i][0] * g[j] + G[i][1] * g[3 + j] + G[i][2] * g[6 + j];
            for (int i = 0; i < a; ++i)
                for (int j = 0; j < a; ++j)
                    u[((size_t)(i * a + j) * C + ci) * N + o] =
                        (float)(gg[i][0] * G[j][0] + gg[i][1] * G[j][1] + gg[i][2] * G[j][2]);
        }
    md_t u_any({P, C, N}, dt::f32, tag::any), u_given({P, C, N}, dt::f32, tag::abc);

    auto in_tile = m == 4 ? DKD_ISA_SELECT(isa_base::wino_input_tile, isa_avx2::wino_input_tile, isa_avx512::wino_input_tile)
                          : DKD_ISA_SELECT(isa_base::wino2_input_tile, isa_avx2::wino2_input_tile, isa_avx512::wino2_input_tile);
    auto out_tile = m == 4 ? DKD_ISA_SELECT(isa_base::wino_output_tile, isa_avx2::wino_output_tile, isa_avx512::wino_output_tile)
                           : DKD_ISA_SELECT(isa_base::wino2_output_tile, isa_avx2::wino2_output_tile, isa_avx512::wino2_output_tile);
    const int64_t sb = s[0], sr = s[2], sp = s[3], db = d[0], dr = d[2], dp = d[3];
    WinoAct act = c.act == Act::kLeaky ? WinoAct::kLeaky : c.act == Act::kRelu ? WinoAct::kRelu : WinoAct::kLinear;
    const bool fused = c.act == Act::kLeaky || c.act == Act::kRelu || c.act == Act::kLinear;
    auto bias = std::make_shared<std::vector<float>>(c.bias, c.bias + N);
    // Tile t of the layer -> its input patch origin / output block.
    auto in_args = [=](const float* x, int64_t t, float* vrow, int64_t plane) {
        const int64_t b = t / (th * tw), r = t % (th * tw);
        return WinoInTile{x + b * sb, H, W, sr, sp, C, (r / tw) * m - pad, (r % tw) * m - pad, vrow, plane};
    };
    auto out_args = [=](const float* mrow, int64_t plane, int64_t t, float* y) {
        const int64_t b = t / (th * tw), r = t % (th * tw), oy = (r / tw) * m, ox = (r % tw) * m;
        return WinoOutTile{mrow, plane, N, bias->data(), act, y + b * db + oy * dr + ox * dp, dr, dp,
                           (int)std::min<int64_t>(m, OH - oy), (int)std::min<int64_t>(m, OW - ox)};
    };

    const int64_t tb = std::max<int64_t>(16, kBlockBytes / (P * 4 * (C + N)));
    if (P * C * N * 4 <= kBlockedWeightBytes && T >= 2 * tb) {
        // Per thread: its V and M block, a stream and a scratchpad; the one matmul primitive
        // runs on one thread inside the parallel region (oneDNN does not nest).
        md_t vb({P, tb, C}, dt::f32, tag::abc), mb({P, tb, N}, dt::f32, tag::abc);
        matmul::primitive_desc bpd(matmul::desc(vb, u_any, mb), p.attr(), p.eng);
        memory um = p.constant(bpd.weights_desc(), u.data(), u_given);
        struct Worker {
            std::vector<float> v, m;
            std::vector<uint8_t> scratch;
            dnnl::stream strm;
            std::unordered_map<int, memory> args;
        };
        auto workers = std::make_shared<std::vector<Worker>>(p.threads);
        const size_t sbytes = bpd.scratchpad_desc().get_size();
        for (Worker& wk : *workers) {
            wk.v.assign(P * tb * C, 0.f);
            wk.m.assign(P * tb * N, 0.f);
            wk.scratch.assign(std::max<size_t>(sbytes, 64), 0);
            wk.strm = dnnl::stream(p.eng);
            wk.args = {{DNNL_ARG_SRC, memory(vb, p.eng, wk.v.data())},
                       {DNNL_ARG_DST, memory(mb, p.eng, wk.m.data())},
                       {DNNL_ARG_WEIGHTS, um},
                       {DNNL_ARG_SCRATCHPAD, memory(bpd.scratchpad_desc(), p.eng, wk.scratch.data())}};
        }
        auto prim = std::make_shared<matmul>(bpd);
        const int64_t blocks = (T + tb - 1) / tb;
        p.add_fn(
            [=](Plan& pl) {
                const float* x = static_cast<const float*>(pl.data(src)) + off;
                float* y = static_cast<float*>(pl.data(dst)) + doff;
#pragma omp parallel num_threads(pl.threads)
                {
                    Worker& wk = (*workers)[omp_get_thread_num()];
#pragma omp for schedule(dynamic, 1)
                    for (int64_t k = 0; k < blocks; ++k) {
                        const int64_t t0 = k * tb, n = std::min(tb, T - t0);
                        for (int64_t i = 0; i < n; ++i) in_tile(in_args(x, t0 + i, wk.v.data() + i * C, tb * C));
                        prim->execute(wk.strm, wk.args);
                        wk.strm.wait();
                        for (int64_t i = 0; i < n; ++i) out_tile(out_args(wk.m.data() + i * N, tb * N, t0 + i, y));
                    }
                }
            },
            {src, dst});
    } else {  // three passes over the whole layer: V and M in the arena
        int v = p.add_tensor(md_t({P, T, C}, dt::f32, tag::abc));
        int mt = p.add_tensor(md_t({P, T, N}, dt::f32, tag::abc));
        matmul::primitive_desc pd(matmul::desc(p.desc(v), u_any, p.desc(mt)), p.attr(), p.eng);
        memory um = p.constant(pd.weights_desc(), u.data(), u_given);
        p.add_fn(
            [=](Plan& pl) {
                const float* x = static_cast<const float*>(pl.data(src)) + off;
                float* vd = static_cast<float*>(pl.data(v));
#pragma omp parallel for schedule(static)
                for (int64_t t = 0; t < T; ++t) in_tile(in_args(x, t, vd + t * C, T * C));
            },
            {src, v});
        p.add(matmul(pd), pd.scratchpad_desc(), {{DNNL_ARG_SRC, v}, {DNNL_ARG_DST, mt}}, {{DNNL_ARG_WEIGHTS, um}});
        p.add_fn(
            [=](Plan& pl) {
                const float* md = static_cast<const float*>(pl.data(mt));
                float* y = static_cast<float*>(pl.data(dst)) + doff;
#pragma omp parallel for schedule(static)
                for (int64_t t = 0; t < T; ++t) out_tile(out_args(md + t * N, T * N, t, y));
            },
            {mt, dst});
    }
    if (!fused) {
        post_ops po;
        if (activation_post_ops(c.act, po)) {
            for (int i = 0; i < po.len(); ++i) {
                float scale, alpha, beta;
                algorithm alg;
                po.get_params_eltwise(i, scale, alg, alpha, beta);
                eltwise_forward::primitive_desc ep(
                    eltwise_forward::desc(prop_kind::forward_inference, alg, p.desc(dst), alpha, beta), p.attr(), p.eng);
                p.add(eltwise_forward(ep), ep.scratchpad_desc(), {{DNNL_ARG_SRC, dst}, {DNNL_ARG_DST, dst}});
            }
        } else {
            apply_activation(p, dst, c.act);
        }
    }
    return dst;
}

}  // namespace engine
}  // namespace dkd
