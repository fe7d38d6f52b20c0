//! LXMERT visual question answering: load once, explain batches of (regions, question) pairs.

use std::path::{Path, PathBuf};

use crate::backend::{Backend, Cpu};
use crate::explain::lxmert::{explain_lxmert, grad_scope, lrp_scope, lxmert_reads, lxmert_starts};
use crate::explain::{Explanation, Method, MethodOptions};
use crate::input::json::without_bom;
pub use crate::input::regions::Regions;
use crate::input::regions::{check_regions_file, load_regions};
use crate::input::text::TextTokenizer;
use crate::model::config::unnamed_answers;
use crate::model::lxmert::{Lxmert, LxmertInputs, LxmertOutput};
use crate::model::VqaTarget;
use crate::session::{
    check_all_words, check_texts, in_batches, rank_answers, AnswerTarget, Proceed, QuestionResult,
    SessionError,
};
use crate::warning::warn;

/// One question about one image's regions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionRequest {
    /// A features file (safetensors `features`, `boxes`) or an obj36 TSV.
    pub regions: PathBuf,
    /// The image id to pick from a TSV.
    pub image_id: Option<String>,
    pub question: String,
}

/// An LXMERT model loaded on a backend (the CPU unless opened with `open_on`).
pub struct LxmertSession<B: Backend = Cpu> {
    backend: B,
    model: Lxmert<B>,
    tokenizer: TextTokenizer,
    answers: Vec<String>,
}

impl LxmertSession {
    /// Loads config.json, the weights and tokenizer.json of a Hugging Face LXMERT VQA
    /// directory; `answers` (a JSON list, e.g. LXMERT's trainval_label2ans.json) names the
    /// logits when the config does not.
    pub fn open(dir: &Path, answers: Option<&Path>) -> Result<Self, SessionError> {
        Self::open_on(Cpu, dir, answers)
    }
}

impl<B: Backend> LxmertSession<B> {
    /// The same, with the model on `backend`.
    pub fn open_on(backend: B, dir: &Path, answers: Option<&Path>) -> Result<Self, SessionError> {
        let model = Lxmert::load(&backend, dir)?;
        let c = &model.config;
        let tokenizer = TextTokenizer::from_dir(dir, c.max_position_embeddings, c.pad_token_id)?
            .for_vocabulary(c.vocab_size)?;
        let answers = match answers {
            None => {
                if unnamed_answers(&c.id2label) {
                    warn(&format!(
                        "{} names no answers (no id2label), so they show as LABEL_k: give \
                         --answers with the answer list (LXMERT's trainval_label2ans.json)",
                        dir.join("config.json").display()
                    ));
                }
                c.id2label.clone()
            }
            Some(path) => {
                let answers = read_answers(path, c.id2label.len())?;
                if !unnamed_answers(&c.id2label) {
                    if let Some(i) = (0..answers.len()).find(|&i| answers[i] != c.id2label[i]) {
                        warn(&format!(
                            "{} replaces the answer names of {} (logit {i}: {:?} there, {:?} here)",
                            path.display(),
                            dir.join("config.json").display(),
                            c.id2label[i],
                            answers[i]
                        ));
                    }
                }
                answers
            }
        };
        Ok(Self {
            backend,
            model,
            tokenizer,
            answers,
        })
    }

    /// The answer of each logit: config.json's id2label, or the answer list given to `open`;
    /// what `AnswerTarget::parse` reads `answer:TEXT` against.
    pub fn answers(&self) -> &[String] {
        &self.answers
    }

    /// The loaded model; its `config` holds the hyper-parameters (and a VQA model's answers).
    pub fn model(&self) -> &Lxmert<B> {
        &self.model
    }

    /// Where the model computes.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The tokenizer, to encode texts by hand or map tokens back to words.
    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    /// Explains `requests` in batches of `batch` ([batches](super#batches)), calling `progress(done)` after each (which
    /// may stop the work: [`Proceed`]); every sample of a batch must have the same number of
    /// regions (LXMERT has no region mask).
    pub fn explain<P: Proceed>(
        &self,
        requests: &[RegionRequest],
        methods: &[Method],
        opts: &MethodOptions,
        target: &AnswerTarget,
        batch: usize,
        progress: impl FnMut(usize) -> P,
    ) -> Result<Vec<(QuestionResult, Regions)>, SessionError> {
        lxmert_starts(opts)?;
        target.check(requests.len(), self.answers().len())?;
        let texts: Vec<&str> = requests.iter().map(|r| r.question.as_str()).collect();
        check_texts(texts.iter().copied())?;
        check_all_words(&self.tokenizer, &texts)?;
        for r in requests {
            check_regions_file(&r.regions, r.image_id.as_deref())?;
        }
        in_batches(requests, batch, progress, |range, chunk| {
            self.explain_batch(chunk, methods, opts, &target.for_chunk(range))
        })
    }

