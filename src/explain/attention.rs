//! The attention family (spec §C.1, §C.4–§C.6, single-stream form of §A.3): each method
//! turns one sample's layers into a token×token relevance matrix R of which the caller reads
//! out one row; the relevance products (rollout, Chefer's maps, Transformer Attribution)
//! form only that row.

use crate::backend::cpu::relevance;
use crate::backend::{HeadMean, HeadRows, RelevanceProduct};
use crate::explain::matrix::Matrix;
use crate::explain::view::SampleView;

/// §C.4: mean_h A of the last layer.
pub fn raw_attention(v: &SampleView) -> Matrix {
    v.mean(v.layers() - 1, HeadMean::Attention)
}

/// §C.5: w_h = mean_ij ∇A_h, M = (mean_h w_h·A_h)⁺ on the last layer (clamp after the mean),
/// at the row the heads were read at: Σ_h w_h·A_h[q, j] in head order, then divided.
pub fn grad_cam_row(heads: &HeadRows) -> Vec<f32> {
    let count = heads.grad_means.len();
    let m = heads.rows.len() / count.max(1);
    let mut out = vec![0.0f32; m];
    for (&w, row) in heads
        .grad_means
        .iter()
        .zip(heads.rows.chunks_exact(m.max(1)))
    {
        out.iter_mut().zip(row).for_each(|(o, &a)| *o += w * a);
    }
    out.iter_mut()
        .for_each(|x| *x = (*x / count as f32).max(0.0));
    out
}

/// B = rownorm(Ā + I), one factor of a rollout product (LXMERT's lists; the single-stream
/// towers form rows of their products with `product_row`).
pub fn rollout_step(mut mean_attention: Matrix) -> Matrix {
    mean_attention.add_identity();
    mean_attention.row_normalize();
    mean_attention
}

/// Row `row` of a single-stream relevance product from layer `start` on, over every token
/// of the view, formed here from the layers' head means:
/// - rollout (§C.6 / §H): R = B_last·…·B_start with B_l = rownorm(mean_h A_l + I);
/// - Chefer's relevance maps without LRP (§C.1): R = I, then R ← R + Ā_l·R with
///   Ā_l = mean_h((∇A_l ⊙ A_l)⁺) for every layer from `start`;
/// - Transformer Attribution (§A.3 / §C.2, Chefer's maps with LRP): the same with
///   Ā_l = mean_h((∇A_l ⊙ R_A,l)⁺), R_A the LRP relevance at A_l.
///
/// The arithmetic is the backends' (`Backend::relevance_rows`), so a row formed where the
/// trace was recorded has the same bits.
pub fn product_row(
    v: &SampleView,
    product: RelevanceProduct,
    start: usize,
    row: usize,
) -> Vec<f32> {
    let mut state = relevance::row_start(product, v.n, row);
    for l in (start..v.layers()).rev() {
        relevance::row_step(product, &mut state, &v.mean(l, product.mean()).data, row);
    }
    relevance::row_finish(product, state, row)
}

/// §C.3 / §A.3 single-stream partial LRP: mean_h R_A of the last layer, min–max scaled.
pub fn partial_lrp(v: &SampleView) -> Matrix {
    let mut m = v.mean(v.layers() - 1, HeadMean::Relevance);
    m.min_max();
    m
}
