//! ViLT (Kim et al. 2021) as Hugging Face's `ViltForQuestionAnswering` computes it
//! (transformers/models/vilt/modeling_vilt.py): one pre-layernorm encoder over
//! [text tokens ; image class token ; image patches], a final layer norm, a tanh pooler on
//! token 0 and the VQA head Linear → LayerNorm → GELU → Linear. Spec: methods.md §A.3, §H.
//!
//! Token layout of a padded batch: text (padded to the longest text) at 0..T, the image class
//! token at T, then each sample's real patches in raster order of its own patch grid, then
//! image padding. Two departures from transformers, both exact in what they compute:
//! transformers permutes patches with `torch.multinomial` even when it keeps all of them
//! (fiedler keeps raster order, §H — attention is permutation-equivariant), and it fills image
//! padding with randomly chosen padding patches (all identical: zero pixels); fiedler takes
//! them in raster order. Token types are all 0, as the VQA task feeds them. A positive
//! `max_image_length` below a sample's patch count: transformers draws that many patches at
//! random on every call; fiedler keeps an evenly spaced subset (`ViltLayout::patch_index`).

use std::path::Path;

use crate::backend::{Activation, AttentionShape, Backend, BackendError, PatchGeometry};
use crate::model::answer_head::{argmax_rows, AnswerHead, HeadActivations, HeadNames, NormOrder};
use crate::model::block::{
    gather, load_norm, Encoder, EncoderActivations, EncoderDims, Keeps, LayerNames,
};
use crate::model::config::{AnswerProbability, ViltConfig};
use crate::model::source::WeightSource;
use crate::model::weights::{AnswerCount, LayerStack, Weights};
use crate::model::{ModelError, Pooled, VqaTarget};
use crate::trace::{Reads, TowerTrace};

const VILT_HEAD: HeadNames = HeadNames {
    pooler: "vilt.pooler.dense",
    hidden: "classifier.0",
    norm: "classifier.1",
    out: "classifier.3",
};

const VILT_LAYER: LayerNames = LayerNames {
    ln1: "layernorm_before",
    query: "attention.attention.query",
    key: "attention.attention.key",
    value: "attention.attention.value",
    attn_out: "attention.output.dense",
    ln2: "layernorm_after",
    fc1: "intermediate.dense",
    fc2: "output.dense",
};

/// The classifier's LayerNorm is torch's default (eps 1e-5), not the config's.
const CLASSIFIER_NORM_EPS: f32 = 1e-5;

/// A batch of (image, question) pairs.
#[derive(Debug, Clone)]
pub struct ViltInputs {
    /// Preprocessed images zero-padded to a common size: [batch, channels, height, width].
    pub pixels: Vec<f32>,
    /// [batch, height, width]: true where the pixel is part of the image.
    pub pixel_mask: Vec<bool>,
    pub height: usize,
    pub width: usize,
    /// Token ids [batch, seq_len], padded after each question's `lengths[b]` tokens.
    pub ids: Vec<u32>,
    pub lengths: Vec<usize>,
    pub seq_len: usize,
    /// Per sample, the patches that enter the sequence (indices into its real patches in
    /// raster order of its own grid), in that order; `None` keeps every patch. Deleting
    /// patches this way is the perturbation benchmark's image test (spec §E): each kept patch
    /// keeps its own position embedding, the image class token stays.
    pub kept_patches: Option<Vec<Vec<usize>>>,
}

impl ViltInputs {
    pub fn batch(&self) -> usize {
        self.lengths.len()
    }
}

/// Where each kind of token of one sample sits in the joint sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViltLayout {
    /// Real text tokens ([CLS] … [SEP]) at 0..text_len.
    pub text_len: usize,
    /// The image class token (= the padded text length T).
    pub image_class: usize,
    /// The sample's patch grid.
    pub grid: (usize, usize),
    /// The patch tokens in the sequence, at image_class+1 ..: each one's index in the grid
    /// (raster order). All rows·cols of them, unless `ViltInputs::kept_patches` or the
    /// config's `max_image_length` kept fewer.
    pub patch_index: Vec<usize>,
}

