// The CLIP head: scaled cosine similarity of paired rows and its gradient. One block per
// row; sums in double like the CPU oracle.
#include "common.cuh"

struct Dots {
    double aa, bb, ab;
};

__device__ Dots row_dots(const float* a, const float* b, int dim, double* scratch) {
    double aa = 0.0, bb = 0.0, ab = 0.0;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        const double x = a[i], y = b[i];
        aa += x * x;
        bb += y * y;
        ab += x * y;
    }
    Dots d;
    d.aa = block_sum(aa, scratch);
    d.bb = block_sum(bb, scratch);
    d.ab = block_sum(ab, scratch);
    return d;
}

KERNEL void cosine_fwd(float* scores, const float* a, const float* b, int rows, int dim,
                       float scale) {
    __shared__ double scratch[32];
    const int row = blockIdx.x;
    if (row >= rows) return;
    const long long off = (long long)row * dim;
    const Dots d = row_dots(a + off, b + off, dim, scratch);
    if (threadIdx.x == 0) scores[row] = (float)((double)scale * d.ab / (sqrt(d.aa) * sqrt(d.bb)));
}

// ∂(s·â·b̂)/∂a = s/|a|·(b̂ − (â·b̂)·â), and symmetrically for b.
KERNEL void cosine_bwd(float* da, float* db, const float* dscores, const float* a, const float* b,
                       int rows, int dim, float scale) {
    __shared__ double scratch[32];
    const int row = blockIdx.x;
    if (row >= rows) return;
    const long long off = (long long)row * dim;
    const Dots d = row_dots(a + off, b + off, dim, scratch);
    const double na = sqrt(d.aa), nb = sqrt(d.bb);
    const double cosv = d.ab / (na * nb);
    const double g = (double)dscores[row] * (double)scale;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        const double ai = a[off + i] / na, bi = b[off + i] / nb;
        da[off + i] = (float)(g / na * (bi - cosv * ai));
        db[off + i] = (float)(g / nb * (ai - cosv * bi));
    }
}
