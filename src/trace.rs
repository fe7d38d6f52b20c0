//! What a forward pass records (per-layer attention probabilities and layer outputs) and what
//! the backward fills in (∂target/∂attention probabilities), per tower of a model.
//!
//! Buffers stay on the backend that computed them (`Buf`); `into_host` moves a trace into host
//! memory, where the explanation methods read it.

use crate::backend::{
    Backend, BackendError, HeadMean, HeadRows, MeanGraph, ReadoutRow, RelevanceProduct,
};
use crate::linalg::{Fiedler, GraphOptions, SpectralError};
use crate::model::block::EncoderActivations;

/// One attention layer of one tower.
pub struct LayerTrace<Buf> {
    /// Softmax probabilities [batch, heads, tokens, tokens]; masked entries are exactly 0.
    pub attention: Buf,
    /// ∂target/∂attention, same shape. Every entry, masked ones included (as autograd).
    /// `None` when the trace was recorded without a backward (`record`).
    pub attention_grad: Option<Buf>,
    /// LRP relevance at the probabilities (§D), same shape; `None` without an LRP pass.
    pub relevance: Option<Buf>,
    /// The layer output [batch, tokens, width].
    pub output: Buf,
    /// Head means averaged where the trace was recorded, [batch, tokens, tokens] each
    /// (`TowerTrace::into_host_for`); none in a trace as the model recorded it.
    pub means: Vec<(HeadMean, Buf)>,
    /// The Fiedler vectors of the kept `Reads::graphs` over this layer's output, in their
    /// order, solved where the trace was recorded; empty where none were asked.
    pub fiedlers: Vec<Result<Fiedler, SpectralError>>,
    /// Per kind of `Reads::weighted`, per kept graph (in `fiedlers`' order): the head mean
    /// over the graph's tokens times the graph's |Fiedler| vector (`Ḡ_l·f_l`), formed where
    /// the trace was recorded; empty for a graph without a vector.
    pub weighted: Vec<(HeadMean, Products)>,
}

/// One vector per graph, in the order of the kept graphs.
pub type Products = Vec<Vec<f32>>;

/// One vector per row of a relevance product, in the order of the kept rows.
pub type ProductRows = Vec<Vec<f32>>;

/// Which layers of a tower something is read from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum Layers {
    #[default]
    None,
    Last,
    All,
}

impl Layers {
    pub fn includes(self, layer: usize, layers: usize) -> bool {
        match self {
            Layers::None => false,
            Layers::Last => layer + 1 == layers,
            Layers::All => true,
        }
    }
}

/// One spectral graph (§B): sample `sample`'s tokens at the padded positions `tokens`,
/// with a layer's output rows as features.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphSpec {
    pub sample: usize,
    pub tokens: Vec<usize>,
}

/// One row a method reads (`Backend::relevance_rows`, `Backend::head_rows`): of sample
/// `sample`'s matrices over its tokens at the padded positions `tokens`, row `query` (an
/// index into `tokens`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowSpec {
    pub sample: usize,
    pub query: usize,
    pub tokens: Vec<usize>,
}

impl RowSpec {
    pub fn as_row(&self) -> ReadoutRow<'_> {
        ReadoutRow {
            sample: self.sample,
            query: self.query,
            tokens: &self.tokens,
        }
    }
}

/// What explanation methods read of a tower trace: only that needs to leave the device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reads {
    /// Head means, each of the layers given (the last alone for raw attention and partial
    /// LRP, whose maps are the last layer's).
    pub means: Vec<(HeadMean, Layers)>,
    /// Head means read only as their product with the Fiedler vector of each graph (the
    /// spectral methods' Ḡ_l·f_l): with `graphs`, only those products leave the device;
    /// without, they come as whole `means`.
    pub weighted: Vec<HeadMean>,
    /// The layers whose token features the spectral methods read: their outputs, or, with
    /// `graphs`, the Fiedler vectors of those graphs solved where the trace lives.
    pub features: Layers,
    /// The graphs to solve in place of bringing the outputs (see `with_graphs`).
    pub graphs: Vec<GraphSpec>,
    pub graph_options: GraphOptions,
    /// The last layer's per-head A and ∇A (Grad-CAM weighs each head): with `rows`, only
    /// what Grad-CAM reads of them at those rows (`HeadRows`).
    pub last_layer_heads: bool,
    /// Relevance products read one row at a time (rollout, Chefer's maps, Transformer
    /// Attribution): with `rows`, only those rows leave the device; without, the means
    /// they multiply come whole.
    pub products: Vec<RelevanceProduct>,
    /// The rows the products and Grad-CAM read (see `with_rows`).
    pub rows: Vec<RowSpec>,
    /// The products' first layer.
    pub product_start: usize,
}

