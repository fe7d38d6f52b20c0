//! Dense products through the `gemm` crate's AVX-512 microkernels: linear layers over weights
//! stored in panels, and general strided products (per attention head, relevance matrices).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;

use gemm::Parallelism;
use rayon::prelude::*;

use super::attention::SharedMut;

/// Flops (2 per multiply-add) of every product run here, for `fiedler bench`.
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

/// Output features per weight panel: four AVX-512 vectors, the height of the gemm crate's
/// f32 microkernel.
const PANEL: usize = 64;

/// Tokens per task of a panel product: enough to amortise a call, few enough that the
/// gemm crate never repacks a panel (it does past 256·6 columns, see [`panel_product`]).
const TOKEN_ROWS: usize = 384;

/// A linear weight W [n, k] as `Cpu::upload_weight` stores it: W in panels of [`PANEL`]
/// output features, then Wᵀ in panels of [`PANEL`] input features. A panel of W is
/// `[k][PANEL]`: column d of it holds W[64p.., d], contiguous, exactly as the microkernel
/// streams it, so no product repacks a weight (repacking cost 5% of an LXMERT explanation,
/// done by both threads). The last panel of each is zero-padded.
#[derive(Clone, Copy)]
pub(crate) struct Panels<'a> {
    /// For x·Wᵀ: panels over W's n rows, each [k][PANEL].
    forward: &'a [f32],
    /// For dy·W: panels over W's k columns, each [n][PANEL].
    backward: &'a [f32],
}

impl<'a> Panels<'a> {
    /// Length of the stored form of a weight [n, k].
    pub fn stored_len(n: usize, k: usize) -> usize {
        n.next_multiple_of(PANEL) * k + k.next_multiple_of(PANEL) * n
    }

    /// W [n, k] (row-major, as Hugging Face stores it) in both panel layouts.
    pub fn pack(w: &[f32], n: usize, k: usize) -> Vec<f32> {
        let mut stored = vec![0.0; Self::stored_len(n, k)];
        let (forward, backward) = stored.split_at_mut(n.next_multiple_of(PANEL) * k);
        for (o, row) in w.chunks_exact(k.max(1)).enumerate() {
            for (i, &v) in row.iter().enumerate() {
                forward[(o / PANEL * k + i) * PANEL + o % PANEL] = v;
                backward[(i / PANEL * n + o) * PANEL + i % PANEL] = v;
            }
        }
        stored
    }

    /// The two layouts of a buffer made by [`Panels::pack`] (or an elementwise map of one).
    pub fn of(stored: &'a [f32], n: usize, k: usize) -> Self {
        let (forward, backward) = stored.split_at(n.next_multiple_of(PANEL) * k);
        Self { forward, backward }
    }
}

/// out[m, n] = x[m, k] · Wᵀ + bias.
pub(crate) fn linear(
    out: &mut [f32],
    x: &[f32],
    w: Panels,
    bias: Option<&[f32]>,
    m: usize,
    k: usize,
    n: usize,
) {
    panel_product(out, false, w.forward, bias, n, x, m, k);
}

/// dx[m, k] (+)= dy[m, n] · W[n, k].
pub(crate) fn linear_backward(
    dx: &mut [f32],
    dy: &[f32],
    w: Panels,
    m: usize,
    k: usize,
    n: usize,
    accumulate: bool,
) {
    panel_product(dx, accumulate, w.backward, None, k, dy, m, n);
}

/// out[t, f] (+)= Σ_d P[f, d] · x[t, d] (+ bias[f]) for `features` f, `tokens` t and `depth`
/// d, where P is stored in panels ([`Panels`]) and `out` [tokens, features] and `x`
/// [tokens, depth] are row-major.
///
/// One single-threaded gemm call per (panel, block of about [`TOKEN_ROWS`] tokens or fewer),
/// spread over the rayon threads. Each call's left operand is one panel, column-major with
/// unit row stride, which the gemm crate reads in place; its right operand, the tokens, also
/// needs no packing (unit stride along d). The crate would still pack the panel once more
/// than 8·6 tokens are in flight: that threshold is raised to its cap (256·6), far above a
/// block.
#[allow(clippy::too_many_arguments)]
fn panel_product(
    out: &mut [f32],
    accumulate: bool,
    panels: &[f32],
    bias: Option<&[f32]>,
    features: usize,
    x: &[f32],
    tokens: usize,
    depth: usize,
) {
    static READ_PANELS_IN_PLACE: Once = Once::new();
    READ_PANELS_IN_PLACE.call_once(|| gemm::set_lhs_packing_threshold_single_thread(256));
    FLOPS.fetch_add(2 * (tokens * features * depth) as u64, Ordering::Relaxed);
    let n_panels = features.div_ceil(PANEL);
    // Blocks of equal size (a multiple of the microkernel's 6 columns): 576 tokens run as
    // 2 × 288, not 384 + 192.
    let block_rows = tokens
        .div_ceil(tokens.div_ceil(TOKEN_ROWS).max(1))
        .next_multiple_of(6)
        .max(6);
    let jobs = n_panels * tokens.div_ceil(block_rows);
    let out_ptr = SharedMut(out.as_mut_ptr());
    let job = |j: usize| {
        let (block, panel) = (j / n_panels, j % n_panels);
        let (t0, f0) = (block * block_rows, panel * PANEL);
        let (rows, cols) = (block_rows.min(tokens - t0), PANEL.min(features - f0));
        // SAFETY: out holds tokens·features and x tokens·depth floats (checked by the
        // caller); each job writes its own [t0.., f0..] block of out.
        unsafe {
            gemm::gemm(
                cols,
                rows,
                depth,
                out_ptr.at(t0 * features + f0),
                features as isize,
                1,
                accumulate,
                panels.as_ptr().add(panel * depth * PANEL),
                PANEL as isize,
                1,
                x.as_ptr().add(t0 * depth),
                depth as isize,
                1,
                1.0,
                1.0,
                false,
                false,
                false,
                Parallelism::None,
            );
            // The bias while the block is still in cache: pre-filling the output with it
            // and accumulating would make the product read its output.
            if let Some(bias) = bias {
                let bias = &bias[f0..f0 + cols];
                for t in t0..t0 + rows {
                    let row = std::slice::from_raw_parts_mut(out_ptr.at(t * features + f0), cols);
                    row.iter_mut().zip(bias).for_each(|(y, &b)| *y += b);
                }
            }
        }
    };
    if tokens * features * depth < 1 << 18 {
        (0..jobs).for_each(job);
    } else {
        (0..jobs).into_par_iter().for_each(job);
    }
}
