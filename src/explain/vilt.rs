//! ViLT readouts (spec §A.3 and §H): one joint encoder; relevance is read from row 0 (the
//! text [CLS] the pooler reads) over the real patch tokens (image relevance, raster order)
//! and over the word tokens (text relevance; [CLS] and [SEP] get 0). The spectral methods
//! build one graph per modality over those same tokens.

use rayon::prelude::*;

use crate::backend::Backend;
use crate::explain::readout::{relevance, Readout};
use crate::explain::view::SampleView;
use crate::explain::{
    check_kept, check_towers, depth, need_gradients, reads, resolve_start, spread_words,
    unused_start, with_readout_rows, Depth, ExplainError, Explanation, Method, MethodOptions,
};
use crate::model::vilt::{Vilt, ViltInputs, ViltTrace};
use crate::model::{ModelError, VqaTarget};
use crate::trace::{GraphSpec, Layers, Reads, RowSpec};

/// What `methods` read of the joint encoder, with the spectral methods' graphs (each
/// sample's patches and its word tokens) to solve and the rows the relevance products and
/// Grad-CAM read (row 0 over the sample's real tokens) to form where the trace lives, for
/// `ViltTrace::into_host_for`.
pub fn vilt_reads<Buf>(methods: &[Method], trace: &ViltTrace<Buf>, opts: &MethodOptions) -> Reads {
    let rows = || {
        trace
            .output
            .layouts
            .iter()
            .enumerate()
            .map(|(sample, layout)| RowSpec {
                sample,
                query: 0,
                tokens: layout.real_tokens(),
            })
            .collect()
    };
    let layers = trace.joint.layers.len();
    let all = with_readout_rows(
        reads(methods),
        rows,
        resolve_start(opts.start_layer, layers, "--start-layer"),
    );
    if all.features == Layers::None {
        return all;
    }
    let graphs = trace
        .output
        .layouts
        .iter()
        .enumerate()
        .flat_map(|(sample, layout)| {
            [
                GraphSpec {
                    sample,
                    tokens: layout.patch_tokens().collect(),
                },
                GraphSpec {
                    sample,
                    tokens: layout.word_tokens().collect(),
                },
            ]
        })
        .collect();
    all.with_graphs(graphs, opts.graph)
}

/// How deep the backward and the LRP pass over an encoder of `layers` layers must run for
/// `methods` (`Vilt::trace_from`, `Vilt::lrp_from`).
pub fn vilt_depth(methods: &[Method], layers: usize, opts: &MethodOptions) -> Depth<usize> {
    depth(
        methods,
        resolve_start(opts.start_layer, layers, "--start-layer"),
        layers,
    )
}

/// The trace `methods` read of the answers `target` names: the forward; the backward if any
/// method reads ∂y/∂A, only as deep as they read it (a target other than the predicted
/// answer, which the traced path resolves, takes a backward over the last layer at least);
/// the LRP pass if any reads relevance.
pub fn vilt_trace<B: Backend>(
    model: &Vilt<B>,
    be: &B,
    inputs: &ViltInputs,
    methods: &[Method],
    opts: &MethodOptions,
    target: &VqaTarget,
) -> Result<ViltTrace<B::Buf>, ModelError> {
    let layers = model.config.num_hidden_layers;
    let depth = vilt_depth(methods, layers, opts);
    let gradients = depth.gradients.or_else(|| {
        (need_gradients(methods) || *target != VqaTarget::Predicted)
            .then_some(layers.saturating_sub(1))
    });
    match (depth.relevance, gradients) {
        (Some(relevance), gradients) => model.lrp_from(be, inputs, target, gradients, relevance),
        (None, Some(from)) => model.trace_from(be, inputs, target, from),
        (None, None) => model.record(be, inputs),
    }
}

/// The first layer, of `layers`, that the relevance products start from; a start outside
/// the encoder, or one for a text tower it does not have, is refused.
pub fn vilt_start(opts: &MethodOptions, layers: usize) -> Result<usize, ExplainError> {
    unused_start(
        opts.start_layer_text,
        "--start-layer-text",
        "ViLT",
        "its one stream of layers starts at --start-layer",
    )?;
    resolve_start(opts.start_layer, layers, "--start-layer")
}

/// Explains every sample of a traced batch with every method: result[sample][method].
pub fn explain_vilt(
    trace: &ViltTrace<Vec<f32>>,
    methods: &[Method],
    opts: &MethodOptions,
) -> Result<Vec<Vec<Explanation>>, ExplainError> {
    let start = vilt_start(opts, trace.joint.layers.len())?;
    check_towers(methods, &[(&trace.joint, start)])?;
    check_kept(methods, &[&trace.joint])?;
    let labels = trace.output.labels;
    trace
        .output
        .layouts
        .par_iter()
        .enumerate()
        .map(|(b, layout)| {
            let real = layout.real_tokens();
            let patches_at = layout.text_len + 1;
            // Text view positions are padded positions (the text comes first).
            let words: Vec<usize> = layout.word_tokens().collect();
            let readouts = [
                Readout {
                    name: "image",
                    row: 0,
                    tokens: (patches_at..real.len()).collect(),
                },
                Readout {
                    name: "text",
                    row: 0,
                    tokens: words.clone(),
                },
            ];
            let view = SampleView::with_tokens(&trace.joint, b, real);
            let score = VqaTarget::score(&trace.targets, &trace.output.logits, labels, b);
            methods
                .iter()
                .map(|&method| {
                    let mut degenerate = Vec::new();
                    let mut r = relevance(method, &view, &readouts, start, opts, &mut degenerate)
                        .map_err(|e| e.for_sample(b))?;
                    let (text_relevance, text_scored) =
                        spread_words(layout.text_len, &words, r.remove(1));
                    // Over the grid: patches the sequence left out get 0.
                    let mut image_relevance = vec![0.0; layout.grid.0 * layout.grid.1];
                    for (&at, v) in layout.patch_index.iter().zip(r.remove(0)) {
                        image_relevance[at] = v;
                    }
                    Ok(Explanation {
                        method,
                        score,
                        image_relevance,
                        image_grid: layout.grid,
                        text_relevance,
                        text_scored,
                        degenerate_graphs: degenerate,
                    })
                })
                .collect()
        })
        .collect()
}
