//! The pre-layernorm transformer encoder layer shared by CLIP's towers (and ViLT):
//! `h = x + Attn(LN₁(x))`, `y = h + MLP(LN₂(h))`, with its activation-gradient backward.
//!
//! The k and v projections are fused into one `[2·width, width]` weight at load time, the
//! key|value rows the attention op reads.

use crate::backend::{Activation, AttentionShape, Backend};
use crate::model::linear::Linear;
use crate::model::source::WeightSource;
use crate::model::ModelError;

/// Where a family stores the parts of one layer, relative to the layer's prefix.
pub struct LayerNames {
    pub ln1: &'static str,
    pub query: &'static str,
    pub key: &'static str,
    pub value: &'static str,
    pub attn_out: &'static str,
    pub ln2: &'static str,
    pub fc1: &'static str,
    pub fc2: &'static str,
}

/// Sizes shared by every layer of one encoder.
#[derive(Debug, Clone, Copy)]
pub struct EncoderDims {
    pub width: usize,
    pub heads: usize,
    pub intermediate: usize,
    pub activation: Activation,
    pub eps: f32,
}

pub struct LayerWeights<B: Backend> {
    ln1: (B::Buf, B::Buf),
    query: Linear<B>,
    key_value: Linear<B>,
    attn_out: Linear<B>,
    ln2: (B::Buf, B::Buf),
    fc1: Linear<B>,
    fc2: Linear<B>,
}

/// What a forward keeps of each layer besides what the next layer reads: the larger the
/// pass that follows, the more (every activation of a base-size model at batch 16 is
/// gigabytes, so a forward-only trace should not pay for a backward it will not run).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Keep {
    /// The attention probabilities and layer outputs a trace records.
    Trace,
    /// Also what the activation-gradient backward reads.
    Gradients,
    /// Also every linear layer's input and branch output, which the LRP pass reads.
    Relevance,
}

/// What each layer of a forward keeps: what the backward reads from layer `gradients` on
/// and what the LRP pass reads from layer `relevance` on (each pass stops at its layer and
/// reads nothing below), the trace alone elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keeps {
    pub gradients: Option<usize>,
    pub relevance: Option<usize>,
}

impl Keeps {
    /// What layer `layer` keeps.
    fn at(self, layer: usize) -> Keep {
        let from = |first: Option<usize>| first.is_some_and(|f| layer >= f);
        if from(self.relevance) {
            Keep::Relevance
        } else if from(self.gradients) {
            Keep::Gradients
        } else {
            Keep::Trace
        }
    }
}

/// What one layer's forward keeps for the explanation methods and the passes after it.
pub struct LayerActivations<Buf> {
    /// Softmax probabilities [batch, heads, tokens, tokens].
    pub probs: Buf,
    /// The layer output [batch·tokens, width].
    pub out: Buf,
    /// What the backward reads ([`Keep::Gradients`] and up).
    backward: Option<BackwardSaved<Buf>>,
    /// What only the LRP pass reads ([`Keep::Relevance`]).
    relevance: Option<RelevanceSaved<Buf>>,
}

struct BackwardSaved<Buf> {
    ln1_stats: Buf,
    q: Buf,
    kv: Buf,
    /// x + attention branch: the input of the second layer norm.
    h: Buf,
    ln2_stats: Buf,
    fc1: Buf,
}

struct RelevanceSaved<Buf> {
    ln1: Buf,
    ctx: Buf,
    /// The attention branch, Dense(ctx) with its bias.
    attn: Buf,
    ln2: Buf,
    act: Buf,
    /// The MLP branch, W₂·act with its bias.
    mlp: Buf,
}

/// What the upper half of a layer computes.
struct Upper<Buf> {
    attn: Buf,
    h: Buf,
    ln2: Buf,
    ln2_stats: Buf,
    fc1: Buf,
    act: Buf,
    mlp: Buf,
    out: Buf,
}

