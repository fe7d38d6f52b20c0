//! The library entry point for CLIP: load a model directory once, then explain batches of
//! (image, text) pairs with a list of methods.
//!
//! ```
//! use fiedler::explain::{Method, MethodOptions};
//! use fiedler::session::{ClipSession, PairRequest};
//! # fn main() -> anyhow::Result<()> {
//! let session = ClipSession::open("tests/fixtures/clip".as_ref())?;
//! let image = "tests/fixtures/images/catdog.png";
//! let pairs = [PairRequest { image: image.into(), text: "a photo of a cat".into() }];
//! for result in session.explain(&pairs, &[Method::DsmiGrad], &MethodOptions::default(), 16, |_| {})? {
//!     println!("{} {:.2} {:?}", result.text, result.score, result.explanations[0].image_relevance);
//! }
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use image::RgbImage;
use serde::Serialize;

use crate::backend::{Backend, Cpu};
use crate::explain::clip::{clip_reads, clip_starts, clip_trace, explain_clip};
use crate::explain::Explanation;
use crate::explain::{Method, MethodOptions};
use crate::input::image::{
    center_crop, load_image, resize, resize_output_size, ImageProcessorConfig, ResizeTo,
};
use crate::input::text::TextTokenizer;
use crate::input::InputError;
use crate::model::clip::{Clip, ClipInputs};
use crate::model::config::CONFIG_FILE;
use crate::session::{check_requests, check_texts, in_batches, PairRequest, Proceed, SessionError};

/// Side of the square image the overlays are drawn on (the model's own input is often tiny).
const DISPLAY_SIZE: usize = 224;

/// Everything fiedler computed for one pair.
#[derive(Debug, Clone, Serialize)]
pub struct PairResult {
    /// The image file, as requested.
    pub image: PathBuf,
    /// The caption, as requested.
    pub text: String,
    /// The real tokens of the text as shown to a person (special tokens included), one per
    /// entry of each explanation's `text_relevance`.
    pub tokens: Vec<String>,
    /// Whether the text was cut to the model's positions.
    pub truncated: bool,
    /// exp(logit_scale)·cos(image, text).
    pub score: f32,
    /// Softmax of the score over every text given with the same image file in this request;
    /// `None` when the image has only this text (a softmax over one says nothing).
    pub probability: Option<f32>,
    /// One per requested method, in request order.
    pub explanations: Vec<Explanation>,
}

/// A CLIP model loaded on a backend (the CPU unless opened with `open_on`).
pub struct ClipSession<B: Backend = Cpu> {
    backend: B,
    model: Clip<B>,
    processor: ImageProcessorConfig,
    tokenizer: TextTokenizer,
}

impl ClipSession {
    /// Loads config.json, the weights, tokenizer.json and preprocessor_config.json of a
    /// Hugging Face CLIP directory, to run on the CPU.
    pub fn open(dir: &Path) -> Result<Self, SessionError> {
        Self::open_on(Cpu, dir)
    }
}

impl<B: Backend> ClipSession<B> {
    /// The same, with the model on `backend` (e.g. `backend::cuda::Cuda`).
    pub fn open_on(backend: B, dir: &Path) -> Result<Self, SessionError> {
        let model = Clip::load(&backend, dir)?;
        let text = &model.config.text;
        let tokenizer =
            TextTokenizer::from_dir(dir, text.max_position_embeddings, text.pad_token_id)?
                .for_vocabulary(text.vocab_size)?;
        // CLIP pools each text at its end-of-text token (eos_token_id; 2 is the legacy value
        // that pools at the largest id instead, as transformers does).
        let (_, end) = tokenizer.frame_ids()?;
        if text.eos_token_id != 2 && end != text.eos_token_id {
            return Err(InputError::ConfigField {
                path: dir.join(CONFIG_FILE),
                field: "text_config.eos_token_id".into(),
                expected: format!(
                    "{end}, the id of the end token the tokenizer puts after every text \
                     (CLIP reads each text there)"
                ),
                found: text.eos_token_id.to_string(),
            }
            .into());
        }
        let image_size = model.config.vision.image_size;
        let processor = ImageProcessorConfig::from_dir(dir, image_size)?;
        processor.check_square_output(dir, image_size)?;
        Ok(Self {
            backend,
            model,
            processor,
            tokenizer,
        })
    }

    /// The loaded model; its `config` holds the hyper-parameters of both towers.
    pub fn model(&self) -> &Clip<B> {
        &self.model
    }

    /// Where the model computes.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The image preprocessing (preprocessor_config.json), for building `ClipInputs` by hand.
    pub fn processor(&self) -> &ImageProcessorConfig {
        &self.processor
    }

    /// The tokenizer, to encode texts by hand or map tokens back to words.
    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    /// Explains `pairs` in batches of `batch` ([batches](super#batches)), calling `progress(pairs done)` after each
    /// (which may stop the work: [`Proceed`]).
    pub fn explain<P: Proceed>(
        &self,
        pairs: &[PairRequest],
        methods: &[Method],
        opts: &MethodOptions,
        batch: usize,
        progress: impl FnMut(usize) -> P,
    ) -> Result<Vec<PairResult>, SessionError> {
        let c = &self.model.config;
        clip_starts(opts, (c.vision.num_hidden_layers, c.text.num_hidden_layers))?;
        check_requests(pairs, |what, size| self.processor.check_size(what, size))?;
        let mut results = in_batches(pairs, batch, progress, |_, chunk| {
            self.explain_batch(chunk, methods, opts)
        })?;
        set_probabilities(&mut results);
        Ok(results)
    }

