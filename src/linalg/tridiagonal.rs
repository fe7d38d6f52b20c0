//! Symmetric tridiagonal eigenproblems: the Lanczos projection T_k of spec §B step 5.
//!
//! Lanczos needs two things from T_k, and neither needs the full eigenvector matrix:
//! - At each convergence check, the eigenvalues (Ritz values) and the **last** component
//!   of each unit eigenvector, because β_k·|z_k| bounds the residual of that Ritz pair.
//!   [`eigen_last_row`] is implicit QL with Wilkinson shifts (EISPACK `tql2`, Numerical
//!   Recipes `tqli`) that applies its rotations to the last row of Z only: O(k²) instead of
//!   O(k³).
//! - Once converged, one eigenvector: [`eigenvector`] runs inverse iteration with partial
//!   pivoting (LAPACK `dgttrf`/`dgtts2`, as `dstein` does), O(k).
//!
//! Both are sequential and deterministic; on the GPU they run on one thread (or, for a
//! large k, as a Sturm-count multisection across the block).

use super::error::SpectralError;
use super::synthetic::uniform;

/// QL sweeps allowed per eigenvalue. EISPACK uses 30; Wilkinson's shift converges
/// globally, usually cubically, so reaching this means a bug or non-finite input.
const MAX_SWEEPS: usize = 60;

/// Eigenvalues of a symmetric tridiagonal matrix, with the last row of its eigenvector
/// matrix.
pub(crate) struct TridiagonalEigen {
    /// Eigenvalues, in no particular order.
    pub values: Vec<f64>,
    /// `last[j]` = last component of the unit eigenvector of `values[j]`.
    pub last: Vec<f64>,
}

/// Eigenvalues of T (diagonal `diag`, off-diagonal `off`, `off.len() + 1 == diag.len()`)
/// and the last component of each unit eigenvector, by implicit QL.
pub(crate) fn eigen_last_row(diag: &[f64], off: &[f64]) -> Result<TridiagonalEigen, SpectralError> {
    let n = diag.len();
    debug_assert!(n == 0 || off.len() + 1 == n);
    let mut d = diag.to_vec();
    // e[i] couples i and i+1; the extra trailing zero keeps the loops uniform.
    let mut e = vec![0.0; n];
    e[..n.saturating_sub(1)].copy_from_slice(&off[..n.saturating_sub(1)]);
    let mut z = vec![0.0; n];
    if let Some(last) = z.last_mut() {
        *last = 1.0;
    }
    for l in 0..n {
        let mut sweeps = 0;
        loop {
            // Find the end m of the unreduced block that starts at l.
            let mut m = l;
            while m + 1 < n {
                let dd = d[m].abs() + d[m + 1].abs();
                if e[m].abs() <= f64::EPSILON * dd || e[m].abs() < f64::MIN_POSITIVE {
                    break;
                }
                m += 1;
            }
            if m == l {
                break;
            }
            sweeps += 1;
            if sweeps > MAX_SWEEPS {
                return Err(SpectralError::TridiagonalNoConvergence {
                    iterations: MAX_SWEEPS,
                });
            }
            // Wilkinson shift from the leading 2 × 2 block.
            let mut g = (d[l + 1] - d[l]) / (2.0 * e[l]);
            let mut r = g.hypot(1.0);
            g = d[m] - d[l] + e[l] / (g + if g >= 0.0 { r } else { -r });
            let (mut s, mut c, mut p) = (1.0f64, 1.0f64, 0.0f64);
            let mut underflow = false;
            for i in (l..m).rev() {
                let f = s * e[i];
                let b = c * e[i];
                r = f.hypot(g);
                e[i + 1] = r;
                if r == 0.0 {
                    // The rotation underflowed: T split at i; restart on the smaller block.
                    d[i + 1] -= p;
                    e[m] = 0.0;
                    underflow = true;
                    break;
                }
                s = f / r;
                c = g / r;
                g = d[i + 1] - p;
                r = (d[i] - g) * s + 2.0 * c * b;
                p = s * r;
                d[i + 1] = g + p;
                g = c * r - b;
                let zf = z[i + 1];
                z[i + 1] = s * z[i] + c * zf;
                z[i] = c * z[i] - s * zf;
            }
            if underflow {
                continue;
            }
            d[l] -= p;
            e[l] = g;
            e[m] = 0.0;
        }
    }
    Ok(TridiagonalEigen { values: d, last: z })
}

/// Unit eigenvector of T for the eigenvalue `theta` (accurate to working precision), by
/// three steps of inverse iteration from a fixed pseudo-random start.
///
/// Pivots that vanish because `theta` is an eigenvalue are replaced by ε·‖T‖, which is
/// what makes the solve amplify the wanted direction. When `theta` belongs to a cluster of
/// eigenvalues closer than that, the result is a unit vector in the cluster's span, whose
/// residual is still of the order of the cluster width.
pub(crate) fn eigenvector(diag: &[f64], off: &[f64], theta: f64) -> Vec<f64> {
    let n = diag.len();
    if n == 1 {
        return vec![1.0];
    }
    let scale = diag
        .iter()
        .map(|v| v.abs())
        .chain(off.iter().map(|v| v.abs()))
        .fold(0.0f64, f64::max)
        .max(theta.abs())
        .max(f64::MIN_POSITIVE);
    let tiny = f64::EPSILON * scale;
    let lu = TridiagonalLu::factor(diag, off, theta, tiny);
    let mut x: Vec<f64> = (0..n as u64)
        .map(|i| uniform(0x7d1a_9e5b, i) - 0.5)
        .collect();
    for _ in 0..3 {
        lu.solve(&mut x);
        let nrm = super::blas::normalize(&mut x);
        if !(nrm.is_finite() && nrm > 0.0) {
            // Only reachable if T itself holds non-finite values.
            x.iter_mut().for_each(|v| *v = 0.0);
            x[n - 1] = 1.0;
        }
    }
    x
}

