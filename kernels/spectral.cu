// Batched Fiedler vectors, mirroring src/linalg step for step in f64. Three stages, launched
// by src/backend/cuda/spectral.rs:
// 1. `fiedler_rows` (one warp per node): §B step 1, the node's f32 feature row (gathered:
//    the host passes each node's row address) to f64 times 1/max(‖f_i‖, ε) (or 1 for the
//    raw-feature variant), as affinity.rs does before its Gram; rows with NaN/inf flagged.
// 2. cuBLAS DGEMM (strided-batched over the graphs of one size) writes F Fᵀ into each graph's
//    workspace. The Gram is O(n²·d) — at n = 196, d = 768, 30 M multiply-adds a graph, most
//    of the work — and a tensor-core DGEMM does it at full rate, where one thread per pair
//    of rows reading `dim`-strided features did not.
// 3. `fiedler_graphs` (a thread block per graph at a time, a warp per 32 nodes; for graphs of at
//    most 256 nodes its twin `fiedler_graphs_small`, the same code under tighter launch
//    bounds, and, where the host asks for it, `fiedler_graphs_shared`, which keeps M packed
//    in shared memory): the rest of affinity.rs (W = max(F Fᵀ, 0) / max from one triangle,
//    mirrored so M is exactly symmetric; guarded degrees; M = D^-1/2 W D^-1/2; the trivial
//    vector D^1/2 1), then
//    lanczos.rs (full reorthogonalisation with the DGKS repeat, convergence checks on the
//    same work schedule), tridiagonal.rs (Laguerre for θ, inverse iteration for y, on one
//    thread) and solve.rs (two Lanczos runs: the Fiedler pair, then μ₃ for the gap;
//    |v| = |D^-1/2 u|, sign fixed by the largest entry).
// A Lanczos step is a handful of barriers: M q and α = qᵀ M q in one pass, every
// Gram–Schmidt coefficient (locked vectors and the whole basis, plus ‖w‖²) in one round with
// a warp per vector, the update fused with the new ‖w‖². w and the coefficients live in
// shared memory up to SHARED_NODES nodes. The Gram–Schmidt is classical over the locked
// vectors and the basis together (the CPU deflates the one or two locked vectors first):
// the same in exact arithmetic, since the basis is orthogonal to them. The convergence
// checks, serial, run on a warp of their own beside the next step when the host gives one
// (`lanczos`).
#include "common.cuh"

#define NORMALIZE_EPS 1e-12
#define DEGREE_GUARD 1e-12
#define TOL_VECTOR 1e-10
#define TOL_GAP 1e-6
#define START_FIEDLER 0xF1ED1E70ull
#define START_GAP 0x6A900003ull
#define START_EIGENVECTOR 0x7d1a9e5bull
#define CHECK_COST 800
#define DGKS 0.7071067811865476
#define LAGUERRE_STEPS 200
#define GOLDEN 0x9E3779B97F4A7C15ull
#define DBL_EPSILON_ 2.220446049250313e-16
#define DBL_MIN_POSITIVE 2.2250738585072014e-308
#define NAN_D __longlong_as_double(0x7ff8000000000000ll)
#define POS_INF_D __longlong_as_double(0x7ff0000000000000ll)

// Per-graph workspace, in doubles, at work + work_start[g] (the host sizes it the same way):
// M n² (F Fᵀ from the DGEMM on entry; then M itself, unless it is packed in shared memory), the Lanczos basis n², then WORK_VECTORS vectors of n:
// D^-1/2, trivial, w, u, coefficients (2n: up to n + 1 are used), alpha, beta, y, and the
// tridiagonal LU (dl, d, du, du2, swapped). w and the coefficients are used only when n
// exceeds SHARED_NODES; below, shared memory holds them.
#define WORK_VECTORS 14
#define SHARED_NODES 640

// Rows of `fiedler_graphs`' per-graph statistics (the host's STAT_ROWS).
#define STAT_LAMBDA2 0
#define STAT_GAP 1
#define STAT_RESIDUAL 2
#define STAT_STEPS 3

// `fiedler_graphs_small`'s launch bounds (the host's SMALL_GRAPH_THREADS).
#define SMALL_GRAPH_THREADS 256
#define SMALL_GRAPH_BLOCKS 4

// ---- SplitMix64 uniforms (src/linalg/synthetic.rs) ----

