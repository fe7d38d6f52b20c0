//! What a forward pass records (per-layer attention probabilities and layer outputs) and what
//! the backward fills in (∂target/∂attention probabilities), per tower of a model.
//!
//! Buffers stay on the backend that computed them (`Buf`); `into_host` moves a trace into host
//! memory, where the explanation methods read it.

use crate::backend::{Backend, BackendError, HeadMean};
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
}

/// What explanation methods read of a tower trace: only that needs to leave the device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reads {
    /// Head means, of every layer.
    pub means: Vec<HeadMean>,
    /// The layer outputs (the spectral methods' token features), of every layer.
    pub outputs: bool,
    /// The last layer's per-head A and ∇A (Grad-CAM weighs each head).
    pub last_layer_heads: bool,
}

impl Reads {
    /// Everything either reads.
    pub fn union(mut self, other: &Reads) -> Reads {
        for &k in &other.means {
            if !self.means.contains(&k) {
                self.means.push(k);
            }
        }
        self.outputs |= other.outputs;
        self.last_layer_heads |= other.last_layer_heads;
        self
    }

    /// Whether this holds everything `other` reads.
    pub fn covers(&self, other: &Reads) -> bool {
        other.means.iter().all(|k| self.means.contains(k))
            && (self.outputs || !other.outputs)
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
}

impl<Buf> TowerTrace<Buf> {
    /// Pairs a finished forward with the backward's gradients and the LRP pass's relevance
    /// (first layer first), if any.
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
        let per_layer = |v: Option<Vec<Buf>>| -> Box<dyn Iterator<Item = Option<Buf>>> {
            match v {
                Some(v) => Box::new(v.into_iter().map(Some)),
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
        }
    }

    /// Whether the backward filled in ∂y/∂A (see `record` vs `trace` on the models).
    pub fn has_gradients(&self) -> bool {
        self.layers.iter().all(|l| l.attention_grad.is_some())
    }

    /// Whether an LRP pass filled in the relevance at the attention maps.
    pub fn has_relevance(&self) -> bool {
        self.layers.iter().all(|l| l.relevance.is_some())
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
        let entries = self.tokens * self.tokens;
        let last = self.layers.len().saturating_sub(1);
        let (batch, heads) = (self.batch, self.heads);
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
                for &kind in &reads.means {
                    let x = if kind.reads_relevance() {
                        layer.relevance.as_ref()
                    } else {
                        Some(&layer.attention)
                    };
                    // A trace without the pass a mean reads has nothing to average: the
                    // methods' own checks name what is missing.
                    let grad = layer.attention_grad.as_ref();
                    let Some(x) = x.filter(|_| grad.is_some() || !kind.reads_gradient()) else {
                        continue;
                    };
                    let mut mean = be.zeros(batch * entries)?;
                    be.head_mean(&mut mean, kind, x, grad, heads, entries)?;
                    means.push((kind, be.move_to_host(mean)?));
                }
                let per_head = reads.last_layer_heads && l == last;
                Ok(LayerTrace {
                    attention: keep(layer.attention, per_head)?,
                    attention_grad: layer
                        .attention_grad
                        .map(|g| keep(g, per_head))
                        .transpose()?,
                    relevance: layer.relevance.map(|r| keep(r, false)).transpose()?,
                    output: keep(layer.output, reads.outputs)?,
                    means,
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
        })
    }

    /// Whether the trace holds everything `reads` names.
    pub fn serves(&self, reads: &Reads) -> bool {
        self.kept.as_ref().is_none_or(|k| k.covers(reads))
    }
}

impl<Buf> LayerTrace<Buf> {
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
        })
    }
}
