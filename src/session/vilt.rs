//! ViLT visual question answering: load once, explain batches of (image, question) pairs.

use std::path::{Path, PathBuf};

use image::RgbImage;

use crate::backend::Cpu;
use crate::explain::vilt::explain_vilt;
use crate::explain::{Explanation, Method, MethodOptions};
use crate::input::image::{load_image, resize, Resample};
use crate::input::text::TextTokenizer;
use crate::input::vilt::ViltProcessorConfig;
use crate::model::vilt::{Vilt, ViltInputs};
use crate::session::{check_requests, PairRequest, SessionError};

/// How many answers a result lists.
const TOP_ANSWERS: usize = 5;
/// Longer side of the image the overlays are drawn on.
const DISPLAY_SIZE: usize = 384;

/// Everything fiedler computed for one (image, question) pair.
#[derive(Debug, Clone)]
pub struct QuestionResult {
    pub image: PathBuf,
    pub question: String,
    /// The real tokens of the question as shown to a person ([CLS] and [SEP] included).
    pub tokens: Vec<String>,
    pub truncated: bool,
    /// The answer the explanations explain (the predicted one).
    pub answer: String,
    /// The best answers with sigmoid probabilities (ViLT is trained with a per-answer
    /// binary loss), best first.
    pub top_answers: Vec<(String, f32)>,
    /// One per requested method, in request order; `score` is the answer's logit.
    pub explanations: Vec<Explanation>,
}

pub struct ViltSession {
    model: Vilt<Cpu>,
    processor: ViltProcessorConfig,
    tokenizer: TextTokenizer,
}

impl ViltSession {
    /// Loads config.json, the weights, tokenizer.json and preprocessor_config.json of a
    /// Hugging Face ViLT VQA directory.
    pub fn open(dir: &Path) -> Result<Self, SessionError> {
        let model = Vilt::load(&Cpu, dir)?;
        let c = &model.config;
        let tokenizer = TextTokenizer::from_dir(dir, c.max_position_embeddings, c.pad_token_id)?;
        let processor = ViltProcessorConfig::from_dir(dir)?;
        Ok(Self {
            model,
            processor,
            tokenizer,
        })
    }

    pub fn model(&self) -> &Vilt<Cpu> {
        &self.model
    }

    /// Explains `pairs` (text = question) in batches of `batch`, calling `progress(done)`.
    pub fn explain(
        &self,
        pairs: &[PairRequest],
        methods: &[Method],
        opts: &MethodOptions,
        batch: usize,
        mut progress: impl FnMut(usize),
    ) -> Result<Vec<QuestionResult>, SessionError> {
        check_requests(pairs)?;
        let mut results = Vec::with_capacity(pairs.len());
        for chunk in pairs.chunks(batch.max(1)) {
            results.extend(self.explain_batch(chunk, methods, opts)?);
            progress(results.len());
        }
        Ok(results)
    }

    fn explain_batch(
        &self,
        pairs: &[PairRequest],
        methods: &[Method],
        opts: &MethodOptions,
    ) -> Result<Vec<QuestionResult>, SessionError> {
        let images: Vec<&Path> = pairs.iter().map(|p| p.image.as_path()).collect();
        let pixels = self.processor.preprocess_batch(&images)?;
        let texts: Vec<&str> = pairs.iter().map(|p| p.text.as_str()).collect();
        let tokens = self.tokenizer.encode_batch(&texts)?;
        let inputs = ViltInputs {
            pixels: pixels.data,
            pixel_mask: pixels.mask,
            height: pixels.height,
            width: pixels.width,
            ids: tokens.ids.clone(),
            lengths: tokens.lengths.clone(),
            seq_len: tokens.seq_len,
        };
        let trace = self.model.trace(&Cpu, &inputs, None)?;
        let explanations = explain_vilt(&trace, methods, opts)?;
        let labels = &self.model.config.id2label;
        let n = trace.output.labels;
        Ok(pairs
            .iter()
            .zip(explanations)
            .enumerate()
            .map(|(b, (pair, explanations))| {
                let logits = &trace.output.logits[b * n..(b + 1) * n];
                let mut order: Vec<usize> = (0..n).collect();
                order.sort_by(|&i, &j| logits[j].total_cmp(&logits[i]));
                let top_answers = order
                    .iter()
                    .take(TOP_ANSWERS)
                    .map(|&i| (labels[i].clone(), 1.0 / (1.0 + (-logits[i]).exp())))
                    .collect();
                QuestionResult {
                    image: pair.image.clone(),
                    question: pair.text.clone(),
                    tokens: self
                        .tokenizer
                        .tokens_for_display(&tokens.row(b)[..tokens.lengths[b]]),
                    truncated: tokens.truncated[b],
                    answer: labels[trace.targets[b]].clone(),
                    top_answers,
                    explanations,
                }
            })
            .collect())
    }

    /// The whole image (ViLT does not crop), its longer side scaled to a size a person can
    /// see; the patch grid covers it exactly.
    pub fn display_image(&self, path: &Path) -> Result<RgbImage, SessionError> {
        let image = load_image(path)?;
        let (w, h) = (image.width() as f64, image.height() as f64);
        let scale = DISPLAY_SIZE as f64 / w.max(h);
        let size = |x: f64| ((x * scale).round() as usize).max(1);
        Ok(resize(&image, size(w), size(h), Resample::Bicubic))
    }
}
