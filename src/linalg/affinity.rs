//! Affinity graphs over token features: spec §B steps 1–4, in the symmetric form the
//! eigensolvers use.
//!
//! From features F (rows × dim) and a token mask:
//! 1. keep the masked rows (the caller says which tokens take part: no perfect-square
//!    guessing, bug B4) and, unless the CLIP-notebook variant is asked for, L2-normalise
//!    them the way `torch.nn.functional.normalize` does (x / max(‖x‖, 1e-12), so an
//!    all-zero row stays zero);
//! 2. W = max(F Fᵀ, 0) / max(W) — skipped when W is all zero;
//! 3. dᵢ = Σⱼ Wᵢⱼ, and any dᵢ < 1e-12 is set to 1 (the seed's guard);
//! 4. L = D − W is never formed: the generalised problem L v = λ D v is solved as the
//!    symmetric one M u = μ u with M = D^-1/2 W D^-1/2, μ = 1 − λ and v = D^-1/2 u.
//!
//! Everything is computed in f64 (F Fᵀ through faer's triangular product). The seed forms
//! W in f32; the difference is below the f32 rounding of its own result.

use faer::linalg::matmul::triangular::{matmul, BlockStructure};
use faer::{Accum, Mat, MatRef, Par};

use super::error::SpectralError;

/// Rows whose norm is below this are left as they are by L2 normalisation (torch's eps).
const NORMALIZE_EPS: f64 = 1e-12;
/// Degrees below this are replaced by 1 (§B step 3).
const DEGREE_GUARD: f64 = 1e-12;

/// The affinity graph of one set of tokens, ready for an eigensolver.
#[derive(Debug, Clone)]
pub struct Graph {
    /// Length of the per-row output (the number of feature rows, masked or not).
    rows: usize,
    /// Input row of each node, in order.
    nodes: Vec<usize>,
    /// M = D^-1/2 W D^-1/2, row-major, nodes × nodes.
    pub(crate) m: Vec<f64>,
    /// D^-1/2, with the guarded degrees.
    pub(crate) inv_sqrt_degree: Vec<f64>,
    /// The unit eigenvector of μ = 1 (λ = 0): D^1/2 1 restricted to the nodes whose
    /// degree was not guarded. A guarded node has (next to) no edges and L_ii = 1 after
    /// the guard, so it is not in that eigenvector; its own eigenvalue is λ = 1 (e_i).
    /// `None` when every degree was guarded: then no eigenvalue 0 exists.
    pub(crate) trivial: Option<Vec<f64>>,
}

impl Graph {
    /// Builds the graph of §B steps 1–4 from `features` (`rows × dim`, row-major) over the
    /// rows where `mask` is true. Only those rows are checked for NaN/inf.
    pub fn from_features(
        features: &[f32],
        rows: usize,
        dim: usize,
        mask: &[bool],
        l2_normalize: bool,
    ) -> Result<Self, SpectralError> {
        if rows.checked_mul(dim) != Some(features.len()) {
            return Err(SpectralError::FeatureShape {
                len: features.len(),
                rows,
                dim,
            });
        }
        if mask.len() != rows {
            return Err(SpectralError::MaskLength {
                mask: mask.len(),
                rows,
            });
        }
        let nodes: Vec<usize> = (0..rows).filter(|&r| mask[r]).collect();
        let n = nodes.len();
        let mut x = Vec::with_capacity(n * dim);
        for &r in &nodes {
            let row = &features[r * dim..(r + 1) * dim];
            let start = x.len();
            x.extend(row.iter().map(|&v| f64::from(v)));
            let xr = &mut x[start..];
            // In f64, the squares of finite f32 values cannot overflow: the sum is finite
            // exactly when every entry is, which spares a branch per entry.
            let squares = super::blas::dot(xr, xr);
            if !squares.is_finite() {
                if let Some((col, &value)) = row.iter().enumerate().find(|(_, v)| !v.is_finite()) {
                    return Err(SpectralError::NonFiniteFeature { row: r, col, value });
                }
            }
            if l2_normalize {
                let inv = 1.0 / squares.sqrt().max(NORMALIZE_EPS);
                xr.iter_mut().for_each(|v| *v *= inv);
            }
        }
        let mut w = gram(&x, n, dim);
        w.iter_mut().for_each(|v| *v = v.max(0.0));
        let max = w.iter().copied().fold(0.0f64, f64::max);
        if max > 0.0 {
            w.iter_mut().for_each(|v| *v /= max);
        }
        Ok(Self::assemble(rows, nodes, w))
    }

