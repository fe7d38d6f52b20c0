//! Model inputs: image preprocessing and tokenization.
//!
//! Both follow the Hugging Face processors that the reference fixtures are made with
//! (`CLIPImageProcessor`, `ViltImageProcessor`, the `tokenizers` pipeline in tokenizer.json),
//! so that a model sees the same tensors here as under transformers.

pub mod image;
pub mod text;
pub mod vilt;

use std::path::PathBuf;

/// Reading or preparing a model input failed; every message names the file (or text) at fault.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("image {path} not found")]
    ImageNotFound { path: PathBuf },
    #[error("cannot read image {path}: {source}")]
    ImageRead {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a readable image: {reason}")]
    ImageDecode { path: PathBuf, reason: String },
    #[error("{what} is {width}×{height} pixels; an image needs at least one pixel per side")]
    EmptyImage {
        what: String,
        width: u32,
        height: u32,
    },
    #[error("images preprocess to different sizes ({first} gives {first_size:?}, {other} gives {other_size:?}); enable center cropping (CLIP) or padding (ViLT's do_pad) to batch them")]
    RaggedBatch {
        first: String,
        first_size: (usize, usize),
        other: String,
        other_size: (usize, usize),
    },
    #[error("{what} is {width}×{height} pixels, which resizes to {out_width}×{out_height}; an image needs at least one pixel per side")]
    ResizedToNothing {
        what: String,
        width: u32,
        height: u32,
        out_width: usize,
        out_height: usize,
    },
    #[error("cannot read {path}: {source}")]
    ConfigRead {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not valid JSON: {source}")]
    ConfigJson {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{path}: field `{field}`: expected {expected}, found {found}")]
    ConfigField {
        path: PathBuf,
        field: String,
        expected: String,
        found: String,
    },
    #[error("tokenizer file {path} not found")]
    TokenizerNotFound { path: PathBuf },
    #[error("cannot load tokenizer {path}: {reason}")]
    Tokenizer { path: PathBuf, reason: String },
    #[error("cannot tokenize text {index} ({text:?}): {reason}")]
    Encode {
        index: usize,
        text: String,
        reason: String,
    },
}
