//! `fiedler explain`: scores or answers, token relevances in the terminal, and files a person
//! can open — an overlay PNG per sample and method, a comparison sheet when several methods
//! run, an HTML page and a JSON file with every number. The model directory's family decides
//! what a sample is: a caption for CLIP, a question for ViLT.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{IsTerminal, Read, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use crate::cli::device::{open, with_backend, Device, Precision};
use crate::cli::interrupt::{Interrupted, StopOnInterrupt};
use crate::cli::positive;
use crate::cli::progress::{Advance, Progress, Task};
use clap::Args;
use fiedler::backend::Backend;
use fiedler::eval::answers::clean;
use fiedler::explain::{Explanation, Method, MethodOptions};
use fiedler::input::regions::is_obj36_tsv;
use fiedler::input::{json_line_error, without_bom};
use fiedler::linalg::{GraphOptions, Solver};
use fiedler::model::config::{read_family, unnamed_answers};
use fiedler::model::ModelFamily;
use fiedler::render;
use fiedler::render::overlay::Layout;
use fiedler::session::{
    answer_hint, find_answer, whole_image, AnswerTarget, ClipSession, LxmertSession, PairRequest,
    QuestionResult, RegionRequest, SessionError, ViltSession,
};
use image::RgbImage;
use rayon::prelude::*;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

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
    /// "image": PATH (optional, to draw on), "question": "..."}. Relative paths are resolved
    /// against the file's folder, or the current folder where the lines come from a pipe:
    /// `-` (standard input) or `<(…)`.
    #[arg(long, conflicts_with_all = ["image", "texts", "regions", "image_id"])]
    pairs: Option<PathBuf>,
    /// Method(s): a name, a comma-separated list or `all`. Valid: raw-attn, rollout,
    /// grad-cam, chefer, dsmi, dsmi-grad, dsmi-grad-attn, transformer-attribution,
    /// partial-lrp, chefer-lrp.
    #[arg(long, default_value = "all")]
    method: String,
    /// Chefer's relevance maps with LRP relevance in place of the attention (`chefer` reads
    /// as `chefer-lrp`).
    #[arg(long)]
    lrp: bool,
    /// Folder for the overlay PNGs, comparison sheets, index.html and explanations.json. An
    /// earlier run's files of these names in it are removed before the new ones are written;
    /// other files are left alone. A run locks the folder (.fiedler-explain.lock, left as the
    /// mark of a folder explain writes): a second run into it at once is refused.
    #[arg(long, default_value = "fiedler-out")]
    out: PathBuf,
    /// Write explanations.json and index.html only, without the overlay PNGs and comparison
    /// sheets (drawing them takes most of a large run's time). The images are still read
    /// before the work, so that one that does not decode stops the run before it starts.
    #[arg(long)]
    no_images: bool,
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

#[derive(Deserialize)]
struct PairLine {
    image: PathBuf,
    #[serde(alias = "question")]
    text: String,
    /// The answer a VQA model should give, shown beside the one it gave.
    #[serde(default, deserialize_with = "string_or_number")]
    answer: Option<String>,
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

/// The answer a `--pairs` line expects of a VQA model.
struct Expected {
    answer: String,
    /// Whether the model's answer is it, once both are cleaned as VQA accuracy cleans them
    /// (punctuation, number words, articles).
    correct: bool,
}

/// Warns, in one line, of the expected answers that match none of the model's answers
/// (compared as `Expected` compares them): they can never be right. Each is named by its
/// --pairs line (`lines`). Not where the answers are unnamed (LXMERT without --answers,
/// already warned of): none would match.
fn warn_of_answers_never_given(
    expected: &[Option<String>],
    lines: &[Option<String>],
    answers: &[String],
) {
    if unnamed_answers(answers) {
        return;
    }
    let known: HashSet<String> = answers.iter().map(|a| clean(a)).collect();
    let never: Vec<String> = expected
        .iter()
        .zip(lines)
        .filter_map(|(a, line)| Some((a.as_ref()?, line.as_ref()?)))
        .filter(|(a, _)| !known.contains(&clean(a)))
        .map(|(a, line)| format!("{line}: {a:?}"))
        .collect();
    if let Some(first) = never.first() {
        let shown = match never.len() {
            1 => first.clone(),
            n if n <= 5 => never.join(", "),
            n => format!("{} and {} more", never[..5].join(", "), n - 5),
        };
        eprintln!(
            "warning: expected {} not among the model's {} answers, so it cannot be right ({shown})",
            if never.len() == 1 { "answer" } else { "answers" },
            answers.len()
        );
    }
}

impl Expected {
    fn new(answer: String, given: &str) -> Self {
        let correct = clean(&answer) == clean(given);
        Self { answer, correct }
    }

