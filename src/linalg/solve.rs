//! The Fiedler vector of an affinity graph (spec §B steps 5–6) and the options and result
//! types the explanation methods use.
//!
//! With μ = 1 − λ, the generalised problem L v = λ D v becomes M u = μ u, and the Fiedler
//! vector (λ₂, the second smallest) is the top eigenvector of M once the trivial one,
//! D^1/2 1 (μ = 1, λ = 0), is deflated. Then v = D^-1/2 u satisfies vᵀ D v = uᵀ u = 1 — the
//! D-normalisation ARPACK gives the seed — and the result is |v|, as the seed returns it.
//!
//! Lanczos runs twice: once for (μ₂, u₂) to a tight tolerance, once more with u₂ locked
//! as well, from another start vector, for μ₃ only. The second run is what reveals a
//! repeated λ₂: a single Krylov space holds only one vector of a repeated eigenvalue's
//! eigenspace, so the second Ritz value of the first run would skip the copy.

use std::fmt;
use std::str::FromStr;

use super::affinity::Graph;
use super::blas::{dot, gemv};
use super::error::SpectralError;
use super::{dense, lanczos};

/// Residual tolerance of the Fiedler pair, ‖M u − μ u‖ ≤ this (‖M‖ ≤ 1). The eigenvector
/// error is about this over the gap μ₂ − μ₃, so even a gap of 1e-6 leaves |v| correct to
/// ~1e-4 relative.
const TOL_VECTOR: f64 = 1e-10;
/// Residual tolerance of the μ₃ run. An eigenvalue lies within the residual of a Ritz
/// value (and, away from clusters, within its square over the gap), so the reported gap
/// is within 1e-6 of the true one — ample for flagging degenerate graphs, at a third
/// fewer steps than the vector's tolerance.
const TOL_GAP: f64 = 1e-6;
/// Start-vector streams of the two Lanczos runs (fixed: results are deterministic).
const START_FIEDLER: u64 = 0xF1ED_1E70;
const START_GAP: u64 = 0x6A90_0003;

/// Which eigensolver computes the Fiedler vector (`--solver dense|lanczos`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Solver {
    /// Full symmetric eigendecomposition with faer, O(n³): the reference.
    Dense,
    /// Lanczos with full reorthogonalisation: the fast path, mirrored by the CUDA kernel.
    #[default]
    Lanczos,
}

impl FromStr for Solver {
    type Err = SpectralError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "dense" => Ok(Self::Dense),
            "lanczos" => Ok(Self::Lanczos),
            _ => Err(SpectralError::UnknownSolver(s.to_owned())),
        }
    }
}

impl fmt::Display for Solver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Dense => "dense",
            Self::Lanczos => "lanczos",
        })
    }
}

/// How a graph is built and solved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GraphOptions {
    /// L2-normalise the token features before the affinity (§B step 1). `false` is the
    /// CLIP-notebook variant, which uses the raw features.
    pub l2_normalize: bool,
    /// Which eigensolver to use.
    pub solver: Solver,
}

impl Default for GraphOptions {
    /// Normalised rows (fiedler's default for every family, §H) and Lanczos.
    fn default() -> Self {
        Self {
            l2_normalize: true,
            solver: Solver::Lanczos,
        }
    }
}

/// The Fiedler vector of one graph and the spectrum around it.
///
/// Conventions for the small and degenerate cases (never NaN, never a panic):
/// - no token selected: `vector` is all zeros, `lambda2` and `gap` are `None`;
/// - one token: there is no second eigenvalue; the vector is that token's only (trivial)
///   eigenvector, D-normalised: 1/√d₀, which is 1 for graphs built from features (W₀₀ = 1
///   after the division by max W), and `lambda2` and `gap` are `None`;
/// - two tokens: `lambda2` is defined (λ₂ = 2w/(1 + w) for two unit rows with cosine
///   w ≥ 0, and 0 for w ≤ 0), `gap` is `None` (there is no λ₃);
/// - a disconnected graph: λ₂ = 0. With two components the vector is unique (it is
///   constant on each, D-orthogonal to 1); with more, λ₂ = 0 is repeated, `gap` is 0, and
///   the vector is one deterministic member of the eigenspace (Lanczos: the projection of
///   its fixed start vector);
/// - every affinity zero (e.g. all features zero): L = D = I, every vector is an
///   eigenvector of λ = 1; the vector is uniform, 1/√n, λ₂ = 1 and `gap` = 0;
/// - an all-zero feature row is an isolated node: its degree is guarded to 1, it adds the
///   eigenvalue λ = 1 with eigenvector e_i, and it gets 0 whenever λ₂ < 1.
#[derive(Debug, Clone, PartialEq)]
pub struct Fiedler {
    /// |v| with vᵀ D v = 1, one entry per feature row; 0 at rows outside the token mask.
    /// This is what the seed returns and what the methods use.
    pub vector: Vec<f32>,
    /// v itself, before the absolute value, with the sign fixed so that its largest-magnitude
    /// entry is positive (the seed's commented-out `handle_fev`). Its sign pattern is the
    /// spectral bipartition of the tokens.
    pub signed: Vec<f32>,
    /// Number of tokens that took part (mask entries that are true).
    pub tokens: usize,
    /// λ₂, the second smallest eigenvalue of L v = λ D v; `None` with fewer than 2 tokens.
    pub lambda2: Option<f64>,
    /// λ₃ − λ₂ (≥ 0); `None` with fewer than 3 tokens. Near 0, the Fiedler vector is not
    /// well defined and small changes in the features can rotate it.
    pub gap: Option<f64>,
    /// ‖M u − μ₂ u‖ for the returned unit vector u = D^1/2 v (‖M‖ ≤ 1): a bound on the
    /// error of λ₂. Equivalently ‖D^-1/2 (L v − λ₂ D v)‖.
    pub residual: f64,
    /// Lanczos steps (matrix–vector products) over both runs; 0 for the dense solver.
    pub iterations: usize,
}

