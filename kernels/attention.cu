// The softmax of a batched attention and its backward; the products around it (Q·Kᵀ, P·V
// and their gradients) run in cuBLAS. One warp per row of [batch, heads, queries, keys].
#include "common.cuh"

// Keys per lane that softmax_fwd holds in registers: rows of up to 32 · SOFTMAX_HELD keys
// are read and written once (ViT-B/16's 197 keys, 7 a lane); longer rows take three passes.
#define SOFTMAX_HELD 8

// In place over the scaled scores: probabilities with masked entries exactly 0. Query i of
// sample b sees key j unless causal && j > i or key_mask[b·keys + j] == 0 (when has_mask).
// A row that sees no key stays all zero rather than 0/0, as on the CPU. Both paths do the
// same arithmetic in the same order (lane by lane, j = lane, lane + 32, …): the same bits.
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
    if (keys <= 32 * SOFTMAX_HELD) {
        float held[SOFTMAX_HELD];
        unsigned seen = 0;  // bit t: key lane + 32·t is seen
#pragma unroll
        for (int t = 0; t < SOFTMAX_HELD; ++t) {
            const int j = lane + 32 * t;
            held[t] = j < keys ? pr[j] : 0.0f;
            if (j < keys && !(causal && j > i) && (!has_mask || mr[j])) {
                seen |= 1u << t;
                m = fmaxf(m, held[t]);
            }
        }
        m = __shfl_sync(FULL_MASK, warp_max(m), 0);
        float s = 0.0f;
#pragma unroll
        for (int t = 0; t < SOFTMAX_HELD; ++t) {
            held[t] = (seen >> t) & 1u ? expf(held[t] - m) : 0.0f;
            s += held[t];
        }
        s = __shfl_sync(FULL_MASK, warp_sum(s), 0);
#pragma unroll
        for (int t = 0; t < SOFTMAX_HELD; ++t) {
            const int j = lane + 32 * t;
            if (j < keys) pr[j] = s > 0.0f ? held[t] / s : held[t];
        }
        return;
    }
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

// (Σ_h term(x[at], g[at])) / heads over the heads of one sample's maps (from `maps` on, h
// `entries` apart) at entry e, heads summed in order as on the CPU
// (src/backend/cpu/attention.rs, `head_mean`): bit-identical results. term by `kind`: 0: x;
// 1: max(g, 0); 2: max(x·g, 0) (the product rounded before the max, so nothing is
// contracted into an FMA).
__device__ __forceinline__ float mean_over_heads(const float* x, const float* g, long long maps,
                                                 int heads, long long entries, long long e,
                                                 int kind) {
    float s = 0.0f;
    for (int h = 0; h < heads; ++h) {
        const long long at = maps + h * entries + e;
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
    return s / (float)heads;
}

// out[b, e] = the head mean of sample b at entry e. One thread per (sample, entry):
// neighbours read neighbours.
KERNEL void head_mean(float* out, const float* x, const float* g, int samples, int heads,
                      int entries, int kind) {
    const long long total = (long long)samples * entries;
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (long long)blockDim.x * gridDim.x) {
        const long long b = idx / entries, e = idx % entries;
        out[idx] = mean_over_heads(x, g, b * heads * entries, heads, entries, e, kind);
    }
}

// The host's MATVEC_ROWS and MATVEC_COLS (src/backend/cuda/mod.rs).
#define MATVEC_ROWS 32
#define MATVEC_COLS 128

// r_i = Σ_j M[t_i, t_j]·v_j per graph (`head_mean_matvec` in src/backend/mod.rs), M the head
// mean of the graph's sample over n × n maps: graph blockIdx.x, its rows from
// MATVEC_ROWS·blockIdx.y on. Graph k's tokens, vector entries and outputs are
// graph_start[k] .. graph_start[k + 1]; graph_sample[k] is its sample. The block forms the
// means of a MATVEC_ROWS × MATVEC_COLS tile at a time in shared memory, neighbouring threads
// on neighbouring columns (coalesced reads), then one thread per row adds its products in
// column order, each rounded (no FMA), from −0 as Rust's f32 sum does: the CPU's bits.
KERNEL void head_mean_matvec(float* out, const float* x, const float* g,
                             const int* graph_sample, const int* graph_start, const int* tokens,
                             const float* vector, int heads, int n, int kind) {
    __shared__ float tile[MATVEC_ROWS][MATVEC_COLS + 1];  // +1: rows in different banks
    const int k = blockIdx.x;
    const int start = graph_start[k], m = graph_start[k + 1] - start;
    const int row0 = blockIdx.y * MATVEC_ROWS;
    if (row0 >= m) return;  // the whole block, before any barrier
    const long long entries = (long long)n * n;
    const long long maps = (long long)graph_sample[k] * heads * entries;
    const int* t = tokens + start;
    const float* v = vector + start;
    const int r = threadIdx.x;  // the row this thread sums, if r < MATVEC_ROWS
    const bool sums = r < MATVEC_ROWS && row0 + r < m;
    float acc = -0.0f;
    for (int col0 = 0; col0 < m; col0 += MATVEC_COLS) {
        for (int idx = threadIdx.x; idx < MATVEC_ROWS * MATVEC_COLS; idx += blockDim.x) {
            const int ti = idx / MATVEC_COLS, tj = idx % MATVEC_COLS;
            const int i = row0 + ti, j = col0 + tj;
            if (i < m && j < m) {
                const long long e = (long long)t[i] * n + t[j];
                tile[ti][tj] = mean_over_heads(x, g, maps, heads, entries, e, kind);
            }
        }
        __syncthreads();
        if (sums) {
            const int cols = min(MATVEC_COLS, m - col0);
            for (int c = 0; c < cols; ++c)
                acc = __fadd_rn(acc, __fmul_rn(tile[r][c], v[col0 + c]));
        }
        __syncthreads();
    }
    if (sums) out[start + row0 + r] = acc;
}

// Grad-CAM's reads at one row per block (`head_rows` in src/backend/mod.rs): per head, the
// mean of ∇A over the row's tokens × tokens, an f64 sum in row-major order as the CPU's,
// into means[k·heads + h]; and row query of each head's A over the tokens, into
// out_rows[start·heads + h·m + j]. Row k's tokens are row_start[k] .. row_start[k + 1].
KERNEL void head_rows(float* means, float* out_rows, const float* x, const float* g,
                      const int* row_sample, const int* row_start, const int* row_query,
                      const int* tokens, int heads, int n) {
    const int k = blockIdx.x;
    const int start = row_start[k], m = row_start[k + 1] - start;
    const int* t = tokens + start;
    const long long entries = (long long)n * n;
    const long long maps = (long long)row_sample[k] * heads * entries;
    for (int h = threadIdx.x; h < heads; h += blockDim.x) {
        const float* gh = g + maps + h * entries;
        double sum = 0.0;
        for (int i = 0; i < m; ++i)
            for (int j = 0; j < m; ++j) sum += (double)gh[(long long)t[i] * n + t[j]];
        means[(long long)k * heads + h] = (float)(sum / ((double)m * m));
    }
    const long long query = (long long)t[row_query[k]] * n;
    for (int idx = threadIdx.x; idx < heads * m; idx += blockDim.x) {
        const int h = idx / m, j = idx % m;
        out_rows[(long long)start * heads + idx] = x[maps + h * entries + query + t[j]];
    }
}
