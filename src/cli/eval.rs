//! `fiedler eval`: the perturbation benchmark (spec §E) of a ViLT or LXMERT model on a VQA
//! dataset, resumable, with an AUC table and curves (and, on a `fiedler synth` set, scores
//! against its ground truth; a CLIP model on a synth caption set gets those scores alone);
//! `fiedler eval report RESULTS.jsonl` rebuilds the report from a results file alone.

use std::collections::{HashMap, HashSet};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use anyhow::bail;
use clap::{Args, Subcommand};
use fiedler::backend::Backend;
use fiedler::eval::chance::CHANCE;
use fiedler::eval::clip::{read_captions, CaptionSet, Retrievals};
use fiedler::eval::dataset::{read_lxmert_json, read_vqa_v2, Dataset, FilePattern, Question};
use fiedler::eval::ground_truth::{ImageUnits, SynthTruth};
use fiedler::eval::protocol::{check_steps, Modality, Order, Test, DEFAULT_STEPS};
use fiedler::eval::report::{Report, Tally};
use fiedler::eval::results::{
    data_fingerprint, read_results, Line, Results, ResultsWriter, RunHeader, RunMark, FORMAT,
};
use fiedler::eval::runner::{
    check_plan, run, sample_done, ChunkDone, EvalModel, EvalTarget, Plan, Scorer,
};
use fiedler::eval::sampling::python_shuffled_prefix;
use fiedler::eval::{check_vocabulary, EvalError};
use fiedler::explain::{Explanation, Method, MethodOptions};
use fiedler::input::regions::{is_obj36_tsv, read_features_file, Obj36Index, Regions};
use fiedler::linalg::{GraphOptions, Solver};
use fiedler::model::config::read_family;
use fiedler::model::weights::Weights;
use fiedler::model::ModelFamily;
use fiedler::session::{ClipSession, LxmertSession, PairRequest, SessionError, ViltSession};

use crate::cli::device::{open, with_backend, Device, Precision};
use crate::cli::interrupt::{Interrupted, StopOnInterrupt};
use crate::cli::progress::{Advance, Progress, Task};
use crate::cli::{counted, positive};

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct EvalArgs {
    #[command(subcommand)]
    command: Option<EvalCommand>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum EvalCommand {
    /// Rebuild the report (report.md, report.json and the curve PNGs) from a results file
    /// alone.
    Report(ReportArgs),
    /// Print one markdown table per results file: every method's ground-truth scores and
    /// AUCs side by side (docs/results.md is made of these).
    Summary(SummaryArgs),
}

#[derive(Args)]
struct SummaryArgs {
    /// Results files of `fiedler eval`.
    #[arg(required = true)]
    results: Vec<PathBuf>,
    /// Mark each AUC against this method's (or chance's), sample by sample.
    #[arg(long, default_value = "chance", value_parser = against_name)]
    against: String,
}

#[derive(Args)]
struct ReportArgs {
    /// The results file of `fiedler eval` (JSON Lines).
    results: PathBuf,
    /// Folder for the report (default: the results file's folder). Its files are named
    /// after the results file: report.md etc. for results.jsonl, X.report.md etc. for
    /// X.jsonl, X.json.report.md etc. for X.json.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Compare each method with this one (or chance), sample by sample: the "Against" table.
    /// The report is written over the run's own unless --out puts it elsewhere.
    #[arg(long, default_value = "chance", value_parser = against_name)]
    against: String,
}

/// What `fiedler eval` explains (`--target`; `EvalTarget` says what each means).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum TargetArg {
    Predicted,
    SumLogits,
    Seed,
}

impl From<TargetArg> for EvalTarget {
    fn from(t: TargetArg) -> Self {
        match t {
            TargetArg::Predicted => EvalTarget::Predicted,
            TargetArg::SumLogits => EvalTarget::SumLogits,
            TargetArg::Seed => EvalTarget::Seed,
        }
    }
}

