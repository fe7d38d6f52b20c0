//! Errors of the spectral core: every bad input is named, never a panic or a silent NaN.

/// What went wrong while building an affinity graph or solving for its Fiedler vector.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SpectralError {
    /// The feature slice does not hold `rows × dim` values.
    #[error("features hold {len} values, but rows × dim = {rows} × {dim}")]
    FeatureShape { len: usize, rows: usize, dim: usize },
    /// The token mask does not have one entry per feature row.
    #[error("token mask has {mask} entries for {rows} feature rows")]
    MaskLength { mask: usize, rows: usize },
    /// A feature of a row that takes part in the graph is NaN or infinite.
    #[error("feature at row {row}, column {col} is {value}")]
    NonFiniteFeature { row: usize, col: usize, value: f32 },
    /// An affinity matrix given directly does not hold `n × n` values.
    #[error("affinity holds {len} values, but n × n = {n} × {n}")]
    AffinityShape { len: usize, n: usize },
    /// An affinity entry given directly is negative, NaN or infinite.
    #[error("affinity entry ({row}, {col}) is {value}; weights must be finite and ≥ 0")]
    BadWeight { row: usize, col: usize, value: f64 },
    /// An affinity matrix given directly is not symmetric.
    #[error("affinity is not symmetric: W[{row}][{col}] = {upper} but W[{col}][{row}] = {lower}")]
    Asymmetric {
        row: usize,
        col: usize,
        upper: f64,
        lower: f64,
    },
    /// faer's dense symmetric eigensolver did not converge.
    #[error("dense symmetric eigensolver (faer) did not converge")]
    DenseNoConvergence,
    /// `--solver` named something other than `dense` or `lanczos`.
    #[error("unknown solver {0:?}: expected \"dense\" or \"lanczos\"")]
    UnknownSolver(String),
}