impl Reads {
    /// Everything either reads (the graphs and their options of `self`).
    pub fn union(mut self, other: &Reads) -> Reads {
        for &(k, layers) in &other.means {
            self.add_mean(k, layers);
        }
        for &k in &other.weighted {
            if !self.weighted.contains(&k) {
                self.weighted.push(k);
            }
        }
        for &p in &other.products {
            if !self.products.contains(&p) {
                self.products.push(p);
            }
        }
        self.features = self.features.max(other.features);
        self.last_layer_heads |= other.last_layer_heads;
        self
    }

    /// The features as the Fiedler vectors of `graphs`, solved on the backend, rather than
    /// the layer outputs: a vector per token instead of a row of `width` values.
    pub fn with_graphs(self, graphs: Vec<GraphSpec>, options: GraphOptions) -> Reads {
        Reads {
            graphs,
            graph_options: options,
            ..self
        }
    }

    /// The products as the rows `rows` from layer `start` on, formed on the backend, rather
    /// than the means of every layer (one value per token instead of a matrix per layer),
    /// and the last layer's heads as what Grad-CAM reads at those rows.
    pub fn with_rows(self, rows: Vec<RowSpec>, start: usize) -> Reads {
        Reads {
            rows,
            product_start: start,
            ..self
        }
    }

    /// The mean `kind` of `layers` too.
    fn add_mean(&mut self, kind: HeadMean, layers: Layers) {
        match self.means.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, kept)) => *kept = (*kept).max(layers),
            None => self.means.push((kind, layers)),
        }
    }

    /// The layers of which the mean `kind` is read (`Layers::None`: not read).
    pub(crate) fn mean_layers(&self, kind: HeadMean) -> Layers {
        self.means
            .iter()
            .find(|(k, _)| *k == kind)
            .map_or(Layers::None, |&(_, layers)| layers)
    }

    /// As `into_host_for` serves it: without graphs to solve, weighted means come whole;
    /// without rows, the products' means do.
    fn resolved(mut self) -> Reads {
        if self.graphs.is_empty() {
            for k in std::mem::take(&mut self.weighted) {
                self.add_mean(k, Layers::All);
            }
        }
        if self.rows.is_empty() {
            for p in std::mem::take(&mut self.products) {
                self.add_mean(p.mean(), Layers::All);
            }
        }
        self
    }

    /// Whether this holds everything `other` reads (solved graphs stand for the outputs
    /// they were solved from, formed rows for their products' means; which graphs and
    /// rows, the methods look up).
    pub fn covers(&self, other: &Reads) -> bool {
        other
            .means
            .iter()
            .all(|&(k, layers)| self.mean_layers(k) >= layers)
            && other
                .weighted
                .iter()
                .all(|&k| self.weighted.contains(&k) || self.mean_layers(k) == Layers::All)
            && other
                .products
                .iter()
                .all(|&p| self.products.contains(&p) || self.mean_layers(p.mean()) == Layers::All)
            && self.features >= other.features
            && (self.last_layer_heads || !other.last_layer_heads)
    }
}

/// Every layer of one tower (`"vision"`, `"text"`, …) over a padded batch.
pub struct TowerTrace<Buf> {
    pub name: &'static str,
    pub batch: usize,
    pub heads: usize,
    pub tokens: usize,
    pub width: usize,
    /// Valid (non-padding) tokens per sample.
    pub lengths: Vec<usize>,
    pub layers: Vec<LayerTrace<Buf>>,
    /// What a reduced trace (`into_host_for`) kept; its other buffers are empty. `None`:
    /// every buffer is whole.
    pub kept: Option<Reads>,
    /// Per kept product, its rows (`kept.rows`, in that order), formed where the trace was
    /// recorded; empty in a trace as the model recorded it.
    pub products: Vec<(RelevanceProduct, ProductRows)>,
    /// What Grad-CAM reads of the last layer at each of `kept.rows`, where the heads were
    /// kept that way; else empty.
    pub head_rows: Vec<HeadRows>,
}

