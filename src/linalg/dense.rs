//! Dense reference eigensolver (faer, f64): the same problem as [`super::lanczos`], solved by a
//! full symmetric eigendecomposition. O(n³); for tests, validation and `--solver dense`.
//!
//! The trivial eigenvector q₀ = D^1/2 1 is deflated the same way Lanczos deflates it, by
//! working on P M P − 3 q₀q₀ᵀ with P = I − q₀q₀ᵀ: the complement of q₀ keeps its
//! eigenvalues, and q₀ moves to −3, below the spectrum of M (which lies in [−1, 1]). The top
//! two eigenvalues are then μ₂ and μ₃, whatever their multiplicities — so for a disconnected
//! graph with two components the vector is the same as Lanczos's (it is unique), and with
//! more components it is faer's choice within the eigenspace.

use faer::diag::Diag;
use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::evd::{self_adjoint_evd, self_adjoint_evd_scratch, ComputeEigenvectors};
use faer::{Mat, MatRef, Par};

use super::blas::{dot, gemv};
use super::error::SpectralError;

/// The top of the deflated operator's spectrum (μ₂ itself is recomputed from the vector
/// as a Rayleigh quotient, as for Lanczos).
pub(crate) struct DenseTop {
    /// μ₃, when the graph has at least three nodes.
    pub mu3: Option<f64>,
    /// Unit eigenvector of μ₂.
    pub vector: Vec<f64>,
}

/// Solves the deflated problem for M (`n × n`, row-major) and the unit vector `trivial`.
pub(crate) fn top_two(m: &[f64], n: usize, trivial: &[f64]) -> Result<DenseTop, SpectralError> {
    // P M P − 3 q q ᵀ = M − q pᵀ − p qᵀ + (qᵀp − 3) q qᵀ with p = M q.
    let mut p = vec![0.0; n];
    gemv(m, trivial, &mut p);
    let qp = dot(trivial, &p);
    let a = Mat::<f64>::from_fn(n, n, |i, j| {
        m[i * n + j] - trivial[i] * p[j] - p[i] * trivial[j] + (qp - 3.0) * trivial[i] * trivial[j]
    });
    let (values, vectors) = eigen(a.as_ref())?;
    // Eigenvalues ascend: the last two are μ₃ ≤ μ₂.
    let mu3 = (n >= 3).then(|| values[n - 2]);
    let vector = (0..n).map(|i| vectors[(i, n - 1)]).collect();
    Ok(DenseTop { mu3, vector })
}

/// Full eigendecomposition of a symmetric matrix, sequential so that batches stay
/// deterministic and threads are spent across graphs instead.
fn eigen(a: MatRef<'_, f64>) -> Result<(Vec<f64>, Mat<f64>), SpectralError> {
    let n = a.nrows();
    let mut s = Diag::<f64>::zeros(n);
    let mut u = Mat::<f64>::zeros(n, n);
    let scratch =
        self_adjoint_evd_scratch::<f64>(n, ComputeEigenvectors::Yes, Par::Seq, Default::default());
    self_adjoint_evd(
        a,
        s.as_mut(),
        Some(u.as_mut()),
        Par::Seq,
        MemStack::new(&mut MemBuffer::new(scratch)),
        Default::default(),
    )
    .map_err(|_| SpectralError::DenseNoConvergence)?;
    let values = s.column_vector().iter().copied().collect();
    Ok((values, u))
}
