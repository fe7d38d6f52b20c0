//! CLIP (Radford et al. 2021) as Hugging Face's `CLIPModel` computes it
//! (transformers/models/clip/modeling_clip.py): a ViT vision tower with a class token,
//! pre-layernorm and post-layernorm on the class token, a causal text transformer pooled at
//! the end-of-text token, linear projections, and the pair score
//! exp(logit_scale)·cos(image, text). Spec: methods.md §A.2.

use std::path::Path;

use crate::backend::{AttentionShape, Backend, BackendError, PatchGeometry};
use crate::model::block::{
    gather, load_norm, Encoder, EncoderActivations, EncoderDims, Keeps, LayerNames,
};
use crate::model::config::ClipConfig;
use crate::model::linear::Linear;
use crate::model::source::WeightSource;
use crate::model::weights::{LayerStack, Weights};
use crate::model::{ModelError, Pooled};
use crate::trace::{Reads, TowerTrace};

const CLIP_LAYER: LayerNames = LayerNames {
    ln1: "layer_norm1",
    query: "self_attn.q_proj",
    key: "self_attn.k_proj",
    value: "self_attn.v_proj",
    attn_out: "self_attn.out_proj",
    ln2: "layer_norm2",
    fc1: "mlp.fc1",
    fc2: "mlp.fc2",
};

/// A batch of (image, text) pairs: sample b pairs image b with text b.
#[derive(Debug, Clone)]
pub struct ClipInputs {
    /// Preprocessed images [batch, channels, size, size].
    pub pixels: Vec<f32>,
    /// Token ids [batch, seq_len], padded after each text's `lengths[b]` tokens.
    pub ids: Vec<u32>,
    pub lengths: Vec<usize>,
    pub seq_len: usize,
}

impl ClipInputs {
    pub fn batch(&self) -> usize {
        self.lengths.len()
    }
}

/// Scores and embeddings of a batch.
#[derive(Debug, Clone)]
pub struct ClipOutput {
    /// exp(logit_scale)·cos(image b, text b), one per pair.
    pub pair_scores: Vec<f32>,
    /// L2-normalised projections [batch, projection_dim].
    pub image_embeds: Vec<f32>,
    pub text_embeds: Vec<f32>,
    /// exp(logit_scale).
    pub scale: f32,
    pub projection_dim: usize,
    /// Position of the end-of-text token that pools each text.
    pub eos_positions: Vec<usize>,
}

impl ClipOutput {
    /// logits_per_image[i][j] = scale·cos(image i, text j), as transformers returns it.
    pub fn logits_per_image(&self) -> Vec<Vec<f32>> {
        let p = self.projection_dim;
        self.image_embeds
            .chunks_exact(p)
            .map(|img| {
                self.text_embeds
                    .chunks_exact(p)
                    .map(|txt| self.scale * img.iter().zip(txt).map(|(a, b)| a * b).sum::<f32>())
                    .collect()
            })
            .collect()
    }
}

/// One buffer per layer of each tower: (vision, text).
type PerTower<Buf> = (Vec<Buf>, Vec<Buf>);

/// How deep a backward or an LRP pass runs in each tower: the first layer whose ∂y/∂A or
/// relevance at the attention probabilities it records. The layers below get none, and the
/// pass stops at that layer's probabilities (`explain::clip::clip_depth` gives it for a
/// list of methods).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FirstLayers {
    pub vision: usize,
    pub text: usize,
}

impl FirstLayers {
    /// Every layer of both towers.
    pub const ALL: FirstLayers = FirstLayers { vision: 0, text: 0 };
}

/// One tower's input with its attention shape, and the rows it pools.
struct TowerInput<Buf> {
    x: Buf,
    shape: AttentionShape,
    rows: Vec<usize>,
}

/// The pooled rows, their projections and the scores.
struct Head<Buf> {
    vision_pooled: Pooled<Buf>,
    text_pooled: Pooled<Buf>,
    image_proj: Buf,
    text_proj: Buf,
    output: ClipOutput,
}