    /// exp(logit_scale)·cos(image, text) of `image` with each of `texts`, from a forward
    /// alone (the vision tower once; each tower's last layer at its pooled row).
    pub fn scores(&self, image: &Path, texts: &[&str]) -> Result<Vec<f32>, SessionError> {
        check_texts(texts.iter().copied())?;
        let pixels = self.pixels(&[image])?;
        let tokens = self.tokenizer.encode_batch(texts)?;
        let inputs = ClipInputs {
            pixels,
            ids: tokens.ids,
            lengths: tokens.lengths,
            seq_len: tokens.seq_len,
        };
        let output = self.model.scores_of_one_image(&self.backend, &inputs)?;
        Ok(output.pair_scores)
    }

    /// The preprocessed `images`, at the size the model's position embeddings are for.
    fn pixels(&self, images: &[&Path]) -> Result<Vec<f32>, SessionError> {
        let pixels = self.processor.preprocess_batch(images)?;
        // Without a center crop, a preprocessor_config.json that resizes the shortest edge
        // leaves a non-square image at another size than the position embeddings are for.
        let size = self.model.config.vision.image_size;
        if (pixels.height, pixels.width) != (size, size) {
            return Err(InputError::ModelImageSize {
                what: images[0].display().to_string(),
                height: pixels.height,
                width: pixels.width,
                size,
            }
            .into());
        }
        Ok(pixels.data)
    }

    pub(crate) fn explain_batch(
        &self,
        pairs: &[PairRequest],
        methods: &[Method],
        opts: &MethodOptions,
    ) -> Result<Vec<PairResult>, SessionError> {
        let images: Vec<&Path> = pairs.iter().map(|p| p.image.as_path()).collect();
        let pixels = self.pixels(&images)?;
        let texts: Vec<&str> = pairs.iter().map(|p| p.text.as_str()).collect();
        let tokens = self.tokenizer.encode_batch(&texts)?;
        let inputs = ClipInputs {
            pixels,
            ids: tokens.ids.clone(),
            lengths: tokens.lengths.clone(),
            seq_len: tokens.seq_len,
        };
        let be = &self.backend;
        let trace = clip_trace(&self.model, be, &inputs, methods, opts)?;
        let reads = clip_reads(methods, &trace, opts);
        let trace = trace
            .into_host_for(be, &reads)
            .map_err(crate::model::ModelError::from)?;
        let explanations = explain_clip(&trace, methods, opts)?;
        Ok(pairs
            .iter()
            .zip(explanations)
            .enumerate()
            .map(|(b, (pair, explanations))| PairResult {
                image: pair.image.clone(),
                text: pair.text.clone(),
                tokens: self
                    .tokenizer
                    .tokens_for_display(&tokens.row(b)[..tokens.lengths[b]]),
                truncated: tokens.truncated[b],
                score: trace.output.pair_scores[b],
                probability: None,
                explanations,
            })
            .collect())
    }

    /// The image as the model saw it (same resize and crop), at a size a person can see.
    pub fn display_image(&self, path: &Path) -> Result<RgbImage, SessionError> {
        Ok(display_image(&self.processor, &load_image(path)?))
    }

    /// `display_image` of an image already decoded, as a function that owns what it needs:
    /// to draw after the session is gone, or from several threads.
    pub fn display_resizer(&self) -> impl Fn(&RgbImage) -> RgbImage + Send + Sync + 'static {
        let processor = self.processor.clone();
        move |image| display_image(&processor, image)
    }
}

/// `image` as `p` gives it to the model (same resize and crop), at a size a person can see.
fn display_image(p: &ImageProcessorConfig, image: &RgbImage) -> RgbImage {
    let scale = DISPLAY_SIZE as f64 / p.crop_height.max(1) as f64;
    let scaled = |x: usize| ((x as f64 * scale).round() as usize).max(1);
    let (h, w) = match p.size {
        ResizeTo::ShortestEdge(edge) => resize_output_size(
            image.height() as usize,
            image.width() as usize,
            ResizeTo::ShortestEdge(scaled(edge)),
        ),
        ResizeTo::Exact { height, width } => (scaled(height), scaled(width)),
    };
    let resized = resize(image, w, h, p.resample);
    if p.do_center_crop {
        center_crop(&resized, scaled(p.crop_height), scaled(p.crop_width))
    } else {
        resized
    }
}

/// Softmax over the texts that share an image (CLIP's zero-shot probabilities). An image is
/// its file: `a/x.png` and `a/../a/x.png` are one image.
fn set_probabilities(results: &mut [PairResult]) {
    let mut groups: HashMap<PathBuf, Vec<usize>> = HashMap::new();
    for (i, r) in results.iter().enumerate() {
        let file = r.image.canonicalize().unwrap_or_else(|_| r.image.clone());
        groups.entry(file).or_default().push(i);
    }
    for members in groups.values().filter(|m| m.len() > 1) {
        let max = members
            .iter()
            .map(|&i| results[i].score)
            .fold(f32::NEG_INFINITY, f32::max);
        let total: f32 = members
            .iter()
            .map(|&i| (results[i].score - max).exp())
            .sum();
        for &i in members {
            results[i].probability = Some((results[i].score - max).exp() / total);
        }
    }
}
