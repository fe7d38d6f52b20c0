//! One sample's part of a tower trace: its real (non-padding) tokens, per layer and head.
//!
//! Methods read every matrix restricted to the sample's real tokens, so a sample explained in
//! a padded batch gets exactly the numbers it gets alone. Indices into a view (rows, columns,
//! readouts) count real tokens in sequence order, not padded positions.

use std::borrow::Cow;

use crate::backend::cpu::relevance::gather_square;
use crate::backend::cpu::{head_mean, head_rows};
use crate::backend::{HeadMean, HeadRows, ReadoutRow, RelevanceProduct};
use crate::explain::matrix::Matrix;
use crate::linalg::{Fiedler, GraphOptions, SpectralError};
use crate::model::lxmert::AttentionRecord;
use crate::trace::{LayerTrace, Layers, TowerTrace};

/// An attention module's probabilities, gradients and LRP relevance at the probabilities,
/// and the head means a reduced trace formed of them, borrowed from either record type
/// (a tower's layer, an LXMERT attention module).
#[derive(Clone, Copy)]
pub(crate) struct HeadMaps<'a> {
    attention: &'a [f32],
    /// `None` in a trace recorded without gradients: reads as 0.
    grad: Option<&'a [f32]>,
    /// `None` without an LRP pass.
    relevance: Option<&'a [f32]>,
    /// [batch, queries, keys] each.
    means: &'a [(HeadMean, Vec<f32>)],
}

impl<'a> From<&'a LayerTrace<Vec<f32>>> for HeadMaps<'a> {
    fn from(r: &'a LayerTrace<Vec<f32>>) -> Self {
        Self {
            attention: &r.attention,
            grad: r.attention_grad.as_deref(),
            relevance: r.relevance.as_deref(),
            means: &r.means,
        }
    }
}

impl<'a> From<&'a AttentionRecord<Vec<f32>>> for HeadMaps<'a> {
    fn from(r: &'a AttentionRecord<Vec<f32>>) -> Self {
        Self {
            attention: &r.attention,
            grad: r.attention_grad.as_deref(),
            relevance: r.relevance.as_deref(),
            means: &r.means,
        }
    }
}

impl<'a> HeadMaps<'a> {
    /// Sample `sample`'s head mean `kind` over its padded [queries, keys] (`entries` of them):
    /// the one the backend formed, else formed here from the heads by `cpu::head_mean`, so
    /// both give the same bits; `None` where the maps the kind reads are absent.
    pub(crate) fn sample_mean(
        self,
        kind: HeadMean,
        heads: usize,
        entries: usize,
        sample: usize,
    ) -> Option<Cow<'a, [f32]>> {
        if let Some((_, m)) = self.means.iter().find(|(k, _)| *k == kind) {
            return Some(Cow::Borrowed(&m[sample * entries..(sample + 1) * entries]));
        }
        let x = match kind.reads_relevance() {
            true => self.relevance.unwrap_or_default(),
            false => self.attention,
        };
        if x.is_empty() {
            return None;
        }
        let span = sample * heads * entries..(sample + 1) * heads * entries;
        let grad = self
            .grad
            .filter(|g| !g.is_empty())
            .map(|g| &g[span.clone()]);
        let mut mean = vec![0.0; entries];
        head_mean(&mut mean, kind, &x[span], grad, heads, entries);
        Some(Cow::Owned(mean))
    }
}

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

    /// The head mean `kind` of layer l over the real tokens: the one the backend averaged
    /// (a trace from `into_host_for`), else averaged here from the heads by the same code.
    /// Reads as 0 where the trace lacks what the kind reads (callers check beforehand).
    pub fn mean(&self, l: usize, kind: HeadMean) -> Matrix {
        let (heads, n_pad) = (self.tower.heads, self.tower.tokens);
        let maps = HeadMaps::from(self.layer(l));
        match maps.sample_mean(kind, heads, n_pad * n_pad, self.sample) {
            Some(padded) => Matrix {
                rows: self.n,
                cols: self.n,
                data: gather_square(&padded, n_pad, &self.tokens),
            },
            None => Matrix::zeros(self.n, self.n),
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
        self.tower
            .kept
            .as_ref()
            .filter(|k| k.product_start == start)?;
        let at = self.kept_row(row)?;
        let (_, rows) = self.tower.products.iter().find(|(p, _)| *p == product)?;
        rows.get(at).map(Vec::as_slice)
    }

    /// Which of the kept rows is this sample's row `row` (a view position) over its tokens.
    fn kept_row(&self, row: usize) -> Option<usize> {
        self.tower
            .kept
            .as_ref()?
            .rows
            .iter()
            .position(|r| r.sample == self.sample && r.query == row && r.tokens == self.tokens)
    }

    /// What Grad-CAM reads of layer l at row `row` (a view position): kept by the backend
    /// (a trace from `into_host_for` with that row), else taken here from the layer's heads
    /// by the same code; `None` where neither is there.
    pub fn head_rows(&self, l: usize, row: usize) -> Option<Cow<'a, HeadRows>> {
        let tower = self.tower;
        if l + 1 == self.layers() {
            if let Some(kept) = self.kept_row(row).and_then(|at| tower.head_rows.get(at)) {
                return Some(Cow::Borrowed(kept));
            }
        }
        let layer = self.layer(l);
        let grad = layer.attention_grad.as_deref().filter(|g| !g.is_empty())?;
        if layer.attention.is_empty() {
            return None;
        }
        let entries = tower.heads * tower.tokens * tower.tokens;
        let span = self.sample * entries..(self.sample + 1) * entries;
        let one = ReadoutRow {
            sample: 0,
            query: row,
            tokens: &self.tokens,
        };
        let mut rows = head_rows(
            &layer.attention[span.clone()],
            &grad[span],
            tower.heads,
            tower.tokens,
            &[one],
        );
        rows.pop().map(Cow::Owned)
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
