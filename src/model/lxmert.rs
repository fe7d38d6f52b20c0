//! LXMERT (Tan & Bansal 2019) as Hugging Face's `LxmertForQuestionAnswering` computes it
//! (transformers/models/lxmert/modeling_lxmert.py). Spec: methods.md §A.1.
//!
//! Text: LN(word + position + type 0); regions: (LN(W_f·feature) + LN(W_b·box)) / 2. Then
//! language layers on the text, object-relationship layers on the regions, and cross-modality
//! layers: both directions of one cross-attention from the same inputs, a self-attention per
//! stream, a feed-forward per stream. All sublayers are post-LN (`post_ln`), every LayerNorm
//! with eps 1e-12. Answer: tanh pooler on the text [CLS], then Linear → GELU → LN → Linear.
//!
//! Only the text [CLS] reaches the answer, so the last cross layer's image branch gets no
//! gradient: its recorded ∂y/∂A are exactly zero (§A.1, B8), never NaN.

use std::path::Path;

use crate::backend::{Activation, AttentionShape, Backend, BackendError, HeadMean};
use crate::linalg::{Fiedler, GraphOptions, SpectralError};
use crate::model::answer_head::{argmax_rows, AnswerHead, HeadActivations, HeadNames, NormOrder};
use crate::model::block::load_norm;
use crate::model::config::{AnswerProbability, LxmertConfig};
use crate::model::post_ln::{
    AttentionActivations, AttentionRelevance, AttentionSublayer, FeedForward,
    FeedForwardActivations,
};
use crate::model::source::WeightSource;
use crate::model::weights::{AnswerCount, LayerStack, Weights};
use crate::model::{ModelError, VqaTarget};
use crate::trace::LayerTrace;

/// Every LayerNorm of LXMERT (hard-coded in transformers, whatever the config says).
const EPS: f32 = 1e-12;

const LXMERT_HEAD: HeadNames = HeadNames {
    pooler: "lxmert.pooler.dense",
    hidden: "answer_head.logit_fc.0",
    norm: "answer_head.logit_fc.2",
    out: "answer_head.logit_fc.3",
};

/// A batch of (regions, question) pairs.
#[derive(Debug, Clone)]
pub struct LxmertInputs {
    /// Region features [batch, regions, visual_feat_dim].
    pub features: Vec<f32>,
    /// Normalised boxes [batch, regions, 4]: (x1/W, y1/H, x2/W, y2/H).
    pub boxes: Vec<f32>,
    pub regions: usize,
    /// Per sample, how many of its `regions` rows are real (a prefix; the rest is padding
    /// that no attention reads); `None`: all. Lets one batch mix region counts, down to 0 —
    /// the perturbation benchmark's last image step, where the text attends to no region
    /// and its cross-attention context is 0, as in transformers with an empty visual stream.
    pub region_counts: Option<Vec<usize>>,
    /// Token ids [batch, seq_len], padded after each question's `lengths[b]` tokens.
    pub ids: Vec<u32>,
    pub lengths: Vec<usize>,
    pub seq_len: usize,
}

impl LxmertInputs {
    pub fn batch(&self) -> usize {
        self.lengths.len()
    }
}

/// The outputs of LXMERT's two single-modality stacks for a batch, on the backend: the
/// language layers' [batch, seq_len, hidden] and the object-relationship layers' [batch,
/// regions, hidden] (padding rows included, as the batch lays them out).
pub struct StackOutputs<Buf> {
    pub text: Buf,
    pub image: Buf,
}

/// Stack outputs a scoring forward takes as given instead of computing them
/// ([`Lxmert::logits_given`]). The perturbation benchmark perturbs one modality at a time,
/// and the other one's stack sees no input of the other modality, so its output is that of
/// the unperturbed sample.
pub struct GivenStacks<Buf> {
    /// [batch, seq_len, hidden], in place of the text embedding and language layers.
    pub text: Option<Buf>,
    /// [batch, regions, hidden], in place of the region embedding and object-relationship
    /// layers.
    pub image: Option<Buf>,
}

impl<Buf> GivenStacks<Buf> {
    /// Nothing given: the whole forward.
    pub fn none() -> Self {
        Self {
            text: None,
            image: None,
        }
    }
}

/// A forward's attention probabilities, the backward's ∂y/∂A and the LRP relevance at the
/// probabilities for one module (`None` when that pass did not run).
pub struct AttentionRecord<Buf> {
    pub attention: Buf,
    pub attention_grad: Option<Buf>,
    pub relevance: Option<Buf>,
    /// Head means formed where the trace was recorded, [batch, queries, keys] each
    /// (`LxmertTrace::into_host_for`); none in a trace as the model recorded it.
    pub means: Vec<(HeadMean, Buf)>,
}

impl<Buf> AttentionRecord<Buf> {
    fn try_map<T, E>(
        self,
        mut f: impl FnMut(Buf) -> Result<T, E>,
    ) -> Result<AttentionRecord<T>, E> {
        Ok(AttentionRecord {
            attention: f(self.attention)?,
            attention_grad: self.attention_grad.map(&mut f).transpose()?,
            relevance: self.relevance.map(&mut f).transpose()?,
            means: self
                .means
                .into_iter()
                .map(|(k, b)| Ok((k, f(b)?)))
                .collect::<Result<_, E>>()?,
        })
    }

    /// `into_host_for` of one module: every head mean its maps give, formed on the backend;
    /// the per-head A and ∇A only when `per_head`; the per-head relevance never (every
    /// method reads it through a mean). Absent maps stay absent, present ones come empty.
    fn reduce<B: Backend<Buf = Buf>>(
        self,
        be: &B,
        batch: usize,
        heads: usize,
        per_head: bool,
    ) -> Result<AttentionRecord<Vec<f32>>, BackendError> {
        let (attention, attention_grad, relevance, means) = reduce_maps(
            be,
            (self.attention, self.attention_grad, self.relevance),
            batch,
            heads,
            per_head,
        )?;
        Ok(AttentionRecord {
            attention,
            attention_grad,
            relevance,
            means,
        })
    }
}

/// A module's A, ∇A and R_A as `AttentionRecord::reduce` brings them to the host, with the
/// head means of every kind they give.
type ReducedMaps = (
    Vec<f32>,
    Option<Vec<f32>>,
    Option<Vec<f32>>,
    Vec<(HeadMean, Vec<f32>)>,
);

fn reduce_maps<B: Backend>(
    be: &B,
    (attention, grad, relevance): (B::Buf, Option<B::Buf>, Option<B::Buf>),
    batch: usize,
    heads: usize,
    per_head: bool,
) -> Result<ReducedMaps, BackendError> {
    let entries = be.len(&attention) / (batch * heads).max(1);
    let mut means = Vec::new();
    for kind in HeadMean::ALL {
        let x = match (kind.reads_relevance(), &relevance) {
            (false, _) => &attention,
            (true, Some(r)) => r,
            (true, None) => continue,
        };
        if kind.reads_gradient() && grad.is_none() {
            continue;
        }
        let mut mean = be.uninit(batch * entries)?;
        be.head_mean(&mut mean, kind, x, grad.as_ref(), heads, entries)?;
        means.push((kind, be.move_to_host(mean)?));
    }
    let keep = |b: B::Buf, wanted: bool| {
        if wanted {
            be.move_to_host(b)
        } else {
            Ok(Vec::new())
        }
    };
    Ok((
        keep(attention, per_head)?,
        grad.map(|g| keep(g, per_head)).transpose()?,
        relevance.map(|r| keep(r, false)).transpose()?,
        means,
    ))
}

