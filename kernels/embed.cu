// Token assembly: image patches, class token + positions, sequence concatenation, token and
// position embeddings, row gathers and their backward. One thread per output element.
#include "common.cuh"

// Rows of flattened patches in raster order, each ordered (channel, row, column) like a
// stride-p convolution weight [out, channels, p, p]. n = batch·patches·channels·p·p.
KERNEL void patchify(float* out, const float* pixels, int n, int channels, int height, int width,
                     int p) {
    const int gw = width / p, cells = (height / p) * gw, plen = channels * p * p;
    FOR_EACH(idx, n) {
        const int row = idx / plen, d = idx % plen;
        const int c = d / (p * p), y = (d / p) % p, x = d % p;
        const int b = row / cells, cell = row % cells;
        const int py = cell / gw, px = cell % gw;
        const long long src = (long long)b * channels * height * width +
                              (long long)c * height * width + (long long)(py * p + y) * width +
                              px * p + x;
        out[idx] = pixels[src];
    }
}

// out[b] = [class ; patches[b]] + pos with pos shared ([tokens, dim]) or per sample
// ([batch·tokens, dim], per_sample = 1). n = batch·tokens·dim.
KERNEL void prepend_class_add_positions(float* out, const float* patches, const float* cls,
                                        const float* pos, int n, int tokens, int dim,
                                        int per_sample) {
    FOR_EACH(idx, n) {
        const int b = idx / (tokens * dim), t = (idx / dim) % tokens, d = idx % dim;
        const float src =
            t == 0 ? cls[d] : patches[(long long)b * (tokens - 1) * dim + (t - 1) * dim + d];
        const long long pi = (per_sample ? (long long)b * tokens * dim : 0) + t * dim + d;
        out[idx] = src + pos[pi];
    }
}

// out[b] = [a[b] ; c[b]] along the tokens. n = batch·(a_tokens + c_tokens)·dim.
KERNEL void concat_sequences(float* out, const float* a, const float* c, int n, int a_tokens,
                             int c_tokens, int dim) {
    const int la = a_tokens * dim, lc = c_tokens * dim;
    FOR_EACH(idx, n) {
        const int b = idx / (la + lc), r = idx % (la + lc);
        out[idx] = r < la ? a[(long long)b * la + r] : c[(long long)b * lc + (r - la)];
    }
}

// out[row] = table[ids[row]] + pos[row % seq]. n = rows·dim.
KERNEL void embed_tokens(float* out, const unsigned int* ids, const float* table,
                         const float* pos, int n, int seq, int dim) {
    FOR_EACH(idx, n) {
        const int row = idx / dim, d = idx % dim;
        out[idx] = table[(long long)ids[row] * dim + d] + pos[(row % seq) * dim + d];
    }
}

// out[i] = x[rows[i]]. n = len(rows)·dim.
KERNEL void gather_rows(float* out, const float* x, const int* rows, int n, int dim) {
    FOR_EACH(idx, n) out[idx] = x[(long long)rows[idx / dim] * dim + idx % dim];
}

// dx[rows[i]] += dy[i] (dx zeroed by the caller); rows may repeat, hence the atomics.
KERNEL void gather_rows_bwd(float* dx, const float* dy, const int* rows, int n, int dim) {
    FOR_EACH(idx, n) atomicAdd(&dx[(long long)rows[idx / dim] * dim + idx % dim], dy[idx]);
}