/// A forward pass with everything the backward needs.
struct Forward<Buf> {
    vision: EncoderActivations<Buf>,
    vision_shape: AttentionShape,
    text: EncoderActivations<Buf>,
    text_shape: AttentionShape,
    /// Rows of the pooled tokens in the tower outputs.
    vision_rows: Vec<usize>,
    text_rows: Vec<usize>,
    /// Pooled rows after their layer norm, with its statistics, and the pooled rows before.
    vision_pooled: Pooled<Buf>,
    text_pooled: Pooled<Buf>,
    image_proj: Buf,
    text_proj: Buf,
    output: ClipOutput,
}

/// The trace of a batch: both towers, vision first.
pub struct ClipTrace<Buf> {
    pub output: ClipOutput,
    /// Patch grid of the vision tower (rows, columns).
    pub image_grid: (usize, usize),
    pub vision: TowerTrace<Buf>,
    pub text: TowerTrace<Buf>,
}

impl<Buf> ClipTrace<Buf> {
    /// Moves both towers into host memory (no copy on the CPU backend).
    pub fn into_host<B: Backend<Buf = Buf>>(
        self,
        be: &B,
    ) -> Result<ClipTrace<Vec<f32>>, BackendError> {
        Ok(ClipTrace {
            output: self.output,
            image_grid: self.image_grid,
            vision: self.vision.into_host(be)?,
            text: self.text.into_host(be)?,
        })
    }

    /// Brings to the host only what each tower's reads name (`TowerTrace::into_host_for`;
    /// `explain::clip::clip_reads` gives them for a list of methods).
    pub fn into_host_for<B: Backend<Buf = Buf>>(
        self,
        be: &B,
        (vision, text): &(Reads, Reads),
    ) -> Result<ClipTrace<Vec<f32>>, BackendError> {
        Ok(ClipTrace {
            output: self.output,
            image_grid: self.image_grid,
            vision: self.vision.into_host_for(be, vision)?,
            text: self.text.into_host_for(be, text)?,
        })
    }
}

pub struct Clip<B: Backend> {
    pub config: ClipConfig,
    patch_embedding: B::Buf,
    class_embedding: B::Buf,
    vision_positions: B::Buf,
    pre_layernorm: (B::Buf, B::Buf),
    vision: Encoder<B>,
    post_layernorm: (B::Buf, B::Buf),
    /// Projections without bias (a zero bias, for the LRP rule's bookkeeping).
    visual_projection: Linear<B>,
    token_embedding: B::Buf,
    text_positions: B::Buf,
    text: Encoder<B>,
    final_layernorm: (B::Buf, B::Buf),
    text_projection: Linear<B>,
    logit_scale: f32,
}

/// Where CLIP's layers are stored.
const VISION_LAYERS: &str = "vision_model.encoder.layers";
const TEXT_LAYERS: &str = "text_model.encoder.layers";

/// CLIP's layer stacks and how deep its config says they are.
pub fn layer_stacks(config: &ClipConfig) -> [LayerStack; 2] {
    [
        LayerStack {
            prefix: VISION_LAYERS,
            field: "vision_config.num_hidden_layers",
            layers: config.vision.num_hidden_layers,
        },
        LayerStack {
            prefix: TEXT_LAYERS,
            field: "text_config.num_hidden_layers",
            layers: config.text.num_hidden_layers,
        },
    ]
}

impl<B: Backend> Clip<B> {
    /// Loads config.json and the safetensors weights of a Hugging Face CLIP directory.
    pub fn load(be: &B, dir: &Path) -> Result<Self, ModelError> {
        let config = ClipConfig::from_dir(dir)?;
        let weights = Weights::open(dir)?;
        weights.check_depth(&layer_stacks(&config))?;
        Self::from_source(be, config, &weights)
    }