#[derive(Args)]
struct RunArgs {
    /// Hugging Face model directory (or the Hub id of one in the local cache): a VQA model
    /// (ViLT or LXMERT) for the perturbation benchmark, or CLIP (with --captions) for
    /// ground-truth scores alone.
    #[arg(long, required = true)]
    model: Option<PathBuf>,
    /// Questions in LXMERT's format: a JSON list of {"question_id", "img_id", "sent",
    /// "label": {answer: score}} (e.g. LXMERT's data/vqa/valid.json), scored as given.
    #[arg(long, conflicts_with_all = ["questions", "annotations"])]
    dataset: Option<PathBuf>,
    /// Official VQA v2 questions JSON (with --annotations), scored with the official
    /// accuracy.
    #[arg(long, requires = "annotations")]
    questions: Option<PathBuf>,
    /// Official VQA v2 annotations JSON (with --questions).
    #[arg(long, requires = "questions")]
    annotations: Option<PathBuf>,
    /// CLIP: a `fiedler synth` captions.json; each image's true caption is explained and
    /// scored against the ground truth only (CLIP has no answer to perturb).
    #[arg(long, conflicts_with_all = ["dataset", "questions", "annotations"])]
    captions: Option<PathBuf>,
    /// ViLT: folder of images, found by --file-pattern.
    #[arg(long)]
    images: Option<PathBuf>,
    /// LXMERT: an obj36 TSV of region features (named .tsv), or a folder of features files
    /// (safetensors `features`, `boxes`) found by --file-pattern.
    #[arg(long)]
    features: Option<PathBuf>,
    /// File name in --images or a --features folder, or image id in a --features TSV; `{id}`
    /// is the question's image id, `{id:012}` a numeric id zero-padded to 12 digits. Repeat
    /// to try several. Default for images: COCO_val2014_{id:012}.jpg, {id}.jpg, {id}.png;
    /// for a features folder: {id}.safetensors; for a TSV: {id}, COCO_val2014_{id:012}.
    #[arg(long = "file-pattern")]
    file_patterns: Vec<String>,
    /// A `fiedler synth` ground_truth.json: also score every explanation against the objects
    /// and words each question is about (pointing game, mass in mask, word rank). Default:
    /// ground_truth.json beside --questions or --captions, when there is one.
    #[arg(long)]
    ground_truth: Option<PathBuf>,
    /// Do not look for ground truth beside --questions or --captions.
    #[arg(long, conflicts_with = "ground_truth")]
    no_ground_truth: bool,
    /// LXMERT answer names (trainval_label2ans.json) when the config has none. LXMERT only.
    #[arg(long)]
    answers: Option<PathBuf>,
    /// Results file (JSON Lines, appended; a rerun with the same settings resumes it). The
    /// report is written beside it, over every sample in the file (earlier runs' with a
    /// larger --samples included): report.md, report.json, curves-*.png beside results.jsonl,
    /// X.report.md etc. beside X.jsonl.
    // Named report::DEFAULT_RESULTS, so that its report keeps the plain names.
    #[arg(long, default_value = "fiedler-eval/results.jsonl")]
    results: PathBuf,
    /// Method(s): a name, a comma-separated list or `all` (`--method` also accepted, as
    /// explain and bench spell it). Valid: raw-attn, rollout, grad-cam, chefer, dsmi,
    /// dsmi-grad, dsmi-grad-attn, transformer-attribution, partial-lrp, chefer-lrp.
    #[arg(long, visible_alias = "method", default_value = "all")]
    methods: String,
    /// What to remove, comma-separated: image, text, or image,text for both [default:
    /// image,text]. VQA models only: a CLIP run is scored against ground truth, with nothing
    /// removed.
    #[arg(long, value_delimiter = ',')]
    modality: Option<Vec<Modality>>,
    /// Removal orders, comma-separated: most-relevant-first (the seed's "positive" test,
    /// lower AUC is better), least-relevant-first (its "negative" test, higher is better)
    /// [default: most-relevant-first,least-relevant-first]. VQA models only.
    #[arg(long, value_delimiter = ',')]
    order: Option<Vec<Order>>,
    /// Fractions removed, comma-separated and ascending: 0 first (the unperturbed input), at
    /// most 1 [default: 0,0.25,0.5,0.75,0.8,0.85,0.9,0.95,1]. VQA models only.
    #[arg(long, value_delimiter = ',')]
    steps: Option<Vec<f64>>,
    /// Evaluate this many questions: the first N of Python's random.shuffle of the question
    /// indices after random.seed(SEED), as the reference picks them. Default: all.
    #[arg(long, value_parser = positive, allow_negative_numbers = true)]
    samples: Option<usize>,
    /// Seed of the sample order (the reference's is 1234), and of the chance rows' random
    /// orders.
    #[arg(long, default_value_t = 1234, allow_negative_numbers = true)]
    seed: u64,
    /// Samples per explanation pass and inputs per perturbed forward.
    #[arg(long, default_value_t = 8, value_parser = positive, allow_negative_numbers = true)]
    batch: usize,
    /// Stop at the first sample that fails instead of logging it and going on.
    #[arg(long)]
    strict: bool,
    /// What the explanations explain: the predicted answer's logit; the sum of all logits,
    /// for every method; or the seed's targets (bug B1): the sum of the logits for dsmi-grad
    /// and dsmi-grad-attn, the predicted answer for the others, to compare one run with the
    /// seed's table. The accuracy is the predicted answer's either way. VQA models only.
    #[arg(long, value_enum, default_value = "predicted")]
    target: TargetArg,
    /// Leave out the `chance` rows: the perturbation tests with each sample's units removed
    /// in a random order (drawn from --seed and the sample's id), the level a method's AUCs
    /// have to beat. They cost the forwards of one more method. VQA models only.
    #[arg(long, conflicts_with = "chance")]
    no_chance: bool,
    /// Add the chance rows to a results file that has none (written by an earlier version or
    /// with --no-chance), which reruns every sample's explanation pass and forwards. Without
    /// it, such a file is resumed without them. VQA models only.
    #[arg(long)]
    chance: bool,
    /// Eigensolver for the spectral methods: lanczos (fast) or dense (reference).
    #[arg(long, default_value = "lanczos")]
    solver: Solver,
    /// Where to compute: cpu, cuda (the first GPU) or auto (cuda when it works).
    #[arg(long, value_enum, ignore_case = true, default_value = "cpu")]
    device: Device,
    #[command(flatten)]
    precision: Precision,
}

pub fn run_command(args: EvalArgs) -> anyhow::Result<()> {
    match args.command {
        Some(EvalCommand::Report(r)) => report(&r.results, r.out.as_deref(), &r.against),
        Some(EvalCommand::Summary(s)) => summary(&s.results, &s.against),
        None => run_eval(args.run),
    }
}