__device__ unsigned long long mix64(unsigned long long z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

__device__ double uniform01(unsigned long long key, unsigned long long i) {
    const unsigned long long z = mix64(key + (i + 1) * GOLDEN);
    return (double)(z >> 11) * (1.0 / 9007199254740992.0);
}

// ---- block-wide vector operations (every thread calls them; i = tid, tid + blockDim, …) ----

__device__ double bdot(const double* a, const double* b, int n, double* scratch) {
    double s = 0.0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) s += a[i] * b[i];
    return block_sum(s, scratch);
}

__device__ double bmax(double v, double* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    for (int o = 16; o > 0; o >>= 1) v = fmax(v, __shfl_down_sync(FULL_MASK, v, o));
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    double m = lane < (int)(blockDim.x >> 5) ? scratch[lane] : 0.0;
    for (int o = 16; o > 0; o >>= 1) m = fmax(m, __shfl_down_sync(FULL_MASK, m, o));
    m = __shfl_sync(FULL_MASK, m, 0);
    __syncthreads();
    return m;
}

// ---- where the operator M lives: two storages of the same values ----
// For each: `entry(op, i, j)`, M_ij (= M_ji), and the two passes that build M from the Gram
// F Fᵀ (row-major n × n in the graph's workspace): `clamp` (W = max(F Fᵀ, 0) from the
// triangle j <= i, returning this thread's largest entry) and `normalise` (M = W / scale ·
// D^-1/2 … D^-1/2). Both compute every entry with the same arithmetic, so a solve gives the
// same bits in either. (Free functions rather than members: the CUDA emulator's
// `__device__` is `static`.)

// In the graph's workspace, n × n, over the Gram (clamped in place, then mirrored): exactly
// symmetric, so `entry` reads column i for row i, which a warp reads at consecutive
// addresses when its threads take consecutive i. The passes go a warp per row and its lanes
// along the row: reads coalesced, and no 64-bit division to find (i, j).
struct DenseOperator {
    double* m;
    int n;
};

// The lower triangle, row by row, in the block's (dynamic) shared memory: n(n+1)/2 doubles,
// 154 KB at n = 196, so that the Lanczos products read it from the SM rather than from L2 or
// memory (each step reads all of M). Entry (i, j <= i) is at i(i+1)/2 + j.
struct PackedOperator {
    double* t;
    int n;
};

__device__ void make_operator(DenseOperator* op, double* gram, int n) {
    op->m = gram;
    op->n = n;
}

__device__ void make_operator(PackedOperator* op, double*, int n) {
    op->t = dynamic_shared<double>();
    op->n = n;
}

__device__ __forceinline__ long long packed_row(int i) { return (long long)i * (i + 1) / 2; }

__device__ __forceinline__ double entry(const DenseOperator& op, int i, int j) {
    return op.m[(long long)j * op.n + i];
}

__device__ __forceinline__ double entry(const PackedOperator& op, int i, int j) {
    return i >= j ? op.t[packed_row(i) + j] : op.t[packed_row(j) + i];
}

// Each entry of the triangle is read and written by one thread only.
__device__ double clamp(const DenseOperator& op, const double* gram) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    const int n = op.n;
    double local_max = 0.0;
    for (int i = warp; i < n; i += warps) {
        const double* row = gram + (long long)i * n;
        for (int j = lane; j <= i; j += 32) {
            const double s = fmax(row[j], 0.0);
            op.m[(long long)i * n + j] = s;
            op.m[(long long)j * n + i] = s;
            local_max = fmax(local_max, s);
        }
    }
    return local_max;
}

__device__ double clamp(const PackedOperator& op, const double* gram) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    double local_max = 0.0;
    for (int i = warp; i < op.n; i += warps) {
        const double* row = gram + (long long)i * op.n;
        for (int j = lane; j <= i; j += 32) {
            const double s = fmax(row[j], 0.0);
            op.t[packed_row(i) + j] = s;
            local_max = fmax(local_max, s);
        }
    }
    return local_max;
}

__device__ void normalise(const DenseOperator& op, const double* isd, double scale) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    for (int i = warp; i < op.n; i += warps) {
        double* row = op.m + (long long)i * op.n;
        const double si = isd[i];
        for (int j = lane; j < op.n; j += 32) row[j] = row[j] / scale * (si * isd[j]);
    }
}

__device__ void normalise(const PackedOperator& op, const double* isd, double scale) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    for (int i = warp; i < op.n; i += warps) {
        double* row = op.t + packed_row(i);
        const double si = isd[i];
        for (int j = lane; j <= i; j += 32) row[j] = row[j] / scale * (si * isd[j]);
    }
}