/// What the upper half's LRP rules read, over whichever rows: the layer input and every
/// saved activation from the attention context up.
struct UpperRefs<'a, Buf> {
    x: &'a Buf,
    ctx: &'a Buf,
    attn: &'a Buf,
    h: &'a Buf,
    ln2: &'a Buf,
    fc1: &'a Buf,
    act: &'a Buf,
    mlp: &'a Buf,
}

impl<Buf> LayerActivations<Buf> {
    fn saved(&self) -> Result<&BackwardSaved<Buf>, ModelError> {
        self.backward
            .as_ref()
            .ok_or_else(|| not_kept("backward", Keep::Gradients))
    }

    fn for_relevance(&self) -> Result<(&BackwardSaved<Buf>, &RelevanceSaved<Buf>), ModelError> {
        match (&self.backward, &self.relevance) {
            (Some(b), Some(r)) => Ok((b, r)),
            _ => Err(not_kept("LRP pass", Keep::Relevance)),
        }
    }
}

/// A pass asked for activations its forward did not keep: a bug in the caller.
fn not_kept(pass: &str, needed: Keep) -> ModelError {
    ModelError::Input(format!(
        "the {pass} needs a forward run with Keep::{needed:?}"
    ))
}

/// A stack of layers and what its forward recorded.
pub struct Encoder<B: Backend> {
    pub dims: EncoderDims,
    layers: Vec<LayerWeights<B>>,
}

pub struct EncoderActivations<Buf> {
    input: Buf,
    pub layers: Vec<LayerActivations<Buf>>,
}

impl<Buf> EncoderActivations<Buf> {
    pub fn output(&self) -> &Buf {
        self.layers.last().map_or(&self.input, |l| &l.out)
    }
}

pub(crate) fn load_linear<B: Backend>(
    be: &B,
    w: &dyn WeightSource,
    name: &str,
    out_dim: usize,
    in_dim: usize,
) -> Result<Linear<B>, ModelError> {
    let weight = w.tensor(&format!("{name}.weight"), &[out_dim, in_dim])?;
    let bias = w.tensor(&format!("{name}.bias"), &[out_dim])?;
    Ok(Linear::new(
        be.upload_weight(&weight, out_dim, in_dim)?,
        be.upload(&bias)?,
    ))
}

pub(crate) fn load_norm<B: Backend>(
    be: &B,
    w: &dyn WeightSource,
    name: &str,
    dim: usize,
) -> Result<(B::Buf, B::Buf), ModelError> {
    let gamma = w.tensor(&format!("{name}.weight"), &[dim])?;
    let beta = w.tensor(&format!("{name}.bias"), &[dim])?;
    Ok((be.upload(&gamma)?, be.upload(&beta)?))
}

/// The rows `rows` of `buf` (rows of `width`), in that order.
pub(crate) fn gather<B: Backend>(
    be: &B,
    buf: &B::Buf,
    rows: &[usize],
    width: usize,
) -> Result<B::Buf, ModelError> {
    let mut out = be.uninit(rows.len() * width)?;
    be.gather_rows(&mut out, buf, rows, width)?;
    Ok(out)
}

/// `len` values that are `buf`'s row i at row `rows[i]` and 0 elsewhere.
fn scatter<B: Backend>(
    be: &B,
    buf: &B::Buf,
    rows: &[usize],
    width: usize,
    len: usize,
) -> Result<B::Buf, ModelError> {
    let mut out = be.uninit(len)?;
    be.gather_rows_backward(&mut out, buf, rows, width)?;
    Ok(out)
}

