//! Spec §B edge cases: defined, documented results — never a panic, never a NaN — for
//! tiny graphs (the seed crashes for text with ≤ 3 tokens, bug B5), disconnected graphs,
//! repeated eigenvalues, zero feature rows, and NaN/inf features.

use fiedler::linalg::{
    fiedler, fiedler_batch, Fiedler, Graph, GraphInput, GraphOptions, Solver, SpectralError,
};

const SOLVERS: [Solver; 2] = [Solver::Lanczos, Solver::Dense];

fn opts(solver: Solver) -> GraphOptions {
    GraphOptions {
        l2_normalize: true,
        solver,
    }
}

/// Row-major features from rows of equal width.
fn flat(rows: &[Vec<f32>]) -> (Vec<f32>, usize, usize) {
    let dim = rows.first().map_or(0, Vec::len);
    (rows.concat(), rows.len(), dim)
}

fn solve_rows(rows: &[Vec<f32>], mask: &[bool], solver: Solver) -> Fiedler {
    let (f, n, d) = flat(rows);
    fiedler(&f, n, d, mask, &opts(solver)).expect("valid input")
}

fn unit(angle: f64) -> Vec<f32> {
    vec![angle.cos() as f32, angle.sin() as f32, 0.0]
}

/// Rows of k identical copies of `v` per component.
fn cliques(sizes: &[usize], directions: &[Vec<f32>]) -> Vec<Vec<f32>> {
    sizes
        .iter()
        .zip(directions)
        .flat_map(|(&k, v)| std::iter::repeat_n(v.clone(), k))
        .collect()
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol
}

#[test]
fn spec_b_no_tokens_gives_a_zero_vector_and_no_spectrum() {
    for solver in SOLVERS {
        let f = solve_rows(&[unit(0.0), unit(1.0)], &[false, false], solver);
        assert_eq!(f.vector, vec![0.0, 0.0]);
        assert_eq!((f.tokens, f.lambda2, f.gap), (0, None, None));
        assert!(f.is_degenerate(1e-3));
    }
}

/// One token (e.g. a one-word question after dropping [CLS]/[SEP]): no second eigenvalue.
#[test]
fn spec_b_one_token_gets_its_trivial_eigenvector_and_no_lambda2() {
    for solver in SOLVERS {
        for row in [unit(0.3), vec![0.0; 3]] {
            let f = solve_rows(&[unit(1.0), row, unit(2.0)], &[false, true, false], solver);
            assert_eq!(f.vector, vec![0.0, 1.0, 0.0]);
            assert_eq!((f.tokens, f.lambda2, f.gap), (1, None, None));
            assert!(f.is_degenerate(1e-3));
        }
    }
}

/// Two tokens with cosine c > 0: W = [[1, c], [c, 1]], D = (1 + c) I, so λ₂ = 2c/(1 + c)
/// and v = ±(1, −1)/√(2(1 + c)). With c ≤ 0 the graph is disconnected: λ₂ = 0.
#[test]
fn spec_b_two_tokens_have_the_closed_form_solution() {
    for solver in SOLVERS {
        for angle in [0.2f64, 1.0, 1.5, 2.5] {
            let f = solve_rows(&[unit(0.0), unit(angle)], &[true, true], solver);
            let c = (angle.cos() as f32 as f64).max(0.0);
            let lambda2 = f.lambda2.expect("two tokens have λ₂");
            assert!(
                close(lambda2, 2.0 * c / (1.0 + c), 1e-7),
                "{solver} angle {angle}: λ₂ {lambda2}"
            );
            let v = 1.0 / (2.0 * (1.0 + c)).sqrt();
            for x in &f.vector {
                assert!(
                    close(*x as f64, v, 1e-6),
                    "{solver} angle {angle}: {:?}",
                    f.vector
                );
            }
            assert_eq!(f.gap, None);
            assert!(!f.is_degenerate(1e-3));
            assert!(
                f.signed[0] * f.signed[1] < 0.0,
                "the two tokens are on opposite sides"
            );
        }
    }
}

