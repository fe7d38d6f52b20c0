// Layer normalisation over the last dimension, forward and backward. One block per row;
// sums in double, as the CPU oracle does (a row with a large offset loses digits in f32).
#include "common.cuh"

// stats[2·row] = mean, stats[2·row + 1] = 1/σ (biased variance, as torch).
KERNEL void layernorm_fwd(float* out, float* stats, const float* x, const float* gamma,
                          const float* beta, int rows, int dim, float eps) {
    __shared__ double scratch[32];
    const int row = blockIdx.x;
    if (row >= rows) return;
    const float* xr = x + (long long)row * dim;
    float* yr = out + (long long)row * dim;
    double s = 0.0;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) s += (double)xr[i];
    const double mean = block_sum(s, scratch) / dim;
    double v = 0.0;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        const double d = (double)xr[i] - mean;
        v += d * d;
    }
    const double var = block_sum(v, scratch) / dim;
    const double rstd = 1.0 / sqrt(var + (double)eps);
    for (int i = threadIdx.x; i < dim; i += blockDim.x)
        yr[i] = (float)(((double)xr[i] - mean) * rstd) * gamma[i] + beta[i];
    if (threadIdx.x == 0) {
        stats[2 * row] = (float)mean;
        stats[2 * row + 1] = (float)rstd;
    }
}

// dx (+)= rstd·(g⊙dy − mean(g⊙dy) − x̂·mean(g⊙dy⊙x̂)).
KERNEL void layernorm_bwd(float* dx, const float* dy, const float* x, const float* stats,
                          const float* gamma, int rows, int dim, int accumulate) {
    __shared__ double scratch[32];
    const int row = blockIdx.x;
    if (row >= rows) return;
    const long long off = (long long)row * dim;
    const float mean = stats[2 * row], rstd = stats[2 * row + 1];
    // g⊙dy and x̂ rounded once each (__fmul_rn: no FMA contraction), as on the CPU: in the
    // second loop a contracted dy·gamma − mean_g would leave the product's rounding error
    // where the CPU gets an exact 0 (dim 1, or a constant g⊙dy).
    double sg = 0.0, sgx = 0.0;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        const double gdy = (double)__fmul_rn(dy[off + i], gamma[i]);
        sg += gdy;
        sgx += gdy * (double)__fmul_rn(x[off + i] - mean, rstd);
    }
    const float mean_g = (float)(block_sum(sg, scratch) / dim);
    const float mean_gx = (float)(block_sum(sgx, scratch) / dim);
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        const float xhat = __fmul_rn(x[off + i] - mean, rstd);
        const float gdy = __fmul_rn(dy[off + i], gamma[i]);
        const float v = rstd * (gdy - mean_g - __fmul_rn(xhat, mean_gx));
        dx[off + i] = accumulate ? dx[off + i] + v : v;
    }
}
