//! CPU timings of a ViT-B/32-sized CLIP with random weights: forward and forward+backward
//! (the trace every explanation method needs) at batch 1 and 8, plus the GEMM rate of the
//! largest projection, so model time can be read against the machine's FLOP/s.
//!
//! Run: `cargo bench --bench clip`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use fiedler::backend::{Backend, Cpu};
use fiedler::model::clip::{Clip, ClipInputs};
use fiedler::model::config::ClipConfig;
use fiedler::model::source::RandomWeights;
use std::hint::black_box;

/// Text length used for every pair: a short caption with start/end tokens.
const TEXT_TOKENS: usize = 12;

fn inputs(config: &ClipConfig, batch: usize) -> ClipInputs {
    let v = &config.vision;
    let pixels = (0..batch * 3 * v.image_size * v.image_size)
        .map(|i| ((i % 97) as f32 / 48.0) - 1.0)
        .collect();
    let mut ids = Vec::with_capacity(batch * TEXT_TOKENS);
    for b in 0..batch {
        ids.push(config.text.bos_token_id);
        ids.extend((1..TEXT_TOKENS - 1).map(|t| (100 + 7 * t + b) as u32));
        ids.push(config.text.eos_token_id);
    }
    ClipInputs {
        pixels,
        ids,
        lengths: vec![TEXT_TOKENS; batch],
        seq_len: TEXT_TOKENS,
    }
}

fn model(c: &mut Criterion) {
    let config = ClipConfig::vit_base_patch32();
    let model = Clip::from_source(
        &Cpu,
        config.clone(),
        &RandomWeights {
            seed: 7,
            scale: 0.02,
        },
    )
    .expect("model builds");
    let mut group = c.benchmark_group("clip_vit_b32_cpu");
    group.sample_size(10);
    for batch in [1usize, 8] {
        let x = inputs(&config, batch);
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_with_input(BenchmarkId::new("forward", batch), &x, |b, x| {
            b.iter(|| black_box(model.scores(&Cpu, x).unwrap()))
        });
        group.bench_with_input(BenchmarkId::new("forward_backward", batch), &x, |b, x| {
            b.iter(|| black_box(model.trace(&Cpu, x, None).unwrap()))
        });
    }
    group.finish();
}

/// The MLP up-projection of the vision tower at batch 8: [400, 768] · [3072, 768]ᵀ.
fn gemm(c: &mut Criterion) {
    let (m, k, n) = (400usize, 768usize, 3072usize);
    let x = Cpu.upload(&vec![0.5; m * k]).unwrap();
    let w = Cpu.upload_weight(&vec![0.25; n * k], n, k).unwrap();
    let bias = Cpu.upload(&vec![0.0; n]).unwrap();
    let mut out = Cpu.zeros(m * n).unwrap();
    let mut group = c.benchmark_group("gemm_f32_cpu");
    // Elements = floating-point operations, so criterion's rate reads as FLOP/s.
    group.throughput(Throughput::Elements((2 * m * n * k) as u64));
    group.bench_function(format!("linear_{m}x{k}x{n}"), |b| {
        b.iter(|| Cpu.linear(&mut out, &x, &w, Some(&bias), m, k, n).unwrap())
    });
    group.finish();
}

criterion_group!(benches, gemm, model);
criterion_main!(benches);
