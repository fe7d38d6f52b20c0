//! Model inputs: image preprocessing, LXMERT's region features and tokenization.
//!
//! Preprocessing and tokenization follow the Hugging Face processors that the reference fixtures are made with
//! (`CLIPImageProcessor`, `ViltImageProcessor`, the `tokenizers` pipeline in tokenizer.json),
//! so that a model sees the same tensors here as under transformers.

mod gif_frame;
pub mod image;
pub mod json;
pub mod regions;
pub mod text;
pub mod vilt;

mod wordpiece;

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
    #[error("{what} is {width}×{height} pixels, which resizes to {out_width}×{out_height} before any crop: more than the {} MiB an image may take decoded; crop it to a less extreme aspect ratio first", crate::input::image::max_decoded_bytes() >> 20)]
    ResizedTooLarge {
        what: String,
        width: u32,
        height: u32,
        out_width: usize,
        out_height: usize,
    },
    #[error("{what} preprocesses to {width}×{height} pixels, but the model takes {size}×{size} images: preprocessor_config.json resizes without a center crop to that size (do_center_crop is off)")]
    ModelImageSize {
        what: String,
        height: usize,
        width: usize,
        size: usize,
    },
    #[error("{what} preprocesses to {width}×{height} pixels, not whole {patch} px patches as ViLT reads them: preprocessor_config.json keeps each image's size (do_resize is false), so its sides must be multiples of {patch}")]
    PartialPatches {
        what: String,
        height: usize,
        width: usize,
        patch: usize,
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
    #[error("tokenizer file {path} not found, nor a BERT vocab.txt beside it")]
    TokenizerNotFound { path: PathBuf },
    #[error("cannot load tokenizer {path}: {reason}")]
    Tokenizer { path: PathBuf, reason: String },
    #[error("cannot tokenize text {index} ({text:?}): {reason}")]
    Encode {
        index: usize,
        text: String,
        reason: String,
    },
    #[error("region file {path} not found")]
    RegionsNotFound { path: PathBuf },
    #[error("cannot read region file {path}: {source}")]
    RegionsRead {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a safetensors file: {reason}")]
    RegionsNotSafetensors { path: PathBuf, reason: String },
    #[error("{path}: tensor `{tensor}`: {reason}")]
    RegionsTensor {
        path: PathBuf,
        tensor: String,
        reason: String,
    },
    #[error("{path}: `features` has shape {features:?} and `boxes` {boxes:?}; both need one row per region")]
    RegionsRows {
        path: PathBuf,
        features: Vec<usize>,
        boxes: Vec<usize>,
    },
    /// A value of a region that was read well-formed; `what` is [`regions::Regions::source`].
    #[error("{what}: region {region}, {field}: {reason}")]
    RegionsValue {
        what: String,
        region: usize,
        field: String,
        reason: String,
    },
    #[error("{path} is an obj36 TSV file, which holds many images; choose one by its image id (--image-id; RegionRequest::image_id in the library)")]
    ImageIdRequired { path: PathBuf },
    #[error("image id {image_id:?} not found in {path} ({holds})")]
    TsvImageNotFound {
        path: PathBuf,
        image_id: String,
        /// What the file's ids look like (`regions::holds_ids`).
        holds: String,
    },
    #[error("{path}, line {line} (image {image_id:?}): {found} TAB-separated columns, expected {expected} ({columns})", columns = regions::OBJ36_COLUMNS.join(" "))]
    TsvColumns {
        path: PathBuf,
        line: usize,
        image_id: String,
        found: usize,
        expected: usize,
    },
    #[error("{path}, line {line} (image {image_id:?}), column `{column}`: {reason}")]
    TsvField {
        path: PathBuf,
        line: usize,
        image_id: String,
        column: String,
        reason: String,
    },
    #[error(
        "{what} has {found}-wide region features, but the model's visual_feat_dim is {expected}"
    )]
    RegionDim {
        what: String,
        found: usize,
        expected: usize,
    },
}

impl InputError {
    /// The input file the error is about, as its message names it, with the image id where
    /// it is about one image of an obj36 TSV: for a caller to say which of its requests
    /// failed (the command line names its --pairs line).
    pub fn input_file(&self) -> Option<(String, Option<&str>)> {
        use InputError::*;
        match self {
            ImageNotFound { path }
            | ImageRead { path, .. }
            | ImageDecode { path, .. }
            | RegionsNotFound { path }
            | RegionsRead { path, .. }
            | RegionsNotSafetensors { path, .. }
            | RegionsTensor { path, .. }
            | RegionsRows { path, .. }
            | ImageIdRequired { path } => Some((path.display().to_string(), None)),
            TsvImageNotFound { path, image_id, .. }
            | TsvColumns { path, image_id, .. }
            | TsvField { path, image_id, .. } => Some((path.display().to_string(), Some(image_id))),
            EmptyImage { what, .. }
            | ResizedToNothing { what, .. }
            | ResizedTooLarge { what, .. }
            | ModelImageSize { what, .. }
            | PartialPatches { what, .. } => Some((what.clone(), None)),
            _ => None,
        }
    }
}
