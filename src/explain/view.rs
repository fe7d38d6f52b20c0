//! One sample's part of a tower trace: its unpadded tokens, per layer and head.
//!
//! Methods read every matrix restricted to the sample's real tokens, so a sample explained in
//! a padded batch gets exactly the numbers it gets alone.

use crate::explain::matrix::Square;
use crate::trace::{LayerTrace, TowerTrace};

pub struct SampleView<'a> {
    tower: &'a TowerTrace<Vec<f32>>,
    sample: usize,
    /// Real tokens of this sample.
    pub n: usize,
}

impl<'a> SampleView<'a> {
    pub fn new(tower: &'a TowerTrace<Vec<f32>>, sample: usize) -> Self {
        Self {
            tower,
            sample,
            n: tower.lengths[sample],
        }
    }

    pub fn layers(&self) -> usize {
        self.tower.layers.len()
    }

    fn layer(&self, l: usize) -> &'a LayerTrace<Vec<f32>> {
        &self.tower.layers[l]
    }

    /// Row i of head h of an attention-shaped tensor of layer l, cut to the real tokens.
    fn head_row<'b>(&self, t: &'b [f32], h: usize, i: usize) -> &'b [f32] {
        let n_pad = self.tower.tokens;
        let start = ((self.sample * self.tower.heads + h) * n_pad + i) * n_pad;
        &t[start..start + self.n]
    }

    /// mean_h f(A_h[i, j], ∇A_h[i, j]) over the real tokens of layer l.
    pub fn head_mean(&self, l: usize, f: impl Fn(f32, f32) -> f32) -> Square {
        let layer = self.layer(l);
        let heads = self.tower.heads;
        let mut out = Square::zeros(self.n);
        for h in 0..heads {
            for i in 0..self.n {
                let a = self.head_row(&layer.attention, h, i);
                let g = self.head_row(&layer.attention_grad, h, i);
                let row = &mut out.data[i * self.n..(i + 1) * self.n];
                for ((o, &a), &g) in row.iter_mut().zip(a).zip(g) {
                    *o += f(a, g);
                }
            }
        }
        out.data.iter_mut().for_each(|v| *v /= heads as f32);
        out
    }

    /// mean over the real (i, j) of ∇A_h, per head: the Grad-CAM head weights.
    pub fn head_grad_means(&self, l: usize) -> Vec<f32> {
        let layer = self.layer(l);
        (0..self.tower.heads)
            .map(|h| {
                let sum: f64 = (0..self.n)
                    .map(|i| {
                        self.head_row(&layer.attention_grad, h, i)
                            .iter()
                            .map(|&g| g as f64)
                            .sum::<f64>()
                    })
                    .sum();
                (sum / (self.n * self.n) as f64) as f32
            })
            .collect()
    }

    /// Σ_h w_h·A_h over the real tokens of layer l, divided by the head count.
    pub fn weighted_head_mean(&self, l: usize, weights: &[f32]) -> Square {
        let layer = self.layer(l);
        let mut out = Square::zeros(self.n);
        for (h, &w) in weights.iter().enumerate() {
            for i in 0..self.n {
                let a = self.head_row(&layer.attention, h, i);
                for (o, &a) in out.data[i * self.n..(i + 1) * self.n].iter_mut().zip(a) {
                    *o += w * a;
                }
            }
        }
        out.data.iter_mut().for_each(|v| *v /= weights.len() as f32);
        out
    }

    /// Rows `tokens` of layer l's output [n_tokens, width].
    pub fn features(&self, l: usize, tokens: &[usize]) -> Vec<f32> {
        let w = self.tower.width;
        let base = self.sample * self.tower.tokens * w;
        let out = &self.layer(l).output;
        tokens
            .iter()
            .flat_map(|&t| out[base + t * w..base + (t + 1) * w].iter().copied())
            .collect()
    }

    pub fn width(&self) -> usize {
        self.tower.width
    }
}
