//! Hugging Face model loading and the architectures written against the backend op set.

pub mod answer_head;
pub mod block;
pub mod clip;
pub mod config;
pub mod hub;
pub mod linear;
pub mod lxmert;
pub mod post_ln;
pub mod source;
pub mod summary;
mod torch_pickle;
pub mod vilt;
pub mod weights;
mod zip;

use thiserror::Error;

use crate::backend::BackendError;
use config::ConfigError;
use weights::LoadError;

pub use clip::{Clip, ClipInputs};
pub use config::ModelFamily;

/// Pooled rows before a layer norm, after it, and its statistics (for the backward).
pub(crate) type Pooled<Buf> = (Buf, Buf, Buf);

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

/// Which scalar the backward differentiates, per sample.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum VqaTarget {
    /// The logit of the predicted (argmax) answer: fiedler's default (§H).
    #[default]
    Predicted,
    /// The logit of the given answer index, per sample.
    Answers(Vec<usize>),
    /// Σ of every logit: what the seed's DSMI family differentiates (bug B1), for comparison.
    SumLogits,
}

impl VqaTarget {
    /// Refuses answers other than one per sample of a batch of `batch`, and an answer index
    /// beyond the model's `labels` answers.
    pub fn check(&self, batch: usize, labels: usize) -> Result<(), ModelError> {
        let VqaTarget::Answers(a) = self else {
            return Ok(());
        };
        if a.len() != batch {
            return Err(ModelError::Input(format!(
                "a batch of {batch} samples was given {} target answers: give one per sample",
                a.len()
            )));
        }
        if let Some(bad) = a.iter().find(|&&i| i >= labels) {
            let range = match labels {
                0 => "the model has no answers".to_owned(),
                n => format!("the model has {n} answers (0 to {})", n - 1),
            };
            return Err(ModelError::Input(format!(
                "target answer index {bad} is out of range: {range}"
            )));
        }
        Ok(())
    }

    /// The answer each sample explains (`None` for the Σ-logits target) and the backward's
    /// seed ∂y/∂logits [batch, labels], given the predicted answers.
    pub fn resolve(
        &self,
        predicted: &[usize],
        labels: usize,
    ) -> Result<(Option<Vec<usize>>, Vec<f32>), ModelError> {
        let batch = predicted.len();
        self.check(batch, labels)?;
        let targets = match self {
            VqaTarget::Predicted => Some(predicted.to_vec()),
            VqaTarget::Answers(a) => Some(a.clone()),
            VqaTarget::SumLogits => None,
        };
        let seed = match &targets {
            Some(t) => (0..batch * labels)
                .map(|i| {
                    if t[i / labels] == i % labels {
                        1.0
                    } else {
                        0.0
                    }
                })
                .collect(),
            None => vec![1.0; batch * labels],
        };
        Ok((targets, seed))
    }

    /// The value a sample's explanations explain: its target logit, or the sum of its logits.
    pub fn score(
        targets: &Option<Vec<usize>>,
        logits: &[f32],
        labels: usize,
        sample: usize,
    ) -> f32 {
        let row = &logits[sample * labels..(sample + 1) * labels];
        match targets {
            Some(t) => row[t[sample]],
            None => row.iter().sum(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_answers_are_one_per_sample_and_in_range() {
        let predicted = [2, 0];
        let (targets, seed) = VqaTarget::Answers(vec![1, 3])
            .resolve(&predicted, 4)
            .unwrap();
        assert_eq!(targets, Some(vec![1, 3]));
        assert_eq!(seed, [0., 1., 0., 0., 0., 0., 0., 1.]);
        let message = |t: VqaTarget| t.resolve(&predicted, 4).unwrap_err().to_string();
        assert_eq!(
            message(VqaTarget::Answers(vec![1])),
            "a batch of 2 samples was given 1 target answers: give one per sample"
        );
        assert_eq!(
            message(VqaTarget::Answers(vec![1, 999])),
            "target answer index 999 is out of range: the model has 4 answers (0 to 3)"
        );
    }
}