    /// "expected: cross (right)".
    fn describe(&self) -> String {
        let verdict = if self.correct { "right" } else { "wrong" };
        format!("expected: {} ({verdict})", self.answer)
    }
}

/// One object of explanations.json: one sample, one method.
#[derive(Serialize)]
struct Record<'a> {
    family: &'static str,
    method: &'static str,
    target: &'a str,
    image: String,
    /// The image of an obj36 TSV the regions came from (LXMERT).
    #[serde(skip_serializing_if = "Option::is_none")]
    image_id: Option<&'a str>,
    text: &'a str,
    score: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    probability: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    answer: Option<&'a str>,
    /// The answer the `--pairs` line expects.
    #[serde(skip_serializing_if = "Option::is_none")]
    expected_answer: Option<&'a str>,
    /// Whether `answer` is the expected one.
    #[serde(skip_serializing_if = "Option::is_none")]
    correct: Option<bool>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    top_answers: Vec<TopAnswer<'a>>,
    text_tokens: &'a [String],
    /// Whether the text was cut to the model's positions (its tokens are the kept ones).
    truncated: bool,
    text_relevance: &'a [f32],
    /// Which tokens the method scores; the others (special tokens) hold 0.
    text_scored: &'a [bool],
    image_relevance: &'a [f32],
    image_grid: [usize; 2],
    #[serde(skip_serializing_if = "Option::is_none")]
    boxes: Option<&'a [[f32; 4]]>,
    degenerate_graphs: &'a [String],
}

#[derive(Serialize)]
struct TopAnswer<'a> {
    answer: &'a str,
    probability: f32,
}

/// A --pairs file, read once: it may be a pipe (`--pairs -`, `<(jq …)`), which gives its
/// lines once only.
struct PairsFile {
    /// How messages name it: its path, or "standard input".
    name: String,
    /// The folder relative paths are resolved against: the file's, or the current one for a
    /// pipe.
    base: PathBuf,
    text: String,
}

impl PairsFile {
    fn read(path: &Path) -> anyhow::Result<Self> {
        if path == Path::new("-") {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("cannot read --pairs from standard input")?;
            return Ok(Self {
                name: "standard input".into(),
                base: PathBuf::new(),
                text,
            });
        }
        let text = fs::read_to_string(path)
            .with_context(|| format!("cannot read --pairs file {}", path.display()))?;
        // A pipe's folder (/dev/fd for `<(…)`) says nothing of where its paths are.
        let base = match fs::metadata(path).is_ok_and(|m| m.is_file()) {
            true => path.parent().unwrap_or(Path::new("")).to_path_buf(),
            false => PathBuf::new(),
        };
        Ok(Self {
            name: path.display().to_string(),
            base,
            text,
        })
    }

    /// The lines that hold a sample, with their numbers (from 1): the non-blank ones, a
    /// leading byte order mark (which Windows editors write) skipped.
    fn sample_lines(&self) -> impl Iterator<Item = (usize, &str)> {
        without_bom(&self.text)
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| (i + 1, l))
    }

    /// Each sample line parsed as `T`, with where it is ("FILE:LINE"); a line that does not
    /// parse is named with `expected`, the line format. Keys other than `keys` (a misspelt
    /// "answer" would go unchecked) are warned of, once for the file.
    fn samples<T: DeserializeOwned>(
        &self,
        expected: &str,
        keys: &[&str],
    ) -> anyhow::Result<Vec<(String, T)>> {
        let mut unread: Vec<(String, usize)> = Vec::new();
        let samples = self
            .sample_lines()
            .map(|(n, line)| {
                let at = format!("{}:{n}", self.name);
                let hint = match line.trim_start().starts_with('[') {
                    true => " (a line holds one JSON object, not a list: JSON Lines)",
                    false => "",
                };
                let value: serde_json::Value = serde_json::from_str(line).map_err(|e| {
                    anyhow::anyhow!("{at}: expected {expected}{hint}: {}", json_line_error(&e))
                })?;
                let strange: Vec<&String> = value
                    .as_object()
                    .map(|o| o.keys().filter(|k| !keys.contains(&k.as_str())).collect())
                    .unwrap_or_default();
                let parsed = T::deserialize(&value).map_err(|e| {
                    let also = match strange.as_slice() {
                        [] => String::new(),
                        keys => format!(" (the line's {} no line reads)", quoted_keys(keys)),
                    };
                    anyhow::anyhow!("{at}: expected {expected}{hint}: {e}{also}")
                })?;
                unread.extend(strange.into_iter().map(|k| (k.clone(), n)));
                Ok((at, parsed))
            })
            .collect::<anyhow::Result<_>>()?;
        if let Some((key, n)) = unread.first() {
            let more = match unread.len() {
                1 => String::new(),
                2 => "; one more key is not read either".to_owned(),
                k => format!("; {} more keys are not read either", k - 1),
            };
            eprintln!(
                "warning: {}:{n}: key {key:?} is not read, and ignored (a line reads {}){more}",
                self.name,
                keys.join(", ")
            );
        }
        Ok(samples)
    }
}

/// `"a", "b"` keys, as messages quote them: "key \"a\"" or "keys \"a\", \"b\"".
fn quoted_keys(keys: &[&String]) -> String {
    let quoted: Vec<String> = keys.iter().map(|k| format!("{k:?}")).collect();
    match quoted.len() {
        1 => format!("key {}", quoted[0]),
        _ => format!("keys {}", quoted.join(", ")),
    }
}

/// Where a request's input is: its file as messages name it (the image; LXMERT's regions)
/// with its image id, and its --pairs line.
struct Whence {
    file: String,
    image_id: Option<String>,
    line: Option<String>,
}

/// A session error about one input, named by its --pairs line: the question without words,
/// or the first request of the file (and image id) the error is about.
fn at_pairs_line(e: SessionError, inputs: &[Whence]) -> anyhow::Error {
    let index = match &e {
        SessionError::NoWords { index, .. } => Some(*index),
        SessionError::Input(input) => input.input_file().and_then(|(file, id)| {
            inputs
                .iter()
                .position(|w| w.file == file && (id.is_none() || w.image_id.as_deref() == id))
        }),
        _ => None,
    };
    match index.and_then(|i| inputs.get(i)?.line.clone()) {
        Some(line) => anyhow::Error::from(e).context(line),
        None => e.into(),
    }
}

