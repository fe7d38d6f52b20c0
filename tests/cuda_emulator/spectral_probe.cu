// kernels/spectral.cu's Lanczos on an operator and locked vectors of the test's choosing
// (tests/cuda_backend.rs, `device_lanczos_survives_a_nearly_invariant_krylov_space`). The
// graph kernels only lock (near-)eigenvectors of their operator, D^1/2 1 and then the Fiedler
// vector, and with those one Gram–Schmidt pass per step cannot be told from two. Built into
// the emulator only.
#include "common.cuh"

// spectral.cu's own kernels are registered from its own unit: here they stay local.
#undef KERNEL
#define KERNEL static
#include "spectral.cu"
#undef KERNEL
#define KERNEL extern "C" __global__

// One block. `m` is n × n and symmetric, `locked` holds `locked_count` (≤ 2) orthonormal
// vectors one after another, `work` has room for n² + 10n + 2 doubles. out[0] = the Ritz value
// (NaN when the complement is empty), out[1] = the steps, out[2..2 + n] = the unit Ritz vector.
KERNEL void emu_lanczos_top(const double* m, int n, const double* locked, int locked_count,
                            unsigned long long key, double tol, int overlap_checks, double* work,
                            double* out) {
    __shared__ Shared sh;
    Workspace ws = {};
    ws.basis = work;
    ws.w = ws.basis + (long long)n * n;
    ws.coef = ws.w + n;  // n + 2
    ws.alpha = ws.coef + n + 2;
    ws.beta = ws.alpha + n;
    ws.y = ws.beta + n;
    ws.lu = ws.y + n;  // 5n
    DenseOperator op;
    op.m = (double*)m;
    op.n = n;
    Locked lk;
    lk.count = locked_count;
    for (int l = 0; l < locked_count; ++l) lk.v[l] = locked + (long long)l * n;
    double value = 0.0;
    int steps = 0;
    const bool found =
        lanczos(ws, op, n, lk, key, tol, overlap_checks != 0, out + 2, &value, &steps, &sh);
    if (threadIdx.x == 0) {
        out[0] = found ? value : NAN_D;
        out[1] = (double)steps;
    }
}
