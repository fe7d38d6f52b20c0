//! The results file: append-only JSON Lines, one object per line, tagged by `kind`:
//!
//! - `run` (first line): what produced the file — family, model, dataset, input files,
//!   steps, seed. A
//!   rerun must match it, so results of different settings never mix.
//! - `perturbation`: one sample × method × modality × order, with the units kept, the
//!   predicted answer and its VQA accuracy (0–1) at every step.
//! - `failure`: a sample that could not be evaluated, with the reason (retried on rerun).
//! - `ground-truth`: one sample × method scored against `fiedler synth` ground truth (pointing
//!   game, mass in mask, relevant-word rank, and their chance levels), when the run has it.
//! - `started` / `finished`: a `fiedler eval` on the file began, with the number of samples
//!   it set out to evaluate, and ended with each of them evaluated or failed; a `started`
//!   with no `finished` after it is a run interrupted (or still going), which the report says.
//!
//! Other kinds are kept for later readers and skipped by this one. Each line is written with one `write` and flushed to disk (`fsync`) before the
//! next, so a process killed at any moment leaves whole lines and at most one torn last line
//! (no newline); the next run drops that line and redoes its record. A file that does not
//! start with a run header is not a results file and is never cut or appended to.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::eval::protocol::{check_steps, Modality, Order, Test};
use crate::eval::EvalError;
use crate::hash::fnv1a_words;
use crate::input::json::line_error;
use crate::warning::warn;

/// Version of the line format.
pub const FORMAT: u32 = 1;

/// The `run` line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunHeader {
    pub format: u32,
    pub family: String,
    pub model: String,
    pub dataset: String,
    /// The images folder (ViLT) or region features (LXMERT).
    pub inputs: String,
    pub steps: Vec<f64>,
    pub seed: u64,
    /// The `fiedler synth` ground_truth.json scored against, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ground_truth: Option<String>,
    /// `Weights::fingerprint` of the model's weights: weights retrained or replaced in place
    /// do not resume into results of the old ones. (Absent in files of older versions.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<String>,
    /// A fingerprint of the dataset files and the ground truth (`data_fingerprint`): a set
    /// written again in place (new questions under the same ids) does not resume into results
    /// of the old one. (Absent in files of older versions.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// A fingerprint of the model's other files (config, tokenizer, preprocessing) and the
    /// --answers file (`data_fingerprint` of those there): answers renamed or a tokenizer
    /// replaced in place do not resume into results of the old ones. (Absent in files of
    /// older versions.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_files: Option<String>,
    /// The --answers file naming LXMERT's answers, if one was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answers: Option<String>,
    /// The --file-pattern values that found the images or features files (empty: the
    /// defaults). (Absent in files of older versions.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_patterns: Option<Vec<String>>,
    /// The dense products' precision: "f32", or "tf32" (CUDA's --tf32), which moves
    /// explanations by up to ~1e-3 of their scale. (Absent in files of older versions.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<String>,
    /// The spectral methods' eigensolver ("lanczos", "dense"). (Absent in files of older
    /// versions.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub solver: Option<String>,
    /// What the explanations explain when not the predicted answer: "sum-logits" or "seed"
    /// (`EvalTarget::header_name`). (Absent: the predicted answer, as in files of older
    /// versions.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Whether the file's first run drew the chance rows (a VQA model's, without
    /// --no-chance): a later run adds them to the samples it evaluates only then, or where
    /// the file holds chance rows all the same (added with --chance). Not compared on
    /// resuming. (Absent in files of older versions, and for CLIP.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chance: Option<bool>,
    /// The directory the run started in: relative paths above are relative to it, so a
    /// rerun from elsewhere, or naming the same files another way, resumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
}

/// A `perturbation` line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PerturbationRecord {
    pub sample: String,
    pub method: String,
    pub modality: Modality,
    pub order: Order,
    /// Units kept at each step (words for text, regions or patches for the image).
    pub kept: Vec<usize>,
    /// The predicted answer at each step.
    pub answers: Vec<String>,
    /// Its VQA accuracy (0–1) at each step.
    pub accuracy: Vec<f64>,
}

impl PerturbationRecord {
    pub fn test(&self) -> Test {
        Test {
            modality: self.modality,
            order: self.order,
        }
    }

    pub fn key(&self) -> RecordKey {
        (self.sample.clone(), self.method.clone(), self.test())
    }
}