/// LU factors of T − θI with partial (row) pivoting, LAPACK `dgttrf` layout: U has the
/// diagonal `d` and two superdiagonals `du`, `du2`; `dl` holds the multipliers.
struct TridiagonalLu {
    dl: Vec<f64>,
    d: Vec<f64>,
    du: Vec<f64>,
    du2: Vec<f64>,
    swapped: Vec<bool>,
}

impl TridiagonalLu {
    fn factor(diag: &[f64], off: &[f64], theta: f64, tiny: f64) -> Self {
        let n = diag.len();
        let mut dl = off.to_vec();
        let mut d: Vec<f64> = diag.iter().map(|v| v - theta).collect();
        let mut du = off.to_vec();
        let mut du2 = vec![0.0; n.saturating_sub(2)];
        let mut swapped = vec![false; n.saturating_sub(1)];
        for i in 0..n - 1 {
            if d[i].abs() >= dl[i].abs() {
                if d[i] != 0.0 {
                    let fact = dl[i] / d[i];
                    dl[i] = fact;
                    d[i + 1] -= fact * du[i];
                }
            } else {
                let fact = d[i] / dl[i];
                d[i] = dl[i];
                dl[i] = fact;
                let temp = du[i];
                du[i] = d[i + 1];
                d[i + 1] = temp - fact * d[i + 1];
                if i + 2 < n {
                    du2[i] = du[i + 1];
                    du[i + 1] = -fact * du[i + 1];
                }
                swapped[i] = true;
            }
        }
        for v in &mut d {
            if v.abs() < tiny {
                *v = if *v < 0.0 { -tiny } else { tiny };
            }
        }
        Self {
            dl,
            d,
            du,
            du2,
            swapped,
        }
    }

    /// b ← (T − θI)⁻¹ b.
    fn solve(&self, b: &mut [f64]) {
        let n = b.len();
        for i in 0..n - 1 {
            if self.swapped[i] {
                let temp = b[i];
                b[i] = b[i + 1];
                b[i + 1] = temp - self.dl[i] * b[i];
            } else {
                b[i + 1] -= self.dl[i] * b[i];
            }
        }
        b[n - 1] /= self.d[n - 1];
        b[n - 2] = (b[n - 2] - self.du[n - 2] * b[n - 1]) / self.d[n - 2];
        for i in (0..n.saturating_sub(2)).rev() {
            b[i] = (b[i] - self.du[i] * b[i + 1] - self.du2[i] * b[i + 2]) / self.d[i];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The path-graph Laplacian tridiag(-1, 2, -1) has eigenvalues 2 − 2cos(jπ/(k+1)) and
    /// eigenvectors sin(ijπ/(k+1)).
    #[test]
    fn ql_finds_path_laplacian_spectrum_and_last_components() {
        for k in [1usize, 2, 3, 10, 57] {
            let diag = vec![2.0; k];
            let off = vec![-1.0; k - 1];
            let eig = eigen_last_row(&diag, &off).unwrap();
            let mut pairs: Vec<(f64, f64)> = eig
                .values
                .iter()
                .copied()
                .zip(eig.last.iter().map(|v| v.abs()))
                .collect();
            pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
            let h = std::f64::consts::PI / (k + 1) as f64;
            let norm = (2.0 / (k + 1) as f64).sqrt();
            for (j, (value, last)) in pairs.iter().enumerate() {
                let jj = (j + 1) as f64;
                assert!((value - (2.0 - 2.0 * (jj * h).cos())).abs() < 1e-12);
                assert!((last - norm * (k as f64 * jj * h).sin().abs()).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn ql_handles_split_blocks_and_repeated_values() {
        // Two identical 2 × 2 blocks: eigenvalues 1, 1, 3, 3.
        let eig = eigen_last_row(&[2.0, 2.0, 2.0, 2.0], &[1.0, 0.0, 1.0]).unwrap();
        let mut v = eig.values.clone();
        v.sort_by(f64::total_cmp);
        for (got, want) in v.iter().zip([1.0, 1.0, 3.0, 3.0]) {
            assert!((got - want).abs() < 1e-14);
        }
    }

    #[test]
    fn inverse_iteration_returns_the_eigenvector() {
        let k = 40;
        let diag: Vec<f64> = (0..k).map(|i| (i as f64 * 0.37).sin()).collect();
        let off: Vec<f64> = (0..k - 1)
            .map(|i| 0.5 + (i as f64 * 0.11).cos() * 0.3)
            .collect();
        let eig = eigen_last_row(&diag, &off).unwrap();
        for &theta in &eig.values {
            let x = eigenvector(&diag, &off, theta);
            let mut worst: f64 = 0.0;
            for i in 0..k {
                let mut tx = diag[i] * x[i];
                if i > 0 {
                    tx += off[i - 1] * x[i - 1];
                }
                if i + 1 < k {
                    tx += off[i] * x[i + 1];
                }
                worst = worst.max((tx - theta * x[i]).abs());
            }
            assert!(worst < 1e-12, "theta {theta}: residual {worst}");
        }
    }
}
