//! The spectral family (spec §C.7–§C.9 in fiedler's form, §H): Fiedler vectors of a layer's
//! token-affinity graph, optionally weighted by that layer's attention gradients.

use crate::backend::HeadMean;
use crate::explain::view::SampleView;
use crate::linalg::{fiedler_unmasked, Fiedler, GraphOptions, SpectralError};

/// How each layer's Fiedler vector is weighted before the sum over layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GradWeighting {
    /// §C.8: Ḡ_l = mean_h((∇A_l)⁺).
    Gradient,
    /// §C.9: Ā_l = mean_h((∇A_l ⊙ A_l)⁺).
    GradientTimesAttention,
}

/// Relevance over the graph tokens plus the Fiedler solutions it came from (one per layer
/// used), so callers can flag degenerate graphs.
pub struct SpectralRelevance {
    pub values: Vec<f32>,
    pub graphs: Vec<Fiedler>,
}

fn layer_fiedlers(
    v: &SampleView,
    layers: &[usize],
    tokens: &[usize],
    opts: &GraphOptions,
) -> Result<Vec<Fiedler>, SpectralError> {
    let solved: Option<Vec<_>> = layers.iter().map(|&l| v.solved(l, tokens, opts)).collect();
    if let Some(solved) = solved {
        return solved.into_iter().cloned().collect();
    }
    let features: Vec<Vec<f32>> = layers.iter().map(|&l| v.features(l, tokens)).collect();
    let graphs: Vec<(&[f32], usize)> = features.iter().map(|f| (&f[..], tokens.len())).collect();
    fiedler_unmasked(&graphs, v.width(), opts)
        .into_iter()
        .collect()
}

/// DSMI (class-agnostic): |Fiedler| of the last layer's output over `tokens`.
pub fn dsmi(
    v: &SampleView,
    tokens: &[usize],
    opts: &GraphOptions,
) -> Result<SpectralRelevance, SpectralError> {
    let graphs = layer_fiedlers(v, &[v.layers() - 1], tokens, opts)?;
    Ok(SpectralRelevance {
        values: graphs[0].vector.clone(),
        graphs,
    })
}

/// DSMI+Grad / DSMI+Grad+Attn: Σ_l W_l·f_l over every layer, with W_l the head-aggregated
/// gradient (or gradient⊙attention) restricted to `tokens` × `tokens` and f_l the layer's
/// |Fiedler| — the matrix–vector form (bug B3 of the CLIP notebook not reproduced).
pub fn dsmi_grad(
    v: &SampleView,
    tokens: &[usize],
    weighting: GradWeighting,
    opts: &GraphOptions,
) -> Result<SpectralRelevance, SpectralError> {
    let layers: Vec<usize> = (0..v.layers()).collect();
    let graphs = layer_fiedlers(v, &layers, tokens, opts)?;
    let mut values = vec![0.0f32; tokens.len()];
    let kind = match weighting {
        GradWeighting::Gradient => HeadMean::PositiveGradient,
        GradWeighting::GradientTimesAttention => HeadMean::PositiveGradientTimesAttention,
    };
    for (&l, f) in layers.iter().zip(&graphs) {
        // Formed by the backend where it solved the graph (the same bits), else here.
        let r = match v.weighted(l, kind, tokens, opts) {
            Some(r) => r.to_vec(),
            None => v.mean(l, kind).select(tokens, tokens).matvec(&f.vector),
        };
        values.iter_mut().zip(r).for_each(|(acc, x)| *acc += x);
    }
    Ok(SpectralRelevance { values, graphs })
}
