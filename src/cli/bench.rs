//! `fiedler bench`: explanations per second for a full-size CLIP with random weights, per
//! method and batch size, with the time split between the trace (forward + backward) and
//! the method itself; and (`--size fiedler`) batched Fiedler vectors per second. Criterion
//! benches (`cargo bench`) cover the ops; this covers the whole job a user runs.

use std::time::Instant;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};

use crate::cli::device::{open, with_backend, Device, Opened};
use fiedler::backend::Backend;
use fiedler::explain::clip::explain_clip;
use fiedler::explain::lxmert::explain_lxmert;
use fiedler::explain::{Method, MethodOptions};
use fiedler::linalg::synthetic::{clustered_features, Clusters};
use fiedler::linalg::{fiedler_batch, GraphInput, GraphOptions};
use fiedler::model::clip::{Clip, ClipInputs};
use fiedler::model::config::{ClipConfig, LxmertConfig};
use fiedler::model::lxmert::{Lxmert, LxmertInputs};
use fiedler::model::source::RandomWeights;
use fiedler::model::VqaTarget;

#[derive(Clone, Copy, ValueEnum)]
enum Size {
    /// OpenAI ViT-B/16 CLIP (197 image tokens).
    VitB16,
    /// OpenAI ViT-B/32 CLIP (50 image tokens).
    VitB32,
    /// LXMERT base VQA (9/5/5 layers, 768 wide, 3129 answers) on 36 regions.
    LxmertBase,
    /// Batched Fiedler vectors alone (affinity + Lanczos + gap): graphs/s for each of
    /// --nodes, --batch graphs per call, 768-wide clustered features.
    Fiedler,
}

#[derive(Args)]
pub struct BenchArgs {
    /// Model size to build with random weights.
    #[arg(long, value_enum, default_value = "vit-b16")]
    size: Size,
    /// Batch sizes, comma-separated.
    #[arg(long, default_value = "1,16", value_delimiter = ',')]
    batch: Vec<usize>,
    /// Methods, comma-separated, or `all`.
    #[arg(long, default_value = "all")]
    method: String,
    /// Timed repetitions per measurement; the median is reported.
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Tokens per caption (start and end tokens included).
    #[arg(long, default_value_t = 12)]
    text_tokens: usize,
    /// Graph sizes for --size fiedler, comma-separated.
    #[arg(long, default_value = "36,196,577", value_delimiter = ',')]
    nodes: Vec<usize>,
    /// Where to compute: cpu, cuda or auto. On CUDA the trace time includes moving the
    /// trace to host memory, where the methods run.
    #[arg(long, value_enum, default_value = "cpu")]
    device: Device,
}

fn inputs(config: &ClipConfig, batch: usize, text_tokens: usize) -> ClipInputs {
    let v = &config.vision;
    let pixels = (0..batch * 3 * v.image_size * v.image_size)
        .map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0)
        .collect();
    let mut ids = Vec::with_capacity(batch * text_tokens);
    for b in 0..batch {
        ids.push(config.text.bos_token_id);
        ids.extend((1..text_tokens - 1).map(|t| (300 + 13 * t + 101 * b) as u32));
        ids.push(config.text.eos_token_id);
    }
    ClipInputs {
        pixels,
        ids,
        lengths: vec![text_tokens; batch],
        seq_len: text_tokens,
    }
}