/// Where each pair's image is.
fn whence_of_images(requests: &[PairRequest], lines: &[Option<String>]) -> Vec<Whence> {
    requests
        .iter()
        .zip(lines)
        .map(|(r, line)| Whence {
            file: r.image.display().to_string(),
            image_id: None,
            line: line.clone(),
        })
        .collect()
}

/// A pair to explain, the answer its --pairs line expects, and the line.
type PairSample = (PairRequest, Option<String>, Option<String>);

/// The pairs of a --pairs file, each with the answer its line expects and where it is.
fn read_pairs(pairs: &PairsFile) -> anyhow::Result<Vec<PairSample>> {
    let lines = pairs.samples::<PairLine>(
        r#"{"image": PATH, "text": "..."} ("question" may stand for "text", not beside it)"#,
        &["image", "text", "question", "answer"],
    )?;
    lines
        .into_iter()
        .map(|(at, p)| {
            let at = || at.clone();
            let image = pairs.base.join(p.image);
            check_file(&image, "image").with_context(at)?;
            check_text(&p.text).with_context(at)?;
            check_answer(p.answer.as_deref()).with_context(at)?;
            let request = PairRequest {
                image,
                text: p.text,
            };
            Ok((request, p.answer, Some(at())))
        })
        .collect()
}

/// The pairs to explain, the answer each `--pairs` line expects, and the line.
type Requests = (Vec<PairRequest>, Vec<Option<String>>, Vec<Option<String>>);

fn requests(args: &ExplainArgs, pairs: Option<&PairsFile>) -> anyhow::Result<Requests> {
    let mut out: Requests = Default::default();
    let lines = match (pairs, &args.image) {
        (Some(pairs), _) => read_pairs(pairs)?,
        (None, Some(image)) => args
            .texts
            .iter()
            .map(|t| {
                let request = PairRequest {
                    image: image.clone(),
                    text: t.clone(),
                };
                (request, None, None)
            })
            .collect(),
        (None, None) => bail!("{WHAT_TO_EXPLAIN}"),
    };
    for (request, answer, at) in lines {
        out.0.push(request);
        out.1.push(answer);
        out.2.push(at);
    }
    Ok(out)
}

/// That `path`, named by a `--pairs` line as `what`, is a file: checked as the file is read, so
/// the error names the line.
fn check_file(path: &Path, what: &str) -> anyhow::Result<()> {
    if !path.is_file() {
        let why = if path.exists() {
            "is not a file"
        } else {
            "not found"
        };
        bail!("{what} {} {why}", path.display());
    }
    Ok(())
}

/// That a `--pairs` line's text has something to explain.
fn check_text(text: &str) -> anyhow::Result<()> {
    if text.trim().is_empty() {
        bail!("the text is empty: nothing to explain");
    }
    Ok(())
}

/// That a `--pairs` line's expected answer, if it gives one, says something: an empty one
/// is a slip in the data (it would only count the sample wrong).
fn check_answer(answer: Option<&str>) -> anyhow::Result<()> {
    if answer.is_some_and(|a| a.trim().is_empty()) {
        bail!("the \"answer\" is empty: give the answer the model should say, or leave it out");
    }
    Ok(())
}

/// A value a `--pairs` line may give as a string or a number: an image id (COCO ids are
/// numbers), an answer ("2").
fn string_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match Option::<serde_json::Value>::deserialize(d)? {
        None => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s)),
        Some(serde_json::Value::Number(n)) if n.is_u64() => Ok(Some(n.to_string())),
        Some(other) => Err(serde::de::Error::custom(format!(
            "{other} is neither a string nor a whole number from 0 to 2^64 - 1"
        ))),
    }
}

/// One line of an LXMERT `--pairs` file.
#[derive(Deserialize)]
struct RegionLine {
    regions: PathBuf,
    #[serde(default, deserialize_with = "string_or_number")]
    image_id: Option<String>,
    /// An image to draw the regions on.
    #[serde(default)]
    image: Option<PathBuf>,
    #[serde(alias = "text")]
    question: String,
    /// The answer the model should give, shown beside the one it gave.
    #[serde(default, deserialize_with = "string_or_number")]
    answer: Option<String>,
}

/// An LXMERT request, the image to draw it on (if any), the answer its line expects and
/// the line.
type RegionSample = (
    RegionRequest,
    Option<PathBuf>,
    Option<String>,
    Option<String>,
);

