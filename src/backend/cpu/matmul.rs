//! Dense products through the `gemm` crate (blocked, AVX-512 microkernels, rayon threads).

use std::sync::atomic::{AtomicU64, Ordering};

use gemm::Parallelism;
use rayon::prelude::*;

/// Flops (2 per multiply-add) of every product [`gemm`] has run, for `fiedler bench`.
static FLOPS: AtomicU64 = AtomicU64::new(0);

/// Floating-point operations of the CPU backend's dense products since the process started
/// (2 per multiply-add; elementwise work is not counted). Benchmarks read it before and after
/// a pass to report achieved GFLOP/s.
pub fn matmul_flops() -> u64 {
    FLOPS.load(Ordering::Relaxed)
}

/// A row-major matrix operand: element (i, j) lives at `ptr[i·rs + j·cs]`.
#[derive(Clone, Copy)]
pub(crate) struct Mat {
    pub ptr: *const f32,
    pub rs: usize,
    pub cs: usize,
}

impl Mat {
    pub fn rows(data: &[f32], stride: usize) -> Self {
        Self {
            ptr: data.as_ptr(),
            rs: stride,
            cs: 1,
        }
    }

    /// The transpose of a row-major matrix with row stride `stride`.
    pub fn transposed(data: &[f32], stride: usize) -> Self {
        Self {
            ptr: data.as_ptr(),
            rs: 1,
            cs: stride,
        }
    }

    pub fn offset(self, elements: usize) -> Self {
        // SAFETY: callers stay inside the buffer the pointer came from.
        Self {
            ptr: unsafe { self.ptr.add(elements) },
            ..self
        }
    }
}

/// Small products (per attention head) run single-threaded: the caller parallelises across
/// heads. Large ones use every rayon thread.
fn parallelism(m: usize, n: usize, k: usize) -> Parallelism {
    if m * n * k < 1 << 18 {
        Parallelism::None
    } else {
        Parallelism::Rayon(0)
    }
}

/// dst[m, n] (dst_rs row stride) = alpha·dst + beta·lhs[m, k]·rhs[k, n].
///
/// # Safety
/// The pointers must address valid memory for the given shapes and strides, and `dst` must
/// not alias `lhs` or `rhs` or be written by another thread meanwhile.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
    lhs: Mat,
    rhs: Mat,
    beta: f32,
    threads: bool,
) {
    FLOPS.fetch_add(2 * (m * n * k) as u64, Ordering::Relaxed);
    let par = if threads {
        parallelism(m, n, k)
    } else {
        Parallelism::None
    };
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        dst_rs as isize,
        accumulate,
        lhs.ptr,
        lhs.cs as isize,
        lhs.rs as isize,
        rhs.ptr,
        rhs.cs as isize,
        rhs.rs as isize,
        1.0,
        beta,
        false,
        false,
        false,
        par,
    );
}

/// out[m, n] = x[m, k] · Wᵀ + bias, with W [n, k] stored transposed as `wt` [k, n]
/// (see `Cpu::upload_weight`).
pub(crate) fn linear(
    out: &mut [f32],
    x: &[f32],
    wt: &[f32],
    bias: Option<&[f32]>,
    m: usize,
    k: usize,
    n: usize,
) {
    // SAFETY: lengths were checked by the caller: out m·n, x m·k, wt k·n.
    unsafe {
        gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            n,
            false,
            Mat::rows(x, k),
            Mat::rows(wt, n),
            1.0,
            true,
        );
    }
    // The bias after the product, while its output is still in cache: pre-filling the
    // output with it and accumulating cost the product 3–8% at a base model's shapes.
    if let Some(bias) = bias.filter(|_| n > 0) {
        out.par_chunks_mut(BIAS_ROWS * n).for_each(|rows| {
            for row in rows.chunks_exact_mut(n) {
                row.iter_mut().zip(bias).for_each(|(y, &b)| *y += b);
            }
        });
    }
}

/// Rows per rayon task of the bias add.
const BIAS_ROWS: usize = 32;

/// dx[m, k] (+)= dy[m, n] · W[n, k], with W stored as Hugging Face stores it.
pub(crate) fn linear_backward(
    dx: &mut [f32],
    dy: &[f32],
    w: &[f32],
    m: usize,
    k: usize,
    n: usize,
    accumulate: bool,
) {
    // SAFETY: lengths were checked by the caller: dx m·k, dy m·n, w n·k.
    unsafe {
        gemm(
            m,
            k,
            n,
            dx.as_mut_ptr(),
            k,
            accumulate,
            Mat::rows(dy, n),
            Mat::rows(w, k),
            1.0,
            true,
        );
    }
}
