//! From a sample's layers to relevance vectors, for any family: which row of a relevance
//! matrix to read and over which tokens (`Readout`), and, for the spectral methods, which
//! tokens form each graph (the same token set).

use crate::backend::RelevanceProduct;
use crate::explain::attention::{grad_cam_row, partial_lrp, product_row, raw_attention};
use crate::explain::matrix::Matrix;
use crate::explain::spectral::{dsmi, dsmi_grad, GradWeighting, SpectralRelevance};
use crate::explain::view::SampleView;
use crate::explain::{ExplainError, Method, MethodOptions};
use crate::linalg::Fiedler;

/// Graphs whose λ₃ − λ₂ falls below this have no well-defined Fiedler vector.
const MIN_GAP: f64 = 1e-3;

/// "{label} (gap 4.0e-5)" for every graph of `graphs` (of 3 tokens or more) without a
/// well-defined Fiedler vector; `label(i)` names the i-th ("text layer 2").
pub(crate) fn degenerate_graphs<'a>(
    graphs: impl IntoIterator<Item = (usize, &'a Fiedler)>,
    label: impl Fn(usize) -> String,
) -> Vec<String> {
    graphs
        .into_iter()
        .filter(|(_, g)| g.tokens >= 3 && g.is_degenerate(MIN_GAP))
        .map(|(i, g)| format!("{} (gap {:.1e})", label(i), g.gap.unwrap_or(0.0)))
        .collect()
}

/// One relevance vector to read from a sample's view: row `row` of the method's matrix over
/// the columns `tokens`; for spectral methods, the graph over `tokens`. Indices are view
/// positions (see [`SampleView`]); `name` labels warnings ("image", "text").
pub struct Readout {
    pub name: &'static str,
    pub row: usize,
    pub tokens: Vec<usize>,
}

/// Relevance of every readout of one sample; near-degenerate graphs are appended to
/// `degenerate` as "text layer 2 (gap 4e-5)".
pub fn relevance(
    method: Method,
    view: &SampleView,
    readouts: &[Readout],
    start: usize,
    opts: &MethodOptions,
    degenerate: &mut Vec<String>,
) -> Result<Vec<Vec<f32>>, ExplainError> {
    let matrix = match method {
        Method::RawAttn => Some(raw_attention(view)),
        Method::PartialLrp => Some(partial_lrp(view)),
        _ => None,
    };
    readouts
        .iter()
        .map(|r| {
            let row = match (&matrix, method.product()) {
                (Some(m), _) => return Ok(read_row(m, r)),
                (None, Some(product)) => formed_row(view, product, start, r.row),
                (None, None) if method == Method::GradCam => view
                    .head_rows(view.layers() - 1, r.row)
                    .map(|heads| grad_cam_row(&heads)),
                (None, None) => return spectral(method, view, r, opts, degenerate),
            };
            let row = row.ok_or(ExplainError::NotKept(method))?;
            Ok(r.tokens.iter().map(|&j| row[j]).collect())
        })
        .collect()
}

/// Row `row` of `product` from layer `start` on: as the backend formed it where the trace
/// kept it, else formed here from the kept means; `None` where the trace has neither.
fn formed_row(
    view: &SampleView,
    product: RelevanceProduct,
    start: usize,
    row: usize,
) -> Option<Vec<f32>> {
    match view.product_row(product, start, row) {
        Some(kept) => Some(kept.to_vec()),
        None => view
            .has_means(product.mean())
            .then(|| product_row(view, product, start, row)),
    }
}

fn read_row(m: &Matrix, r: &Readout) -> Vec<f32> {
    r.tokens.iter().map(|&j| m.at(r.row, j)).collect()
}

fn spectral(
    method: Method,
    view: &SampleView,
    r: &Readout,
    opts: &MethodOptions,
    degenerate: &mut Vec<String>,
) -> Result<Vec<f32>, ExplainError> {
    let result: Result<SpectralRelevance, _> = match method {
        Method::DsmiGrad => dsmi_grad(view, &r.tokens, GradWeighting::Gradient, &opts.graph),
        Method::DsmiGradAttn => dsmi_grad(
            view,
            &r.tokens,
            GradWeighting::GradientTimesAttention,
            &opts.graph,
        ),
        _ => dsmi(view, &r.tokens, &opts.graph),
    };
    let s = result.map_err(|source| ExplainError::Spectral {
        tower: r.name,
        pair: 0,
        source,
    })?;
    let first = view.layers() - s.graphs.len();
    degenerate.extend(degenerate_graphs(s.graphs.iter().enumerate(), |i| {
        format!("{} layer {}", r.name, first + i)
    }));
    Ok(s.values)
}