/// That `path` names a results file: a folder is said to be one, with the results files in
/// it, if any.
fn check_results_file(path: &Path) -> anyhow::Result<()> {
    if path.is_file() {
        return Ok(());
    }
    if path.is_dir() {
        let mut inside: Vec<String> = std::fs::read_dir(path)?
            .filter_map(|entry| Some(entry.ok()?.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
            .map(|p| p.display().to_string())
            .collect();
        inside.sort();
        let hint = match inside.as_slice() {
            [] => String::new(),
            files => format!(" (it holds {})", files.join(", ")),
        };
        bail!(
            "{} is a folder; give the results file{hint}",
            path.display()
        );
    }
    bail!("no results file {}", path.display());
}

fn report(results: &Path, out: Option<&Path>, against: &str) -> anyhow::Result<()> {
    check_results_file(results)?;
    if let Some(out) = out {
        super::check_out_folder(out, "the report")?;
    }
    let read = read_results(results)?;
    check_against(&read, results, against)?;
    publish(
        &Report::build_against(&read, results, against)?,
        results,
        out,
    )
}

/// An `--against` as results files name it: chance, or a method however `--methods` reads it
/// (any case, `_` for `-`, the seed's keys). Another name is kept as given, for
/// `check_against` to refuse with the methods the file has.
fn against_name(arg: &str) -> Result<String, String> {
    if arg.trim().eq_ignore_ascii_case(CHANCE) {
        return Ok(CHANCE.to_owned());
    }
    Ok(arg
        .parse::<Method>()
        .map_or_else(|_| arg.to_owned(), |m| m.name().to_owned()))
}

/// Refuses an `--against` method that `read` (of `results`) has no perturbation records of.
fn check_against(read: &Results, results: &Path, against: &str) -> anyhow::Result<()> {
    if against != CHANCE && !read.perturbations.iter().any(|r| r.method == against) {
        if read.perturbations.is_empty() {
            let family = read.header.as_ref().map(|h| h.family.as_str());
            let why = match family.and_then(ModelFamily::from_model_type) {
                Some(ModelFamily::Clip) => " (a CLIP run is scored against ground truth only)",
                _ => "",
            };
            bail!(
                "{} holds no perturbation records at all{why}, so --against does not apply",
                results.display()
            );
        }
        let mut methods: Vec<&str> = read.perturbations.iter().map(|r| &*r.method).collect();
        methods.sort_unstable();
        methods.dedup();
        bail!(
            "{} holds no perturbation records of `{against}` to compare the methods with (it has: {})",
            results.display(),
            methods.join(", ")
        );
    }
    Ok(())
}

/// Writes `report`, of `results`, into `out` (default: beside the results) and prints its
/// tables and the files written.
fn publish(report: &Report, results: &Path, out: Option<&Path>) -> anyhow::Result<()> {
    let dir = out.unwrap_or_else(|| results.parent().unwrap_or(Path::new(".")));
    let written = report.write(dir, results)?;
    print_table(report)?;
    if let Some(unfinished) = report.unfinished {
        outln!("note: {}", unfinished.sentence())?;
    }
    for path in written {
        outln!("wrote {}", path.display())?;
    }
    Ok(())
}

fn summary(files: &[PathBuf], against: &str) -> anyhow::Result<()> {
    // Every file is read and checked before the first table: a glob over runs fails whole.
    let mut reads = Vec::with_capacity(files.len());
    for path in files {
        check_results_file(path)?;
        let read = read_results(path)?;
        check_against(&read, path, against)?;
        reads.push(read);
    }
    for (path, read) in files.iter().zip(&reads) {
        let report = Report::build_against(read, path, against)?;
        // Step 0 of any test is the unperturbed input: the model's plain VQA accuracy, over
        // the widest test (methods run on fewer samples would give their subset's); CLIP's
        // counterpart is its caption retrieval.
        let accuracy = report
            .methods
            .iter()
            .flat_map(|r| r.tests.values())
            .max_by_key(|c| c.samples)
            .map(|c| format!("; VQA accuracy {:.1}%", c.accuracy[0]))
            .or_else(|| {
                let r = report.caption_retrieval?;
                Some(format!(
                    "; caption retrieval {:.1}% of {}",
                    r.top1, r.samples
                ))
            })
            .unwrap_or_default();
        // Runs of one set are told apart here: by their target, their steps (AUCs over other
        // steps do not compare), their seed (other samples) and the samples that failed.
        let target = report
            .target
            .as_deref()
            .map(|t| format!("; explained with --target {t}"))
            .unwrap_or_default();
        let steps = match report.perturbed() && report.steps != DEFAULT_STEPS {
            true => format!("; steps {:?}, not the default", report.steps),
            false => String::new(),
        };
        let failed = match report.failed_samples.len() {
            0 => String::new(),
            n => format!("; {n} failed (report.md lists them)"),
        };
        outln!(
            "### `{}`: `{}` ({}), {} samples of `{}`, seed {}{accuracy}{target}{steps}{failed}\n",
            path.display(),
            report.model,
            report.family,
            report.samples,
            report.dataset,
            report.seed
        )?;
        if let Some(unfinished) = report.unfinished {
            outln!("**{}**\n", unfinished.sentence())?;
        }
        outln!("{}", report.summary_markdown())?;
        if let Some(note) = report.uneven_samples_note() {
            outln!("{note}\n")?;
        }
    }
    Ok(())
}

/// The AUC table and the comparison with chance, as in report.md, CLIP's caption retrieval,
/// and the ground-truth table if any.
fn print_table(report: &Report) -> anyhow::Result<()> {
    if report.perturbed() {
        let md = report.markdown();
        let table = md
            .split("## AUC\n\n")
            .nth(1)
            .and_then(|rest| rest.split("\n\n").next())
            .unwrap_or("");
        outln!("{}\n{table}", report.auc_formula)?;
        if let Some(note) = report.uneven_samples_note() {
            outln!("{note}")?;
        }
        out!("{}", report.versus_markdown())?;
    }
    if let Some(retrieval) = report.caption_retrieval {
        outln!("{}", retrieval.sentence())?;
    }
    if !report.ground_truth.is_empty() {
        out!("{}", report.ground_truth_markdown())?;
    }
    Ok(())
}

/// The ground truth of the run: --ground-truth, or ground_truth.json beside --questions or
/// --captions.
fn ground_truth_file(args: &RunArgs) -> anyhow::Result<Option<PathBuf>> {
    if let Some(path) = &args.ground_truth {
        if !path.is_file() {
            bail!("--ground-truth {}: no such file", path.display());
        }
        return Ok(Some(path.clone()));
    }
    if args.no_ground_truth {
        return Ok(None);
    }
    Ok(args
        .questions
        .as_ref()
        .or(args.captions.as_ref())
        .and_then(|q| q.parent())
        .map(|dir| dir.join("ground_truth.json"))
        .filter(|p| p.is_file()))
}

fn read_dataset(args: &RunArgs) -> anyhow::Result<Dataset> {
    Ok(match (&args.dataset, &args.questions, &args.annotations) {
        (Some(path), _, _) => read_lxmert_json(path)?,
        (None, Some(q), Some(a)) => read_vqa_v2(q, a)?,
        _ => bail!(
            "give the questions: --dataset FILE.json (LXMERT format) or --questions Q.json --annotations A.json (VQA v2)"
        ),
    })
}

/// The files of a model folder besides its weights that decide how it reads its inputs and
/// names its answers.
const MODEL_FILES: [&str; 6] = [
    "config.json",
    "tokenizer.json",
    "vocab.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "preprocessor_config.json",
];

/// The fingerprint of those of [`MODEL_FILES`] in `dir` and of the --answers file.
fn model_files_fingerprint(dir: &Path, answers: Option<&Path>) -> anyhow::Result<String> {
    let files: Vec<PathBuf> = MODEL_FILES
        .iter()
        .map(|name| dir.join(name))
        .filter(|path| path.is_file())
        .chain(answers.map(Path::to_path_buf))
        .collect();
    let paths: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    Ok(data_fingerprint(&paths)?)
}

/// Refuses inputs that no question finds: every sample would fail alike, one error a
/// sample; the first question's error says what was tried.
fn check_any_found(
    questions: &[&Question],
    find: impl Fn(&Question) -> Result<(), EvalError>,
) -> anyhow::Result<()> {
    let mut first = None;
    for q in questions {
        match find(q) {
            Ok(()) => return Ok(()),
            Err(e) => {
                first.get_or_insert(e);
            }
        }
    }
    match first {
        Some(e) if questions.len() == 1 => bail!("the question's input is not found: {e}"),
        Some(e) => bail!(
            "none of the {} questions' inputs is found; the first: {e}",
            questions.len()
        ),
        None => Ok(()),
    }
}

/// --file-pattern (or `defaults`) in `dir`, refused when it fits none of the questions'
/// images.
fn patterns(
    args: &RunArgs,
    dir: &Path,
    defaults: &[&str],
    questions: &[&Question],
) -> anyhow::Result<FilePattern> {
    let given: Vec<String> = if args.file_patterns.is_empty() {
        defaults.iter().map(|s| (*s).to_owned()).collect()
    } else {
        args.file_patterns.clone()
    };
    let files = FilePattern::new(dir, &given)?;
    files.check_fits(questions.iter().map(|q| q.image_id.as_str()))?;
    Ok(files)
}

/// Refuses an `--images` that is not a folder: the patterns would be joined to a file's path
/// or a missing folder's, and the error would name those joined paths alone.
fn check_images_folder(images: &Path) -> anyhow::Result<()> {
    if images.is_dir() {
        return Ok(());
    }
    match images.exists() {
        true => bail!(
            "--images {} is a file: give the folder of images, with --file-pattern to find them",
            images.display()
        ),
        false => bail!("--images {}: no such folder", images.display()),
    }
}

/// Refuses a `--features` file that is not an obj36 TSV (named .tsv, as `explain --regions`
/// tells them apart): read as one, a features file of one image (safetensors) would be
/// scanned for image ids, and its bytes named as such.
fn check_tsv(features: &Path) -> anyhow::Result<()> {
    if features.is_file() && !is_obj36_tsv(features) {
        bail!(
            "--features {}: a file here is an obj36 TSV, named .tsv; for features files \
             (safetensors, one image each) give their folder, with --file-pattern to find them",
            features.display()
        );
    }
    Ok(())
}

/// Refuses inputs and options meant for another model family, rather than ignoring them, and
/// a CLIP run without its caption set.
fn check_family_options(
    args: &RunArgs,
    family: ModelFamily,
    model_dir: &Path,
) -> anyhow::Result<()> {
    let name = family.model_type();
    let inputs = match family {
        ModelFamily::Vilt => "--images DIR",
        ModelFamily::Lxmert => "--features",
        ModelFamily::Clip => "--captions",
    };
    let given = [
        (args.images.is_some(), "--images", ModelFamily::Vilt),
        (args.features.is_some(), "--features", ModelFamily::Lxmert),
        (args.captions.is_some(), "--captions", ModelFamily::Clip),
    ];
    let foreign: Vec<&str> = given
        .iter()
        .filter(|&&(is_given, _, owner)| is_given && owner != family)
        .map(|&(_, flag, _)| flag)
        .collect();
    if !foreign.is_empty() {
        bail!(
            "{} ({name}) reads {inputs}: drop {}; --images is for ViLT, --features for LXMERT, \
             --captions for CLIP",
            model_dir.display(),
            foreign.join(" and ")
        );
    }
    if family != ModelFamily::Lxmert && args.answers.is_some() {
        bail!("--answers applies to LXMERT (its answer list); this is a {name} model");
    }
    if family == ModelFamily::Clip && args.captions.is_none() {
        bail!(
            "{} is a CLIP model: the perturbation benchmark needs a VQA model (ViLT or LXMERT); CLIP is scored against ground truth only, on a `fiedler synth` set: give --captions DIR/captions.json (with DIR/ground_truth.json)",
            model_dir.display()
        );
    }
    if family == ModelFamily::Clip && !args.file_patterns.is_empty() {
        bail!(
            "--file-pattern finds ViLT images and LXMERT features; CLIP reads the images \
             captions.json names"
        );
    }
    Ok(())
}

/// The number of questions to evaluate: --samples, or all when it asks for more (with a
/// note) or is not given. `what`: the dataset's items ("question").
fn sample_count(args: &RunArgs, available: usize, what: &str) -> anyhow::Result<usize> {
    match args.samples {
        Some(n) if n > available => {
            eprintln!(
                "note: --samples {n}: the dataset has {}; evaluating all {available}",
                counted(available, what)
            );
            Ok(available)
        }
        Some(n) => Ok(n),
        None => Ok(available),
    }
}

/// The perturbation tests of a run, every modality with every order. A CLIP run is scored
/// against ground truth alone, so the options that shape the tests are refused there rather
/// than ignored.
fn perturbation_tests(args: &RunArgs, family: ModelFamily) -> anyhow::Result<Vec<Test>> {
    if family == ModelFamily::Clip {
        let given: Vec<&str> = [
            ("--modality", args.modality.is_some()),
            ("--order", args.order.is_some()),
            ("--steps", args.steps.is_some()),
            ("--chance", args.chance),
            ("--no-chance", args.no_chance),
            ("--target", args.target != TargetArg::Predicted),
        ]
        .into_iter()
        .filter_map(|(flag, given)| given.then_some(flag))
        .collect();
        if !given.is_empty() {
            bail!(
                "{}: these shape the perturbation tests of ViLT and LXMERT and what they \
                 explain; a CLIP run perturbs nothing and explains each pair's score (it is \
                 scored against ground truth only)",
                given.join(", ")
            );
        }
        return Ok(Vec::new());
    }
    let modalities = args.modality.as_deref().unwrap_or(&Modality::ALL);
    let orders = args.order.as_deref().unwrap_or(&Order::ALL);
    let mut tests = Vec::new();
    for &modality in modalities {
        for &order in orders {
            let t = Test { modality, order };
            if !tests.contains(&t) {
                tests.push(t);
            }
        }
    }
    Ok(tests)
}

/// Where LXMERT's regions come from: a folder of features files, or one TSV indexed once,
/// whose line for a question's image is found by the id the patterns give.
enum Features {
    Folder(FilePattern),
    Tsv {
        index: Obj36Index,
        ids: FilePattern,
        path: PathBuf,
    },
}

impl Features {
    /// The regions of `image_id`'s image.
    fn regions(&self, image_id: &str) -> Result<Regions, EvalError> {
        let read = match self {
            Features::Folder(files) => read_features_file(&files.find(image_id)?),
            Features::Tsv { index, ids, path } => index.read(&tsv_id(index, ids, path, image_id)?),
        };
        read.map_err(|e| EvalError::Session(e.into()))
    }

    /// That `image_id`'s regions are there (they are not read); else what was tried.
    fn check(&self, image_id: &str) -> Result<(), EvalError> {
        match self {
            Features::Folder(files) => files.find(image_id).map(drop),
            Features::Tsv { index, ids, path } => tsv_id(index, ids, path, image_id).map(drop),
        }
    }
}

/// The first id `ids` gives `image_id` that the TSV at `path` holds.
fn tsv_id(
    index: &Obj36Index,
    ids: &FilePattern,
    path: &Path,
    image_id: &str,
) -> Result<String, EvalError> {
    let names = ids.names(image_id);
    match names.names.iter().find(|id| index.contains(id)) {
        Some(id) => Ok(id.clone()),
        None => {
            let tried = format!(
                "ids {} in {}; {}",
                names.names.join(", "),
                path.display(),
                index.holds()
            );
            Err(names.missing(image_id, tried))
        }
    }
}

fn run_eval(args: RunArgs) -> anyhow::Result<()> {
    let Some(model_dir) = args.model.as_deref().map(super::model_folder) else {
        bail!("--model is required: a ViLT, LXMERT or CLIP model directory");
    };
    let methods = Method::parse_list(&args.methods)?;
    let family = read_family(&model_dir)?;
    let tests = perturbation_tests(&args, family)?;
    check_family_options(&args, family, &model_dir)?;
    let steps = args.steps.clone().unwrap_or_else(|| DEFAULT_STEPS.to_vec());
    check_steps(&steps).map_err(|e| anyhow::anyhow!("--steps: {e}"))?;
    let (dataset, caption_sets) = match &args.captions {
        Some(path) => read_captions(path)?,
        None => (read_dataset(&args)?, HashMap::new()),
    };
    let what = if args.captions.is_some() {
        "caption"
    } else {
        "question"
    };
    let count = sample_count(&args, dataset.questions.len(), what)?;
    let order = python_shuffled_prefix(dataset.questions.len(), args.seed, count);
    let questions: Vec<&Question> = order.iter().map(|&i| &dataset.questions[i]).collect();
    let truth_file = ground_truth_file(&args)?;
    let backend = open(args.device, args.precision)?;
    if args.device != Device::Cpu {
        eprintln!("device: {}", backend.describe());
    }
    let header = run_header(
        &args,
        family,
        &model_dir,
        &dataset,
        steps.clone(),
        &truth_file,
        backend.precision(args.precision),
    )?;
    let plan = Plan {
        methods,
        tests,
        steps,
        batch: args.batch,
        strict: args.strict,
        // CLIP removes nothing: it has no tests to run in a random order.
        chance: (!args.no_chance && family != ModelFamily::Clip).then_some(args.seed),
        target: args.target.into(),
        opts: MethodOptions {
            graph: GraphOptions {
                solver: args.solver,
                ..Default::default()
            },
            ..Default::default()
        },
    };
    let run = Run {
        args: &args,
        model_dir: &model_dir,
        questions: &questions,
        plan: &plan,
        header: &header,
        truth_file: truth_file.as_deref(),
    };
    with_backend!(backend, be => match family {
        ModelFamily::Vilt => run.vilt(be),
        ModelFamily::Lxmert => run.lxmert(be),
        ModelFamily::Clip => run.clip(be, &caption_sets),
    })
}

/// What the results file's header records of a run (`RunHeader`: a rerun resumes only a run
/// with the same one).
fn run_header(
    args: &RunArgs,
    family: ModelFamily,
    model_dir: &Path,
    dataset: &Dataset,
    steps: Vec<f64>,
    truth_file: &Option<PathBuf>,
    precision: &str,
) -> anyhow::Result<RunHeader> {
    let data_files: Vec<&Path> = [
        &args.dataset,
        &args.questions,
        &args.annotations,
        &args.captions,
        truth_file,
    ]
    .into_iter()
    .flatten()
    .map(PathBuf::as_path)
    .collect();
    Ok(RunHeader {
        format: FORMAT,
        family: family.model_type().to_owned(),
        model: model_dir.display().to_string(),
        dataset: dataset.source.clone(),
        inputs: args
            .images
            .as_ref()
            .or(args.features.as_ref())
            .or(args.captions.as_ref())
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        steps,
        seed: args.seed,
        ground_truth: truth_file.as_ref().map(|p| p.display().to_string()),
        weights: Some(Weights::open(model_dir)?.fingerprint()),
        data: Some(data_fingerprint(&data_files)?),
        model_files: Some(model_files_fingerprint(model_dir, args.answers.as_deref())?),
        answers: args.answers.as_ref().map(|p| p.display().to_string()),
        file_patterns: Some(args.file_patterns.clone()),
        precision: Some(precision.into()),
        solver: Some(args.solver.to_string()),
        target: EvalTarget::from(args.target)
            .header_name()
            .map(String::from),
        chance: (family != ModelFamily::Clip).then_some(!args.no_chance),
        cwd: std::env::current_dir()
            .ok()
            .map(|d| d.display().to_string()),
    })
}

/// One `fiedler eval` run, up to the model: what every family's run reads.
struct Run<'a> {
    args: &'a RunArgs,
    model_dir: &'a Path,
    questions: &'a [&'a Question],
    plan: &'a Plan,
    header: &'a RunHeader,
    truth_file: Option<&'a Path>,
}

