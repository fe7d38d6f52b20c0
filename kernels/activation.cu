// Feed-forward activations and their derivatives, computed in double and rounded once like
// the CPU oracle. `kind`: 0 gelu (erf), 1 gelu_tanh, 2 quick_gelu, 3 tanh (Activation order).
#include "common.cuh"

#define SQRT_2_OVER_PI 0.7978845608028654
#define QUICK_GELU_ALPHA 1.702
#define INV_SQRT_2 0.7071067811865476
#define INV_SQRT_2PI 0.3989422804014327

__device__ __forceinline__ double sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }

__device__ double act_forward(int kind, double x) {
    switch (kind) {
        case 0: return 0.5 * x * (1.0 + erf(x * INV_SQRT_2));
        case 1: return 0.5 * x * (1.0 + tanh(SQRT_2_OVER_PI * (x + 0.044715 * x * x * x)));
        case 2: return x * sigmoid(QUICK_GELU_ALPHA * x);
        default: return tanh(x);
    }
}

__device__ double act_derivative(int kind, double x) {
    switch (kind) {
        case 0: {
            const double cdf = 0.5 * (1.0 + erf(x * INV_SQRT_2));
            return cdf + x * exp(-0.5 * x * x) * INV_SQRT_2PI;
        }
        case 1: {
            const double t = tanh(SQRT_2_OVER_PI * (x + 0.044715 * x * x * x));
            const double du = SQRT_2_OVER_PI * (1.0 + 3.0 * 0.044715 * x * x);
            return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du;
        }
        case 2: {
            const double s = sigmoid(QUICK_GELU_ALPHA * x);
            return s + QUICK_GELU_ALPHA * x * s * (1.0 - s);
        }
        default: {
            const double t = tanh(x);
            return 1.0 - t * t;
        }
    }
}

KERNEL void activation_fwd(float* out, const float* x, int n, int kind) {
    FOR_EACH(i, n) out[i] = (float)act_forward(kind, (double)x[i]);
}

KERNEL void activation_bwd(float* dx, const float* dy, const float* x, int n, int kind) {
    FOR_EACH(i, n) dx[i] = (float)((double)dy[i] * act_derivative(kind, (double)x[i]));
}
