//! `fiedler bench`: explanations per second for a full-size CLIP with random weights, per
//! method and batch size, with the time split between the trace (forward + backward) and
//! the method itself; and (`--size fiedler`) batched Fiedler vectors per second. Criterion
//! benches (`cargo bench`) cover the ops; this covers the whole job a user runs.

use std::cell::Cell;
use std::ops::ControlFlow;
use std::time::Instant;

use crate::cli::device::{open, with_backend, Device, Opened, Precision};
use crate::cli::{counted, positive};
use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use fiedler::backend::cpu::matmul_flops;
use fiedler::backend::cpu::memory::check_fits;
#[cfg(feature = "cuda")]
use fiedler::backend::cuda::FiedlerStages;
use fiedler::backend::{Backend, Cpu};
use fiedler::eval::answers::GroundTruth;
use fiedler::eval::dataset::Question;
use fiedler::eval::lxmert::{LxmertEval, LxmertInput};
use fiedler::eval::protocol::DEFAULT_STEPS;
use fiedler::eval::report::TESTS;
use fiedler::eval::results::{Done, ResultsWriter, RunHeader, FORMAT};
use fiedler::eval::runner::{
    run as eval_run, Answering, EvalModel, EvalTarget, Explained, Keep, Plan,
};
use fiedler::eval::EvalError;
use fiedler::explain::clip::{clip_reads, clip_trace, explain_clip};
use fiedler::explain::lxmert::{explain_lxmert, grad_scope, lrp_scope, lxmert_reads};
use fiedler::explain::vilt::{explain_vilt, vilt_reads, vilt_trace};
use fiedler::explain::{Method, MethodOptions};
use fiedler::input::regions::Regions;
use fiedler::linalg::synthetic::{clustered_features, Clusters};
use fiedler::linalg::{fiedler_batch, GraphInput, GraphOptions};
use fiedler::model::clip::{Clip, ClipInputs};
use fiedler::model::config::{ClipConfig, LxmertConfig, ViltConfig};
use fiedler::model::lxmert::{Lxmert, LxmertInputs, LxmertReads};
use fiedler::model::source::RandomWeights;
use fiedler::model::vilt::{Vilt, ViltInputs};
use fiedler::model::VqaTarget;

#[derive(Clone, Copy, ValueEnum)]
enum Size {
    /// OpenAI ViT-B/16 CLIP (197 image tokens).
    VitB16,
    /// OpenAI ViT-B/32 CLIP (50 image tokens).
    VitB32,
    /// LXMERT base VQA (9/5/5 layers, 768 wide, 3129 answers) on 36 regions.
    LxmertBase,
    /// ViLT-B/32 VQA (12 layers, 768 wide, 3129 answers) on a 640 × 480 photo as it resizes
    /// it: 384 × 512 pixels, 192 patches.
    ViltB32,
    /// Batched Fiedler vectors alone (affinity + Lanczos + gap): graphs/s for each of
    /// --nodes, --batch graphs per call, 768-wide clustered features.
    Fiedler,
}

#[derive(Args)]
pub struct BenchArgs {
    /// Model size to build with random weights.
    #[arg(long, value_enum, ignore_case = true, default_value = "vit-b16")]
    size: Size,
    /// Batch sizes, comma-separated.
    #[arg(long, default_value = "1,16", value_delimiter = ',', value_parser = positive, allow_negative_numbers = true)]
    batch: Vec<usize>,
    /// Methods, comma-separated, or `all` (the default): the names explain --method takes.
    /// Not for --size fiedler, which times the solver alone.
    #[arg(long)]
    method: Option<String>,
    /// Timed repetitions per measurement; the median is reported.
    #[arg(long, default_value_t = 3, value_parser = positive, allow_negative_numbers = true)]
    repeats: usize,
    /// Tokens per caption or question (start and end tokens included) [default: 12]. Not
    /// for --size fiedler.
    #[arg(long)]
    text_tokens: Option<usize>,
    /// Time the perturbation benchmark instead (`fiedler eval`, all four tests, the seed's
    /// steps): samples per second per batch size (LXMERT only).
    #[arg(long)]
    eval: bool,
    /// Samples per --eval measurement [default: 8].
    #[arg(long, value_parser = positive, allow_negative_numbers = true)]
    eval_samples: Option<usize>,
    /// Graph sizes for --size fiedler, comma-separated, each at least 2 (a graph of one
    /// node has no Fiedler vector to find) [default: 36,196,577].
    #[arg(long, value_delimiter = ',', value_parser = node_count, allow_negative_numbers = true)]
    nodes: Option<Vec<usize>>,
    /// Where to compute: cpu, cuda or auto. The trace time includes moving the trace to
    /// host memory, where the methods run, reduced first to what they read (head means and
    /// Fiedler vectors; CLIP also the rows of the relevance products); the "to host" column
    /// is that part (on the CPU, the reduction alone).
    #[arg(long, value_enum, ignore_case = true, default_value = "cpu")]
    device: Device,
    /// With --size fiedler --device cuda: also where the on-device solve's time goes, in ms,
    /// medians of --repeats further calls: the device time of each stage (rows to f64, the
    /// Gram DGEMMs, the per-graph Lanczos kernel; CUDA events), and the host's wall-clock
    /// time before the last launch, waiting for the results, and after them.
    #[arg(long)]
    stages: bool,
    #[command(flatten)]
    precision: Precision,
}