// y = M x, thread i summing row i in column order. Syncs first: x may have been written by
// other threads.
template <typename Op>
__device__ void bgemv(const Op& op, const double* x, double* y, int n) {
    __syncthreads();
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        double s = 0.0;
        for (int j = 0; j < n; ++j) s += entry(op, i, j) * x[j];
        y[i] = s;
    }
    __syncthreads();
}

// x /= ‖x‖ when the norm is positive; returns the norm.
__device__ double bnormalize(double* x, int n, double* scratch) {
    const double nrm = sqrt(bdot(x, x, n, scratch));
    if (nrm > 0.0) {
        const double inv = 1.0 / nrm;
        for (int i = threadIdx.x; i < n; i += blockDim.x) x[i] *= inv;
    }
    __syncthreads();
    return nrm;
}

// The known eigenvectors a Lanczos run works orthogonally to: the trivial one, then u₂.
struct Locked {
    const double* v[2];
    int count;
};

// x -= (v·x) v for each locked vector v, one after the other.
__device__ void bdeflate(double* x, const Locked& locked, int n, double* scratch) {
    for (int l = 0; l < locked.count; ++l) {
        const double c = bdot(locked.v[l], x, n, scratch);
        for (int i = threadIdx.x; i < n; i += blockDim.x) x[i] -= c * locked.v[l][i];
        __syncthreads();
    }
}

// ---- tridiagonal eigenproblems on one thread (src/linalg/tridiagonal.rs) ----

struct Pivots {
    int above;
    double g, h;
    bool exact;
};

__device__ Pivots pivots(const double* diag, const double* off, int k, double x, double pivmin) {
    double q = 0.0, dq = 0.0, ddq = 0.0, r = 0.0, g = 0.0, h = 0.0;
    int above = 0;
    bool exact = false;
    for (int i = 0; i < k; ++i) {
        double nq, ndq, nddq;
        if (i == 0) {
            nq = x - diag[0];
            ndq = 1.0;
            nddq = 0.0;
        } else {
            const double b = off[i - 1] * off[i - 1];
            nq = x - diag[i] - b * r;
            ndq = 1.0 + b * dq * r * r;
            nddq = b * (ddq * q - 2.0 * dq * dq) * r * r * r;
        }
        q = nq;
        dq = ndq;
        ddq = nddq;
        if (fabs(q) < pivmin) {
            exact = exact || (i + 1 == k);
            q = -pivmin;
        }
        if (q < 0.0) above += 1;
        r = 1.0 / q;
        g += dq * r;
        h += (dq * dq - q * ddq) * r * r;
    }
    Pivots p;
    p.above = above;
    p.g = g;
    p.h = h;
    p.exact = exact;
    return p;
}

__device__ __noinline__ double largest_eigenvalue(const double* diag, const double* off, int k) {
    double hi = -POS_INF_D, lo = POS_INF_D, pivmin = 1.0;
    for (int i = 0; i < k; ++i) {
        const double radius =
            (i > 0 ? fabs(off[i - 1]) : 0.0) + (i + 1 < k ? fabs(off[i]) : 0.0);
        hi = fmax(hi, diag[i] + radius);
        lo = fmin(lo, diag[i] - radius);
        if (i + 1 < k) pivmin = fmax(pivmin, off[i] * off[i]);
    }
    const double scale = fmax(fmax(fabs(hi), fabs(lo)), DBL_MIN_POSITIVE);
    pivmin *= DBL_MIN_POSITIVE;
    const double tol = 4.0 * DBL_EPSILON_ * scale;
    const double kf = (double)k;
    double x = hi;
    for (int step = 0; step < LAGUERRE_STEPS; ++step) {
        const Pivots p = pivots(diag, off, k, x, pivmin);
        if (p.above == 0) {
            hi = x;
            if (p.exact) break;
        } else {
            lo = x;
        }
        if (hi - lo <= tol) break;
        const double disc = sqrt(fmax((kf - 1.0) * (kf * p.h - p.g * p.g), 0.0));
        const double denom = p.g >= 0.0 ? p.g + disc : p.g - disc;
        const double stepv = kf / denom;
        double next = x - stepv;
        if (fabs(stepv) <= tol) {
            if (p.above == 0) break;
            next = p.above == 1 ? x + tol : NAN_D;
        }
        x = (isfinite(next) && next > lo && next < hi) ? next : 0.5 * (lo + hi);
    }
    return hi;
}

