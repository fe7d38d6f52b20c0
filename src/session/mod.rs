//! The library entry points: load a model directory once, then explain batches of
//! (image, text) requests with a list of methods. One session type per family.
//!
//! # Batches
//! `explain` runs its requests in batches of the size it is given (0 counts as 1; LXMERT's
//! samples of one batch need one region count). On the CPU the size changes the speed only:
//! a sample's explanations are the same bits in any batch, beside any other samples (for
//! ViLT, while its sequences stay within 512 tokens, as the standard configurations do).
//! Before the first batch, `explain` checks the settings, the target, every text, and every
//! file named (that it can be read and, for images, that it is of a format fiedler reads, not
//! a JPEG cut short, and of a size the model's preprocessing takes, from its header). An error
//! found later (image data that does not decode past a sound header, say) ends the call with that
//! error, and the results of the batches already done are dropped: for long lists, call
//! `explain` on slices (the progress callback can also stop the work and keep what is done),
//! or use `fiedler eval`, which records each failing sample and goes on.

pub mod clip;
pub mod lxmert;
pub mod vilt;

use std::collections::HashSet;
use std::ops::Range;
use std::path::{Path, PathBuf};

use image::RgbImage;
use serde::Serialize;
use thiserror::Error;

use crate::backend::BackendError;
use crate::explain::ExplainError;
use crate::explain::Explanation;
use crate::input::image::{check_image_file, load_image, resize, Resample};
use crate::input::text::TextTokenizer;
use crate::input::InputError;
use crate::model::config::AnswerProbability;
use crate::model::{ModelError, VqaTarget};

pub use clip::{ClipSession, PairResult};
pub use lxmert::{LxmertSession, RegionRequest, Regions};
pub use vilt::ViltSession;

/// What can stop a session from opening or explaining; every message names the file, text or
/// setting at fault.
#[derive(Debug, Error)]
pub enum SessionError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Input(#[from] InputError),
    #[error(transparent)]
    Explain(#[from] ExplainError),
    #[error("text {index} (a caption or question) is empty: nothing to explain")]
    EmptyText { index: usize },
    #[error("question {text:?} (input {index}, counted from 0) has no word tokens for the model")]
    NoWords { index: usize, text: String },
    #[error("{} does not fit in memory ({source}){}",
        if *batch == 1 { "one sample".to_string() } else { format!("a batch of {batch} samples") },
        if *batch == 1 { "" } else { "; try a smaller batch (--batch)" })]
    OutOfMemory { batch: usize, source: BackendError },
    #[error("nothing to explain: no (image, text) pairs given")]
    NoPairs,
    #[error("{first} has {count} regions but {other} has {other_count}; a batch needs one region count (explain them in batches of 1: --batch 1)")]
    RegionCounts {
        first: String,
        count: usize,
        other: String,
        other_count: usize,
    },
    #[error("answer list {path}: {reason}")]
    Answers { path: PathBuf, reason: String },
    #[error("--target {0:?}: expected predicted, sum-logits, answer:TEXT or index:N{hint}", hint = seed_hint(.0))]
    BadTarget(String),
    #[error(
        "{targets} target answers were given for {questions} questions: give one per question"
    )]
    TargetCount { targets: usize, questions: usize },
    #[error("--target {spec:?}: the model has no such answer ({labels} answers{hint})")]
    UnknownAnswer {
        spec: String,
        labels: usize,
        hint: String,
    },
}

/// A GPU that cannot start, so that a session on it opens with `?` alone:
///
/// ```no_run
/// # use std::path::Path;
/// use fiedler::backend::cuda::Cuda;
/// use fiedler::session::{ClipSession, SessionError};
///
/// fn open_on_the_gpu(dir: &Path) -> Result<ClipSession<Cuda>, SessionError> {
///     ClipSession::open_on(Cuda::new()?, dir)
/// }
/// ```
#[cfg(feature = "cuda")]
impl From<crate::backend::cuda::CudaError> for SessionError {
    fn from(e: crate::backend::cuda::CudaError) -> Self {
        Self::Model(ModelError::Backend(e.into()))
    }
}

