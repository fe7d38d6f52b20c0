//! CLIP readouts (spec §C.10 in fiedler's form, §H): image relevance from the class-token
//! row of the vision tower over the patches; text relevance from the end-of-text row of the
//! text tower over the word tokens (start/end tokens and padding excluded).

use rayon::prelude::*;

use crate::explain::attention::{chefer, grad_cam, raw_attention, rollout};
use crate::explain::matrix::Square;
use crate::explain::spectral::{dsmi, dsmi_grad, GradWeighting, SpectralRelevance};
use crate::explain::view::SampleView;
use crate::explain::{resolve_start, ExplainError, Method, MethodOptions};
use crate::model::clip::ClipTrace;

/// Graphs whose λ₃ − λ₂ falls below this have no well-defined Fiedler vector.
const MIN_GAP: f64 = 1e-3;

/// One method's explanation of one (image, text) pair.
#[derive(Debug, Clone)]
pub struct PairExplanation {
    pub method: Method,
    /// The pair score exp(logit_scale)·cos(image, text).
    pub score: f32,
    /// One value per patch, raster order, raw (not normalised).
    pub image_relevance: Vec<f32>,
    /// Patch grid (rows, columns).
    pub image_grid: (usize, usize),
    /// One value per real token of the text (start/end tokens included, with 0).
    pub text_relevance: Vec<f32>,
    /// Which of those tokens the method scores (the words; not the start/end tokens).
    pub text_scored: Vec<bool>,
    /// Spectral graphs with a near-degenerate Fiedler vector, e.g. "text layer 2 (gap 4e-5)".
    pub degenerate_graphs: Vec<String>,
}

/// Which tokens of each tower a CLIP explanation covers.
struct Readout {
    row: usize,
    tokens: Vec<usize>,
}

fn from_matrix(r: &Square, readout: &Readout) -> Vec<f32> {
    readout
        .tokens
        .iter()
        .map(|&j| r.at(readout.row, j))
        .collect()
}

/// Relevance of one tower of one pair over the readout's tokens.
fn tower_relevance(
    method: Method,
    view: &SampleView,
    readout: &Readout,
    start: usize,
    opts: &MethodOptions,
    degenerate: &mut Vec<String>,
    tower: &'static str,
) -> Result<Vec<f32>, ExplainError> {
    let mut spectral = |r: Result<SpectralRelevance, _>| -> Result<Vec<f32>, ExplainError> {
        let r = r.map_err(|source| ExplainError::Spectral {
            tower,
            pair: 0,
            source,
        })?;
        let first = view.layers() - r.graphs.len();
        for (i, g) in r.graphs.iter().enumerate() {
            if g.tokens >= 3 && g.is_degenerate(MIN_GAP) {
                degenerate.push(format!(
                    "{tower} layer {} (gap {:.1e})",
                    first + i,
                    g.gap.unwrap_or(0.0)
                ));
            }
        }
        Ok(r.values)
    };
    Ok(match method {
        Method::RawAttn => from_matrix(&raw_attention(view), readout),
        Method::GradCam => from_matrix(&grad_cam(view), readout),
        Method::Rollout => from_matrix(&rollout(view, start), readout),
        Method::Chefer => from_matrix(&chefer(view, start), readout),
        Method::Dsmi => spectral(dsmi(view, &readout.tokens, &opts.graph))?,
        Method::DsmiGrad => spectral(dsmi_grad(
            view,
            &readout.tokens,
            GradWeighting::Gradient,
            &opts.graph,
        ))?,
        Method::DsmiGradAttn => spectral(dsmi_grad(
            view,
            &readout.tokens,
            GradWeighting::GradientTimesAttention,
            &opts.graph,
        ))?,
    })
}

/// Explains every pair of a traced batch with every method: result[pair][method].
pub fn explain_clip(
    trace: &ClipTrace<Vec<f32>>,
    methods: &[Method],
    opts: &MethodOptions,
) -> Result<Vec<Vec<PairExplanation>>, ExplainError> {
    let start_vision = resolve_start(opts.start_layer, trace.vision.layers.len(), "--start-layer")?;
    let start_text = resolve_start(
        opts.start_layer_text,
        trace.text.layers.len(),
        "--start-layer-text",
    )?;
    let patches = trace.vision.tokens - 1;
    let image = Readout {
        row: 0,
        tokens: (1..=patches).collect(),
    };
    (0..trace.output.pair_scores.len())
        .into_par_iter()
        .map(|b| {
            let eos = trace.output.eos_positions[b];
            let text = Readout {
                row: eos,
                tokens: (1..eos).collect(),
            };
            let vision_view = SampleView::new(&trace.vision, b);
            let text_view = SampleView::new(&trace.text, b);
            methods
                .iter()
                .map(|&method| {
                    let mut degenerate = Vec::new();
                    let pair_error = |e: ExplainError| match e {
                        ExplainError::Spectral { tower, source, .. } => ExplainError::Spectral {
                            tower,
                            pair: b,
                            source,
                        },
                        other => other,
                    };
                    let image_relevance = tower_relevance(
                        method,
                        &vision_view,
                        &image,
                        start_vision,
                        opts,
                        &mut degenerate,
                        "image",
                    )
                    .map_err(pair_error)?;
                    let words = tower_relevance(
                        method,
                        &text_view,
                        &text,
                        start_text,
                        opts,
                        &mut degenerate,
                        "text",
                    )
                    .map_err(pair_error)?;
                    let mut text_relevance = vec![0.0; text_view.n];
                    let mut text_scored = vec![false; text_view.n];
                    for (&j, v) in text.tokens.iter().zip(words) {
                        text_relevance[j] = v;
                        text_scored[j] = true;
                    }
                    Ok(PairExplanation {
                        method,
                        score: trace.output.pair_scores[b],
                        image_relevance,
                        image_grid: trace.image_grid,
                        text_relevance,
                        text_scored,
                        degenerate_graphs: degenerate,
                    })
                })
                .collect()
        })
        .collect()
}