impl<Buf> TowerTrace<Buf> {
    /// Pairs a finished forward with the backward's gradients and the LRP pass's relevance
    /// (first layer first), if any. A backward that stopped short gives gradients of the
    /// top layers only: the layers below get none.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn from_activations(
        name: &'static str,
        heads: usize,
        width: usize,
        lengths: Vec<usize>,
        tokens: usize,
        acts: EncoderActivations<Buf>,
        grads: Option<Vec<Buf>>,
        relevance: Option<Vec<Buf>>,
    ) -> Self {
        let count = acts.layers.len();
        let per_layer = |v: Option<Vec<Buf>>| -> Box<dyn Iterator<Item = Option<Buf>>> {
            match v {
                Some(v) => Box::new(
                    std::iter::repeat_with(|| None)
                        .take(count.saturating_sub(v.len()))
                        .chain(v.into_iter().map(Some)),
                ),
                None => Box::new(std::iter::repeat_with(|| None)),
            }
        };
        let layers = acts
            .layers
            .into_iter()
            .zip(per_layer(grads).zip(per_layer(relevance)))
            .map(|(a, (g, r))| LayerTrace {
                attention: a.probs,
                attention_grad: g,
                relevance: r,
                output: a.out,
                means: Vec::new(),
                fiedlers: Vec::new(),
                weighted: Vec::new(),
            })
            .collect();
        Self {
            name,
            batch: lengths.len(),
            heads,
            tokens,
            width,
            lengths,
            layers,
            kept: None,
            products: Vec::new(),
            head_rows: Vec::new(),
        }
    }

    /// Whether the backward filled in ∂y/∂A of every layer from `first` on.
    pub fn has_gradients_from(&self, first: usize) -> bool {
        self.layers
            .iter()
            .skip(first)
            .all(|l| l.attention_grad.is_some())
    }

    /// Whether an LRP pass filled in the relevance at the attention maps of every layer
    /// from `first` on.
    pub fn has_relevance_from(&self, first: usize) -> bool {
        self.layers
            .iter()
            .skip(first)
            .all(|l| l.relevance.is_some())
    }

    /// The same trace with every buffer converted by `f` (e.g. moved to host memory).
    pub fn try_map<T, E>(self, mut f: impl FnMut(Buf) -> Result<T, E>) -> Result<TowerTrace<T>, E> {
        let layers = self
            .layers
            .into_iter()
            .map(|l| l.try_map(&mut f))
            .collect::<Result<_, E>>()?;
        Ok(TowerTrace {
            name: self.name,
            batch: self.batch,
            heads: self.heads,
            tokens: self.tokens,
            width: self.width,
            lengths: self.lengths,
            layers,
            kept: self.kept,
            products: self.products,
            head_rows: self.head_rows,
        })
    }

    /// Moves every buffer into host memory (no copy on the CPU backend).
    pub fn into_host<B: Backend<Buf = Buf>>(
        self,
        be: &B,
    ) -> Result<TowerTrace<Vec<f32>>, BackendError> {
        self.try_map(|b| be.move_to_host(b))
    }

    /// Brings to host memory only what `reads` names: the head means, averaged on the
    /// backend, and the outputs or last-layer heads if asked; every other buffer is left
    /// behind (empty on the host). On a GPU this moves a fraction of the trace: a head mean
    /// is 1/heads of the maps it averages.
    pub fn into_host_for<B: Backend<Buf = Buf>>(
        self,
        be: &B,
        reads: &Reads,
    ) -> Result<TowerTrace<Vec<f32>>, BackendError> {
        let reads = &reads.clone().resolved();
        let entries = self.tokens * self.tokens;
        let count = self.layers.len();
        let (batch, heads) = (self.batch, self.heads);
        let mut fiedlers = self.solve_graphs(be, reads)?.into_iter();
        let products = self.product_rows(be, reads)?;
        let head_rows = self.head_rows(be, reads)?;
        let keep = |b: Buf, wanted: bool| {
            if wanted {
                be.move_to_host(b)
            } else {
                Ok(Vec::new())
            }
        };
        let layers = self
            .layers
            .into_iter()
            .enumerate()
            .map(|(l, layer)| {
                let mut means = Vec::with_capacity(reads.means.len());
                for &(kind, layers) in &reads.means {
                    if !layers.includes(l, count) {
                        continue;
                    }
                    let Some((x, grad)) = layer.maps(kind) else {
                        continue;
                    };
                    let mut mean = be.zeros(batch * entries)?;
                    be.head_mean(&mut mean, kind, x, grad, heads, entries)?;
                    means.push((kind, be.move_to_host(mean)?));
                }
                let per_head = reads.last_layer_heads && reads.rows.is_empty() && l + 1 == count;
                let solved = reads.graphs.is_empty() || !reads.features.includes(l, count);
                let fiedlers = if solved {
                    Vec::new()
                } else {
                    fiedlers.next().unwrap_or_default()
                };
                let weighted = weigh(be, &layer, reads, &fiedlers, heads, self.tokens)?;
                Ok(LayerTrace {
                    attention: keep(layer.attention, per_head)?,
                    attention_grad: layer
                        .attention_grad
                        .map(|g| keep(g, per_head))
                        .transpose()?,
                    relevance: layer.relevance.map(|r| keep(r, false)).transpose()?,
                    output: keep(
                        layer.output,
                        reads.graphs.is_empty() && reads.features.includes(l, count),
                    )?,
                    means,
                    fiedlers,
                    weighted,
                })
            })
            .collect::<Result<_, BackendError>>()?;
        Ok(TowerTrace {
            name: self.name,
            batch,
            heads,
            tokens: self.tokens,
            width: self.width,
            lengths: self.lengths,
            layers,
            kept: Some(reads.clone()),
            products,
            head_rows,
        })
    }

    /// What Grad-CAM reads of the last layer at each of `reads.rows`, where it asks for the
    /// heads and the trace has ∇A.
    fn head_rows<B: Backend<Buf = Buf>>(
        &self,
        be: &B,
        reads: &Reads,
    ) -> Result<Vec<HeadRows>, BackendError> {
        let Some(last) = self.layers.last().filter(|_| reads.last_layer_heads) else {
            return Ok(Vec::new());
        };
        match &last.attention_grad {
            Some(grad) if !reads.rows.is_empty() => {
                let rows: Vec<ReadoutRow<'_>> = reads.rows.iter().map(RowSpec::as_row).collect();
                be.head_rows(&last.attention, grad, self.heads, self.tokens, &rows)
            }
            _ => Ok(Vec::new()),
        }
    }

    /// The rows `reads.rows` of each of `reads.products` the trace has the maps for, from
    /// layer `reads.product_start` on.
    fn product_rows<B: Backend<Buf = Buf>>(
        &self,
        be: &B,
        reads: &Reads,
    ) -> Result<Vec<(RelevanceProduct, ProductRows)>, BackendError> {
        let rows: Vec<ReadoutRow<'_>> = reads.rows.iter().map(RowSpec::as_row).collect();
        let layers = match self.layers.get(reads.product_start..) {
            Some(layers) if !layers.is_empty() && !rows.is_empty() => layers,
            _ => return Ok(Vec::new()),
        };
        let mut out = Vec::new();
        for &p in &reads.products {
            // A product whose pass the trace lacks is left out: the methods' own checks
            // name what is missing.
            let maps: Option<Vec<_>> = layers.iter().map(|l| l.maps(p.mean())).collect();
            if let Some(maps) = maps {
                let formed = be.relevance_rows(p, &maps, self.heads, self.tokens, &rows)?;
                out.push((p, formed));
            }
        }
        Ok(out)
    }

    /// The Fiedler vectors of `reads.graphs` over the output of every layer
    /// `reads.features` names, in one backend call: per such layer, one per graph.
    fn solve_graphs<B: Backend<Buf = Buf>>(
        &self,
        be: &B,
        reads: &Reads,
    ) -> Result<Vec<Vec<Result<Fiedler, SpectralError>>>, BackendError> {
        let count = self.layers.len();
        let layers: Vec<&LayerTrace<Buf>> = (0..count)
            .filter(|&l| !reads.graphs.is_empty() && reads.features.includes(l, count))
            .map(|l| &self.layers[l])
            .collect();
        if layers.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<Vec<usize>> = reads
            .graphs
            .iter()
            .map(|g| {
                g.tokens
                    .iter()
                    .map(|&t| g.sample * self.tokens + t)
                    .collect()
            })
            .collect();
        let graphs: Vec<(&Buf, &[usize])> = layers
            .iter()
            .flat_map(|layer| rows.iter().map(|r| (&layer.output, r.as_slice())))
            .collect();
        let mut solved = be
            .fiedler_rows(&graphs, self.width, &reads.graph_options)?
            .into_iter();
        Ok(layers
            .iter()
            .map(|_| solved.by_ref().take(rows.len()).collect())
            .collect())
    }

    /// Whether the trace holds everything `reads` names.
    pub fn serves(&self, reads: &Reads) -> bool {
        self.kept.as_ref().is_none_or(|k| k.covers(reads))
    }
}

