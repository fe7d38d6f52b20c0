// The elementwise and per-sample parts of the LRP rules (spec §D); their dense products run in
// cuBLAS. Each mirrors src/backend/cpu/lrp.rs operation for operation: the same stabilised
// division, the same order of roundings, and products written __fmul_rn where nvcc would
// otherwise contract a·b + c into one FMA (x·c + |x|·c must cancel to exactly 0, as on the CPU).
#include "common.cuh"

// The stabiliser of §D's division, as the CPU's f32 constant (also widened to f64 there).
#define LRP_EPS 1e-9f

// sdiv(a, b) = a / (b + ε) where b ≠ 0, else 0 (ε alone when b + ε = 0).
__device__ __forceinline__ float sdiv(float a, float b) {
    if (b == 0.0f) return 0.0f;
    const float den = b + LRP_EPS;
    return a / (den == 0.0f ? LRP_EPS : den);
}

__device__ __forceinline__ double sdiv64(double a, double b) {
    return b == 0.0 ? 0.0 : a / (b + (double)LRP_EPS);
}

// out = |x| (|W| for the linear rule, and |x| of its input).
KERNEL void lrp_abs(float* out, const float* x, int n) {
    FOR_EACH(i, n) out[i] = fabsf(x[i]);
}

// out = sdiv(num, den).
KERNEL void lrp_sdiv(float* out, const float* num, const float* den, int n) {
    FOR_EACH(i, n) out[i] = sdiv(num[i], den[i]);
}

// out = (x / 2) · out: R_P = P ⊙ (S·Vᵀ)/2 and the halves of R_Q, R_K, R_V over their products.
KERNEL void lrp_half_product(float* out, const float* x, int n) {
    FOR_EACH(i, n) out[i] = __fmul_rn(0.5f * x[i], out[i]);
}

// The linear rule's S = sdiv(r, (z + z_abs)/2) over [rows, cols] (n = rows·cols), in place
// over `s`, which holds z_abs = |x|·|W|ᵀ on entry. z = x·Wᵀ, or when has_forward `z` holds the
// forward's output and z = output − bias.
KERNEL void lrp_linear_ratio(float* s, const float* r, const float* z, const float* bias, int n,
                             int cols, int has_forward) {
    FOR_EACH(i, n) {
        const float zi = has_forward ? z[i] - bias[i % cols] : z[i];
        s[i] = sdiv(r[i], 0.5f * (zi + s[i]));
    }
}

// The linear rule's R_x = (x ⊙ (S·W) + |x| ⊙ (S·|W|))/2, written or added to rx.
KERNEL void lrp_linear_combine(float* rx, const float* x, const float* c, const float* c_abs,
                               int n, int accumulate) {
    FOR_EACH(i, n) {
        const float xi = x[i];
        const float v = __fmul_rn(0.5f, __fmul_rn(xi, c[i]) + __fmul_rn(fabsf(xi), c_abs[i]));
        rx[i] = accumulate ? rx[i] + v : v;
    }
}

// The add rule over one sample's `len` values per block (sample = blockIdx.x): ra = a ⊙ S,
// rb = b ⊙ S with S = sdiv(r, a + b), then each rescaled so that, with Σ in f64, ra gets
// |Σra|/(|Σra| + |Σrb|) of Σr and rb the rest.
KERNEL void lrp_add(float* ra, float* rb, const float* r, const float* a, const float* b,
                    int len) {
    __shared__ double scratch[32];
    const long long off = (long long)blockIdx.x * len;
    double sa = 0.0, sb = 0.0, sr = 0.0;
    for (int j = threadIdx.x; j < len; j += blockDim.x) {
        const long long at = off + j;
        const float s = sdiv(r[at], a[at] + b[at]);
        const float va = a[at] * s, vb = b[at] * s;
        ra[at] = va;
        rb[at] = vb;
        sa += (double)va;
        sb += (double)vb;
        sr += (double)r[at];
    }
    sa = block_sum(sa, scratch);
    sb = block_sum(sb, scratch);
    sr = block_sum(sr, scratch);
    const double total = fabs(sa) + fabs(sb);
    const float fa = (float)sdiv64(sdiv64(fabs(sa), total) * sr, sa);
    const float fb = (float)sdiv64(sdiv64(fabs(sb), total) * sr, sb);
    // Each thread rescales the values it wrote above.
    for (int j = threadIdx.x; j < len; j += blockDim.x) {
        const long long at = off + j;
        ra[at] *= fa;
        rb[at] *= fb;
    }
}

// One term of the clone rule rx = x ⊙ Σ_i sdiv(r_i, x), summed in rx in the CPU's order:
// the first term starts the sum, the last multiplies it by x.
KERNEL void lrp_clone_term(float* rx, const float* x, const float* r, int n, int first,
                           int last) {
    FOR_EACH(i, n) {
        const float t = sdiv(r[i], x[i]);
        const float sum = first ? t : rx[i] + t;
        rx[i] = last ? x[i] * sum : sum;
    }
}
