//! One sample's part of a tower trace: its real (non-padding) tokens, per layer and head.
//!
//! Methods read every matrix restricted to the sample's real tokens, so a sample explained in
//! a padded batch gets exactly the numbers it gets alone. Indices into a view (rows, columns,
//! readouts) count real tokens in sequence order, not padded positions.

use crate::backend::cpu::head_mean;
use crate::backend::cpu::relevance::gather_square;
use crate::backend::{HeadMean, RelevanceProduct};
use crate::explain::matrix::Matrix;
use crate::linalg::{Fiedler, GraphOptions, SpectralError};
use crate::trace::{LayerTrace, Layers, TowerTrace};

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
    fn for_each_entry(&self, l: usize, h: usize, mut f: impl FnMut(usize, usize, f32, f32)) {
        let layer = self.layer(l);
        let x = &layer.attention;
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

    /// The head mean `kind` of layer l over the real tokens: the one the backend averaged
    /// (a trace from `into_host_for`), else averaged here from the heads by the same code.
    /// Reads as 0 where the trace lacks what the kind reads (callers check beforehand).
    pub fn mean(&self, l: usize, kind: HeadMean) -> Matrix {
        let layer = self.layer(l);
        let (heads, n_pad) = (self.tower.heads, self.tower.tokens);
        let entries = n_pad * n_pad;
        let averaged;
        let padded: &[f32] = match layer.means.iter().find(|(k, _)| *k == kind) {
            Some((_, m)) => &m[self.sample * entries..(self.sample + 1) * entries],
            None => {
                let x = if kind.reads_relevance() {
                    layer.relevance.as_deref().unwrap_or_default()
                } else {
                    &layer.attention
                };
                if x.is_empty() {
                    return Matrix::zeros(self.n, self.n);
                }
                let span = self.sample * heads * entries..(self.sample + 1) * heads * entries;
                let grad = layer
                    .attention_grad
                    .as_deref()
                    .filter(|g| !g.is_empty())
                    .map(|g| &g[span.clone()]);
                let mut m = vec![0.0; entries];
                head_mean(&mut m, kind, &x[span], grad, heads, entries);
                averaged = m;
                &averaged
            }
        };
        Matrix {
            rows: self.n,
            cols: self.n,
            data: gather_square(padded, n_pad, &self.tokens),
        }
    }

    /// Whether every layer's mean `kind` can be read: the trace kept them, or the maps
    /// they average.
    pub fn has_means(&self, kind: HeadMean) -> bool {
        self.tower
            .kept
            .as_ref()
            .is_none_or(|k| k.mean_layers(kind) == Layers::All)
    }

    /// Row `row` (a view position) of `product` from layer `start` on over every real
    /// token, where the backend formed it (a trace from `into_host_for` with that row).
    pub fn product_row(
        &self,
        product: RelevanceProduct,
        start: usize,
        row: usize,
    ) -> Option<&'a [f32]> {
        let kept = self
            .tower
            .kept
            .as_ref()
            .filter(|k| k.product_start == start)?;
        let at = kept
            .rows
            .iter()
            .position(|r| r.sample == self.sample && r.query == row && r.tokens == self.tokens)?;
        let (_, rows) = self.tower.products.iter().find(|(p, _)| *p == product)?;
        rows.get(at).map(Vec::as_slice)
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

    /// The Fiedler vector of layer l's graph over the view positions `rows`, where the
    /// backend solved it with `opts` (a trace from `into_host_for` with those graphs).
    pub fn solved(
        &self,
        l: usize,
        rows: &[usize],
        opts: &GraphOptions,
    ) -> Option<&Result<Fiedler, SpectralError>> {
        self.layer(l).fiedlers.get(self.kept_graph(rows, opts)?)
    }

    /// The head mean `kind` of layer l over the graph of view positions `rows` times the
    /// graph's |Fiedler| vector, where the backend formed it with the graph solved with
    /// `opts` (a trace from `into_host_for` that weighs `kind`).
    pub fn weighted(
        &self,
        l: usize,
        kind: HeadMean,
        rows: &[usize],
        opts: &GraphOptions,
    ) -> Option<&[f32]> {
        let g = self.kept_graph(rows, opts)?;
        let (_, per_graph) = self.layer(l).weighted.iter().find(|(k, _)| *k == kind)?;
        per_graph
            .get(g)
            .filter(|r| !r.is_empty())
            .map(Vec::as_slice)
    }

    /// Which of the kept graphs is this sample's graph over view positions `rows`, solved
    /// with `opts`.
    fn kept_graph(&self, rows: &[usize], opts: &GraphOptions) -> Option<usize> {
        let kept = self
            .tower
            .kept
            .as_ref()
            .filter(|k| k.graph_options == *opts)?;
        let padded: Vec<usize> = rows.iter().map(|&r| self.tokens[r]).collect();
        kept.graphs
            .iter()
            .position(|g| g.sample == self.sample && g.tokens == padded)
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
