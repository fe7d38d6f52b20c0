//! CUDA op throughput at the sizes of a ViT-B/16 CLIP batch of 64 (197 tokens, 768 wide,
//! 12 heads, MLP 3072), and batched Fiedler vectors (n = 36, 196, 577; 768-wide features).
//! Each iteration ends with a device synchronisation, so times are GPU times plus launch
//! overhead. Without a CUDA device it prints why and measures nothing.
//!
//! Run: `cargo bench --bench cuda` (on a GPU machine: scripts/gpu-check.sh runs the
//! prebuilt executable with `--bench`).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use fiedler::backend::cuda::Cuda;
use fiedler::backend::{Activation, AttentionShape, Backend};
use fiedler::linalg::synthetic::{clustered_features, Clusters};
use fiedler::linalg::GraphInput;

const BATCH: usize = 64;
const TOKENS: usize = 197;
const WIDTH: usize = 768;
const HEADS: usize = 12;
const MLP: usize = 3072;

fn values(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0)
        .collect()
}

fn ops(c: &mut Criterion, cuda: &Cuda) {
    let rows = BATCH * TOKENS;
    let sync = || cuda.synchronize().unwrap();
    let mut group = c.benchmark_group("cuda_ops_vit_b16_batch64");
    group.throughput(Throughput::Elements(rows as u64));

    let x = cuda.upload(&values(rows * WIDTH)).unwrap();
    let w = cuda
        .upload_weight(&values(MLP * WIDTH), MLP, WIDTH)
        .unwrap();
    let bias = cuda.upload(&values(MLP)).unwrap();
    let mut h = cuda.zeros(rows * MLP).unwrap();
    group.bench_function("linear_768x3072", |b| {
        b.iter(|| {
            cuda.linear(&mut h, &x, &w, Some(&bias), rows, WIDTH, MLP)
                .unwrap();
            sync()
        })
    });
    let mut dx = cuda.zeros(rows * WIDTH).unwrap();
    group.bench_function("linear_backward_3072x768", |b| {
        b.iter(|| {
            cuda.linear_backward(&mut dx, &h, &w, rows, WIDTH, MLP, false)
                .unwrap();
            sync()
        })
    });
    let mut act = cuda.zeros(rows * MLP).unwrap();
    group.bench_function("quick_gelu_3072", |b| {
        b.iter(|| {
            cuda.activation(&mut act, &h, Activation::QuickGelu)
                .unwrap();
            sync()
        })
    });
    let (gamma, beta) = (
        cuda.upload(&values(WIDTH)).unwrap(),
        cuda.upload(&values(WIDTH)).unwrap(),
    );
    let mut y = cuda.zeros(rows * WIDTH).unwrap();
    let mut stats = cuda.zeros(2 * rows).unwrap();
    group.bench_function("layernorm_768", |b| {
        b.iter(|| {
            cuda.layernorm(&mut y, &mut stats, &x, &gamma, &beta, WIDTH, 1e-5)
                .unwrap();
            sync()
        })
    });

    let s = AttentionShape::self_attention(BATCH, HEADS, TOKENS, WIDTH / HEADS);
    let q = cuda.upload(&values(rows * WIDTH)).unwrap();
    let kv = cuda.upload(&values(rows * 2 * WIDTH)).unwrap();
    let mut probs = cuda.zeros(s.probs_len()).unwrap();
    let mut ctx = cuda.zeros(rows * WIDTH).unwrap();
    group.bench_function("attention_forward", |b| {
        b.iter(|| {
            cuda.attention(&mut probs, &mut ctx, &q, &kv, &s).unwrap();
            sync()
        })
    });
    let (mut dprobs, mut dq) = (
        cuda.zeros(s.probs_len()).unwrap(),
        cuda.zeros(rows * WIDTH).unwrap(),
    );
    let mut dkv = cuda.zeros(rows * 2 * WIDTH).unwrap();
    group.bench_function("attention_backward", |b| {
        b.iter(|| {
            cuda.attention_backward(&mut dprobs, &mut dq, &mut dkv, &ctx, &q, &kv, &probs, &s)
                .unwrap();
            sync()
        })
    });
    group.finish();
}

fn fiedler(c: &mut Criterion, cuda: &Cuda) {
    let shape = Clusters {
        clusters: 4,
        shared: 0.5,
        noise: 1.0,
    };
    let mut group = c.benchmark_group("cuda_fiedler_batch");
    for n in [36usize, 196, 577] {
        let distinct: Vec<Vec<f32>> = (0..8)
            .map(|i| clustered_features(n, WIDTH, &shape, i))
            .collect();
        let mask = vec![true; n];
        let graphs: Vec<GraphInput> = distinct
            .iter()
            .cycle()
            .take(256)
            .map(|f| GraphInput {
                features: f,
                rows: n,
                dim: WIDTH,
                mask: &mask,
            })
            .collect();
        group.throughput(Throughput::Elements(graphs.len() as u64));
        group.bench_with_input(BenchmarkId::new("graphs256", n), &graphs, |b, graphs| {
            b.iter(|| black_box(cuda.fiedler_batch(graphs, true).unwrap()))
        });
        // The same graphs from features already on the device (a model's hidden states):
        // the solve without the host-to-device copy of 256·n·768 floats.
        let packed: Vec<f32> = distinct.concat();
        let on_device = cuda.upload(&packed).unwrap();
        let spans: Vec<(usize, &[bool])> = (0..graphs.len())
            .map(|g| ((g % distinct.len()) * n, mask.as_slice()))
            .collect();
        group.bench_with_input(
            BenchmarkId::new("graphs256_on_device", n),
            &spans,
            |b, spans| {
                b.iter(|| {
                    black_box(
                        cuda.fiedler_batch_device(&on_device, WIDTH, spans, true)
                            .unwrap(),
                    )
                })
            },
        );
    }
    group.finish();
}

fn benches(c: &mut Criterion) {
    let cuda = match Cuda::new() {
        Ok(cuda) => cuda,
        // scripts/gpu-check.sh sets FIEDLER_REQUIRE_CUDA=1: there a skip would hide a failure.
        Err(e) if std::env::var_os("FIEDLER_REQUIRE_CUDA").is_some_and(|v| v == "1") => {
            panic!("FIEDLER_REQUIRE_CUDA is set but CUDA fails: {e}")
        }
        Err(e) => {
            println!("skipped: no CUDA device ({e})");
            return;
        }
    };
    println!("device: {}", cuda.describe());
    ops(c, &cuda);
    fiedler(c, &cuda);
}

criterion_group! {
    name = cuda;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    targets = benches
}
criterion_main!(cuda);
