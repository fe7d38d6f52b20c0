//! Layer normalisation over the last dimension (biased variance, as torch computes it).
//!
//! The row sums run in f64, eight partial sums at a time (`simd`): the mean of a row with a
//! large offset loses digits in f32, and one running f64 sum per row was a chain of
//! dependent adds that cost 2% of an LXMERT explanation.

use super::simd::{total, vectorised, LANES};
use rayon::prelude::*;

/// Rows per rayon task.
const ROWS: usize = 16;

/// Σ f(x_i) over a row in f64.
#[inline(always)]
fn row_sum(x: &[f32], f: impl Fn(f32) -> f64) -> f64 {
    let mut lanes = [0.0f64; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail: f64 = chunks.remainder().iter().map(|&v| f(v)).sum();
    for c in chunks {
        for (lane, &v) in lanes.iter_mut().zip(c) {
            *lane += f(v);
        }
    }
    total(lanes, tail)
}

#[inline(always)]
fn layernorm_rows(
    out: &mut [f32],
    stats: &mut [f32],
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    dim: usize,
    eps: f32,
) {
    for ((y, st), x) in out
        .chunks_exact_mut(dim)
        .zip(stats.chunks_exact_mut(2))
        .zip(x.chunks_exact(dim))
    {
        let mean = row_sum(x, |v| v as f64) / dim as f64;
        let var = row_sum(x, |v| (v as f64 - mean).powi(2)) / dim as f64;
        let rstd = 1.0 / (var + eps as f64).sqrt();
        for (((y, &x), &g), &b) in y.iter_mut().zip(x).zip(gamma).zip(beta) {
            *y = (((x as f64 - mean) * rstd) as f32) * g + b;
        }
        st[0] = mean as f32;
        st[1] = rstd as f32;
    }
}

vectorised!(fn layernorm_vectorised(
    out: &mut [f32],
    stats: &mut [f32],
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    dim: usize,
    eps: f32,
) => layernorm_rows);

pub(crate) fn layernorm(
    out: &mut [f32],
    stats: &mut [f32],
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    dim: usize,
    eps: f32,
) {
    out.par_chunks_mut(ROWS * dim)
        .zip(stats.par_chunks_mut(ROWS * 2))
        .zip(x.par_chunks(ROWS * dim))
        .for_each(|((y, st), x)| layernorm_vectorised(y, st, x, gamma, beta, dim, eps));
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn layernorm_backward_rows(
    dx: &mut [f32],
    dy: &[f32],
    x: &[f32],
    stats: &[f32],
    gamma: &[f32],
    dim: usize,
    accumulate: bool,
) {
    for (((dx, dy), x), st) in dx
        .chunks_exact_mut(dim)
        .zip(dy.chunks_exact(dim))
        .zip(x.chunks_exact(dim))
        .zip(stats.chunks_exact(2))
    {
        let (mean, rstd) = (st[0], st[1]);
        // Σ g·dy and Σ g·dy·x̂, each term rounded to f32 first as one running sum had it.
        let (mut sum_g, mut sum_gx) = ([0.0f64; LANES], [0.0f64; LANES]);
        let (mut tail_g, mut tail_gx) = (0.0f64, 0.0f64);
        let term = |dy: f32, x: f32, g: f32| {
            let gdy = (dy * g) as f64;
            (gdy, gdy * ((x - mean) * rstd) as f64)
        };
        let (dyc, xc, gc) = (
            dy.chunks_exact(LANES),
            x.chunks_exact(LANES),
            gamma.chunks_exact(LANES),
        );
        for ((&dy, &x), &g) in dyc
            .remainder()
            .iter()
            .zip(xc.remainder())
            .zip(gc.remainder())
        {
            let (a, b) = term(dy, x, g);
            tail_g += a;
            tail_gx += b;
        }
        for ((dy, x), g) in dyc.zip(xc).zip(gc) {
            for l in 0..LANES {
                let (a, b) = term(dy[l], x[l], g[l]);
                sum_g[l] += a;
                sum_gx[l] += b;
            }
        }
        let mean_g = (total(sum_g, tail_g) / dim as f64) as f32;
        let mean_gx = (total(sum_gx, tail_gx) / dim as f64) as f32;
        for (((dx, &dy), &x), &g) in dx.iter_mut().zip(dy).zip(x).zip(gamma) {
            let xhat = (x - mean) * rstd;
            let v = rstd * (dy * g - mean_g - xhat * mean_gx);
            if accumulate {
                *dx += v;
            } else {
                *dx = v;
            }
        }
    }
}

vectorised!(fn layernorm_backward_vectorised(
    dx: &mut [f32],
    dy: &[f32],
    x: &[f32],
    stats: &[f32],
    gamma: &[f32],
    dim: usize,
    accumulate: bool,
) => layernorm_backward_rows);

/// dx (+)= rstd·(g⊙dy − mean(g⊙dy) − x̂·mean(g⊙dy⊙x̂)).
pub(crate) fn layernorm_backward(
    dx: &mut [f32],
    dy: &[f32],
    x: &[f32],
    stats: &[f32],
    gamma: &[f32],
    dim: usize,
    accumulate: bool,
) {
    dx.par_chunks_mut(ROWS * dim)
        .zip(dy.par_chunks(ROWS * dim))
        .zip(x.par_chunks(ROWS * dim))
        .zip(stats.par_chunks(ROWS * 2))
        .for_each(|(((dx, dy), x), st)| {
            layernorm_backward_vectorised(dx, dy, x, st, gamma, dim, accumulate)
        });
}