/// LXMERT requests, each with the image to draw on (if any), the answer it expects and its
/// --pairs line.
fn region_requests(
    args: &ExplainArgs,
    pairs: Option<&PairsFile>,
) -> anyhow::Result<Vec<RegionSample>> {
    if let Some(pairs) = pairs {
        let lines = pairs.samples::<RegionLine>(
            r#"{"regions": PATH, "image_id": ID?, "image": PATH?, "question": "..."}"#,
            &["regions", "image_id", "image", "question", "text", "answer"],
        )?;
        let base = &pairs.base;
        return lines
            .into_iter()
            .map(|(at, l)| {
                let at = || at.clone();
                let regions = base.join(l.regions);
                check_file(&regions, "regions").with_context(at)?;
                match (is_obj36_tsv(&regions), &l.image_id) {
                    (true, None) => bail!(
                        "{}: {} is an obj36 TSV, which holds many images: give the line an \"image_id\"",
                        at(),
                        regions.display()
                    ),
                    (false, Some(_)) => bail!(
                        "{}: \"image_id\" picks an image of an obj36 TSV (.tsv), and {} is a features file of one image",
                        at(),
                        regions.display()
                    ),
                    _ => {}
                }
                check_text(&l.question).with_context(at)?;
                check_answer(l.answer.as_deref()).with_context(at)?;
                let image = l.image.map(|p| base.join(p));
                if let Some(image) = &image {
                    check_file(image, "image").with_context(at)?;
                }
                let request = RegionRequest {
                    regions,
                    image_id: l.image_id,
                    question: l.question,
                };
                Ok((request, image, l.answer, Some(at())))
            })
            .collect();
    }
    let Some(regions) = &args.regions else {
        bail!("LXMERT reads region features: give --regions FILE [--image-id ID] (and --image IMG to draw on)");
    };
    Ok(args
        .texts
        .iter()
        .map(|q| {
            let request = RegionRequest {
                regions: regions.clone(),
                image_id: args.image_id.clone(),
                question: q.clone(),
            };
            (request, args.image.clone(), None, None)
        })
        .collect())
}