impl BenchArgs {
    fn text_tokens(&self) -> usize {
        self.text_tokens.unwrap_or(12)
    }

    fn eval_samples(&self) -> usize {
        self.eval_samples.unwrap_or(8)
    }

    fn nodes(&self) -> Vec<usize> {
        self.nodes.clone().unwrap_or_else(|| vec![36, 196, 577])
    }

    /// Options given that the asked measurement does not read, and what they are for:
    /// refused rather than ignored.
    fn unused(&self) -> Option<(&'static str, &'static str)> {
        let fiedler = matches!(self.size, Size::Fiedler);
        [
            (
                fiedler && self.method.is_some(),
                "--method",
                "the model benchmarks",
            ),
            (
                fiedler && self.text_tokens.is_some(),
                "--text-tokens",
                "the model benchmarks",
            ),
            (
                !fiedler && self.nodes.is_some(),
                "--nodes",
                "--size fiedler",
            ),
            (
                !self.eval && self.eval_samples.is_some(),
                "--eval-samples",
                "--eval",
            ),
        ]
        .into_iter()
        .find_map(|(unused, flag, purpose)| unused.then_some((flag, purpose)))
    }
}

/// The weights of every model the bench builds.
const RANDOM_WEIGHTS: RandomWeights = RandomWeights {
    seed: 1,
    scale: 0.02,
};

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

/// clap's parser of a `--nodes` size: a whole number, which `run` requires to be at least 2
/// (`positive` would call 1 valid, and `run` refuse it).
fn node_count(arg: &str) -> Result<usize, String> {
    arg.trim()
        .parse::<usize>()
        .map_err(|e| match arg.trim().starts_with('-') {
            true => "a graph needs at least 2 nodes to have a Fiedler vector".into(),
            false => e.to_string(),
        })
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    if let Some((flag, purpose)) = args.unused() {
        bail!("{flag} is not read by this measurement: it is for {purpose}");
    }
    if args.text_tokens() < 2 {
        bail!("--text-tokens must be at least 2 (start and end tokens)");
    }
    let methods = Method::parse_list(args.method.as_deref().unwrap_or("all"))?;
    if let Some(n) = args.nodes().into_iter().find(|&n| n < 2) {
        bail!("--nodes {n}: a graph needs at least 2 nodes to have a Fiedler vector");
    }
    let positions = match args.size {
        Size::VitB16 => ClipConfig::vit_base_patch16().text.max_position_embeddings,
        Size::VitB32 => ClipConfig::vit_base_patch32().text.max_position_embeddings,
        Size::LxmertBase => LxmertConfig::base_vqa().max_position_embeddings,
        Size::ViltB32 => ViltConfig::b32_vqa().max_position_embeddings,
        Size::Fiedler => usize::MAX,
    };
    if args.text_tokens() > positions {
        bail!(
            "--text-tokens {}: the model has {positions} text positions",
            args.text_tokens()
        );
    }
    if args.eval && !matches!(args.size, Size::LxmertBase) {
        bail!("--eval times LXMERT: use --size lxmert-base");
    }
    if args.stages && !(matches!(args.size, Size::Fiedler) && args.device == Device::Cuda) {
        bail!("--stages times the CUDA Fiedler solve: use --size fiedler --device cuda");
    }
    let backend = open(args.device, args.precision)?;
    let device = backend.describe();
    if args.eval {
        return with_backend!(backend, be => run_eval(&be, &device, &args, &methods));
    }
    if let Size::Fiedler = args.size {
        return run_fiedler(&backend, &device, &args);
    }
    if args.device == Device::Cpu {
        outln!(
            "f32 dense products on this CPU: {:.0} GFLOP/s at best, measured now (about what \
             the GFLOP/s column can reach; a machine busy with other work measures less)",
            matmul_peak()?
        )?;
    }
    with_backend!(backend, be => {
        match args.size {
            Size::LxmertBase => run_lxmert(&be, &device, &args, &methods),
            Size::ViltB32 => run_vilt(&be, &device, &args, &methods),
            _ => run_clip(&be, &device, &args, &methods),
        }?;
        // The timed runs of the last batch size: each size's warm-up restarts the profile.
        if let Some(table) = be.profile_report()? {
            outln!("{table}")?;
        }
        Ok(())
    })
}

