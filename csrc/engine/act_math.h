// Darknet's activations (src/activations.c, darknet_kd/model/layers.py ACTIVATIONS) as one
// scalar formula for the host and CUDA kernels.  Codes are engine::Act's values.
#pragma once

#include <cmath>

#if defined(__CUDACC__)
#define DKD_ACT_HD __host__ __device__
#else
#define DKD_ACT_HD
#endif

namespace dkd {
namespace engine {

DKD_ACT_HD inline float activate_code(int a, float x) {
    switch (a) {
        case 0: return x;                                       // linear
        case 1: return x > 0 ? x : 0.1f * x;                    // leaky
        case 2: return x > 0 ? x : 0.f;                         // relu
        case 3: return fminf(fmaxf(x, 0.f), 6.f);               // relu6
        case 4: return 1.f / (1.f + expf(-x));                  // logistic
        case 5: return tanhf(x);                                // tanh
        case 6: {                                               // mish, softplus thresholds 20 / -20
            float sp = x > 20 ? x : (x < -20 ? expf(x) : log1pf(expf(x)));
            return x * tanhf(sp);
        }
        case 7: return x > 0 ? x : (x > -2 ? x * x / 2 + x : 0.f);  // hard_mish
        case 8: return x / (1.f + expf(-x));                         // swish
        case 9: return x > 0 ? x : expm1f(x);                        // elu
        case 10: return 1.0507009873554805f * (x > 0 ? x : 1.6732632423543772f * expm1f(x));  // selu
        case 11: return 0.5f * x * (1 + tanhf(0.797885f * x + 0.035677f * x * x * x));        // gelu
        case 12: return x > 0 ? x : 0.01f * x;                                                 // relie
        case 13: return fminf(fmaxf(x, -1.f), 1.f);                                            // hardtan
        case 14: return x < 0 ? 0.001f * x : (x > 1 ? 0.001f * (x - 1) + 1 : x);               // lhtan
        case 15: return 2.f / (1.f + expf(-x)) - 1;                                            // loggy
    }
    return x;
}

}  // namespace engine
}  // namespace dkd
