//! CLIP readouts (spec §C.10 in fiedler's form, §H): image relevance from the class-token
//! row of the vision tower over the patches; text relevance from the end-of-text row of the
//! text tower over the word tokens (start/end tokens and padding excluded).

use rayon::prelude::*;

use crate::backend::Backend;
use crate::explain::readout::{relevance, Readout};
use crate::explain::view::SampleView;
use crate::explain::{
    check_kept, check_towers, depth, reads, resolve_start, spread_words, with_readout_rows, Depth,
    ExplainError, Explanation, Method, MethodOptions,
};
use crate::model::clip::{Clip, ClipInputs, ClipTrace, FirstLayers};
use crate::model::ModelError;
use crate::trace::{GraphSpec, Layers, Reads, RowSpec, TowerTrace};

/// What `methods` read of each tower (vision, text), with the spectral methods' graphs
/// (the patches; the word tokens of each caption) to solve and the rows the relevance
/// products and Grad-CAM read (the class token's; the end-of-text token's) to form where
/// the trace lives, for
/// `ClipTrace::into_host_for`.
pub fn clip_reads<Buf>(
    methods: &[Method],
    trace: &ClipTrace<Buf>,
    opts: &MethodOptions,
) -> (Reads, Reads) {
    let all = reads(methods);
    let (vision, text) = (&trace.vision, &trace.text);
    let vision_reads = with_readout_rows(
        all.clone(),
        || readout_rows(vision, |_| 0),
        resolve_start(opts.start_layer, vision.layers.len(), "--start-layer"),
    );
    let text_reads = with_readout_rows(
        all.clone(),
        || readout_rows(text, |sample| trace.output.eos_positions[sample]),
        resolve_start(
            opts.start_layer_text,
            text.layers.len(),
            "--start-layer-text",
        ),
    );
    if all.features == Layers::None {
        return (vision_reads, text_reads);
    }
    let patches = vision.tokens - 1;
    let vision_graphs = (0..vision.batch)
        .map(|sample| GraphSpec {
            sample,
            tokens: (1..=patches).collect(),
        })
        .collect();
    let text_graphs = trace
        .output
        .eos_positions
        .iter()
        .enumerate()
        .map(|(sample, &eos)| GraphSpec {
            sample,
            tokens: (1..eos).collect(),
        })
        .collect();
    (
        vision_reads.with_graphs(vision_graphs, opts.graph),
        text_reads.with_graphs(text_graphs, opts.graph),
    )
}

/// Each sample's row `query(sample)` over its real tokens (a prefix: right padding).
fn readout_rows<Buf>(tower: &TowerTrace<Buf>, query: impl Fn(usize) -> usize) -> Vec<RowSpec> {
    (0..tower.batch)
        .map(|sample| RowSpec {
            sample,
            query: query(sample),
            tokens: (0..tower.lengths[sample]).collect(),
        })
        .collect()
}

/// How deep the backward and the LRP pass over each tower (of `layers` = (vision, text)
/// layers) must run for `methods` (`Clip::trace_from`, `Clip::lrp_from`).
pub fn clip_depth(
    methods: &[Method],
    layers: (usize, usize),
    opts: &MethodOptions,
) -> Depth<FirstLayers> {
    let (vision, text) = layers;
    let v = depth(
        methods,
        resolve_start(opts.start_layer, vision, "--start-layer"),
        vision,
    );
    let t = depth(
        methods,
        resolve_start(opts.start_layer_text, text, "--start-layer-text"),
        text,
    );
    let both = |v: Option<usize>, t: Option<usize>| {
        Some(FirstLayers {
            vision: v?,
            text: t?,
        })
    };
    Depth {
        gradients: both(v.gradients, t.gradients),
        relevance: both(v.relevance, t.relevance),
    }
}

/// The trace `methods` read: the forward; the backward if any reads ∂y/∂A, only as deep as
/// they read it; the LRP pass if any reads relevance.
pub fn clip_trace<B: Backend>(
    model: &Clip<B>,
    be: &B,
    inputs: &ClipInputs,
    methods: &[Method],
    opts: &MethodOptions,
) -> Result<ClipTrace<B::Buf>, ModelError> {
    let depth = clip_depth(methods, model.layers(), opts);
    match depth {
        Depth {
            relevance: Some(relevance),
            gradients,
        } => model.lrp_from(be, inputs, gradients, relevance),
        Depth {
            gradients: Some(from),
            ..
        } => model.trace_from(be, inputs, None, from),
        _ => model.record(be, inputs),
    }
}

/// The first layers of the (vision, text) towers, of `layers` layers each, that the
/// relevance products start from; a start outside its tower is refused.
pub fn clip_starts(
    opts: &MethodOptions,
    layers: (usize, usize),
) -> Result<(usize, usize), ExplainError> {
    Ok((
        resolve_start(opts.start_layer, layers.0, "--start-layer")?,
        resolve_start(opts.start_layer_text, layers.1, "--start-layer-text")?,
    ))
}

/// Explains every pair of a traced batch with every method: result[pair][method].
pub fn explain_clip(
    trace: &ClipTrace<Vec<f32>>,
    methods: &[Method],
    opts: &MethodOptions,
) -> Result<Vec<Vec<Explanation>>, ExplainError> {
    let (start_vision, start_text) =
        clip_starts(opts, (trace.vision.layers.len(), trace.text.layers.len()))?;
    check_towers(
        methods,
        &[(&trace.vision, start_vision), (&trace.text, start_text)],
    )?;
    check_kept(methods, &[&trace.vision, &trace.text])?;
    let patches = trace.vision.tokens - 1;
    let image = [Readout {
        name: "image",
        row: 0,
        tokens: (1..=patches).collect(),
    }];
    (0..trace.output.pair_scores.len())
        .into_par_iter()
        .map(|b| {
            let eos = trace.output.eos_positions[b];
            let text = [Readout {
                name: "text",
                row: eos,
                tokens: (1..eos).collect(),
            }];
            let vision_view = SampleView::new(&trace.vision, b);
            let text_view = SampleView::new(&trace.text, b);
            methods
                .iter()
                .map(|&method| {
                    let mut degenerate = Vec::new();
                    let mut image_relevance = relevance(
                        method,
                        &vision_view,
                        &image,
                        start_vision,
                        opts,
                        &mut degenerate,
                    )
                    .map_err(|e| e.for_sample(b))?;
                    let mut words =
                        relevance(method, &text_view, &text, start_text, opts, &mut degenerate)
                            .map_err(|e| e.for_sample(b))?;
                    let (text_relevance, text_scored) =
                        spread_words(text_view.n, &text[0].tokens, words.remove(0));
                    Ok(Explanation {
                        method,
                        score: trace.output.pair_scores[b],
                        image_relevance: image_relevance.remove(0),
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
