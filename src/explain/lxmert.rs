//! The methods on LXMERT exactly as spec §C specifies them for the two-stream model
//! (`seed:lxmert/lxmert/src/ExplanationGenerator.py` and the DSMI generators), with fiedler's
//! defaults (§H): the predicted answer's logit as target unless the trace says otherwise,
//! every region in the image graphs, the matrix–vector form of DSMI+Grad.
//!
//! Readouts (§C.11): image = row 0 of R_ti (the text [CLS] over the regions); text = row 0 of
//! R_tt over the real text tokens with entry 0 set to 0 ([SEP] included). The spectral
//! methods score word tokens only and put 0 at [CLS]/[SEP].

use std::ops::Range;

use rayon::prelude::*;

use crate::backend::{cpu, HeadMean};
use crate::explain::attention::{grad_cam_row, rollout_step};
use crate::explain::matrix::Matrix;
use crate::explain::readout::degenerate_graphs;
use crate::explain::spectral::GradWeighting;
use crate::explain::view::HeadMaps;
use crate::explain::{
    check_gradients, check_relevance, spread_words, unused_start, ExplainError, Explanation,
    Method, MethodOptions,
};
use crate::linalg::{fiedler_unmasked, Fiedler};
use crate::model::lxmert::{
    word_tokens, AttentionRecord, GradScope, ImageBranchTrace, LrpScope, LxmertReads, LxmertTrace,
};
use crate::model::VqaTarget;
use crate::trace::LayerTrace;

/// One sample of a trace: its real text tokens and all regions.
struct Sample<'a> {
    trace: &'a LxmertTrace<Vec<f32>>,
    b: usize,
    /// Real text tokens ([CLS] … [SEP]).
    t: usize,
    /// Regions.
    n: usize,
    /// The cross layers' image branches, first layer first: every layer's but, in a trace
    /// taken for the methods, the last's.
    images: Vec<&'a ImageBranchTrace<Vec<f32>>>,
}

/// What the relevance rules weight the gradient with (§C rule 5): the attention
/// probabilities, or the LRP relevance at them.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Weighting {
    Attention,
    Relevance,
}

impl Weighting {
    /// mean_h((∇A ⊙ X)⁺) with X = A or R_A.
    fn rule5(self) -> HeadMean {
        match self {
            Weighting::Attention => HeadMean::PositiveGradientTimesAttention,
            Weighting::Relevance => HeadMean::PositiveGradientTimesRelevance,
        }
    }
}

/// Which stream a side of an attention module runs over.
#[derive(Clone, Copy)]
enum Stream {
    Text,
    Image,
}

impl<'a> Sample<'a> {
    fn real(&self, s: Stream) -> usize {
        match s {
            Stream::Text => self.t,
            Stream::Image => self.n,
        }
    }

    fn padded(&self, s: Stream) -> usize {
        match s {
            Stream::Text => self.trace.seq_len,
            Stream::Image => self.n,
        }
    }