impl Run<'_> {
    /// The ground truth of the synthetic set, when the run is scored against it.
    fn open_truth(&self, units: ImageUnits) -> Result<Option<SynthTruth>, EvalError> {
        self.truth_file
            .map(|path| SynthTruth::open(path, self.questions, units))
            .transpose()
    }

    fn evaluate<M: EvalModel>(
        &self,
        model: &M,
        prepare: impl Fn(&Question) -> Result<M::Input, EvalError>,
        truth: Option<&Scorer<'_>>,
    ) -> anyhow::Result<()> {
        evaluate(
            model,
            self.questions,
            prepare,
            (self.plan, self.args.chance),
            truth,
            self.header,
            &self.args.results,
        )
    }

    /// ViLT on the images of `--images`.
    fn vilt<B: Backend>(&self, be: B) -> anyhow::Result<()> {
        let Some(images) = &self.args.images else {
            bail!("ViLT reads images: give --images DIR");
        };
        check_images_folder(images)?;
        let defaults = ["COCO_val2014_{id:012}.jpg", "{id}.jpg", "{id}.png"];
        let files = patterns(self.args, images, &defaults, self.questions)?;
        check_any_found(self.questions, |q| files.find(&q.image_id).map(drop))?;
        let session = ViltSession::open_on(be, self.model_dir)?;
        let prepare = |q: &Question| session.eval_input(&files.find(&q.image_id)?, &q.text);
        let truth = self.open_truth(ImageUnits::Patches)?;
        let score = truth
            .as_ref()
            .map(|t| |q: &Question, e: &Explanation| t.score(q, e, session.tokenizer()));
        self.evaluate(&session, prepare, score.as_ref().map(|f| f as &Scorer))
    }

    /// LXMERT on the regions of `--features`: a folder of features files, or a TSV.
    fn lxmert<B: Backend>(&self, be: B) -> anyhow::Result<()> {
        let args = self.args;
        let Some(features) = &args.features else {
            bail!("LXMERT reads region features: give --features FILE.tsv or a folder of features files");
        };
        let source = if features.is_dir() {
            let files = patterns(args, features, &["{id}.safetensors"], self.questions)?;
            Features::Folder(files)
        } else {
            check_tsv(features)?;
            let defaults = ["{id}", "COCO_val2014_{id:012}"];
            let ids = patterns(args, features, &defaults, self.questions)?;
            Features::Tsv {
                index: Obj36Index::open(features).map_err(SessionError::from)?,
                ids,
                path: features.clone(),
            }
        };
        check_any_found(self.questions, |q| source.check(&q.image_id))?;
        let session = LxmertSession::open_on(be, self.model_dir, args.answers.as_deref())?;
        let prepare = |q: &Question| session.eval_input(source.regions(&q.image_id)?, &q.text);
        let truth = self.open_truth(ImageUnits::Regions)?;
        let score = truth
            .as_ref()
            .map(|t| |q: &Question, e: &Explanation| t.score(q, e, session.tokenizer()));
        self.evaluate(
            &session.evaluator(),
            prepare,
            score.as_ref().map(|f| f as &Scorer),
        )
    }

    /// CLIP on a `fiedler synth` caption set (`sets`: each sample's caption set), scored
    /// against its ground truth only, with whether it retrieves the true caption.
    fn clip<B: Backend>(&self, be: B, sets: &HashMap<String, CaptionSet>) -> anyhow::Result<()> {
        let Some(path) = self.truth_file else {
            bail!(
                "CLIP is scored against ground truth only: give --ground-truth FILE, or put ground_truth.json beside --captions (and drop --no-ground-truth)"
            );
        };
        let session = ClipSession::open_on(be, self.model_dir)?;
        let prepare = |q: &Question| {
            Ok(PairRequest {
                image: sets[&q.id].file.clone(),
                text: q.text.clone(),
            })
        };
        let truth = SynthTruth::for_captions(path, self.questions)?;
        let retrievals = Retrievals::new(&session, sets);
        let score = |q: &Question, e: &Explanation| {
            let mut record = truth.score(q, e, session.tokenizer())?;
            record.retrieved = retrievals.of(&q.id)?;
            Ok(record)
        };
        self.evaluate(&session, prepare, Some(&score))
    }
}