/// Three tokens: the seed's K guard leaves one eigenvalue and `kthvalue(·, 2)` raises.
/// Here: three tokens at equal angles give W = [[1,c,c],[c,1,c],[c,c,1]], whose λ₂ = λ₃ =
/// 3c/(1 + 2c) is repeated (gap 0); a text of [CLS] + 3 words + [SEP] works and has zeros at
/// [CLS]/[SEP].
#[test]
fn spec_b_three_tokens_are_solved_and_a_symmetric_triple_is_degenerate() {
    let c = 0.5f64;
    // Three unit vectors with pairwise cosine c: a symmetric cone around (1, 1, 1).
    let a = ((1.0 + 2.0 * c) / 3.0).sqrt();
    let b = ((1.0 - c) * 2.0 / 3.0).sqrt();
    let rows: Vec<Vec<f32>> = (0..3)
        .map(|k| {
            let t = 2.0 * std::f64::consts::PI * k as f64 / 3.0;
            vec![a as f32, (b * t.cos()) as f32, (b * t.sin()) as f32]
        })
        .collect();
    for solver in SOLVERS {
        let f = solve_rows(&rows, &[true; 3], solver);
        let lambda2 = f.lambda2.unwrap();
        assert!(
            close(lambda2, 3.0 * c / (1.0 + 2.0 * c), 1e-6),
            "{solver}: λ₂ {lambda2}"
        );
        assert!(f.gap.unwrap() < 1e-6, "{solver}: gap {:?}", f.gap);
        assert!(f.is_degenerate(1e-3));
        assert!(f.residual < 1e-10);

        let text = [
            vec![1.0, 0.0, 0.0],
            unit(0.1),
            unit(0.5),
            unit(1.4),
            vec![0.0, 1.0, 0.0],
        ];
        let f = solve_rows(&text, &[false, true, true, true, false], solver);
        assert_eq!(f.tokens, 3);
        assert_eq!((f.vector[0], f.vector[4]), (0.0, 0.0));
        assert!(f.gap.unwrap() > 1e-3 && f.residual < 1e-10);
    }
}

/// Two components (cliques of sizes a and b, no edges between): λ₂ = 0 and the Fiedler
/// vector is unique — constant on each component and D-orthogonal to 1 — so
/// |v| = α/vol(A) on A and α/vol(B) on B with α⁻² = 1/vol(A) + 1/vol(B). Inside a clique
/// W = 1, so the next eigenvalue is λ₃ = 1.
#[test]
fn spec_b_two_components_give_the_unique_indicator_vector() {
    let (na, nb) = (4usize, 7usize);
    let rows = cliques(&[na, nb], &[vec![1.0, 0.0], vec![-1.0, 0.0]]);
    let (vol_a, vol_b) = ((na * na) as f64, (nb * nb) as f64);
    let alpha = 1.0 / (1.0 / vol_a + 1.0 / vol_b).sqrt();
    for solver in SOLVERS {
        let f = solve_rows(&rows, &vec![true; na + nb], solver);
        assert!(f.lambda2.unwrap() < 1e-12, "{solver}: λ₂ {:?}", f.lambda2);
        assert!(
            close(f.gap.unwrap(), 1.0, 1e-9),
            "{solver}: gap {:?}",
            f.gap
        );
        for (i, x) in f.vector.iter().enumerate() {
            let want = if i < na { alpha / vol_a } else { alpha / vol_b };
            assert!(
                close(*x as f64, want, 1e-6),
                "{solver} row {i}: {x} vs {want}"
            );
        }
    }
}

