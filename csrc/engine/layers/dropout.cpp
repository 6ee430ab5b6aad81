// [dropout]: identity at inference (Darknet scales only in training); the same buffer.
// Validation as layers.py Dropout.
#include "engine/layers/util.h"
#ifdef DKD_ENGINE_CUDA
#include "engine/cuda/cuda_net.h"
#include "engine/cuda/kernels.h"
#endif

namespace dkd {
namespace engine {
namespace {

class Dropout : public Layer {
public:
    double prob = 0.2;
    std::string describe() const override {
        char buf[64];
        std::snprintf(buf, sizeof buf, "p = %.2f", prob);
        return buf;
    }
    void plan_cpu(Plan& p) const override { p.set_output(index, p.input_of(*this)); }
#ifdef DKD_ENGINE_CUDA
    void forward_cuda(CudaContext& ctx) const override { ctx.alias_output(*this, ctx.input(*this)); }
#endif
};

}  // namespace

std::unique_ptr<Layer> make_dropout(int index, const Shape& in, const Section& sec) {
    auto l = std::make_unique<Dropout>();
    l->index = index, l->line = sec.line, l->kind = "dropout", l->in = in, l->out = in;
    l->prob = sec.get_float("probability", 0.2);
    if (sec.get_int("dropblock", 0)) sec.error("dropblock=1 is not supported", "dropblock");
    sec.mark_used({"dropblock_size_rel", "dropblock_size_abs"});
    if (!(0 <= l->prob && l->prob < 1)) sec.error(str("probability=", py_float(l->prob), " must lie in [0, 1)"), "probability");
    return l;
}

}  // namespace engine
}  // namespace dkd