// Unit eigenvector y of T for theta: LU of T − θI with partial pivoting (LAPACK dgttrf) and
// three steps of inverse iteration. `lu` holds 5k doubles of scratch.
__device__ __noinline__ void tridiagonal_eigenvector(const double* diag, const double* off, int n,
                                        double theta, double* y, double* lu) {
    if (n == 1) {
        y[0] = 1.0;
        return;
    }
    double* dl = lu;
    double* d = lu + n;
    double* du = lu + 2 * n;
    double* du2 = lu + 3 * n;
    double* swapped = lu + 4 * n;
    double scale = fabs(theta);
    for (int i = 0; i < n; ++i) scale = fmax(scale, fabs(diag[i]));
    for (int i = 0; i + 1 < n; ++i) scale = fmax(scale, fabs(off[i]));
    scale = fmax(scale, DBL_MIN_POSITIVE);
    const double tiny = DBL_EPSILON_ * scale;
    for (int i = 0; i < n; ++i) {
        d[i] = diag[i] - theta;
        if (i + 1 < n) {
            dl[i] = off[i];
            du[i] = off[i];
            swapped[i] = 0.0;
        }
        if (i + 2 < n) du2[i] = 0.0;
    }
    for (int i = 0; i < n - 1; ++i) {
        if (fabs(d[i]) >= fabs(dl[i])) {
            if (d[i] != 0.0) {
                const double fact = dl[i] / d[i];
                dl[i] = fact;
                d[i + 1] -= fact * du[i];
            }
        } else {
            const double fact = d[i] / dl[i];
            d[i] = dl[i];
            dl[i] = fact;
            const double temp = du[i];
            du[i] = d[i + 1];
            d[i + 1] = temp - fact * d[i + 1];
            if (i + 2 < n) {
                du2[i] = du[i + 1];
                du[i + 1] *= -fact;
            }
            swapped[i] = 1.0;
        }
    }
    for (int i = 0; i < n; ++i) {
        if (fabs(d[i]) < tiny) d[i] = d[i] < 0.0 ? -tiny : tiny;
    }
    for (int i = 0; i < n; ++i) y[i] = uniform01(START_EIGENVECTOR, i) - 0.5;
    for (int it = 0; it < 3; ++it) {
        for (int i = 0; i < n - 1; ++i) {
            if (swapped[i] != 0.0) {
                const double temp = y[i];
                y[i] = y[i + 1];
                y[i + 1] = temp - dl[i] * y[i];
            } else {
                y[i + 1] -= dl[i] * y[i];
            }
        }
        y[n - 1] /= d[n - 1];
        y[n - 2] = (y[n - 2] - du[n - 2] * y[n - 1]) / d[n - 2];
        for (int i = n - 3; i >= 0; --i) y[i] = (y[i] - du[i] * y[i + 1] - du2[i] * y[i + 2]) / d[i];
        double s = 0.0;
        for (int i = 0; i < n; ++i) s += y[i] * y[i];
        const double nrm = sqrt(s);
        if (isfinite(nrm) && nrm > 0.0) {
            for (int i = 0; i < n; ++i) y[i] /= nrm;
        } else {
            for (int i = 0; i < n; ++i) y[i] = 0.0;
            y[n - 1] = 1.0;
        }
    }
}

// ---- Lanczos (src/linalg/lanczos.rs) ----

struct Workspace {
    // w and coef point into shared memory when n <= SHARED_NODES, else into `work`. `gram`
    // is the n × n block at the start of the graph's workspace: F Fᵀ on entry (and M itself
    // for a DenseOperator).
    double *gram, *basis, *isd, *trivial, *w, *u, *coef, *alpha, *beta, *y, *lu;
};

struct Shared {
    double scratch[32];
    double w[SHARED_NODES];
    double coef[SHARED_NODES + 1];
    double theta;
    int done;
};

// Gram–Schmidt vector j: the locked ones first, then the Lanczos basis.
__device__ __forceinline__ const double* against(const Locked& locked, const double* basis,
                                                 int n, int j) {
    return j < locked.count ? locked.v[j] : basis + (long long)(j - locked.count) * n;
}

// coef[j] = V_j · w for the `count` Gram–Schmidt vectors V_j, and coef[count] = w · w: one
// warp per vector, all at once, then one barrier. `w` must be complete (synced) on entry.
__device__ void bcoefficients(const Locked& locked, const double* basis, int count,
                              const double* w, int n, double* coef) {
    const int lane = threadIdx.x & 31, warps = blockDim.x >> 5;
    // j is the same on every lane of a warp, so the shuffles see the whole warp.
    for (int j = threadIdx.x >> 5; j <= count; j += warps) {
        const double* v = j < count ? against(locked, basis, n, j) : w;
        double s = 0.0;
        for (int i = lane; i < n; i += 32) s += v[i] * w[i];
        s = warp_sum(s);
        if (lane == 0) coef[j] = s;
    }
    __syncthreads();
}

