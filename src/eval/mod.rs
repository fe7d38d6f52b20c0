//! `fiedler eval`: the perturbation benchmark of spec §E on a VQA dataset.
//!
//! For every sample and method, the explanation ranks the image units (LXMERT regions, ViLT
//! patches) and the words; each test then deletes them step by step — most relevant first
//! (the seed's positive test) or least relevant first (negative) — and records the model's
//! VQA accuracy at each step. The area under that curve is the score.
//!
//! - [`dataset`]: question files (LXMERT JSON, official VQA v2) and input file lookup.
//! - [`answers`]: VQA accuracy, official normalisation included.
//! - [`sampling`]: the seeded subset (Python's shuffle, bit for bit).
//! - [`protocol`]: k per step, what each step keeps, the AUC.
//! - [`runner`]: batched explanation and perturbed forwards over chunks of samples.
//! - [`results`]: the append-only, resumable JSONL results file.
//! - [`ground_truth`]: pointing game, mass in mask and word rank against `fiedler synth`
//!   ground truth, from the explanation pass.
//! - [`report`]: the AUC table (markdown, JSON) and accuracy curves (PNG) from results alone.
//! - [`vilt`], [`lxmert`]: the two model families under the benchmark; [`clip`]: CLIP on
//!   `fiedler synth` caption sets, scored against ground truth only.

pub mod answers;
pub mod chance;
pub mod clip;
pub mod dataset;
pub mod ground_truth;
pub mod lxmert;
pub mod protocol;
pub mod report;
pub mod results;
pub mod runner;
pub mod sampling;
mod tokens;
pub mod vilt;

use std::path::PathBuf;

use thiserror::Error;

use crate::backend::BackendError;
use crate::explain::{ExplainError, Method};
use crate::model::ModelError;
use crate::session::SessionError;

#[derive(Debug, Error)]
pub enum EvalError {
    /// A question file, named by the flag that gave it (`--questions`).
    #[error("{flag} {path}: {reason}")]
    Dataset {
        flag: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("--questions {questions} and --annotations {annotations} do not match: {reason}")]
    Mismatch {
        questions: PathBuf,
        annotations: PathBuf,
        reason: String,
    },
    #[error("{flag} {path} has no {}", if *flag == "--captions" { "images" } else { "questions" })]
    EmptyDataset { flag: &'static str, path: PathBuf },
    #[error(
        "no input file for image {image_id} ({searched}); check the folder and --file-pattern"
    )]
    MissingInput { image_id: String, searched: String },
    #[error("--file-pattern {pattern}: {reason}")]
    FilePattern { pattern: String, reason: String },
    #[error("{reason}")]
    Vocabulary { reason: String },
    #[error("results file {path}: {reason}")]
    Results { path: PathBuf, reason: String },
    #[error("{path} is not a fiedler results file: its first line is not a run header ({reason}); give the results.jsonl a fiedler eval wrote (eval never writes into another file: a new --results path starts a run)")]
    NotResults { path: PathBuf, reason: String },
    #[error("sample {id}: {source}")]
    Sample {
        id: String,
        #[source]
        source: Box<EvalError>,
    },
    #[error("ground truth {path}: {reason}")]
    GroundTruth { path: PathBuf, reason: String },
    #[error(
        "cannot write the report {path}: {reason} (the results are saved in {results}; `fiedler eval report {results} --out DIR` writes the report elsewhere)"
    )]
    Report {
        path: PathBuf,
        reason: String,
        results: PathBuf,
    },
    #[error(transparent)]
    Metric(#[from] crate::synth::metrics::MetricError),
    #[error("{0}")]
    Unsupported(String),
    /// A `runner::Plan` the model cannot run.
    #[error("evaluation plan: {0}")]
    Plan(String),
    #[error("{0} gave relevance that is not finite")]
    Relevance(Method),
    /// A question that is empty or whose tokens are all special: nothing to explain.
    #[error("the question {0:?} has no word tokens")]
    NoWords(String),
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error(transparent)]
    Explain(#[from] ExplainError),
}

impl EvalError {
    /// Whether the device's context is lost (a kernel failed on the GPU): no sample's fault,
    /// and every later one would fail the same way, so the run stops here.
    pub fn loses_the_device(&self) -> bool {
        matches!(
            self,
            EvalError::Session(SessionError::Model(ModelError::Backend(
                BackendError::DeviceLost { .. }
            )))
        )
    }
}

/// Checks that the model can earn credit on these questions: some of their credited answers
/// must be among the model's answers (a different answer list, e.g. a wrong `--answers`
/// file, would score 0 everywhere).
pub fn check_vocabulary(
    questions: &[&dataset::Question],
    answers: &[String],
) -> Result<(), EvalError> {
    let known: std::collections::HashSet<&str> = answers.iter().map(String::as_str).collect();
    let answerable = questions
        .iter()
        .filter(|q| q.truth.credited().iter().any(|a| known.contains(a)))
        .count();
    if answerable == 0 {
        let examples: Vec<&str> = questions
            .iter()
            .flat_map(|q| q.truth.credited())
            .take(5)
            .collect();
        return Err(EvalError::Vocabulary {
            reason: format!(
                "none of the {} questions has an answer among the model's {} answers (dataset answers such as {:?}; model answers such as {:?}): the answer list does not match the dataset (LXMERT: check --answers)",
                questions.len(),
                answers.len(),
                examples,
                answers.iter().take(5).collect::<Vec<_>>()
            ),
        });
    }
    Ok(())
}
