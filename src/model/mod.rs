//! Hugging Face model loading and the architectures written against the backend op set.

pub mod block;
pub mod clip;
pub mod config;
pub mod lxmert;
pub mod post_ln;
pub mod source;
pub mod summary;
pub mod vilt;
pub mod weights;

use thiserror::Error;

use crate::backend::BackendError;
use config::ConfigError;
use weights::LoadError;

pub use clip::{Clip, ClipInputs};
pub use config::ModelFamily;

#[derive(Debug, Error)]
pub enum ModelError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("{0}")]
    Input(String),
}