impl<B: Backend> Encoder<B> {
    /// Loads `layers` layers named `{prefix}.{i}.{part}`.
    pub fn load(
        be: &B,
        w: &dyn WeightSource,
        prefix: &str,
        layers: usize,
        names: &LayerNames,
        dims: EncoderDims,
    ) -> Result<Self, ModelError> {
        let d = dims.width;
        let layers = (0..layers)
            .map(|i| {
                let p = format!("{prefix}.{i}");
                let part = |n: &str| format!("{p}.{n}");
                let mut kv_w = Vec::with_capacity(2 * d * d);
                let mut kv_b = Vec::with_capacity(2 * d);
                for proj in [names.key, names.value] {
                    kv_w.extend(w.tensor(&format!("{}.weight", part(proj)), &[d, d])?);
                    kv_b.extend(w.tensor(&format!("{}.bias", part(proj)), &[d])?);
                }
                Ok(LayerWeights {
                    ln1: load_norm(be, w, &part(names.ln1), d)?,
                    query: load_linear(be, w, &part(names.query), d, d)?,
                    key_value: Linear::new(be.upload_weight(&kv_w, 2 * d, d)?, be.upload(&kv_b)?),
                    attn_out: load_linear(be, w, &part(names.attn_out), d, d)?,
                    ln2: load_norm(be, w, &part(names.ln2), d)?,
                    fc1: load_linear(be, w, &part(names.fc1), dims.intermediate, d)?,
                    fc2: load_linear(be, w, &part(names.fc2), d, dims.intermediate)?,
                })
            })
            .collect::<Result<Vec<_>, ModelError>>()?;
        Ok(Self { dims, layers })
    }

    pub fn depth(&self) -> usize {
        self.layers.len()
    }

    /// Runs every layer over `x` [batch·tokens, width], keeping what `keep` says.
    pub fn forward(
        &self,
        be: &B,
        x: B::Buf,
        shape: &AttentionShape,
        keeps: Keeps,
    ) -> Result<EncoderActivations<B::Buf>, ModelError> {
        let mut acts = EncoderActivations {
            input: x,
            layers: Vec::with_capacity(self.layers.len()),
        };
        for (i, layer) in self.layers.iter().enumerate() {
            let next = self.layer_forward(be, layer, acts.output(), shape, keeps.at(i))?;
            acts.layers.push(next);
        }
        Ok(acts)
    }

    fn layer_forward(
        &self,
        be: &B,
        lw: &LayerWeights<B>,
        x: &B::Buf,
        shape: &AttentionShape,
        keep: Keep,
    ) -> Result<LayerActivations<B::Buf>, ModelError> {
        let EncoderDims { width: d, eps, .. } = self.dims;
        let m = be.len(x) / d;
        let (mut ln1, mut ln1_stats) = (be.uninit(m * d)?, be.uninit(2 * m)?);
        be.layernorm(&mut ln1, &mut ln1_stats, x, &lw.ln1.0, &lw.ln1.1, d, eps)?;
        let (mut q, mut kv) = (be.uninit(m * d)?, be.uninit(m * 2 * d)?);
        be.linear(&mut q, &ln1, &lw.query.0, Some(&lw.query.1), m, d, d)?;
        be.linear(
            &mut kv,
            &ln1,
            &lw.key_value.0,
            Some(&lw.key_value.1),
            m,
            d,
            2 * d,
        )?;
        let (mut probs, mut ctx) = (be.uninit(shape.probs_len())?, be.uninit(m * d)?);
        be.attention(&mut probs, &mut ctx, &q, &kv, shape)?;
        let Upper {
            attn,
            h,
            ln2,
            ln2_stats,
            fc1,
            act,
            mlp,
            out,
        } = self.upper_forward(be, lw, x, &ctx)?;
        Ok(LayerActivations {
            probs,
            out,
            backward: (keep >= Keep::Gradients).then_some(BackwardSaved {
                ln1_stats,
                q,
                kv,
                h,
                ln2_stats,
                fc1,
            }),
            relevance: (keep >= Keep::Relevance).then_some(RelevanceSaved {
                ln1,
                ctx,
                attn,
                ln2,
                act,
                mlp,
            }),
        })
    }

