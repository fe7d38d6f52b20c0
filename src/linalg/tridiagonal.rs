//! Symmetric tridiagonal eigenproblems: the Lanczos projection T_k of spec §B step 5.
//!
//! Lanczos only ever needs the **largest** eigenvalue θ of T_k and its unit eigenvector y:
//! the convergence test reads the last component (the Ritz residual is β_k·|y_k|), and the
//! converged Ritz vector is Q y. Both cost O(k) here, so the test can run every step or two
//! even when n is small (implicit QL would cost O(k²) per test):
//!
//! - [`largest_eigenvalue`]: safeguarded Laguerre iteration on det(xI − T_k), evaluated
//!   through the LDLᵀ pivots q_i of xI − T (the Sturm sequence). Laguerre's method converges
//!   cubically and, for a polynomial with real roots started above them all (Gershgorin's
//!   bound), monotonically to the largest root; the Sturm count (negative pivots =
//!   eigenvalues above x) keeps a bracket, and a step that leaves it is replaced by
//!   bisection, so the iteration cannot settle on another root.
//! - [`eigenvector`]: inverse iteration with partial pivoting (LAPACK `dgttrf`/`dgtts2`,
//!   as `dstein` does). It gives the last component to absolute accuracy ε/gap even when
//!   that component is tiny — which the closed form z_k² = p_{k−1}(θ)/p_k'(θ) does not: it
//!   cancels catastrophically exactly when the Ritz pair has converged.
//!
//! Both are sequential and deterministic. On the GPU they run on one thread of the block
//! (O(k) with a division per step), or the bracket can be refined by Sturm-count
//! multisection with one shift per thread.

use super::synthetic::uniform;

/// Laguerre/bisection steps allowed; bisection alone would need ~60 to reach f64 precision
/// from Gershgorin's interval, Laguerre typically needs 3–6.
const MAX_STEPS: usize = 200;

/// One pass of the pivot recurrence of xI − T, with the derivatives Laguerre needs.
struct Pivots {
    /// Number of eigenvalues of T greater than x.
    above: usize,
    /// p'/p = Σ 1/(x − λ_j).
    g: f64,
    /// −(p'/p)' = Σ 1/(x − λ_j)².
    h: f64,
    /// x is (to working precision) an eigenvalue of T itself.
    exact: bool,
}

fn pivots(diag: &[f64], off: &[f64], x: f64, pivmin: f64) -> Pivots {
    let k = diag.len();
    let (mut q, mut dq, mut ddq, mut r) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    let (mut g, mut h) = (0.0f64, 0.0f64);
    let mut above = 0;
    let mut exact = false;
    for i in 0..k {
        let (nq, ndq, nddq) = if i == 0 {
            (x - diag[0], 1.0, 0.0)
        } else {
            // r = 1/q_{i-1}: one division per row, the only one.
            let b = off[i - 1] * off[i - 1];
            (
                x - diag[i] - b * r,
                1.0 + b * dq * r * r,
                b * (ddq * q - 2.0 * dq * dq) * r * r * r,
            )
        };
        q = nq;
        dq = ndq;
        ddq = nddq;
        if q.abs() < pivmin {
            // A zero pivot: x is an eigenvalue of the leading block T_{0..=i}. Nudge it
            // (LAPACK's convention counts it as negative) to keep the recurrence finite.
            exact |= i + 1 == k;
            q = -pivmin;
        }
        if q < 0.0 {
            above += 1;
        }
        r = 1.0 / q;
        g += dq * r;
        h += (dq * dq - q * ddq) * r * r;
    }
    Pivots { above, g, h, exact }
}