/// A `ground-truth` line: one sample × method against the objects and words its question is
/// about (`None` where a score does not exist: no relevant object in view, no relevant
/// word).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroundTruthRecord {
    pub sample: String,
    pub method: String,
    /// 1 when the most relevant patch or region lies on a relevant object, else 0; the share
    /// of hits among units tied for the top (`metrics::pointing_game`). Results files of
    /// earlier versions hold true/false.
    #[serde(deserialize_with = "hit_or_share")]
    pub pointing: Option<f64>,
    /// Share of the positive image relevance on relevant objects (0–1).
    pub mass: Option<f32>,
    /// 1-based rank of the best relevant word among the question's words, expected over
    /// ties (`metrics::relevant_word_rank`).
    pub word_rank: Option<f64>,
    /// Words of the question.
    pub words: usize,
    /// The same scores for relevance in random order: the share of units on a relevant object,
    /// their mean overlap, (words + 1) / (relevant words + 1).
    pub chance_pointing: Option<f64>,
    pub chance_mass: Option<f64>,
    pub chance_word_rank: Option<f64>,
    /// CLIP: whether the model scores the sample's true caption above every other caption
    /// of its image, 1 or 0 (1/k for a tie of k at the top), the same for each method of a
    /// sample. Absent for VQA models, where it could not be computed, and in files of older
    /// versions. (Files of an earlier version of this field hold true/false.)
    #[serde(
        default,
        deserialize_with = "hit_or_share",
        skip_serializing_if = "Option::is_none"
    )]
    pub retrieved: Option<f64>,
}

/// A pointing score as written now (a number) or by earlier versions (true/false).
fn hit_or_share<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Pointing {
        Hit(bool),
        Share(f64),
    }
    Ok(Option::<Pointing>::deserialize(d)?.map(|p| match p {
        Pointing::Hit(hit) => f64::from(u8::from(hit)),
        Pointing::Share(share) => share,
    }))
}

impl GroundTruthRecord {
    pub fn key(&self) -> (String, String) {
        (self.sample.clone(), self.method.clone())
    }
}

/// A `failure` line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailureRecord {
    pub sample: String,
    pub error: String,
}

/// A `started` or `finished` line: the samples a `fiedler eval` set out to evaluate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunMark {
    pub samples: usize,
}

/// The last `fiedler eval` a results file records (files of older versions record none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastRun {
    /// Samples it set out to evaluate.
    pub samples: usize,
    pub finished: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Line {
    // Boxed: a header is several times the size of the lines that follow it.
    Run(Box<RunHeader>),
    Perturbation(PerturbationRecord),
    Failure(FailureRecord),
    GroundTruth(GroundTruthRecord),
    Started(RunMark),
    Finished(RunMark),
}

/// (sample, method, test): what one perturbation line covers.
pub type RecordKey = (String, String, Test);

/// Everything a results file holds.
#[derive(Debug, Clone, Default)]
pub struct Results {
    pub header: Option<RunHeader>,
    /// In file order, without repeats of a key (the first is kept).
    pub perturbations: Vec<PerturbationRecord>,
    /// Every failure line, in file order.
    pub failures: Vec<FailureRecord>,
    /// Per sample whose last line is a failure (no record of it came after), that failure's
    /// index in `failures`.
    pub open_failures: HashMap<String, usize>,
    /// In file order, without repeats of a (sample, method).
    pub ground_truth: Vec<GroundTruthRecord>,
    /// The last run's `started` line, and whether its `finished` line followed.
    pub last_run: Option<LastRun>,
    /// Lines of kinds this version does not read.
    pub other_lines: usize,
    /// Bytes of whole lines; a torn last line starts here.
    pub valid_len: u64,
    pub torn_line: bool,
}

/// The records a results file already has.
#[derive(Debug, Clone, Default)]
pub struct Done {
    pub perturbations: HashSet<RecordKey>,
    pub ground_truth: HashSet<(String, String)>,
}

impl Results {
    pub fn done(&self) -> Done {
        Done {
            perturbations: self.perturbations.iter().map(|r| r.key()).collect(),
            ground_truth: self.ground_truth.iter().map(|r| r.key()).collect(),
        }
    }

    /// Samples whose last word is a failure (none of their records were written since),
    /// each with that failure, in file order. A sample with records of other methods or
    /// tests is among them when a later failure left it short of one.
    pub fn failed_samples(&self) -> Vec<&FailureRecord> {
        let mut open: Vec<usize> = self.open_failures.values().copied().collect();
        open.sort_unstable();
        open.into_iter().map(|i| &self.failures[i]).collect()
    }
}

