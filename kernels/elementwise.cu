// Residual adds, gradient fan-in and broadcast row vectors (biases, embedding types).
#include "common.cuh"

KERNEL void add(float* out, const float* a, const float* b, int n) {
    FOR_EACH(i, n) out[i] = a[i] + b[i];
}

KERNEL void add_assign(float* dst, const float* src, int n) {
    FOR_EACH(i, n) dst[i] += src[i];
}

// x[row, j] += v[j] for rows of width `dim`; n = rows·dim.
KERNEL void add_row_vector(float* x, const float* v, int n, int dim) {
    FOR_EACH(i, n) x[i] += v[i % dim];
}
