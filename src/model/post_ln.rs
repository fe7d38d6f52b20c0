//! BERT-style post-layernorm sublayers, as LXMERT is built from them
//! (transformers/models/lxmert/modeling_lxmert.py): attention `LN(x + Dense(MHA(x, kv)))`
//! (`LxmertAttention` + `LxmertAttentionOutput`) and feed-forward `LN(x + W₂·act(W₁·x))`
//! (`LxmertIntermediate` + `LxmertOutput`), each with its activation-gradient backward.
//! Queries and keys may come from different streams (cross-attention).

use crate::backend::{Activation, AttentionShape, Backend};
use crate::model::block::{gather, load_linear, load_norm};
use crate::model::linear::Linear;
use crate::model::source::WeightSource;
use crate::model::ModelError;

type Pair<B> = (<B as Backend>::Buf, <B as Backend>::Buf);
/// ∂y/∂A, d x_q and d x_kv of an attention sublayer.
type AttentionGradients<B> = (
    <B as Backend>::Buf,
    <B as Backend>::Buf,
    <B as Backend>::Buf,
);

/// `LN(x_q + Dense(MHA(q = x_q, kv = x_kv)))`.
pub struct AttentionSublayer<B: Backend> {
    width: usize,
    eps: f32,
    query: Linear<B>,
    key_value: Linear<B>,
    dense: Linear<B>,
    norm: Pair<B>,
}

/// What the attention sublayer's forward keeps.
pub struct AttentionActivations<Buf> {
    q: Buf,
    kv: Buf,
    pub probs: Buf,
    ctx: Buf,
    /// Dense(ctx) with its bias: the sublayer branch of the residual add.
    dense: Buf,
    pre_norm: Buf,
    stats: Buf,
    pub out: Buf,
}

impl<B: Backend> AttentionSublayer<B> {
    /// `attention` names the projections (`…attention.self`), `output` the dense + LayerNorm
    /// (`…attention.output`).
    pub fn load(
        be: &B,
        w: &dyn WeightSource,
        attention: &str,
        output: &str,
        width: usize,
        eps: f32,
    ) -> Result<Self, ModelError> {
        let d = width;
        let mut kv_w = Vec::with_capacity(2 * d * d);
        let mut kv_b = Vec::with_capacity(2 * d);
        for part in ["key", "value"] {
            kv_w.extend(w.tensor(&format!("{attention}.{part}.weight"), &[d, d])?);
            kv_b.extend(w.tensor(&format!("{attention}.{part}.bias"), &[d])?);
        }
        Ok(Self {
            width,
            eps,
            query: load_linear(be, w, &format!("{attention}.query"), d, d)?,
            key_value: Linear::new(be.upload_weight(&kv_w, 2 * d, d)?, be.upload(&kv_b)?),
            dense: load_linear(be, w, &format!("{output}.dense"), d, d)?,
            norm: load_norm(be, w, &format!("{output}.LayerNorm"), d)?,
        })
    }

    pub fn forward(
        &self,
        be: &B,
        x_q: &B::Buf,
        x_kv: &B::Buf,
        shape: &AttentionShape,
    ) -> Result<AttentionActivations<B::Buf>, ModelError> {
        let d = self.width;
        let (mq, mk) = (be.len(x_q) / d, be.len(x_kv) / d);
        let mut a = AttentionActivations {
            q: be.uninit(mq * d)?,
            kv: be.uninit(mk * 2 * d)?,
            probs: be.uninit(shape.probs_len())?,
            ctx: be.uninit(mq * d)?,
            dense: be.uninit(mq * d)?,
            pre_norm: be.uninit(mq * d)?,
            stats: be.uninit(2 * mq)?,
            out: be.uninit(mq * d)?,
        };
        be.linear(&mut a.q, x_q, &self.query.0, Some(&self.query.1), mq, d, d)?;
        be.linear(
            &mut a.kv,
            x_kv,
            &self.key_value.0,
            Some(&self.key_value.1),
            mk,
            d,
            2 * d,
        )?;
        be.attention(&mut a.probs, &mut a.ctx, &a.q, &a.kv, shape)?;
        be.linear(
            &mut a.dense,
            &a.ctx,
            &self.dense.0,
            Some(&self.dense.1),
            mq,
            d,
            d,
        )?;
        be.add(&mut a.pre_norm, &a.dense, x_q)?;
        be.layernorm(
            &mut a.out,
            &mut a.stats,
            &a.pre_norm,
            &self.norm.0,
            &self.norm.1,
            d,
            self.eps,
        )?;
        Ok(a)
    }