fn io(path: &Path, e: std::io::Error) -> EvalError {
    EvalError::Results {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// Reads a results file; a missing or empty file reads as empty. Anything else must start
/// with a run header: a file that does not is refused whole, never read as a results file
/// with a torn line, so that a mistyped --results (a dataset file, say) is not cut.
pub fn read_results(path: &Path) -> Result<Results, EvalError> {
    check_regular(path)?;
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Results::default()),
        Err(e) => return Err(io(path, e)),
    };
    if bytes.is_empty() {
        return Ok(Results::default());
    }
    let mut results = Results::default();
    let header_end = bytes.iter().position(|&b| b == b'\n');
    // A byte order mark, which an editor may have added, is passed over (lines are appended
    // after the last, so it stays).
    let header_start = if bytes.starts_with(b"\xef\xbb\xbf") {
        3
    } else {
        0
    };
    results.header = Some(read_header(
        path,
        &bytes[header_start..header_end.unwrap_or(bytes.len())],
    )?);
    let Some(header_end) = header_end else {
        // The header itself is torn: the writer cuts it and writes it again, the same (the
        // settings are checked against it first).
        results.torn_line = true;
        return Ok(results);
    };
    let mut done = HashSet::new();
    let mut done_truth = HashSet::new();
    let mut start = header_end + 1;
    results.valid_len = start as u64;
    let mut line_no = 1;
    while start < bytes.len() {
        line_no += 1;
        let Some(end) = bytes[start..].iter().position(|&b| b == b'\n') else {
            results.torn_line = true;
            break;
        };
        let line = &bytes[start..start + end];
        let next = start + end + 1;
        let is_last = next >= bytes.len();
        match parse_line(line) {
            Ok(None) => {}
            Ok(Some(Line::Run(_))) => {
                return Err(EvalError::Results {
                    path: path.to_path_buf(),
                    reason: format!("line {line_no}: a second run header"),
                })
            }
            Ok(Some(Line::Perturbation(r))) => {
                let steps = results.header.as_ref().map_or(0, |h| h.steps.len());
                let lengths = [r.kept.len(), r.answers.len(), r.accuracy.len()];
                if lengths.iter().any(|&n| n != steps) {
                    return Err(EvalError::Results {
                        path: path.to_path_buf(),
                        reason: format!(
                            "line {line_no}: a record of sample {} with {lengths:?} kept counts, \
                             answers and accuracies; the run has {steps} steps",
                            r.sample
                        ),
                    });
                }
                if let Some(a) = r.accuracy.iter().find(|a| !(0.0..=1.0).contains(*a)) {
                    return Err(EvalError::Results {
                        path: path.to_path_buf(),
                        reason: format!(
                            "line {line_no}: a record of sample {} with accuracy {a}; VQA \
                             accuracies are within [0, 1]",
                            r.sample
                        ),
                    });
                }
                results.open_failures.remove(&r.sample);
                if done.insert(r.key()) {
                    results.perturbations.push(r);
                }
            }
            Ok(Some(Line::Failure(f))) => {
                results
                    .open_failures
                    .insert(f.sample.clone(), results.failures.len());
                results.failures.push(f);
            }
            Ok(Some(Line::GroundTruth(r))) => {
                results.open_failures.remove(&r.sample);
                if done_truth.insert(r.key()) {
                    results.ground_truth.push(r);
                }
            }
            Ok(Some(Line::Started(m))) => {
                results.last_run = Some(LastRun {
                    samples: m.samples,
                    finished: false,
                })
            }
            Ok(Some(Line::Finished(_))) => {
                if let Some(run) = &mut results.last_run {
                    run.finished = true;
                }
            }
            Err(Unknown) => results.other_lines += 1,
            // A whole last line that does not parse is treated like a torn one.
            Err(Broken(_)) if is_last => {
                results.torn_line = true;
                break;
            }
            Err(Broken(reason)) => {
                return Err(EvalError::Results {
                    path: path.to_path_buf(),
                    reason: format!(
                        "line {line_no}: {reason}; mend or remove the line (or start a new \
                         results file) to go on"
                    ),
                })
            }
        }
        start = next;
        results.valid_len = start as u64;
    }
    Ok(results)
}

/// The run header on a results file's first line.
fn read_header(path: &Path, line: &[u8]) -> Result<RunHeader, EvalError> {
    let reason = match parse_line(line) {
        Ok(Some(Line::Run(header))) => {
            return match check_steps(&header.steps) {
                Ok(()) => Ok(*header),
                Err(reason) => Err(EvalError::Results {
                    path: path.to_path_buf(),
                    reason: format!("its run header's steps: {reason}"),
                }),
            }
        }
        Ok(None) => "it is blank".to_owned(),
        Ok(Some(_)) | Err(Unknown) => "it is another kind of line".to_owned(),
        Err(Broken(reason)) => reason,
    };
    Err(EvalError::NotResults {
        path: path.to_path_buf(),
        reason,
    })
}

enum ParseError {
    Unknown,
    Broken(String),
}
use ParseError::{Broken, Unknown};

fn parse_line(line: &[u8]) -> Result<Option<Line>, ParseError> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let value: Value = serde_json::from_slice(line).map_err(|e| Broken(line_error(&e)))?;
    match value.get("kind").and_then(Value::as_str) {
        Some("run" | "perturbation" | "failure" | "ground-truth" | "started" | "finished") => {
            serde_json::from_value(value)
                .map(Some)
                .map_err(|e| Broken(e.to_string()))
        }
        Some(_) => Err(Unknown),
        None => Err(Broken("no \"kind\"".into())),
    }
}

/// Appends lines to a results file, each made durable before the next.
pub struct ResultsWriter {
    file: File,
    path: PathBuf,
}

