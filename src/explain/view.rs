//! One sample's part of a tower trace: its real (non-padding) tokens, per layer and head.
//!
//! Methods read every matrix restricted to the sample's real tokens, so a sample explained in
//! a padded batch gets exactly the numbers it gets alone. Indices into a view (rows, columns,
//! readouts) count real tokens in sequence order, not padded positions.

use crate::explain::matrix::Matrix;
use crate::trace::{LayerTrace, TowerTrace};

pub struct SampleView<'a> {
    tower: &'a TowerTrace<Vec<f32>>,
    sample: usize,
    /// Padded positions of the real tokens, ascending.
    tokens: Vec<usize>,
    /// Number of real tokens.
    pub n: usize,
}

impl<'a> SampleView<'a> {
    /// The first `lengths[sample]` tokens are real (right padding: CLIP).
    pub fn new(tower: &'a TowerTrace<Vec<f32>>, sample: usize) -> Self {
        Self::with_tokens(tower, sample, (0..tower.lengths[sample]).collect())
    }

    /// The real tokens are the given padded positions (padding in mid-sequence: ViLT).
    pub fn with_tokens(tower: &'a TowerTrace<Vec<f32>>, sample: usize, tokens: Vec<usize>) -> Self {
        Self {
            tower,
            sample,
            n: tokens.len(),
            tokens,
        }
    }

    pub fn layers(&self) -> usize {
        self.tower.layers.len()
    }

    fn layer(&self, l: usize) -> &'a LayerTrace<Vec<f32>> {
        &self.tower.layers[l]
    }

    /// Padded row `tokens[i]` of head h of an attention-shaped tensor.
    fn padded_row<'b>(&self, t: &'b [f32], h: usize, i: usize) -> &'b [f32] {
        let n_pad = self.tower.tokens;
        let start = ((self.sample * self.tower.heads + h) * n_pad + self.tokens[i]) * n_pad;
        &t[start..start + n_pad]
    }

    /// Calls `f(i, j, A_h[i, j], ∇A_h[i, j])` over the real tokens of head h of layer l;
    /// ∇A reads as 0 in a trace recorded without gradients (callers check beforehand).
    fn for_each_entry(&self, l: usize, h: usize, f: impl FnMut(usize, usize, f32, f32)) {
        self.for_each_weighted(l, h, false, f)
    }

    /// The same with the LRP relevance R_A in place of A when `relevance` (0 without an
    /// LRP pass; callers check beforehand).
    fn for_each_weighted(
        &self,
        l: usize,
        h: usize,
        relevance: bool,
        mut f: impl FnMut(usize, usize, f32, f32),
    ) {
        let layer = self.layer(l);
        let x = if relevance {
            layer.relevance.as_deref().unwrap_or_default()
        } else {
            &layer.attention
        };
        if x.is_empty() {
            return;
        }
        for i in 0..self.n {
            let a = self.padded_row(x, h, i);
            let g = layer
                .attention_grad
                .as_ref()
                .map(|g| self.padded_row(g, h, i));
            for (j, &t) in self.tokens.iter().enumerate() {
                f(i, j, a[t], g.map_or(0.0, |g| g[t]));
            }
        }
    }

    /// mean_h f(A_h[i, j], ∇A_h[i, j]) over the real tokens of layer l.
    pub fn head_mean(&self, l: usize, f: impl Fn(f32, f32) -> f32) -> Matrix {
        self.weighted_mean(l, false, f)
    }

    /// mean_h f(X_h[i, j], ∇A_h[i, j]) with X = A, or the LRP relevance R_A when `relevance`.
    pub fn weighted_mean(&self, l: usize, relevance: bool, f: impl Fn(f32, f32) -> f32) -> Matrix {
        let heads = self.tower.heads;
        let n = self.n;
        let mut out = Matrix::zeros(n, n);
        for h in 0..heads {
            self.for_each_weighted(l, h, relevance, |i, j, a, g| out.data[i * n + j] += f(a, g));
        }
        out.data.iter_mut().for_each(|v| *v /= heads as f32);
        out
    }

    /// mean over the real (i, j) of ∇A_h, per head: the Grad-CAM head weights.
    pub fn head_grad_means(&self, l: usize) -> Vec<f32> {
        (0..self.tower.heads)
            .map(|h| {
                let mut sum = 0.0f64;
                self.for_each_entry(l, h, |_, _, _, g| sum += g as f64);
                (sum / (self.n * self.n) as f64) as f32
            })
            .collect()
    }

    /// Σ_h w_h·A_h over the real tokens of layer l, divided by the head count.
    pub fn weighted_head_mean(&self, l: usize, weights: &[f32]) -> Matrix {
        let n = self.n;
        let mut out = Matrix::zeros(n, n);
        for (h, &w) in weights.iter().enumerate() {
            self.for_each_entry(l, h, |i, j, a, _| out.data[i * n + j] += w * a);
        }
        out.data.iter_mut().for_each(|v| *v /= weights.len() as f32);
        out
    }

    /// Layer l's output rows of the real tokens at view positions `rows`.
    pub fn features(&self, l: usize, rows: &[usize]) -> Vec<f32> {
        let w = self.tower.width;
        let base = self.sample * self.tower.tokens * w;
        let out = &self.layer(l).output;
        rows.iter()
            .flat_map(|&r| {
                let t = self.tokens[r];
                out[base + t * w..base + (t + 1) * w].iter().copied()
            })
            .collect()
    }

    pub fn width(&self) -> usize {
        self.tower.width
    }
}