/// The CPU backend's f32 product rate at a feed-forward shape of a base model at batch 16
/// (3152 × 768 by 768 × 3072), best of five.
fn matmul_peak() -> anyhow::Result<f64> {
    let (m, k, n) = (3152, 768, 3072);
    let x = Cpu.upload(&vec![0.5; m * k])?;
    let w = Cpu.upload_weight(&vec![0.25; n * k], n, k)?;
    let mut out = Cpu.zeros(m * n)?;
    let mut best = f64::MAX;
    for _ in 0..5 {
        let start = Instant::now();
        Cpu.linear(&mut out, &x, &w, None, m, k, n)?;
        best = best.min(start.elapsed().as_secs_f64());
    }
    Ok(2.0 * (m * k * n) as f64 / best / 1e9)
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
    let model = Clip::from_source(be, config.clone(), &RANDOM_WEIGHTS)?;
    let opts = MethodOptions::default();
    outln!(
        "CLIP {name}, random weights, {device}, captions of {} tokens, median of {}",
        args.text_tokens(),
        args.repeats
    )?;
    print_header()?;
    for &batch in &args.batch {
        let side = config.vision.image_size;
        let pixels = batch.saturating_mul(3 * side * side);
        check_fits("making the input images", pixels.saturating_mul(4))
            .with_context(|| format!("batch {batch}"))?;
        let x = inputs(&config, batch, args.text_tokens());
        report_traced(
            be,
            methods,
            (batch, args.repeats),
            |methods| Ok(clip_trace(&model, be, &x, methods, &opts)?),
            |trace, methods| {
                let reads = clip_reads(methods, &trace, &opts);
                Ok(trace.into_host_for(be, &reads)?)
            },
            |trace, method| Ok(explain_clip(trace, &[method], &opts).map(|_| ())?),
        )?;
    }
    Ok(())
}

/// Regions per image, as LXMERT's Faster R-CNN features give.
const REGIONS: usize = 36;

/// LXMERT base with random weights.
fn random_lxmert<B: Backend>(be: &B) -> anyhow::Result<(LxmertConfig, Lxmert<B>)> {
    let config = LxmertConfig::base_vqa();
    let model = Lxmert::from_source(be, config.clone(), &RANDOM_WEIGHTS)?;
    Ok((config, model))
}