/// What `LxmertTrace::into_host_for` brings to the host besides every head mean.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LxmertReads {
    /// The last cross layer's per-head text maps (attention Grad-CAM weighs each head).
    pub last_layer_heads: bool,
    /// The spectral graphs (§B) of the cross layers' outputs, solved with these options where
    /// the trace lives (the outputs stay there): each sample's word tokens ([`word_tokens`])
    /// per layer, all its regions per image branch.
    pub graphs: Option<GraphOptions>,
}

/// The word tokens of a question of `length` tokens: those between [CLS] and [SEP].
pub fn word_tokens(length: usize) -> std::ops::Range<usize> {
    1..length.saturating_sub(1).max(1)
}

/// One Fiedler solution per sample.
type PerSample = Vec<Result<Fiedler, SpectralError>>;

/// How far down the backward runs: the methods read ∂y/∂A of different modules (§A.1 table,
/// §C). Each scope records everything the one before it records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GradScope {
    /// The last cross layer (attention Grad-CAM reads its text queries).
    LastCross,
    /// Every cross layer's self-attentions (DSMI + Grad and + Attn read them) and the
    /// cross-attentions above the first layer, which the backward passes through anyway; the
    /// first layer's cross-attention and the language and object-relationship stacks get no
    /// backward.
    Cross,
    /// Every module but the object-relationship (image) stack (Transformer Attribution).
    NoImageStack,
    /// Every module (relevance maps).
    Every,
}

/// How far down the LRP pass runs: the methods read different modules (§C.1–§C.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LrpScope {
    /// The last cross layer's text self-attention and text→image maps (partial LRP).
    LastCrossText,
    /// Every module but the object-relationship (image) stack (Transformer Attribution).
    NoImageStack,
    /// Every module (relevance maps with LRP).
    Every,
}

/// One value per attention module (∂y/∂A, or LRP relevance), first layer first; cross layers
/// as (t→i, i→t, lang, visn).
struct PerModule<Buf> {
    lang: Vec<Buf>,
    visn: Vec<Buf>,
    cross: Vec<(Buf, Buf, Buf, Buf)>,
}

impl<Buf> PerModule<Buf> {
    fn none(lang: usize, visn: usize, cross: usize) -> PerModule<Option<Buf>> {
        PerModule {
            lang: (0..lang).map(|_| None).collect(),
            visn: (0..visn).map(|_| None).collect(),
            cross: (0..cross).map(|_| (None, None, None, None)).collect(),
        }
    }
}

/// One cross-modality layer: both cross-attention directions, both self-attentions and the
/// layer's outputs (t3, v3 of §A.1).
pub struct CrossLayerTrace<Buf> {
    /// Text queries over image keys [batch, heads, T, regions].
    pub text_to_image: AttentionRecord<Buf>,
    pub lang_self: AttentionRecord<Buf>,
    pub lang_output: Buf,
    /// Each sample's Fiedler vector over its word tokens of `lang_output`, where
    /// `into_host_for` solved the graphs (which leaves the output behind); else empty.
    pub lang_fiedlers: PerSample,
    /// `None` in the last layer of a trace taken for the methods (`Lxmert::trace_with`),
    /// which skips that branch: it reaches neither the answer (only the text [CLS] does,
    /// §A.1) nor any method (§C).
    pub image: Option<ImageBranchTrace<Buf>>,
}

/// A cross layer's image branch: its cross-attention direction, self-attention and output.
pub struct ImageBranchTrace<Buf> {
    /// Image queries over text keys [batch, heads, regions, T].
    pub image_to_text: AttentionRecord<Buf>,
    pub visn_self: AttentionRecord<Buf>,
    pub visn_output: Buf,
    /// Each sample's Fiedler vector over its regions of `visn_output`, as `lang_fiedlers`.
    pub visn_fiedlers: PerSample,
}

#[derive(Debug, Clone)]
pub struct LxmertOutput {
    /// [batch, labels].
    pub logits: Vec<f32>,
    pub labels: usize,
}

impl LxmertOutput {
    pub fn predicted(&self) -> Vec<usize> {
        argmax_rows(&self.logits, self.labels)
    }
}

pub struct LxmertTrace<Buf> {
    pub output: LxmertOutput,
    /// Language layers (text self-attention), then object-relationship layers.
    pub lang: Vec<LayerTrace<Buf>>,
    pub visn: Vec<LayerTrace<Buf>>,
    pub cross: Vec<CrossLayerTrace<Buf>>,
    /// The answer each sample's gradients explain (None for the Σ-logits target).
    pub targets: Option<Vec<usize>>,
    pub heads: usize,
    pub seq_len: usize,
    pub regions: usize,
    pub lengths: Vec<usize>,
    /// What a reduced trace (`into_host_for`) kept; `None`: every buffer is whole.
    pub kept: Option<LxmertReads>,
}

impl<Buf> LxmertTrace<Buf> {
    /// Moves every record into host memory (no copy on the CPU backend).
    pub fn into_host<B: Backend<Buf = Buf>>(
        self,
        be: &B,
    ) -> Result<LxmertTrace<Vec<f32>>, BackendError> {
        let host = |b: Buf| be.move_to_host(b);
        let layers = |ls: Vec<LayerTrace<Buf>>| {
            ls.into_iter()
                .map(|l| l.try_map(host))
                .collect::<Result<Vec<_>, BackendError>>()
        };
        let cross = self
            .cross
            .into_iter()
            .map(|c| {
                Ok(CrossLayerTrace {
                    text_to_image: c.text_to_image.try_map(host)?,
                    lang_self: c.lang_self.try_map(host)?,
                    lang_output: be.move_to_host(c.lang_output)?,
                    lang_fiedlers: c.lang_fiedlers,
                    image: c
                        .image
                        .map(|i| {
                            Ok::<_, BackendError>(ImageBranchTrace {
                                image_to_text: i.image_to_text.try_map(host)?,
                                visn_self: i.visn_self.try_map(host)?,
                                visn_output: be.move_to_host(i.visn_output)?,
                                visn_fiedlers: i.visn_fiedlers,
                            })
                        })
                        .transpose()?,
                })
            })
            .collect::<Result<_, BackendError>>()?;
        Ok(LxmertTrace {
            output: self.output,
            lang: layers(self.lang)?,
            visn: layers(self.visn)?,
            cross,
            targets: self.targets,
            heads: self.heads,
            seq_len: self.seq_len,
            regions: self.regions,
            lengths: self.lengths,
            kept: self.kept,
        })
    }

    /// Brings to host memory every head mean of every module, averaged on the backend, and
    /// what `reads` names: the Fiedler vectors of the cross layers' graphs, solved on the
    /// backend (what the spectral methods read of the outputs), and the last cross layer's
    /// per-head text maps; every other buffer is left behind (empty on the host). On a GPU
    /// that moves a fraction of the trace: a mean is 1/heads of the maps it averages, a
    /// Fiedler vector 1/width of the features.
    pub fn into_host_for<B: Backend<Buf = Buf>>(
        self,
        be: &B,
        reads: LxmertReads,
    ) -> Result<LxmertTrace<Vec<f32>>, BackendError> {
        let (batch, heads) = (self.lengths.len(), self.heads);
        let (text_solved, image_solved) = match &reads.graphs {
            Some(opts) => self.solve_graphs(be, opts)?,
            None => (Vec::new(), Vec::new()),
        };
        let (mut text_solved, mut image_solved) =
            (text_solved.into_iter(), image_solved.into_iter());
        let layers = |ls: Vec<LayerTrace<Buf>>| {
            ls.into_iter()
                .map(|l| {
                    let maps = (l.attention, l.attention_grad, l.relevance);
                    let (attention, attention_grad, relevance, means) =
                        reduce_maps(be, maps, batch, heads, false)?;
                    Ok(LayerTrace {
                        attention,
                        attention_grad,
                        relevance,
                        output: Vec::new(),
                        means,
                        fiedlers: Vec::new(),
                        weighted: Vec::new(),
                    })
                })
                .collect::<Result<Vec<_>, BackendError>>()
        };
        let last = self.cross.len().saturating_sub(1);
        let mut cross = Vec::with_capacity(self.cross.len());
        for (k, c) in self.cross.into_iter().enumerate() {
            let per_head = reads.last_layer_heads && k == last;
            let image = match c.image {
                Some(i) => Some(ImageBranchTrace {
                    image_to_text: i.image_to_text.reduce(be, batch, heads, false)?,
                    visn_self: i.visn_self.reduce(be, batch, heads, false)?,
                    visn_output: Vec::new(),
                    visn_fiedlers: image_solved.next().unwrap_or_default(),
                }),
                None => None,
            };
            cross.push(CrossLayerTrace {
                text_to_image: c.text_to_image.reduce(be, batch, heads, per_head)?,
                lang_self: c.lang_self.reduce(be, batch, heads, per_head)?,
                lang_output: Vec::new(),
                lang_fiedlers: text_solved.next().unwrap_or_default(),
                image,
            });
        }
        Ok(LxmertTrace {
            output: self.output,
            lang: layers(self.lang)?,
            visn: layers(self.visn)?,
            cross,
            targets: self.targets,
            heads,
            seq_len: self.seq_len,
            regions: self.regions,
            lengths: self.lengths,
            kept: Some(reads),
        })
    }