impl ViltLayout {
    pub fn patch_tokens(&self) -> std::ops::Range<usize> {
        let first = self.image_class + 1;
        first..first + self.patch_index.len()
    }

    /// How many of the grid's patches the sequence left out.
    pub fn dropped_patches(&self) -> usize {
        self.grid.0 * self.grid.1 - self.patch_index.len()
    }

    /// The sample's real tokens in sequence order (a view's positions, see
    /// `explain::view`): the text at 0..text_len, the image class, then the kept patches.
    pub fn real_tokens(&self) -> Vec<usize> {
        (0..self.text_len)
            .chain(std::iter::once(self.image_class))
            .chain(self.patch_tokens())
            .collect()
    }

    /// Word tokens: the text without [CLS] and [SEP].
    pub fn word_tokens(&self) -> std::ops::Range<usize> {
        1..self.text_len.saturating_sub(1).max(1)
    }
}

/// Answer logits of a batch.
#[derive(Debug, Clone)]
pub struct ViltOutput {
    /// [batch, labels].
    pub logits: Vec<f32>,
    pub labels: usize,
    pub layouts: Vec<ViltLayout>,
}

impl ViltOutput {
    /// The highest-scoring answer index of each sample.
    pub fn predicted(&self) -> Vec<usize> {
        argmax_rows(&self.logits, self.labels)
    }
}

pub struct ViltTrace<Buf> {
    pub output: ViltOutput,
    /// The joint encoder; `lengths` is the padded length of every sample (real tokens are
    /// given by the layouts, not a prefix).
    pub joint: TowerTrace<Buf>,
    /// Which answer each sample's gradients explain (`None` for the Σ-logits target).
    pub targets: Option<Vec<usize>>,
}

impl<Buf> ViltTrace<Buf> {
    /// Moves the encoder's records into host memory (no copy on the CPU backend).
    pub fn into_host<B: Backend<Buf = Buf>>(
        self,
        be: &B,
    ) -> Result<ViltTrace<Vec<f32>>, BackendError> {
        Ok(ViltTrace {
            output: self.output,
            joint: self.joint.into_host(be)?,
            targets: self.targets,
        })
    }

    /// Brings to the host only what `reads` names (`TowerTrace::into_host_for`).
    pub fn into_host_for<B: Backend<Buf = Buf>>(
        self,
        be: &B,
        reads: &Reads,
    ) -> Result<ViltTrace<Vec<f32>>, BackendError> {
        Ok(ViltTrace {
            output: self.output,
            joint: self.joint.into_host_for(be, reads)?,
            targets: self.targets,
        })
    }
}

struct Forward<Buf> {
    encoder: EncoderActivations<Buf>,
    shape: AttentionShape,
    /// Pooled token rows before and after the final layer norm, with its statistics.
    pooled: Pooled<Buf>,
    head: HeadActivations<Buf>,
    output: ViltOutput,
}

/// The head's pass over the pooled rows: the rows before and after the final layer norm with
/// its statistics, the head's activations and the output.
type HeadPass<Buf> = (Pooled<Buf>, HeadActivations<Buf>, ViltOutput);

/// The joint encoder's input, with its attention shape and each sample's layout.
struct Embedded<Buf> {
    joint: Buf,
    shape: AttentionShape,
    layouts: Vec<ViltLayout>,
}

pub struct Vilt<B: Backend> {
    pub config: ViltConfig,
    word_embeddings: B::Buf,
    text_positions: B::Buf,
    text_type0: B::Buf,
    text_norm: (B::Buf, B::Buf),
    /// Modality-type rows: 0 = text, 1 = image.
    modality: [B::Buf; 2],
    modality_host: Vec<f32>,
    patch_projection: (B::Buf, B::Buf),
    class_token: B::Buf,
    /// The stored position grid [grid, grid, dim] and the class position, on the host:
    /// each batch interpolates it to its own patch grids.
    position_grid: Vec<f32>,
    class_position: Vec<f32>,
    encoder: Encoder<B>,
    final_norm: (B::Buf, B::Buf),
    head: AnswerHead<B>,
}