fn run_lxmert<B: Backend>(
    be: &B,
    device: &str,
    args: &BenchArgs,
    methods: &[Method],
) -> anyhow::Result<()> {
    let (config, model) = random_lxmert(be)?;
    let opts = MethodOptions::default();
    outln!(
        "LXMERT base, random weights, {device}, questions of {} tokens, {REGIONS} regions, median of {}",
        args.text_tokens(),
        args.repeats
    )?;
    print_header()?;
    for &batch in &args.batch {
        let features = batch.saturating_mul(REGIONS * config.visual_feat_dim);
        check_fits("making the input regions", features.saturating_mul(4))
            .with_context(|| format!("batch {batch}"))?;
        let x = LxmertInputs {
            features: (0..batch * REGIONS * config.visual_feat_dim)
                .map(|i| (i % 101) as f32 / 101.0)
                .collect(),
            boxes: (0..batch * REGIONS * 4)
                .map(|i| [0.1, 0.2, 0.6, 0.9][i % 4])
                .collect(),
            regions: REGIONS,
            region_counts: None,
            ids: (0..batch * args.text_tokens())
                .map(|i| (1000 + 37 * i % 20000) as u32)
                .collect(),
            lengths: vec![args.text_tokens(); batch],
            seq_len: args.text_tokens(),
        };
        let target = VqaTarget::Predicted;
        let trace = model
            .trace_with(be, &x, &target, grad_scope(methods), lrp_scope(methods))
            .and_then(|t| Ok(t.into_host_for(be, lxmert_reads(methods, &opts))?))
            .with_context(|| format!("batch {batch}"))?;
        be.profile_restart()?;
        report(
            methods,
            batch,
            args.repeats,
            // LXMERT's methods read different modules: each runs its passes only as deep
            // as it needs them, and brings to the host what it reads.
            |m| {
                let reads = lxmert_reads(&[m], &opts);
                let kept = (reads.last_layer_heads, reads.graphs.is_some());
                (grad_scope(&[m]), lrp_scope(&[m]), kept)
            },
            |(gradients, relevance, (last_layer_heads, graphs))| {
                let reads = LxmertReads {
                    last_layer_heads,
                    graphs: graphs.then_some(opts.graph),
                };
                let start = Instant::now();
                let trace = model.trace_with(be, &x, &target, gradients, relevance)?;
                be.synchronize()?;
                let computed = start.elapsed().as_secs_f64();
                drop(trace.into_host_for(be, reads)?);
                Ok(computed)
            },
            |method| Ok(explain_lxmert(&trace, &[method], &opts).map(|_| ())?),
        )?;
    }
    Ok(())
}

/// The image ViLT sees of a 640 × 480 photo: resized to 384 pixels on its shorter side.
const VILT_IMAGE: (usize, usize) = (384, 512);

fn run_vilt<B: Backend>(
    be: &B,
    device: &str,
    args: &BenchArgs,
    methods: &[Method],
) -> anyhow::Result<()> {
    let config = ViltConfig::b32_vqa();
    let model = Vilt::from_source(be, config.clone(), &RANDOM_WEIGHTS)?;
    let opts = MethodOptions::default();
    let (height, width) = VILT_IMAGE;
    let patches = (height / config.patch_size) * (width / config.patch_size);
    outln!(
        "ViLT-B/32, random weights, {device}, questions of {} tokens, {height} x {width} images ({patches} patches), median of {}",
        args.text_tokens(),
        args.repeats
    )?;
    print_header()?;
    for &batch in &args.batch {
        let pixels = batch.saturating_mul(3 * height * width);
        check_fits("making the input images", pixels.saturating_mul(5))
            .with_context(|| format!("batch {batch}"))?;
        let tokens = args.text_tokens();
        let x = ViltInputs {
            pixels: (0..pixels)
                .map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0)
                .collect(),
            pixel_mask: vec![true; batch * height * width],
            height,
            width,
            ids: (0..batch)
                .flat_map(|b| {
                    let words = (1..tokens - 1).map(move |t| (1000 + 37 * t + 101 * b) as u32);
                    std::iter::once(101).chain(words).chain([102])
                })
                .collect(),
            lengths: vec![tokens; batch],
            seq_len: tokens,
            kept_patches: None,
        };
        let target = VqaTarget::Predicted;
        report_traced(
            be,
            methods,
            (batch, args.repeats),
            |methods| Ok(vilt_trace(&model, be, &x, methods, &opts, &target)?),
            |trace, methods| {
                let reads = vilt_reads(methods, &trace, &opts);
                Ok(trace.into_host_for(be, &reads)?)
            },
            |trace, method| Ok(explain_vilt(trace, &[method], &opts).map(|_| ())?),
        )?;
    }
    Ok(())
}