fn median_seconds(
    repeats: usize,
    mut f: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<f64> {
    let mut times = Vec::with_capacity(repeats);
    for _ in 0..repeats.max(1) {
        let start = Instant::now();
        f()?;
        times.push(start.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.text_tokens < 2 {
        bail!("--text-tokens must be at least 2 (start and end tokens)");
    }
    let methods: Vec<Method> = if args.method == "all" {
        Method::ALL.to_vec()
    } else {
        args.method
            .split(',')
            .map(|m| m.trim().parse())
            .collect::<Result<_, _>>()?
    };
    let backend = open(args.device)?;
    let device = backend.describe();
    if let Size::Fiedler = args.size {
        return run_fiedler(&backend, &device, &args);
    }
    with_backend!(backend, be => match args.size {
        Size::LxmertBase => run_lxmert(&be, &device, &args, &methods),
        _ => run_clip(&be, &device, &args, &methods),
    })
}

fn run_clip<B: Backend>(
    be: &B,
    device: &str,
    args: &BenchArgs,
    methods: &[Method],
) -> anyhow::Result<()> {
    let (config, name) = match args.size {
        Size::VitB32 => (ClipConfig::vit_base_patch32(), "ViT-B/32"),
        _ => (ClipConfig::vit_base_patch16(), "ViT-B/16"),
    };
    let model = Clip::from_source(
        be,
        config.clone(),
        &RandomWeights {
            seed: 1,
            scale: 0.02,
        },
    )?;
    let opts = MethodOptions::default();
    println!(
        "CLIP {name}, random weights, {device}, captions of {} tokens, median of {}",
        args.text_tokens, args.repeats
    );
    print_header();
    for &batch in &args.batch {
        let x = inputs(&config, batch, args.text_tokens);
        let trace = model
            .trace(be, &x, None)
            .and_then(|t| Ok(t.into_host(be)?))
            .with_context(|| format!("batch {batch}"))?;
        report(
            methods,
            batch,
            args.repeats,
            |backward| {
                if backward {
                    model.trace(be, &x, None)?.into_host(be)?;
                } else {
                    model.record(be, &x)?.into_host(be)?;
                }
                Ok(())
            },
            |method| Ok(explain_clip(&trace, &[method], &opts).map(|_| ())?),
        )?;
    }
    Ok(())
}

/// Regions per image, as LXMERT's Faster R-CNN features give.
const REGIONS: usize = 36;

fn run_lxmert<B: Backend>(
    be: &B,
    device: &str,
    args: &BenchArgs,
    methods: &[Method],
) -> anyhow::Result<()> {
    let config = LxmertConfig::base_vqa();
    let model = Lxmert::from_source(
        be,
        config.clone(),
        &RandomWeights {
            seed: 1,
            scale: 0.02,
        },
    )?;
    let opts = MethodOptions::default();
    println!(
        "LXMERT base, random weights, {device}, questions of {} tokens, {REGIONS} regions, median of {}",
        args.text_tokens,
        args.repeats
    );
    print_header();
    for &batch in &args.batch {
        let x = LxmertInputs {
            features: (0..batch * REGIONS * config.visual_feat_dim)
                .map(|i| (i % 101) as f32 / 101.0)
                .collect(),
            boxes: (0..batch * REGIONS * 4)
                .map(|i| [0.1, 0.2, 0.6, 0.9][i % 4])
                .collect(),
            regions: REGIONS,
            ids: (0..batch * args.text_tokens)
                .map(|i| (1000 + 37 * i % 20000) as u32)
                .collect(),
            lengths: vec![args.text_tokens; batch],
            seq_len: args.text_tokens,
        };
        let trace = model
            .trace(be, &x, &VqaTarget::Predicted)
            .and_then(|t| Ok(t.into_host(be)?))
            .with_context(|| format!("batch {batch}"))?;
        report(
            methods,
            batch,
            args.repeats,
            |backward| {
                if backward {
                    model.trace(be, &x, &VqaTarget::Predicted)?.into_host(be)?;
                } else {
                    model.record(be, &x)?.into_host(be)?;
                }
                Ok(())
            },
            |method| Ok(explain_lxmert(&trace, &[method], &opts).map(|_| ())?),
        )?;
    }
    Ok(())
}

/// Feature width of the Fiedler benchmark (ViT-B and LXMERT token width).
const FIEDLER_DIM: usize = 768;
/// Distinct feature sets per Fiedler batch.
const DISTINCT_GRAPHS: usize = 8;

fn run_fiedler(backend: &Opened, device: &str, args: &BenchArgs) -> anyhow::Result<()> {
    let opts = GraphOptions::default();
    let shape = Clusters {
        clusters: 4,
        shared: 0.5,
        noise: 1.0,
    };
    println!(
        "Fiedler vectors (affinity, Lanczos, gap), {FIEDLER_DIM}-wide clustered features, {device}, median of {}",
        args.repeats
    );
    println!(
        "{:>6} {:>7} {:>10} {:>12}",
        "nodes", "graphs", "ms", "graphs/s"
    );
    for &n in &args.nodes {
        for &batch in &args.batch {
            // A few distinct graphs, repeated: generating 577×768 features per graph would
            // take longer than solving them.
            let features: Vec<Vec<f32>> = (0..batch.min(DISTINCT_GRAPHS))
                .map(|b| clustered_features(n, FIEDLER_DIM, &shape, b as u64))
                .collect();
            let mask = vec![true; n];
            let graphs: Vec<GraphInput> = features
                .iter()
                .cycle()
                .take(batch)
                .map(|f| GraphInput {
                    features: f,
                    rows: n,
                    dim: FIEDLER_DIM,
                    mask: &mask,
                })
                .collect();
            let seconds = median_seconds(args.repeats, || {
                let results = match backend {
                    Opened::Cpu(_) => fiedler_batch(&graphs, &opts),
                    #[cfg(feature = "cuda")]
                    Opened::Cuda(cuda) => cuda
                        .fiedler_batch(&graphs, opts.l2_normalize)
                        .with_context(|| format!("{batch} graphs of {n} nodes"))?,
                };
                results.into_iter().collect::<Result<Vec<_>, _>>()?;
                Ok(())
            })?;
            println!(
                "{n:>6} {batch:>7} {:>10.2} {:>12.0}",
                seconds * 1e3,
                batch as f64 / seconds
            );
        }
    }
    Ok(())
}

fn print_header() {
    println!(
        "{:<16} {:>5} {:>10} {:>10} {:>12}",
        "method", "batch", "trace ms", "method ms", "expl/s"
    );
}

/// One row per method: the trace it needs (with a backward only for gradient methods), the
/// method itself, and explanations per second for the two together.
fn report(
    methods: &[Method],
    batch: usize,
    repeats: usize,
    mut trace: impl FnMut(bool) -> anyhow::Result<()>,
    mut method: impl FnMut(Method) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let with_backward = median_seconds(repeats, || trace(true))?;
    let forward_only = median_seconds(repeats, || trace(false))?;
    for &m in methods {
        let trace_s = if m.needs_gradients() {
            with_backward
        } else {
            forward_only
        };
        let method_s = median_seconds(repeats, || method(m))?;
        println!(
            "{:<16} {:>5} {:>10.1} {:>10.1} {:>12.2}",
            m.name(),
            batch,
            trace_s * 1e3,
            method_s * 1e3,
            batch as f64 / (trace_s + method_s)
        );
    }
    Ok(())
}
