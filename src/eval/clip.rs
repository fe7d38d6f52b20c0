//! CLIP under `fiedler eval`: there is no answer to perturb, so on a `fiedler synth` caption
//! set (captions.json) each image's true caption is explained and the explanation scored
//! against ground truth only (the objects the caption names: all of the image's).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::backend::Backend;
use crate::eval::answers::GroundTruth;
use crate::eval::dataset::{Dataset, Question};
use crate::eval::runner::{EvalModel, Explained, Keep};
use crate::eval::EvalError;
use crate::explain::{Method, MethodOptions};
use crate::session::{ClipSession, PairRequest};

#[derive(Deserialize)]
struct CaptionSet {
    image_id: u64,
    file: String,
    correct: usize,
    captions: Vec<String>,
}

/// The true caption of every image of a captions.json as a question (id and image id: the
/// image id), and each image's file.
pub fn read_captions(path: &Path) -> Result<(Dataset, HashMap<String, PathBuf>), EvalError> {
    let fail = |reason: String| EvalError::Dataset {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    let sets: Vec<CaptionSet> = serde_json::from_str(&text)
        .map_err(|e| fail(format!("not a fiedler synth captions.json: {e}")))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut files = HashMap::new();
    let mut questions = Vec::with_capacity(sets.len());
    for set in sets {
        let id = set.image_id.to_string();
        let caption = set.captions.get(set.correct).ok_or_else(|| {
            fail(format!(
                "image {id}: true caption {} of {}",
                set.correct,
                set.captions.len()
            ))
        })?;
        files.insert(id.clone(), dir.join(&set.file));
        questions.push(Question {
            id: id.clone(),
            image_id: id,
            text: caption.clone(),
            truth: GroundTruth::Scores(Default::default()),
        });
    }
    if questions.is_empty() {
        return Err(EvalError::EmptyDataset(path.to_path_buf()));
    }
    Ok((
        Dataset {
            source: path.display().to_string(),
            questions,
        },
        files,
    ))
}

impl<B: Backend> EvalModel for ClipSession<B> {
    type Input = PairRequest;

    fn answers(&self) -> &[String] {
        &[]
    }

    fn explain(
        &self,
        inputs: &[&PairRequest],
        methods: &[Method],
        opts: &MethodOptions,
    ) -> Result<Vec<Explained>, EvalError> {
        let pairs: Vec<PairRequest> = inputs.iter().map(|&p| p.clone()).collect();
        Ok(self
            .explain_batch(&pairs, methods, opts)?
            .into_iter()
            .map(|r| Explained {
                predicted: 0,
                explanations: r.explanations,
            })
            .collect())
    }

    fn predict(&self, _: &[(&PairRequest, &Keep)]) -> Result<Vec<usize>, EvalError> {
        Err(EvalError::Unsupported(
            "CLIP has no answer to perturb: the perturbation tests need a VQA model".into(),
        ))
    }
}