    /// The head mean `kind` of a module whose queries run over `q` and keys over `k`
    /// (`HeadMaps::sample_mean`). explain_lxmert checked that the maps a kind reads are there.
    fn head_mean<'m>(
        &self,
        m: impl Into<HeadMaps<'m>>,
        q: Stream,
        k: Stream,
        kind: HeadMean,
    ) -> Matrix {
        let (qp, kp, qn, kn) = (self.padded(q), self.padded(k), self.real(q), self.real(k));
        let heads = self.trace.heads;
        let Some(padded) = m.into().sample_mean(kind, heads, qp * kp, self.b) else {
            return Matrix::zeros(qn, kn);
        };
        let mut out = Matrix::zeros(qn, kn);
        for (row, padded) in out
            .data
            .chunks_exact_mut(kn.max(1))
            .zip(padded.chunks(kp.max(1)))
        {
            row.copy_from_slice(&padded[..kn]);
        }
        out
    }

    /// Where this sample's per-head maps of `entries` each lie in a module's buffers.
    fn maps(&self, entries: usize) -> Range<usize> {
        let heads = self.trace.heads;
        self.b * heads * entries..(self.b + 1) * heads * entries
    }

    /// Rule 5 of §C: Ā = mean_h((∇A ⊙ A)⁺).
    fn rule5<'m>(&self, m: impl Into<HeadMaps<'m>>, q: Stream, k: Stream) -> Matrix {
        self.weighted_rule5(m, q, k, Weighting::Attention)
    }

    /// Rule 5 with A or the LRP relevance R_A: mean_h((∇A ⊙ X)⁺).
    fn weighted_rule5<'m>(
        &self,
        m: impl Into<HeadMaps<'m>>,
        q: Stream,
        k: Stream,
        w: Weighting,
    ) -> Matrix {
        self.head_mean(m, q, k, w.rule5())
    }

    fn mean_attention<'m>(&self, m: impl Into<HeadMaps<'m>>, q: Stream, k: Stream) -> Matrix {
        self.head_mean(m, q, k, HeadMean::Attention)
    }

    /// §C.5 at row 0: w_h = mean of ∇A_h over the real block, (mean_h w_h·A_h)⁺ over the
    /// real keys. A module recorded without gradients reads as 0.
    fn grad_cam_row(&self, rec: &AttentionRecord<Vec<f32>>, q: Stream, k: Stream) -> Vec<f32> {
        let (qp, kp, qn, kn) = (self.padded(q), self.padded(k), self.real(q), self.real(k));
        let Some(grad) = rec.attention_grad.as_deref() else {
            return vec![0.0; kn];
        };
        let maps = self.maps(qp * kp);
        let (queries, keys): (Vec<usize>, Vec<usize>) = ((0..qn).collect(), (0..kn).collect());
        grad_cam_row(&cpu::head_rows_of(
            &rec.attention[maps.clone()],
            &grad[maps],
            self.trace.heads,
            kp,
            &queries,
            &keys,
            0,
        ))
    }

    /// Real rows of a stream's layer output [padded, width].
    fn features(&self, output: &[f32], s: Stream, rows: std::ops::Range<usize>) -> Vec<f32> {
        let width = output.len() / (self.trace.lengths.len() * self.padded(s));
        let base = self.b * self.padded(s) * width;
        output[base + rows.start * width..base + rows.end * width].to_vec()
    }
}

/// handle_residual (eqs. 8–9): I + rownorm(R − I), from D = R − I. A zero row stays zero (the
/// seed divides 0/0 there).
fn residual_normalized(d: &Matrix) -> Matrix {
    let mut r = d.clone();
    r.row_normalize();
    r.add_identity();
    r
}