/// Runs `plan` (with `add_chance`, --chance: its chance rows even into a results file without
/// them) over `questions`, appending to `results`, and writes the report.
fn evaluate<M: EvalModel>(
    model: &M,
    questions: &[&Question],
    prepare: impl Fn(&Question) -> Result<M::Input, EvalError>,
    (plan, add_chance): (&Plan, bool),
    truth: Option<&Scorer<'_>>,
    header: &RunHeader,
    results: &Path,
) -> anyhow::Result<()> {
    check_plan(model, plan)?;
    if let Some(answering) = model.answering().filter(|_| !plan.tests.is_empty()) {
        check_vocabulary(questions, answering.answers())?;
    }
    let (mut writer, existing) = ResultsWriter::open(results, header)?;
    if existing.torn_line {
        eprintln!(
            "note: {} ended in a partly written line (an interrupted run); it is redone",
            results.display()
        );
    }
    // A file whose first run did not draw chance rows (an older version's, or --no-chance)
    // is resumed without them: they would make every sample to do again.
    let drew_chance = existing.header.as_ref().and_then(|h| h.chance) == Some(true)
        || existing.perturbations.iter().any(|r| r.method == CHANCE);
    let without_chance =
        plan.chance.is_some() && !add_chance && !existing.perturbations.is_empty() && !drew_chance;
    let plan = &Plan {
        chance: plan.chance.filter(|_| !without_chance),
        ..plan.clone()
    };
    if without_chance {
        eprintln!(
            "note: {} has no chance rows (written by an earlier version, or with --no-chance): resuming it without them; --chance adds them, which reruns every sample",
            results.display()
        );
    }
    let done = existing.done();
    let mut tally = Tally::default();
    existing.perturbations.iter().for_each(|r| tally.add(r));
    let done_before = questions
        .iter()
        .filter(|q| sample_done(q, plan, truth.is_some(), &done))
        .count();

    // The run's start and end are marked, so that the report of a run cut short says so. A
    // rerun with nothing left to do marks nothing, unless it ends one that stopped.
    let marked = done_before < questions.len() || existing.last_run.is_some_and(|r| !r.finished);
    let mark = RunMark {
        samples: questions.len(),
    };
    if marked {
        writer.append(&Line::Started(mark.clone()))?;
    }

    let mut progress = Progress::new(Task::EVAL, questions.len(), done_before, plan.batch);
    progress.route_warnings();
    progress.set_message(tally.summary(&header.steps));
    let mut failed = 0usize;
    let mut done_now = done_before;
    let interrupt = StopOnInterrupt::install();
    let outcome = run(
        model,
        questions,
        prepare,
        plan,
        truth,
        &done,
        &mut writer,
        |chunk: ChunkDone<'_>| {
            chunk.written.iter().for_each(|r| tally.add(r));
            for f in chunk.failures {
                failed += 1;
                progress.println(&format!("sample {} failed: {}", f.sample, f.error));
            }
            progress.set_message(tally.summary(&header.steps));
            let failed = chunk.failures.len().min(chunk.questions - chunk.earlier);
            progress.advance(Advance {
                earlier: chunk.earlier,
                evaluated: chunk.questions - chunk.earlier - failed,
                failed,
            });
            done_now += chunk.questions - chunk.earlier;
            match interrupt.requested() && done_now < questions.len() {
                true => ControlFlow::Break(()),
                false => ControlFlow::Continue(()),
            }
        },
    )
    .map_err(|e| match e.loses_the_device() {
        true => anyhow::Error::new(e).context(format!(
            "the GPU failed after {done_now} of {} samples; the same command goes on from there (the results so far are in {})",
            questions.len(),
            results.display()
        )),
        false => e.into(),
    });
    drop(interrupt);
    // Stopped by Ctrl-C, or by an error (--strict, a lost GPU): either way the report covers
    // what was done, marked unfinished, and the error is said after it.
    let stopped = !matches!(outcome, Ok(ControlFlow::Continue(())));
    if marked && !stopped {
        writer.append(&Line::Finished(mark))?;
    }
    // Closed before the report reads the file, which then tells a stopped run from a running one.
    drop(writer);
    progress.finish();
    if failed > 0 {
        eprintln!(
            "{} failed (listed in the report; a rerun retries them)",
            counted(failed, "sample")
        );
    }
    let reported = report_run(results, questions, plan);
    let flow = outcome?;
    reported?;
    if flow.is_break() {
        return Err(Interrupted(format!(
            "stopped after {done_now} of {} samples: the report covers them, and the same command goes on from there",
            questions.len()
        ))
        .into());
    }
    if failed > 0 && failed == questions.len() {
        // Nothing was evaluated: a failure for scripts too, not only a line on stderr.
        bail!("every sample failed ({failed}); the errors are listed above");
    }
    Ok(())
}

