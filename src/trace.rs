//! What a forward pass records (per-layer attention probabilities and layer outputs) and what
//! the backward fills in (∂target/∂attention probabilities), per tower of a model.
//!
//! Buffers stay on the backend that computed them (`Buf`); `into_host` moves a trace into host
//! memory, where the explanation methods read it.

use crate::backend::{Backend, BackendError};
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
        })
    }

    /// Moves every buffer into host memory (no copy on the CPU backend).
    pub fn into_host<B: Backend<Buf = Buf>>(
        self,
        be: &B,
    ) -> Result<TowerTrace<Vec<f32>>, BackendError> {
        self.try_map(|b| be.move_to_host(b))
    }
}

impl<Buf> LayerTrace<Buf> {
    pub fn try_map<T, E>(self, mut f: impl FnMut(Buf) -> Result<T, E>) -> Result<LayerTrace<T>, E> {
        Ok(LayerTrace {
            attention: f(self.attention)?,
            attention_grad: self.attention_grad.map(&mut f).transpose()?,
            relevance: self.relevance.map(&mut f).transpose()?,
            output: f(self.output)?,
        })
    }
}