/// §C.1, `rm_no_lrp` (or `rm_with_lrp` when weighting with relevance), with R_tt and R_ii
/// kept as R − I (spec §H, precision).
fn chefer(s: &Sample, w: Weighting) -> (Vec<f32>, Vec<f32>) {
    use Stream::{Image, Text};
    let (t, n) = (s.t, s.n);
    let tr = s.trace;
    let (mut dtt, mut dii) = (Matrix::zeros(t, t), Matrix::zeros(n, n));
    let (mut rti, mut rit) = (Matrix::zeros(t, n), Matrix::zeros(n, t));
    // Self rule: R_ss ← R_ss + Ā·R_ss and R_sq ← R_sq + Ā·R_sq, from the same old values.
    let self_rule = |a: Matrix, d: &mut Matrix, r_cross: &mut Matrix| {
        let mut r_ss = d.clone();
        r_ss.add_identity();
        d.add_assign(&a.matmul(&r_ss));
        let delta = a.matmul(r_cross);
        r_cross.add_assign(&delta);
    };
    for layer in &tr.lang {
        self_rule(s.weighted_rule5(layer, Text, Text, w), &mut dtt, &mut rti);
    }
    for layer in &tr.visn {
        self_rule(s.weighted_rule5(layer, Image, Image, w), &mut dii, &mut rit);
    }
    let last = tr.cross.len().saturating_sub(1);
    for (k, x) in tr.cross.iter().enumerate() {
        // Co-attention: ΔR_ti = R̄_ttᵀ·Ā_ti·R̄_ii and ΔR_tt = Ā_ti·R_it (and the image side),
        // all from the state before this layer.
        let a_ti = s.weighted_rule5(&x.text_to_image, Text, Image, w);
        let d_ti = residual_normalized(&dtt)
            .transpose()
            .matmul(&a_ti)
            .matmul(&residual_normalized(&dii));
        let d_tt = a_ti.matmul(&rit);
        if k < last {
            let a_it = s.weighted_rule5(&s.images[k].image_to_text, Image, Text, w);
            let d_it = residual_normalized(&dii)
                .transpose()
                .matmul(&a_it)
                .matmul(&residual_normalized(&dtt));
            let d_ii = a_it.matmul(&rti);
            rit.add_assign(&d_it);
            dii.add_assign(&d_ii);
        }
        rti.add_assign(&d_ti);
        dtt.add_assign(&d_tt);
        self_rule(
            s.weighted_rule5(&x.lang_self, Text, Text, w),
            &mut dtt,
            &mut rti,
        );
        if k < last {
            self_rule(
                s.weighted_rule5(&s.images[k].visn_self, Image, Image, w),
                &mut dii,
                &mut rit,
            );
        }
    }
    (rti.row(0).to_vec(), dtt.row(0).to_vec())
}

/// §C.2: Transformer Attribution on the text self-attention list (cross attention ignored,
/// R_tt kept as R − I); image = Ā of the last cross layer's text→image map.
fn transformer_attribution(s: &Sample) -> (Vec<f32>, Vec<f32>) {
    use Stream::{Image, Text};
    let tr = s.trace;
    let rel = Weighting::Relevance;
    let mut dtt = Matrix::zeros(s.t, s.t);
    let text_layers = tr
        .lang
        .iter()
        .map(HeadMaps::from)
        .chain(tr.cross.iter().map(|x| HeadMaps::from(&x.lang_self)));
    for m in text_layers {
        let a = s.weighted_rule5(m, Text, Text, rel);
        let prod = a.matmul(&dtt);
        dtt.add_assign(&a);
        dtt.add_assign(&prod);
    }
    let last = &tr.cross[tr.cross.len() - 1];
    let rti = s.weighted_rule5(&last.text_to_image, Text, Image, rel);
    (rti.row(0).to_vec(), dtt.row(0).to_vec())
}

/// §C.3: partial LRP, mean_h R_A of the last cross layer's text→image and text self maps,
/// each min–max scaled over the whole matrix (a constant matrix becomes 0).
fn partial_lrp(s: &Sample) -> (Vec<f32>, Vec<f32>) {
    use Stream::{Image, Text};
    let last = &s.trace.cross[s.trace.cross.len() - 1];
    let mean = |r: &AttentionRecord<Vec<f32>>, q, k| {
        let mut m = s.head_mean(r, q, k, HeadMean::Relevance);
        m.min_max();
        m
    };
    let rti = mean(&last.text_to_image, Text, Image);
    let rtt = mean(&last.lang_self, Text, Text);
    (rti.row(0).to_vec(), rtt.row(0).to_vec())
}