// w -= Σ_j coef[j] V_j (in the order j = 0, 1, …, as the CPU's axpys), then returns ‖w‖.
__device__ double bsubtract(const Locked& locked, const double* basis, int count,
                            const double* coef, double* w, int n, double* scratch) {
    const int steps = count - locked.count;
    double s2 = 0.0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        double v = w[i];
        for (int l = 0; l < locked.count; ++l) v -= coef[l] * locked.v[l][i];
        const double* q = basis + i;
        const double* c = coef + locked.count;
        for (int j = 0; j < steps; ++j) v -= c[j] * q[(long long)j * n];
        w[i] = v;
        s2 += v * v;
    }
    // The barriers inside also publish w and free coef for the next round.
    return sqrt(block_sum(s2, scratch));
}

// Lanczos' convergence check after step k (src/linalg/lanczos.rs), on one thread: θ, the top
// eigenvalue of T (k + 1 steps), its unit eigenvector y, and whether the Ritz pair's residual
// b·|y_k| is within `tol` (or the Krylov space is exhausted). Serial and division-bound, it
// costs a Lanczos step's worth of time or more at n ≈ 200.
__device__ __noinline__ void check_convergence(const Workspace& ws, int k, double b,
                                               bool exhausted, double tol, Shared* sh) {
    const int steps = k + 1;
    const double theta = largest_eigenvalue(ws.alpha, ws.beta, steps);
    tridiagonal_eigenvector(ws.alpha, ws.beta, steps, theta, ws.y, ws.lu);
    sh->theta = theta;
    sh->done = exhausted || b * fabs(ws.y[k]) <= tol;
}

// Ends a run whose check after step k said done (every thread): θ, the steps, and the unit
// Ritz vector Q y into `out` when it is not null.
__device__ __noinline__ void finish_run(const Workspace& ws, int k, int n, double* out,
                                        double* value, int* steps_taken, Shared* sh) {
    *value = sh->theta;
    *steps_taken = k + 1;
    if (out == 0) return;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        double v = 0.0;
        for (int j = 0; j <= k; ++j) v += ws.y[j] * ws.basis[(long long)j * n + i];
        out[i] = v;
    }
    __syncthreads();
    bnormalize(out, n, sh->scratch);
}