    /// The graphs `LxmertReads::graphs` names, in one backend call: per cross layer, one per
    /// sample over its word tokens; per image branch, one per sample over its regions.
    fn solve_graphs<B: Backend<Buf = Buf>>(
        &self,
        be: &B,
        opts: &GraphOptions,
    ) -> Result<(Vec<PerSample>, Vec<PerSample>), BackendError> {
        let batch = self.lengths.len();
        let Some(first) = self.cross.first() else {
            return Ok((Vec::new(), Vec::new()));
        };
        let width = be.len(&first.lang_output) / (batch * self.seq_len).max(1);
        let words: Vec<Vec<usize>> = self
            .lengths
            .iter()
            .enumerate()
            .map(|(b, &t)| word_tokens(t).map(|i| b * self.seq_len + i).collect())
            .collect();
        let regions: Vec<Vec<usize>> = (0..batch)
            .map(|b| (b * self.regions..(b + 1) * self.regions).collect())
            .collect();
        let text = self.cross.iter().map(|c| &c.lang_output);
        let image: Vec<&Buf> = self
            .cross
            .iter()
            .filter_map(|c| c.image.as_ref().map(|i| &i.visn_output))
            .collect();
        let graphs: Vec<(&Buf, &[usize])> = text
            .flat_map(|out| words.iter().map(move |r| (out, r.as_slice())))
            .chain(
                image
                    .iter()
                    .flat_map(|&out| regions.iter().map(move |r| (out, r.as_slice()))),
            )
            .collect();
        let mut solved = be.fiedler_rows(&graphs, width, opts)?.into_iter();
        let mut per_layer = |layers: usize| -> Vec<PerSample> {
            (0..layers)
                .map(|_| solved.by_ref().take(batch).collect())
                .collect()
        };
        let text = per_layer(self.cross.len());
        Ok((text, per_layer(image.len())))
    }
}

struct SelfLayer<B: Backend> {
    attention: AttentionSublayer<B>,
    ffn: FeedForward<B>,
}

struct CrossLayer<B: Backend> {
    cross: AttentionSublayer<B>,
    lang_self: AttentionSublayer<B>,
    visn_self: AttentionSublayer<B>,
    lang_ffn: FeedForward<B>,
    visn_ffn: FeedForward<B>,
}

struct SelfActs<Buf> {
    attention: AttentionActivations<Buf>,
    ffn: FeedForwardActivations<Buf>,
}

/// A single-modality stack's input (the embedding) and its layers' activations.
type Stack<Buf> = (Buf, Vec<SelfActs<Buf>>);

/// The text stack, then the image stack.
type Stacks<Buf> = (Stack<Buf>, Stack<Buf>);

/// A stack's output: its last layer's, or its input when it has no layer.
fn stack_output<Buf>((input, layers): Stack<Buf>) -> Buf {
    layers.into_iter().next_back().map_or(input, |a| a.ffn.out)
}

struct CrossActs<Buf> {
    t2i: AttentionActivations<Buf>,
    lang_self: AttentionActivations<Buf>,
    lang_ffn: FeedForwardActivations<Buf>,
    /// `None` when the forward skipped the last layer's image branch.
    image: Option<ImageActs<Buf>>,
}

struct ImageActs<Buf> {
    i2t: AttentionActivations<Buf>,
    visn_self: AttentionActivations<Buf>,
    visn_ffn: FeedForwardActivations<Buf>,
}

impl<Buf> CrossActs<Buf> {
    /// The image branch of a layer below the last, which every forward computes.
    fn image(&self) -> &ImageActs<Buf> {
        self.image
            .as_ref()
            .expect("only the last cross layer's image branch is ever skipped")
    }
}

struct Shapes {
    text: AttentionShape,
    image: AttentionShape,
    text_to_image: AttentionShape,
    image_to_text: AttentionShape,
}

struct Forward<Buf> {
    /// The embeddings: inputs of the first language and object-relationship layers.
    text0: Buf,
    image0: Buf,
    /// The text [CLS] rows the answer head reads.
    cls: Buf,
    lang: Vec<SelfActs<Buf>>,
    visn: Vec<SelfActs<Buf>>,
    cross: Vec<CrossActs<Buf>>,
    shapes: Shapes,
    head: HeadActivations<Buf>,
    output: LxmertOutput,
}

pub struct Lxmert<B: Backend> {
    pub config: LxmertConfig,
    word_embeddings: B::Buf,
    positions: B::Buf,
    type0: B::Buf,
    text_norm: (B::Buf, B::Buf),
    feature_fc: (B::Buf, B::Buf),
    feature_norm: (B::Buf, B::Buf),
    box_fc: (B::Buf, B::Buf),
    box_norm: (B::Buf, B::Buf),
    lang: Vec<SelfLayer<B>>,
    visn: Vec<SelfLayer<B>>,
    cross: Vec<CrossLayer<B>>,
    head: AnswerHead<B>,
}

/// The last output of a stack, or its input when the stack is empty.
fn last<'a, Buf>(outputs: impl DoubleEndedIterator<Item = &'a Buf>, input: &'a Buf) -> &'a Buf {
    outputs.last().unwrap_or(input)
}

/// Where LXMERT's layers are stored: language, object-relationship and cross-modality.
const LANGUAGE_LAYERS: &str = "lxmert.encoder.layer";
const REGION_LAYERS: &str = "lxmert.encoder.r_layers";
const CROSS_LAYERS: &str = "lxmert.encoder.x_layers";

/// LXMERT's layer stacks and how deep its config says they are.
pub fn layer_stacks(config: &LxmertConfig) -> [LayerStack; 3] {
    let stack = |prefix, field, layers| LayerStack {
        prefix,
        field,
        layers,
    };
    [
        stack(LANGUAGE_LAYERS, "l_layers", config.l_layers),
        stack(REGION_LAYERS, "r_layers", config.r_layers),
        stack(CROSS_LAYERS, "x_layers", config.x_layers),
    ]
}

impl<B: Backend> Lxmert<B> {
    pub fn load(be: &B, dir: &Path) -> Result<Self, ModelError> {
        let config = LxmertConfig::from_dir(dir)?;
        let weights = Weights::open(dir)?;
        weights.check_depth(&layer_stacks(&config))?;
        weights.check_answers(AnswerCount {
            projection: LXMERT_HEAD.out,
            answers: config.id2label.len(),
        })?;
        Self::from_source(be, config, &weights)
    }

