//! `fiedler explain`: scores or answers, token relevances in the terminal, and files a person
//! can open — an overlay PNG per sample and method, a comparison sheet when several methods
//! run, an HTML page and a JSON file with every number. The model directory's family decides
//! what a sample is: a caption for CLIP, a question for ViLT.
//!
//! This module keeps the command's flow; `pairs` reads what to explain, `target` what VQA
//! maps explain and the answers expected, `outputs` writes the files and `terminal` prints the
//! samples.

mod outputs;
mod pairs;
mod run_record;
mod target;
mod terminal;

use std::io::Write;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};

use crate::cli::device::{open, with_backend, Device, Precision};
use crate::cli::interrupt::{Interrupted, StopOnInterrupt};
use crate::cli::positive;
use crate::cli::progress::{Advance, Progress, Task};
use clap::Args;
use fiedler::backend::Backend;
use fiedler::explain::{Explanation, Method, MethodOptions};
use fiedler::input::regions::is_obj36_tsv;
use fiedler::linalg::{GraphOptions, Solver};
use fiedler::model::config::read_family;
use fiedler::model::ModelFamily;
use fiedler::session::{
    whole_image_of, AnswerTarget, ClipSession, LxmertSession, QuestionResult, ViltSession,
};
use outputs::{
    decoded, display_images, earlier_run, lock_output_folder, remove_earlier_outputs,
    write_outputs, Displayed, Drawing, OutputFolder, KEPT_DISPLAY_BYTES,
};
use pairs::{at_pairs_line, region_requests, requests, whence_of_images, PairsFile, Whence};
use run_record::RunRecord;
use target::{vqa_target, warn_of_answers_never_given, warn_of_methods_blind_to, Expected};
use terminal::print_samples;

#[derive(Args)]
pub struct ExplainArgs {
    /// Hugging Face model directory (config.json, weights, tokenizer) of CLIP, ViLT or LXMERT,
    /// or the Hub id of one already in the local Hugging Face cache. Default: the bundled ViLT trained on `fiedler synth` scenes
    /// (models/vilt-synth, looked up in the current directory, then in the source checkout).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Image to explain; every --text/--question is paired with it. With LXMERT it is only
    /// drawn on (the model reads --regions).
    #[arg(long)]
    image: Option<PathBuf>,
    /// A caption (CLIP) or question (ViLT, LXMERT) to explain; repeat for several. CLIP's
    /// probabilities are a softmax over the captions given for the same image.
    #[arg(long = "text", visible_alias = "question")]
    texts: Vec<String>,
    /// LXMERT region inputs: a features file (safetensors `features` [N, F], `boxes` [N, 4]
    /// normalised) or an obj36 TSV (with --image-id).
    #[arg(long)]
    regions: Option<PathBuf>,
    /// The image id to read from an obj36 TSV.
    #[arg(long)]
    image_id: Option<String>,
    /// LXMERT answer names: a JSON list with one answer per logit (trainval_label2ans.json),
    /// for checkpoints whose config has none.
    #[arg(long)]
    answers: Option<PathBuf>,
    /// What VQA explanations explain: predicted (default), answer:TEXT, index:N, expected
    /// (each --pairs line's "answer": why the model would say it, right or wrong), or
    /// sum-logits (the seed's DSMI-family target, bug B1, for comparison runs).
    #[arg(long, default_value = "predicted")]
    target: String,
    /// JSON Lines file, a sample per line: {"image": PATH, "text": "..."} for CLIP and ViLT
    /// ("question" also accepted); for LXMERT {"regions": PATH, "image_id": ID (optional),
    /// "image": PATH (optional, to draw on), "question": "..."}; a VQA line may give the
    /// "answer" the model should say (marked right or wrong; --target expected explains
    /// it). Relative paths are resolved
    /// against the file's folder, or the current folder where the lines come from a pipe:
    /// `-` (standard input) or `<(…)`.
    #[arg(long, conflicts_with_all = ["image", "texts", "regions", "image_id"])]
    pairs: Option<PathBuf>,
    /// Method(s): a name, a comma-separated list or `all`. Valid: raw-attn, rollout,
    /// grad-cam, chefer, dsmi, dsmi-grad, dsmi-grad-attn, transformer-attribution,
    /// partial-lrp, chefer-lrp.
    #[arg(long, visible_alias = "methods", default_value = "all")]
    method: String,
    /// Chefer's relevance maps with LRP relevance in place of the attention (`chefer` reads
    /// as `chefer-lrp`).
    #[arg(long)]
    lrp: bool,
    /// Folder for the overlay PNGs, comparison sheets, index.html and explanations.json. An
    /// earlier run's files of these names in it are removed before the new ones are written;
    /// other files are left alone. A run locks the folder (.fiedler-explain.lock, left as the
    /// mark of a folder explain writes): a second run into it at once is refused. A run that
    /// fails before it has anything to write removes the folder if it made it.
    #[arg(long, default_value = "fiedler-out")]
    out: PathBuf,
    /// Write explanations.json and index.html only, without the overlay PNGs and comparison
    /// sheets (drawing them takes most of a large run's time). The images are still read
    /// before the work, so that one that does not decode stops the run before it starts.
    #[arg(long)]
    no_images: bool,
    /// Print no sample: only the warnings, the progress, how many answers were as expected and
    /// where the outputs went (for long --pairs runs: explanations.json and index.html hold
    /// every sample).
    #[arg(long, short)]
    quiet: bool,
    /// Samples per forward/backward pass.
    #[arg(long, default_value_t = 8, value_parser = positive, allow_negative_numbers = true)]
    batch: usize,
    /// Where to compute: cpu, cuda (the first GPU) or auto (cuda when it works).
    #[arg(long, value_enum, ignore_case = true, default_value = "cpu")]
    device: Device,
    #[command(flatten)]
    precision: Precision,
    /// First layer that the relevance products use: rollout, chefer and, on CLIP and ViLT,
    /// transformer-attribution and chefer-lrp (CLIP: vision tower); negative counts from the
    /// end (-1 = last layer only, as Chefer's CLIP notebook). Default: every layer. LXMERT
    /// takes none: its methods run over every layer of its three stacks (spec §C).
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    start_layer: i64,
    /// The same for CLIP's text tower.
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    start_layer_text: i64,
    /// Eigensolver for the spectral methods: lanczos (fast) or dense (reference).
    #[arg(long, default_value = "lanczos")]
    solver: Solver,
}