/// Where ViLT's layers are stored.
const LAYERS: &str = "vilt.encoder.layer";

/// ViLT's layer stack and how deep its config says it is.
pub fn layer_stacks(config: &ViltConfig) -> [LayerStack; 1] {
    [LayerStack {
        prefix: LAYERS,
        field: "num_hidden_layers",
        layers: config.num_hidden_layers,
    }]
}

impl<B: Backend> Vilt<B> {
    pub fn load(be: &B, dir: &Path) -> Result<Self, ModelError> {
        let config = ViltConfig::from_dir(dir)?;
        let weights = Weights::open(dir)?;
        weights.check_depth(&layer_stacks(&config))?;
        weights.check_answers(AnswerCount {
            projection: VILT_HEAD.out,
            answers: config.id2label.len(),
        })?;
        Self::from_source(be, config, &weights)
    }

    pub fn from_source(
        be: &B,
        config: ViltConfig,
        w: &dyn WeightSource,
    ) -> Result<Self, ModelError> {
        let c = &config;
        let d = c.hidden_size;
        let g = c.grid_size();
        let patch_len = c.num_channels * c.patch_size * c.patch_size;
        let labels = c.num_labels;
        let upload = |name: &str, shape: &[usize]| -> Result<B::Buf, ModelError> {
            Ok(be.upload(&w.tensor(name, shape)?)?)
        };
        let types = w.tensor(
            "vilt.embeddings.text_embeddings.token_type_embeddings.weight",
            &[c.type_vocab_size, d],
        )?;
        let modality_host = w.tensor(
            "vilt.embeddings.token_type_embeddings.weight",
            &[c.modality_type_vocab_size, d],
        )?;
        if c.modality_type_vocab_size < 2 {
            return Err(ModelError::Input(
                "ViLT needs two modality types (text, image)".into(),
            ));
        }
        let positions = w.tensor("vilt.embeddings.position_embeddings", &[1, 1 + g * g, d])?;
        let patch_weight = w.tensor(
            "vilt.embeddings.patch_embeddings.projection.weight",
            &[d, c.num_channels, c.patch_size, c.patch_size],
        )?;
        let dims = EncoderDims {
            width: d,
            heads: c.num_attention_heads,
            intermediate: c.intermediate_size,
            activation: c.hidden_act,
            eps: c.layer_norm_eps,
        };
        Ok(Self {
            word_embeddings: upload(
                "vilt.embeddings.text_embeddings.word_embeddings.weight",
                &[c.vocab_size, d],
            )?,
            text_positions: upload(
                "vilt.embeddings.text_embeddings.position_embeddings.weight",
                &[c.max_position_embeddings, d],
            )?,
            text_type0: be.upload(&types[..d])?,
            text_norm: load_norm(be, w, "vilt.embeddings.text_embeddings.LayerNorm", d)?,
            modality: [
                be.upload(&modality_host[..d])?,
                be.upload(&modality_host[d..2 * d])?,
            ],
            modality_host,
            patch_projection: (
                be.upload_weight(&patch_weight, d, patch_len)?,
                upload("vilt.embeddings.patch_embeddings.projection.bias", &[d])?,
            ),
            class_token: upload("vilt.embeddings.cls_token", &[1, 1, d])?,
            class_position: positions[..d].to_vec(),
            position_grid: positions[d..].to_vec(),
            encoder: Encoder::load(be, w, LAYERS, c.num_hidden_layers, &VILT_LAYER, dims)?,
            final_norm: load_norm(be, w, "vilt.layernorm", d)?,
            head: AnswerHead::load(
                be,
                w,
                &VILT_HEAD,
                d,
                labels,
                NormOrder::NormThenGelu,
                CLASSIFIER_NORM_EPS,
            )?,
            config,
        })
    }

