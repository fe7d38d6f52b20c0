//! Token assembly: image patches, class token, token and position embeddings, row gathers.

use crate::backend::PatchGeometry;
use rayon::prelude::*;

/// Rows of flattened patches in raster order, each ordered (channel, row, column) — the
/// order a stride-`patch` convolution weight [out, channels, patch, patch] flattens to.
pub(crate) fn patchify(out: &mut [f32], pixels: &[f32], g: PatchGeometry) {
    let (gh, gw) = g.grid();
    let p = g.patch;
    let image_len = g.channels * g.height * g.width;
    out.par_chunks_exact_mut(g.patch_len())
        .enumerate()
        .for_each(|(row, dst)| {
            let (b, cell) = (row / (gh * gw), row % (gh * gw));
            let (py, px) = (cell / gw, cell % gw);
            let image = &pixels[b * image_len..(b + 1) * image_len];
            for c in 0..g.channels {
                for y in 0..p {
                    let src = c * g.height * g.width + (py * p + y) * g.width + px * p;
                    let d = (c * p + y) * p;
                    dst[d..d + p].copy_from_slice(&image[src..src + p]);
                }
            }
        });
}

/// `pos` is one table for every sample ([tokens, dim]) or one per sample ([batch·tokens, dim]).
pub(crate) fn prepend_class_add_positions(
    out: &mut [f32],
    patches: &[f32],
    class: &[f32],
    pos: &[f32],
    tokens: usize,
    dim: usize,
) {
    let per_sample = (tokens - 1) * dim;
    let shared = pos.len() == tokens * dim;
    out.par_chunks_exact_mut(tokens * dim)
        .enumerate()
        .for_each(|(b, sample)| {
            let pos = if shared {
                pos
            } else {
                &pos[b * tokens * dim..(b + 1) * tokens * dim]
            };
            for (t, row) in sample.chunks_exact_mut(dim).enumerate() {
                let src = if t == 0 {
                    class
                } else {
                    &patches[b * per_sample + (t - 1) * dim..][..dim]
                };
                for ((o, &s), &p) in row.iter_mut().zip(src).zip(&pos[t * dim..(t + 1) * dim]) {
                    *o = s + p;
                }
            }
        });
}

/// out[b] = [a[b] ; c[b]]: two sequences per sample joined along the tokens.
pub(crate) fn concat_sequences(
    out: &mut [f32],
    a: &[f32],
    c: &[f32],
    a_tokens: usize,
    c_tokens: usize,
    dim: usize,
) {
    let (la, lc) = (a_tokens * dim, c_tokens * dim);
    out.par_chunks_exact_mut(la + lc)
        .enumerate()
        .for_each(|(b, sample)| {
            sample[..la].copy_from_slice(&a[b * la..(b + 1) * la]);
            sample[la..].copy_from_slice(&c[b * lc..(b + 1) * lc]);
        });
}

pub(crate) fn embed_tokens(
    out: &mut [f32],
    ids: &[u32],
    table: &[f32],
    pos: &[f32],
    seq: usize,
    dim: usize,
) {
    out.par_chunks_exact_mut(dim)
        .zip(ids.par_iter())
        .enumerate()
        .for_each(|(row, (o, &id))| {
            let t = row % seq;
            let e = &table[id as usize * dim..(id as usize + 1) * dim];
            for ((o, &e), &p) in o.iter_mut().zip(e).zip(&pos[t * dim..(t + 1) * dim]) {
                *o = e + p;
            }
        });
}

pub(crate) fn gather_rows(out: &mut [f32], x: &[f32], rows: &[usize], dim: usize) {
    for (o, &r) in out.chunks_exact_mut(dim).zip(rows) {
        o.copy_from_slice(&x[r * dim..(r + 1) * dim]);
    }
}

pub(crate) fn gather_rows_backward(dx: &mut [f32], dy: &[f32], rows: &[usize], dim: usize) {
    dx.fill(0.0);
    for (d, &r) in dy.chunks_exact(dim).zip(rows) {
        for (x, &g) in dx[r * dim..(r + 1) * dim].iter_mut().zip(d) {
            *x += g;
        }
    }
}