/// One explained sample, whatever the family.
struct Sample {
    /// What the sample is about (the image file, or the regions file for LXMERT).
    label: String,
    /// The image of an obj36 TSV that LXMERT's regions came from (such a file holds many).
    image_id: Option<String>,
    /// The image to draw on, if there is one.
    image: Option<PathBuf>,
    /// LXMERT's region boxes; patch grids otherwise.
    boxes: Option<Vec<[f32; 4]>>,
    text: String,
    tokens: Vec<String>,
    /// Whether the text was cut to the model's positions.
    truncated: bool,
    score_line: String,
    probability: Option<f32>,
    answer: Option<String>,
    /// The answer a `--pairs` line expects, and whether `answer` is it.
    expected: Option<Expected>,
    /// What the maps explain where that is not `answer` (a VQA `--target` other than the
    /// prediction).
    explained: Option<String>,
    /// The target as explanations.json names it.
    target: String,
    top_answers: Vec<(String, f32)>,
    explanations: Vec<Explanation>,
}

impl Sample {
    /// The label for people: with the image id where the regions file holds many images.
    fn shown_label(&self) -> String {
        match &self.image_id {
            Some(id) => format!("{} (image {id})", self.label),
            None => self.label.clone(),
        }
    }
}

/// A VQA result, the `question`-th, as the outputs show it; `target` says what its maps
/// explain, of the model's `answers`.
fn question_sample(
    r: QuestionResult,
    image: Option<PathBuf>,
    boxes: Option<Vec<[f32; 4]>>,
    expected: Option<String>,
    target: &AnswerTarget,
    question: usize,
    answers: &[String],
) -> Sample {
    // An answer explained that is the prediction too says so (with --target expected, the
    // right answers).
    let explained = target
        .explained(question, answers)
        .map(|e| match e == r.answer {
            true => format!("{e} (the prediction)"),
            false => e,
        });
    let top: Vec<String> = r
        .top_answers
        .iter()
        .map(|(a, p)| format!("{a} ({p:.2})"))
        .collect();
    let expected = expected.map(|a| Expected::new(a, &r.answer));
    let mut score_line = format!("answer: {}", r.answer);
    if let Some(e) = &expected {
        score_line.push_str(&format!("   {}", e.describe()));
    }
    score_line.push_str(&format!("   top: {}", top.join(", ")));
    if let Some(e) = &explained {
        score_line.push_str(&format!("   explained: {e}"));
    }
    Sample {
        score_line,
        label: r.image.display().to_string(),
        image_id: None,
        image,
        boxes,
        text: r.question,
        tokens: r.tokens,
        truncated: r.truncated,
        probability: r.probability,
        answer: Some(r.answer),
        expected,
        explained,
        target: target.name(question, answers),
        top_answers: r.top_answers,
        explanations: r.explanations,
    }
}