impl ResultsWriter {
    /// Opens `path` for `header`'s run: reads what is there, checks that it was written by
    /// the same settings, cuts off a torn last line and writes the header to a new file.
    ///
    /// The file stays locked while the writer lives: a second run on it is refused, since
    /// both would cut and append to it at once.
    pub fn open(path: &Path, header: &RunHeader) -> Result<(Self, Results), EvalError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            // A file where a folder must be would read as "File exists".
            if let Some(file) = parent.ancestors().find(|a| a.is_file()) {
                return Err(EvalError::Results {
                    path: path.to_path_buf(),
                    reason: format!("{} is a file, not a folder", file.display()),
                });
            }
            std::fs::create_dir_all(parent).map_err(|e| io(path, e))?;
        }
        // Checked before opening: opening a pipe for writing would wait for a reader.
        check_regular(path)?;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| io(path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(EvalError::Results {
                    path: path.to_path_buf(),
                    reason: "another fiedler eval is writing it; wait for that run to end, or give this one another --results".into(),
                })
            }
            // A file system without locks (some network mounts): run unguarded, as before.
            Err(std::fs::TryLockError::Error(e)) if e.kind() == std::io::ErrorKind::Unsupported => {}
            Err(std::fs::TryLockError::Error(e)) => return Err(io(path, e)),
        }
        // Read under the lock: what is there now is what this run resumes and appends to.
        let mut results = read_results(path)?;
        if let Some(theirs) = &results.header {
            if let Err(e) = check_header(path, theirs, header) {
                // Without a record there is nothing to mix: a run whose every sample failed
                // (on a wrong --file-pattern, say) is started again with the new settings.
                if !results.perturbations.is_empty() || !results.ground_truth.is_empty() {
                    return Err(e);
                }
                warn(&format!(
                    "{} holds no results, only failures of a run with other settings: it is \
                     started afresh with these",
                    path.display()
                ));
                results = Results::default();
            }
        }
        // Drop a torn tail so that the next line starts on a fresh line.
        file.set_len(results.valid_len).map_err(|e| io(path, e))?;
        let mut writer = Self {
            file,
            path: path.to_path_buf(),
        };
        use std::io::Seek;
        writer
            .file
            .seek(std::io::SeekFrom::End(0))
            .map_err(|e| io(path, e))?;
        // Nothing whole is left: a new file, or one whose header was torn.
        if results.valid_len == 0 {
            writer.append(&Line::Run(Box::new(header.clone())))?;
        }
        Ok((writer, results))
    }

    pub fn append(&mut self, line: &Line) -> Result<(), EvalError> {
        let mut text = serde_json::to_string(line).map_err(|e| EvalError::Results {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        text.push('\n');
        self.file
            .write_all(text.as_bytes())
            .and_then(|()| self.file.sync_data())
            .map_err(|e| io(&self.path, e))
    }
}

/// Whether two path fields of run headers name the same files: the same text, or the same
/// files once each is resolved from the directory its run started in (the current one for
/// headers that did not record it). A dataset of two files joins them with " + ".
fn same_files(a: &str, a_cwd: Option<&str>, b: &str, b_cwd: Option<&str>) -> bool {
    if a == b {
        return true;
    }
    let resolve = |p: &str, cwd: Option<&str>| {
        let p = Path::new(p);
        match cwd {
            Some(dir) if p.is_relative() => Path::new(dir).join(p).canonicalize(),
            _ => p.canonicalize(),
        }
        .ok()
    };
    let (xs, ys): (Vec<&str>, Vec<&str>) = (a.split(" + ").collect(), b.split(" + ").collect());
    xs.len() == ys.len()
        && xs.iter().zip(&ys).all(
            |(x, y)| matches!((resolve(x, a_cwd), resolve(y, b_cwd)), (Some(p), Some(q)) if p == q),
        )
}

fn check_header(path: &Path, theirs: &RunHeader, ours: &RunHeader) -> Result<(), EvalError> {
    // `field` is empty where the values name themselves.
    let differs = |field: &str, a: String, b: String| {
        let field = if field.is_empty() {
            String::new()
        } else {
            format!("{field} ")
        };
        EvalError::Results {
        path: path.to_path_buf(),
        reason: format!(
            "was written with {field}{a}, this run has {b}; use the same settings to resume, or another --results file"
        ),
    }
    };
    if theirs.format != ours.format {
        return Err(differs(
            "format",
            theirs.format.to_string(),
            ours.format.to_string(),
        ));
    }
    let same = |a: &str, b: &str| same_files(a, theirs.cwd.as_deref(), b, ours.cwd.as_deref());
    if theirs.family != ours.family || !same(&theirs.model, &ours.model) {
        return Err(differs(
            "model",
            format!("{} ({})", theirs.model, theirs.family),
            format!("{} ({})", ours.model, ours.family),
        ));
    }
    if !same(&theirs.dataset, &ours.dataset) {
        return Err(differs(
            "dataset",
            theirs.dataset.clone(),
            ours.dataset.clone(),
        ));
    }
    if !same(&theirs.inputs, &ours.inputs) {
        return Err(differs(
            "inputs",
            theirs.inputs.clone(),
            ours.inputs.clone(),
        ));
    }
    if theirs.steps != ours.steps {
        return Err(differs(
            "steps",
            format!("{:?}", theirs.steps),
            format!("{:?}", ours.steps),
        ));
    }
    // An optional file (ground truth, answers): the same file, or none in both.
    let same_optional = |field: &str, a: &Option<String>, b: &Option<String>| {
        let path = |g: &Option<String>| g.clone().unwrap_or_default();
        let shown = |g: &Option<String>| g.clone().unwrap_or_else(|| "none".into());
        if same(&path(a), &path(b)) {
            Ok(())
        } else {
            Err(differs(field, shown(a), shown(b)))
        }
    };
    same_optional("ground truth", &theirs.ground_truth, &ours.ground_truth)?;
    if theirs.target != ours.target {
        let shown =
            |t: &Option<String>| format!("--target {}", t.as_deref().unwrap_or("predicted"));
        return Err(differs("", shown(&theirs.target), shown(&ours.target)));
    }
    if theirs.seed != ours.seed {
        return Err(differs(
            "seed",
            theirs.seed.to_string(),
            ours.seed.to_string(),
        ));
    }
    // A file from before these were recorded says nothing about them.
    if let (Some(a), Some(b)) = (&theirs.solver, &ours.solver) {
        if a != b {
            return Err(differs("solver", a.clone(), b.clone()));
        }
    }
    if let (Some(a), Some(b)) = (&theirs.precision, &ours.precision) {
        if a != b {
            return Err(differs("precision", a.clone(), b.clone()));
        }
    }
    if let (Some(a), Some(b)) = (&theirs.file_patterns, &ours.file_patterns) {
        if a != b {
            let shown = |p: &[String]| match p {
                [] => "the default --file-pattern".to_owned(),
                p => format!("--file-pattern {}", p.join(", ")),
            };
            return Err(differs("", shown(a), shown(b)));
        }
    }
    // A file from before weights were fingerprinted says nothing about them.
    if let (Some(a), Some(b)) = (&theirs.weights, &ours.weights) {
        if a != b {
            return Err(differs(
                "model weights",
                a.clone(),
                format!("{b} (the files in {} changed since)", ours.model),
            ));
        }
    }
    if let (Some(a), Some(b)) = (&theirs.model_files, &ours.model_files) {
        if a != b {
            return Err(differs(
                "model files",
                a.clone(),
                format!(
                    "{b} (the config, tokenizer or preprocessing files in {}, or the --answers \
                     file, changed since)",
                    ours.model
                ),
            ));
        }
    }
    // A file from before the data were fingerprinted says nothing about them.
    if let (Some(a), Some(b)) = (&theirs.data, &ours.data) {
        if a != b {
            return Err(differs(
                "dataset contents",
                a.clone(),
                format!("{b} (the files of {} changed since)", ours.dataset),
            ));
        }
    }
    same_optional("answers", &theirs.answers, &ours.answers)
}

/// That `path`, if it is there, is a regular file (through links): a device would be read
/// without end, a pipe would wait.
fn check_regular(path: &Path) -> Result<(), EvalError> {
    match std::fs::metadata(path) {
        Ok(meta) if !meta.is_file() => Err(EvalError::Results {
            path: path.to_path_buf(),
            reason: "not a regular file (a folder, device or pipe); give a file path".into(),
        }),
        _ => Ok(()),
    }
}

/// Whether a `fiedler eval` is writing `path` now (it holds the writer's lock).
pub fn being_written(path: &Path) -> bool {
    File::open(path).is_ok_and(|file| {
        matches!(
            file.try_lock_shared(),
            Err(std::fs::TryLockError::WouldBlock)
        )
    })
}

/// The fingerprint of a run's dataset and ground-truth files, in order: their bytes, as
/// `fnv1a_words` hashes them.
pub fn data_fingerprint(files: &[&Path]) -> Result<String, EvalError> {
    let contents = files
        .iter()
        .map(|f| std::fs::read(f).map_err(|e| io(f, e)))
        .collect::<Result<Vec<_>, _>>()?;
    let parts: Vec<&[u8]> = contents.iter().map(Vec::as_slice).collect();
    Ok(format!("fnv1a64w:{:016x}", fnv1a_words(&parts)))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A ViLT run's header with placeholder paths (the report's tests use it too).
    pub(crate) fn header(seed: u64) -> RunHeader {
        RunHeader {
            format: FORMAT,
            family: "vilt".into(),
            model: "m".into(),
            dataset: "d.json".into(),
            inputs: "images".into(),
            steps: vec![0.0, 1.0],
            seed,
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
        }
    }

    /// A perturbation record.
    fn a_record() -> Line {
        Line::Perturbation(PerturbationRecord {
            sample: "7".into(),
            method: "dsmi".into(),
            modality: Modality::Image,
            order: Order::MostRelevantFirst,
            kept: vec![4, 0],
            answers: vec!["yes".into(), "no".into()],
            accuracy: vec![1.0, 0.0],
        })
    }

    fn header_line(seed: u64) -> String {
        serde_json::to_string(&Line::Run(Box::new(header(seed)))).unwrap()
    }

    /// A scratch folder of one test (tests run in parallel).
    fn scratch(test: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("fiedler-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A file holding `bytes` in `dir`.
    fn file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// Ground-truth lines read as written now and by earlier versions: pointing and caption
    /// retrieval as numbers, or true/false, and without the retrieval at all.
    #[test]
    fn ground_truth_lines_of_every_version_parse() {
        let line = |pointing: &str, retrieved: &str| {
            format!(
                r#"{{"kind":"ground-truth","sample":"7","method":"dsmi","pointing":{pointing},"mass":0.5,"word_rank":null,"words":4,"chance_pointing":0.25,"chance_mass":0.1,"chance_word_rank":null{retrieved}}}"#
            )
        };
        for (pointing, retrieved, expected) in [
            ("true", r#","retrieved":true"#, (Some(1.0), Some(1.0))),
            ("false", r#","retrieved":false"#, (Some(0.0), Some(0.0))),
            ("0.5", r#","retrieved":0.5"#, (Some(0.5), Some(0.5))),
            ("null", "", (None, None)),
        ] {
            let text = line(pointing, retrieved);
            let Ok(Some(Line::GroundTruth(r))) = parse_line(text.as_bytes()) else {
                panic!("{text} does not parse");
            };
            assert_eq!((r.pointing, r.retrieved), expected, "{text}");
        }
    }

    /// A results path below a file (a folder misnamed) says which is the file, not the
    /// system's "File exists".
    #[test]
    fn a_results_path_below_a_file_names_the_file() {
        let dir = scratch("below-a-file");
        let blocking = file(&dir, "o1", b"x");
        let Err(e) = ResultsWriter::open(&blocking.join("a/r.jsonl"), &header(1)) else {
            panic!("a path below a file opened");
        };
        let text = e.to_string();
        assert!(
            text.ends_with(&format!("{} is a file, not a folder", blocking.display())),
            "{text}"
        );
    }

    /// Opening a file that does not start with a run header fails and leaves it as it was:
    /// a one-line JSON (as VQA's question files are), several lines, a header after a blank
    /// line, another kind of line first.
    #[test]
    fn a_file_without_a_run_header_is_refused_untouched() {
        let dir = scratch("not-results");
        let cases: [(&str, String); 5] = [
            ("vqa.json", r#"{"questions": [{"question_id": 1}]}"#.into()),
            ("vqa-nl.json", "{\"questions\": []}\n".into()),
            ("lines.txt", format!("not json\n{}\nmore\n", header_line(1))),
            ("blank.jsonl", format!("\n{}\n", header_line(1))),
            (
                "failure.jsonl",
                "{\"kind\":\"failure\",\"sample\":\"1\",\"error\":\"x\"}\n".into(),
            ),
        ];
        for (name, text) in cases {
            let path = file(&dir, name, text.as_bytes());
            let Err(e) = ResultsWriter::open(&path, &header(1)) else {
                panic!("{name} was opened as a results file");
            };
            assert!(
                e.to_string()
                    .contains("is not a fiedler results file: its first line is not a run header"),
                "{name}: {e}"
            );
            assert_eq!(std::fs::read_to_string(&path).unwrap(), text, "{name}");
            assert!(read_results(&path).is_err(), "{name}");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// A torn last line is cut after a header; a torn header alone is written again, once
    /// it is known to be of the same settings.
    #[test]
    fn torn_lines_are_cut_only_after_a_run_header() {
        let dir = scratch("torn-lines");
        let whole = format!("{}\n", header_line(1));
        let path = file(
            &dir,
            "torn.jsonl",
            format!("{whole}{{\"kind\":\"pertur").as_bytes(),
        );
        let (_, read) = ResultsWriter::open(&path, &header(1)).unwrap();
        assert!(read.torn_line);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), whole);

        let torn_header = &whole[..whole.len() - 1];
        let path = file(&dir, "torn-header.jsonl", torn_header.as_bytes());
        let (_, read) = ResultsWriter::open(&path, &header(1)).unwrap();
        assert!(read.torn_line);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), whole);
        // Nothing was recorded under it: a run of other settings starts the file afresh.
        let path = file(&dir, "torn-header-2.jsonl", torn_header.as_bytes());
        ResultsWriter::open(&path, &header(2)).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{}\n", header_line(2))
        );

        let path = file(&dir, "empty.jsonl", b"");
        ResultsWriter::open(&path, &header(1)).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), whole);
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// While a run writes a results file, a second run on it is refused and leaves it as it
    /// is; once the first ends, the file opens again.
    #[test]
    fn a_results_file_in_use_is_refused_to_a_second_run() {
        let dir = scratch("in-use");
        let path = dir.join("results.jsonl");
        let (mut first, _) = ResultsWriter::open(&path, &header(1)).unwrap();
        let failure = Line::Failure(FailureRecord {
            sample: "7".into(),
            error: "x".into(),
        });
        first.append(&failure).unwrap();
        let before = std::fs::read(&path).unwrap();
        let Err(e) = ResultsWriter::open(&path, &header(1)) else {
            panic!("a second writer opened the file in use");
        };
        assert!(
            e.to_string().contains("another fiedler eval is writing it"),
            "{e}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), before);
        assert!(being_written(&path));
        drop(first);
        assert!(!being_written(&path));
        let (_, read) = ResultsWriter::open(&path, &header(1)).unwrap();
        assert_eq!(read.failures.len(), 1);
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// The last run is the last `started` line, finished when a `finished` line follows it;
    /// files without them (older versions) record none.
    #[test]
    fn the_last_run_is_read_from_its_start_and_end_marks() {
        let dir = scratch("marks");
        let path = dir.join("results.jsonl");
        let (mut writer, read) = ResultsWriter::open(&path, &header(1)).unwrap();
        assert_eq!(read.last_run, None);
        let last_run = || read_results(&path).unwrap().last_run;
        let mark = |samples| RunMark { samples };
        let run = |samples, finished| Some(LastRun { samples, finished });
        writer.append(&Line::Started(mark(5))).unwrap();
        assert_eq!(last_run(), run(5, false));
        writer.append(&Line::Finished(mark(5))).unwrap();
        assert_eq!(last_run(), run(5, true));
        writer.append(&Line::Started(mark(9))).unwrap();
        assert_eq!(last_run(), run(9, false));
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// Results of TF32 products, or of images found by other file patterns, are not resumed
    /// into (nor by) others; a file of an older version, which recorded neither, is.
    #[test]
    fn precision_and_file_patterns_must_match_to_resume() {
        let dir = scratch("precision");
        let path = dir.join("results.jsonl");
        let with = |precision: &str, patterns: &[&str]| RunHeader {
            precision: Some(precision.into()),
            file_patterns: Some(patterns.iter().map(|p| (*p).to_owned()).collect()),
            ..header(1)
        };
        let (mut writer, _) = ResultsWriter::open(&path, &with("f32", &[])).unwrap();
        writer.append(&a_record()).unwrap();
        drop(writer);
        let refused = |h: RunHeader| match ResultsWriter::open(&path, &h) {
            Ok(_) => panic!("resumed with {h:?}"),
            Err(e) => e.to_string(),
        };
        let e = refused(with("tf32", &[]));
        assert!(
            e.contains("was written with precision f32, this run has tf32"),
            "{e}"
        );
        let e = refused(with("f32", &["{id}.png"]));
        assert!(
            e.contains(
                "was written with the default --file-pattern, this run has --file-pattern {id}.png"
            ),
            "{e}"
        );
        drop(ResultsWriter::open(&path, &with("f32", &[])).unwrap());
        drop(ResultsWriter::open(&path, &header(1)).unwrap());
        // A file with no record but failures is started again under the new settings.
        std::fs::remove_file(&path).unwrap();
        let (mut writer, _) = ResultsWriter::open(&path, &with("f32", &[])).unwrap();
        let failure = Line::Failure(FailureRecord {
            sample: "7".into(),
            error: "no input file".into(),
        });
        writer.append(&failure).unwrap();
        drop(writer);
        let (_, read) = ResultsWriter::open(&path, &with("f32", &["{id}.png"])).unwrap();
        assert!(read.failures.is_empty());
        let read = read_results(&path).unwrap();
        assert_eq!(read.header, Some(with("f32", &["{id}.png"])));
        assert!(read.failures.is_empty());
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// A sample's failure counts until a record of it comes after: one that failed for a
    /// method added later, after records of others, is still a failed sample.
    #[test]
    fn a_failure_stands_until_a_record_of_its_sample_follows() {
        let dir = scratch("open-failures");
        let failure = |sample: &str| {
            serde_json::to_string(&Line::Failure(FailureRecord {
                sample: sample.into(),
                error: "relevance is NaN".into(),
            }))
            .unwrap()
        };
        let record = serde_json::to_string(&a_record()).unwrap();
        let chefer = record.replace("dsmi", "chefer");
        let failed = |lines: &[&str]| -> Vec<String> {
            let text = format!("{}\n{}\n", header_line(1), lines.join("\n"));
            let path = file(&dir, "r.jsonl", text.as_bytes());
            let read = read_results(&path).unwrap();
            read.failed_samples()
                .iter()
                .map(|f| f.sample.clone())
                .collect()
        };
        assert_eq!(failed(&[&record, &failure("7")]), ["7"]);
        assert_eq!(failed(&[&failure("7"), &record]), Vec::<String>::new());
        assert_eq!(
            failed(&[&failure("8"), &record, &failure("7"), &chefer]),
            ["8"]
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// A byte order mark before the header is passed over; a damaged line inside the file is
    /// named by its line and its column in it (serde's "line 1" was the line's own), with what
    /// to do.
    #[test]
    fn a_byte_order_mark_is_read_and_a_damaged_line_is_placed() {
        let dir = scratch("bom");
        let record = serde_json::to_string(&a_record()).unwrap();
        let text = format!("\u{feff}{}\n{record}\n", header_line(1));
        let read = read_results(&file(&dir, "bom.jsonl", text.as_bytes())).unwrap();
        assert_eq!(read.perturbations.len(), 1);
        assert_eq!(read.valid_len, text.len() as u64);
        let cut = &record[..30];
        let text = format!("{}\n{record}\n{cut}\n{record}\n", header_line(1));
        let e = read_results(&file(&dir, "cut.jsonl", text.as_bytes()))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("line 3: EOF while parsing a string, at column 30; mend or remove the line"),
            "{e}"
        );
        assert!(!e.contains("line 1"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// A header whose steps no run could have, or a record with another number of steps
    /// than its run, is refused by line (`eval summary` indexed an empty step list).
    #[test]
    fn steps_that_do_not_fit_the_run_are_refused() {
        let dir = scratch("steps");
        let mut empty = header(1);
        empty.steps.clear();
        let line = serde_json::to_string(&Line::Run(Box::new(empty))).unwrap();
        let path = file(&dir, "empty.jsonl", format!("{line}\n").as_bytes());
        let e = read_results(&path).unwrap_err().to_string();
        assert!(
            e.contains("its run header's steps: need at least two"),
            "{e}"
        );

        let record = serde_json::to_string(&a_record()).unwrap();
        let short = record.replace("[1.0,0.0]", "[1.0]");
        let text = format!("{}\n{record}\n{short}\n{record}\n", header_line(1));
        let path = file(&dir, "short.jsonl", text.as_bytes());
        let e = read_results(&path).unwrap_err().to_string();
        assert!(
            e.contains("line 3: a record of sample 7 with [2, 2, 1] kept counts"),
            "{e}"
        );
        // Accuracies past [0, 1] (1e20 drew a line of 1e20 stamps in the report's plot).
        for wrong in ["[1.0,1e20]", "[-0.5,0.0]"] {
            let text = format!(
                "{}\n{}\n",
                header_line(1),
                record.replace("[1.0,0.0]", wrong)
            );
            let path = file(&dir, "wrong.jsonl", text.as_bytes());
            let e = read_results(&path).unwrap_err().to_string();
            assert!(
                e.contains("line 2: a record of sample 7 with accuracy"),
                "{e}"
            );
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// A device, a pipe or a folder named as the results file is refused before it is read
    /// or opened (reading /dev/zero would never end; opening a pipe would wait).
    #[cfg(unix)]
    #[test]
    fn results_that_are_no_regular_file_are_refused() {
        let dir = scratch("not-regular");
        let link = dir.join("zero.jsonl");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        // A socket stands for the special files (a pipe alike): made in-process, since a
        // child process (`mkfifo`) would hold, until it execs, a copy of any results file
        // another test has open, and with it that file's lock.
        let socket = dir.join("socket.jsonl");
        let _ = std::fs::remove_file(&socket);
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        for path in [link, socket, dir.clone()] {
            for err in [
                read_results(&path).unwrap_err(),
                ResultsWriter::open(&path, &header(1))
                    .map(|_| ())
                    .unwrap_err(),
            ] {
                assert!(
                    err.to_string().contains("not a regular file"),
                    "{}: {err}",
                    path.display()
                );
            }
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn header_paths_match_by_the_files_they_name() {
        let dir = std::env::temp_dir().join(format!("fiedler-same-files-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("set")).unwrap();
        for f in ["set/q.json", "set/a.json"] {
            std::fs::write(dir.join(f), "{}").unwrap();
        }
        let d = dir.to_str().unwrap();
        let abs = |f: &str| format!("{d}/{f}");
        // relative to the first run's directory, absolute, or spelled another way
        assert!(same_files("set/q.json", Some(d), &abs("set/q.json"), None));
        assert!(same_files(
            "set/q.json + set/a.json",
            Some(d),
            &format!("{} + {}", abs("set/./q.json"), abs("set/a.json")),
            Some("/"),
        ));
        assert!(!same_files("set/q.json", Some(d), &abs("set/a.json"), None));
        assert!(!same_files(
            "set/q.json",
            Some(d),
            "set/q.json + set/a.json",
            Some(d)
        ));
        // files that do not exist compare by their text alone
        assert!(same_files("gone.json", None, "gone.json", Some(d)));
        assert!(!same_files("gone.json", Some(d), &abs("gone.json"), None));
        assert!(!same_files("", None, "set/q.json", Some(d)));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
