//! Spec §B, batched: many graphs of different sizes per call, threaded across graphs. A
//! graph's result must not depend on the batch it comes in, its position, or the number
//! of threads; a bad graph gives its own error without stopping the others.

use fiedler::linalg::synthetic::{clustered_features, Clusters};
use fiedler::linalg::{
    fiedler, fiedler_batch, solve_batch, Graph, GraphInput, GraphOptions, Solver, SpectralError,
};

const SHAPE: Clusters = Clusters {
    clusters: 4,
    shared: 0.5,
    noise: 1.0,
};

struct Owned {
    features: Vec<f32>,
    rows: usize,
    dim: usize,
    mask: Vec<bool>,
}

impl Owned {
    fn input(&self) -> GraphInput<'_> {
        GraphInput {
            features: &self.features,
            rows: self.rows,
            dim: self.dim,
            mask: &self.mask,
        }
    }
}

/// Graphs of sizes 0 to 196 with text-style masks, plus one with a NaN in a used row.
fn mixed() -> Vec<Owned> {
    let mut graphs: Vec<Owned> = [
        (2usize, 16usize),
        (3, 16),
        (4, 64),
        (20, 64),
        (38, 128),
        (50, 64),
        (198, 96),
        (1, 8),
    ]
    .iter()
    .enumerate()
    .map(|(i, &(rows, dim))| Owned {
        features: clustered_features(rows, dim, &SHAPE, 500 + i as u64),
        rows,
        dim,
        // Drop the first and last rows, as for text ([CLS]/[SEP]).
        mask: (0..rows).map(|r| r > 0 && r + 1 < rows).collect(),
    })
    .collect();
    let mut bad = clustered_features(10, 16, &SHAPE, 9);
    bad[4 * 16 + 7] = f32::NAN;
    graphs.insert(
        3,
        Owned {
            features: bad,
            rows: 10,
            dim: 16,
            mask: vec![true; 10],
        },
    );
    graphs
}

#[test]
fn spec_b_batch_matches_single_calls_bit_for_bit() {
    let graphs = mixed();
    let inputs: Vec<GraphInput> = graphs.iter().map(Owned::input).collect();
    for solver in [Solver::Lanczos, Solver::Dense] {
        let opts = GraphOptions {
            l2_normalize: true,
            solver,
        };
        let batch = fiedler_batch(&inputs, &opts);
        assert_eq!(batch.len(), inputs.len());
        for (g, got) in inputs.iter().zip(&batch) {
            let single = fiedler(g.features, g.rows, g.dim, g.mask, &opts);
            match (got, &single) {
                (Ok(a), Ok(b)) => assert_eq!(a, b),
                // The error carries the NaN itself, which never compares equal.
                (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
                _ => panic!("batch {got:?} vs single {single:?}"),
            }
        }
        assert!(matches!(
            batch[3],
            Err(SpectralError::NonFiniteFeature { row: 4, col: 7, .. })
        ));
        let tokens: Vec<usize> = batch
            .iter()
            .map(|r| r.as_ref().map_or(usize::MAX, |f| f.tokens))
            .collect();
        assert_eq!(tokens, vec![0, 1, 2, usize::MAX, 18, 36, 48, 196, 0]);
    }
}

#[test]
fn spec_b_batch_results_do_not_depend_on_thread_count_or_order() {
    let graphs = mixed();
    let inputs: Vec<GraphInput> = graphs.iter().map(Owned::input).collect();
    let opts = GraphOptions::default();
    let ok = |v: Vec<Result<_, SpectralError>>| v.into_iter().map(Result::ok).collect::<Vec<_>>();
    let many = ok(fiedler_batch(&inputs, &opts));
    let one_thread = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap()
        .install(|| ok(fiedler_batch(&inputs, &opts)));
    assert_eq!(many, one_thread);
    let reversed: Vec<GraphInput> = inputs.iter().rev().copied().collect();
    let mut back = ok(fiedler_batch(&reversed, &opts));
    back.reverse();
    assert_eq!(many, back);
}

#[test]
fn spec_b_prebuilt_graphs_solve_like_features() {
    let graphs = mixed();
    let inputs: Vec<GraphInput> = graphs
        .iter()
        .map(Owned::input)
        .filter(|g| !g.features.iter().any(|v| v.is_nan()))
        .collect();
    let built: Vec<Graph> = inputs
        .iter()
        .map(|g| Graph::from_features(g.features, g.rows, g.dim, g.mask, true).unwrap())
        .collect();
    for solver in [Solver::Lanczos, Solver::Dense] {
        let opts = GraphOptions {
            l2_normalize: true,
            solver,
        };
        assert_eq!(solve_batch(&built, solver), fiedler_batch(&inputs, &opts));
    }
}