/// The model `explain` uses without --model.
const BUNDLED_MODEL: &str = "vilt-synth";

/// `models/NAME` under the current directory, else under the source checkout this binary was
/// built from (so `cargo run` and an installed binary both find it while the checkout exists).
fn bundled_model(name: &str) -> anyhow::Result<PathBuf> {
    let candidates = [
        Path::new("models").join(name),
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("models")
            .join(name),
    ];
    match candidates
        .iter()
        .find(|dir| dir.join("config.json").is_file())
    {
        Some(dir) => Ok(dir.clone()),
        None => bail!(
            "no --model given and the bundled model is not at {} or {}; pass --model DIR \
             (a Hugging Face CLIP, ViLT or LXMERT directory)",
            candidates[0].display(),
            candidates[1].display()
        ),
    }
}

/// Refuses options the model family has no use for, rather than ignoring them.
fn check_applies(
    args: &ExplainArgs,
    family: ModelFamily,
    methods: &[Method],
) -> anyhow::Result<()> {
    let name = family.model_type();
    if family != ModelFamily::Lxmert {
        for (given, flag) in [
            (args.regions.is_some(), "--regions"),
            (args.image_id.is_some(), "--image-id"),
            (args.answers.is_some(), "--answers"),
        ] {
            if given {
                bail!("{flag} applies to LXMERT (region features and its answer list); this is a {name} model");
            }
        }
    }
    if family == ModelFamily::Clip && !args.target.trim().eq_ignore_ascii_case("predicted") {
        bail!("--target applies to VQA models; CLIP explains each pair's score");
    }
    let tsv = args.regions.as_deref().is_some_and(is_obj36_tsv);
    if args.image_id.is_some() && !tsv {
        bail!("--image-id picks an image of an obj36 TSV given with --regions (FILE.tsv)");
    }
    if args.lrp && !methods.contains(&Method::CheferLrp) {
        bail!("--lrp applies to chefer (which it makes chefer-lrp), and no chefer was asked");
    }
    // Where the family takes the flag at all (LXMERT takes neither, ViLT no text tower's):
    // elsewhere the methods refuse it with the family's reason.
    for (start, flag, taken) in [
        (
            args.start_layer,
            "--start-layer",
            family != ModelFamily::Lxmert,
        ),
        (
            args.start_layer_text,
            "--start-layer-text",
            family == ModelFamily::Clip,
        ),
    ] {
        if taken && start != 0 && methods.iter().all(|m| m.product().is_none()) {
            bail!("{flag} applies to rollout, chefer, transformer-attribution and chefer-lrp (where their relevance products start), and none of them was asked");
        }
    }
    Ok(())
}

/// What to explain is given as texts or a pairs file; checked before anything is loaded,
/// with the usage of both.
const WHAT_TO_EXPLAIN: &str = "give what to explain: --image IMG --text \"...\" (repeatable; --question for VQA), or --pairs FILE.jsonl (LXMERT: --regions FILE --question \"...\", --image IMG to draw on)";