/// One (image, text) pair to explain: a caption for CLIP, a question for the VQA models.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairRequest {
    /// An image file: PNG, JPEG, WebP, BMP, TIFF or GIF (its first frame), recognised by its
    /// content rather than its extension.
    pub image: PathBuf,
    /// The caption or question; it must hold a word.
    pub text: String,
}

/// Rejects, before any work, an empty request list, empty texts, and image files that are
/// missing, of no format fiedler reads, cut short (JPEG) or of a size the model's
/// preprocessing refuses (`check_size`, given the name and the header's (width, height)).
pub(crate) fn check_requests(
    pairs: &[PairRequest],
    check_size: impl Fn(&str, (u32, u32)) -> Result<(), InputError>,
) -> Result<(), SessionError> {
    check_texts(pairs.iter().map(|p| p.text.as_str()))?;
    let mut seen = HashSet::new();
    for pair in pairs.iter().filter(|p| seen.insert(&p.image)) {
        let size = check_image_file(&pair.image)?;
        check_size(&pair.image.display().to_string(), size)?;
    }
    Ok(())
}

/// Rejects an empty list of texts and empty texts.
pub(crate) fn check_texts<'a>(
    texts: impl ExactSizeIterator<Item = &'a str>,
) -> Result<(), SessionError> {
    if texts.len() == 0 {
        return Err(SessionError::NoPairs);
    }
    match texts.map(str::trim).position(str::is_empty) {
        Some(index) => Err(SessionError::EmptyText { index }),
        None => Ok(()),
    }
}

/// What a VQA explanation explains, for every sample of a request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AnswerTarget {
    /// The predicted answer's logit (fiedler's default).
    #[default]
    Predicted,
    /// The logit of this answer index.
    Answer(usize),
    /// The logit of one answer index per question, in the order of the questions (each
    /// question's ground-truth answer, say, where the model predicts another).
    Each(Vec<usize>),
    /// Σ of all logits: the seed's DSMI-family target (bug B1), for comparison runs.
    SumLogits,
}