    /// The upper half of a layer, over whichever rows `x` and `ctx` hold: the output
    /// projection and residual, then the MLP and its residual.
    fn upper_forward(
        &self,
        be: &B,
        lw: &LayerWeights<B>,
        x: &B::Buf,
        ctx: &B::Buf,
    ) -> Result<Upper<B::Buf>, ModelError> {
        let EncoderDims {
            width: d,
            intermediate: f,
            activation,
            eps,
            ..
        } = self.dims;
        let m = be.len(x) / d;
        let mut attn = be.uninit(m * d)?;
        be.linear(
            &mut attn,
            ctx,
            &lw.attn_out.0,
            Some(&lw.attn_out.1),
            m,
            d,
            d,
        )?;
        let mut h = be.uninit(m * d)?;
        be.add(&mut h, x, &attn)?;
        let (mut ln2, mut ln2_stats) = (be.uninit(m * d)?, be.uninit(2 * m)?);
        be.layernorm(&mut ln2, &mut ln2_stats, &h, &lw.ln2.0, &lw.ln2.1, d, eps)?;
        let (mut fc1, mut act) = (be.uninit(m * f)?, be.uninit(m * f)?);
        be.linear(&mut fc1, &ln2, &lw.fc1.0, Some(&lw.fc1.1), m, d, f)?;
        be.activation(&mut act, &fc1, activation)?;
        let mut mlp = be.uninit(m * d)?;
        be.linear(&mut mlp, &act, &lw.fc2.0, Some(&lw.fc2.1), m, f, d)?;
        let mut out = be.uninit(m * d)?;
        be.add(&mut out, &h, &mlp)?;
        Ok(Upper {
            attn,
            h,
            ln2,
            ln2_stats,
            fc1,
            act,
            mlp,
            out,
        })
    }

    /// The last layer's output at `rows` alone ([rows.len(), width]), one row per sample
    /// (`rows[b]` in sample b), keeping nothing: what a model's scores read. Below the last
    /// layer every row is computed, since its keys and values are; in it, only the pooled
    /// rows' queries, attention, projections and MLP.
    pub fn pooled_output(
        &self,
        be: &B,
        x: B::Buf,
        shape: &AttentionShape,
        rows: &[usize],
    ) -> Result<B::Buf, ModelError> {
        let in_sample = |(b, &row): (usize, &usize)| {
            (b * shape.queries..(b + 1) * shape.queries).contains(&row)
        };
        if rows.len() != shape.batch || !rows.iter().enumerate().all(in_sample) {
            return Err(ModelError::Input(format!(
                "pooled rows {rows:?} are not one per sample of {} tokens",
                shape.queries
            )));
        }
        let Some((top, below)) = self.layers.split_last() else {
            let mut out = be.uninit(rows.len() * self.dims.width)?;
            be.gather_rows(&mut out, &x, rows, self.dims.width)?;
            return Ok(out);
        };
        let mut x = x;
        for layer in below {
            x = self.layer_forward(be, layer, &x, shape, Keep::Trace)?.out;
        }
        let EncoderDims { width: d, eps, .. } = self.dims;
        let m = be.len(&x) / d;
        let (mut ln1, mut ln1_stats) = (be.uninit(m * d)?, be.uninit(2 * m)?);
        be.layernorm(&mut ln1, &mut ln1_stats, &x, &top.ln1.0, &top.ln1.1, d, eps)?;
        let mut kv = be.uninit(m * 2 * d)?;
        be.linear(
            &mut kv,
            &ln1,
            &top.key_value.0,
            Some(&top.key_value.1),
            m,
            d,
            2 * d,
        )?;
        let r = rows.len();
        let mut q = be.uninit(r * d)?;
        be.linear(
            &mut q,
            &gather(be, &ln1, rows, d)?,
            &top.query.0,
            Some(&top.query.1),
            r,
            d,
            d,
        )?;
        let positions: Vec<usize> = rows
            .iter()
            .enumerate()
            .map(|(b, &row)| row - b * shape.queries)
            .collect();
        let one = shape.single_query(&positions);
        let (mut probs, mut ctx) = (be.uninit(one.probs_len())?, be.uninit(r * d)?);
        be.attention(&mut probs, &mut ctx, &q, &kv, &one)?;
        Ok(self
            .upper_forward(be, top, &gather(be, &x, rows, d)?, &ctx)?
            .out)
    }