pub fn run(args: ExplainArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    if args.texts.is_empty() && args.pairs.is_none() {
        bail!("{WHAT_TO_EXPLAIN}");
    }
    let mut methods: Vec<Method> = Method::parse_list(&args.method)?
        .into_iter()
        .map(|m| m.with_lrp(args.lrp))
        .collect();
    let mut seen = std::collections::HashSet::new();
    methods.retain(|m| seen.insert(*m));
    let backend = open(args.device, args.precision)?;
    if args.device != Device::Cpu {
        eprintln!("device: {}", backend.describe());
    }
    let device = (backend.describe(), backend.precision(args.precision));
    let opts = MethodOptions {
        start_layer: args.start_layer,
        start_layer_text: args.start_layer_text,
        graph: GraphOptions {
            solver: args.solver,
            ..Default::default()
        },
    };
    let pairs = args.pairs.as_deref().map(PairsFile::read).transpose()?;
    // Samples to do: the texts given, or the non-empty lines of the --pairs file.
    let total = match &pairs {
        Some(pairs) => pairs.sample_lines().count(),
        None => args.texts.len(),
    };
    if let Some(pairs) = pairs.as_ref().filter(|_| total == 0) {
        bail!(
            "--pairs {} holds no samples: every line is blank",
            pairs.name
        );
    }
    // A run of one batch shows nothing: its output follows at once.
    let mut bar = if total > args.batch {
        Progress::new(Task::EXPLAIN, total, 0, args.batch)
    } else {
        Progress::hidden()
    };
    bar.route_warnings();
    let mut shown = 0;
    // Ctrl-C stops after the batch in hand; the samples done are written.
    let interrupt = StopOnInterrupt::install();
    let progress = |done: usize| {
        bar.advance(Advance {
            evaluated: done.saturating_sub(shown),
            ..Advance::default()
        });
        shown = shown.max(done);
        match interrupt.requested() && done < total {
            true => ControlFlow::Break(()),
            false => ControlFlow::Continue(()),
        }
    };

    let model_dir = match &args.model {
        Some(dir) => super::model_folder(dir),
        None => bundled_model(BUNDLED_MODEL)?,
    };
    let family = read_family(&model_dir)?;
    check_applies(&args, family, &methods)?;
    // Before the work: an --out that cannot be a folder fails now, not after it.
    super::check_out_folder(&args.out, "the outputs")?;
    let mut folder = OutputFolder::make(&args.out)?;
    // Before this run's lock is made: whether an earlier run wrote here.
    let earlier = earlier_run(&args.out);
    // Not this run's to clear when another holds it (made by both at once).
    let _writing = lock_output_folder(&args.out).inspect_err(|_| folder.keep())?;
    let input = Input {
        model_dir: &model_dir,
        pairs: pairs.as_ref(),
        methods: &methods,
        opts: &opts,
    };
    let mut run = RunRecord::new(&args, family, &input, device, total)?;
    let (samples, displayed) = with_backend!(backend, be => {
        explain_on(be, family, &input, &args, progress)?
    });
    folder.keep();
    bar.finish();
    run.done(samples.len(), started.elapsed().as_secs_f64());

    // The samples done before a Ctrl-C are drawn still, a person looking at what was done;
    // another Ctrl-C stops the drawing.
    if samples.len() < total && !args.no_images {
        interrupt.rearm();
        eprintln!(
            "drawing the images of the {} samples done (Ctrl-C stops the drawing)",
            samples.len()
        );
    }
    // The files first: a reader that stops early (`| head`) ends the process at a print.
    if earlier {
        remove_earlier_outputs(&args.out)?;
    }
    run.write(&args.out)?;
    let bar = match samples.len() > args.batch && !args.no_images {
        true => Progress::new(Task::WRITE, samples.len(), 0, args.batch),
        false => Progress::hidden(),
    };
    let bar = std::sync::Mutex::new(bar);
    let drawn = write_outputs(
        family.model_type(),
        &samples,
        total,
        &displayed,
        &args.out,
        Drawing {
            // Ctrl-C while the images are drawn stops the drawing; the page and the JSON
            // still cover every sample.
            stop: &|| interrupt.requested(),
            drawn: &|| {
                let mut bar = bar.lock().unwrap_or_else(|e| e.into_inner());
                bar.advance(Advance {
                    evaluated: 1,
                    ..Advance::default()
                })
            },
        },
    )?;
    drop(interrupt);
    bar.into_inner().unwrap_or_else(|e| e.into_inner()).finish();
    let mut stdout = std::io::stdout().lock();
    print_samples(&mut stdout, &samples, args.quiet)
        .and_then(|()| writeln!(stdout, "wrote {}", args.out.join("index.html").display()))
        .context("cannot write to standard output")?;
    let mut stops = Vec::new();
    if samples.len() < total {
        stops.push(format!(
            "stopped after {} of {total} samples: the outputs hold them",
            samples.len()
        ));
    }
    if drawn < samples.len() && !args.no_images {
        stops.push(format!(
            "stopped drawing after the images of {drawn} of {} samples: explanations.json \
             and index.html hold every sample",
            samples.len()
        ));
    }
    match stops.is_empty() {
        true => Ok(()),
        false => Err(Interrupted(stops.join("; ")).into()),
    }
}

/// What `explain_on` explains: the model, the --pairs file if any, the methods and options.
struct Input<'a> {
    model_dir: &'a Path,
    pairs: Option<&'a PairsFile>,
    methods: &'a [Method],
    opts: &'a MethodOptions,
}