/// The perturbation benchmark on random inputs: questions of `--text-tokens` tokens over
/// 36 random regions, every method asked, all four tests at the seed's nine steps.
fn run_eval<B: Backend>(
    be: &B,
    device: &str,
    args: &BenchArgs,
    methods: &[Method],
) -> anyhow::Result<()> {
    let (config, model) = random_lxmert(be)?;
    let answers: Vec<String> = (0..config.id2label.len())
        .map(|i| format!("answer{i}"))
        .collect();
    let evaluator = LxmertEval {
        backend: be,
        model: &model,
        answers: &answers,
        pad_id: 0,
    };
    let n = args.eval_samples();
    let questions: Vec<Question> = (0..n)
        .map(|i| Question {
            id: i.to_string(),
            image_id: i.to_string(),
            text: String::new(),
            truth: GroundTruth::Scores([(answers[i % 7].clone(), 1.0)].into()),
        })
        .collect();
    let input = |q: &Question| -> Result<LxmertInput, EvalError> {
        let i: usize = q.id.parse().expect("numeric ids");
        let f = config.visual_feat_dim;
        let regions = Regions {
            features: (0..REGIONS * f)
                .map(|j| ((j * 7919 + i * 104_729) % 1000) as f32 / 1000.0)
                .collect(),
            boxes: (0..REGIONS)
                .flat_map(|r| {
                    let x = (r % 6) as f32 / 7.0;
                    let y = (r / 6) as f32 / 7.0;
                    [x, y, x + 0.14, y + 0.14]
                })
                .collect(),
            count: REGIONS,
            dim: f,
            image_size: None,
            source: format!("random {i}"),
        };
        let mut ids = vec![101u32];
        ids.extend((1..args.text_tokens() - 1).map(|t| (1000 + 37 * t + 101 * i) as u32 % 20_000));
        ids.push(102);
        Ok(LxmertInput::new(regions, ids))
    };
    let refs: Vec<&Question> = questions.iter().collect();
    let path =
        std::env::temp_dir().join(format!("fiedler-bench-eval-{}.jsonl", std::process::id()));
    let header = RunHeader {
        format: FORMAT,
        family: "lxmert".into(),
        model: "random lxmert-base".into(),
        dataset: "random".into(),
        inputs: "random".into(),
        steps: DEFAULT_STEPS.to_vec(),
        seed: 0,
        ground_truth: None,
        weights: None,
        data: None,
        model_files: None,
        answers: None,
        file_patterns: None,
        precision: None,
        solver: None,
        target: None,
        chance: None,
        cwd: None,
    };
    outln!(
        "perturbation benchmark: LXMERT base, random weights, {device}, {}, questions of {} tokens, {REGIONS} regions, {} x 4 tests x {} steps",
        counted(n, "sample"),
        args.text_tokens(),
        counted(methods.len(), "method"),
        DEFAULT_STEPS.len()
    )?;
    outln!(
        "{:>5} {:>10} {:>10} {:>24} {:>26}",
        "batch",
        "s total",
        "samples/s",
        "ms per (sample, test)",
        "forwards per (sample, test)"
    )?;
    for &batch in &args.batch {
        let _ = std::fs::remove_file(&path);
        let (mut writer, _) = ResultsWriter::open(&path, &header)?;
        let plan = Plan {
            methods: methods.to_vec(),
            tests: TESTS.to_vec(),
            steps: DEFAULT_STEPS.to_vec(),
            batch,
            strict: true,
            opts: MethodOptions::default(),
            // The benchmark times the methods' forwards.
            chance: None,
            target: EvalTarget::Predicted,
        };
        let counted = Counting {
            inner: &evaluator,
            inputs: Cell::new(0),
        };
        let start = Instant::now();
        // Its progress never stops the run.
        let _ = eval_run(
            &counted,
            &refs,
            input,
            &plan,
            None,
            &Done::default(),
            &mut writer,
            |_| ControlFlow::Continue(()),
        )?;
        let seconds = start.elapsed().as_secs_f64();
        let tests = (n * methods.len() * TESTS.len()) as f64;
        outln!(
            "{batch:>5} {seconds:>10.2} {:>10.3} {:>24.1} {:>26.2}",
            n as f64 / seconds,
            seconds / tests * 1e3,
            counted.inputs.get() as f64 / tests
        )?;
    }
    let _ = std::fs::remove_file(&path);
    outln!("reference: one explanation (forward + backward) and 9 forwards per (sample, test), at batch 1")?;
    Ok(())
}

/// Counts the perturbed inputs a run feeds the model (explanation passes not included).
struct Counting<'a, M> {
    inner: &'a M,
    inputs: Cell<usize>,
}

