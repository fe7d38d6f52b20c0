//! The LRP propagation rules of spec §D on the CPU: the signed z⁺ rule for linear layers, the
//! gradient×input rule for the two attention products, the add rule with its per-sample
//! rescale and the clone rule, all with the spec's stabilised division.

use rayon::prelude::*;

use super::attention::{offsets, SharedMut};
use super::matmul::{gemm, linear, linear_backward, Mat, Panels};
use crate::backend::AttentionShape;

/// The stabiliser of §D's division.
const EPS: f32 = 1e-9;

/// sdiv(a, b) = a / (b + ε) where b ≠ 0, else 0 (ε alone when b + ε = 0).
#[inline]
pub(crate) fn sdiv(a: f32, b: f32) -> f32 {
    if b == 0.0 {
        return 0.0;
    }
    let den = b + EPS;
    a / if den == 0.0 { EPS } else { den }
}

/// Relevance at x of out = x·Wᵀ (bias ignored, α = 1, β = 0): with Z = x⁺W⁺ᵀ + x⁻W⁻ᵀ and
/// S = sdiv(R, Z), R_x = x⁺ ⊙ (S·W⁺) + x⁻ ⊙ (S·W⁻).
///
/// Written with W and |W| only (W± = (W ± |W|)/2): Z = (x·Wᵀ + |x|·|W|ᵀ)/2 and
/// R_x = (x ⊙ (S·W) + |x| ⊙ (S·|W|))/2, four products over the two stored weights, three
/// when the forward's (output, bias) give x·Wᵀ.
#[allow(clippy::too_many_arguments)]
pub(crate) fn lrp_linear(
    rx: &mut [f32],
    r: &[f32],
    x: &[f32],
    forward: Option<(&[f32], &[f32])>,
    w: Panels,
    abs_w: Panels,
    m: usize,
    k: usize,
    n: usize,
    accumulate: bool,
) {
    let abs_x: Vec<f32> = x.iter().map(|v| v.abs()).collect();
    let z = match forward {
        Some((out, bias)) => out
            .chunks_exact(n)
            .flat_map(|row| row.iter().zip(bias).map(|(o, b)| o - b))
            .collect(),
        None => {
            let mut z = vec![0.0f32; m * n];
            linear(&mut z, x, w, None, m, k, n);
            z
        }
    };
    let mut z_abs = vec![0.0f32; m * n];
    linear(&mut z_abs, &abs_x, abs_w, None, m, k, n);
    let s: Vec<f32> = r
        .iter()
        .zip(z.iter().zip(&z_abs))
        .map(|(&r, (&z, &za))| sdiv(r, 0.5 * (z + za)))
        .collect();
    let mut c = vec![0.0f32; m * k];
    linear_backward(&mut c, &s, w, m, k, n, false);
    let mut c_abs = vec![0.0f32; m * k];
    linear_backward(&mut c_abs, &s, abs_w, m, k, n, false);
    let new = x
        .iter()
        .zip(&abs_x)
        .zip(c.iter().zip(&c_abs))
        .map(|((&x, &ax), (&c, &ca))| 0.5 * (x * c + ax * ca));
    if accumulate {
        rx.iter_mut().zip(new).for_each(|(o, v)| *o += v);
    } else {
        rx.iter_mut().zip(new).for_each(|(o, v)| *o = v);
    }
}