/// Three components: λ₂ = λ₃ = 0. The result is flagged (gap 0), is an exact eigenvector
/// (constant on each component, D-orthogonal to 1), and is the same on every call, alone or
/// in a batch.
#[test]
fn spec_b_three_components_are_degenerate_and_deterministic() {
    let sizes = [3usize, 5, 4];
    let dirs: Vec<Vec<f32>> = (0..3)
        .map(|k| unit(2.0 * std::f64::consts::PI * k as f64 / 3.0))
        .collect();
    let rows = cliques(&sizes, &dirs);
    let mask = vec![true; rows.len()];
    let (features, n, d) = flat(&rows);
    for solver in SOLVERS {
        let f = solve_rows(&rows, &mask, solver);
        assert!(f.lambda2.unwrap() < 1e-12);
        assert!(f.gap.unwrap() < 1e-9, "{solver}: gap {:?}", f.gap);
        assert!(f.is_degenerate(1e-3));
        assert!(f.residual < 1e-10);
        let mut start = 0;
        let mut weighted_sum = 0.0;
        for &k in &sizes {
            let block = &f.signed[start..start + k];
            assert!(
                block.iter().all(|x| (x - block[0]).abs() < 1e-6),
                "{solver}: {block:?}"
            );
            weighted_sum += block.iter().map(|&x| x as f64 * k as f64).sum::<f64>();
            start += k;
        }
        assert!(weighted_sum.abs() < 1e-6, "{solver}: vᵀD1 = {weighted_sum}");
        let again = solve_rows(&rows, &mask, solver);
        assert_eq!(f, again);
        let input = GraphInput {
            features: &features,
            rows: n,
            dim: d,
            mask: &mask,
        };
        let batch = fiedler_batch(&[input, input, input], &opts(solver));
        assert!(batch.iter().all(|r| r.as_ref() == Ok(&f)));
    }
}

/// A cycle graph with self-loops (W = I + adjacency) is circulant: its λ₂ is exactly
/// double. Both solvers report a zero gap and return an eigenvector of λ₂ = 1 − cos(2π/n)·2/3.
#[test]
fn spec_b_repeated_eigenvalue_is_flagged_by_a_zero_gap() {
    let n = 12;
    let mut w = vec![0.0; n * n];
    for i in 0..n {
        w[i * n + i] = 1.0;
        w[i * n + (i + 1) % n] = 1.0;
        w[((i + 1) % n) * n + i] = 1.0;
    }
    let graph = Graph::from_affinity(n, &w).unwrap();
    // D = 3I, M = W/3 has eigenvalues (1 + 2cos(2πj/n))/3.
    let want = 1.0 - (1.0 + 2.0 * (2.0 * std::f64::consts::PI / n as f64).cos()) / 3.0;
    for solver in SOLVERS {
        let f = graph.fiedler(solver).unwrap();
        assert!(
            close(f.lambda2.unwrap(), want, 1e-12),
            "{solver}: λ₂ {:?} vs {want}",
            f.lambda2
        );
        assert!(f.gap.unwrap() < 1e-9, "{solver}: gap {:?}", f.gap);
        assert!(f.residual < 1e-10);
        let vtdv: f64 = f.vector.iter().map(|&x| 3.0 * (x as f64).powi(2)).sum();
        assert!(close(vtdv, 1.0, 1e-6));
    }
}

/// An all-zero feature row stays zero under normalisation (torch semantics), has no edges,
/// its degree is guarded to 1, and it gets 0 in the Fiedler vector.
#[test]
fn spec_b_all_zero_rows_are_isolated_and_get_zero() {
    let mut rows: Vec<Vec<f32>> = (0..8).map(|i| unit(0.4 * i as f64)).collect();
    rows[2] = vec![0.0; 3];
    rows[5] = vec![0.0; 3];
    for solver in SOLVERS {
        let f = solve_rows(&rows, &[true; 8], solver);
        assert!(
            f.vector[2].abs() < 1e-7 && f.vector[5].abs() < 1e-7,
            "{solver}: {:?}",
            f.vector
        );
        assert!(f.lambda2.unwrap() < 1.0 && f.residual < 1e-10);
        assert!(f.vector.iter().all(|x| x.is_finite()));
    }
}

