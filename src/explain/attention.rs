//! The attention family (spec §C.1, §C.4–§C.6, single-stream form of §A.3): each method
//! turns one sample's layers into a token×token relevance matrix R; the caller reads out
//! one row.

use crate::explain::matrix::Square;
use crate::explain::view::SampleView;

/// §C.4: mean_h A of the last layer.
pub fn raw_attention(v: &SampleView) -> Square {
    v.head_mean(v.layers() - 1, |a, _| a)
}

/// §C.5: w_h = mean_ij ∇A_h, M = (mean_h w_h·A_h)⁺ on the last layer (clamp after the mean).
pub fn grad_cam(v: &SampleView) -> Square {
    let last = v.layers() - 1;
    let mut m = v.weighted_head_mean(last, &v.head_grad_means(last));
    m.data.iter_mut().for_each(|x| *x = x.max(0.0));
    m
}

/// §C.6 / §H: R = B_last·…·B_start with B_l = rownorm(mean_h A_l + I).
pub fn rollout(v: &SampleView, start: usize) -> Square {
    let mut r = Square::identity(v.n);
    for l in start..v.layers() {
        let mut b = v.head_mean(l, |a, _| a);
        for i in 0..v.n {
            b.data[i * v.n + i] += 1.0;
            let row = &mut b.data[i * v.n..(i + 1) * v.n];
            let sum: f32 = row.iter().sum();
            row.iter_mut().for_each(|x| *x /= sum);
        }
        r = b.matmul(&r);
    }
    r
}

/// §C.1 self-attention rule without LRP (Chefer's relevance maps): R = I, then
/// R ← R + Ā_l·R with Ā_l = mean_h((∇A_l ⊙ A_l)⁺) for every layer from `start`.
///
/// The recurrence runs on S = R − I (S ← S + Ā + Ā·S): the terms added are often far below
/// f32's resolution at 1, and I + ΔR would round them away (spec §H, last item).
pub fn chefer(v: &SampleView, start: usize) -> Square {
    let mut s = Square::zeros(v.n);
    for l in start..v.layers() {
        let a = v.head_mean(l, |a, g| (a * g).max(0.0));
        let prod = a.matmul(&s);
        s.add_assign(&a);
        s.add_assign(&prod);
    }
    for i in 0..v.n {
        s.data[i * v.n + i] += 1.0;
    }
    s
}