    fn explain_batch(
        &self,
        requests: &[RegionRequest],
        methods: &[Method],
        opts: &MethodOptions,
        target: &VqaTarget,
    ) -> Result<Vec<(QuestionResult, Regions)>, SessionError> {
        let regions = requests
            .iter()
            .map(|r| {
                let regions = load_regions(&r.regions, r.image_id.as_deref())?;
                regions.check_dim(self.model.config.visual_feat_dim)?;
                Ok(regions)
            })
            .collect::<Result<Vec<_>, SessionError>>()?;
        let count = regions[0].count;
        if let Some(other) = regions.iter().find(|r| r.count != count) {
            return Err(SessionError::RegionCounts {
                first: regions[0].source.clone(),
                count,
                other: other.source.clone(),
                other_count: other.count,
            });
        }
        // `explain` has checked that every question holds a word.
        let texts: Vec<&str> = requests.iter().map(|r| r.question.as_str()).collect();
        let tokens = self.tokenizer.encode_batch(&texts)?;
        let inputs = LxmertInputs {
            features: regions
                .iter()
                .flat_map(|r| r.features.iter().copied())
                .collect(),
            boxes: regions
                .iter()
                .flat_map(|r| r.boxes.iter().copied())
                .collect(),
            regions: count,
            region_counts: None,
            ids: tokens.ids.clone(),
            lengths: tokens.lengths.clone(),
            seq_len: tokens.seq_len,
        };
        let (output, explanations) =
            explain_inputs(&self.backend, &self.model, &inputs, methods, opts, target)?;
        let n = output.labels;
        Ok(requests
            .iter()
            .zip(explanations)
            .zip(regions)
            .enumerate()
            .map(|(b, ((r, explanations), regions))| {
                let ranked = rank_answers(
                    &output.logits[b * n..(b + 1) * n],
                    &self.answers,
                    self.model.config.answer_probability,
                    target,
                    b,
                );
                let result = QuestionResult {
                    image: r.regions.clone(),
                    question: r.question.clone(),
                    tokens: self
                        .tokenizer
                        .tokens_for_display(&tokens.row(b)[..tokens.lengths[b]]),
                    truncated: tokens.truncated[b],
                    answer: ranked.answer,
                    top_answers: ranked.top_answers,
                    probability: ranked.probability,
                    explanations,
                };
                (result, regions)
            })
            .collect())
    }
}

/// Explains prepared inputs (a forward, and a backward when a method or the target needs
/// one): the answer logits and result[sample][method].
pub fn explain_inputs<B: Backend>(
    be: &B,
    model: &Lxmert<B>,
    inputs: &LxmertInputs,
    methods: &[Method],
    opts: &MethodOptions,
    target: &VqaTarget,
) -> Result<(LxmertOutput, Vec<Vec<Explanation>>), SessionError> {
    let trace = model
        .trace_with(be, inputs, target, grad_scope(methods), lrp_scope(methods))?
        .into_host_for(be, lxmert_reads(methods, opts))
        .map_err(crate::model::ModelError::from)?;
    let explanations = explain_lxmert(&trace, methods, opts)?;
    Ok((trace.output, explanations))
}

/// A JSON list of answer strings, one per logit.
fn read_answers(path: &Path, labels: usize) -> Result<Vec<String>, SessionError> {
    let text = std::fs::read_to_string(path).map_err(|e| SessionError::Answers {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let answers: Vec<String> =
        serde_json::from_str(without_bom(&text)).map_err(|e| SessionError::Answers {
            path: path.to_path_buf(),
            reason: match without_bom(&text).trim_start().starts_with('{') {
                // The answer-to-index map sits beside the list in LXMERT's data folder.
                true => "expected a JSON list of strings, one per logit; this is an object \
                     (trainval_ans2label.json maps answers to indices: give \
                     trainval_label2ans.json)"
                    .into(),
                false => format!("expected a JSON list of strings: {e}"),
            },
        })?;
    if answers.len() != labels {
        return Err(SessionError::Answers {
            path: path.to_path_buf(),
            reason: match answers.len() {
                1 => format!("1 answer for a model with {labels} answer logits"),
                n => format!("{n} answers for a model with {labels} answer logits"),
            },
        });
    }
    let mut first = std::collections::HashMap::new();
    for (i, answer) in answers.iter().enumerate() {
        if let Some(j) = first.insert(answer.as_str(), i) {
            first.insert(answer.as_str(), j);
            warn(&format!(
                "answer list {} names {answer:?} twice (logits {j} and {i}): answer:{answer} explains logit {j}",
                path.display()
            ));
        }
    }
    Ok(answers)
}