/// What the error for an answer the list lacks suggests: the answer a typo away, or a few of
/// the list's ("; did you mean \"red\"?").
pub fn answer_hint(text: &str, answers: &[String]) -> String {
    let lower = text.to_lowercase();
    match crate::names::nearest(&lower, answers.iter().map(String::as_str)) {
        Some(near) => format!("; did you mean {near:?}?"),
        None => format!(
            "; e.g. {}",
            answers
                .iter()
                .take(5)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

impl AnswerTarget {
    /// Parses `predicted`, `sum-logits`, `answer:TEXT` or `index:N` against the answer list.
    /// Keywords are read in any case, and TEXT trimmed; TEXT is an answer as written, else the
    /// one answer it is in another case.
    pub fn parse(spec: &str, answers: &[String]) -> Result<Self, SessionError> {
        let unknown = |hint: String| SessionError::UnknownAnswer {
            spec: spec.to_owned(),
            labels: answers.len(),
            hint,
        };
        // Any case, `_` for `-`, as method names are read.
        let keyword = |k: &str| k.trim().to_ascii_lowercase().replace('_', "-");
        match spec.split_once(':') {
            None if keyword(spec) == "predicted" => Ok(Self::Predicted),
            None if keyword(spec) == "sum-logits" => Ok(Self::SumLogits),
            Some((k, text)) if keyword(k) == "answer" => match find_answer(text, answers) {
                Some(i) => Ok(Self::Answer(i)),
                None if text.trim().is_empty() => Err(unknown("; the answer is empty".into())),
                None => Err(unknown(answer_hint(text.trim(), answers))),
            },
            Some((k, n)) if keyword(k) == "index" => match n.trim().parse::<usize>() {
                Ok(i) if i < answers.len() => Ok(Self::Answer(i)),
                Ok(_) => Err(unknown(format!(
                    "; indices are 0 to {}",
                    answers.len().saturating_sub(1)
                ))),
                Err(_) => Err(unknown(format!("; {n:?} is not an index"))),
            },
            _ => Err(SessionError::BadTarget(spec.to_owned())),
        }
    }

    /// Refuses, before any work, an answer index beyond the model's `labels` answers, and a
    /// count of `Each` answers other than the count of `questions`.
    pub(crate) fn check(&self, questions: usize, labels: usize) -> Result<(), SessionError> {
        if let Self::Each(answers) = self {
            if answers.len() != questions {
                return Err(SessionError::TargetCount {
                    targets: answers.len(),
                    questions,
                });
            }
        }
        Ok(self.for_chunk(0..questions).check(questions, labels)?)
    }

    /// The target of the questions `range` (a batch of them).
    pub(crate) fn for_chunk(&self, range: Range<usize>) -> VqaTarget {
        match self {
            Self::Predicted => VqaTarget::Predicted,
            Self::Answer(i) => VqaTarget::Answers(vec![*i; range.len()]),
            Self::Each(answers) => VqaTarget::Answers(answers[range].to_vec()),
            Self::SumLogits => VqaTarget::SumLogits,
        }
    }

    /// The answer index question `question` explains, where it is one answer.
    fn answer_of(&self, question: usize) -> Option<usize> {
        match self {
            Self::Answer(i) => Some(*i),
            Self::Each(answers) => answers.get(question).copied(),
            Self::Predicted | Self::SumLogits => None,
        }
    }

    /// What question `question`'s explanations explain when that is not its predicted
    /// answer, as outputs show it beside the prediction: the answer, or the sum of the logits.
    pub fn explained(&self, question: usize, answers: &[String]) -> Option<String> {
        match self {
            Self::Predicted => None,
            Self::SumLogits => Some("the sum of all logits".into()),
            _ => self.answer_of(question).map(|i| answer_name(answers, i)),
        }
    }

    /// How explanations.json names question `question`'s target.
    pub fn name(&self, question: usize, answers: &[String]) -> String {
        match (self, self.answer_of(question)) {
            (Self::Predicted, _) => "predicted-answer".into(),
            (Self::SumLogits, _) => "sum-logits".into(),
            (_, Some(i)) => format!("answer:{}", answer_name(answers, i)),
            (_, None) => format!("answer:none for question {question}"),
        }
    }
}

/// The index of answer `text` (trimmed) as written, else of the one answer it is in another
/// case.
pub fn find_answer(text: &str, answers: &[String]) -> Option<usize> {
    let text = text.trim();
    let folded: Vec<usize> = (0..answers.len())
        .filter(|&i| answers[i].to_lowercase() == text.to_lowercase())
        .collect();
    match (answers.iter().position(|a| a == text), folded.as_slice()) {
        (Some(i), _) | (None, &[i]) => Some(i),
        _ => None,
    }
}

/// Answer `i`'s name, or "index:i" for an index past the list (explaining it is an error
/// of its own; naming it is not).
fn answer_name(answers: &[String], i: usize) -> String {
    answers
        .get(i)
        .cloned()
        .unwrap_or_else(|| format!("index:{i}"))
}

/// How many answers a result lists.
const TOP_ANSWERS: usize = 5;

/// Everything fiedler computed for one (image, question) pair of a VQA model. Serialized
/// (`serde`), `top_answers` are [answer, probability] pairs.
#[derive(Debug, Clone, Serialize)]
pub struct QuestionResult {
    /// The image file (ViLT), or the regions file (LXMERT), as requested.
    pub image: PathBuf,
    pub question: String,
    /// The real tokens of the question as shown to a person ([CLS] and [SEP] included), one
    /// per entry of each explanation's `text_relevance`: the decoded text of each token, with
    /// the space before it where the question has one (" what", "##s" pieces joined: "s").
    pub tokens: Vec<String>,
    /// Whether the question was cut to the model's positions (`tokens` are the kept ones).
    pub truncated: bool,
    /// The predicted answer.
    pub answer: String,
    /// The best answers with their probabilities (as the model's config reads its logits:
    /// `AnswerProbability`), best first.
    pub top_answers: Vec<(String, f32)>,
    /// The probability of the answer explained, read as `top_answers` are: the predicted
    /// answer's, or the one a target names; none for the Σ-logits target.
    pub probability: Option<f32>,
    /// One per requested method, in request order; `score` is the target's value.
    pub explanations: Vec<Explanation>,
}

/// One sample's answers, ranked.
pub(crate) struct Ranked {
    /// The predicted answer.
    pub answer: String,
    /// The best answers with their probabilities, best first.
    pub top_answers: Vec<(String, f32)>,
    /// The probability of the answer explained (none for the Σ-logits target).
    pub probability: Option<f32>,
}

/// The answers of sample `b`'s `logits`, ranked, and the probability of the one `target`
/// explains.
pub(crate) fn rank_answers(
    logits: &[f32],
    answers: &[String],
    probability: AnswerProbability,
    target: &VqaTarget,
    b: usize,
) -> Ranked {
    // A stable sort: ties keep the lower index first, as the argmax that predicts does.
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&i, &j| logits[j].total_cmp(&logits[i]));
    let p = probability.of(logits);
    let explained = match target {
        VqaTarget::Predicted => Some(order[0]),
        VqaTarget::Answers(a) => a.get(b).copied(),
        VqaTarget::SumLogits => None,
    };
    Ranked {
        answer: answers[order[0]].clone(),
        top_answers: order
            .iter()
            .take(TOP_ANSWERS)
            .map(|&i| (answers[i].clone(), p[i]))
            .collect(),
        probability: explained.and_then(|i| p.get(i).copied()),
    }
}

/// Longer side of the whole images that overlays are drawn on.
const DISPLAY_SIZE: usize = 384;

/// An image file, whole, its longer side scaled to a size a person can see (ViLT's patch grid
/// and LXMERT's normalised boxes both cover the whole image).
pub fn whole_image(path: &Path) -> Result<RgbImage, SessionError> {
    Ok(whole_image_of(&load_image(path)?))
}

/// [`whole_image`] of an image already decoded.
pub fn whole_image_of(image: &RgbImage) -> RgbImage {
    let (w, h) = (image.width() as f64, image.height() as f64);
    let scale = DISPLAY_SIZE as f64 / w.max(h);
    let size = |x: f64| ((x * scale).round() as usize).max(1);
    resize(image, size(w), size(h), Resample::Bicubic)
}

/// Every question of a request holds a word token: checked before any batch is explained, so
/// that a bad question is named by its place among them all and costs no work.
pub(crate) fn check_all_words(
    tokenizer: &TextTokenizer,
    texts: &[&str],
) -> Result<(), SessionError> {
    for (index, text) in texts.iter().enumerate() {
        if tokenizer.word_tokens(index, text)? == 0 {
            return Err(SessionError::NoWords {
                index,
                text: (*text).to_owned(),
            });
        }
    }
    Ok(())
}

/// What a progress callback of `explain` returns: nothing, to go on, or whether to go on (a
/// `ControlFlow::Break` stops after the batch just done, and `explain` returns the results
/// of the batches done: the first ones asked, in order).
pub trait Proceed {
    fn proceed(self) -> bool;
}

impl Proceed for () {
    fn proceed(self) -> bool {
        true
    }
}

/// Whether to go on: `|done| done < 1000` stops once a thousand requests are done.
impl Proceed for bool {
    fn proceed(self) -> bool {
        self
    }
}

impl Proceed for std::ops::ControlFlow<()> {
    fn proceed(self) -> bool {
        self.is_continue()
    }
}

/// Runs `run` over `items` in chunks of `batch`, calling `progress(done)` after each chunk
/// and stopping where it says so.
pub(crate) fn in_batches<T, R, P: Proceed>(
    items: &[T],
    batch: usize,
    mut progress: impl FnMut(usize) -> P,
    mut run: impl FnMut(Range<usize>, &[T]) -> Result<Vec<R>, SessionError>,
) -> Result<Vec<R>, SessionError> {
    let mut results = Vec::with_capacity(items.len());
    for chunk in items.chunks(batch.max(1)) {
        let range = results.len()..results.len() + chunk.len();
        results.extend(run(range, chunk).map_err(|e| match e {
            SessionError::Model(ModelError::Backend(source @ BackendError::OutOfMemory { .. })) => {
                SessionError::OutOfMemory {
                    batch: chunk.len(),
                    source,
                }
            }
            e => e,
        })?);
        if !progress(results.len()).proceed() {
            break;
        }
    }
    Ok(results)
}

/// For `--target seed` given to `explain`: where that target lives, and what to do here.
fn seed_hint(spec: &str) -> &'static str {
    match spec.trim().eq_ignore_ascii_case("seed") {
        true => " (`seed` is fiedler eval's, a target per method: the sum of the logits for dsmi-grad and dsmi-grad-attn, the predicted answer for the others; here, explain those two with --target sum-logits)",
        false => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Naming a target never panics: an index past the answers is named by its index.
    #[test]
    fn targets_are_named_even_past_the_answers() {
        let answers = vec!["yes".to_owned(), "no".to_owned()];
        assert_eq!(AnswerTarget::Answer(1).name(3, &answers), "answer:no");
        assert_eq!(AnswerTarget::Answer(5).name(0, &answers), "answer:index:5");
        assert_eq!(
            AnswerTarget::Answer(5).explained(0, &answers).as_deref(),
            Some("index:5")
        );
        assert_eq!(AnswerTarget::Predicted.explained(0, &answers), None);
    }

    /// A target per question: each question is named by its own answer, a batch takes the
    /// answers of its questions, and a count other than the questions' is refused before any
    /// work, as is an index past the answers.
    #[test]
    fn each_question_has_its_own_answer() {
        let answers = vec!["yes".to_owned(), "no".to_owned(), "red".to_owned()];
        let each = AnswerTarget::Each(vec![2, 0, 1]);
        let named: Vec<String> = (0..3).map(|q| each.name(q, &answers)).collect();
        assert_eq!(named, ["answer:red", "answer:yes", "answer:no"]);
        assert_eq!(each.explained(2, &answers).as_deref(), Some("no"));
        assert_eq!(each.for_chunk(1..3), VqaTarget::Answers(vec![0, 1]));
        assert_eq!(
            AnswerTarget::Answer(1).for_chunk(4..6),
            VqaTarget::Answers(vec![1, 1])
        );
        assert!(each.check(3, 3).is_ok());
        let err = each.check(4, 3).unwrap_err().to_string();
        assert_eq!(
            err,
            "3 target answers were given for 4 questions: give one per question"
        );
        let err = each.check(3, 2).unwrap_err().to_string();
        assert!(err.contains("index 2 is out of range"), "{err}");
    }

    /// Targets read in any case and with spaces around the parts; an answer in another case is
    /// the one it names, unless two answers differ by case alone; an answer a typo away is
    /// suggested. Keywords take `_` for `-`, as method names do.
    #[test]
    fn targets_forgive_case_and_spaces() {
        let answers: Vec<String> = ["yes", "no", "green", "Blue", "blue"]
            .map(String::from)
            .to_vec();
        let parse = |spec: &str| AnswerTarget::parse(spec, &answers);
        for (spec, target) in [
            ("Predicted", AnswerTarget::Predicted),
            (" SUM-LOGITS ", AnswerTarget::SumLogits),
            ("sum_logits", AnswerTarget::SumLogits),
            ("answer:green", AnswerTarget::Answer(2)),
            ("answer:GREEN", AnswerTarget::Answer(2)),
            ("Answer: green", AnswerTarget::Answer(2)),
            ("answer:Blue", AnswerTarget::Answer(3)),
            ("answer:blue", AnswerTarget::Answer(4)),
            ("INDEX: 1", AnswerTarget::Answer(1)),
        ] {
            assert_eq!(parse(spec).unwrap(), target, "{spec}");
        }
        let err = parse("answer:BLUE").unwrap_err().to_string();
        assert!(err.contains("the model has no such answer"), "{err}");
        let err = parse("answer:gren").unwrap_err().to_string();
        assert!(err.contains("did you mean \"green\"?"), "{err}");
        let err = parse("answer: ").unwrap_err().to_string();
        assert!(err.ends_with("(5 answers; the answer is empty)"), "{err}");
        let err = parse("answer:zebra").unwrap_err().to_string();
        assert!(err.contains("e.g. yes, no, green"), "{err}");
        assert!(matches!(parse("best"), Err(SessionError::BadTarget(_))));
        let err = parse("seed").unwrap_err().to_string();
        assert!(err.contains("is fiedler eval's"), "{err}");
        assert!(!parse("best").unwrap_err().to_string().contains("eval"));
    }
}