// Top Ritz pair of M on the complement of `locked`; the unit Ritz vector goes to `out` when
// it is not null. Returns false when the complement is (numerically) empty.
//
// With `overlap_checks`, and a warp with no row of the products (the host adds one), a check
// runs on that warp's first thread while the other warps take the next step: the check after
// step k is read once step k + 1's product is done, and when it says done, that step is
// dropped. The checks fall on the same steps and give the same bits as inline ones, at the
// cost of one product per run; inline, every thread waits while one thread checks.
template <typename Op>
__device__ __noinline__ bool lanczos(const Workspace& ws, const Op& op, int n, const Locked& locked,
                                     unsigned long long key, double tol, bool overlap_checks,
                                     double* out, double* value, int* steps_taken, Shared* sh) {
    const int dim = n - locked.count;
    if (dim <= 0) return false;
    double* q0 = ws.basis;
    // Start vector: pseudo-random, deflated twice, from up to three streams.
    bool found = false;
    for (int attempt = 0; attempt < 3 && !found; ++attempt) {
        for (int i = threadIdx.x; i < n; i += blockDim.x)
            q0[i] = uniform01(key + attempt, i) - 0.5;
        __syncthreads();
        const double before = sqrt(bdot(q0, q0, n, sh->scratch));
        bdeflate(q0, locked, n, sh->scratch);
        bdeflate(q0, locked, n, sh->scratch);
        found = bnormalize(q0, n, sh->scratch) > 1e-8 * before;
    }
    if (!found) return false;
    const int checker = (int)blockDim.x - 32;
    const bool overlap = overlap_checks && checker >= n;
    // The step whose check runs beside this step's product, or -1; and that step's β.
    int pending = -1;
    double pending_b = 0.0;
    double* w = ws.w;
    long long work_since_check = 0;
    for (int k = 0;; ++k) {
        const double* qk = ws.basis + (long long)k * n;
        const double* prev = k > 0 ? ws.basis + (long long)(k - 1) * n : 0;
        const double beta_prev = k > 0 ? ws.beta[k - 1] : 0.0;
        if (pending >= 0 && (int)threadIdx.x == checker)
            check_convergence(ws, pending, pending_b, false, tol, sh);
        // w = M q_k and α = q_kᵀ w in one pass, thread i summing row i (`bgemv`'s order).
        double part = 0.0;
        for (int i = threadIdx.x; i < n; i += blockDim.x) {
            double s = 0.0;
            // Unrolled for independent loads in flight; the sum's order is unchanged.
#pragma unroll 8
            for (int j = 0; j < n; ++j) s += entry(op, i, j) * qk[j];
            w[i] = s;
            part += qk[i] * s;
        }
        const double a = block_sum(part, sh->scratch);
        // block_sum's barriers publish the pending check.
        if (pending >= 0) {
            if (sh->done) {
                finish_run(ws, pending, n, out, value, steps_taken, sh);
                return true;
            }
            pending = -1;
        }
        // Each thread updates the entries it computed: no barrier needed before.
        for (int i = threadIdx.x; i < n; i += blockDim.x) {
            double v = w[i] - a * qk[i];
            if (k > 0) v -= beta_prev * prev[i];
            w[i] = v;
        }
        if (threadIdx.x == 0) ws.alpha[k] = a;
        __syncthreads();
        // Classical Gram–Schmidt against the locked vectors and q_0..q_k, twice if needed.
        const int count = locked.count + k + 1;
        double b = 0.0;
        for (int pass = 0; pass < 2; ++pass) {
            bcoefficients(locked, ws.basis, count, w, n, ws.coef);
            const double before = sqrt(ws.coef[count]);
            b = bsubtract(locked, ws.basis, count, ws.coef, w, n, sh->scratch);
            if (b > DGKS * before) break;
        }
        const int steps = k + 1;
        const bool exhausted = steps >= dim || b <= tol;
        work_since_check += (long long)n * n + 4ll * steps * n;
        if (exhausted || work_since_check >= (long long)CHECK_COST * steps) {
            work_since_check = 0;
            // An exhausted run has no next step to take beside its check.
            if (overlap && !exhausted) {
                pending = k;
                pending_b = b;
            } else {
                if (threadIdx.x == 0) check_convergence(ws, k, b, exhausted, tol, sh);
                __syncthreads();
                if (sh->done) {
                    finish_run(ws, k, n, out, value, steps_taken, sh);
                    return true;
                }
            }
        }
        if (threadIdx.x == 0) ws.beta[k] = b;
        double* next = ws.basis + (long long)(k + 1) * n;
        for (int i = threadIdx.x; i < n; i += blockDim.x) next[i] = w[i] / b;
        __syncthreads();
    }
}

// ---- the kernels ----

// §B step 1 for every node of the batch: x_k = f / max(‖f‖, ε) in f64 (or f itself) for
// the feature row f at device address row_addr[k], one warp per node; nonfinite[k] says
// whether f holds a NaN or an infinity (then its sum of squares, in f64, is not finite), and
// nonfinite[rows] counts such rows (zero on entry), so the host reads the flags only when one
// is set.
// Rows are addressed one by one so that one call can gather the graphs of several buffers
// (every layer of a trace). `x` is the DGEMM's input: each graph's nodes, dim wide, one
// graph after the other.
KERNEL void fiedler_rows(const unsigned long long* row_addr, double* x, int* nonfinite,
                         int rows, int dim, int l2_normalize) {
    const int lane = threadIdx.x & 31;
    const int row = blockIdx.x * (int)(blockDim.x >> 5) + (int)(threadIdx.x >> 5);
    if (row >= rows) return;  // whole warps: no block barriers follow
    const float* f = (const float*)row_addr[row];
    double s = 0.0;
    for (int d = lane; d < dim; d += 32) {
        const double v = f[d];
        s += v * v;
    }
    s = __shfl_sync(FULL_MASK, warp_sum(s), 0);
    if (lane == 0) {
        const int bad = isfinite(s) ? 0 : 1;
        nonfinite[row] = bad;
        if (bad) atomicAdd(nonfinite + rows, 1);
    }
    const double inv = l2_normalize ? 1.0 / fmax(sqrt(s), NORMALIZE_EPS) : 1.0;
    double* out = x + (long long)row * dim;
    for (int d = lane; d < dim; d += 32) out[d] = (double)f[d] * inv;
}