    /// Forward only, recording the joint encoder without gradients (for the methods that
    /// read no ∂y/∂A); the explanations score the predicted answers.
    pub fn record(&self, be: &B, inputs: &ViltInputs) -> Result<ViltTrace<B::Buf>, ModelError> {
        self.run(be, inputs, &VqaTarget::Predicted, None, None)
    }

    /// Forward, then the backward of each sample's target, recording the joint encoder.
    pub fn trace(
        &self,
        be: &B,
        inputs: &ViltInputs,
        target: &VqaTarget,
    ) -> Result<ViltTrace<B::Buf>, ModelError> {
        self.trace_from(be, inputs, target, 0)
    }

    /// `trace` with the backward run down to layer `from` only: the first layer whose
    /// ∂y/∂A it records (the layers below get none).
    pub fn trace_from(
        &self,
        be: &B,
        inputs: &ViltInputs,
        target: &VqaTarget,
        from: usize,
    ) -> Result<ViltTrace<B::Buf>, ModelError> {
        self.run(be, inputs, target, Some(from), None)
    }

    /// Forward, the backward when `gradients`, and the LRP pass (§D) from a one-hot at each
    /// sample's target (all ones for the Σ-logits target); the trace also records the
    /// relevance at every layer's probabilities.
    pub fn lrp(
        &self,
        be: &B,
        inputs: &ViltInputs,
        target: &VqaTarget,
        gradients: bool,
    ) -> Result<ViltTrace<B::Buf>, ModelError> {
        self.lrp_from(be, inputs, target, gradients.then_some(0), 0)
    }

    /// `lrp` with the backward, if any, run down to layer `gradients` and the LRP pass down
    /// to layer `relevance` only.
    pub fn lrp_from(
        &self,
        be: &B,
        inputs: &ViltInputs,
        target: &VqaTarget,
        gradients: Option<usize>,
        relevance: usize,
    ) -> Result<ViltTrace<B::Buf>, ModelError> {
        self.run(be, inputs, target, gradients, Some(relevance))
    }

    /// The forward, then the backward and the LRP pass down to the layers given, if any.
    fn run(
        &self,
        be: &B,
        inputs: &ViltInputs,
        target: &VqaTarget,
        gradients: Option<usize>,
        relevance: Option<usize>,
    ) -> Result<ViltTrace<B::Buf>, ModelError> {
        let keeps = Keeps {
            gradients,
            relevance,
        };
        let f = self.forward(be, inputs, keeps)?;
        let (targets, seed) = target.resolve(&f.output.predicted(), self.config.num_labels)?;
        let grads = gradients
            .map(|from| self.backward(be, &f, &seed, from))
            .transpose()?;
        let cams = relevance
            .map(|from| self.relprop(be, &f, &seed, from))
            .transpose()?;
        Ok(self.assemble(f, inputs, targets, grads, cams))
    }

    /// ∂y/∂A of the layers from `from` on for the seed ∂y/∂logits.
    fn backward(
        &self,
        be: &B,
        f: &Forward<B::Buf>,
        seed: &[f32],
        from: usize,
    ) -> Result<Vec<B::Buf>, ModelError> {
        let d = self.config.hidden_size;
        let batch = f.shape.batch;
        let d_normed = self.head.backward(be, &f.head, seed)?;
        let (raw, _, stats) = &f.pooled;
        let mut d_raw = be.uninit(batch * d)?;
        be.layernorm_backward(
            &mut d_raw,
            &d_normed,
            raw,
            stats,
            &self.final_norm.0,
            d,
            false,
        )?;
        self.encoder.backward(
            be,
            &f.encoder,
            d_raw,
            &Self::pooled_rows(&f.shape),
            &f.shape,
            from,
        )
    }

