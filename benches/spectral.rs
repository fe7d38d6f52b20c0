//! Spectral core throughput (spec §B), in graphs per second, for the graph sizes the model
//! families produce: 36 (LXMERT regions), 49 (CLIP B/32 patches), 196 (ViT-B/16 patches)
//! and 577 (ViT-L/14 at 336 px, with its class token).
//!
//! - `spectral_solve/<kind>/<solver>`: the eigensolver alone, from a prebuilt graph — what
//!   the seed's `scipy.sparse.linalg.eigs(L, k=5, sigma=-0.5, M=D)` call does, so its
//!   numbers compare with `tools/reference/spectral_time_scipy.py` (same features, same
//!   generator). `kind` is `clustered` (transformer-like structure) or `random` (no
//!   structure: a tight spectrum, the slowest case for Lanczos).
//! - `spectral_features/<solver>`: features (d = 768) → Fiedler vector, including the f64
//!   Gram matrix F Fᵀ, which dominates at this width.
//!
//! Batch 1 runs one graph on one thread; batch 256 spreads graphs over all threads.
//! Run: `cargo bench --bench spectral` (add `-- --quick` for a short pass).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use fiedler::linalg::synthetic::{clustered_features, random_features, Clusters};
use fiedler::linalg::{fiedler_batch, solve_batch, Graph, GraphInput, GraphOptions, Solver};

const SIZES: [usize; 4] = [36, 49, 196, 577];
const BATCHES: [usize; 2] = [1, 256];
const DIM: usize = 768;
/// Distinct graphs per size; a batch cycles through them. The scipy script times the same.
const DISTINCT: usize = 16;
/// The clustered shape of the golden tests and the scipy timing script.
const SHAPE: Clusters = Clusters {
    clusters: 4,
    shared: 0.5,
    noise: 1.0,
};
const SOLVERS: [Solver; 2] = [Solver::Lanczos, Solver::Dense];

/// Seed of distinct graph `i` of size `n` (mirrored by spectral_time_scipy.py).
fn seed(n: usize, i: usize) -> u64 {
    (n * 1000 + i) as u64
}

fn features(kind: &str, n: usize, i: usize) -> Vec<f32> {
    match kind {
        "random" => random_features(n, DIM, seed(n, i)),
        _ => clustered_features(n, DIM, &SHAPE, seed(n, i)),
    }
}

fn solve(c: &mut Criterion) {
    for kind in ["clustered", "random"] {
        for solver in SOLVERS {
            let mut group = c.benchmark_group(format!("spectral_solve/{kind}/{solver}"));
            for n in SIZES {
                let distinct: Vec<Graph> = (0..DISTINCT)
                    .map(|i| {
                        Graph::from_features(&features(kind, n, i), n, DIM, &vec![true; n], true)
                            .unwrap()
                    })
                    .collect();
                for batch in BATCHES {
                    let graphs: Vec<Graph> =
                        (0..batch).map(|i| distinct[i % DISTINCT].clone()).collect();
                    group.throughput(Throughput::Elements(batch as u64));
                    group.bench_with_input(
                        BenchmarkId::new(format!("n{n}"), batch),
                        &graphs,
                        |b, g| b.iter(|| black_box(solve_batch(g, solver))),
                    );
                }
            }
            group.finish();
        }
    }
}

fn from_features(c: &mut Criterion) {
    for solver in SOLVERS {
        let mut group = c.benchmark_group(format!("spectral_features/{solver}"));
        let opts = GraphOptions {
            l2_normalize: true,
            solver,
        };
        for n in SIZES {
            let distinct: Vec<Vec<f32>> =
                (0..DISTINCT).map(|i| features("clustered", n, i)).collect();
            let mask = vec![true; n];
            for batch in BATCHES {
                let inputs: Vec<GraphInput> = (0..batch)
                    .map(|i| GraphInput {
                        features: &distinct[i % DISTINCT],
                        rows: n,
                        dim: DIM,
                        mask: &mask,
                    })
                    .collect();
                group.throughput(Throughput::Elements(batch as u64));
                group.bench_with_input(
                    BenchmarkId::new(format!("n{n}"), batch),
                    &inputs,
                    |b, g| b.iter(|| black_box(fiedler_batch(g, &opts))),
                );
            }
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = solve, from_features
}
criterion_main!(benches);