/// §C.6: rollout over the text and image self-attention lists; R_ti = R_ttᵀ·Ā_ti·R_ii.
fn rollout(s: &Sample) -> (Vec<f32>, Vec<f32>) {
    use Stream::{Image, Text};
    let tr = s.trace;
    let last = tr.cross.len() - 1;
    let product = |mats: Vec<Matrix>, size: usize| {
        mats.into_iter()
            .fold(Matrix::identity(size), |r, m| rollout_step(m).matmul(&r))
    };
    let mut text_list: Vec<Matrix> = tr
        .lang
        .iter()
        .map(|l| s.mean_attention(l, Text, Text))
        .collect();
    text_list.extend(
        tr.cross[..last]
            .iter()
            .map(|x| s.mean_attention(&x.lang_self, Text, Text)),
    );
    let mut image_list: Vec<Matrix> = tr
        .visn
        .iter()
        .map(|r| s.mean_attention(r, Image, Image))
        .collect();
    image_list.extend(
        s.images[..last]
            .iter()
            .map(|x| s.mean_attention(&x.visn_self, Image, Image)),
    );
    let roll_t = product(text_list.clone(), s.t);
    let roll_i = product(image_list, s.n);
    let rti = roll_t
        .transpose()
        .matmul(&s.mean_attention(&tr.cross[last].text_to_image, Text, Image))
        .matmul(&roll_i);
    text_list.push(s.mean_attention(&tr.cross[last].lang_self, Text, Text));
    let rtt = product(text_list, s.t);
    (rti.row(0).to_vec(), rtt.row(0).to_vec())
}

/// Fiedler vectors of the cross layers' outputs: image graphs over every region, one per
/// image branch in the trace; text graphs over the word tokens, one per layer.
fn layer_fiedlers(
    s: &Sample,
    opts: &MethodOptions,
    stream: Stream,
) -> Result<Vec<Fiedler>, ExplainError> {
    let tr = s.trace;
    let name = match stream {
        Stream::Image => "image",
        Stream::Text => "text",
    };
    let spectral = |source| ExplainError::Spectral {
        tower: name,
        pair: s.b,
        source,
    };
    // A reduced trace holds them solved where it was recorded (explain_lxmert checked
    // that they were, with the options asked).
    if tr.kept.is_some() {
        let solved: Vec<&PerSampleResult> = match stream {
            Stream::Image => s.images.iter().map(|i| &i.visn_fiedlers[s.b]).collect(),
            Stream::Text => tr.cross.iter().map(|x| &x.lang_fiedlers[s.b]).collect(),
        };
        return solved
            .into_iter()
            .map(|r| r.clone().map_err(spectral))
            .collect();
    }
    let outputs: Vec<&[f32]> = match stream {
        Stream::Image => s.images.iter().map(|i| &i.visn_output[..]).collect(),
        Stream::Text => tr.cross.iter().map(|x| &x.lang_output[..]).collect(),
    };
    let rows = match stream {
        Stream::Image => 0..s.n,
        Stream::Text => word_tokens(s.t),
    };
    let width = outputs
        .first()
        .map_or(0, |o| o.len() / (tr.lengths.len() * s.padded(stream)));
    let features: Vec<Vec<f32>> = outputs
        .iter()
        .map(|o| s.features(o, stream, rows.clone()))
        .collect();
    let graphs: Vec<(&[f32], usize)> = features.iter().map(|f| (&f[..], rows.len())).collect();
    fiedler_unmasked(&graphs, width, &opts.graph)
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .map_err(spectral)
}

/// One sample's Fiedler solution as a reduced trace holds it.
type PerSampleResult = Result<Fiedler, crate::linalg::SpectralError>;

/// Whether `method` reads the Fiedler vectors of the cross layers' outputs.
fn is_spectral(method: Method) -> bool {
    matches!(
        method,
        Method::Dsmi | Method::DsmiGrad | Method::DsmiGradAttn
    )
}

/// What `methods` read of an LXMERT trace besides the head means, for
/// `LxmertTrace::into_host_for`: Grad-CAM the last cross layer's per-head text maps, the
/// spectral methods the Fiedler vectors of the cross layers' outputs (solved where the
/// trace lives, with `opts.graph`).
pub fn lxmert_reads(methods: &[Method], opts: &MethodOptions) -> LxmertReads {
    LxmertReads {
        last_layer_heads: methods.contains(&Method::GradCam),
        graphs: methods
            .iter()
            .any(|&m| is_spectral(m))
            .then_some(opts.graph),
    }
}