    pub fn from_source(
        be: &B,
        config: ClipConfig,
        w: &dyn WeightSource,
    ) -> Result<Self, ModelError> {
        let v = &config.vision;
        let t = &config.text;
        let p = config.projection_dim;
        let (dv, dt) = (v.hidden_size, t.hidden_size);
        let patch_len = v.num_channels * v.patch_size * v.patch_size;
        let vision_tokens = 1 + v.grid_size() * v.grid_size();
        let upload = |name: &str, shape: &[usize]| -> Result<B::Buf, ModelError> {
            Ok(be.upload(&w.tensor(name, shape)?)?)
        };
        let upload_weight =
            |name: &str, out: usize, input: usize, shape: &[usize]| -> Result<B::Buf, ModelError> {
                Ok(be.upload_weight(&w.tensor(name, shape)?, out, input)?)
            };
        let vision_dims = EncoderDims {
            width: dv,
            heads: v.num_attention_heads,
            intermediate: v.intermediate_size,
            activation: v.hidden_act,
            eps: v.layer_norm_eps,
        };
        let text_dims = EncoderDims {
            width: dt,
            heads: t.num_attention_heads,
            intermediate: t.intermediate_size,
            activation: t.hidden_act,
            eps: t.layer_norm_eps,
        };
        let logit_scale = w.tensor("logit_scale", &[])?[0];
        Ok(Self {
            // The stride-p convolution is a linear map of each flattened patch.
            patch_embedding: upload_weight(
                "vision_model.embeddings.patch_embedding.weight",
                dv,
                patch_len,
                &[dv, v.num_channels, v.patch_size, v.patch_size],
            )?,
            class_embedding: upload("vision_model.embeddings.class_embedding", &[dv])?,
            vision_positions: upload(
                "vision_model.embeddings.position_embedding.weight",
                &[vision_tokens, dv],
            )?,
            pre_layernorm: load_norm(be, w, "vision_model.pre_layrnorm", dv)?,
            vision: Encoder::load(
                be,
                w,
                VISION_LAYERS,
                v.num_hidden_layers,
                &CLIP_LAYER,
                vision_dims,
            )?,
            post_layernorm: load_norm(be, w, "vision_model.post_layernorm", dv)?,
            visual_projection: Linear::new(
                upload_weight("visual_projection.weight", p, dv, &[p, dv])?,
                be.zeros(p)?,
            ),
            token_embedding: upload(
                "text_model.embeddings.token_embedding.weight",
                &[t.vocab_size, dt],
            )?,
            text_positions: upload(
                "text_model.embeddings.position_embedding.weight",
                &[t.max_position_embeddings, dt],
            )?,
            text: Encoder::load(
                be,
                w,
                TEXT_LAYERS,
                t.num_hidden_layers,
                &CLIP_LAYER,
                text_dims,
            )?,
            final_layernorm: load_norm(be, w, "text_model.final_layer_norm", dt)?,
            text_projection: Linear::new(
                upload_weight("text_projection.weight", p, dt, &[p, dt])?,
                be.zeros(p)?,
            ),
            logit_scale,
            config,
        })
    }

    /// The layer counts of the towers, (vision, text).
    pub fn layers(&self) -> (usize, usize) {
        let c = &self.config;
        (c.vision.num_hidden_layers, c.text.num_hidden_layers)
    }

    /// Forward only, recording both towers without gradients: enough for the methods that
    /// read no ∂y/∂A (raw attention, rollout, DSMI) at half the cost.
    pub fn record(&self, be: &B, inputs: &ClipInputs) -> Result<ClipTrace<B::Buf>, ModelError> {
        let f = self.forward(be, inputs, None, None)?;
        Ok(self.finish(f, inputs, None, None))
    }

    /// Forward, then backward of Σ_b seed[b]·score[b] (every seed 1 by default: each pair's
    /// own score, since pairs do not interact), recording both towers.
    pub fn trace(
        &self,
        be: &B,
        inputs: &ClipInputs,
        seeds: Option<&[f32]>,
    ) -> Result<ClipTrace<B::Buf>, ModelError> {
        self.trace_from(be, inputs, seeds, FirstLayers::ALL)
    }

    /// `trace` with the backward run down to the layers `from` names only.
    pub fn trace_from(
        &self,
        be: &B,
        inputs: &ClipInputs,
        seeds: Option<&[f32]>,
        from: FirstLayers,
    ) -> Result<ClipTrace<B::Buf>, ModelError> {
        let f = self.forward(be, inputs, Some(from), None)?;
        let grads = self.backward(be, &f, inputs, seeds, from)?;
        Ok(self.finish(f, inputs, Some(grads), None))
    }