// Graph g has nodes node_start[g] .. node_start[g+1]; on entry the first n² doubles of its
// workspace hold F Fᵀ (row-major, n × n; only the triangle j <= i is read), from which the
// operator is built in the storage `Op`. Outputs per node: the
// signed v (largest entry positive; |v| is its absolute value, taken on the host, which is
// exact: rounding to f32 commutes with the sign); per graph, in `stats` (four rows of
// `graphs`, one copy to the host): λ₂, λ₃ − λ₂ (NaN when undefined), ‖M u − μ u‖ and the
// Lanczos steps.
template <typename Op>
__device__ __forceinline__ void fiedler_graph(const int* node_start, const long long* work_start,
                                              double* work, int g, float* out_signed,
                                              double* stats, int graphs, bool overlap_checks,
                                              Shared& sh) {
    double* out_lambda2 = stats + STAT_LAMBDA2 * graphs;
    double* out_gap = stats + STAT_GAP * graphs;
    double* out_residual = stats + STAT_RESIDUAL * graphs;
    double* out_steps = stats + STAT_STEPS * graphs;
    const int first = node_start[g];
    const int n = node_start[g + 1] - first;
    Workspace ws;
    ws.gram = work + work_start[g];
    ws.basis = ws.gram + (long long)n * n;
    double* v = ws.basis + (long long)n * n;
    const bool in_shared = n <= SHARED_NODES;
    ws.isd = v;
    ws.trivial = v + n;
    ws.w = in_shared ? sh.w : v + 2 * n;
    ws.u = v + 3 * n;
    ws.coef = in_shared ? sh.coef : v + 4 * n;  // 2n
    ws.alpha = v + 6 * n;
    ws.beta = v + 7 * n;
    ws.y = v + 8 * n;
    ws.lu = v + 9 * n;  // 5n: the last of the WORK_VECTORS
    if (threadIdx.x == 0) {
        out_lambda2[g] = NAN_D;
        out_gap[g] = NAN_D;
        out_residual[g] = 0.0;
        out_steps[g] = 0.0;
    }
    if (n == 0) return;

    Op op;
    make_operator(&op, ws.gram, n);
    // §B step 2: W = max(F Fᵀ, 0) from the triangle j <= i (like the CPU's triangular
    // product); then W / max W.
    // W / max W is not stored: the two passes below divide each entry as they read it,
    // which gives the same values as dividing first (skipped when W is all zero).
    const double mx = bmax(clamp(op, ws.gram), sh.scratch);
    const double scale = mx > 0.0 ? mx : 1.0;
    // Step 3: guarded degrees; step 4: M = D^-1/2 W D^-1/2 and the trivial vector D^1/2 1.
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        double deg = 0.0;
        for (int j = 0; j < n; ++j) deg += entry(op, i, j) / scale;
        const bool guarded = deg < DEGREE_GUARD;
        ws.isd[i] = guarded ? 1.0 : 1.0 / sqrt(deg);
        ws.trivial[i] = guarded ? 0.0 : sqrt(deg);
    }
    __syncthreads();
    normalise(op, ws.isd, scale);
    __syncthreads();
    const bool has_trivial = bnormalize(ws.trivial, n, sh.scratch) > 0.0;

    // §B steps 5–6 (solve.rs).
    double* u = ws.u;
    double mu3 = NAN_D;
    int steps = 0;
    if (n == 1) {
        if (threadIdx.x == 0) out_signed[first] = (float)ws.isd[0];
        return;
    }
    if (!has_trivial) {
        for (int i = threadIdx.x; i < n; i += blockDim.x) u[i] = 1.0 / sqrt((double)n);
        __syncthreads();
    } else {
        Locked locked;
        locked.v[0] = ws.trivial;
        locked.v[1] = u;
        locked.count = 1;
        double mu2 = 0.0;
        int s1 = 0;
        if (!lanczos(ws, op, n, locked, START_FIEDLER, TOL_VECTOR, overlap_checks, u, &mu2, &s1,
                     &sh)) {
            for (int i = threadIdx.x; i < n; i += blockDim.x) u[i] = ws.trivial[i];
            __syncthreads();
        } else {
            steps = s1;
            locked.count = 2;
            int s2 = 0;
            double value = 0.0;
            if (lanczos(ws, op, n, locked, START_GAP, TOL_GAP, overlap_checks, 0, &value, &s2, &sh)) {
                mu3 = value;
                steps += s2;
            }
        }
    }
    // finish(): Rayleigh quotient, residual, v = D^-1/2 u with the largest entry positive.
    bgemv(op, u, ws.w, n);
    const double rayleigh = bdot(u, ws.w, n, sh.scratch);
    double r2 = 0.0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        const double d = ws.w[i] - rayleigh * u[i];
        r2 += d * d;
    }
    const double residual = sqrt(block_sum(r2, sh.scratch));
    if (threadIdx.x == 0) {
        double largest = 0.0;
        for (int i = 0; i < n; ++i) {
            const double x = u[i] * ws.isd[i];
            if (fabs(x) > fabs(largest)) largest = x;
        }
        sh.theta = largest < 0.0 ? -1.0 : 1.0;
        out_lambda2[g] = fmax(1.0 - rayleigh, 0.0);
        if (!has_trivial) {
            out_gap[g] = n >= 3 ? 0.0 : NAN_D;
        } else if (!isnan(mu3)) {
            out_gap[g] = fmax(rayleigh - mu3, 0.0);
        }
        out_residual[g] = residual;
        out_steps[g] = (double)steps;
    }
    __syncthreads();
    for (int i = threadIdx.x; i < n; i += blockDim.x)
        out_signed[first + i] = (float)(sh.theta * u[i] * ws.isd[i]);
}