/// Writes and prints the report of `results` after a run of `plan` over `questions`.
fn report_run(results: &Path, questions: &[&Question], plan: &Plan) -> anyhow::Result<()> {
    let read = read_results(results)?;
    let report = Report::build(&read, results)?;
    if holds_other_samples(&read, questions) {
        outln!(
            "report over all {} in {} (this run asked for {})",
            counted(report.samples, "sample"),
            results.display(),
            questions.len()
        )?;
    }
    if let Some(other) = holds_other_rows(&read, plan) {
        outln!(
            "report over every method and test in {} ({other} too, which this run did not ask for)",
            results.display()
        )?;
    }
    publish(&report, results, None)
}

/// The methods and tests the results hold beyond `plan`'s (an earlier run's, with more
/// --methods or another --modality/--order), as a report note names them; chance rows
/// are the plan's where it runs them.
fn holds_other_rows(read: &Results, plan: &Plan) -> Option<String> {
    let asked: HashSet<&str> = plan
        .methods
        .iter()
        .map(|m| m.name())
        .chain(plan.chance.map(|_| CHANCE))
        .collect();
    let mut methods: Vec<&str> = read
        .perturbations
        .iter()
        .map(|r| r.method.as_str())
        .chain(read.ground_truth.iter().map(|r| r.method.as_str()))
        .filter(|m| !asked.contains(m))
        .collect();
    methods.sort_unstable();
    methods.dedup();
    let mut tests: Vec<String> = read
        .perturbations
        .iter()
        .map(|r| r.test())
        .filter(|t| !plan.tests.contains(t))
        .map(|t| t.column())
        .collect();
    tests.sort_unstable();
    tests.dedup();
    let mut named = Vec::new();
    if !methods.is_empty() {
        named.push(format!("methods {}", methods.join(", ")));
    }
    if !tests.is_empty() {
        named.push(format!("tests {}", tests.join(", ")));
    }
    (!named.is_empty()).then(|| named.join(" and "))
}

/// Whether the results hold samples this run did not ask for (an earlier run's, with a
/// larger --samples): the report covers the whole file, so it says so rather than pass for
/// this run's.
fn holds_other_samples(read: &Results, questions: &[&Question]) -> bool {
    let asked: HashSet<&str> = questions.iter().map(|q| q.id.as_str()).collect();
    read.perturbations
        .iter()
        .map(|r| r.sample.as_str())
        .chain(read.ground_truth.iter().map(|r| r.sample.as_str()))
        .any(|sample| !asked.contains(sample))
}