impl<M: EvalModel + Answering<M::Input>> EvalModel for Counting<'_, M> {
    type Input = M::Input;

    fn explain(
        &self,
        inputs: &[&M::Input],
        methods: &[Method],
        opts: &MethodOptions,
        target: &VqaTarget,
    ) -> Result<Vec<Explained>, EvalError> {
        self.inner.explain(inputs, methods, opts, target)
    }

    fn answering(&self) -> Option<&dyn Answering<M::Input>> {
        Some(self)
    }
}

impl<M: EvalModel + Answering<M::Input>> Answering<M::Input> for Counting<'_, M> {
    fn answers(&self) -> &[String] {
        self.inner.answers()
    }

    fn predict(&self, items: &[(&M::Input, &Keep)]) -> Result<Vec<usize>, EvalError> {
        self.inputs.set(self.inputs.get() + items.len());
        self.inner.predict(items)
    }
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
    outln!(
        "Fiedler vectors (affinity, Lanczos, gap), {FIEDLER_DIM}-wide clustered features, {device}, median of {}",
        args.repeats
    )?;
    out!(
        "{:>6} {:>7} {:>10} {:>12} {:>18}",
        "nodes",
        "graphs",
        "ms",
        "graphs/s",
        "on-device graphs/s"
    )?;
    if args.stages {
        out!(
            " {:>8} {:>8} {:>8} {:>9} {:>8} {:>8}",
            "rows ms",
            "gram ms",
            "graph ms",
            "before ms",
            "wait ms",
            "after ms"
        )?;
    }
    outln!()?;
    for n in args.nodes() {
        for &batch in &args.batch {
            let distinct = batch.min(DISTINCT_GRAPHS);
            let features = distinct.saturating_mul(n).saturating_mul(FIEDLER_DIM * 4);
            // The host solves a graph per thread at once, each with its features in f64 and
            // its n × n f64 Gram matrix, twice (faer's, and the row-major copy).
            let solving = match backend {
                Opened::Cpu(_) => rayon::current_num_threads().min(batch).saturating_mul(
                    n.saturating_mul(n)
                        .saturating_mul(16)
                        .saturating_add(n.saturating_mul(FIEDLER_DIM * 8)),
                ),
                #[cfg(feature = "cuda")]
                Opened::Cuda(_) => 0,
            };
            check_fits("solving the graphs", features.saturating_add(solving))
                .with_context(|| format!("{} of {n} nodes", counted(batch, "graph")))?;
            // A few distinct graphs, repeated: generating 577×768 features per graph would
            // take longer than solving them.
            let features: Vec<Vec<f32>> = (0..distinct)
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
            let on_device = match backend {
                Opened::Cpu(_) => format!("{:>18}", "-"),
                #[cfg(feature = "cuda")]
                Opened::Cuda(cuda) => {
                    // The same graphs from features already in device memory (a model's
                    // hidden states): the solve without the upload.
                    let packed = cuda.upload(&features.concat())?;
                    let spans: Vec<(usize, &[bool])> = (0..batch)
                        .map(|g| ((g % features.len()) * n, mask.as_slice()))
                        .collect();
                    let seconds = median_seconds(args.repeats, || {
                        let results = cuda
                            .fiedler_batch_device(&packed, FIEDLER_DIM, &spans, opts.l2_normalize)
                            .with_context(|| {
                                format!("{batch} graphs of {n} nodes on the device")
                            })?;
                        results.into_iter().collect::<Result<Vec<_>, _>>()?;
                        Ok(())
                    })?;
                    let mut column = format!("{:>18.0}", batch as f64 / seconds);
                    if args.stages {
                        let stages = (0..args.repeats.max(1))
                            .map(|_| {
                                let (results, stages) = cuda.fiedler_batch_device_timed(
                                    &packed,
                                    FIEDLER_DIM,
                                    &spans,
                                    opts.l2_normalize,
                                )?;
                                results.into_iter().collect::<Result<Vec<_>, _>>()?;
                                Ok(stages)
                            })
                            .collect::<anyhow::Result<Vec<_>>>()?;
                        let median = |stage: fn(&FiedlerStages) -> f32| {
                            let mut ms: Vec<f32> = stages.iter().map(stage).collect();
                            ms.sort_by(f32::total_cmp);
                            ms[ms.len() / 2]
                        };
                        column += &format!(
                            " {:>8.3} {:>8.3} {:>8.3} {:>9.3} {:>8.3} {:>8.3}",
                            median(|s| s.rows),
                            median(|s| s.gram),
                            median(|s| s.graphs),
                            median(|s| s.before),
                            median(|s| s.wait),
                            median(|s| s.after)
                        );
                    }
                    column
                }
            };
            outln!(
                "{n:>6} {batch:>7} {:>10.2} {:>12} {on_device}",
                seconds * 1e3,
                rate(batch as f64 / seconds)
            )?;
        }
    }
    Ok(())
}