/// The samples explained on backend `be` and the images to draw on (none with --no-images).
fn explain_on<B: Backend>(
    be: B,
    family: ModelFamily,
    input: &Input<'_>,
    args: &ExplainArgs,
    progress: impl FnMut(usize) -> ControlFlow<()>,
) -> anyhow::Result<(Vec<Sample>, Displayed)> {
    let (methods, opts, pairs) = (input.methods, input.opts, input.pairs);
    let keep = !args.no_images;
    Ok(match family {
        ModelFamily::Clip => {
            let session = ClipSession::open_on(be, input.model_dir)?;
            let (requests, expected, lines) = requests(args, pairs)?;
            if expected.iter().any(Option::is_some) {
                eprintln!(
                    "warning: CLIP gives no answer: the --pairs lines' \"answer\" fields are not used"
                );
            }
            let images = requests.iter().map(|r| &r.image).zip(&lines);
            let displayed = display_images(
                images,
                keep,
                KEPT_DISPLAY_BYTES,
                decoded(session.display_resizer()),
            )?;
            let results = session
                .explain(&requests, methods, opts, args.batch, progress)
                .map_err(|e| at_pairs_line(e, &whence_of_images(&requests, &lines)))?;
            let samples: Vec<Sample> = results
                .into_iter()
                .map(|r| Sample {
                    score_line: match r.probability {
                        Some(p) => format!("score {:.3}  p {p:.3}", r.score),
                        None => format!(
                            "score {:.3}  (one caption: no probability among captions)",
                            r.score
                        ),
                    },
                    label: r.image.display().to_string(),
                    image_id: None,
                    image: Some(r.image),
                    boxes: None,
                    text: r.text,
                    tokens: r.tokens,
                    truncated: r.truncated,
                    probability: r.probability,
                    answer: None,
                    expected: None,
                    explained: None,
                    target: "pair-score".to_owned(),
                    top_answers: Vec::new(),
                    explanations: r.explanations,
                })
                .collect();
            (samples, displayed)
        }
        ModelFamily::Vilt => {
            let session = ViltSession::open_on(be, input.model_dir)?;
            let (requests, expected, lines) = requests(args, pairs)?;
            let answers = session.answers();
            let target = vqa_target(&args.target, &expected, &lines, answers)?;
            warn_of_methods_blind_to(&args.target, &target, methods);
            warn_of_answers_never_given(&expected, &lines, answers);
            let images = requests.iter().map(|r| &r.image).zip(&lines);
            let displayed =
                display_images(images, keep, KEPT_DISPLAY_BYTES, decoded(whole_image_of))?;
            let results = session
                .explain(&requests, methods, opts, &target, args.batch, progress)
                .map_err(|e| at_pairs_line(e, &whence_of_images(&requests, &lines)))?;
            let samples: Vec<Sample> = results
                .into_iter()
                .zip(expected)
                .enumerate()
                .map(|(i, (r, expected))| {
                    let image = Some(r.image.clone());
                    question_sample(r, image, None, expected, &target, i, answers)
                })
                .collect();
            (samples, displayed)
        }
        ModelFamily::Lxmert => {
            let session = LxmertSession::open_on(be, input.model_dir, args.answers.as_deref())?;
            let mut requests = Vec::new();
            let mut images = Vec::new();
            let mut expected = Vec::new();
            let mut lines = Vec::new();
            for (request, image, answer, line) in region_requests(args, pairs)? {
                requests.push(request);
                images.push(image);
                expected.push(answer);
                lines.push(line);
            }
            let answers = session.answers();
            let target = vqa_target(&args.target, &expected, &lines, answers)?;
            warn_of_methods_blind_to(&args.target, &target, methods);
            warn_of_answers_never_given(&expected, &lines, answers);
            let drawn_on = images
                .iter()
                .zip(&lines)
                .filter_map(|(image, line)| Some((image.as_ref()?, line)));
            let displayed =
                display_images(drawn_on, keep, KEPT_DISPLAY_BYTES, decoded(whole_image_of))?;
            let results = session
                .explain(&requests, methods, opts, &target, args.batch, progress)
                .map_err(|e| {
                    let whence: Vec<Whence> = requests
                        .iter()
                        .zip(&lines)
                        .map(|(r, line)| Whence {
                            file: r.regions.display().to_string(),
                            image_id: r.image_id.clone(),
                            line: line.clone(),
                        })
                        .collect();
                    at_pairs_line(e, &whence)
                })?;
            let samples: Vec<Sample> = results
                .into_iter()
                .zip(images.into_iter().zip(expected))
                .zip(&requests)
                .enumerate()
                .map(|(i, (((r, regions), (image, expected)), request))| {
                    let boxes = regions
                        .boxes
                        .chunks_exact(4)
                        .map(|b| [b[0], b[1], b[2], b[3]])
                        .collect();
                    Sample {
                        image_id: request.image_id.clone(),
                        ..question_sample(r, image, Some(boxes), expected, &target, i, answers)
                    }
                })
                .collect();
            (samples, displayed)
        }
    })
}
