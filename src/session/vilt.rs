//! ViLT visual question answering: load once, explain batches of (image, question) pairs.

use std::path::Path;

use image::RgbImage;

use crate::backend::{Backend, Cpu};
use crate::explain::vilt::{explain_vilt, vilt_reads, vilt_start, vilt_trace};
use crate::explain::{Explanation, Method, MethodOptions};
use crate::input::text::TextTokenizer;
use crate::input::vilt::ViltProcessorConfig;
use crate::model::vilt::{Vilt, ViltInputs, ViltOutput};
use crate::model::VqaTarget;
use crate::session::{
    check_all_words, check_requests, in_batches, rank_answers, whole_image, AnswerTarget,
    PairRequest, Proceed, QuestionResult, SessionError,
};
use crate::warning::warn;

/// A ViLT model loaded on a backend (the CPU unless opened with `open_on`).
pub struct ViltSession<B: Backend = Cpu> {
    backend: B,
    model: Vilt<B>,
    processor: ViltProcessorConfig,
    tokenizer: TextTokenizer,
}

impl ViltSession {
    /// Loads config.json, the weights, tokenizer.json and preprocessor_config.json of a
    /// Hugging Face ViLT VQA directory.
    pub fn open(dir: &Path) -> Result<Self, SessionError> {
        Self::open_on(Cpu, dir)
    }
}

impl<B: Backend> ViltSession<B> {
    /// The same, with the model on `backend`.
    pub fn open_on(backend: B, dir: &Path) -> Result<Self, SessionError> {
        let model = Vilt::load(&backend, dir)?;
        let c = &model.config;
        let tokenizer = TextTokenizer::from_dir(dir, c.max_position_embeddings, c.pad_token_id)?
            .for_vocabulary(c.vocab_size)?;
        let processor = ViltProcessorConfig::from_dir(dir, c.image_size)?;
        processor.check_patch_size(dir, c.patch_size)?;
        Ok(Self {
            backend,
            model,
            processor,
            tokenizer,
        })
    }

    /// The answer of each logit (config.json's id2label): what `AnswerTarget::parse` reads
    /// `answer:TEXT` against.
    pub fn answers(&self) -> &[String] {
        &self.model.config.id2label
    }

    /// The loaded model; its `config` holds the hyper-parameters (and a VQA model's answers).
    pub fn model(&self) -> &Vilt<B> {
        &self.model
    }

    /// Where the model computes.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    pub fn processor(&self) -> &ViltProcessorConfig {
        &self.processor
    }

    /// That an image preprocessed to `height` × `width` is whole patches of the model.
    pub(crate) fn check_whole_patches(
        &self,
        what: &str,
        height: usize,
        width: usize,
    ) -> Result<(), SessionError> {
        let patch = self.model.config.patch_size;
        Ok(self
            .processor
            .check_whole_patches(what, height, width, patch)?)
    }

    /// The tokenizer, to encode texts by hand or map tokens back to words.
    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    /// Explains `pairs` (text = question) in batches of `batch` ([batches](super#batches)),
    /// calling `progress(done)`
    /// after each (which may stop the work: [`Proceed`]).
    pub fn explain<P: Proceed>(
        &self,
        pairs: &[PairRequest],
        methods: &[Method],
        opts: &MethodOptions,
        target: &AnswerTarget,
        batch: usize,
        progress: impl FnMut(usize) -> P,
    ) -> Result<Vec<QuestionResult>, SessionError> {
        vilt_start(opts, self.model.config.num_hidden_layers)?;
        target.check(pairs.len(), self.answers().len())?;
        check_requests(pairs, |what, size| self.processor.check_size(what, size))?;
        let texts: Vec<&str> = pairs.iter().map(|p| p.text.as_str()).collect();
        check_all_words(&self.tokenizer, &texts)?;
        in_batches(pairs, batch, progress, |range, chunk| {
            self.explain_batch(chunk, methods, opts, &target.for_chunk(range))
        })
    }

    fn explain_batch(
        &self,
        pairs: &[PairRequest],
        methods: &[Method],
        opts: &MethodOptions,
        target: &VqaTarget,
    ) -> Result<Vec<QuestionResult>, SessionError> {
        let images: Vec<&Path> = pairs.iter().map(|p| p.image.as_path()).collect();
        let pixels = self.processor.preprocess_batch(&images)?;
        for (image, &(height, width)) in images.iter().zip(&pixels.sizes) {
            let what = image.display().to_string();
            self.check_whole_patches(&what, height, width)?;
        }
        let texts: Vec<&str> = pairs.iter().map(|p| p.text.as_str()).collect();
        // `explain` has checked that every question holds a word.
        let tokens = self.tokenizer.encode_batch(&texts)?;
        let inputs = ViltInputs {
            pixels: pixels.data,
            pixel_mask: pixels.mask,
            height: pixels.height,
            width: pixels.width,
            ids: tokens.ids.clone(),
            lengths: tokens.lengths.clone(),
            seq_len: tokens.seq_len,
            kept_patches: None,
        };
        let (output, explanations) = self.explain_inputs(&inputs, methods, opts, target)?;
        for (pair, layout) in pairs.iter().zip(&output.layouts) {
            if layout.dropped_patches() > 0 {
                warn(&format!(
                    "{} has {} patches, more than the model's max_image_length: kept {} evenly \
                     spaced ones (transformers draws them at random on every call); the others \
                     get relevance 0",
                    pair.image.display(),
                    layout.grid.0 * layout.grid.1,
                    layout.patch_index.len()
                ));
            }
        }
        let n = output.labels;
        Ok(pairs
            .iter()
            .zip(explanations)
            .enumerate()
            .map(|(b, (pair, explanations))| {
                let ranked = rank_answers(
                    &output.logits[b * n..(b + 1) * n],
                    &self.model.config.id2label,
                    self.model.config.answer_probability,
                    target,
                    b,
                );
                QuestionResult {
                    image: pair.image.clone(),
                    question: pair.text.clone(),
                    tokens: self
                        .tokenizer
                        .tokens_for_display(&tokens.row(b)[..tokens.lengths[b]]),
                    truncated: tokens.truncated[b],
                    answer: ranked.answer,
                    top_answers: ranked.top_answers,
                    probability: ranked.probability,
                    explanations,
                }
            })
            .collect())
    }

    /// Explains prepared inputs (a forward, and a backward when a method or the target needs
    /// one): the answer logits and result[sample][method].
    pub fn explain_inputs(
        &self,
        inputs: &ViltInputs,
        methods: &[Method],
        opts: &MethodOptions,
        target: &VqaTarget,
    ) -> Result<(ViltOutput, Vec<Vec<Explanation>>), SessionError> {
        let be = &self.backend;
        let trace = vilt_trace(&self.model, be, inputs, methods, opts, target)?;
        let reads = vilt_reads(methods, &trace, opts);
        let trace = trace
            .into_host_for(be, &reads)
            .map_err(crate::model::ModelError::from)?;
        let explanations = explain_vilt(&trace, methods, opts)?;
        Ok((trace.output, explanations))
    }

    /// The whole image (ViLT does not crop) at a size a person can see; the patch grid
    /// covers it exactly.
    pub fn display_image(&self, path: &Path) -> Result<RgbImage, SessionError> {
        whole_image(path)
    }
}