/// A rate for its column: whole numbers, but three digits where it is below 10 (a rate of
/// 0.04 graphs/s must not read as 0).
fn rate(per_second: f64) -> String {
    match per_second < 10.0 {
        true => format!("{per_second:.3}"),
        false => format!("{per_second:.0}"),
    }
}

fn print_header() -> anyhow::Result<()> {
    outln!(
        "{:<24} {:>5} {:>10} {:>10} {:>10} {:>12} {:>12} {:>10} {:>8}",
        "method",
        "batch",
        "trace ms",
        "to host ms",
        "method ms",
        "ms/expl",
        "expl/s",
        "GFLOP/expl",
        "GFLOP/s"
    )
}

/// One row per method: the trace it needs (a backward only for gradient methods, an LRP
/// pass only for the LRP methods), the method itself, and explanations per second for the
/// two together. Trace and method times are per batch.
/// `report` for a model whose methods each get their own trace, what leaves the device
/// depending on the method: `trace` runs the model for some methods, `to_host` brings what
/// they read to the host (a part of the time timed, as a user waits for it), `explain` runs
/// one method on the host trace of them all.
fn report_traced<B: Backend, T, H>(
    be: &B,
    methods: &[Method],
    (batch, repeats): (usize, usize),
    trace: impl Fn(&[Method]) -> anyhow::Result<T>,
    to_host: impl Fn(T, &[Method]) -> anyhow::Result<H>,
    explain: impl Fn(&H, Method) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let all = trace(methods)
        .and_then(|t| to_host(t, methods))
        .with_context(|| format!("batch {batch}"))?;
    // The profile (FIEDLER_CUDA_PROFILE) leaves out this warm-up, which loads the kernels.
    be.profile_restart()?;
    report(
        methods,
        batch,
        repeats,
        |m| m,
        |m| {
            let start = Instant::now();
            let t = trace(&[m])?;
            be.synchronize()?;
            let computed = start.elapsed().as_secs_f64();
            drop(to_host(t, &[m])?);
            Ok(computed)
        },
        |m| explain(&all, m),
    )
}

fn report<P: Copy + Eq + std::hash::Hash>(
    methods: &[Method],
    batch: usize,
    repeats: usize,
    pass_of: impl Fn(Method) -> P,
    mut trace: impl FnMut(P) -> anyhow::Result<f64>,
    mut method: impl FnMut(Method) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut timed = std::collections::HashMap::new();
    for &m in methods {
        let pass = pass_of(m);
        if let std::collections::hash_map::Entry::Vacant(e) = timed.entry(pass) {
            let before = matmul_flops();
            let mut computing = Vec::with_capacity(repeats);
            let seconds = median_seconds(repeats, || {
                computing.push(trace(pass)?);
                Ok(())
            })?;
            computing.sort_by(f64::total_cmp);
            let flops = (matmul_flops() - before) as f64 / repeats.max(1) as f64;
            e.insert((seconds, computing[computing.len() / 2], flops));
        }
    }
    for &m in methods {
        let (trace_s, computing_s, flops) = timed[&pass_of(m)];
        let method_s = median_seconds(repeats, || method(m))?;
        // Only the CPU backend counts its products.
        let (per_expl, rate) = if flops > 0.0 {
            (
                format!("{:.1}", flops / 1e9 / batch as f64),
                format!("{:.0}", flops / 1e9 / trace_s),
            )
        } else {
            ("-".into(), "-".into())
        };
        outln!(
            "{:<24} {:>5} {:>10.1} {:>10.1} {:>10.1} {:>12.1} {:>12.2} {:>10} {:>8}",
            m.name(),
            batch,
            trace_s * 1e3,
            (trace_s - computing_s).max(0.0) * 1e3,
            method_s * 1e3,
            (trace_s + method_s) * 1e3 / batch as f64,
            batch as f64 / (trace_s + method_s),
            per_expl,
            rate
        )?;
    }
    Ok(())
}