    /// LRP (§D) from the seed relevance at the logits: the head (linear rules; LayerNorm,
    /// GELU, tanh and the final LayerNorm pass relevance on), the [CLS] index-select
    /// (gradient × input), then every layer. Relevance at every layer's probabilities.
    fn relprop(
        &self,
        be: &B,
        f: &Forward<B::Buf>,
        seed: &[f32],
        from: usize,
    ) -> Result<Vec<B::Buf>, ModelError> {
        let d = self.config.hidden_size;
        let batch = f.shape.batch;
        let (raw, normed, _) = &f.pooled;
        let r_normed = self.head.relprop(be, &f.head, normed, seed)?;
        let mut r_sel = be.uninit(batch * d)?;
        be.lrp_clone(&mut r_sel, raw, &[&r_normed])?;
        self.encoder.relprop(
            be,
            &f.encoder,
            r_sel,
            &Self::pooled_rows(&f.shape),
            &f.shape,
            from,
        )
    }

    fn assemble(
        &self,
        f: Forward<B::Buf>,
        inputs: &ViltInputs,
        targets: Option<Vec<usize>>,
        grads: Option<Vec<B::Buf>>,
        relevance: Option<Vec<B::Buf>>,
    ) -> ViltTrace<B::Buf> {
        let tokens = f.shape.queries;
        ViltTrace {
            joint: TowerTrace::from_activations(
                "joint",
                f.shape.heads,
                self.config.hidden_size,
                vec![tokens; inputs.batch()],
                tokens,
                f.encoder,
                grads,
                relevance,
            ),
            output: f.output,
            targets,
        }
    }

    fn check(&self, x: &ViltInputs) -> Result<(), ModelError> {
        let c = &self.config;
        let batch = x.batch();
        let bad = |m: String| Err(ModelError::Input(m));
        if batch == 0 {
            return bad("empty batch".into());
        }
        if x.pixels.len() != batch * c.num_channels * x.height * x.width
            || x.pixel_mask.len() != batch * x.height * x.width
        {
            return bad(format!(
                "pixels ({}) and pixel mask ({}) do not hold {batch} images of {}×{}",
                x.pixels.len(),
                x.pixel_mask.len(),
                x.height,
                x.width
            ));
        }
        if !x.height.is_multiple_of(c.patch_size) || !x.width.is_multiple_of(c.patch_size) {
            return bad(format!(
                "{}×{} images are not whole {} px patches",
                x.height, x.width, c.patch_size
            ));
        }
        if x.ids.len() != batch * x.seq_len || x.lengths.iter().any(|&l| l == 0 || l > x.seq_len) {
            return bad(format!(
                "{} token ids / lengths {:?} for {batch} texts of {}",
                x.ids.len(),
                x.lengths,
                x.seq_len
            ));
        }
        if x.seq_len > c.max_position_embeddings {
            return bad(format!(
                "questions of {} tokens exceed the model's {} positions",
                x.seq_len, c.max_position_embeddings
            ));
        }
        let grids = self.grids(x);
        if let Some(b) = grids.iter().position(|&(rows, cols)| rows * cols == 0) {
            return bad(format!(
                "the pixel mask of sample {b} marks no patch: an image has at least one"
            ));
        }
        if let Some(kept) = &x.kept_patches {
            if kept.len() != batch {
                return bad(format!(
                    "kept patches for {} of {batch} samples",
                    kept.len()
                ));
            }
            for (b, (kept, &(rows, cols))) in kept.iter().zip(&grids).enumerate() {
                if let Some(&i) = kept.iter().find(|&&i| i >= rows * cols) {
                    return bad(format!(
                        "sample {b} keeps patch {i} of a {rows}×{cols} patch grid"
                    ));
                }
                let mut seen = vec![false; rows * cols];
                if let Some(&i) = kept
                    .iter()
                    .find(|&&i| std::mem::replace(&mut seen[i], true))
                {
                    return bad(format!("sample {b} keeps patch {i} twice"));
                }
            }
        }
        if let Some(p) = x.pixels.iter().position(|v| !v.is_finite()) {
            return bad(format!(
                "pixel value {} at index {p} is not finite",
                x.pixels[p]
            ));
        }
        Ok(())
    }