impl<Buf> LayerTrace<Buf> {
    /// What a head mean of `kind` averages: A (or R_A) and ∇A. `None` where the trace lacks
    /// a pass the kind reads: it has nothing to average, and the methods' own checks name
    /// what is missing.
    fn maps(&self, kind: HeadMean) -> Option<(&Buf, Option<&Buf>)> {
        let x = if kind.reads_relevance() {
            self.relevance.as_ref()?
        } else {
            &self.attention
        };
        let grad = self.attention_grad.as_ref();
        (grad.is_some() || !kind.reads_gradient()).then_some((x, grad))
    }

    pub fn try_map<T, E>(self, mut f: impl FnMut(Buf) -> Result<T, E>) -> Result<LayerTrace<T>, E> {
        Ok(LayerTrace {
            attention: f(self.attention)?,
            attention_grad: self.attention_grad.map(&mut f).transpose()?,
            relevance: self.relevance.map(&mut f).transpose()?,
            output: f(self.output)?,
            means: self
                .means
                .into_iter()
                .map(|(k, b)| Ok((k, f(b)?)))
                .collect::<Result<_, E>>()?,
            fiedlers: self.fiedlers,
            weighted: self.weighted,
        })
    }
}

/// `LayerTrace::weighted` of one layer: for each kind `reads` weighs, the backend's
/// `head_mean_matvec` over the graphs that have a Fiedler vector (`fiedlers`, in the order
/// of `reads.graphs`).
fn weigh<B: Backend>(
    be: &B,
    layer: &LayerTrace<B::Buf>,
    reads: &Reads,
    fiedlers: &[Result<Fiedler, SpectralError>],
    heads: usize,
    tokens: usize,
) -> Result<Vec<(HeadMean, Products)>, BackendError> {
    if fiedlers.is_empty() {
        return Ok(Vec::new());
    }
    let solved: Vec<(usize, MeanGraph<'_>)> = reads
        .graphs
        .iter()
        .zip(fiedlers)
        .enumerate()
        .filter_map(|(i, (g, f))| {
            let f = f.as_ref().ok()?;
            Some((
                i,
                MeanGraph {
                    sample: g.sample,
                    tokens: &g.tokens,
                    vector: &f.vector,
                },
            ))
        })
        .collect();
    let graphs: Vec<MeanGraph<'_>> = solved.iter().map(|&(_, g)| g).collect();
    let mut out = Vec::with_capacity(reads.weighted.len());
    for &kind in &reads.weighted {
        let Some((x, grad)) = layer.maps(kind) else {
            continue;
        };
        let products = be.head_mean_matvec(kind, x, grad, heads, tokens, &graphs)?;
        let mut per_graph = vec![Vec::new(); fiedlers.len()];
        for (&(i, _), r) in solved.iter().zip(products) {
            per_graph[i] = r;
        }
        out.push((kind, per_graph));
    }
    Ok(out)
}