// Graphs first_graph .. first_graph + count, a block at a time: block b takes graphs b,
// b + gridDim.x, …, so the host can bound how many are resident at once (each streams its
// n² operator at every Lanczos step; fewer at a time may keep them in L2). Every early return
// of fiedler_graph is taken by the whole block; the barrier frees `sh` (and the packed
// operator) for the next graph. The body of the three entry points below, which differ in
// their launch bounds and where the operator lives.
template <typename Op>
__device__ __forceinline__ void fiedler_graph_range(const int* node_start,
                                                    const long long* work_start, double* work,
                                                    int first_graph, int count, float* out_signed,
                                                    double* stats, int graphs, int overlap_checks,
                                                    Shared& sh) {
    for (int b = blockIdx.x; b < count; b += gridDim.x) {
        fiedler_graph<Op>(node_start, work_start, work, first_graph + b, out_signed, stats,
                          graphs, overlap_checks != 0, sh);
        __syncthreads();
    }
}

// Any graph, at most 512 threads (the host's graph_threads), which the bound lets the
// compiler count on; it then takes 128 registers a thread, so only two or three blocks fit
// on an SM.
KERNEL void __launch_bounds__(512)
    fiedler_graphs(const int* node_start, const long long* work_start, double* work,
                   int first_graph, int count, float* out_signed, double* stats, int graphs,
                   int overlap_checks) {
    __shared__ Shared sh;
    fiedler_graph_range<DenseOperator>(node_start, work_start, work, first_graph, count,
                                       out_signed, stats, graphs, overlap_checks, sh);
}

// Graphs of at most SMALL_GRAPH_THREADS nodes (the host picks it by n): at most that many
// threads, and a register budget that lets SMALL_GRAPH_BLOCKS blocks share an SM, since one
// small block alone leaves the SM idle at its barriers.
KERNEL void __launch_bounds__(SMALL_GRAPH_THREADS, SMALL_GRAPH_BLOCKS)
    fiedler_graphs_small(const int* node_start, const long long* work_start, double* work,
                         int first_graph, int count, float* out_signed, double* stats,
                         int graphs, int overlap_checks) {
    __shared__ Shared sh;
    fiedler_graph_range<DenseOperator>(node_start, work_start, work, first_graph, count,
                                       out_signed, stats, graphs, overlap_checks, sh);
}

// Graphs whose packed operator fits the block's shared memory (n(n+1)/2 doubles of dynamic
// shared memory, which the host sizes, next to this kernel's 10.3 KB static `Shared`: n <= 235
// on sm_90's 227 KB, <= 197 on sm_80's 163 KB), at most SMALL_GRAPH_THREADS threads. One such block
// fills an SM's shared memory at n = 196, so the bound lets it take all the registers it
// wants.
KERNEL void __launch_bounds__(SMALL_GRAPH_THREADS, 1)
    fiedler_graphs_shared(const int* node_start, const long long* work_start, double* work,
                          int first_graph, int count, float* out_signed, double* stats,
                          int graphs, int overlap_checks) {
    __shared__ Shared sh;
    fiedler_graph_range<PackedOperator>(node_start, work_start, work, first_graph, count,
                                        out_signed, stats, graphs, overlap_checks, sh);
}