    /// The real patch grid of each sample, read like transformers does: the pixel mask at
    /// the top-left pixel of each patch, counting rows down column 0 and columns along row 0.
    fn grids(&self, x: &ViltInputs) -> Vec<(usize, usize)> {
        let p = self.config.patch_size;
        let (ph, pw) = (x.height / p, x.width / p);
        (0..x.batch())
            .map(|b| {
                let mask = &x.pixel_mask[b * x.height * x.width..(b + 1) * x.height * x.width];
                let rows = (0..ph).filter(|&r| mask[r * p * x.width]).count();
                let cols = (0..pw).filter(|&c| mask[c * p]).count();
                (rows, cols)
            })
            .collect()
    }

    fn forward(&self, be: &B, x: &ViltInputs, keeps: Keeps) -> Result<Forward<B::Buf>, ModelError> {
        let Embedded {
            joint,
            shape,
            layouts,
        } = self.embed(be, x)?;
        let d = self.config.hidden_size;
        let encoder = self.encoder.forward(be, joint, &shape, keeps)?;
        let raw = gather(be, encoder.output(), &Self::pooled_rows(&shape), d)?;
        let (pooled, head, output) = self.head_forward(be, raw, layouts)?;
        Ok(Forward {
            encoder,
            shape,
            pooled,
            head,
            output,
        })
    }

    /// Answer logits, keeping nothing for a backward: the encoder's last layer runs at the
    /// pooled rows alone.
    pub fn logits(&self, be: &B, x: &ViltInputs) -> Result<ViltOutput, ModelError> {
        let Embedded {
            joint,
            shape,
            layouts,
        } = self.embed(be, x)?;
        let raw = self
            .encoder
            .pooled_output(be, joint, &shape, &Self::pooled_rows(&shape))?;
        Ok(self.head_forward(be, raw, layouts)?.2)
    }

    /// The rows the head reads: each sample's first (text [CLS]) token.
    fn pooled_rows(shape: &AttentionShape) -> Vec<usize> {
        (0..shape.batch).map(|b| b * shape.queries).collect()
    }

    /// The head on the pooled rows `raw`: final LN, tanh pooler, Linear → LN → GELU →
    /// Linear. Returns the pooled rows before and after the LN with its statistics, the
    /// head's activations and the output.
    fn head_forward(
        &self,
        be: &B,
        raw: B::Buf,
        layouts: Vec<ViltLayout>,
    ) -> Result<HeadPass<B::Buf>, ModelError> {
        let c = &self.config;
        let (batch, d) = (layouts.len(), c.hidden_size);
        let mut normed = be.uninit(batch * d)?;
        let mut pooled_stats = be.uninit(2 * batch)?;
        be.layernorm(
            &mut normed,
            &mut pooled_stats,
            &raw,
            &self.final_norm.0,
            &self.final_norm.1,
            d,
            c.layer_norm_eps,
        )?;
        let (head, logits) = self.head.forward(be, &normed)?;
        let output = ViltOutput {
            logits,
            labels: c.num_labels,
            layouts,
        };
        Ok(((raw, normed, pooled_stats), head, output))
    }