/// Relevance through softmax attention, per (sample, head), from R at the context:
/// ctx = P·V gives R_P = P ⊙ (S·Vᵀ)/2 (`cam`, what the methods read) and R_V = V ⊙ (Pᵀ·S)/2
/// with S = sdiv(R, ctx); softmax passes R_P on unchanged; the unscaled scores Q·Kᵀ give
/// R_Q = Q ⊙ (S'·K)/2 and R_K = K ⊙ (S'ᵀ·Q)/2 with S' = sdiv(R_P, Q·Kᵀ).
#[allow(clippy::too_many_arguments)]
pub(crate) fn lrp_attention(
    cam: &mut [f32],
    rq: &mut [f32],
    rkv: &mut [f32],
    rctx: &[f32],
    q: &[f32],
    kv: &[f32],
    probs: &[f32],
    ctx: &[f32],
    s: &AttentionShape,
) {
    let (nq, nk, hd, w) = (s.queries, s.keys, s.head_dim, s.width());
    let rq_ptr = SharedMut(rq.as_mut_ptr());
    let rkv_ptr = SharedMut(rkv.as_mut_ptr());
    cam.par_chunks_exact_mut(nq * nk)
        .zip(probs.par_chunks_exact(nq * nk))
        .enumerate()
        .for_each(|(bh, (cam, p))| {
            let (b, h) = (bh / s.heads, bh % s.heads);
            let o = offsets(s, b, h);
            let head_rows = |buf: &[f32], start: usize, stride: usize, rows: usize| {
                (0..rows)
                    .flat_map(|i| {
                        buf[start + i * stride..start + i * stride + hd]
                            .iter()
                            .copied()
                    })
                    .collect::<Vec<f32>>()
            };
            let qh = head_rows(q, o.q, w, nq);
            let kh = head_rows(kv, o.k, 2 * w, nk);
            let vh = head_rows(kv, o.v, 2 * w, nk);
            let sc: Vec<f32> = head_rows(rctx, o.q, w, nq)
                .iter()
                .zip(head_rows(ctx, o.q, w, nq))
                .map(|(&r, z)| sdiv(r, z))
                .collect();
            // SAFETY (every product below): the operands are this task's own head-sized
            // copies and outputs, with the shapes given.
            unsafe {
                gemm(
                    nq,
                    nk,
                    hd,
                    cam.as_mut_ptr(),
                    nk,
                    false,
                    Mat::rows(&sc, hd),
                    Mat::transposed(&vh, hd),
                    1.0,
                    false,
                );
            }
            cam.iter_mut().zip(p).for_each(|(c, &p)| *c *= 0.5 * p);
            let mut pts = vec![0.0f32; nk * hd];
            unsafe {
                gemm(
                    nk,
                    hd,
                    nq,
                    pts.as_mut_ptr(),
                    hd,
                    false,
                    Mat::transposed(p, nk),
                    Mat::rows(&sc, hd),
                    1.0,
                    false,
                );
            }
            let mut scores = vec![0.0f32; nq * nk];
            unsafe {
                gemm(
                    nq,
                    nk,
                    hd,
                    scores.as_mut_ptr(),
                    nk,
                    false,
                    Mat::rows(&qh, hd),
                    Mat::transposed(&kh, hd),
                    1.0,
                    false,
                );
            }
            let s2: Vec<f32> = cam.iter().zip(&scores).map(|(&r, &z)| sdiv(r, z)).collect();
            let mut s2k = vec![0.0f32; nq * hd];
            let mut s2tq = vec![0.0f32; nk * hd];
            unsafe {
                gemm(
                    nq,
                    hd,
                    nk,
                    s2k.as_mut_ptr(),
                    hd,
                    false,
                    Mat::rows(&s2, nk),
                    Mat::rows(&kh, hd),
                    1.0,
                    false,
                );
                gemm(
                    nk,
                    hd,
                    nq,
                    s2tq.as_mut_ptr(),
                    hd,
                    false,
                    Mat::transposed(&s2, nk),
                    Mat::rows(&qh, hd),
                    1.0,
                    false,
                );
            }
            // SAFETY: this task alone writes head h's columns of sample b's rows.
            for i in 0..nq {
                for d in 0..hd {
                    let at = i * hd + d;
                    unsafe { *rq_ptr.at(o.q + i * w + d) = 0.5 * qh[at] * s2k[at] };
                }
            }
            for j in 0..nk {
                for d in 0..hd {
                    let at = j * hd + d;
                    unsafe {
                        *rkv_ptr.at(o.k + j * 2 * w + d) = 0.5 * kh[at] * s2tq[at];
                        *rkv_ptr.at(o.v + j * 2 * w + d) = 0.5 * vh[at] * pts[at];
                    }
                }
            }
        });
}

/// The add rule for out = a + b over `samples` equal runs of rows: a ⊙ S and b ⊙ S with
/// S = sdiv(R, a + b), then rescaled so that, per sample, a gets |Σa|/(|Σa| + |Σb|) of ΣR
/// and b the rest. Sums in f64.
pub(crate) fn lrp_add(
    ra: &mut [f32],
    rb: &mut [f32],
    r: &[f32],
    a: &[f32],
    b: &[f32],
    samples: usize,
) {
    let len = r.len() / samples;
    ra.par_chunks_exact_mut(len)
        .zip(rb.par_chunks_exact_mut(len))
        .enumerate()
        .for_each(|(i, (ra, rb))| {
            let span = i * len..(i + 1) * len;
            let (r, a, b) = (&r[span.clone()], &a[span.clone()], &b[span]);
            let (mut sa, mut sb, mut sr) = (0.0f64, 0.0f64, 0.0f64);
            for j in 0..len {
                let s = sdiv(r[j], a[j] + b[j]);
                ra[j] = a[j] * s;
                rb[j] = b[j] * s;
                sa += ra[j] as f64;
                sb += rb[j] as f64;
                sr += r[j] as f64;
            }
            let sdiv64 = |x: f64, y: f64| {
                if y == 0.0 {
                    0.0
                } else {
                    x / (y + EPS as f64)
                }
            };
            let total = sa.abs() + sb.abs();
            let fa = sdiv64(sdiv64(sa.abs(), total) * sr, sa) as f32;
            let fb = sdiv64(sdiv64(sb.abs(), total) * sr, sb) as f32;
            ra.iter_mut().for_each(|v| *v *= fa);
            rb.iter_mut().for_each(|v| *v *= fb);
        });
}

/// The clone rule: R_x = x ⊙ Σ_i sdiv(R_i, x).
pub(crate) fn lrp_clone(rx: &mut [f32], x: &[f32], rs: &[&[f32]]) {
    rx.par_iter_mut().enumerate().for_each(|(j, o)| {
        *o = x[j] * rs.iter().map(|r| sdiv(r[j], x[j])).sum::<f32>();
    });
}