    /// Back-propagates the gradient `d_rows` ([rows.len(), width]) of the last layer's
    /// output at `rows` (zero at every other row) down to the attention probabilities of
    /// layer `first`. Returns ∂y/∂A for layers `first..`, first layer first: nothing reads
    /// the gradients below, so the backward stops there (Grad-CAM reads the last layer's
    /// alone, Chefer's maps those from their start layer).
    ///
    /// The models read one pooled row per sample, so the last layer's MLP and output
    /// projection run backwards over those rows alone (each row's MLP depends on that row
    /// only); from its attention down every row carries a gradient.
    pub fn backward(
        &self,
        be: &B,
        acts: &EncoderActivations<B::Buf>,
        d_rows: B::Buf,
        rows: &[usize],
        shape: &AttentionShape,
        first: usize,
    ) -> Result<Vec<B::Buf>, ModelError> {
        let (d, f) = (self.dims.width, self.dims.intermediate);
        self.check_first(first, "a backward")?;
        let mut grads = Vec::with_capacity(self.layers.len() - first);
        let mut dy: Option<B::Buf> = None;
        let layers = self.layers.iter().zip(&acts.layers).enumerate();
        for (i, (lw, a)) in layers.skip(first).rev() {
            let x = if i == 0 {
                &acts.input
            } else {
                &acts.layers[i - 1].out
            };
            let s = a.saved()?;
            let (dh, dctx) = match &dy {
                Some(dy) => self.mlp_backward(be, lw, &s.h, &s.ln2_stats, &s.fc1, dy)?,
                None => {
                    let (dh, dctx) = self.mlp_backward(
                        be,
                        lw,
                        &gather(be, &s.h, rows, d)?,
                        &gather(be, &s.ln2_stats, rows, 2)?,
                        &gather(be, &s.fc1, rows, f)?,
                        &d_rows,
                    )?;
                    let len = be.len(x);
                    (
                        scatter(be, &dh, rows, d, len)?,
                        scatter(be, &dctx, rows, d, len)?,
                    )
                }
            };
            let (dprobs, dx) =
                self.attention_backward(be, lw, a, x, dh, &dctx, shape, i > first)?;
            grads.push(dprobs);
            dy = dx;
        }
        grads.reverse();
        Ok(grads)
    }

    /// A pass down to layer `first` needs that layer.
    fn check_first(&self, first: usize, pass: &str) -> Result<(), ModelError> {
        if first < self.layers.len() {
            return Ok(());
        }
        Err(ModelError::Input(format!(
            "{pass} to layer {first} of an encoder of {} layers",
            self.layers.len()
        )))
    }

    /// LRP (§D) from relevance `r_rows` ([rows.len(), width]) at the last layer's output at
    /// `rows` (zero at every other row) down to layer `first`; returns the relevance at the
    /// attention probabilities of layers `first..`, first layer first (partial LRP reads
    /// the last layer's alone, Transformer Attribution those from its start layer). As in the
    /// backward, the last layer's MLP and output projection run over those rows alone: rules
    /// that meet zero relevance give zero, and the add rule's per-sample sums see the same
    /// nonzero terms.
    pub fn relprop(
        &self,
        be: &B,
        acts: &EncoderActivations<B::Buf>,
        r_rows: B::Buf,
        rows: &[usize],
        shape: &AttentionShape,
        first: usize,
    ) -> Result<Vec<B::Buf>, ModelError> {
        let (d, f) = (self.dims.width, self.dims.intermediate);
        self.check_first(first, "an LRP pass")?;
        let mut cams = Vec::with_capacity(self.layers.len() - first);
        let mut r: Option<B::Buf> = None;
        let layers = self.layers.iter().zip(&acts.layers).enumerate();
        for (i, (lw, a)) in layers.skip(first).rev() {
            let x = if i == 0 {
                &acts.input
            } else {
                &acts.layers[i - 1].out
            };
            let (s, rs) = a.for_relevance()?;
            let (r_x_res, r_ctx) = match &r {
                Some(r) => {
                    let upper = UpperRefs {
                        x,
                        ctx: &rs.ctx,
                        attn: &rs.attn,
                        h: &s.h,
                        ln2: &rs.ln2,
                        fc1: &s.fc1,
                        act: &rs.act,
                        mlp: &rs.mlp,
                    };
                    self.upper_relprop(be, lw, &upper, r, shape.batch)?
                }
                None => {
                    let upper = UpperRefs {
                        x: &gather(be, x, rows, d)?,
                        ctx: &gather(be, &rs.ctx, rows, d)?,
                        attn: &gather(be, &rs.attn, rows, d)?,
                        h: &gather(be, &s.h, rows, d)?,
                        ln2: &gather(be, &rs.ln2, rows, d)?,
                        fc1: &gather(be, &s.fc1, rows, f)?,
                        act: &gather(be, &rs.act, rows, f)?,
                        mlp: &gather(be, &rs.mlp, rows, d)?,
                    };
                    let (r_x_res, r_ctx) =
                        self.upper_relprop(be, lw, &upper, &r_rows, shape.batch)?;
                    let len = be.len(x);
                    (
                        scatter(be, &r_x_res, rows, d, len)?,
                        scatter(be, &r_ctx, rows, d, len)?,
                    )
                }
            };
            let (cam, rx) = self.lower_relprop(be, lw, a, x, &r_x_res, &r_ctx, shape, i > first)?;
            cams.push(cam);
            r = rx;
        }
        cams.reverse();
        Ok(cams)
    }

