//! The VQA answer head both families share: a tanh pooler on the [CLS] row, then
//! Linear(d → 2d) → {LayerNorm, GELU} → Linear(2d → answers). ViLT normalises before the GELU
//! (`ViltForQuestionAnswering.classifier`), LXMERT after it (`LxmertVisualAnswerHead`).

use crate::backend::{Activation, Backend};
use crate::model::block::{load_linear, load_norm};
use crate::model::linear::Linear;
use crate::model::source::WeightSource;
use crate::model::ModelError;

/// Where the head's LayerNorm sits relative to its GELU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormOrder {
    /// Linear → LayerNorm → GELU → Linear (ViLT).
    NormThenGelu,
    /// Linear → GELU → LayerNorm → Linear (LXMERT).
    GeluThenNorm,
}

/// Weight names of a head, as the family stores them.
pub struct HeadNames<'a> {
    pub pooler: &'a str,
    pub hidden: &'a str,
    pub norm: &'a str,
    pub out: &'a str,
}

pub struct AnswerHead<B: Backend> {
    width: usize,
    labels: usize,
    order: NormOrder,
    eps: f32,
    pooler: Linear<B>,
    hidden: Linear<B>,
    norm: (B::Buf, B::Buf),
    out: Linear<B>,
}

/// What the head's forward keeps for the backward.
pub struct HeadActivations<Buf> {
    pooler_pre: Buf,
    /// tanh(pooler), the input of the hidden layer.
    pooled: Buf,
    hidden: Buf,
    /// Output of the first of LayerNorm / GELU, and the LayerNorm statistics.
    middle: Buf,
    stats: Buf,
    /// The input of the output layer.
    last: Buf,
}

impl<B: Backend> AnswerHead<B> {
    #[allow(clippy::too_many_arguments)]
    pub fn load(
        be: &B,
        w: &dyn WeightSource,
        names: &HeadNames,
        width: usize,
        labels: usize,
        order: NormOrder,
        eps: f32,
    ) -> Result<Self, ModelError> {
        Ok(Self {
            width,
            labels,
            order,
            eps,
            pooler: load_linear(be, w, names.pooler, width, width)?,
            hidden: load_linear(be, w, names.hidden, 2 * width, width)?,
            norm: load_norm(be, w, names.norm, 2 * width)?,
            out: load_linear(be, w, names.out, labels, 2 * width)?,
        })
    }

    /// Logits [batch, labels] from the [CLS] rows [batch, width].
    pub fn forward(
        &self,
        be: &B,
        cls: &B::Buf,
    ) -> Result<(HeadActivations<B::Buf>, Vec<f32>), ModelError> {
        let d = self.width;
        let batch = be.len(cls) / d;
        let mut a = HeadActivations {
            pooler_pre: be.zeros(batch * d)?,
            pooled: be.zeros(batch * d)?,
            hidden: be.zeros(batch * 2 * d)?,
            middle: be.zeros(batch * 2 * d)?,
            stats: be.zeros(2 * batch)?,
            last: be.zeros(batch * 2 * d)?,
        };
        be.linear(
            &mut a.pooler_pre,
            cls,
            &self.pooler.0,
            Some(&self.pooler.1),
            batch,
            d,
            d,
        )?;
        be.activation(&mut a.pooled, &a.pooler_pre, Activation::Tanh)?;
        be.linear(
            &mut a.hidden,
            &a.pooled,
            &self.hidden.0,
            Some(&self.hidden.1),
            batch,
            d,
            2 * d,
        )?;
        match self.order {
            NormOrder::NormThenGelu => {
                be.layernorm(
                    &mut a.middle,
                    &mut a.stats,
                    &a.hidden,
                    &self.norm.0,
                    &self.norm.1,
                    2 * d,
                    self.eps,
                )?;
                be.activation(&mut a.last, &a.middle, Activation::Gelu)?;
            }
            NormOrder::GeluThenNorm => {
                be.activation(&mut a.middle, &a.hidden, Activation::Gelu)?;
                be.layernorm(
                    &mut a.last,
                    &mut a.stats,
                    &a.middle,
                    &self.norm.0,
                    &self.norm.1,
                    2 * d,
                    self.eps,
                )?;
            }
        }
        let mut logits = be.zeros(batch * self.labels)?;
        be.linear(
            &mut logits,
            &a.last,
            &self.out.0,
            Some(&self.out.1),
            batch,
            2 * d,
            self.labels,
        )?;
        let logits = be.download(&logits)?;
        if let Some(i) = logits.iter().position(|v| !v.is_finite()) {
            return Err(ModelError::Input(format!(
                "logit {i} is {}: the weights or inputs overflow",
                logits[i]
            )));
        }
        Ok((a, logits))
    }

