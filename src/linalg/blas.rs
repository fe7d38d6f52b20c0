//! The few dense vector kernels the eigensolvers run on: dot, axpy and a row-major
//! matrix–vector product, all in f64.
//!
//! Each keeps independent partial sums so the compiler can vectorise the reductions
//! without reassociating floating point on its own; the order of operations is fixed, so
//! results do not depend on thread count or batch layout. The Lanczos step is limited by
//! memory bandwidth (the n × n operator is re-read every step), which is why the Lanczos
//! loop is also compiled for AVX2 (`lanczos::top_ritz_pair`): 32-byte loads make these
//! loops ~1.5× faster, and since Rust never contracts a·b + c into an FMA on its own, the
//! AVX2 build computes bit-identical results. Everything here is `#[inline(always)]` so
//! that it is compiled with the features of the function it lands in.

/// Σ aᵢ bᵢ over the common length.
#[inline(always)]
pub(crate) fn dot(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f64; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f64 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

/// y ← y + alpha·x.
#[inline(always)]
pub(crate) fn axpy(alpha: f64, x: &[f64], y: &mut [f64]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += alpha * xi;
    }
}

/// ‖x‖₂.
#[inline(always)]
pub(crate) fn norm(x: &[f64]) -> f64 {
    dot(x, x).sqrt()
}

/// x ← x / ‖x‖ when the norm is positive; returns the norm.
#[inline(always)]
pub(crate) fn normalize(x: &mut [f64]) -> f64 {
    let nrm = norm(x);
    if nrm > 0.0 {
        let inv = 1.0 / nrm;
        x.iter_mut().for_each(|v| *v *= inv);
    }
    nrm
}

/// y ← A x for a row-major n × n matrix A. Four rows share each load of x.
#[inline(always)]
pub(crate) fn gemv(a: &[f64], x: &[f64], y: &mut [f64]) {
    let n = x.len();
    debug_assert_eq!(a.len(), n * n);
    let mut rows = a.chunks_exact(4 * n);
    let mut out = y.chunks_exact_mut(4);
    for (block, yb) in (&mut rows).zip(&mut out) {
        let (r0, rest) = block.split_at(n);
        let (r1, rest) = rest.split_at(n);
        let (r2, r3) = rest.split_at(n);
        let mut acc = [[0.0f64; 4]; 4];
        let body = n - n % 4;
        for ((((xc, c0), c1), c2), c3) in x[..body]
            .chunks_exact(4)
            .zip(r0.chunks_exact(4))
            .zip(r1.chunks_exact(4))
            .zip(r2.chunks_exact(4))
            .zip(r3.chunks_exact(4))
        {
            for l in 0..4 {
                acc[0][l] += c0[l] * xc[l];
                acc[1][l] += c1[l] * xc[l];
                acc[2][l] += c2[l] * xc[l];
                acc[3][l] += c3[l] * xc[l];
            }
        }
        for (r, (row, yr)) in [r0, r1, r2, r3].into_iter().zip(yb.iter_mut()).enumerate() {
            let tail: f64 = row[body..].iter().zip(&x[body..]).map(|(m, v)| m * v).sum();
            *yr = ((acc[r][0] + acc[r][2]) + (acc[r][1] + acc[r][3])) + tail;
        }
    }
    for (row, yr) in rows.remainder().chunks_exact(n).zip(out.into_remainder()) {
        *yr = dot(row, x);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemv_matches_naive_product_at_odd_sizes() {
        for n in [1usize, 2, 3, 4, 5, 7, 8, 9, 13, 36] {
            let a: Vec<f64> = (0..n * n)
                .map(|i| ((i * 37 % 101) as f64) / 101.0 - 0.4)
                .collect();
            let x: Vec<f64> = (0..n).map(|i| (i as f64).sin()).collect();
            let mut y = vec![0.0; n];
            gemv(&a, &x, &mut y);
            for i in 0..n {
                let want: f64 = (0..n).map(|j| a[i * n + j] * x[j]).sum();
                assert!(
                    (y[i] - want).abs() < 1e-12,
                    "n={n} row {i}: {} vs {want}",
                    y[i]
                );
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_build_gives_bit_identical_results() {
        #[target_feature(enable = "avx2")]
        fn gemv_avx2(a: &[f64], x: &[f64], y: &mut [f64]) -> f64 {
            gemv(a, x, y);
            dot(a, a)
        }
        if !std::arch::is_x86_feature_detected!("avx2") {
            return;
        }
        let n = 37;
        let a: Vec<f64> = (0..n * n).map(|i| (i as f64 * 0.7).sin()).collect();
        let x: Vec<f64> = (0..n).map(|i| (i as f64 * 1.3).cos()).collect();
        let (mut plain, mut wide) = (vec![0.0; n], vec![0.0; n]);
        gemv(&a, &x, &mut plain);
        // SAFETY: AVX2 is present (checked above).
        let wide_dot = unsafe { gemv_avx2(&a, &x, &mut wide) };
        assert_eq!(plain, wide);
        assert_eq!(dot(&a, &a).to_bits(), wide_dot.to_bits());
    }

    #[test]
    fn dot_handles_tails() {
        for n in [0usize, 1, 7, 8, 9, 17] {
            let a: Vec<f64> = (0..n).map(|i| i as f64).collect();
            let want: f64 = a.iter().map(|v| v * v).sum();
            assert_eq!(dot(&a, &a), want);
        }
    }
}
