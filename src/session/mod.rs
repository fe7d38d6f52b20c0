//! The library entry points: load a model directory once, then explain batches of
//! (image, text) requests with a list of methods. One session type per family.

pub mod clip;
pub mod vilt;

use std::path::PathBuf;

use thiserror::Error;

use crate::explain::ExplainError;
use crate::input::InputError;
use crate::model::ModelError;

pub use clip::{ClipSession, PairResult};
pub use vilt::{QuestionResult, ViltSession};

#[derive(Debug, Error)]
pub enum SessionError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Input(#[from] InputError),
    #[error(transparent)]
    Explain(#[from] ExplainError),
    #[error("text {index} is empty; give a caption to explain")]
    EmptyText { index: usize },
    #[error("nothing to explain: no (image, text) pairs given")]
    NoPairs,
}

/// One (image, text) pair to explain: a caption for CLIP, a question for the VQA models.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairRequest {
    pub image: PathBuf,
    pub text: String,
}

/// Rejects an empty request list and empty texts before any work.
pub(crate) fn check_requests(pairs: &[PairRequest]) -> Result<(), SessionError> {
    if pairs.is_empty() {
        return Err(SessionError::NoPairs);
    }
    match pairs.iter().position(|p| p.text.trim().is_empty()) {
        Some(index) => Err(SessionError::EmptyText { index }),
        None => Ok(()),
    }
}