/// Largest eigenvalue of T (diagonal `diag`, off-diagonal `off`, `off.len() + 1 ==
/// diag.len() ≥ 1`), to within 4ε of the spectrum's scale, never below it.
pub(crate) fn largest_eigenvalue(diag: &[f64], off: &[f64]) -> f64 {
    let k = diag.len();
    let radius = |i: usize| {
        (if i > 0 { off[i - 1].abs() } else { 0.0 }) + (if i + 1 < k { off[i].abs() } else { 0.0 })
    };
    // Gershgorin: every eigenvalue lies in [lo, hi].
    let mut hi = (0..k)
        .map(|i| diag[i] + radius(i))
        .fold(f64::NEG_INFINITY, f64::max);
    let mut lo = (0..k)
        .map(|i| diag[i] - radius(i))
        .fold(f64::INFINITY, f64::min);
    let scale = hi.abs().max(lo.abs()).max(f64::MIN_POSITIVE);
    let pivmin = f64::MIN_POSITIVE * off.iter().fold(1.0f64, |m, b| m.max(b * b));
    let tol = 4.0 * f64::EPSILON * scale;
    let kf = k as f64;
    let mut x = hi;
    for _ in 0..MAX_STEPS {
        let p = pivots(diag, off, x, pivmin);
        if p.above == 0 {
            hi = x;
            if p.exact {
                break;
            }
        } else {
            lo = x;
        }
        if hi - lo <= tol {
            break;
        }
        // Laguerre's step towards the nearest root, in the direction the sign of g gives.
        let disc = ((kf - 1.0) * (kf * p.h - p.g * p.g)).max(0.0).sqrt();
        let denom = if p.g >= 0.0 { p.g + disc } else { p.g - disc };
        let step = kf / denom;
        let mut next = x - step;
        if step.abs() <= tol {
            // Laguerre has converged on a root. From above, that is the largest one. Just
            // below the largest, step over it so that the bracket closes; below any other,
            // bisect.
            match p.above {
                0 => break,
                1 => next = x + tol,
                _ => next = f64::NAN,
            }
        }
        x = if next.is_finite() && next > lo && next < hi {
            next
        } else {
            0.5 * (lo + hi)
        };
    }
    // hi is always at or above the largest eigenvalue, and within tol of it on exit.
    hi
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
        .chain(off)
        .map(|v| v.abs())
        .fold(theta.abs(), f64::max)
        .max(f64::MIN_POSITIVE);
    let lu = TridiagonalLu::factor(diag, off, theta, f64::EPSILON * scale);
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
                    du[i + 1] *= -fact;
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

    fn residual(diag: &[f64], off: &[f64], theta: f64, x: &[f64]) -> f64 {
        let k = diag.len();
        (0..k)
            .map(|i| {
                let mut tx = diag[i] * x[i];
                if i > 0 {
                    tx += off[i - 1] * x[i - 1];
                }
                if i + 1 < k {
                    tx += off[i] * x[i + 1];
                }
                (tx - theta * x[i]).abs()
            })
            .fold(0.0, f64::max)
    }

    /// The path-graph Laplacian tridiag(-1, 2, -1) has eigenvalues 2 − 2cos(jπ/(k+1)) and
    /// unit eigenvectors √(2/(k+1))·sin(ijπ/(k+1)); the largest is j = k.
    #[test]
    fn largest_eigenpair_of_the_path_laplacian_is_exact() {
        for k in [1usize, 2, 3, 10, 57, 300] {
            let diag = vec![2.0; k];
            let off = vec![-1.0; k - 1];
            let theta = largest_eigenvalue(&diag, &off);
            let h = std::f64::consts::PI / (k + 1) as f64;
            let want = 2.0 - 2.0 * (k as f64 * h).cos();
            assert!((theta - want).abs() < 1e-13, "k={k}: {theta} vs {want}");
            let y = eigenvector(&diag, &off, theta);
            let norm = (2.0 / (k + 1) as f64).sqrt();
            for (i, yi) in y.iter().enumerate() {
                let want = norm * ((i + 1) as f64 * k as f64 * h).sin();
                assert!(
                    (yi.abs() - want.abs()).abs() < 1e-10,
                    "k={k} i={i}: {yi} vs {want}"
                );
            }
        }
    }

    #[test]
    fn largest_eigenpair_of_split_and_nearly_split_matrices() {
        // Two identical 2 × 2 blocks (β = 0 between them): eigenvalues 1, 1, 3, 3.
        let theta = largest_eigenvalue(&[2.0, 2.0, 2.0, 2.0], &[1.0, 0.0, 1.0]);
        assert!((theta - 3.0).abs() < 1e-14);
        // Nearly diagonal, largest entry first: the eigenvector is e_0 up to β/4, and its
        // last component is ≈ β²/12 — tiny, and still resolved.
        let (diag, off) = ([5.0, 1.0, 2.0], [1e-9, 1e-9]);
        let theta = largest_eigenvalue(&diag, &off);
        assert!((theta - 5.0).abs() < 1e-14);
        let y = eigenvector(&diag, &off, theta);
        assert!(
            (y[0].abs() - 1.0).abs() < 1e-15 && y[2].abs() < 1e-17,
            "{y:?}"
        );
    }

    #[test]
    fn largest_eigenpair_of_a_random_tridiagonal() {
        let k = 40;
        let diag: Vec<f64> = (0..k).map(|i| (i as f64 * 0.37).sin()).collect();
        let off: Vec<f64> = (0..k - 1)
            .map(|i| 0.5 + (i as f64 * 0.11).cos() * 0.3)
            .collect();
        let theta = largest_eigenvalue(&diag, &off);
        let y = eigenvector(&diag, &off, theta);
        assert!(residual(&diag, &off, theta, &y) < 1e-12);
        // Nothing lies above: the Sturm count just above θ is zero, just below it is one.
        let pivmin = f64::MIN_POSITIVE;
        assert_eq!(pivots(&diag, &off, theta + 1e-12, pivmin).above, 0);
        assert_eq!(pivots(&diag, &off, theta - 1e-9, pivmin).above, 1);
    }
}