/// Every row zero (or no feature columns at all): W = 0, L = D = I, every vector is an
/// eigenvector of λ = 1. The result is the uniform vector 1/√n, λ₂ = 1, gap 0.
#[test]
fn spec_b_all_zero_features_give_the_uniform_vector() {
    for solver in SOLVERS {
        for (features, dim) in [(vec![0.0f32; 5 * 4], 4usize), (Vec::new(), 0)] {
            let f = fiedler(&features, 5, dim, &[true; 5], &opts(solver)).unwrap();
            let u = 1.0 / 5f32.sqrt();
            assert!(
                f.vector.iter().all(|&x| (x - u).abs() < 1e-7),
                "{solver}: {:?}",
                f.vector
            );
            assert_eq!((f.lambda2, f.gap), (Some(1.0), Some(0.0)));
        }
    }
}

#[test]
fn spec_b_nan_and_inf_features_are_errors_naming_row_and_column() {
    let mut rows: Vec<Vec<f32>> = (0..5).map(|i| unit(0.3 * i as f64)).collect();
    rows[3][1] = f32::NAN;
    let (mut f, n, d) = flat(&rows);
    let err = fiedler(&f, n, d, &[true; 5], &GraphOptions::default()).unwrap_err();
    assert!(
        matches!(err, SpectralError::NonFiniteFeature { row: 3, col: 1, .. }),
        "{err}"
    );
    assert_eq!(err.to_string(), "feature at row 3, column 1 is NaN");
    f[3 * d + 1] = f32::NEG_INFINITY;
    let err = fiedler(&f, n, d, &[true; 5], &GraphOptions::default()).unwrap_err();
    assert!(
        matches!(err, SpectralError::NonFiniteFeature { row: 3, col: 1, .. }),
        "{err}"
    );
    // A row outside the mask does not take part, so its values do not matter.
    let ok = fiedler(
        &f,
        n,
        d,
        &[true, true, true, false, true],
        &GraphOptions::default(),
    )
    .unwrap();
    assert_eq!(ok.tokens, 4);
    assert_eq!(ok.vector[3], 0.0);
}

#[test]
fn shape_and_weight_errors_are_values() {
    let opts = GraphOptions::default();
    assert_eq!(
        fiedler(&[0.0; 7], 2, 4, &[true; 2], &opts).unwrap_err(),
        SpectralError::FeatureShape {
            len: 7,
            rows: 2,
            dim: 4
        }
    );
    assert_eq!(
        fiedler(&[0.0; 8], 2, 4, &[true; 3], &opts).unwrap_err(),
        SpectralError::MaskLength { mask: 3, rows: 2 }
    );
    assert!(matches!(
        Graph::from_affinity(2, &[1.0; 3]),
        Err(SpectralError::AffinityShape { .. })
    ));
    assert!(matches!(
        Graph::from_affinity(2, &[1.0, -0.5, -0.5, 1.0]),
        Err(SpectralError::BadWeight { row: 0, col: 1, .. })
    ));
    assert!(matches!(
        Graph::from_affinity(2, &[1.0, 0.5, 0.25, 1.0]),
        Err(SpectralError::Asymmetric { row: 0, col: 1, .. })
    ));
}

#[test]
fn solver_names_parse_and_print_for_the_cli() {
    assert_eq!("dense".parse::<Solver>(), Ok(Solver::Dense));
    assert_eq!("Lanczos".parse::<Solver>(), Ok(Solver::Lanczos));
    assert_eq!(Solver::default(), Solver::Lanczos);
    for s in SOLVERS {
        assert_eq!(s.to_string().parse::<Solver>(), Ok(s));
    }
    let err = "qr".parse::<Solver>().unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown solver \"qr\": expected \"dense\" or \"lanczos\""
    );
}