    /// The joint encoder's input (text tokens, then the image's class and patch tokens),
    /// its attention shape and each sample's layout.
    fn embed(&self, be: &B, x: &ViltInputs) -> Result<Embedded<B::Buf>, ModelError> {
        self.check(x)?;
        let c = &self.config;
        let (batch, d, t) = (x.batch(), c.hidden_size, x.seq_len);

        // Text: LN(word + position + type 0) + modality 0.
        let mut text = be.zeros(batch * t * d)?;
        be.embed_tokens(
            &mut text,
            &x.ids,
            &self.word_embeddings,
            &self.text_positions,
            t,
            d,
        )?;
        be.add_row_vector(&mut text, &self.text_type0)?;
        let mut text_normed = be.zeros(batch * t * d)?;
        let mut stats = be.zeros(2 * batch * t)?;
        be.layernorm(
            &mut text_normed,
            &mut stats,
            &text,
            &self.text_norm.0,
            &self.text_norm.1,
            d,
            c.layer_norm_eps,
        )?;
        be.add_row_vector(&mut text_normed, &self.modality[0])?;

        // Image: patches of the padded images, reordered per sample to [real patches in
        // raster order of its own grid ; padding patches], behind the class token.
        let geo = PatchGeometry {
            batch,
            channels: c.num_channels,
            height: x.height,
            width: x.width,
            patch: c.patch_size,
        };
        let (ph, pw) = geo.grid();
        let grids = self.grids(x);
        let kept = self.kept_patches(x, &grids);
        let max_len = kept.iter().map(Vec::len).max().unwrap_or(0);
        let mut patches = be.zeros(batch * geo.patches() * geo.patch_len())?;
        be.patchify(&mut patches, &be.upload(&x.pixels)?, geo)?;
        let mut patch_emb = be.zeros(batch * geo.patches() * d)?;
        be.linear(
            &mut patch_emb,
            &patches,
            &self.patch_projection.0,
            Some(&self.patch_projection.1),
            batch * geo.patches(),
            geo.patch_len(),
            d,
        )?;
        // Padding rows are masked keys: any patch will do, those outside the grid first.
        let mut order = Vec::with_capacity(batch * max_len);
        for (b, (kept, &(rows, cols))) in kept.iter().zip(&grids).enumerate() {
            let real = kept.iter().map(|&i| (i / cols) * pw + i % cols);
            let padding = (0..ph * pw)
                .filter(|&i| i / pw >= rows || i % pw >= cols)
                .chain(std::iter::repeat(0))
                .take(max_len - kept.len());
            order.extend(real.chain(padding).map(|i| b * ph * pw + i));
        }
        let mut ordered = be.zeros(batch * max_len * d)?;
        be.gather_rows(&mut ordered, &patch_emb, &order, d)?;
        let positions = self.image_positions(&grids, &kept, max_len);
        let mut image = be.zeros(batch * (1 + max_len) * d)?;
        be.prepend_class_add_positions(
            &mut image,
            &ordered,
            &self.class_token,
            &be.upload(&positions)?,
            batch,
            1 + max_len,
            d,
        )?;

        let tokens = t + 1 + max_len;
        let mut joint = be.zeros(batch * tokens * d)?;
        be.concat_sequences(&mut joint, &text_normed, &image, batch, t, 1 + max_len, d)?;
        let layouts: Vec<ViltLayout> = x
            .lengths
            .iter()
            .zip(grids.iter().zip(&kept))
            .map(|(&len, (&grid, kept))| ViltLayout {
                text_len: len,
                image_class: t,
                grid,
                patch_index: kept.clone(),
            })
            .collect();
        let mut key_mask = Vec::with_capacity(batch * tokens);
        for l in &layouts {
            key_mask.extend(
                (0..tokens).map(|j| j < l.text_len || j == t || l.patch_tokens().contains(&j)),
            );
        }
        let shape = AttentionShape {
            key_mask: Some(key_mask),
            ..AttentionShape::self_attention(
                batch,
                c.num_attention_heads,
                tokens,
                d / c.num_attention_heads,
            )
        };
        Ok(Embedded {
            joint,
            shape,
            layouts,
        })
    }

    /// Each sample's patches in sequence order: `kept_patches`, or its whole grid in raster
    /// order; then at most a positive `max_image_length` of them. Transformers draws that
    /// many at random on every call (`torch.multinomial`), so its logits change from call to
    /// call; fiedler keeps an evenly spaced subset instead — one draw of the same size,
    /// deterministic, covering the whole image.
    fn kept_patches(&self, x: &ViltInputs, grids: &[(usize, usize)]) -> Vec<Vec<usize>> {
        let kept: Vec<Vec<usize>> = match &x.kept_patches {
            Some(kept) => kept.clone(),
            None => grids.iter().map(|&(r, c)| (0..r * c).collect()).collect(),
        };
        let Ok(cap) = usize::try_from(self.config.max_image_length) else {
            return kept;
        };
        kept.into_iter()
            .map(|k| match k.len() {
                n if n > cap => (0..cap).map(|i| k[i * n / cap]).collect(),
                _ => k,
            })
            .collect()
    }

