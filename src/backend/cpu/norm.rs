//! Layer normalisation over the last dimension (biased variance, as torch computes it).

use rayon::prelude::*;

pub(crate) fn layernorm(
    out: &mut [f32],
    stats: &mut [f32],
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    dim: usize,
    eps: f32,
) {
    out.par_chunks_exact_mut(dim)
        .zip(stats.par_chunks_exact_mut(2))
        .zip(x.par_chunks_exact(dim))
        .for_each(|((y, st), x)| {
            // f64 sums: the mean of a row with a large offset loses digits in f32.
            let mean = x.iter().map(|&v| v as f64).sum::<f64>() / dim as f64;
            let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / dim as f64;
            let rstd = 1.0 / (var + eps as f64).sqrt();
            for (((y, &x), &g), &b) in y.iter_mut().zip(x).zip(gamma).zip(beta) {
                *y = (((x as f64 - mean) * rstd) as f32) * g + b;
            }
            st[0] = mean as f32;
            st[1] = rstd as f32;
        });
}

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
    dx.par_chunks_exact_mut(dim)
        .zip(dy.par_chunks_exact(dim))
        .zip(x.par_chunks_exact(dim))
        .zip(stats.par_chunks_exact(2))
        .for_each(|(((dx, dy), x), st)| {
            let (mean, rstd) = (st[0], st[1]);
            let mut sum_g = 0.0f64;
            let mut sum_gx = 0.0f64;
            for ((&dy, &x), &g) in dy.iter().zip(x).zip(gamma) {
                let gdy = (dy * g) as f64;
                sum_g += gdy;
                sum_gx += gdy * ((x - mean) * rstd) as f64;
            }
            let mean_g = (sum_g / dim as f64) as f32;
            let mean_gx = (sum_gx / dim as f64) as f32;
            for (((dx, &dy), &x), &g) in dx.iter_mut().zip(dy).zip(x).zip(gamma) {
                let xhat = (x - mean) * rstd;
                let v = rstd * (dy * g - mean_g - xhat * mean_gx);
                if accumulate {
                    *dx += v;
                } else {
                    *dx = v;
                }
            }
        });
}