    pub fn from_source(
        be: &B,
        config: LxmertConfig,
        w: &dyn WeightSource,
    ) -> Result<Self, ModelError> {
        let c = &config;
        let (d, f) = (c.hidden_size, c.intermediate_size);
        let labels = c.id2label.len();
        let upload = |name: &str, shape: &[usize]| -> Result<B::Buf, ModelError> {
            Ok(be.upload(&w.tensor(name, shape)?)?)
        };
        let linear =
            |name: &str, out: usize, input: usize| -> Result<(B::Buf, B::Buf), ModelError> {
                let weight = be.upload_weight(
                    &w.tensor(&format!("{name}.weight"), &[out, input])?,
                    out,
                    input,
                )?;
                Ok((weight, upload(&format!("{name}.bias"), &[out])?))
            };
        // The two visual LayerNorms feed an average: halving their gain and bias is exact and
        // turns the average into a sum.
        let half_norm = |name: &str| -> Result<(B::Buf, B::Buf), ModelError> {
            let half = |t: Vec<f32>| t.into_iter().map(|v| 0.5 * v).collect::<Vec<f32>>();
            Ok((
                be.upload(&half(w.tensor(&format!("{name}.weight"), &[d])?))?,
                be.upload(&half(w.tensor(&format!("{name}.bias"), &[d])?))?,
            ))
        };
        let self_layer = |prefix: String| -> Result<SelfLayer<B>, ModelError> {
            Ok(SelfLayer {
                attention: AttentionSublayer::load(
                    be,
                    w,
                    &format!("{prefix}.attention.self"),
                    &format!("{prefix}.attention.output"),
                    d,
                    EPS,
                )?,
                ffn: FeedForward::load(
                    be,
                    w,
                    &format!("{prefix}.intermediate"),
                    &format!("{prefix}.output"),
                    d,
                    f,
                    c.hidden_act,
                    EPS,
                )?,
            })
        };
        let cross_layer = |k: usize| -> Result<CrossLayer<B>, ModelError> {
            let p = format!("{CROSS_LAYERS}.{k}");
            let attention = |name: &str| {
                AttentionSublayer::load(
                    be,
                    w,
                    &format!("{p}.{name}.self"),
                    &format!("{p}.{name}.output"),
                    d,
                    EPS,
                )
            };
            let ffn = |inter: &str, out: &str| {
                FeedForward::load(
                    be,
                    w,
                    &format!("{p}.{inter}"),
                    &format!("{p}.{out}"),
                    d,
                    f,
                    c.hidden_act,
                    EPS,
                )
            };
            Ok(CrossLayer {
                cross: AttentionSublayer::load(
                    be,
                    w,
                    &format!("{p}.visual_attention.att"),
                    &format!("{p}.visual_attention.output"),
                    d,
                    EPS,
                )?,
                lang_self: attention("lang_self_att")?,
                visn_self: attention("visn_self_att")?,
                lang_ffn: ffn("lang_inter", "lang_output")?,
                visn_ffn: ffn("visn_inter", "visn_output")?,
            })
        };
        let types = w.tensor(
            "lxmert.embeddings.token_type_embeddings.weight",
            &[c.type_vocab_size, d],
        )?;
        Ok(Self {
            word_embeddings: upload(
                "lxmert.embeddings.word_embeddings.weight",
                &[c.vocab_size, d],
            )?,
            positions: upload(
                "lxmert.embeddings.position_embeddings.weight",
                &[c.max_position_embeddings, d],
            )?,
            type0: be.upload(&types[..d])?,
            text_norm: load_norm(be, w, "lxmert.embeddings.LayerNorm", d)?,
            feature_fc: linear("lxmert.encoder.visn_fc.visn_fc", d, c.visual_feat_dim)?,
            feature_norm: half_norm("lxmert.encoder.visn_fc.visn_layer_norm")?,
            box_fc: linear("lxmert.encoder.visn_fc.box_fc", d, c.visual_pos_dim)?,
            box_norm: half_norm("lxmert.encoder.visn_fc.box_layer_norm")?,
            lang: (0..c.l_layers)
                .map(|i| self_layer(format!("{LANGUAGE_LAYERS}.{i}")))
                .collect::<Result<_, _>>()?,
            visn: (0..c.r_layers)
                .map(|i| self_layer(format!("{REGION_LAYERS}.{i}")))
                .collect::<Result<_, _>>()?,
            cross: (0..c.x_layers).map(cross_layer).collect::<Result<_, _>>()?,
            head: AnswerHead::load(be, w, &LXMERT_HEAD, d, labels, NormOrder::GeluThenNorm, EPS)?,
            config,
        })
    }

    /// Answer logits without keeping activations for a backward.
    pub fn logits(&self, be: &B, inputs: &LxmertInputs) -> Result<LxmertOutput, ModelError> {
        self.logits_given(be, inputs, GivenStacks::none())
    }

    /// Answer logits with the outputs of either single-modality stack given rather than
    /// computed: the cross layers and the head see them as they would their own. `inputs`
    /// still gives the masks (lengths, region counts), and the features or ids of a stack
    /// that is not given.
    pub fn logits_given(
        &self,
        be: &B,
        inputs: &LxmertInputs,
        given: GivenStacks<B::Buf>,
    ) -> Result<LxmertOutput, ModelError> {
        self.score(be, inputs, given)
    }

    /// The outputs of the language and object-relationship stacks (embeddings, then their
    /// layers), without the cross layers.
    pub fn stack_outputs(
        &self,
        be: &B,
        inputs: &LxmertInputs,
    ) -> Result<StackOutputs<B::Buf>, ModelError> {
        self.check(inputs)?;
        let shapes = self.shapes(inputs);
        let (text, image) = self.stacks(be, inputs, &shapes, GivenStacks::none())?;
        Ok(StackOutputs {
            text: stack_output(text),
            image: stack_output(image),
        })
    }