/// How far the backward must run for `methods` (`None`: no method reads ∂y/∂A).
pub fn grad_scope(methods: &[Method]) -> Option<GradScope> {
    methods
        .iter()
        .filter(|m| m.needs_gradients())
        .map(|m| match m {
            Method::GradCam => GradScope::LastCross,
            Method::DsmiGrad | Method::DsmiGradAttn => GradScope::Cross,
            Method::TransformerAttribution => GradScope::NoImageStack,
            _ => GradScope::Every,
        })
        .max()
}

/// How far the trace's backward ran (`None`: it did not).
fn gradient_scope(trace: &LxmertTrace<Vec<f32>>) -> Option<GradScope> {
    let c = Coverage::of(trace, |g, _| g.is_some())?;
    Some(match (c.cross, c.lang, c.visn) {
        (true, true, true) => GradScope::Every,
        (true, true, false) => GradScope::NoImageStack,
        (true, false, _) => GradScope::Cross,
        _ => GradScope::LastCross,
    })
}

/// How far the LRP pass must run for `methods` (`None`: no LRP method among them).
pub fn lrp_scope(methods: &[Method]) -> Option<LrpScope> {
    methods
        .iter()
        .filter_map(|m| match m {
            Method::PartialLrp => Some(LrpScope::LastCrossText),
            Method::TransformerAttribution => Some(LrpScope::NoImageStack),
            Method::CheferLrp => Some(LrpScope::Every),
            _ => None,
        })
        .max()
}

/// How far the trace's LRP pass ran (`None`: it did not).
fn relevance_scope(trace: &LxmertTrace<Vec<f32>>) -> Option<LrpScope> {
    let c = Coverage::of(trace, |_, r| r.is_some())?;
    Some(match (c.cross && c.lang, c.visn) {
        (true, true) => LrpScope::Every,
        (true, false) => LrpScope::NoImageStack,
        _ => LrpScope::LastCrossText,
    })
}

/// Which parts of a trace hold one pass's output, beyond the last cross layer's text
/// modules (which every scope of either pass covers).
struct Coverage {
    cross: bool,
    lang: bool,
    visn: bool,
}

impl Coverage {
    /// `None` when the last cross layer's text modules have nothing: the pass did not run.
    /// `has(∂y/∂A, relevance)` says whether a module holds the pass's output.
    fn of(
        trace: &LxmertTrace<Vec<f32>>,
        has: impl Fn(&Option<Vec<f32>>, &Option<Vec<f32>>) -> bool,
    ) -> Option<Self> {
        let module = |r: &AttentionRecord<Vec<f32>>| has(&r.attention_grad, &r.relevance);
        let layer = |l: &LayerTrace<Vec<f32>>| has(&l.attention_grad, &l.relevance);
        let top = trace.cross.last()?;
        if !module(&top.lang_self) || !module(&top.text_to_image) {
            return None;
        }
        // The first cross layer's cross-attention is left out: `GradScope::Cross` stops
        // above it.
        let cross = trace.cross.iter().enumerate().all(|(k, x)| {
            let image = x.image.as_ref();
            module(&x.lang_self)
                && image.is_none_or(|i| module(&i.visn_self))
                && (k == 0
                    || module(&x.text_to_image) && image.is_none_or(|i| module(&i.image_to_text)))
        });
        Some(Self {
            cross,
            lang: trace.lang.iter().all(layer),
            visn: trace.visn.iter().all(layer),
        })
    }
}

/// Refuses start layers: LXMERT's methods run over every layer of its three stacks.
pub fn lxmert_starts(opts: &MethodOptions) -> Result<(), ExplainError> {
    const EVERY_LAYER: &str =
        "its relevance maps and rollout run over every layer of its three stacks (spec §C)";
    unused_start(opts.start_layer, "--start-layer", "LXMERT", EVERY_LAYER)?;
    unused_start(
        opts.start_layer_text,
        "--start-layer-text",
        "LXMERT",
        EVERY_LAYER,
    )
}