    /// From d out: ∂y/∂A, d x_q and d x_kv.
    pub fn backward(
        &self,
        be: &B,
        a: &AttentionActivations<B::Buf>,
        dout: &B::Buf,
        shape: &AttentionShape,
    ) -> Result<AttentionGradients<B>, ModelError> {
        let d = self.width;
        let (mq, mk) = (be.len(&a.q) / d, be.len(&a.kv) / (2 * d));
        let g = self.backward_to_projections(be, a, dout, shape)?;
        // The residual carries dz to x_q unchanged.
        let mut dx_q = g.dz;
        be.linear_backward(&mut dx_q, &g.dq, &self.query.0, mq, d, d, true)?;
        let mut dx_kv = be.uninit(mk * d)?;
        be.linear_backward(&mut dx_kv, &g.dkv, &self.key_value.0, mk, d, 2 * d, false)?;
        Ok((g.dprobs, dx_q, dx_kv))
    }

    /// ∂y/∂A alone, for a sublayer whose inputs need no gradient: the backward stops short
    /// of the three projections, the bulk of its products.
    pub fn probs_gradient(
        &self,
        be: &B,
        a: &AttentionActivations<B::Buf>,
        dout: &B::Buf,
        shape: &AttentionShape,
    ) -> Result<B::Buf, ModelError> {
        Ok(self.backward_to_projections(be, a, dout, shape)?.dprobs)
    }

    fn backward_to_projections(
        &self,
        be: &B,
        a: &AttentionActivations<B::Buf>,
        dout: &B::Buf,
        shape: &AttentionShape,
    ) -> Result<ProjectionGradients<B::Buf>, ModelError> {
        let d = self.width;
        let (mq, mk) = (be.len(&a.q) / d, be.len(&a.kv) / (2 * d));
        let mut dz = be.uninit(mq * d)?;
        be.layernorm_backward(&mut dz, dout, &a.pre_norm, &a.stats, &self.norm.0, d, false)?;
        let mut dctx = be.uninit(mq * d)?;
        be.linear_backward(&mut dctx, &dz, &self.dense.0, mq, d, d, false)?;
        let mut g = ProjectionGradients {
            dprobs: be.uninit(shape.probs_len())?,
            dq: be.uninit(mq * d)?,
            dkv: be.uninit(mk * 2 * d)?,
            dz,
        };
        be.attention_backward(
            &mut g.dprobs,
            &mut g.dq,
            &mut g.dkv,
            &dctx,
            &a.q,
            &a.kv,
            &a.probs,
            shape,
        )?;
        Ok(g)
    }

    /// LRP (§D) from relevance at `out`: the LayerNorm passes it on, the add rule splits it
    /// between Dense(…) and the residual x_q, then the dense layer, the attention and the
    /// q and k|v projections. The fused k|v projection sums its two parts, the clone rule
    /// of the key and value fan-out up to the 1e-9 stabiliser.
    pub fn relprop(
        &self,
        be: &B,
        a: &AttentionActivations<B::Buf>,
        x_q: &B::Buf,
        x_kv: &B::Buf,
        r_out: &B::Buf,
        shape: &AttentionShape,
    ) -> Result<AttentionRelevance<B::Buf>, ModelError> {
        let d = self.width;
        let (mq, mk) = (be.len(&a.q) / d, be.len(&a.kv) / (2 * d));
        let upper = self.relprop_upper(be, a, x_q, r_out, shape)?;
        Ok(AttentionRelevance {
            cam: upper.cam,
            query: self
                .query
                .relprop(be, &upper.q, x_q, Some(&a.q), mq, d, d)?,
            residual: upper.residual,
            context: self
                .key_value
                .relprop(be, &upper.kv, x_kv, Some(&a.kv), mk, d, 2 * d)?,
        })
    }