    /// Forward, the backward when `gradients`, and the LRP pass (§D) from relevance 1 at
    /// each pair's score, recording the relevance at every layer's probabilities of both
    /// towers.
    ///
    /// The score scale·⟨â, b̂⟩ of the normalised embeddings takes the gradient × input rule of
    /// a product (R_â = â ⊙ scale·b̂ · sdiv(R, s), likewise b̂), each tower keeping the whole
    /// relevance of the pair (the towers are explained one at a time); the L2 normalisation
    /// and the final LayerNorms pass relevance on (no rule, like every normalisation in §D);
    /// the projections take the linear rule, the pooled row the index-select rule.
    pub fn lrp(
        &self,
        be: &B,
        inputs: &ClipInputs,
        gradients: bool,
    ) -> Result<ClipTrace<B::Buf>, ModelError> {
        let all = FirstLayers::ALL;
        self.lrp_from(be, inputs, gradients.then_some(all), all)
    }

    /// `lrp` with the backward, if any, run down to the layers `gradients` names and the
    /// LRP pass down to those `relevance` names.
    pub fn lrp_from(
        &self,
        be: &B,
        inputs: &ClipInputs,
        gradients: Option<FirstLayers>,
        relevance: FirstLayers,
    ) -> Result<ClipTrace<B::Buf>, ModelError> {
        let f = self.forward(be, inputs, gradients, Some(relevance))?;
        let grads = gradients
            .map(|from| self.backward(be, &f, inputs, None, from))
            .transpose()?;
        let o = &f.output;
        let p = o.projection_dim;
        let share = |own: &[f32], other: &[f32]| -> Vec<f32> {
            own.chunks_exact(p)
                .zip(other.chunks_exact(p))
                .zip(&o.pair_scores)
                .flat_map(|((a, b), &s)| {
                    let scale = o.scale * if s == 0.0 { 0.0 } else { 1.0 / (s + 1e-9) };
                    a.iter().zip(b).map(move |(a, b)| a * b * scale)
                })
                .collect()
        };
        let r_img = be.upload(&share(&o.image_embeds, &o.text_embeds))?;
        let r_txt = be.upload(&share(&o.text_embeds, &o.image_embeds))?;
        let (dv, dt) = (self.config.vision.hidden_size, self.config.text.hidden_size);
        let r_vision = self.pooled_relprop(
            be,
            &r_img,
            &f.vision_pooled,
            &f.image_proj,
            &self.visual_projection,
            dv,
        )?;
        let r_text = self.pooled_relprop(
            be,
            &r_txt,
            &f.text_pooled,
            &f.text_proj,
            &self.text_projection,
            dt,
        )?;
        let cams = (
            self.vision.relprop(
                be,
                &f.vision,
                r_vision,
                &f.vision_rows,
                &f.vision_shape,
                relevance.vision,
            )?,
            self.text.relprop(
                be,
                &f.text,
                r_text,
                &f.text_rows,
                &f.text_shape,
                relevance.text,
            )?,
        );
        Ok(self.finish(f, inputs, grads, Some(cams)))
    }

    /// Relevance at the tower output's pooled rows from relevance at its projection: linear
    /// rule, the LayerNorm passes it on, index-select (gradient × input).
    fn pooled_relprop(
        &self,
        be: &B,
        r_proj: &B::Buf,
        pooled: &Pooled<B::Buf>,
        proj: &B::Buf,
        projection: &Linear<B>,
        width: usize,
    ) -> Result<B::Buf, ModelError> {
        let (raw, normed, _) = pooled;
        let (batch, p) = (be.len(raw) / width, self.config.projection_dim);
        let r_normed = projection.relprop(be, r_proj, normed, Some(proj), batch, width, p)?;
        let mut r_raw = be.uninit(be.len(raw))?;
        be.lrp_clone(&mut r_raw, raw, &[&r_normed])?;
        Ok(r_raw)
    }

