// The softmax of a batched attention and its backward; the products around it (Q·Kᵀ, P·V
// and their gradients) run in cuBLAS. One warp per row of [batch, heads, queries, keys].
#include "common.cuh"

// In place over the scaled scores: probabilities with masked entries exactly 0. Query i of
// sample b sees key j unless causal && j > i or key_mask[b·keys + j] == 0 (when has_mask).
// A row that sees no key stays all zero rather than 0/0, as on the CPU.
KERNEL void softmax_fwd(float* p, const unsigned char* key_mask, int rows, int heads,
                        int queries, int keys, int causal, int has_mask) {
    const int row = (blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const int lane = threadIdx.x & 31;
    if (row >= rows) return;  // whole warps leave together: rows are warp-uniform
    const int i = row % queries;
    const int b = row / queries / heads;
    float* pr = p + (long long)row * keys;
    const unsigned char* mr = key_mask + (long long)b * keys;
    float m = NEG_INF_F;
    for (int j = lane; j < keys; j += 32) {
        const bool seen = !(causal && j > i) && (!has_mask || mr[j]);
        if (seen) m = fmaxf(m, pr[j]);
    }
    m = __shfl_sync(FULL_MASK, warp_max(m), 0);
    float s = 0.0f;
    for (int j = lane; j < keys; j += 32) {
        const bool seen = !(causal && j > i) && (!has_mask || mr[j]);
        const float e = seen ? expf(pr[j] - m) : 0.0f;
        pr[j] = e;
        s += e;
    }
    s = __shfl_sync(FULL_MASK, warp_sum(s), 0);
    if (s > 0.0f) {
        for (int j = lane; j < keys; j += 32) pr[j] /= s;
    }
}

// dS = A ⊙ (dA − rowsum(A ⊙ dA)) per row; masked entries have A = 0 and get 0.
KERNEL void softmax_bwd(float* ds, const float* dp, const float* p, int rows, int keys) {
    const int row = (blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const int lane = threadIdx.x & 31;
    if (row >= rows) return;
    const long long off = (long long)row * keys;
    float dot = 0.0f;
    for (int j = lane; j < keys; j += 32) dot += dp[off + j] * p[off + j];
    dot = __shfl_sync(FULL_MASK, warp_sum(dot), 0);
    for (int j = lane; j < keys; j += 32) ds[off + j] = p[off + j] * (dp[off + j] - dot);
}

// out[b, e] = (Σ_h term(x[b, h, e], g[b, h, e])) / heads, heads summed in order as on the
// CPU (src/backend/cpu/attention.rs, `head_mean`): bit-identical results. term by `kind`:
// 0: x; 1: max(g, 0); 2: max(x·g, 0) (the product rounded before the max, so nothing is
// contracted into an FMA). One thread per (sample, entry): neighbours read neighbours.
KERNEL void head_mean(float* out, const float* x, const float* g, int samples, int heads,
                      int entries, int kind) {
    const long long total = (long long)samples * entries;
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (long long)blockDim.x * gridDim.x) {
        const long long b = idx / entries, e = idx % entries;
        float s = 0.0f;
        for (int h = 0; h < heads; ++h) {
            const long long at = (b * heads + h) * entries + e;
            float t;
            if (kind == 0) {
                t = x[at];
            } else if (kind == 1) {
                t = fmaxf(g[at], 0.0f);
            } else {
                t = fmaxf(__fmul_rn(x[at], g[at]), 0.0f);
            }
            s += t;
        }
        out[idx] = s / (float)heads;
    }
}