    /// The relevance at the attention probabilities alone, without the q and k|v
    /// projections' rules below them: for the module where an LRP pass ends.
    pub fn relprop_cam(
        &self,
        be: &B,
        a: &AttentionActivations<B::Buf>,
        x_q: &B::Buf,
        r_out: &B::Buf,
        shape: &AttentionShape,
    ) -> Result<B::Buf, ModelError> {
        Ok(self.relprop_upper(be, a, x_q, r_out, shape)?.cam)
    }

    /// `relprop` down to the projections' outputs: the add rule, the dense layer and the
    /// attention.
    fn relprop_upper(
        &self,
        be: &B,
        a: &AttentionActivations<B::Buf>,
        x_q: &B::Buf,
        r_out: &B::Buf,
        shape: &AttentionShape,
    ) -> Result<UpperRelevance<B::Buf>, ModelError> {
        let d = self.width;
        let (mq, mk) = (be.len(&a.q) / d, be.len(&a.kv) / (2 * d));
        let mut r_dense = be.uninit(mq * d)?;
        let mut residual = be.uninit(mq * d)?;
        be.lrp_add(
            &mut r_dense,
            &mut residual,
            r_out,
            &a.dense,
            x_q,
            shape.batch,
        )?;
        let r_ctx = self
            .dense
            .relprop(be, &r_dense, &a.ctx, Some(&a.dense), mq, d, d)?;
        let mut cam = be.uninit(shape.probs_len())?;
        let mut q = be.uninit(mq * d)?;
        let mut kv = be.uninit(mk * 2 * d)?;
        be.lrp_attention(
            &mut cam, &mut q, &mut kv, &r_ctx, &a.q, &a.kv, &a.probs, &a.ctx, shape,
        )?;
        Ok(UpperRelevance {
            cam,
            q,
            kv,
            residual,
        })
    }
}

/// The attention sublayer's relevance down to its projections' outputs.
struct UpperRelevance<Buf> {
    cam: Buf,
    /// At the query and key|value projections' outputs.
    q: Buf,
    kv: Buf,
    /// At x_q through the residual.
    residual: Buf,
}

/// The attention sublayer's gradients up to its projections' outputs.
struct ProjectionGradients<Buf> {
    dprobs: Buf,
    dq: Buf,
    dkv: Buf,
    /// At the residual sum before the LayerNorm: d x_q's residual part.
    dz: Buf,
}

/// Where an attention sublayer's relevance goes (§D).
pub struct AttentionRelevance<Buf> {
    /// Relevance at the attention probabilities, [batch, heads, queries, keys].
    pub cam: Buf,
    /// At x_q through the query projection and through the residual.
    pub query: Buf,
    pub residual: Buf,
    /// At x_kv through the key and value projections.
    pub context: Buf,
}

/// `LN(x + W₂·act(W₁·x))`.
pub struct FeedForward<B: Backend> {
    width: usize,
    intermediate: usize,
    activation: Activation,
    eps: f32,
    inter: Linear<B>,
    output: Linear<B>,
    norm: Pair<B>,
}

pub struct FeedForwardActivations<Buf> {
    pre_act: Buf,
    act: Buf,
    /// W₂·act with its bias: the branch of the residual add.
    down: Buf,
    pre_norm: Buf,
    stats: Buf,
    pub out: Buf,
}