/// Explains every sample of a traced batch with every method: result[sample][method].
pub fn explain_lxmert(
    trace: &LxmertTrace<Vec<f32>>,
    methods: &[Method],
    opts: &MethodOptions,
) -> Result<Vec<Vec<Explanation>>, ExplainError> {
    let images = check_trace(trace, methods, opts)?;
    (0..trace.lengths.len())
        .into_par_iter()
        .map(|b| {
            let s = Sample {
                trace,
                b,
                t: trace.lengths[b],
                n: trace.regions,
                images: images.clone(),
            };
            explain_sample(&s, methods, opts)
        })
        .collect()
}

/// That `trace` holds what `methods` read: start layers unused, per-head maps and graphs
/// where a reduced trace kept them, gradients and LRP relevance deep enough, and every
/// cross layer's image branch but the last's. Returns those branches.
fn check_trace<'t>(
    trace: &'t LxmertTrace<Vec<f32>>,
    methods: &[Method],
    opts: &MethodOptions,
) -> Result<Vec<&'t ImageBranchTrace<Vec<f32>>>, ExplainError> {
    lxmert_starts(opts)?;
    // A reduced trace holds every head mean, but the per-head maps and the spectral
    // graphs only as `lxmert_reads` asked for them.
    if let Some(kept) = trace.kept {
        let served = |m: Method| match m {
            Method::GradCam => kept.last_layer_heads,
            m if is_spectral(m) => kept.graphs == Some(opts.graph),
            _ => true,
        };
        if let Some(&m) = methods.iter().find(|&&m| !served(m)) {
            return Err(ExplainError::NotKept(m));
        }
    }
    let (gradients, relevance) = (gradient_scope(trace), relevance_scope(trace));
    check_gradients(methods, |m| grad_scope(&[m]) <= gradients)?;
    check_relevance(methods, |m| lrp_scope(&[m]) <= relevance)?;
    let last = trace.cross.len() - 1;
    if let Some(k) = trace.cross[..last].iter().position(|x| x.image.is_none()) {
        return Err(ExplainError::MissingImageBranch(k));
    }
    Ok(trace
        .cross
        .iter()
        .filter_map(|x| x.image.as_ref())
        .collect())
}

/// A reading of row 0 of an attention record whose queries and keys run over two streams
/// (`Sample::mean_attention`, `Sample::grad_cam_row`).
type Reading<'a> = dyn Fn(&AttentionRecord<Vec<f32>>, Stream, Stream) -> Vec<f32> + 'a;

/// Every method on one sample, in request order.
fn explain_sample(
    s: &Sample,
    methods: &[Method],
    opts: &MethodOptions,
) -> Result<Vec<Explanation>, ExplainError> {
    use Stream::{Image, Text};
    let trace = s.trace;
    let last = trace.cross.len() - 1;
    let score = VqaTarget::score(
        &trace.targets,
        &trace.output.logits,
        trace.output.labels,
        s.b,
    );
    let words: Vec<usize> = word_tokens(s.t).collect();
    // Every layer's graphs, once, when a spectral method reads them.
    let (image_graphs, text_graphs) = if methods.iter().any(|&m| is_spectral(m)) {
        (
            layer_fiedlers(s, opts, Image)?,
            layer_fiedlers(s, opts, Text)?,
        )
    } else {
        (Vec::new(), Vec::new())
    };
    // Row 0 (the text [CLS]) of the methods' matrices, with [CLS] itself unscored.
    let matrix_readout = |(image, mut text): (Vec<f32>, Vec<f32>)| {
        text[0] = 0.0;
        let scored = (0..text.len()).map(|j| j > 0).collect();
        (image, text, scored, Vec::new())
    };
    // Row 0 of the last cross layer's text self- and text→image attention, read by `rows`.
    let last_layer_rows = |rows: &Reading| {
        let x = &trace.cross[last];
        let text = rows(&x.lang_self, Text, Text);
        let image = rows(&x.text_to_image, Text, Image);
        matrix_readout((image, text))
    };
    Ok(methods
        .iter()
        .map(|&method| {
            let (image, text, scored, degenerate) = match method {
                Method::Chefer => matrix_readout(chefer(s, Weighting::Attention)),
                Method::CheferLrp => matrix_readout(chefer(s, Weighting::Relevance)),
                Method::TransformerAttribution => matrix_readout(transformer_attribution(s)),
                Method::PartialLrp => matrix_readout(partial_lrp(s)),
                Method::Rollout => matrix_readout(rollout(s)),
                Method::RawAttn => {
                    last_layer_rows(&|r, q, k| s.mean_attention(r, q, k).row(0).to_vec())
                }
                Method::GradCam => last_layer_rows(&|r, q, k| s.grad_cam_row(r, q, k)),
                Method::Dsmi | Method::DsmiGrad | Method::DsmiGradAttn => {
                    // Only the graphs the method reads are reported.
                    let (image_layers, text_layers) = graph_layers(method, last + 1);
                    let read = [
                        ("image", &image_graphs, image_layers),
                        ("text", &text_graphs, text_layers),
                    ];
                    let degenerate = read
                        .into_iter()
                        .flat_map(|(name, graphs, layers)| {
                            let read = graphs
                                .iter()
                                .enumerate()
                                .take(layers.end)
                                .skip(layers.start);
                            degenerate_graphs(read, |k| format!("{name} cross layer {k}"))
                        })
                        .collect();
                    let (image, word_values) = spectral(s, method, &image_graphs, &text_graphs);
                    let (text, scored) = spread_words(s.t, &words, word_values);
                    (image, text, scored, degenerate)
                }
            };
            Explanation {
                method,
                score,
                image_relevance: image,
                image_grid: (1, s.n),
                text_relevance: text,
                text_scored: scored,
                degenerate_graphs: degenerate,
            }
        })
        .collect())
}

