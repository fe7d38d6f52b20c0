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
    product(m, n, k, dst, dst_rs, 1, accumulate, lhs, rhs, beta, par);
}

/// Depth of one call into the gemm crate: each output element is a chain of fused
/// multiply-adds over at most this many terms, and the chains are added in order.
const DEPTH_RUN: usize = 512;

/// The depth runs of a product k deep, as (first term, terms): [`DEPTH_RUN`] each, but
/// never one of 1 or 2 terms, which the crate would take through its outer-product path
/// (k = 513 runs as 509 + 4). One run, of 0 terms, when k is 0.
fn depth_runs(k: usize) -> impl Iterator<Item = (usize, usize)> {
    let (mut start, mut done) = (0, false);
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        let len = match k - start {
            rest if rest <= DEPTH_RUN => rest,
            rest if rest - DEPTH_RUN < 3 => DEPTH_RUN - 3,
            _ => DEPTH_RUN,
        };
        start += len;
        done = start == k;
        Some((start - len, len))
    })
}

/// dst[m, n] = (dst if `accumulate`) + beta · lhs[m, k] · rhs[k, n], with dst's element
/// (i, j) at `dst[i·dst_rs + j·dst_cs]`.
///
/// Every product ends in the gemm crate's microkernels, in the [`depth_runs`] of k, so an
/// element is the same sum of the same terms in the same order whatever m and n are: a
/// token's result does not depend on how many tokens share the call (the samples of a batch,
/// a text's padding). Padding inside a sum (the keys of a padded sequence) adds exact zeros,
/// which change nothing unless they move a run's boundary among the real terms: ViLT's
/// image tokens, behind its padded text, past the 512th key.
///
/// Left to itself the crate picks its depth blocking from the shape (and the cache sizes),
/// and takes other paths that sum in other orders: matrix–vector for m or n of 1, outer
/// products for k ≤ 2, dot products for small m·n with both operands contiguous along k.
/// Through any of these, explaining a sample alone or in a batch moved Transformer
/// Attribution's maps by up to 61% of their maximum.
///
/// # Safety
/// As for [`gemm`], with `dst` addressed by its two strides.
#[allow(clippy::too_many_arguments)]
unsafe fn product(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    dst_cs: usize,
    accumulate: bool,
    lhs: Mat,
    rhs: Mat,
    beta: f32,
    par: Parallelism,
) {
    if m == 0 || n == 0 {
        return;
    }
    let dot_products = m * n <= 256 && lhs.cs == 1 && rhs.rs == 1;
    if m < 2 || n < 2 || (1..3).contains(&k) || dot_products {
        return widened(m, n, k, dst, dst_rs, dst_cs, accumulate, lhs, rhs, beta);
    }
    for (d0, len) in depth_runs(k) {
        let (lhs, rhs) = (lhs.offset(d0 * lhs.cs), rhs.offset(d0 * rhs.rs));
        gemm::gemm(
            m,
            n,
            len,
            dst,
            dst_cs as isize,
            dst_rs as isize,
            accumulate || d0 > 0,
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
}

/// [`product`] on copies that keep the crate on its microkernels: at least 2 rows, 2 columns
/// and (unless 0) 3 terms deep, zero-padded (the padded terms add exact zeros at the end of
/// each element's chain; padded rows and columns are dropped), the left operand column-major
/// where the crate would take its dot-product path. Only what falls short is copied. The
/// shapes that come here are small, bar a single token through a large weight, whose right
/// operand and output alone are copied.
#[allow(clippy::too_many_arguments)]
unsafe fn widened(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    dst_cs: usize,
    accumulate: bool,
    lhs: Mat,
    rhs: Mat,
    beta: f32,
) {
    let (mw, nw) = (m.max(2), n.max(2));
    let kw = if k == 0 { 0 } else { k.max(3) };
    let column_major =
        |a: Mat, rows: usize, cols: usize, padded_rows: usize, padded_cols: usize| {
            let mut c = vec![0.0f32; padded_rows * padded_cols.max(1)];
            for j in 0..cols {
                for i in 0..rows {
                    c[j * padded_rows + i] = *a.ptr.add(i * a.rs + j * a.cs);
                }
            }
            c
        };
    let dot_products = mw * nw <= 256 && lhs.cs == 1;
    let lhs_copy = (m < 2 || kw != k || dot_products).then(|| column_major(lhs, m, k, mw, kw));
    let rhs_copy = (n < 2 || kw != k).then(|| column_major(rhs, k, n, kw, nw));
    let (lhs, rhs) = (
        lhs_copy.as_ref().map_or(lhs, |c| Mat::transposed(c, mw)),
        rhs_copy.as_ref().map_or(rhs, |c| Mat::transposed(c, kw)),
    );
    if m == mw && n == nw {
        return product(
            m,
            n,
            kw,
            dst,
            dst_rs,
            dst_cs,
            accumulate,
            lhs,
            rhs,
            beta,
            Parallelism::None,
        );
    }
    let at = |i: usize, j: usize| i * dst_rs + j * dst_cs;
    let mut out = vec![0.0f32; mw * nw];
    if accumulate {
        for j in 0..n {
            for i in 0..m {
                out[j * mw + i] = *dst.add(at(i, j));
            }
        }
    }
    let o = out.as_mut_ptr();
    product(
        mw,
        nw,
        kw,
        o,
        1,
        mw,
        accumulate,
        lhs,
        rhs,
        beta,
        Parallelism::None,
    );
    for j in 0..n {
        for i in 0..m {
            *dst.add(at(i, j)) = out[j * mw + i];
        }
    }
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
            product(
                cols,
                rows,
                depth,
                out_ptr.at(t0 * features + f0),
                1,
                features,
                accumulate,
                Mat::transposed(&panels[panel * depth * PANEL..], PANEL),
                Mat::transposed(&x[t0 * depth..], depth),
                1.0,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linalg::synthetic::random_features;

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    /// x · Wᵀ + b over `tokens` rows of x, as the backend runs a linear layer.
    fn linear_of(x: &[f32], w: &[f32], b: &[f32], tokens: usize, k: usize, n: usize) -> Vec<f32> {
        let stored = Panels::pack(w, n, k);
        let mut out = vec![f32::NAN; tokens * n];
        linear(
            &mut out,
            x,
            Panels::of(&stored, n, k),
            Some(b),
            tokens,
            k,
            n,
        );
        out
    }

    #[test]
    fn a_tokens_output_does_not_depend_on_the_tokens_beside_it() {
        // 200 outputs: three full panels and one of 8. Depths below, at and past one run,
        // and a feed-forward's 3072.
        let (tokens, n) = (400, 200);
        for k in [3, 512, 700, 1300, 3072] {
            let x = random_features(tokens, k, 1);
            let w = random_features(n, k, 2);
            let b = random_features(1, n, 3);
            let all = linear_of(&x, &w, &b, tokens, k, n);
            for (first, count) in [
                (0, 1),
                (399, 1),
                (7, 2),
                (0, 197),
                (100, 6),
                (13, 7),
                (5, 394),
            ] {
                let part = &x[first * k..(first + count) * k];
                let out = linear_of(part, &w, &b, count, k, n);
                assert!(
                    bits(&out) == bits(&all[first * n..(first + count) * n]),
                    "k = {k}: tokens {first}..{} alone differ from the same tokens among {tokens}",
                    first + count
                );
            }
        }
    }

    /// dst[m, n] = beta · lhs · rhs through [`gemm`], lhs row-major [m, k] (row stride
    /// `lhs_rs`) and rhs as the transpose of a row-major [n, k] (row stride `rhs_cs`), as
    /// attention's Q·Kᵀ passes them.
    fn dot_shaped(
        lhs: &[f32],
        rhs: &[f32],
        m: usize,
        n: usize,
        k: usize,
        stride: usize,
    ) -> Vec<f32> {
        let mut dst = vec![0.25f32; m * n];
        // SAFETY: the operands hold m and n rows of `stride` ≥ k floats; dst is m × n.
        unsafe {
            gemm(
                m,
                n,
                k,
                dst.as_mut_ptr(),
                n,
                true,
                Mat::rows(lhs, stride),
                Mat::transposed(rhs, stride),
                BETA,
                // Every rayon thread where the product is large enough.
                true,
            )
        };
        dst
    }

    /// A product's scale that is not a power of two, as attention's 1/√d is not for most d.
    const BETA: f32 = 0.3;

    #[test]
    fn depth_runs_cover_the_depth_in_runs_of_3_to_512_terms() {
        let runs = |k| depth_runs(k).collect::<Vec<_>>();
        assert_eq!(runs(0), [(0, 0)]);
        assert_eq!(runs(2), [(0, 2)]);
        assert_eq!(runs(512), [(0, 512)]);
        assert_eq!(runs(513), [(0, 509), (509, 4)]);
        assert_eq!(runs(1026), [(0, 512), (512, 509), (1021, 5)]);
        for k in 3..2000 {
            let runs = runs(k);
            assert!(
                runs.iter().all(|&(_, len)| (3..=DEPTH_RUN).contains(&len)),
                "{k}: {runs:?}"
            );
            let mut ends = runs.iter().map(|&(start, len)| start + len);
            assert!(runs
                .iter()
                .skip(1)
                .map(|r| r.0)
                .eq(ends.clone().take(runs.len() - 1)));
            assert_eq!(ends.next_back(), Some(k));
        }
    }

    #[test]
    fn a_products_elements_do_not_depend_on_its_shape() {
        // The crate would take its dot-product path for small m·n, its matrix–vector paths
        // for m or n of 1 and its outer-product path for k ≤ 2 (or a last depth run of 1 or
        // 2 terms): each element must still be the one a large product gives, and that one
        // the product's value.
        let stride = 1100;
        let (lhs, rhs) = (
            random_features(30, stride, 4),
            random_features(50, stride, 5),
        );
        for k in [1, 2, 3, 37, 513, 514, 1026] {
            let all = dot_shaped(&lhs, &rhs, 30, 50, k, stride);
            for (i, j) in [(0, 0), (7, 3), (29, 49)] {
                let dot: f64 = (0..k)
                    .map(|d| f64::from(lhs[i * stride + d]) * f64::from(rhs[j * stride + d]))
                    .sum();
                let value = 0.25 + f64::from(BETA) * dot;
                let error = (f64::from(all[i * 50 + j]) - value).abs();
                assert!(
                    error <= 1e-5 * (k as f64).sqrt(),
                    "k = {k}: ({i}, {j}) off by {error}"
                );
            }
            for (m, n) in [(1, 1), (1, 50), (30, 1), (2, 2), (5, 7), (16, 16), (30, 9)] {
                let part = dot_shaped(&lhs, &rhs, m, n, k, stride);
                for i in 0..m {
                    assert!(
                        bits(&part[i * n..(i + 1) * n]) == bits(&all[i * 50..i * 50 + n]),
                        "k = {k}: row {i} of a {m} × {n} product differs from the 30 × 50 one"
                    );
                }
            }
        }
    }
}
