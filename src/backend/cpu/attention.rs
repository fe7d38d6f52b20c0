//! Softmax self-attention over fused q|k|v rows, one task per (sample, head).

use super::matmul::{gemm, Mat};
use crate::backend::AttentionShape;
use rayon::prelude::*;

/// A raw pointer that tasks share to write disjoint parts of one buffer.
#[derive(Clone, Copy)]
struct SharedMut(*mut f32);
// SAFETY: every task writes a region (its own head's columns of its own sample's rows) that
// no other task touches; see the callers.
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}

impl SharedMut {
    fn at(self, offset: usize) -> *mut f32 {
        // SAFETY: offsets are computed inside the buffer by the callers.
        unsafe { self.0.add(offset) }
    }
}

struct Offsets {
    q: usize,
    k: usize,
    v: usize,
    ctx: usize,
}

fn offsets(s: &AttentionShape, b: usize, h: usize) -> Offsets {
    let w = s.width();
    let row0 = b * s.tokens;
    let q = row0 * 3 * w + h * s.head_dim;
    Offsets {
        q,
        k: q + w,
        v: q + 2 * w,
        ctx: row0 * w + h * s.head_dim,
    }
}

/// Row i's visible keys: the first `key_len` keys, and only j ≤ i when causal.
fn visible(s: &AttentionShape, key_len: usize, i: usize) -> usize {
    if s.causal {
        key_len.min(i + 1)
    } else {
        key_len
    }
}

pub(crate) fn attention(probs: &mut [f32], ctx: &mut [f32], qkv: &[f32], s: &AttentionShape) {
    let (n, hd, w) = (s.tokens, s.head_dim, s.width());
    let ctx_ptr = SharedMut(ctx.as_mut_ptr());
    probs
        .par_chunks_exact_mut(n * n)
        .enumerate()
        .for_each(|(bh, p)| {
            let (b, h) = (bh / s.heads, bh % s.heads);
            let o = offsets(s, b, h);
            let q = Mat::rows(qkv, 3 * w).offset(o.q);
            let kt = Mat::transposed(qkv, 3 * w).offset(o.k);
            // SAFETY: p is this task's own [n, n] block; q and k address rows of this sample.
            unsafe { gemm(n, n, hd, p.as_mut_ptr(), n, false, q, kt, s.scale(), false) };
            let key_len = s.key_len(b);
            for (i, row) in p.chunks_exact_mut(n).enumerate() {
                let seen = visible(s, key_len, i);
                let max = row[..seen]
                    .iter()
                    .copied()
                    .fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0.0f32;
                for v in &mut row[..seen] {
                    *v = (*v - max).exp();
                    sum += *v;
                }
                for v in &mut row[..seen] {
                    *v /= sum;
                }
                row[seen..].fill(0.0);
            }
            let v = Mat::rows(qkv, 3 * w).offset(o.v);
            // SAFETY: this task alone writes head h's columns of sample b's context rows.
            unsafe {
                gemm(
                    n,
                    hd,
                    n,
                    ctx_ptr.at(o.ctx),
                    w,
                    false,
                    Mat::rows(p, n),
                    v,
                    1.0,
                    false,
                )
            };
        });
}

pub(crate) fn attention_backward(
    dprobs: &mut [f32],
    dqkv: &mut [f32],
    dctx: &[f32],
    qkv: &[f32],
    probs: &[f32],
    s: &AttentionShape,
) {
    let (n, hd, w) = (s.tokens, s.head_dim, s.width());
    let dqkv_ptr = SharedMut(dqkv.as_mut_ptr());
    dprobs
        .par_chunks_exact_mut(n * n)
        .zip(probs.par_chunks_exact(n * n))
        .enumerate()
        .for_each(|(bh, (dp, p))| {
            let (b, h) = (bh / s.heads, bh % s.heads);
            let o = offsets(s, b, h);
            let dctx_rows = Mat::rows(dctx, w).offset(o.ctx);
            let vt = Mat::transposed(qkv, 3 * w).offset(o.v);
            // ∂y/∂A over every entry, masked ones included: autograd reports those too.
            // SAFETY: dp is this task's own [n, n] block.
            unsafe {
                gemm(
                    n,
                    n,
                    hd,
                    dp.as_mut_ptr(),
                    n,
                    false,
                    dctx_rows,
                    vt,
                    1.0,
                    false,
                )
            };

            // Softmax backward: dS = A ⊙ (dA − rowsum(A ⊙ dA)); masked entries have A = 0.
            let mut ds = vec![0.0f32; n * n];
            for ((ds, dp), p) in ds
                .chunks_exact_mut(n)
                .zip(dp.chunks_exact(n))
                .zip(p.chunks_exact(n))
            {
                let dot: f32 = dp.iter().zip(p).map(|(a, b)| a * b).sum();
                for ((ds, &dp), &p) in ds.iter_mut().zip(dp).zip(p) {
                    *ds = p * (dp - dot);
                }
            }
            let scale = s.scale();
            let k = Mat::rows(qkv, 3 * w).offset(o.k);
            let q = Mat::rows(qkv, 3 * w).offset(o.q);
            // SAFETY: this task alone writes head h's q, k and v columns of sample b's rows.
            unsafe {
                gemm(
                    n,
                    hd,
                    n,
                    dqkv_ptr.at(o.q),
                    3 * w,
                    false,
                    Mat::rows(&ds, n),
                    k,
                    scale,
                    false,
                );
                gemm(
                    n,
                    hd,
                    n,
                    dqkv_ptr.at(o.k),
                    3 * w,
                    false,
                    Mat::transposed(&ds, n),
                    q,
                    scale,
                    false,
                );
                gemm(
                    n,
                    hd,
                    n,
                    dqkv_ptr.at(o.v),
                    3 * w,
                    false,
                    Mat::transposed(p, n),
                    dctx_rows,
                    1.0,
                    false,
                );
            }
        });
}
