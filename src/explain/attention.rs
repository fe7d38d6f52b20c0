//! The attention family (spec §C.1, §C.4–§C.6, single-stream form of §A.3): each method
//! turns one sample's layers into a token×token relevance matrix R; the caller reads out
//! one row.

use crate::backend::HeadMean;
use crate::explain::matrix::Matrix;
use crate::explain::view::SampleView;

/// §C.4: mean_h A of the last layer.
pub fn raw_attention(v: &SampleView) -> Matrix {
    v.mean(v.layers() - 1, HeadMean::Attention)
}

/// §C.5: w_h = mean_ij ∇A_h, M = (mean_h w_h·A_h)⁺ on the last layer (clamp after the mean).
pub fn grad_cam(v: &SampleView) -> Matrix {
    let last = v.layers() - 1;
    let mut m = v.weighted_head_mean(last, &v.head_grad_means(last));
    m.data.iter_mut().for_each(|x| *x = x.max(0.0));
    m
}

/// §C.6 / §H: R = B_last·…·B_start with B_l = rownorm(mean_h A_l + I).
pub fn rollout(v: &SampleView, start: usize) -> Matrix {
    let mut r = Matrix::identity(v.n);
    for l in start..v.layers() {
        r = rollout_step(v.mean(l, HeadMean::Attention)).matmul(&r);
    }
    r
}

/// B = rownorm(Ā + I), one factor of a rollout product.
pub fn rollout_step(mut mean_attention: Matrix) -> Matrix {
    mean_attention.add_identity();
    mean_attention.row_normalize();
    mean_attention
}

/// §C.1 self-attention rule without LRP (Chefer's relevance maps): R = I, then
/// R ← R + Ā_l·R with Ā_l = mean_h((∇A_l ⊙ A_l)⁺) for every layer from `start`.
///
/// The recurrence runs on S = R − I (S ← S + Ā + Ā·S): the terms added are often far below
/// f32's resolution at 1, and I + ΔR would round them away (spec §H, last item).
pub fn chefer(v: &SampleView, start: usize) -> Matrix {
    relevance_product(v, start, false)
}

/// §A.3 / §C.2 single-stream Transformer Attribution (= `chefer` with LRP):
/// R = Π_l (I + Ā_l) with Ā_l = mean_h((∇A_l ⊙ R_A,l)⁺), R_A the LRP relevance at A_l.
pub fn transformer_attribution(v: &SampleView, start: usize) -> Matrix {
    relevance_product(v, start, true)
}

/// §C.3 / §A.3 single-stream partial LRP: mean_h R_A of the last layer, min–max scaled.
pub fn partial_lrp(v: &SampleView) -> Matrix {
    let mut m = v.mean(v.layers() - 1, HeadMean::Relevance);
    m.min_max();
    m
}

/// R = I, then R ← R + Ā_l·R with Ā_l = mean_h((∇A_l ⊙ X_l)⁺), X = A or (`lrp`) R_A.
fn relevance_product(v: &SampleView, start: usize, lrp: bool) -> Matrix {
    let mut s = Matrix::zeros(v.n, v.n);
    for l in start..v.layers() {
        let a = v.mean(
            l,
            if lrp {
                HeadMean::PositiveGradientTimesRelevance
            } else {
                HeadMean::PositiveGradientTimesAttention
            },
        );
        let prod = a.matmul(&s);
        s.add_assign(&a);
        s.add_assign(&prod);
    }
    s.add_identity();
    s
}