impl Fiedler {
    /// True when the vector is not well defined: fewer than two tokens, or λ₃ − λ₂ below
    /// `min_gap`. Two tokens are never degenerate (their λ₂ is simple).
    pub fn is_degenerate(&self, min_gap: f64) -> bool {
        self.lambda2.is_none() || self.gap.is_some_and(|g| g < min_gap)
    }
}

impl Graph {
    /// The Fiedler vector of this graph with the given solver (spec §B steps 5–6).
    pub fn fiedler(&self, solver: Solver) -> Result<Fiedler, SpectralError> {
        let n = self.len();
        let no_spectrum = |values: Vec<f64>| Fiedler {
            vector: self.scatter(&values),
            signed: self.scatter(&values),
            tokens: n,
            lambda2: None,
            gap: None,
            residual: 0.0,
            iterations: 0,
        };
        if n == 0 {
            return Ok(no_spectrum(Vec::new()));
        }
        if n == 1 {
            return Ok(no_spectrum(vec![self.inv_sqrt_degree[0]]));
        }
        let Some(trivial) = &self.trivial else {
            // No eigenvalue 0: all weights vanish (below the degree guard). Any vector is an
            // eigenvector to within that tiny weight; take the uniform one.
            let u = vec![1.0 / (n as f64).sqrt(); n];
            let mu = self.rayleigh(&u);
            return Ok(self.finish(&u, (n >= 3).then_some(mu), 0));
        };
        match solver {
            Solver::Lanczos => {
                let first =
                    lanczos::top_ritz_pair(&self.m, n, &[trivial], START_FIEDLER, TOL_VECTOR, true);
                let Some(first) = first else {
                    // Only reachable if the complement of q₀ is numerically empty; n ≥ 2
                    // makes it at least one-dimensional.
                    return Ok(self.finish(trivial, None, 0));
                };
                let locked = [trivial.as_slice(), &first.vector];
                let second = lanczos::top_ritz_pair(&self.m, n, &locked, START_GAP, TOL_GAP, false);
                let steps = first.steps + second.as_ref().map_or(0, |s| s.steps);
                Ok(self.finish(&first.vector, second.map(|s| s.value), steps))
            }
            Solver::Dense => {
                let top = dense::top_two(&self.m, n, trivial)?;
                Ok(self.finish(&top.vector, top.mu3, 0))
            }
        }
    }

    /// uᵀ M u for a unit vector u.
    fn rayleigh(&self, u: &[f64]) -> f64 {
        let mut mu = vec![0.0; u.len()];
        gemv(&self.m, u, &mut mu);
        dot(u, &mu)
    }

    /// From a unit vector u of the symmetric problem (and μ₃, when known) to the reported
    /// result: μ₂ as the Rayleigh quotient (accurate to the residual squared), the residual
    /// itself, and |v| = |D^-1/2 u|.
    fn finish(&self, u: &[f64], mu3: Option<f64>, iterations: usize) -> Fiedler {
        let n = u.len();
        let mut mu = vec![0.0; n];
        gemv(&self.m, u, &mut mu);
        let rayleigh = dot(u, &mu);
        let residual = mu
            .iter()
            .zip(u)
            .map(|(a, b)| (a - rayleigh * b).powi(2))
            .sum::<f64>()
            .sqrt();
        let mut v: Vec<f64> = u
            .iter()
            .zip(&self.inv_sqrt_degree)
            .map(|(x, s)| x * s)
            .collect();
        let largest = v.iter().copied().fold(
            0.0f64,
            |best, x| if x.abs() > best.abs() { x } else { best },
        );
        if largest < 0.0 {
            v.iter_mut().for_each(|x| *x = -*x);
        }
        let magnitude: Vec<f64> = v.iter().map(|x| x.abs()).collect();
        Fiedler {
            vector: self.scatter(&magnitude),
            signed: self.scatter(&v),
            tokens: n,
            // λ = 1 − μ; clamp the rounding below the exact bound λ ≥ 0 (L is semidefinite).
            lambda2: Some((1.0 - rayleigh).max(0.0)),
            // λ₃ − λ₂ = μ₂ − μ₃; a repeated μ₂ can come out a rounding error below 0.
            gap: mu3.map(|mu3| (rayleigh - mu3).max(0.0)),
            residual,
            iterations,
        }
    }
}

/// The Fiedler vector of one set of token features (spec §B): `features` is `rows × dim`,
/// row-major; `mask[r]` says whether row r takes part. The result has one entry per row.
pub fn fiedler(
    features: &[f32],
    rows: usize,
    dim: usize,
    mask: &[bool],
    opts: &GraphOptions,
) -> Result<Fiedler, SpectralError> {
    Graph::from_features(features, rows, dim, mask, opts.l2_normalize)?.fiedler(opts.solver)
}
