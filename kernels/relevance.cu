// Rows of the relevance products (rollout, Chefer's rules; `Backend::relevance_rows`): one
// factor per launch, u ← uᵀ·F_l from the last layer down, over the head mean of the layer
// (`head_mean`, [samples, n, n]). Row k's tokens, state entries and outputs are
// row_start[k] .. row_start[k + 1], its sample row_sample[k] and its query row_query[k] (an
// index into its tokens). Every sum runs in index order from +0, each product rounded on its
// own (__fmul_rn: no FMA), as src/backend/cpu/relevance.rs: the CPU's bits.
#include "common.cuh"

// Rollout's row sums of M + I: d_i = (Σ_j M[t_i, t_j]) + 1. Row blockIdx.x, its entry i
// from blockDim.x·blockIdx.y on.
KERNEL void product_row_sums(float* d, const float* mean, const int* row_sample,
                             const int* row_start, const int* tokens, int n) {
    const int k = blockIdx.x;
    const int start = row_start[k], m = row_start[k + 1] - start;
    const int i = blockIdx.y * blockDim.x + threadIdx.x;
    if (i >= m) return;
    const int* t = tokens + start;
    const float* row = mean + ((long long)row_sample[k] * n + t[i]) * n;
    float s = 0.0f;
    for (int j = 0; j < m; ++j) s = __fadd_rn(s, row[t[j]]);
    d[start + i] = s + 1.0f;
}

// One factor on every row's state: entry j from blockDim.x·blockIdx.y on of row blockIdx.x,
// neighbouring threads on neighbouring columns. rollout: u'_j = Σ_i u_i·((M_ij + δ_ij)/d_i);
// else (residual, u = e_q + w): w'_j = (w_j + M_qj) + Σ_i w_i·M_ij.
KERNEL void product_row_step(float* out, const float* state, const float* mean, const float* d,
                             const int* row_sample, const int* row_start, const int* row_query,
                             const int* tokens, int n, int rollout) {
    const int k = blockIdx.x;
    const int start = row_start[k], m = row_start[k + 1] - start;
    const int j = blockIdx.y * blockDim.x + threadIdx.x;
    if (j >= m) return;
    const int* t = tokens + start;
    const float* u = state + start;
    const float* sample = mean + (long long)row_sample[k] * n * n;
    const int tj = t[j];
    float acc = 0.0f;
    if (rollout) {
        for (int i = 0; i < m; ++i) {
            const float x = sample[(long long)t[i] * n + tj];
            const float f = (i == j ? x + 1.0f : x) / d[start + i];
            acc = __fadd_rn(acc, __fmul_rn(u[i], f));
        }
        out[start + j] = acc;
    } else {
        for (int i = 0; i < m; ++i)
            acc = __fadd_rn(acc, __fmul_rn(u[i], sample[(long long)t[i] * n + tj]));
        const float query = sample[(long long)t[row_query[k]] * n + tj];
        out[start + j] = __fadd_rn(u[j] + query, acc);
    }
}
