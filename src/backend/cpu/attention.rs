//! Softmax attention of query rows over key|value rows, one task per (sample, head).

use super::matmul::{gemm, Mat};
use crate::backend::{AttentionShape, HeadMean, HeadRows, MeanGraph, ReadoutRow};
use rayon::prelude::*;

/// A raw pointer that tasks share to write disjoint parts of one buffer.
#[derive(Clone, Copy)]
pub(crate) struct SharedMut(pub(crate) *mut f32);
// SAFETY: every task writes a region (its own head's columns of its own sample's rows) that
// no other task touches; see the callers.
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}

impl SharedMut {
    pub(crate) fn at(self, offset: usize) -> *mut f32 {
        // SAFETY: offsets are computed inside the buffer by the callers.
        unsafe { self.0.add(offset) }
    }
}

/// Where head h of sample b starts in the query-shaped rows and in the key|value rows.
pub(crate) struct Offsets {
    pub q: usize,
    pub k: usize,
    pub v: usize,
}

pub(crate) fn offsets(s: &AttentionShape, b: usize, h: usize) -> Offsets {
    let w = s.width();
    let q = b * s.queries * w + h * s.head_dim;
    let k = b * s.keys * 2 * w + h * s.head_dim;
    Offsets { q, k, v: k + w }
}