/// The cross layers whose graphs a spectral method of §C.7–§C.9 reads, of `x`: (image, text).
/// DSMI reads the image output of layer X−2 and the text output of the last; the gradient
/// forms sum over image layers 0..X−2 (the last has no gradient) and text layers 0..X−1.
fn graph_layers(method: Method, x: usize) -> (Range<usize>, Range<usize>) {
    if method == Method::Dsmi {
        let image = x.saturating_sub(2);
        (image..image + 1, x - 1..x)
    } else {
        (0..x.saturating_sub(1), 0..x)
    }
}

/// §C.7–§C.9 over the graphs of [`graph_layers`]. Returns (image over regions, values over
/// the word tokens).
fn spectral(
    s: &Sample,
    method: Method,
    image: &[Fiedler],
    text: &[Fiedler],
) -> (Vec<f32>, Vec<f32>) {
    use Stream::{Image, Text};
    let (image_layers, text_layers) = graph_layers(method, s.trace.cross.len());
    if method == Method::Dsmi {
        return (
            image[image_layers.start].vector.clone(),
            text[text_layers.start].vector.clone(),
        );
    }
    let weighting = if method == Method::DsmiGrad {
        GradWeighting::Gradient
    } else {
        GradWeighting::GradientTimesAttention
    };
    let aggregate = |rec: &AttentionRecord<Vec<f32>>, q: Stream| match weighting {
        GradWeighting::Gradient => s.head_mean(rec, q, q, HeadMean::PositiveGradient),
        GradWeighting::GradientTimesAttention => s.rule5(rec, q, q),
    };
    let mut r_image = vec![0.0f32; s.n];
    let image_layers = s.images.iter().zip(image).take(image_layers.end);
    for (branch, f) in image_layers {
        let r = aggregate(&branch.visn_self, Image).matvec(&f.vector);
        r_image.iter_mut().zip(r).for_each(|(a, v)| *a += v);
    }
    let words: Vec<usize> = word_tokens(s.t).collect();
    let mut r_text = vec![0.0f32; words.len()];
    for (layer, f) in s.trace.cross.iter().zip(text).take(text_layers.end) {
        let r = aggregate(&layer.lang_self, Text)
            .select(&words, &words)
            .matvec(&f.vector);
        r_text.iter_mut().zip(r).for_each(|(a, v)| *a += v);
    }
    (r_image, r_text)
}