    /// ∂y/∂[CLS rows] from the seed ∂y/∂logits [batch, labels].
    pub fn backward(
        &self,
        be: &B,
        a: &HeadActivations<B::Buf>,
        seed: &[f32],
    ) -> Result<B::Buf, ModelError> {
        let d = self.width;
        let batch = seed.len() / self.labels;
        let mut d_last = be.zeros(batch * 2 * d)?;
        be.linear_backward(
            &mut d_last,
            &be.upload(seed)?,
            &self.out.0,
            batch,
            2 * d,
            self.labels,
            false,
        )?;
        let mut d_middle = be.zeros(batch * 2 * d)?;
        let mut d_hidden = be.zeros(batch * 2 * d)?;
        match self.order {
            NormOrder::NormThenGelu => {
                be.activation_backward(&mut d_middle, &d_last, &a.middle, Activation::Gelu)?;
                be.layernorm_backward(
                    &mut d_hidden,
                    &d_middle,
                    &a.hidden,
                    &a.stats,
                    &self.norm.0,
                    2 * d,
                    false,
                )?;
            }
            NormOrder::GeluThenNorm => {
                be.layernorm_backward(
                    &mut d_middle,
                    &d_last,
                    &a.middle,
                    &a.stats,
                    &self.norm.0,
                    2 * d,
                    false,
                )?;
                be.activation_backward(&mut d_hidden, &d_middle, &a.hidden, Activation::Gelu)?;
            }
        }
        let mut d_pooled = be.zeros(batch * d)?;
        be.linear_backward(
            &mut d_pooled,
            &d_hidden,
            &self.hidden.0,
            batch,
            d,
            2 * d,
            false,
        )?;
        let mut d_pre = be.zeros(batch * d)?;
        be.activation_backward(&mut d_pre, &d_pooled, &a.pooler_pre, Activation::Tanh)?;
        let mut d_cls = be.zeros(batch * d)?;
        be.linear_backward(&mut d_cls, &d_pre, &self.pooler.0, batch, d, d, false)?;
        Ok(d_cls)
    }

    /// LRP (§D) from the seed relevance at the logits [batch, labels] to the [CLS] rows `cls`:
    /// linear rules on the three layers; LayerNorm, GELU and tanh pass relevance on.
    pub fn relprop(
        &self,
        be: &B,
        a: &HeadActivations<B::Buf>,
        cls: &B::Buf,
        seed: &[f32],
    ) -> Result<B::Buf, ModelError> {
        let d = self.width;
        let batch = seed.len() / self.labels;
        let r_last = self.out.relprop(
            be,
            &be.upload(seed)?,
            &a.last,
            None,
            batch,
            2 * d,
            self.labels,
        )?;
        let r_pooled =
            self.hidden
                .relprop(be, &r_last, &a.pooled, Some(&a.hidden), batch, d, 2 * d)?;
        self.pooler
            .relprop(be, &r_pooled, cls, Some(&a.pooler_pre), batch, d, d)
    }
}

/// The highest-scoring answer of each row of `logits` [batch, labels] (first on ties).
pub fn argmax_rows(logits: &[f32], labels: usize) -> Vec<usize> {
    logits
        .chunks_exact(labels)
        .map(|l| {
            l.iter()
                .enumerate()
                .fold(0, |best, (i, &v)| if v > l[best] { i } else { best })
        })
        .collect()
}