    /// The upper half of a layer backwards (Chefer's CVPR'21 block), over whichever rows its
    /// arguments hold: the add rule between h and the MLP branch, the MLP's linear rules (the
    /// activation and LN₂ pass relevance on), clone of h; the add rule between x and the
    /// attention branch, the output projection. Returns the relevance at x's residual and
    /// at the attention context.
    fn upper_relprop(
        &self,
        be: &B,
        lw: &LayerWeights<B>,
        u: &UpperRefs<'_, B::Buf>,
        r: &B::Buf,
        samples: usize,
    ) -> Result<(B::Buf, B::Buf), ModelError> {
        let (d, f) = (self.dims.width, self.dims.intermediate);
        let m = be.len(u.x) / d;
        let (mut r_h_res, mut r_mlp) = (be.uninit(m * d)?, be.uninit(m * d)?);
        be.lrp_add(&mut r_h_res, &mut r_mlp, r, u.h, u.mlp, samples)?;
        let r_act = lw.fc2.relprop(be, &r_mlp, u.act, Some(u.mlp), m, f, d)?;
        let r_ln2 = lw.fc1.relprop(be, &r_act, u.ln2, Some(u.fc1), m, d, f)?;
        let mut r_h = be.uninit(m * d)?;
        be.lrp_clone(&mut r_h, u.h, &[&r_h_res, &r_ln2])?;

        let (mut r_x_res, mut r_attn) = (be.uninit(m * d)?, be.uninit(m * d)?);
        be.lrp_add(&mut r_x_res, &mut r_attn, &r_h, u.x, u.attn, samples)?;
        let r_ctx = lw
            .attn_out
            .relprop(be, &r_attn, u.ctx, Some(u.attn), m, d, d)?;
        Ok((r_x_res, r_ctx))
    }

    /// The lower half of a layer backwards, from the relevance at x's residual and at the
    /// attention context: the attention, the q and k|v projections, clone of LN₁(x) (LN₁
    /// passes it on), clone of x. Returns the relevance at the probabilities and, with
    /// `input_relevance`, at x.
    #[allow(clippy::too_many_arguments)]
    fn lower_relprop(
        &self,
        be: &B,
        lw: &LayerWeights<B>,
        a: &LayerActivations<B::Buf>,
        x: &B::Buf,
        r_x_res: &B::Buf,
        r_ctx: &B::Buf,
        shape: &AttentionShape,
        input_relevance: bool,
    ) -> Result<(B::Buf, Option<B::Buf>), ModelError> {
        let d = self.dims.width;
        let m = be.len(x) / d;
        let probs = &a.probs;
        let (s, a) = a.for_relevance()?;
        let mut cam = be.uninit(shape.probs_len())?;
        let (mut rq, mut rkv) = (be.uninit(m * d)?, be.uninit(m * 2 * d)?);
        be.lrp_attention(
            &mut cam, &mut rq, &mut rkv, r_ctx, &s.q, &s.kv, probs, &a.ctx, shape,
        )?;
        // The layer where the pass stops: the query/key/value rules (three products each)
        // would only form relevance at an input nothing reads.
        if !input_relevance {
            return Ok((cam, None));
        }
        let r_q = lw.query.relprop(be, &rq, &a.ln1, Some(&s.q), m, d, d)?;
        let r_kv = lw
            .key_value
            .relprop(be, &rkv, &a.ln1, Some(&s.kv), m, d, 2 * d)?;
        let mut r_ln1 = be.uninit(m * d)?;
        be.lrp_clone(&mut r_ln1, &a.ln1, &[&r_q, &r_kv])?;
        let mut rx = be.uninit(m * d)?;
        be.lrp_clone(&mut rx, x, &[r_x_res, &r_ln1])?;
        Ok((cam, Some(rx)))
    }