impl<B: Backend> FeedForward<B> {
    /// `inter` names the first linear (`…intermediate`), `output` the second with its
    /// LayerNorm (`…output`).
    #[allow(clippy::too_many_arguments)]
    pub fn load(
        be: &B,
        w: &dyn WeightSource,
        inter: &str,
        output: &str,
        width: usize,
        intermediate: usize,
        activation: Activation,
        eps: f32,
    ) -> Result<Self, ModelError> {
        Ok(Self {
            width,
            intermediate,
            activation,
            eps,
            inter: load_linear(be, w, &format!("{inter}.dense"), intermediate, width)?,
            output: load_linear(be, w, &format!("{output}.dense"), width, intermediate)?,
            norm: load_norm(be, w, &format!("{output}.LayerNorm"), width)?,
        })
    }

    pub fn forward(
        &self,
        be: &B,
        x: &B::Buf,
    ) -> Result<FeedForwardActivations<B::Buf>, ModelError> {
        let (d, f) = (self.width, self.intermediate);
        let m = be.len(x) / d;
        let mut a = FeedForwardActivations {
            pre_act: be.uninit(m * f)?,
            act: be.uninit(m * f)?,
            down: be.uninit(m * d)?,
            pre_norm: be.uninit(m * d)?,
            stats: be.uninit(2 * m)?,
            out: be.uninit(m * d)?,
        };
        be.linear(
            &mut a.pre_act,
            x,
            &self.inter.0,
            Some(&self.inter.1),
            m,
            d,
            f,
        )?;
        be.activation(&mut a.act, &a.pre_act, self.activation)?;
        be.linear(
            &mut a.down,
            &a.act,
            &self.output.0,
            Some(&self.output.1),
            m,
            f,
            d,
        )?;
        be.add(&mut a.pre_norm, &a.down, x)?;
        be.layernorm(
            &mut a.out,
            &mut a.stats,
            &a.pre_norm,
            &self.norm.0,
            &self.norm.1,
            d,
            self.eps,
        )?;
        Ok(a)
    }

    /// d x from d out.
    pub fn backward(
        &self,
        be: &B,
        a: &FeedForwardActivations<B::Buf>,
        dout: &B::Buf,
    ) -> Result<B::Buf, ModelError> {
        let (d, f) = (self.width, self.intermediate);
        let m = be.len(dout) / d;
        let mut dz = be.uninit(m * d)?;
        be.layernorm_backward(&mut dz, dout, &a.pre_norm, &a.stats, &self.norm.0, d, false)?;
        let mut d_act = be.uninit(m * f)?;
        be.linear_backward(&mut d_act, &dz, &self.output.0, m, f, d, false)?;
        let mut d_pre = be.uninit(m * f)?;
        be.activation_backward(&mut d_pre, &d_act, &a.pre_act, self.activation)?;
        let mut dx = dz;
        be.linear_backward(&mut dx, &d_pre, &self.inter.0, m, d, f, true)?;
        Ok(dx)
    }

    /// d x at `rows` alone from d out at those rows ([rows, width] each), for a d out that
    /// is zero elsewhere (then so is d x): the products run over those rows only.
    pub fn backward_rows(
        &self,
        be: &B,
        a: &FeedForwardActivations<B::Buf>,
        dout: &B::Buf,
        rows: &[usize],
    ) -> Result<B::Buf, ModelError> {
        self.backward(be, &self.at_rows(be, a, rows)?, dout)
    }

    /// LRP (§D) from relevance at `out` to the input x: LayerNorm identity, the add rule
    /// between W₂·act and x, the two linear rules (GELU passes relevance on), and the clone
    /// rule merging the branch with the residual.
    pub fn relprop(
        &self,
        be: &B,
        a: &FeedForwardActivations<B::Buf>,
        x: &B::Buf,
        r_out: &B::Buf,
        samples: usize,
    ) -> Result<B::Buf, ModelError> {
        let (d, f) = (self.width, self.intermediate);
        let m = be.len(x) / d;
        let mut r_down = be.uninit(m * d)?;
        let mut r_res = be.uninit(m * d)?;
        be.lrp_add(&mut r_down, &mut r_res, r_out, &a.down, x, samples)?;
        let r_act = self
            .output
            .relprop(be, &r_down, &a.act, Some(&a.down), m, f, d)?;
        let r_branch = self
            .inter
            .relprop(be, &r_act, x, Some(&a.pre_act), m, d, f)?;
        let mut rx = be.uninit(m * d)?;
        be.lrp_clone(&mut rx, x, &[&r_branch, &r_res])?;
        Ok(rx)
    }