    /// ∂(Σ_b seed[b]·score[b])/∂A of both towers, from the layers `from` names on.
    fn backward(
        &self,
        be: &B,
        f: &Forward<B::Buf>,
        inputs: &ClipInputs,
        seeds: Option<&[f32]>,
        from: FirstLayers,
    ) -> Result<PerTower<B::Buf>, ModelError> {
        let batch = inputs.batch();
        let seeds = match seeds {
            Some(s) if s.len() != batch => {
                return Err(ModelError::Input(format!(
                    "{} target seeds for a batch of {batch}",
                    s.len()
                )))
            }
            Some(s) => s.to_vec(),
            None => vec![1.0; batch],
        };
        let p = self.config.projection_dim;
        let (dv, dt) = (self.config.vision.hidden_size, self.config.text.hidden_size);

        let mut d_img = be.zeros(batch * p)?;
        let mut d_txt = be.zeros(batch * p)?;
        be.cosine_scores_backward(
            &mut d_img,
            &mut d_txt,
            &be.upload(&seeds)?,
            &f.image_proj,
            &f.text_proj,
            f.output.scale,
            p,
        )?;
        let d_vision = self.pooled_backward(
            be,
            &d_img,
            &f.vision_pooled,
            &self.visual_projection.0,
            &self.post_layernorm,
            dv,
        )?;
        let d_text = self.pooled_backward(
            be,
            &d_txt,
            &f.text_pooled,
            &self.text_projection.0,
            &self.final_layernorm,
            dt,
        )?;
        let vision_grads = self.vision.backward(
            be,
            &f.vision,
            d_vision,
            &f.vision_rows,
            &f.vision_shape,
            from.vision,
        )?;
        let text_grads =
            self.text
                .backward(be, &f.text, d_text, &f.text_rows, &f.text_shape, from.text)?;
        Ok((vision_grads, text_grads))
    }

    fn finish(
        &self,
        f: Forward<B::Buf>,
        inputs: &ClipInputs,
        grads: Option<PerTower<B::Buf>>,
        relevance: Option<PerTower<B::Buf>>,
    ) -> ClipTrace<B::Buf> {
        let (vision_grads, text_grads) = grads.unzip();
        let (vision_relevance, text_relevance) = relevance.unzip();
        let vision_tokens = f.vision_shape.queries;
        let grid = self.config.vision.grid_size();
        ClipTrace {
            vision: TowerTrace::from_activations(
                "vision",
                f.vision_shape.heads,
                self.config.vision.hidden_size,
                vec![vision_tokens; inputs.batch()],
                vision_tokens,
                f.vision,
                vision_grads,
                vision_relevance,
            ),
            text: TowerTrace::from_activations(
                "text",
                f.text_shape.heads,
                self.config.text.hidden_size,
                inputs.lengths.clone(),
                inputs.seq_len,
                f.text,
                text_grads,
                text_relevance,
            ),
            output: f.output,
            image_grid: (grid, grid),
        }
    }

    /// Gradient of the tower output at the pooled rows from the gradient of their
    /// projections.
    fn pooled_backward(
        &self,
        be: &B,
        d_proj: &B::Buf,
        pooled: &(B::Buf, B::Buf, B::Buf),
        projection: &B::Buf,
        norm: &(B::Buf, B::Buf),
        width: usize,
    ) -> Result<B::Buf, ModelError> {
        let (raw, normed, stats) = pooled;
        let batch = be.len(raw) / width;
        let p = self.config.projection_dim;
        let mut d_normed = be.uninit(be.len(normed))?;
        be.linear_backward(&mut d_normed, d_proj, projection, batch, width, p, false)?;
        let mut d_raw = be.uninit(be.len(raw))?;
        be.layernorm_backward(&mut d_raw, &d_normed, raw, stats, &norm.0, width, false)?;
        Ok(d_raw)
    }

    /// That `inputs` holds `images` images (one per text, or one for all) and well-formed
    /// texts.
    fn check(&self, inputs: &ClipInputs, images: usize) -> Result<(), ModelError> {
        let v = &self.config.vision;
        let batch = inputs.batch();
        let image_len = v.num_channels * v.image_size * v.image_size;
        let bad = |m: String| Err(ModelError::Input(m));
        if batch == 0 {
            return bad("empty batch".into());
        }
        if inputs.pixels.len() != images * image_len {
            let expected = match images {
                1 => "one image".to_owned(),
                n => format!("{n} images"),
            };
            return bad(format!(
                "pixel buffer has {} values, expected {expected} of {}×{}×{}",
                inputs.pixels.len(),
                v.num_channels,
                v.image_size,
                v.image_size
            ));
        }
        if inputs.ids.len() != batch * inputs.seq_len {
            return bad(format!(
                "{} token ids for {batch} texts of {} positions",
                inputs.ids.len(),
                inputs.seq_len
            ));
        }
        let max = self.config.text.max_position_embeddings;
        if inputs.seq_len > max {
            return bad(format!(
                "texts of {} tokens exceed the model's {max} positions",
                inputs.seq_len
            ));
        }
        if let Some(l) = inputs
            .lengths
            .iter()
            .find(|&&l| l == 0 || l > inputs.seq_len)
        {
            return bad(format!("text length {l} outside 1..={}", inputs.seq_len));
        }
        if let Some(p) = inputs.pixels.iter().position(|x| !x.is_finite()) {
            return bad(format!(
                "pixel value {} at index {p} is not finite",
                inputs.pixels[p]
            ));
        }
        Ok(())
    }