    /// Builds the graph of §B steps 3–4 from an affinity matrix W (`n × n`, row-major,
    /// finite, ≥ 0, symmetric), used as given: no clipping or rescaling. One node per row.
    pub fn from_affinity(n: usize, w: &[f64]) -> Result<Self, SpectralError> {
        if n.checked_mul(n) != Some(w.len()) {
            return Err(SpectralError::AffinityShape { len: w.len(), n });
        }
        for i in 0..n {
            for j in 0..n {
                let value = w[i * n + j];
                if !(value.is_finite() && value >= 0.0) {
                    return Err(SpectralError::BadWeight {
                        row: i,
                        col: j,
                        value,
                    });
                }
                if j > i && value != w[j * n + i] {
                    return Err(SpectralError::Asymmetric {
                        row: i,
                        col: j,
                        upper: value,
                        lower: w[j * n + i],
                    });
                }
            }
        }
        Ok(Self::assemble(n, (0..n).collect(), w.to_vec()))
    }

    /// Degrees with the guard, then M = D^-1/2 W D^-1/2 in place of W.
    fn assemble(rows: usize, nodes: Vec<usize>, mut w: Vec<f64>) -> Self {
        let n = nodes.len();
        let degree: Vec<f64> = if n == 0 {
            Vec::new()
        } else {
            w.chunks_exact(n).map(|r| r.iter().sum()).collect()
        };
        let guarded: Vec<bool> = degree.iter().map(|&d| d < DEGREE_GUARD).collect();
        let inv_sqrt_degree: Vec<f64> = degree
            .iter()
            .zip(&guarded)
            .map(|(&d, &g)| if g { 1.0 } else { 1.0 / d.sqrt() })
            .collect();
        for (i, row) in w.chunks_exact_mut(n.max(1)).enumerate().take(n) {
            for (j, v) in row.iter_mut().enumerate() {
                *v *= inv_sqrt_degree[i] * inv_sqrt_degree[j];
            }
        }
        let mut trivial: Vec<f64> = degree
            .iter()
            .zip(&guarded)
            .map(|(&d, &g)| if g { 0.0 } else { d.sqrt() })
            .collect();
        let trivial = (super::blas::normalize(&mut trivial) > 0.0).then_some(trivial);
        Self {
            rows,
            nodes,
            m: w,
            inv_sqrt_degree,
            trivial,
        }
    }

    /// Number of nodes (tokens that take part).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True when no token takes part.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Number of feature rows the per-row output covers.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Spreads per-node values over the feature rows, 0 at rows outside the mask.
    pub(crate) fn scatter(&self, values: &[f64]) -> Vec<f32> {
        let mut out = vec![0.0f32; self.rows];
        for (&r, &v) in self.nodes.iter().zip(values) {
            out[r] = v as f32;
        }
        out
    }
}

/// X Xᵀ for X (`n × dim`, row-major) in f64, as a row-major `n × n` matrix. faer computes
/// the lower triangle only (half the flops); it is mirrored afterwards.
fn gram(x: &[f64], n: usize, dim: usize) -> Vec<f64> {
    let mut g = Mat::<f64>::zeros(n, n);
    if n > 0 && dim > 0 {
        let xr = MatRef::from_row_major_slice(x, n, dim);
        matmul(
            g.as_mut(),
            BlockStructure::TriangularLower,
            Accum::Replace,
            xr,
            BlockStructure::Rectangular,
            xr.transpose(),
            BlockStructure::Rectangular,
            1.0,
            Par::Seq,
        );
    }
    let mut out = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            let v = g[(i, j)];
            out[i * n + j] = v;
            out[j * n + i] = v;
        }
    }
    out
}
