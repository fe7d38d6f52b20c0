//! Many graphs per call, of different sizes, with rayon threads across graphs.
//!
//! Each graph is solved sequentially on one thread, so a graph's result does not depend
//! on the batch it came in or on the thread count. This is the CPU twin of the CUDA
//! launch that gives each graph one thread block.

use rayon::prelude::*;

use super::affinity::Graph;
use super::error::SpectralError;
use super::solve::{Fiedler, GraphOptions, Solver};

/// One graph of a batch: its token features and mask, as [`super::fiedler`] takes them.
#[derive(Debug, Clone, Copy)]
pub struct GraphInput<'a> {
    /// `rows × dim` features, row-major.
    pub features: &'a [f32],
    /// Number of feature rows (tokens before masking).
    pub rows: usize,
    /// Feature width.
    pub dim: usize,
    /// Which rows take part; one entry per row.
    pub mask: &'a [bool],
}

/// The Fiedler vector of every graph, in input order; a bad graph gives its own error
/// and does not stop the others.
pub fn fiedler_batch(
    graphs: &[GraphInput<'_>],
    opts: &GraphOptions,
) -> Vec<Result<Fiedler, SpectralError>> {
    graphs
        .par_iter()
        .map(|g| super::fiedler(g.features, g.rows, g.dim, g.mask, opts))
        .collect()
}

/// `fiedler_batch` over every row of each graph (none masked out): `(features, rows)` with
/// the features `rows × dim`, row-major.
pub fn fiedler_unmasked(
    graphs: &[(&[f32], usize)],
    dim: usize,
    opts: &GraphOptions,
) -> Vec<Result<Fiedler, SpectralError>> {
    let mask = vec![true; graphs.iter().map(|&(_, rows)| rows).max().unwrap_or(0)];
    let inputs: Vec<GraphInput> = graphs
        .iter()
        .map(|&(features, rows)| GraphInput {
            features,
            rows,
            dim,
            mask: &mask[..rows],
        })
        .collect();
    fiedler_batch(&inputs, opts)
}

/// The Fiedler vector of every prebuilt graph, in input order.
pub fn solve_batch(graphs: &[Graph], solver: Solver) -> Vec<Result<Fiedler, SpectralError>> {
    graphs.par_iter().map(|g| g.fiedler(solver)).collect()
}