    /// Where each text is pooled: the first end-of-text token, or — for checkpoints whose
    /// config still says eos_token_id 2 — the largest id, as transformers does.
    fn eos_positions(&self, inputs: &ClipInputs) -> Result<Vec<usize>, ModelError> {
        let eos = self.config.text.eos_token_id;
        inputs
            .ids
            .chunks_exact(inputs.seq_len)
            .zip(&inputs.lengths)
            .enumerate()
            .map(|(b, (ids, &len))| {
                let ids = &ids[..len];
                let found = if eos == 2 {
                    ids.iter()
                        .enumerate()
                        .max_by_key(|&(i, &id)| (id, std::cmp::Reverse(i)))
                        .map(|(i, _)| i)
                } else {
                    ids.iter().position(|&id| id == eos)
                };
                found.ok_or_else(|| {
                    ModelError::Input(format!("text {b} has no end-of-text token (id {eos})"))
                })
            })
            .collect()
    }

    /// The forward, keeping in each tower what a backward to the layers `gradients` names
    /// and an LRP pass to those `relevance` names read.
    fn forward(
        &self,
        be: &B,
        inputs: &ClipInputs,
        gradients: Option<FirstLayers>,
        relevance: Option<FirstLayers>,
    ) -> Result<Forward<B::Buf>, ModelError> {
        self.check(inputs, inputs.batch())?;
        let TowerInput {
            x,
            shape: vision_shape,
            rows: vision_rows,
        } = self.embed_vision(be, &inputs.pixels, inputs.batch())?;
        let (
            TowerInput {
                x: y,
                shape: text_shape,
                rows: text_rows,
            },
            eos_positions,
        ) = self.embed_text(be, inputs)?;
        let (dv, dt) = (self.config.vision.hidden_size, self.config.text.hidden_size);
        let keeps = |tower: fn(FirstLayers) -> usize| Keeps {
            gradients: gradients.map(tower),
            relevance: relevance.map(tower),
        };
        let vision = self
            .vision
            .forward(be, x, &vision_shape, keeps(|f| f.vision))?;
        let text = self.text.forward(be, y, &text_shape, keeps(|f| f.text))?;
        let vision_raw = gather(be, vision.output(), &vision_rows, dv)?;
        let text_raw = gather(be, text.output(), &text_rows, dt)?;
        let Head {
            vision_pooled,
            text_pooled,
            image_proj,
            text_proj,
            output,
        } = self.head(be, vision_raw, text_raw, eos_positions)?;
        Ok(Forward {
            vision,
            vision_shape,
            text,
            text_shape,
            vision_rows,
            text_rows,
            vision_pooled,
            text_pooled,
            image_proj,
            text_proj,
            output,
        })
    }

    /// Scores a batch, keeping nothing for a backward: each tower's last layer runs at its
    /// pooled row alone.
    pub fn scores(&self, be: &B, inputs: &ClipInputs) -> Result<ClipOutput, ModelError> {
        self.check(inputs, inputs.batch())?;
        self.scores_of(be, inputs, inputs.batch())
    }

    /// Scores one image (`inputs.pixels` holds one) with each text of `inputs`, as `scores`
    /// does with the image given once per text, but running the vision tower once.
    pub fn scores_of_one_image(
        &self,
        be: &B,
        inputs: &ClipInputs,
    ) -> Result<ClipOutput, ModelError> {
        self.check(inputs, 1)?;
        self.scores_of(be, inputs, 1)
    }