    /// The upper half of a layer backwards, from `dy` at the layer output to the gradients
    /// at h (the residual stream between the halves) and at the attention context, over
    /// whichever rows `dy` and the saved `h`, `ln2_stats` and `fc1` hold.
    fn mlp_backward(
        &self,
        be: &B,
        lw: &LayerWeights<B>,
        h: &B::Buf,
        ln2_stats: &B::Buf,
        fc1: &B::Buf,
        dy: &B::Buf,
    ) -> Result<(B::Buf, B::Buf), ModelError> {
        let EncoderDims {
            width: d,
            intermediate: f,
            activation,
            ..
        } = self.dims;
        let m = be.len(dy) / d;
        let mut d_act = be.uninit(m * f)?;
        be.linear_backward(&mut d_act, dy, &lw.fc2.0, m, f, d, false)?;
        let mut d_fc1 = be.uninit(m * f)?;
        be.activation_backward(&mut d_fc1, &d_act, fc1, activation)?;
        let mut d_ln2 = be.uninit(m * d)?;
        be.linear_backward(&mut d_ln2, &d_fc1, &lw.fc1.0, m, d, f, false)?;
        let mut dh = be.copy(dy)?;
        be.layernorm_backward(&mut dh, &d_ln2, h, ln2_stats, &lw.ln2.0, d, true)?;
        let mut dctx = be.uninit(m * d)?;
        be.linear_backward(&mut dctx, &dh, &lw.attn_out.0, m, d, d, false)?;
        Ok((dh, dctx))
    }

    /// The lower half of a layer backwards from the gradients at h and at the attention
    /// context: ∂y/∂A and, when asked, the gradient of the layer input.
    #[allow(clippy::too_many_arguments)]
    fn attention_backward(
        &self,
        be: &B,
        lw: &LayerWeights<B>,
        a: &LayerActivations<B::Buf>,
        x: &B::Buf,
        dh: B::Buf,
        dctx: &B::Buf,
        shape: &AttentionShape,
        input_grad: bool,
    ) -> Result<(B::Buf, Option<B::Buf>), ModelError> {
        let d = self.dims.width;
        let m = be.len(x) / d;
        let (probs, a) = (&a.probs, a.saved()?);
        let mut dprobs = be.uninit(shape.probs_len())?;
        let mut dq = be.uninit(m * d)?;
        let mut dkv = be.uninit(m * 2 * d)?;
        be.attention_backward(
            &mut dprobs,
            &mut dq,
            &mut dkv,
            dctx,
            &a.q,
            &a.kv,
            probs,
            shape,
        )?;
        if !input_grad {
            return Ok((dprobs, None));
        }
        let mut d_ln1 = be.uninit(m * d)?;
        be.linear_backward(&mut d_ln1, &dq, &lw.query.0, m, d, d, false)?;
        be.linear_backward(&mut d_ln1, &dkv, &lw.key_value.0, m, d, 2 * d, true)?;
        let mut dx = dh;
        be.layernorm_backward(&mut dx, &d_ln1, x, &a.ln1_stats, &lw.ln1.0, d, true)?;
        Ok((dprobs, Some(dx)))
    }
}