pub(crate) fn attention(
    probs: &mut [f32],
    ctx: &mut [f32],
    q: &[f32],
    kv: &[f32],
    s: &AttentionShape,
) {
    let (nq, nk, hd, w) = (s.queries, s.keys, s.head_dim, s.width());
    let ctx_ptr = SharedMut(ctx.as_mut_ptr());
    probs
        .par_chunks_exact_mut(nq * nk)
        .enumerate()
        .for_each(|(bh, p)| {
            let (b, h) = (bh / s.heads, bh % s.heads);
            let o = offsets(s, b, h);
            let q_rows = Mat::rows(q, w).offset(o.q);
            let kt = Mat::transposed(kv, 2 * w).offset(o.k);
            // SAFETY: p is this task's own [nq, nk] block; q and k address rows of this sample.
            unsafe {
                gemm(
                    nq,
                    nk,
                    hd,
                    p.as_mut_ptr(),
                    nk,
                    false,
                    q_rows,
                    kt,
                    s.scale(),
                    false,
                )
            };
            for (i, row) in p.chunks_exact_mut(nk).enumerate() {
                let seen = |j: &usize| s.visible(b, i, *j);
                let max = (0..nk)
                    .filter(seen)
                    .map(|j| row[j])
                    .fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0.0f32;
                for (j, v) in row.iter_mut().enumerate() {
                    *v = if seen(&j) { (*v - max).exp() } else { 0.0 };
                    sum += *v;
                }
                // A row that sees no key at all stays zero rather than 0/0.
                if sum > 0.0 {
                    row.iter_mut().for_each(|v| *v /= sum);
                }
            }
            let v = Mat::rows(kv, 2 * w).offset(o.v);
            // SAFETY: this task alone writes head h's columns of sample b's context rows.
            unsafe {
                gemm(
                    nq,
                    hd,
                    nk,
                    ctx_ptr.at(o.q),
                    w,
                    false,
                    Mat::rows(p, nk),
                    v,
                    1.0,
                    false,
                )
            };
        });
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn attention_backward(
    dprobs: &mut [f32],
    dq: &mut [f32],
    dkv: &mut [f32],
    dctx: &[f32],
    q: &[f32],
    kv: &[f32],
    probs: &[f32],
    s: &AttentionShape,
) {
    let (nq, nk, hd, w) = (s.queries, s.keys, s.head_dim, s.width());
    let dq_ptr = SharedMut(dq.as_mut_ptr());
    let dkv_ptr = SharedMut(dkv.as_mut_ptr());
    dprobs
        .par_chunks_exact_mut(nq * nk)
        .zip(probs.par_chunks_exact(nq * nk))
        .enumerate()
        .for_each(|(bh, (dp, p))| {
            let (b, h) = (bh / s.heads, bh % s.heads);
            let o = offsets(s, b, h);
            let dctx_rows = Mat::rows(dctx, w).offset(o.q);
            let vt = Mat::transposed(kv, 2 * w).offset(o.v);
            // ∂y/∂A over every entry, masked ones included: autograd reports those too.
            // SAFETY: dp is this task's own [nq, nk] block.
            unsafe {
                gemm(
                    nq,
                    nk,
                    hd,
                    dp.as_mut_ptr(),
                    nk,
                    false,
                    dctx_rows,
                    vt,
                    1.0,
                    false,
                )
            };

            // Softmax backward: dS = A ⊙ (dA − rowsum(A ⊙ dA)); masked entries have A = 0.
            let mut ds = vec![0.0f32; nq * nk];
            for ((ds, dp), p) in ds
                .chunks_exact_mut(nk)
                .zip(dp.chunks_exact(nk))
                .zip(p.chunks_exact(nk))
            {
                let dot: f32 = dp.iter().zip(p).map(|(a, b)| a * b).sum();
                for ((ds, &dp), &p) in ds.iter_mut().zip(dp).zip(p) {
                    *ds = p * (dp - dot);
                }
            }
            let scale = s.scale();
            let k_rows = Mat::rows(kv, 2 * w).offset(o.k);
            let q_rows = Mat::rows(q, w).offset(o.q);
            // SAFETY: this task alone writes head h's columns of sample b's rows of dq and dkv.
            unsafe {
                gemm(
                    nq,
                    hd,
                    nk,
                    dq_ptr.at(o.q),
                    w,
                    false,
                    Mat::rows(&ds, nk),
                    k_rows,
                    scale,
                    false,
                );
                gemm(
                    nk,
                    hd,
                    nq,
                    dkv_ptr.at(o.k),
                    2 * w,
                    false,
                    Mat::transposed(&ds, nk),
                    q_rows,
                    scale,
                    false,
                );
                gemm(
                    nk,
                    hd,
                    nq,
                    dkv_ptr.at(o.v),
                    2 * w,
                    false,
                    Mat::transposed(p, nk),
                    dctx_rows,
                    1.0,
                    false,
                );
            }
        });
}

/// out[b, e] = (Σ_h kind.term(x[b, h, e], grad[b, h, e])) / heads, heads summed in order;
/// lengths as `check::head_mean` accepts them (∇A reads as 0 where the kind ignores it).
pub fn head_mean(
    out: &mut [f32],
    kind: HeadMean,
    x: &[f32],
    grad: Option<&[f32]>,
    heads: usize,
    entries: usize,
) {
    let grad = grad.filter(|_| kind.reads_gradient());
    out.par_chunks_mut(entries.max(1))
        .enumerate()
        .for_each(|(b, out)| {
            out.fill(0.0);
            for h in 0..heads {
                let at = (b * heads + h) * entries;
                let x = &x[at..at + entries];
                match grad {
                    Some(g) => {
                        let g = &g[at..at + entries];
                        for ((o, &x), &g) in out.iter_mut().zip(x).zip(g) {
                            *o += kind.term(x, g);
                        }
                    }
                    None => {
                        for (o, &x) in out.iter_mut().zip(x) {
                            *o += kind.term(x, 0.0);
                        }
                    }
                }
            }
            out.iter_mut().for_each(|v| *v /= heads as f32);
        });
}

/// `Backend::head_rows` on the host, for rows as `check::head_rows` accepts them: each row's
/// sample read by `head_rows_of` over its tokens, at its query.
pub fn head_rows(
    x: &[f32],
    grad: &[f32],
    heads: usize,
    tokens: usize,
    rows: &[ReadoutRow<'_>],
) -> Vec<HeadRows> {
    let span = heads * tokens * tokens;
    rows.par_iter()
        .map(|r| {
            let maps = r.sample * span..(r.sample + 1) * span;
            head_rows_of(
                &x[maps.clone()],
                &grad[maps],
                heads,
                tokens,
                r.tokens,
                r.tokens,
                r.tokens[r.query],
            )
        })
        .collect()
}

/// What Grad-CAM reads of one sample's [heads, rows, `stride`] maps: per head, ∇A summed in
/// f64 over `queries` × `keys` in row-major order and divided by their count, and row
/// `query` of A over `keys`. The single-stream towers read a square block of their tokens;
/// LXMERT's text→image attention a rectangle.
pub fn head_rows_of(
    x: &[f32],
    grad: &[f32],
    heads: usize,
    stride: usize,
    queries: &[usize],
    keys: &[usize],
    query: usize,
) -> HeadRows {
    let map = x.len() / heads.max(1);
    let grad_means = (0..heads)
        .map(|h| {
            let g = &grad[h * map..(h + 1) * map];
            let mut sum = 0.0f64;
            for &i in queries {
                for &j in keys {
                    sum += g[i * stride + j] as f64;
                }
            }
            (sum / (queries.len() * keys.len()) as f64) as f32
        })
        .collect();
    let rows = (0..heads)
        .flat_map(|h| keys.iter().map(move |&j| x[h * map + query * stride + j]))
        .collect();
    HeadRows { grad_means, rows }
}

/// `Backend::head_mean_matvec` on the host: per graph, each entry of the head mean as
/// `head_mean` forms it (heads summed in order from 0, then divided), times the vector's
/// entry, summed in order; lengths as `check::head_mean_matvec` accepts them.
pub fn head_mean_matvec(
    kind: HeadMean,
    x: &[f32],
    grad: Option<&[f32]>,
    heads: usize,
    tokens: usize,
    graphs: &[MeanGraph<'_>],
) -> Vec<Vec<f32>> {
    let grad = grad.filter(|_| kind.reads_gradient());
    let entries = tokens * tokens;
    graphs
        .par_iter()
        .map(|g| {
            let maps = g.sample * heads * entries;
            let mean = |e: usize| {
                let mut s = 0.0f32;
                for h in 0..heads {
                    let at = maps + h * entries + e;
                    s += kind.term(x[at], grad.map_or(0.0, |g| g[at]));
                }
                s / heads as f32
            };
            g.tokens
                .iter()
                .map(|&ti| {
                    g.tokens
                        .iter()
                        .zip(g.vector)
                        .map(|(&tj, &v)| mean(ti * tokens + tj) * v)
                        .sum()
                })
                .collect()
        })
        .collect()
}