    /// The scores of `inputs`, whose `images` are one per text or one for all of them.
    fn scores_of(
        &self,
        be: &B,
        inputs: &ClipInputs,
        images: usize,
    ) -> Result<ClipOutput, ModelError> {
        let vision = self.embed_vision(be, &inputs.pixels, images)?;
        let (text, eos_positions) = self.embed_text(be, inputs)?;
        let mut vision_raw =
            self.vision
                .pooled_output(be, vision.x, &vision.shape, &vision.rows)?;
        let batch = inputs.batch();
        if images != batch {
            // One image for every text: its pooled row, once per text.
            let dv = self.config.vision.hidden_size;
            let mut each = be.uninit(batch * dv)?;
            be.gather_rows(&mut each, &vision_raw, &vec![0; batch], dv)?;
            vision_raw = each;
        }
        let text_raw = self
            .text
            .pooled_output(be, text.x, &text.shape, &text.rows)?;
        Ok(self.head(be, vision_raw, text_raw, eos_positions)?.output)
    }

    /// The vision tower's input for `batch` images, its attention shape and the rows it
    /// pools (the class tokens).
    fn embed_vision(
        &self,
        be: &B,
        pixels: &[f32],
        batch: usize,
    ) -> Result<TowerInput<B::Buf>, ModelError> {
        let v = &self.config.vision;
        let dv = v.hidden_size;

        // Patches → class token + positions → pre-LN.
        let geo = PatchGeometry {
            batch,
            channels: v.num_channels,
            height: v.image_size,
            width: v.image_size,
            patch: v.patch_size,
        };
        let vision_tokens = 1 + geo.patches();
        let mut patches = be.uninit(batch * geo.patches() * geo.patch_len())?;
        be.patchify(&mut patches, &be.upload(pixels)?, geo)?;
        let mut patch_emb = be.uninit(batch * geo.patches() * dv)?;
        be.linear(
            &mut patch_emb,
            &patches,
            &self.patch_embedding,
            None,
            batch * geo.patches(),
            geo.patch_len(),
            dv,
        )?;
        let mut tokens = be.uninit(batch * vision_tokens * dv)?;
        be.prepend_class_add_positions(
            &mut tokens,
            &patch_emb,
            &self.class_embedding,
            &self.vision_positions,
            batch,
            vision_tokens,
            dv,
        )?;
        let mut x = be.uninit(batch * vision_tokens * dv)?;
        let mut stats = be.uninit(2 * batch * vision_tokens)?;
        be.layernorm(
            &mut x,
            &mut stats,
            &tokens,
            &self.pre_layernorm.0,
            &self.pre_layernorm.1,
            dv,
            v.layer_norm_eps,
        )?;
        let shape = AttentionShape::self_attention(
            batch,
            v.num_attention_heads,
            vision_tokens,
            dv / v.num_attention_heads,
        );
        let rows = (0..batch).map(|b| b * vision_tokens).collect();
        Ok(TowerInput { x, shape, rows })
    }

    /// The text tower's input (token + position embeddings, for a causal encoder over the
    /// padded batch), its attention shape and the rows it pools, and each text's end-of-text
    /// position.
    fn embed_text(
        &self,
        be: &B,
        inputs: &ClipInputs,
    ) -> Result<(TowerInput<B::Buf>, Vec<usize>), ModelError> {
        let t = &self.config.text;
        let (batch, dt) = (inputs.batch(), t.hidden_size);
        let mut y = be.uninit(batch * inputs.seq_len * dt)?;
        be.embed_tokens(
            &mut y,
            &inputs.ids,
            &self.token_embedding,
            &self.text_positions,
            inputs.seq_len,
            dt,
        )?;
        let text_shape = AttentionShape {
            causal: true,
            key_mask: Some(AttentionShape::prefix_mask(&inputs.lengths, inputs.seq_len)),
            ..AttentionShape::self_attention(
                batch,
                t.num_attention_heads,
                inputs.seq_len,
                dt / t.num_attention_heads,
            )
        };

        // Pooled at the end-of-text token.
        let eos_positions = self.eos_positions(inputs)?;
        let rows = eos_positions
            .iter()
            .enumerate()
            .map(|(b, &e)| b * inputs.seq_len + e)
            .collect();
        let input = TowerInput {
            x: y,
            shape: text_shape,
            rows,
        };
        Ok((input, eos_positions))
    }