    /// Per-sample additive terms of the image tokens [batch, 1 + max_len, dim]: the class
    /// position, the stored grid interpolated to the sample's patch grid (bilinear,
    /// align_corners=True, as transformers) for the kept patches, nothing for padding; plus
    /// the image modality row everywhere.
    fn image_positions(
        &self,
        grids: &[(usize, usize)],
        kept: &[Vec<usize>],
        max_len: usize,
    ) -> Vec<f32> {
        let d = self.config.hidden_size;
        let g = self.config.grid_size();
        let modality = &self.modality_host[d..2 * d];
        let mut out = vec![0.0f32; grids.len() * (1 + max_len) * d];
        for ((sample, &(rows, cols)), kept) in
            out.chunks_exact_mut((1 + max_len) * d).zip(grids).zip(kept)
        {
            sample[..d].copy_from_slice(&self.class_position);
            let grid = interpolate_grid(&self.position_grid, g, d, rows, cols);
            for (row, &i) in sample[d..].chunks_exact_mut(d).zip(kept) {
                row.copy_from_slice(&grid[i * d..(i + 1) * d]);
            }
            for row in sample.chunks_exact_mut(d) {
                row.iter_mut().zip(modality).for_each(|(x, m)| *x += m);
            }
        }
        out
    }
}

/// Bilinear resize of a [g, g, dim] grid to [rows, cols, dim] with align_corners=True, in
/// f32 with the operation order of torch's CPU kernel (source = index·(in−1)/(out−1)).
fn interpolate_grid(grid: &[f32], g: usize, dim: usize, rows: usize, cols: usize) -> Vec<f32> {
    let taps = |out: usize| -> Vec<(usize, usize, f32)> {
        let scale = if out > 1 {
            (g - 1) as f32 / (out - 1) as f32
        } else {
            0.0
        };
        (0..out)
            .map(|i| {
                let src = scale * i as f32;
                let lo = src as usize;
                let hi = if lo < g - 1 { lo + 1 } else { lo };
                (lo, hi, src - lo as f32)
            })
            .collect()
    };
    let (ys, xs) = (taps(rows), taps(cols));
    let at = |y: usize, x: usize| &grid[(y * g + x) * dim..(y * g + x + 1) * dim];
    let mut out = Vec::with_capacity(rows * cols * dim);
    for &(y0, y1, ly) in &ys {
        for &(x0, x1, lx) in &xs {
            let (a, b, c, e) = (at(y0, x0), at(y0, x1), at(y1, x0), at(y1, x1));
            for k in 0..dim {
                let top = (1.0 - lx) * a[k] + lx * b[k];
                let bottom = (1.0 - lx) * c[k] + lx * e[k];
                out.push((1.0 - ly) * top + ly * bottom);
            }
        }
    }
    out
}

impl ViltConfig {
    /// `dandelin/vilt-b32-finetuned-vqa`: 12 layers, 768 wide, 32-pixel patches of images
    /// resized to 384 pixels on their shorter side, 40 text positions, 3129 answers.
    pub fn b32_vqa() -> Self {
        let answers = 3129;
        Self {
            vocab_size: 30522,
            hidden_size: 768,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            intermediate_size: 3072,
            hidden_act: Activation::Gelu,
            layer_norm_eps: 1e-12,
            image_size: 384,
            patch_size: 32,
            num_channels: 3,
            max_position_embeddings: 40,
            type_vocab_size: 2,
            modality_type_vocab_size: 2,
            qkv_bias: true,
            max_image_length: -1,
            num_labels: answers,
            id2label: (0..answers).map(|i| format!("LABEL_{i}")).collect(),
            pad_token_id: 0,
            dtype: None,
            answer_probability: AnswerProbability::Sigmoid,
        }
    }
}