    /// `relprop` for relevance at one row of each sample alone (`rows`, [samples, width]),
    /// zero at every other row, as at the last layer's [CLS]: a rule that meets zero
    /// relevance gives zero, and the add rule's per-sample sums see the same nonzero terms,
    /// so the rules run over those rows only. Gives the relevance at x at those rows.
    pub fn relprop_rows(
        &self,
        be: &B,
        a: &FeedForwardActivations<B::Buf>,
        x: &B::Buf,
        r_out: &B::Buf,
        rows: &[usize],
    ) -> Result<B::Buf, ModelError> {
        let x = gather(be, x, rows, self.width)?;
        self.relprop(be, &self.at_rows(be, a, rows)?, &x, r_out, rows.len())
    }

    /// The activations of `rows` alone, in that order.
    fn at_rows(
        &self,
        be: &B,
        a: &FeedForwardActivations<B::Buf>,
        rows: &[usize],
    ) -> Result<FeedForwardActivations<B::Buf>, ModelError> {
        let (d, f) = (self.width, self.intermediate);
        Ok(FeedForwardActivations {
            pre_act: gather(be, &a.pre_act, rows, f)?,
            act: gather(be, &a.act, rows, f)?,
            down: gather(be, &a.down, rows, d)?,
            pre_norm: gather(be, &a.pre_norm, rows, d)?,
            stats: gather(be, &a.stats, rows, 2)?,
            out: gather(be, &a.out, rows, d)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Cpu;
    use crate::model::source::RandomWeights;

    /// Relevance at one row per sample (as at the last layer's [CLS]): the rules run over
    /// those rows alone give, bit for bit, what the whole pass gives there, and the whole
    /// pass gives zero everywhere else. Three samples with different relevance totals, so
    /// that the add rule's per-sample rescale shows if it were taken over the batch.
    #[test]
    fn relevance_at_one_row_per_sample_runs_over_those_rows_alone() {
        let (d, f, t, samples) = (24, 40, 5, 3);
        let weights = RandomWeights {
            seed: 7,
            scale: 0.2,
        };
        let ffn =
            FeedForward::load(&Cpu, &weights, "i", "o", d, f, Activation::Gelu, 1e-12).unwrap();
        let m = samples * t;
        let x: Vec<f32> = (0..m * d)
            .map(|i| ((i * 37 % 101) as f32 / 50.0 - 1.0) * (1.0 + (i % 7) as f32))
            .collect();
        let a = ffn.forward(&Cpu, &x).unwrap();
        let rows: Vec<usize> = (0..samples).map(|b| b * t + b % 2).collect();
        let r_rows: Vec<f32> = (0..samples * d)
            .map(|i| (i % d) as f32 / d as f32 * [1.0, -3.0, 0.25][i / d])
            .collect();
        let mut r_out = vec![0.0f32; m * d];
        for (k, &row) in rows.iter().enumerate() {
            r_out[row * d..(row + 1) * d].copy_from_slice(&r_rows[k * d..(k + 1) * d]);
        }
        let whole = ffn.relprop(&Cpu, &a, &x, &r_out, samples).unwrap();
        let ours = ffn.relprop_rows(&Cpu, &a, &x, &r_rows, &rows).unwrap();
        for r in 0..m {
            let at = &whole[r * d..(r + 1) * d];
            match rows.iter().position(|&x| x == r) {
                Some(k) => assert_eq!(at, &ours[k * d..(k + 1) * d], "row {r}"),
                None => assert!(at.iter().all(|&v| v == 0.0), "row {r} has relevance"),
            }
        }
        assert!(ours.iter().any(|&v| v != 0.0));
    }
}