    /// From the towers' pooled rows: their layer norms (post-LN for the class token, the
    /// final LN for the end-of-text token), the projections and the scores.
    fn head(
        &self,
        be: &B,
        vision_raw: B::Buf,
        text_raw: B::Buf,
        eos_positions: Vec<usize>,
    ) -> Result<Head<B::Buf>, ModelError> {
        let (v, t) = (&self.config.vision, &self.config.text);
        let p = self.config.projection_dim;
        let batch = eos_positions.len();
        let vision_pooled = self.pool(
            be,
            vision_raw,
            &self.post_layernorm,
            v.hidden_size,
            v.layer_norm_eps,
        )?;
        let text_pooled = self.pool(
            be,
            text_raw,
            &self.final_layernorm,
            t.hidden_size,
            t.layer_norm_eps,
        )?;
        let mut image_proj = be.uninit(batch * p)?;
        be.linear(
            &mut image_proj,
            &vision_pooled.1,
            &self.visual_projection.0,
            None,
            batch,
            v.hidden_size,
            p,
        )?;
        let mut text_proj = be.uninit(batch * p)?;
        be.linear(
            &mut text_proj,
            &text_pooled.1,
            &self.text_projection.0,
            None,
            batch,
            t.hidden_size,
            p,
        )?;

        let scale = self.logit_scale.exp();
        let mut scores = be.uninit(batch)?;
        be.cosine_scores(&mut scores, &image_proj, &text_proj, scale, p)?;
        let output = ClipOutput {
            pair_scores: be.download(&scores)?,
            image_embeds: normalize_rows(be.download(&image_proj)?, p),
            text_embeds: normalize_rows(be.download(&text_proj)?, p),
            scale,
            projection_dim: p,
            eos_positions,
        };
        if let Some(i) = output.pair_scores.iter().position(|s| !s.is_finite()) {
            return Err(ModelError::Input(format!(
                "pair {i} scored {}: the weights or inputs overflow",
                output.pair_scores[i]
            )));
        }
        Ok(Head {
            vision_pooled,
            text_pooled,
            image_proj,
            text_proj,
            output,
        })
    }

    /// Layer-normalises the pooled rows: (raw rows, normalised, stats).
    fn pool(
        &self,
        be: &B,
        raw: B::Buf,
        norm: &(B::Buf, B::Buf),
        width: usize,
        eps: f32,
    ) -> Result<Pooled<B::Buf>, ModelError> {
        let rows = be.len(&raw) / width;
        let mut normed = be.uninit(rows * width)?;
        let mut stats = be.uninit(2 * rows)?;
        be.layernorm(&mut normed, &mut stats, &raw, &norm.0, &norm.1, width, eps)?;
        Ok((raw, normed, stats))
    }
}

fn normalize_rows(mut v: Vec<f32>, dim: usize) -> Vec<f32> {
    for row in v.chunks_exact_mut(dim) {
        let n = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        row.iter_mut().for_each(|x| *x /= n);
    }
    v
}

impl ClipConfig {
    /// OpenAI's ViT-B/32 CLIP (`openai/clip-vit-base-patch32`): the size benchmarks build.
    pub fn vit_base_patch32() -> Self {
        Self::vit_base(32)
    }

    /// OpenAI's ViT-B/16 CLIP (`openai/clip-vit-base-patch16`), as the seed notebooks use.
    pub fn vit_base_patch16() -> Self {
        Self::vit_base(16)
    }

    fn vit_base(patch_size: usize) -> Self {
        use crate::backend::Activation::QuickGelu;
        use crate::model::config::{ClipTextConfig, ClipVisionConfig};
        Self {
            text: ClipTextConfig {
                vocab_size: 49408,
                hidden_size: 512,
                intermediate_size: 2048,
                num_hidden_layers: 12,
                num_attention_heads: 8,
                max_position_embeddings: 77,
                hidden_act: QuickGelu,
                layer_norm_eps: 1e-5,
                bos_token_id: 49406,
                eos_token_id: 49407,
                pad_token_id: 1,
            },
            vision: ClipVisionConfig {
                hidden_size: 768,
                intermediate_size: 3072,
                num_hidden_layers: 12,
                num_attention_heads: 12,
                image_size: 224,
                patch_size,
                num_channels: 3,
                hidden_act: QuickGelu,
                layer_norm_eps: 1e-5,
            },
            projection_dim: 512,
            logit_scale_init_value: 2.6592,
            dtype: None,
        }
    }
}