/// §B step 1 normalises rows as `torch.nn.functional.normalize` does: x / max(‖x‖, 1e-12).
/// A row whose norm is below that eps is scaled by 1/eps, not to unit length: here it stays
/// a weak node. Checked against the same graph built from rows normalised here, with the
/// library's normalisation off (W / max W is unchanged: the unit rows keep max W = 1).
#[test]
fn spec_b_rows_below_the_normalisation_eps_are_divided_by_the_eps() {
    let rows = vec![
        vec![1.0, 0.2, 0.0],
        vec![0.9, 0.4, 0.1],
        vec![0.1, 1.0, 0.3],
        vec![0.0, 0.8, 0.6],
        // Norm 5e-13 < 1e-12: torch leaves it at 5e-13 / 1e-12 = 0.5 of unit length.
        vec![3e-13, 4e-13, 0.0],
    ];
    let normalised: Vec<Vec<f32>> = rows
        .iter()
        .map(|r| {
            let norm = r.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
            r.iter()
                .map(|&v| (v as f64 / norm.max(1e-12)) as f32)
                .collect()
        })
        .collect();
    assert!((normalised[4][0] - 0.3).abs() < 1e-6, "{:?}", normalised[4]);
    let mask = [true; 5];
    for solver in SOLVERS {
        let ours = solve_rows(&rows, &mask, solver);
        let (f, n, d) = flat(&normalised);
        let plain = GraphOptions {
            l2_normalize: false,
            solver,
        };
        let expected = fiedler(&f, n, d, &mask, &plain).unwrap();
        for (a, b) in ours.vector.iter().zip(&expected.vector) {
            assert!(
                (a - b).abs() <= 1e-5,
                "{solver}: {:?} vs {:?}",
                ours.vector,
                expected.vector
            );
        }
        assert!(close(
            ours.lambda2.unwrap(),
            expected.lambda2.unwrap(),
            1e-6
        ));
        // Scaled to unit length instead, the row would be a full copy of [0.6, 0.8, 0].
        assert!(ours.vector[4] > 0.0);
    }
}

/// The signed vector's convention (`Fiedler::signed`): v itself with vᵀDv = 1, the sign fixed
/// so that its largest-magnitude entry is positive, and |v| is the vector the methods use.
#[test]
fn spec_b_signed_vector_has_its_largest_entry_positive() {
    let rows: Vec<Vec<f32>> = (0..9).map(|i| unit(0.17 * i as f64 * i as f64)).collect();
    let mask = [true; 9];
    for solver in SOLVERS {
        let f = solve_rows(&rows, &mask, solver);
        let largest = f
            .signed
            .iter()
            .copied()
            .fold(0.0f32, |m, x| if x.abs() > m.abs() { x } else { m });
        assert!(largest > 0.0, "{solver}: {:?}", f.signed);
        assert!(
            f.signed.iter().any(|&x| x < 0.0),
            "{solver}: one side of the cut is negative"
        );
        let abs: Vec<f32> = f.signed.iter().map(|x| x.abs()).collect();
        assert_eq!(abs, f.vector, "{solver}");
    }
}

/// §B step 3 guards only degrees below 1e-12: a node attached by a weight of 1e-6 keeps its
/// own degree. The returned pair must solve L v = λ D v with that D (formed here), vᵀDv = 1.
#[test]
fn spec_b_weak_degrees_above_the_guard_are_kept() {
    let weak = 1e-6;
    #[rustfmt::skip]
    let w = vec![
        1.0, 0.5, 0.0, 0.0,
        0.5, 1.0, 0.2, 0.0,
        0.0, 0.2, 1.0, weak,
        0.0, 0.0, weak, 0.0,
    ];
    let n = 4;
    let graph = Graph::from_affinity(n, &w).unwrap();
    let d: Vec<f64> = w.chunks(n).map(|r| r.iter().sum()).collect();
    for solver in SOLVERS {
        let f = graph.fiedler(solver).unwrap();
        let (lambda, v) = (f.lambda2.unwrap(), &f.signed);
        let dnorm: f64 = (0..n).map(|i| d[i] * (v[i] as f64).powi(2)).sum();
        assert!(close(dnorm, 1.0, 1e-5), "{solver}: vᵀDv = {dnorm}");
        for i in 0..n {
            let lv: f64 = (0..n)
                .map(|j| (if i == j { d[i] } else { 0.0 } - w[i * n + j]) * v[j] as f64)
                .sum();
            // Per unit of degree: the weak row's terms are all of order 1e-6.
            let r = (lv - lambda * d[i] * v[i] as f64) / d[i];
            assert!(
                r.abs() <= 1e-5,
                "{solver}: row {i} of L v − λ D v is {r:e} ({v:?})"
            );
        }
    }
}