    fn check(&self, x: &LxmertInputs) -> Result<(), ModelError> {
        let c = &self.config;
        let batch = x.batch();
        let bad = |m: String| Err(ModelError::Input(m));
        if batch == 0 || x.regions == 0 {
            return bad(format!(
                "a batch needs samples and regions ({batch} samples, {} regions)",
                x.regions
            ));
        }
        if x.features.len() != batch * x.regions * c.visual_feat_dim {
            return bad(format!(
                "region features hold {} values, expected {batch} × {} regions × {}",
                x.features.len(),
                x.regions,
                c.visual_feat_dim
            ));
        }
        if x.boxes.len() != batch * x.regions * c.visual_pos_dim {
            return bad(format!(
                "boxes hold {} values, expected {batch} × {} × {}",
                x.boxes.len(),
                x.regions,
                c.visual_pos_dim
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
        if let Some(counts) = &x.region_counts {
            if counts.len() != batch || counts.iter().any(|&n| n > x.regions) {
                return bad(format!(
                    "region counts {counts:?} for {batch} samples of {} regions",
                    x.regions
                ));
            }
        }
        if x.seq_len > c.max_position_embeddings {
            return bad(format!(
                "questions of {} tokens exceed the model's {} positions",
                x.seq_len, c.max_position_embeddings
            ));
        }
        if let Some(i) = x
            .features
            .iter()
            .chain(&x.boxes)
            .position(|v| !v.is_finite())
        {
            return bad(format!("region input value {i} is not finite"));
        }
        Ok(())
    }

    /// `top_image`: whether to run the last cross layer's image branch, which reaches
    /// neither the answer nor any method.
    fn forward(
        &self,
        be: &B,
        x: &LxmertInputs,
        top_image: bool,
    ) -> Result<Forward<B::Buf>, ModelError> {
        self.check(x)?;
        let (batch, d, t) = (x.batch(), self.config.hidden_size, x.seq_len);
        let shapes = self.shapes(x);
        let ((text0, lang), (image0, visn)) = self.stacks(be, x, &shapes, GivenStacks::none())?;
        let mut cross: Vec<CrossActs<B::Buf>> = Vec::with_capacity(self.cross.len());
        let top = self.cross.len().saturating_sub(1);
        for (k, layer) in self.cross.iter().enumerate() {
            let t_in = cross.last().map_or_else(
                || last(lang.iter().map(|a| &a.ffn.out), &text0),
                |a| &a.lang_ffn.out,
            );
            let v_in = cross.last().map_or_else(
                || last(visn.iter().map(|a| &a.ffn.out), &image0),
                |a| &a.image().visn_ffn.out,
            );
            // A lone cross layer keeps its image branch: DSMI reads its output (§C.7 reads
            // layer X − 2, which falls back to layer 0).
            let image = k < top || k == 0 || top_image;
            cross.push(Self::cross_layer(be, layer, t_in, v_in, &shapes, image)?);
        }

        // Answer head on the text [CLS].
        let text_out = cross.last().map_or_else(
            || last(lang.iter().map(|a| &a.ffn.out), &text0),
            |a| &a.lang_ffn.out,
        );
        let cls = Self::text_cls(be, text_out, batch, t, d)?;
        let (head, logits) = self.head.forward(be, &cls)?;
        let labels = self.config.id2label.len();
        Ok(Forward {
            text0,
            image0,
            cls,
            lang,
            visn,
            cross,
            shapes,
            head,
            output: LxmertOutput { logits, labels },
        })
    }

    /// The logits alone, keeping nothing for a backward: a stack's activations go once it
    /// has its output, a cross layer's once the next has its. The last cross layer runs at
    /// the text [CLS] only past its cross-attention (whose text rows all feed the keys and
    /// values of the self-attention above it); its image branch reaches nothing and does
    /// not run.
    fn score(
        &self,
        be: &B,
        x: &LxmertInputs,
        given: GivenStacks<B::Buf>,
    ) -> Result<LxmertOutput, ModelError> {
        self.check(x)?;
        let (batch, d, t) = (x.batch(), self.config.hidden_size, x.seq_len);
        let labels = self.config.id2label.len();
        let shapes = self.shapes(x);
        let (text, image) = self.stacks(be, x, &shapes, given)?;
        let (mut text, mut image) = (stack_output(text), stack_output(image));
        let Some((top, below)) = self.cross.split_last() else {
            let cls = Self::text_cls(be, &text, batch, t, d)?;
            let (_, logits) = self.head.forward(be, &cls)?;
            return Ok(LxmertOutput { logits, labels });
        };
        for layer in below {
            let branch = Self::image_branch(be, layer, &text, &image, &shapes)?;
            let acts = Self::cross_layer(be, layer, &text, &image, &shapes, false)?;
            (text, image) = (acts.lang_ffn.out, branch.visn_ffn.out);
        }
        let t2i = top
            .cross
            .forward(be, &text, &image, &shapes.text_to_image)?;
        let cls = Self::text_cls(be, &t2i.out, batch, t, d)?;
        let at_cls = shapes.text.single_query(&vec![0; batch]);
        let lang_self = top.lang_self.forward(be, &cls, &t2i.out, &at_cls)?;
        let lang_ffn = top.lang_ffn.forward(be, &lang_self.out)?;
        let (_, logits) = self.head.forward(be, &lang_ffn.out)?;
        Ok(LxmertOutput { logits, labels })
    }

    /// The two single-modality stacks, each run or, when `given`, its output taken as is
    /// (standing for the embedding, with no layer recorded).
    fn stacks(
        &self,
        be: &B,
        x: &LxmertInputs,
        shapes: &Shapes,
        given: GivenStacks<B::Buf>,
    ) -> Result<Stacks<B::Buf>, ModelError> {
        let (batch, d) = (x.batch(), self.config.hidden_size);
        let check = |what: &str, buf: B::Buf, rows: usize| {
            let len = be.len(&buf);
            if len == batch * rows * d {
                Ok((buf, Vec::new()))
            } else {
                Err(ModelError::Input(format!(
                    "the given {what} stack output holds {len} values, expected {batch} × {rows} × {d}"
                )))
            }
        };
        let text = match given.text {
            Some(out) => check("text", out, x.seq_len)?,
            None => self.text_stack(be, x, shapes)?,
        };
        let image = match given.image {
            Some(out) => check("image", out, x.regions)?,
            None => self.image_stack(be, x, shapes)?,
        };
        Ok((text, image))
    }

    /// One cross layer: the text branch (text→image cross-attention, self-attention,
    /// feed-forward), and the image branch when `image`.
    fn cross_layer(
        be: &B,
        layer: &CrossLayer<B>,
        t_in: &B::Buf,
        v_in: &B::Buf,
        shapes: &Shapes,
        image: bool,
    ) -> Result<CrossActs<B::Buf>, ModelError> {
        let t2i = layer.cross.forward(be, t_in, v_in, &shapes.text_to_image)?;
        let lang_self = layer
            .lang_self
            .forward(be, &t2i.out, &t2i.out, &shapes.text)?;
        let lang_ffn = layer.lang_ffn.forward(be, &lang_self.out)?;
        let image = if image {
            Some(Self::image_branch(be, layer, t_in, v_in, shapes)?)
        } else {
            None
        };
        Ok(CrossActs {
            t2i,
            lang_self,
            lang_ffn,
            image,
        })
    }

    /// A cross layer's image branch: image→text cross-attention, self-attention,
    /// feed-forward.
    fn image_branch(
        be: &B,
        layer: &CrossLayer<B>,
        t_in: &B::Buf,
        v_in: &B::Buf,
        shapes: &Shapes,
    ) -> Result<ImageActs<B::Buf>, ModelError> {
        let i2t = layer.cross.forward(be, v_in, t_in, &shapes.image_to_text)?;
        let visn_self = layer
            .visn_self
            .forward(be, &i2t.out, &i2t.out, &shapes.image)?;
        let visn_ffn = layer.visn_ffn.forward(be, &visn_self.out)?;
        Ok(ImageActs {
            i2t,
            visn_self,
            visn_ffn,
        })
    }

    /// The text [CLS] rows of `text` ([batch, t, d]): what the answer head reads.
    fn text_cls(
        be: &B,
        text: &B::Buf,
        batch: usize,
        t: usize,
        d: usize,
    ) -> Result<B::Buf, ModelError> {
        let rows: Vec<usize> = (0..batch).map(|b| b * t).collect();
        let mut cls = be.zeros(batch * d)?;
        be.gather_rows(&mut cls, text, &rows, d)?;
        Ok(cls)
    }

    /// The attention shapes of a batch: each stream's self-attention and both directions of
    /// the cross-attention, with the padding masks.
    fn shapes(&self, x: &LxmertInputs) -> Shapes {
        let c = &self.config;
        let (batch, t, n) = (x.batch(), x.seq_len, x.regions);
        let heads = c.num_attention_heads;
        let hd = c.hidden_size / heads;
        let text_mask = AttentionShape::prefix_mask(&x.lengths, t);
        let region_mask = x
            .region_counts
            .as_ref()
            .map(|counts| AttentionShape::prefix_mask(counts, n));
        Shapes {
            text: AttentionShape {
                key_mask: Some(text_mask.clone()),
                ..AttentionShape::self_attention(batch, heads, t, hd)
            },
            image: AttentionShape {
                key_mask: region_mask.clone(),
                ..AttentionShape::self_attention(batch, heads, n, hd)
            },
            text_to_image: AttentionShape {
                queries: t,
                keys: n,
                key_mask: region_mask,
                ..AttentionShape::self_attention(batch, heads, t, hd)
            },
            image_to_text: AttentionShape {
                queries: n,
                keys: t,
                key_mask: Some(text_mask),
                ..AttentionShape::self_attention(batch, heads, t, hd)
            },
        }
    }

    /// The text embedding LN(word + position + type 0), then the language layers.
    fn text_stack(
        &self,
        be: &B,
        x: &LxmertInputs,
        shapes: &Shapes,
    ) -> Result<Stack<B::Buf>, ModelError> {
        let (batch, d, t) = (x.batch(), self.config.hidden_size, x.seq_len);
        let mut text = be.zeros(batch * t * d)?;
        be.embed_tokens(
            &mut text,
            &x.ids,
            &self.word_embeddings,
            &self.positions,
            t,
            d,
        )?;
        be.add_row_vector(&mut text, &self.type0)?;
        let mut text0 = be.zeros(batch * t * d)?;
        be.layernorm(
            &mut text0,
            &mut be.zeros(2 * batch * t)?,
            &text,
            &self.text_norm.0,
            &self.text_norm.1,
            d,
            EPS,
        )?;
        let lang = Self::self_stack(be, &self.lang, &text0, &shapes.text)?;
        Ok((text0, lang))
    }

    /// The region embedding, then the object-relationship layers.
    fn image_stack(
        &self,
        be: &B,
        x: &LxmertInputs,
        shapes: &Shapes,
    ) -> Result<Stack<B::Buf>, ModelError> {
        let image0 = self.visual_embedding(be, x)?;
        let visn = Self::self_stack(be, &self.visn, &image0, &shapes.image)?;
        Ok((image0, visn))
    }

    /// A stack of self-attention layers over `input`, keeping every layer's activations.
    fn self_stack(
        be: &B,
        layers: &[SelfLayer<B>],
        input: &B::Buf,
        shape: &AttentionShape,
    ) -> Result<Vec<SelfActs<B::Buf>>, ModelError> {
        let mut acts: Vec<SelfActs<B::Buf>> = Vec::with_capacity(layers.len());
        for layer in layers {
            let x = last(acts.iter().map(|a| &a.ffn.out), input);
            let attention = layer.attention.forward(be, x, x, shape)?;
            let ffn = layer.ffn.forward(be, &attention.out)?;
            acts.push(SelfActs { attention, ffn });
        }
        Ok(acts)
    }

    /// (LN(W_f·feature) + LN(W_b·box)) / 2, the halves folded into the norms at load.
    fn visual_embedding(&self, be: &B, x: &LxmertInputs) -> Result<B::Buf, ModelError> {
        let c = &self.config;
        let (m, d) = (x.batch() * x.regions, c.hidden_size);
        let mut feat = be.zeros(m * d)?;
        be.linear(
            &mut feat,
            &be.upload(&x.features)?,
            &self.feature_fc.0,
            Some(&self.feature_fc.1),
            m,
            c.visual_feat_dim,
            d,
        )?;
        let mut boxes = be.zeros(m * d)?;
        be.linear(
            &mut boxes,
            &be.upload(&x.boxes)?,
            &self.box_fc.0,
            Some(&self.box_fc.1),
            m,
            c.visual_pos_dim,
            d,
        )?;
        let mut stats = be.zeros(2 * m)?;
        let (mut a, mut b) = (be.zeros(m * d)?, be.zeros(m * d)?);
        be.layernorm(
            &mut a,
            &mut stats,
            &feat,
            &self.feature_norm.0,
            &self.feature_norm.1,
            d,
            EPS,
        )?;
        be.layernorm(
            &mut b,
            &mut stats,
            &boxes,
            &self.box_norm.0,
            &self.box_norm.1,
            d,
            EPS,
        )?;
        let mut out = be.zeros(m * d)?;
        be.add(&mut out, &a, &b)?;
        Ok(out)
    }

    /// Forward, then the backward of each sample's target, recording every attention module.
    pub fn trace(
        &self,
        be: &B,
        inputs: &LxmertInputs,
        target: &VqaTarget,
    ) -> Result<LxmertTrace<B::Buf>, ModelError> {
        self.run(be, inputs, target, Some(GradScope::Every), None, true)
    }

    /// Forward only, recording every attention module without gradients (for the methods
    /// that read no ∂y/∂A); the explanations score the predicted answers.
    pub fn record(&self, be: &B, inputs: &LxmertInputs) -> Result<LxmertTrace<B::Buf>, ModelError> {
        self.run(be, inputs, &VqaTarget::Predicted, None, None, true)
    }

    /// Forward, the full backward when `gradients`, and the LRP pass (§D) as far as `scope`.
    pub fn lrp(
        &self,
        be: &B,
        inputs: &LxmertInputs,
        target: &VqaTarget,
        gradients: bool,
        scope: LrpScope,
    ) -> Result<LxmertTrace<B::Buf>, ModelError> {
        let gradients = gradients.then_some(GradScope::Every);
        self.run(be, inputs, target, gradients, Some(scope), true)
    }

    /// What the methods read: forward without the last cross layer's image branch; the
    /// backward of each sample's target down to `gradients`; the LRP pass (§D) from a one-hot
    /// at each target (all ones for the Σ-logits target) down to `relevance`. Modules
    /// outside a scope record no ∂y/∂A or relevance (`None`).
    pub fn trace_with(
        &self,
        be: &B,
        inputs: &LxmertInputs,
        target: &VqaTarget,
        gradients: Option<GradScope>,
        relevance: Option<LrpScope>,
    ) -> Result<LxmertTrace<B::Buf>, ModelError> {
        self.run(be, inputs, target, gradients, relevance, false)
    }

    fn run(
        &self,
        be: &B,
        inputs: &LxmertInputs,
        target: &VqaTarget,
        gradients: Option<GradScope>,
        relevance: Option<LrpScope>,
        top_image: bool,
    ) -> Result<LxmertTrace<B::Buf>, ModelError> {
        let f = self.forward(be, inputs, top_image)?;
        let (targets, seed) = target.resolve(&f.output.predicted(), f.output.labels)?;
        let (lang, visn, cross) = (f.lang.len(), f.visn.len(), f.cross.len());
        let grads = match gradients {
            Some(scope) => self.backward(be, &f, &seed, inputs, scope)?,
            None => PerModule::none(lang, visn, cross),
        };
        let cams = match relevance {
            Some(scope) => self.relprop(be, &f, &seed, inputs, scope)?,
            None => PerModule::none(lang, visn, cross),
        };
        Ok(Self::assemble(
            f,
            inputs,
            targets,
            grads,
            cams,
            self.config.num_attention_heads,
        ))
    }

    /// ∂y/∂A of the modules `scope` covers for the seed ∂y/∂logits. The image stream starts
    /// with no gradient, so the last cross layer's image branch is recorded as zeros without
    /// running its backward.
    fn backward(
        &self,
        be: &B,
        f: &Forward<B::Buf>,
        seed: &[f32],
        inputs: &LxmertInputs,
        scope: GradScope,
    ) -> Result<PerModule<Option<B::Buf>>, ModelError> {
        let (batch, d) = (inputs.batch(), self.config.hidden_size);
        let d_cls = self.head.backward(be, &f.head, seed)?;
        let (t, n) = (inputs.seq_len, inputs.regions);
        let rows: Vec<usize> = (0..batch).map(|b| b * t).collect();
        let mut dt = be.zeros(batch * t * d)?;
        be.gather_rows_backward(&mut dt, &d_cls, &rows, d)?;
        let mut dv = be.zeros(batch * n * d)?;

        let s = &f.shapes;
        let mut out = PerModule::<B::Buf>::none(f.lang.len(), f.visn.len(), f.cross.len());
        let top = self.cross.len().saturating_sub(1);
        for (k, (layer, a)) in self.cross.iter().zip(&f.cross).enumerate().rev() {
            let dt2 = if k == top {
                // Only the [CLS] rows of the last layer reach the answer.
                let d_rows = layer
                    .lang_ffn
                    .backward_rows(be, &a.lang_ffn, &d_cls, &rows)?;
                let mut dt2 = be.zeros(batch * t * d)?;
                be.gather_rows_backward(&mut dt2, &d_rows, &rows, d)?;
                dt2
            } else {
                layer.lang_ffn.backward(be, &a.lang_ffn, &dt)?
            };
            if k == 0 && k != top && scope == GradScope::Cross {
                // The self-attentions' ∂y/∂A are all this scope still needs.
                let img = a.image();
                let dv2 = layer.visn_ffn.backward(be, &img.visn_ffn, &dv)?;
                out.cross[0] = (
                    None,
                    None,
                    Some(
                        layer
                            .lang_self
                            .probs_gradient(be, &a.lang_self, &dt2, &s.text)?,
                    ),
                    Some(
                        layer
                            .visn_self
                            .probs_gradient(be, &img.visn_self, &dv2, &s.image)?,
                    ),
                );
                break;
            }
            let (g_lang, dt1_q, dt1_kv) =
                layer.lang_self.backward(be, &a.lang_self, &dt2, &s.text)?;
            let mut dt1 = dt1_q;
            be.add_assign(&mut dt1, &dt1_kv)?;
            let (g_t2i, dt_q, dv_kv) = layer.cross.backward(be, &a.t2i, &dt1, &s.text_to_image)?;
            let slot = &mut out.cross[k];
            dt = dt_q;
            if k == top {
                dv = dv_kv;
                // A computed image branch gets no gradient: zeros.
                let zeros = |len| a.image.as_ref().map(|_| be.zeros(len)).transpose();
                *slot = (
                    Some(g_t2i),
                    zeros(s.image_to_text.probs_len())?,
                    Some(g_lang),
                    zeros(s.image.probs_len())?,
                );
                if scope == GradScope::LastCross {
                    return Ok(out);
                }
                continue;
            }
            let img = a.image();
            let dv2 = layer.visn_ffn.backward(be, &img.visn_ffn, &dv)?;
            let (g_visn, dv1_q, dv1_kv) =
                layer
                    .visn_self
                    .backward(be, &img.visn_self, &dv2, &s.image)?;
            let mut dv1 = dv1_q;
            be.add_assign(&mut dv1, &dv1_kv)?;
            let (g_i2t, dv_q, dt_kv) =
                layer.cross.backward(be, &img.i2t, &dv1, &s.image_to_text)?;
            be.add_assign(&mut dt, &dt_kv)?;
            dv = dv_q;
            be.add_assign(&mut dv, &dv_kv)?;
            *slot = (Some(g_t2i), Some(g_i2t), Some(g_lang), Some(g_visn));
        }
        if scope == GradScope::Every {
            let visn = Self::self_stack_backward(be, &self.visn, &f.visn, dv, &s.image)?;
            out.visn = visn.into_iter().map(Some).collect();
        }
        if scope >= GradScope::NoImageStack {
            let lang = Self::self_stack_backward(be, &self.lang, &f.lang, dt, &s.text)?;
            out.lang = lang.into_iter().map(Some).collect();
        }
        Ok(out)
    }

    /// The LRP pass of §D from the seed relevance at the logits: answer head, the text [CLS]
    /// index-select, then every layer in reverse (cross layers: feed-forwards, self-attention,
    /// cross-attention; then the image stack, then the text stack), as far down as `scope`
    /// asks. The image stream starts with no relevance, so the last cross layer's image
    /// branch carries none (recorded as zeros without running its rules). Returns the
    /// relevance at the probabilities of every module the scope covers.
    fn relprop(
        &self,
        be: &B,
        f: &Forward<B::Buf>,
        seed: &[f32],
        inputs: &LxmertInputs,
        scope: LrpScope,
    ) -> Result<PerModule<Option<B::Buf>>, ModelError> {
        let (batch, d) = (inputs.batch(), self.config.hidden_size);
        let (t, n) = (inputs.seq_len, inputs.regions);
        let r_cls = self.head.relprop(be, &f.head, &f.cls, seed)?;
        // Index-select (gradient × input): x ⊙ sdiv(R, x) at the selected rows.
        let mut r_sel = be.zeros(batch * d)?;
        be.lrp_clone(&mut r_sel, &f.cls, &[&r_cls])?;
        let rows: Vec<usize> = (0..batch).map(|b| b * t).collect();
        let mut rt = be.zeros(batch * t * d)?;
        be.gather_rows_backward(&mut rt, &r_sel, &rows, d)?;
        let mut rv = be.zeros(batch * n * d)?;

        let s = &f.shapes;
        let mut out = PerModule::<B::Buf>::none(f.lang.len(), f.visn.len(), f.cross.len());
        let text_in = last(f.lang.iter().map(|a| &a.ffn.out), &f.text0);
        let image_in = last(f.visn.iter().map(|a| &a.ffn.out), &f.image0);
        let top = self.cross.len().saturating_sub(1);
        for (k, (layer, a)) in self.cross.iter().zip(&f.cross).enumerate().rev() {
            let (t_in, v_in) = match k {
                0 => (text_in, image_in),
                _ => (
                    &f.cross[k - 1].lang_ffn.out,
                    &f.cross[k - 1].image().visn_ffn.out,
                ),
            };
            let rt2 = if k == top {
                // Only the [CLS] rows of the last layer carry relevance.
                let r_rows = layer.lang_ffn.relprop_rows(
                    be,
                    &a.lang_ffn,
                    &a.lang_self.out,
                    &r_sel,
                    &rows,
                )?;
                let mut rt2 = be.zeros(batch * t * d)?;
                be.gather_rows_backward(&mut rt2, &r_rows, &rows, d)?;
                rt2
            } else {
                layer
                    .lang_ffn
                    .relprop(be, &a.lang_ffn, &a.lang_self.out, &rt, batch)?
            };
            let (c_lang, rt1) = self_attention_relprop(
                be,
                &layer.lang_self,
                &a.lang_self,
                &a.t2i.out,
                &rt2,
                &s.text,
            )?;
            let slot = &mut out.cross[k];
            if k == top && scope == LrpScope::LastCrossText {
                // The pass ends here: the projections' rules below the cam would feed nothing.
                let cam = layer
                    .cross
                    .relprop_cam(be, &a.t2i, t_in, &rt1, &s.text_to_image)?;
                (slot.0, slot.2) = (Some(cam), Some(c_lang));
                return Ok(out);
            }
            let t2i = layer
                .cross
                .relprop(be, &a.t2i, t_in, v_in, &rt1, &s.text_to_image)?;
            if k == top {
                // No relevance on the image side yet: every rule there gives zeros, and the
                // clones merge the text side's relevance alone.
                rt = clone_query_side(be, t_in, &t2i, &be.zeros(be.len(t_in))?)?;
                rv = be.zeros(be.len(v_in))?;
                be.lrp_clone(&mut rv, v_in, &[&t2i.context])?;
                let zeros = |len| a.image.as_ref().map(|_| be.zeros(len)).transpose();
                *slot = (
                    Some(t2i.cam),
                    zeros(s.image_to_text.probs_len())?,
                    Some(c_lang),
                    zeros(s.image.probs_len())?,
                );
                continue;
            }
            let img = a.image();
            let rv2 = layer
                .visn_ffn
                .relprop(be, &img.visn_ffn, &img.visn_self.out, &rv, batch)?;
            let (c_visn, rv1) = self_attention_relprop(
                be,
                &layer.visn_self,
                &img.visn_self,
                &img.i2t.out,
                &rv2,
                &s.image,
            )?;
            let i2t = layer
                .cross
                .relprop(be, &img.i2t, v_in, t_in, &rv1, &s.image_to_text)?;
            rt = clone_query_side(be, t_in, &t2i, &i2t.context)?;
            rv = clone_query_side(be, v_in, &i2t, &t2i.context)?;
            *slot = (Some(t2i.cam), Some(i2t.cam), Some(c_lang), Some(c_visn));
        }
        if scope == LrpScope::Every {
            let visn = Self::self_stack_relprop(be, &self.visn, &f.visn, &f.image0, rv, &s.image)?;
            out.visn = visn.into_iter().map(Some).collect();
        }
        let lang = Self::self_stack_relprop(be, &self.lang, &f.lang, &f.text0, rt, &s.text)?;
        out.lang = lang.into_iter().map(Some).collect();
        Ok(out)
    }

    /// LRP through a stack of self-attention layers over `input`; relevance at every layer's
    /// probabilities, first layer first. Stops at the first layer's input.
    fn self_stack_relprop(
        be: &B,
        layers: &[SelfLayer<B>],
        acts: &[SelfActs<B::Buf>],
        input: &B::Buf,
        r_out: B::Buf,
        shape: &AttentionShape,
    ) -> Result<Vec<B::Buf>, ModelError> {
        let mut cams = Vec::with_capacity(layers.len());
        let mut r = r_out;
        for (i, (layer, a)) in layers.iter().zip(acts).enumerate().rev() {
            let x = if i == 0 { input } else { &acts[i - 1].ffn.out };
            let r_att = layer
                .ffn
                .relprop(be, &a.ffn, &a.attention.out, &r, shape.batch)?;
            if i == 0 {
                // Nothing reads relevance below the first layer: its cam alone.
                cams.push(
                    layer
                        .attention
                        .relprop_cam(be, &a.attention, x, &r_att, shape)?,
                );
                break;
            }
            let (cam, rx) =
                self_attention_relprop(be, &layer.attention, &a.attention, x, &r_att, shape)?;
            cams.push(cam);
            r = rx;
        }
        cams.reverse();
        Ok(cams)
    }

    fn assemble(
        f: Forward<B::Buf>,
        inputs: &LxmertInputs,
        targets: Option<Vec<usize>>,
        grads: PerModule<Option<B::Buf>>,
        cams: PerModule<Option<B::Buf>>,
        heads: usize,
    ) -> LxmertTrace<B::Buf> {
        let record = |acts: Vec<SelfActs<B::Buf>>,
                      grads: Vec<Option<B::Buf>>,
                      cams: Vec<Option<B::Buf>>|
         -> Vec<LayerTrace<B::Buf>> {
            acts.into_iter()
                .zip(grads.into_iter().zip(cams))
                .map(|(a, (g, c))| LayerTrace {
                    attention: a.attention.probs,
                    attention_grad: g,
                    relevance: c,
                    output: a.ffn.out,
                    means: Vec::new(),
                    fiedlers: Vec::new(),
                    weighted: Vec::new(),
                })
                .collect()
        };
        let module = |attention, (g, c)| AttentionRecord {
            attention,
            attention_grad: g,
            relevance: c,
            means: Vec::new(),
        };
        let cross = f
            .cross
            .into_iter()
            .zip(grads.cross.into_iter().zip(cams.cross))
            .map(
                |(a, ((g0, g1, g2, g3), (c0, c1, c2, c3)))| CrossLayerTrace {
                    text_to_image: module(a.t2i.probs, (g0, c0)),
                    lang_self: module(a.lang_self.probs, (g2, c2)),
                    lang_output: a.lang_ffn.out,
                    lang_fiedlers: Vec::new(),
                    image: a.image.map(|i| ImageBranchTrace {
                        image_to_text: module(i.i2t.probs, (g1, c1)),
                        visn_self: module(i.visn_self.probs, (g3, c3)),
                        visn_output: i.visn_ffn.out,
                        visn_fiedlers: Vec::new(),
                    }),
                },
            )
            .collect();
        LxmertTrace {
            lang: record(f.lang, grads.lang, cams.lang),
            visn: record(f.visn, grads.visn, cams.visn),
            cross,
            output: f.output,
            targets,
            heads,
            seq_len: inputs.seq_len,
            regions: inputs.regions,
            lengths: inputs.lengths.clone(),
            kept: None,
        }
    }

    /// Backward through a stack of self-attention layers; ∂y/∂A per layer, first layer first.
    fn self_stack_backward(
        be: &B,
        layers: &[SelfLayer<B>],
        acts: &[SelfActs<B::Buf>],
        dout: B::Buf,
        shape: &AttentionShape,
    ) -> Result<Vec<B::Buf>, ModelError> {
        let mut grads = Vec::with_capacity(layers.len());
        let mut dy = dout;
        for (l, (layer, a)) in layers.iter().zip(acts).enumerate().rev() {
            let d_att = layer.ffn.backward(be, &a.ffn, &dy)?;
            if l == 0 {
                // Nothing reads the embeddings' gradient: stop at the probabilities.
                grads.push(
                    layer
                        .attention
                        .probs_gradient(be, &a.attention, &d_att, shape)?,
                );
                break;
            }
            let (g, dx_q, dx_kv) = layer.attention.backward(be, &a.attention, &d_att, shape)?;
            grads.push(g);
            dy = dx_q;
            be.add_assign(&mut dy, &dx_kv)?;
        }
        grads.reverse();
        Ok(grads)
    }
}

/// LRP through a self-attention sublayer over x: its relevance at the probabilities, and at
/// x by the clone rule over the query, key|value and residual uses.
fn self_attention_relprop<B: Backend>(
    be: &B,
    sub: &AttentionSublayer<B>,
    a: &AttentionActivations<B::Buf>,
    x: &B::Buf,
    r_out: &B::Buf,
    shape: &AttentionShape,
) -> Result<(B::Buf, B::Buf), ModelError> {
    let r = sub.relprop(be, a, x, x, r_out, shape)?;
    let mut rx = be.zeros(be.len(x))?;
    be.lrp_clone(&mut rx, x, &[&r.query, &r.context, &r.residual])?;
    Ok((r.cam, rx))
}

/// Relevance at a cross layer's stream input: the clone of its query and residual uses in
/// its own direction, merged (clone) with its use as the other direction's context.
fn clone_query_side<B: Backend>(
    be: &B,
    x: &B::Buf,
    own: &AttentionRelevance<B::Buf>,
    as_context: &B::Buf,
) -> Result<B::Buf, ModelError> {
    let mut inner = be.zeros(be.len(x))?;
    be.lrp_clone(&mut inner, x, &[&own.query, &own.residual])?;
    let mut rx = be.zeros(be.len(x))?;
    be.lrp_clone(&mut rx, x, &[&inner, as_context])?;
    Ok(rx)
}

impl LxmertConfig {
    /// `unc-nlp/lxmert-vqa-uncased`: 9/5/5 layers, 768 wide, 2048-d region features, 3129
    /// answers (the size the seed's numbers are for).
    pub fn base_vqa() -> Self {
        Self {
            vocab_size: 30522,
            hidden_size: 768,
            num_attention_heads: 12,
            intermediate_size: 3072,
            hidden_act: Activation::Gelu,
            l_layers: 9,
            r_layers: 5,
            x_layers: 5,
            visual_feat_dim: 2048,
            visual_pos_dim: 4,
            max_position_embeddings: 512,
            type_vocab_size: 2,
            id2label: (0..3129).map(|i| format!("LABEL_{i}")).collect(),
            pad_token_id: 0,
            dtype: None,
            answer_probability: AnswerProbability::Sigmoid,
        }
    }
}