/// The target `--target` names, of the model's `answers`: `expected` is each --pairs line's
/// answer (`expected`, with its `lines`), found as `AnswerTarget::parse` finds an answer, else
/// as VQA accuracy compares answers ("Two" is "2").
fn vqa_target(
    spec: &str,
    expected: &[Option<String>],
    lines: &[Option<String>],
    answers: &[String],
) -> anyhow::Result<AnswerTarget> {
    if !spec.trim().eq_ignore_ascii_case("expected") {
        return AnswerTarget::parse(spec, answers).map_err(|e| match e {
            // The library's list lacks the CLI's own target (its hint for `seed` stands).
            SessionError::BadTarget(spec) if !spec.trim().eq_ignore_ascii_case("seed") => {
                anyhow::anyhow!("--target {spec:?}: expected predicted, answer:TEXT, index:N, expected (each --pairs line's \"answer\") or sum-logits")
            }
            e => e.into(),
        });
    }
    if lines.iter().any(Option::is_none) {
        bail!("--target expected explains the \"answer\" of each --pairs line; for questions given with --question, name the answer: --target answer:TEXT");
    }
    if unnamed_answers(answers) {
        bail!("--target expected: the model's answers have no names to find the lines' answers among; give --answers FILE");
    }
    let each = expected
        .iter()
        .zip(lines.iter().flatten())
        .map(|(answer, at)| {
            let Some(answer) = answer else {
                bail!("{at}: no \"answer\" to explain (--target expected explains each line's \"answer\")");
            };
            expected_index(answer, answers).with_context(|| format!("{at}: --target expected"))
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(AnswerTarget::Each(each))
}

/// The index of the model's answer that `answer` is: as `AnswerTarget::parse` reads
/// `answer:TEXT`, else the one answer equal to it once both are cleaned as VQA accuracy
/// cleans them.
fn expected_index(answer: &str, answers: &[String]) -> anyhow::Result<usize> {
    if let Some(i) = find_answer(answer, answers) {
        return Ok(i);
    }
    let cleaned = clean(answer);
    let same: Vec<usize> = (0..answers.len())
        .filter(|&i| clean(&answers[i]) == cleaned)
        .collect();
    match same.as_slice() {
        [i] => Ok(*i),
        [] => bail!(
            "the model has no answer {answer:?} ({} answers{})",
            answers.len(),
            answer_hint(answer, answers)
        ),
        several => bail!(
            "{answer:?} is each of the model's answers {}: name one with --target answer:TEXT",
            several
                .iter()
                .map(|&i| format!("{:?}", answers[i]))
                .collect::<Vec<_>>()
                .join(", ")
        ),
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
    let explained = target.explained(question, answers);
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

/// The lock file that a run holds in its output folder while it writes there.
const LOCK_FILE: &str = ".fiedler-explain.lock";

/// Locks `out` for this run, until the returned file is dropped: two runs writing into one
/// folder at once would mix their images under one page.
fn lock_output_folder(out: &Path) -> anyhow::Result<fs::File> {
    let path = out.join(LOCK_FILE);
    let file = fs::File::create(&path)
        .with_context(|| format!("cannot write in output folder {}", out.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => bail!(
            "another fiedler explain is writing into {}; wait for it to end, or give another --out",
            out.display()
        ),
        // A file system without locks (some network mounts): run unguarded.
        Err(fs::TryLockError::Error(e)) if e.kind() == std::io::ErrorKind::Unsupported => Ok(file),
        Err(fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
}

/// What to explain is given as texts or a pairs file; checked before anything is loaded,
/// with the usage of both.
const WHAT_TO_EXPLAIN: &str = "give what to explain: --image IMG --text \"...\" (repeatable; --question for VQA), or --pairs FILE.jsonl (LXMERT: --regions FILE --question \"...\", --image IMG to draw on)";

pub fn run(args: ExplainArgs) -> anyhow::Result<()> {
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
    fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create output folder {}", args.out.display()))?;
    // Before this run's lock is made: whether an earlier run wrote here.
    let earlier = earlier_run(&args.out);
    let _writing = lock_output_folder(&args.out)?;
    let input = Input {
        model_dir: &model_dir,
        pairs: pairs.as_ref(),
        methods: &methods,
        opts: &opts,
    };
    let (samples, displayed) = with_backend!(backend, be => {
        explain_on(be, family, &input, &args, progress)?
    });
    bar.finish();

    // The files first: a reader that stops early (`| head`) ends the process at a print.
    if earlier {
        remove_earlier_outputs(&args.out)?;
    }
    let bar = match samples.len() > args.batch && !args.no_images {
        true => Progress::new(Task::WRITE, samples.len(), 0, args.batch),
        false => Progress::hidden(),
    };
    let bar = std::sync::Mutex::new(bar);
    let drawn = write_outputs(
        family.model_type(),
        &samples,
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
    print_samples(&mut stdout, &samples)
        .and_then(|()| writeln!(stdout, "wrote {}", args.out.join("index.html").display()))
        .context("cannot write to standard output")?;
    if samples.len() < total {
        return Err(Interrupted(format!(
            "stopped after {} of {total} samples: the outputs hold them",
            samples.len()
        ))
        .into());
    }
    if drawn < samples.len() && !args.no_images {
        return Err(Interrupted(format!(
            "stopped drawing after the images of {drawn} of {} samples: explanations.json \
             and index.html hold every sample",
            samples.len()
        ))
        .into());
    }
    Ok(())
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
            let displayed = display_images(images, keep, KEPT_DISPLAY_BYTES, {
                let load = session.display_loader();
                move |p| Ok(load(p)?)
            })?;
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
            warn_of_answers_never_given(&expected, &lines, answers);
            let images = requests.iter().map(|r| &r.image).zip(&lines);
            let displayed =
                display_images(images, keep, KEPT_DISPLAY_BYTES, |p| Ok(whole_image(p)?))?;
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
            warn_of_answers_never_given(&expected, &lines, answers);
            let drawn_on = images
                .iter()
                .zip(&lines)
                .filter_map(|(image, line)| Some((image.as_ref()?, line)));
            let displayed =
                display_images(drawn_on, keep, KEPT_DISPLAY_BYTES, |p| Ok(whole_image(p)?))?;
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

/// How many bytes of display images the check before the work keeps for the drawing; the
/// images past them are decoded again when drawn, so that a run over thousands of images holds
/// a bounded amount (an image drawn at 384 pixels is about 440 KB).
const KEPT_DISPLAY_BYTES: usize = 1 << 30;

/// How an image is decoded to be drawn on.
type LoadImage = Box<dyn Fn(&Path) -> anyhow::Result<RgbImage> + Send + Sync>;

/// The images to draw on: none with --no-images; else the ones the check before the work
/// kept, and how to decode the others again.
struct Displayed {
    kept: HashMap<PathBuf, RgbImage>,
    load: Option<LoadImage>,
}

impl Displayed {
    /// The image at `path` to draw on; none with --no-images.
    fn get(&self, path: &Path) -> anyhow::Result<Option<Cow<'_, RgbImage>>> {
        let Some(load) = &self.load else {
            return Ok(None);
        };
        Ok(Some(match self.kept.get(path) {
            Some(image) => Cow::Borrowed(image),
            None => Cow::Owned(load(path)?),
        }))
    }
}

/// Each distinct image decoded once, as drawn (`load`), on every core, before the work: a file
/// that does not decode stops the run before it starts (and costs no batch done), named by its
/// --pairs line when it has one, the first such line of the file. Unless `keep` is false
/// (--no-images), the images are kept for the drawing up to `budget` bytes.
fn display_images<'a>(
    images: impl IntoIterator<Item = (&'a PathBuf, &'a Option<String>)>,
    keep: bool,
    budget: usize,
    load: impl Fn(&Path) -> anyhow::Result<RgbImage> + Send + Sync + 'static,
) -> anyhow::Result<Displayed> {
    let mut seen = HashSet::new();
    let distinct: Vec<_> = images
        .into_iter()
        .filter(|(path, _)| seen.insert(*path))
        .collect();
    let mut kept = HashMap::new();
    let mut bytes = 0;
    // A few images per thread at a time, so that the ones not kept are freed as they go.
    for chunk in distinct.chunks(4 * rayon::current_num_threads()) {
        let decoded: Vec<_> = chunk.par_iter().map(|(path, _)| load(path)).collect();
        for ((path, line), image) in chunk.iter().zip(decoded) {
            let image = match (image, line) {
                (Ok(image), _) => image,
                (Err(e), Some(line)) => return Err(e.context(line.clone())),
                (Err(e), None) => return Err(e),
            };
            let size = image.as_raw().len();
            if keep && bytes + size <= budget {
                bytes += size;
                kept.insert((*path).clone(), image);
            }
        }
    }
    Ok(Displayed {
        kept,
        load: keep.then(|| Box::new(load) as LoadImage),
    })
}

/// The most characters of a text its sample line shows: the whole text is in the JSON and
/// the page, and its tokens follow on the next lines.
const SHOWN_CHARS: usize = 120;

/// A text as its sample line shows it, quoted: tabs and line breaks as \t, \n (raw, they
/// would break the layout), bidirectional controls as \u{202e} (raw, they would reorder it),
/// and a long text cut with "…" and its length.
fn shown_text(text: &str) -> String {
    let escaped = |c: char| match c.is_control() || render::is_bidi_control(c) {
        true => c.escape_default().to_string(),
        false => c.to_string(),
    };
    let count = text.chars().count();
    if count <= SHOWN_CHARS {
        let all: String = text.chars().map(escaped).collect();
        return format!("\"{all}\"");
    }
    let start: String = text.chars().take(SHOWN_CHARS).map(escaped).collect();
    format!("\"{start}…\" ({count} characters)")
}

/// Whether the tokens are coloured: on a terminal, unless `NO_COLOR` is set to anything but
/// the empty string (no-color.org).
fn colour_wanted(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

fn print_samples(out: &mut impl Write, samples: &[Sample]) -> std::io::Result<()> {
    let color = colour_wanted(
        std::io::stdout().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let width = samples
        .iter()
        .flat_map(|s| &s.explanations)
        .map(|e| e.method.name().len())
        .max()
        .unwrap_or(0);
    for (i, s) in samples.iter().enumerate() {
        writeln!(
            out,
            "sample {i}: {}  {}  {}",
            s.shown_label(),
            shown_text(&s.text),
            s.score_line
        )?;
        for e in &s.explanations {
            let tokens =
                render::terminal::highlight(&s.tokens, &e.text_relevance, &e.text_scored, color);
            writeln!(out, "  {:<width$}  {tokens}", e.method.name())?;
            if let Some(regions) = unseen_regions(s, e) {
                writeln!(out, "  {:<width$}  regions: {regions}", "")?;
            } else if flat_image(e) {
                // The overlay says so too; here it would go unseen beside the tokens.
                writeln!(out, "  {:<width$}  image: {FLAT_IMAGE}", "")?;
            }
            for w in degenerate_warnings(e) {
                eprintln!("warning: sample {i} {}: {w}", e.method);
            }
        }
    }
    if let Some(line) = expected_summary(samples) {
        writeln!(out, "{line}")?;
    }
    Ok(())
}

/// "answers as expected: 17 of 19 (wrong: samples 8, 12)", where the inputs expected answers.
fn expected_summary(samples: &[Sample]) -> Option<String> {
    let expecting: Vec<(usize, bool)> = samples
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.expected.as_ref().map(|e| (i, e.correct)))
        .collect();
    if expecting.is_empty() {
        return None;
    }
    let right = expecting.iter().filter(|(_, c)| *c).count();
    let wrong: Vec<String> = expecting
        .iter()
        .filter(|(_, c)| !c)
        .map(|(i, _)| i.to_string())
        .collect();
    let mut line = format!("answers as expected: {right} of {}", expecting.len());
    match wrong.len() {
        0 => {}
        1 => line.push_str(&format!(" (wrong: sample {})", wrong[0])),
        _ => line.push_str(&format!(" (wrong: samples {})", wrong.join(", "))),
    }
    Some(line)
}

/// The strongest regions of an LXMERT map in words, when there is no image to draw the map
/// on (otherwise the overlay shows them).
fn unseen_regions(s: &Sample, e: &Explanation) -> Option<String> {
    match (&s.image, &s.boxes) {
        (None, Some(boxes)) => Some(render::strongest_regions(&e.image_relevance, boxes)),
        _ => None,
    }
}

/// What the terminal and the page say of each near-degenerate graph of an explanation.
/// Whether the image map ranks nothing: every value equal.
fn flat_image(e: &Explanation) -> bool {
    render::strongest(&e.image_relevance, 1).is_empty()
}

const FLAT_IMAGE: &str = "flat map (all values equal)";

fn degenerate_warnings(e: &Explanation) -> Vec<String> {
    e.degenerate_graphs
        .iter()
        .map(|g| format!("Fiedler vector of {g} is not well defined"))
        .collect()
}

/// How `write_outputs` draws, from its drawing threads: whether to stop (Ctrl-C) before the
/// next sample's images, and what to call after each sample drawn.
struct Drawing<'a> {
    stop: &'a (dyn Fn() -> bool + Sync),
    drawn: &'a (dyn Fn() + Sync),
}

/// The image files of one sample: an overlay per explanation and the comparison sheet, where
/// they were drawn.
#[derive(Default)]
struct SampleFiles {
    overlays: Vec<Option<String>>,
    sheet: Option<String>,
}

/// Writes explanations.json first, then the samples' overlays and sheets (several samples at
/// once), then index.html, which shows the images drawn. Returns how many samples are done:
/// drawn, or with nothing to draw (no image, or --no-images); fewer when `drawing.stop`
/// stopped the drawing.
fn write_outputs(
    family: &'static str,
    samples: &[Sample],
    displayed: &Displayed,
    out: &Path,
    drawing: Drawing<'_>,
) -> anyhow::Result<usize> {
    let records: Vec<Record> = samples
        .iter()
        .flat_map(|s| s.explanations.iter().map(move |e| record(family, s, e)))
        .collect();
    let json = serde_json::to_string_pretty(&records)?;
    fs::write(out.join("explanations.json"), json).context("cannot write explanations.json")?;
    let files: Vec<Option<SampleFiles>> = samples
        .par_iter()
        .enumerate()
        .map(|(i, s)| {
            let Some(path) = s.image.as_ref().filter(|_| displayed.load.is_some()) else {
                return Ok(Some(SampleFiles::default()));
            };
            if (drawing.stop)() {
                return Ok(None);
            }
            let Some(image) = displayed
                .get(path)
                .with_context(|| format!("cannot draw sample {i}"))?
            else {
                return Ok(Some(SampleFiles::default()));
            };
            let files = draw_sample(i, s, &image, out)?;
            (drawing.drawn)();
            Ok(Some(files))
        })
        .collect::<anyhow::Result<_>>()?;
    let html_samples: Vec<render::html::HtmlPair> = samples
        .iter()
        .zip(&files)
        .map(|(s, files)| html_sample(s, files.as_ref()))
        .collect();
    let page = render::html::page("fiedler explanations", &html_samples);
    fs::write(out.join("index.html"), page).context("cannot write index.html")?;
    Ok(files.iter().flatten().count())
}

/// One object of explanations.json.
fn record<'a>(family: &'static str, s: &'a Sample, e: &'a Explanation) -> Record<'a> {
    Record {
        family,
        method: e.method.name(),
        target: &s.target,
        image: s.label.clone(),
        image_id: s.image_id.as_deref(),
        text: &s.text,
        score: e.score,
        probability: s.probability,
        answer: s.answer.as_deref(),
        expected_answer: s.expected.as_ref().map(|e| e.answer.as_str()),
        correct: s.expected.as_ref().map(|e| e.correct),
        top_answers: s
            .top_answers
            .iter()
            .map(|(a, p)| TopAnswer {
                answer: a,
                probability: *p,
            })
            .collect(),
        text_tokens: &s.tokens,
        truncated: s.truncated,
        text_relevance: &e.text_relevance,
        text_scored: &e.text_scored,
        image_relevance: &e.image_relevance,
        image_grid: [e.image_grid.0, e.image_grid.1],
        boxes: s.boxes.as_deref(),
        degenerate_graphs: &e.degenerate_graphs,
    }
}

/// Sample `i`'s overlay per explanation, and its comparison sheet when it has several, drawn
/// on `image` and written into `out`.
fn draw_sample(i: usize, s: &Sample, image: &RgbImage, out: &Path) -> anyhow::Result<SampleFiles> {
    let layout = |e: &Explanation| match &s.boxes {
        Some(b) => Layout::Boxes(b),
        None => Layout::Grid(e.image_grid.0, e.image_grid.1),
    };
    let mut overlays = Vec::new();
    for e in &s.explanations {
        let shown = match (&s.explained, &s.answer) {
            (Some(target), _) => Some(format!("explained: {target}")),
            (None, answer) => answer.clone(),
        };
        // The answer (CLIP has none) before the text: a long text is cut at the end of the
        // title.
        let title = [
            Some(e.method.name().to_owned()),
            shown,
            Some(s.text.clone()),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" | ");
        let file = format!("sample{i}-{}.png", e.method);
        let overlay = render::overlay::overlay(image, &e.image_relevance, layout(e), &title);
        save_png(&overlay, &out.join(&file))?;
        overlays.push(Some(file));
    }
    let sheet = match s.explanations.first() {
        Some(first) if s.explanations.len() > 1 => {
            let panels: Vec<(String, Vec<f32>)> = s
                .explanations
                .iter()
                .map(|e| (e.method.name().to_owned(), e.image_relevance.clone()))
                .collect();
            let caption = format!("\"{}\"  {}", s.text, s.score_line);
            let sheet = render::sheet::comparison_sheet(image, &panels, layout(first), &caption);
            let file = format!("sample{i}-sheet.png");
            save_png(&sheet, &out.join(&file))?;
            Some(file)
        }
        _ => None,
    };
    Ok(SampleFiles { overlays, sheet })
}

/// A sample as index.html shows it, with its image files where they were drawn (`None`: the
/// drawing stopped before it).
fn html_sample(s: &Sample, files: Option<&SampleFiles>) -> render::html::HtmlPair {
    let methods = s
        .explanations
        .iter()
        .enumerate()
        .map(|(m, e)| render::html::HtmlMethod {
            name: e.method.name().to_owned(),
            tokens: s.tokens.clone(),
            relevance: e.text_relevance.clone(),
            scored: e.text_scored.clone(),
            overlay_file: files.and_then(|f| f.overlays.get(m).cloned().flatten()),
            regions: unseen_regions(s, e),
            warnings: {
                let mut warnings = degenerate_warnings(e);
                // Where the overlay is drawn, as the terminal says (regions say it there).
                if unseen_regions(s, e).is_none() && flat_image(e) {
                    warnings.push(format!("image: {FLAT_IMAGE}, nothing is ranked"));
                }
                warnings
            },
        })
        .collect();
    render::html::HtmlPair {
        image_label: s.shown_label(),
        text: match (&s.answer, &s.explained) {
            (Some(a), Some(target)) => format!("{}  → {a}  (explained: {target})", s.text),
            (Some(a), None) => format!("{}  → {a}", s.text),
            (None, _) => s.text.clone(),
        },
        truncated: s.truncated,
        score: s.explanations.first().map_or(f32::NAN, |e| e.score),
        probability: s.probability,
        top_answers: s.top_answers.clone(),
        expected: s.expected.as_ref().map(|e| (e.answer.clone(), e.correct)),
        methods,
        sheet_file: files.and_then(|f| f.sheet.clone()),
    }
}

/// Whether an earlier `explain` wrote into `out`: it holds explanations.json, or the lock
/// file a run leaves (one cut short before writing its page).
fn earlier_run(out: &Path) -> bool {
    out.join("explanations.json").is_file() || out.join(LOCK_FILE).is_file()
}

/// In a folder an earlier `explain` wrote, the files that run wrote: the PNGs, then the page
/// and explanations.json. A run with fewer samples or methods would leave PNGs beside its
/// own, looking current, and a run cut short before it writes its page would leave the
/// earlier page pointing at PNGs it has removed or replaced. Only the names `explain` gives
/// (`sampleN-METHOD.png`, `sampleN-sheet.png`, index.html, explanations.json) are removed;
/// other files, `sample0-mine.png` included, are left alone.
fn remove_earlier_outputs(out: &Path) -> anyhow::Result<()> {
    let ours = |name: &str| {
        name.strip_prefix("sample")
            .and_then(|rest| rest.strip_suffix(".png"))
            .and_then(|rest| rest.split_once('-'))
            .is_some_and(|(n, what)| {
                !n.is_empty()
                    && n.bytes().all(|b| b.is_ascii_digit())
                    && (what == "sheet" || Method::ALL.iter().any(|m| m.name() == what))
            })
    };
    let entries = fs::read_dir(out).with_context(|| format!("cannot list {}", out.display()))?;
    for entry in entries.flatten() {
        if entry.file_name().to_str().is_some_and(ours) {
            fs::remove_file(entry.path())
                .with_context(|| format!("cannot remove {}", entry.path().display()))?;
        }
    }
    for page in ["index.html", "explanations.json"] {
        match fs::remove_file(out.join(page)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e)
                    .with_context(|| format!("cannot remove {}", out.join(page).display()))
            }
            _ => {}
        }
    }
    Ok(())
}

fn save_png(image: &RgbImage, path: &Path) -> anyhow::Result<()> {
    image
        .save(path)
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;

    /// The check before the work keeps images up to its budget and decodes the others again
    /// when they are drawn, to the same pixels; it decodes each distinct image once; the error
    /// it names is the first bad line's, though its images decode in parallel; and with
    /// --no-images it keeps none and draws none.
    #[test]
    fn display_images_are_kept_within_the_budget() {
        let loads = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&loads);
        // A 10 × 10 image (300 bytes) whose pixels say which file it is.
        let load = move |p: &Path| -> anyhow::Result<RgbImage> {
            counted.fetch_add(1, Ordering::Relaxed);
            let name = p.to_string_lossy();
            let Some(n) = name.strip_prefix("image-") else {
                bail!("{name} does not decode");
            };
            let n: u8 = n.parse()?;
            Ok(RgbImage::from_pixel(10, 10, image::Rgb([n, 0, 0])))
        };
        let paths: Vec<PathBuf> = ["image-1", "image-2", "image-1", "image-3"]
            .map(PathBuf::from)
            .to_vec();
        let lines: Vec<Option<String>> = (1..=4).map(|n| Some(format!("line {n}"))).collect();
        let shown = display_images(paths.iter().zip(&lines), true, 650, load.clone()).unwrap();
        assert_eq!(loads.load(Ordering::Relaxed), 3, "each distinct image once");
        assert_eq!(shown.kept.len(), 2, "600 bytes of a budget of 650");
        for (n, path) in [(1, "image-1"), (2, "image-2"), (3, "image-3")] {
            let image = shown.get(Path::new(path)).unwrap().unwrap();
            assert_eq!(image.get_pixel(9, 9).0, [n, 0, 0], "{path}");
        }
        assert_eq!(loads.load(Ordering::Relaxed), 4, "image-3 decoded again");

        let many: Vec<PathBuf> = (0..64)
            .map(|n| match n {
                40 | 50 => PathBuf::from(format!("broken-{n}")),
                n => PathBuf::from(format!("image-{n}")),
            })
            .collect();
        let lines: Vec<Option<String>> = (1..=64).map(|n| Some(format!("line {n}"))).collect();
        for _ in 0..5 {
            let err = display_images(many.iter().zip(&lines), true, 0, load.clone())
                .err()
                .unwrap();
            assert_eq!(format!("{err:#}"), "line 41: broken-40 does not decode");
        }
        let none = display_images(paths.iter().zip(&lines), false, 1 << 20, load).unwrap();
        assert!(none.kept.is_empty());
        assert!(none.get(Path::new("image-1")).unwrap().is_none());
    }

    /// A folder an earlier run wrote (its page, or only the lock file of a run cut short) is
    /// recognised, and a new run removes that run's PNGs and then its page, so that no page
    /// is left pointing at images removed or replaced; other files stay.
    #[test]
    fn an_earlier_runs_page_goes_with_its_images() {
        let out = std::env::temp_dir().join(format!("fiedler-earlier-{}", std::process::id()));
        let _ = fs::remove_dir_all(&out);
        fs::create_dir_all(&out).unwrap();
        assert!(!earlier_run(&out));
        fs::write(out.join(LOCK_FILE), "").unwrap();
        assert!(earlier_run(&out));
        let ours = [
            "index.html",
            "explanations.json",
            "sample0-chefer.png",
            "sample12-sheet.png",
        ];
        let theirs = ["notes.txt", "sample0-mine.png", "photo.png", LOCK_FILE];
        for name in ours.iter().chain(&theirs) {
            fs::write(out.join(name), "x").unwrap();
        }
        remove_earlier_outputs(&out).unwrap();
        for name in ours {
            assert!(!out.join(name).exists(), "{name} left");
        }
        for name in theirs {
            assert!(out.join(name).exists(), "{name} removed");
        }
        fs::remove_dir_all(&out).unwrap();
    }

    #[test]
    fn tokens_are_coloured_on_a_terminal_unless_no_color_is_set() {
        assert!(colour_wanted(true, None));
        assert!(colour_wanted(true, Some(OsStr::new(""))));
        assert!(!colour_wanted(true, Some(OsStr::new("1"))));
        assert!(!colour_wanted(false, None));
    }
}
