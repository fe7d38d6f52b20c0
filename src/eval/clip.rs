//! CLIP under `fiedler eval`: there is no answer to perturb, so on a `fiedler synth` caption
//! set (captions.json) each image's true caption is explained and the explanation scored
//! against ground truth only (the objects the caption names: all of the image's). Whether the
//! model ranks the true caption first among the image's captions is recorded beside it, the
//! CLIP counterpart of a VQA model's accuracy.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::backend::Backend;
use crate::eval::answers::GroundTruth;
use crate::eval::dataset::{bad, finish, read_text, Dataset, Question};
use crate::eval::runner::{Answering, EvalModel, Explained};
use crate::eval::EvalError;
use crate::explain::{Method, MethodOptions};
use crate::input::json::without_bom;
use crate::model::VqaTarget;
use crate::session::{ClipSession, PairRequest};
use crate::warning::warn;

#[derive(Deserialize)]
struct CaptionSetLine {
    image_id: u64,
    file: String,
    correct: usize,
    captions: Vec<String>,
}

/// One image of a captions.json: its file, and its captions with the true one's index.
#[derive(Debug, Clone, PartialEq)]
pub struct CaptionSet {
    pub file: PathBuf,
    pub captions: Vec<String>,
    pub correct: usize,
}

impl CaptionSet {
    /// Whether `session` scores the true caption above every other caption of the image: 1
    /// if so, 0 if one scores higher, 1/k when k captions tie at the top with it (captions
    /// cut to the same tokens), as a draw among them would be right. Forwards alone: the
    /// image once, and each caption.
    pub fn retrieval<B: Backend>(&self, session: &ClipSession<B>) -> Result<f64, EvalError> {
        let texts: Vec<&str> = self.captions.iter().map(String::as_str).collect();
        let scores = session.scores(&self.file, &texts)?;
        let truth = scores[self.correct];
        if scores.iter().any(|&s| s > truth) {
            return Ok(0.0);
        }
        Ok(1.0 / scores.iter().filter(|&&s| s == truth).count() as f64)
    }
}

/// Each sample's caption retrieval for the ground-truth scorer, which scores a sample's
/// methods one after another: computed once per sample. An error is warned of and recorded as
/// unknown, so that the sample keeps its ground-truth scores; but a lost device stops the run,
/// as it would every later sample's.
pub struct Retrievals<'a, B: Backend> {
    session: &'a ClipSession<B>,
    sets: &'a HashMap<String, CaptionSet>,
    last: RefCell<Option<(String, Option<f64>)>>,
}

impl<'a, B: Backend> Retrievals<'a, B> {
    pub fn new(session: &'a ClipSession<B>, sets: &'a HashMap<String, CaptionSet>) -> Self {
        Self {
            session,
            sets,
            last: RefCell::new(None),
        }
    }

    /// The retrieval (`CaptionSet::retrieval`) of sample `id`, by its caption set; `None`
    /// where it has none, where its true caption is its only one (retrieved against nothing,
    /// it would count as right), or where it failed.
    pub fn of(&self, id: &str) -> Result<Option<f64>, EvalError> {
        if let Some((last, retrieval)) = &*self.last.borrow() {
            if last == id {
                return Ok(*retrieval);
            }
        }
        let Some(set) = self.sets.get(id).filter(|set| set.captions.len() > 1) else {
            return Ok(None);
        };
        let retrieval = match set.retrieval(self.session) {
            Ok(share) => Some(share),
            Err(e) if e.loses_the_device() => return Err(e),
            Err(e) => {
                warn(&format!("sample {id}: no caption retrieval: {e}"));
                None
            }
        };
        *self.last.borrow_mut() = Some((id.to_owned(), retrieval));
        Ok(retrieval)
    }
}

/// The true caption of every image of a captions.json as a question (id and image id: the
/// image id), and each image's caption set, by that id.
pub fn read_captions(path: &Path) -> Result<(Dataset, HashMap<String, CaptionSet>), EvalError> {
    const FLAG: &str = "--captions";
    let fail = |reason: String| bad(FLAG, path, reason);
    let sets: Vec<CaptionSetLine> = serde_json::from_str(without_bom(&read_text(FLAG, path)?))
        .map_err(|e| fail(format!("not a fiedler synth captions.json: {e}")))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut sets_by_id = HashMap::new();
    let mut questions = Vec::with_capacity(sets.len());
    for set in sets {
        let id = set.image_id.to_string();
        let caption = set.captions.get(set.correct).ok_or_else(|| {
            fail(match set.captions.len() {
                0 => format!("image {id} has no captions"),
                n => format!(
                    "image {id}: `correct` is {}, past its {n} captions (counted from 0)",
                    set.correct
                ),
            })
        })?;
        // A distractor equal to the true caption could never be told from it.
        let mut first_of = HashMap::new();
        for (i, c) in set.captions.iter().enumerate() {
            if c.trim().is_empty() {
                return Err(fail(format!("image {id}: caption {i} is empty")));
            }
            if let Some(j) = first_of.insert(c.as_str(), i) {
                return Err(fail(format!("image {id}: caption {i} repeats caption {j}")));
            }
        }
        questions.push(Question {
            id: id.clone(),
            image_id: id.clone(),
            text: caption.clone(),
            truth: GroundTruth::Scores(Default::default()),
        });
        let set = CaptionSet {
            file: dir.join(&set.file),
            captions: set.captions,
            correct: set.correct,
        };
        if sets_by_id.insert(id.clone(), set).is_some() {
            return Err(fail(format!("image {id} appears twice")));
        }
    }
    if questions.is_empty() {
        return Err(fail("it holds no caption set".into()));
    }
    // An image given twice would take the later set's file for both: refused, by its id.
    Ok((
        finish(path.display().to_string(), questions, FLAG, path)?,
        sets_by_id,
    ))
}

impl<B: Backend> EvalModel for ClipSession<B> {
    type Input = PairRequest;

    fn explain(
        &self,
        inputs: &[&PairRequest],
        methods: &[Method],
        opts: &MethodOptions,
        // CLIP explains its pair score; `check_plan` refuses any other target.
        _: &VqaTarget,
    ) -> Result<Vec<Explained>, EvalError> {
        let pairs: Vec<PairRequest> = inputs.iter().map(|&p| p.clone()).collect();
        Ok(self
            .explain_batch(&pairs, methods, opts)?
            .into_iter()
            .map(|r| Explained {
                predicted: None,
                explanations: r.explanations,
            })
            .collect())
    }

    /// CLIP has no answer to perturb: it is scored against ground truth only.
    fn answering(&self) -> Option<&dyn Answering<PairRequest>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(json: &str) -> Result<(Dataset, HashMap<String, CaptionSet>), EvalError> {
        let path = std::env::temp_dir().join(format!(
            "fiedler-captions-{}-{}.json",
            std::process::id(),
            crate::hash::fnv1a(&[json.as_bytes()])
        ));
        std::fs::write(&path, json).unwrap();
        let read = read_captions(&path);
        std::fs::remove_file(&path).unwrap();
        read
    }

    /// The true caption of each set becomes its image's question; sets that name no true
    /// caption, and files with no set, are refused in words.
    #[test]
    fn caption_sets_give_their_true_captions_and_bad_sets_are_named() {
        let (dataset, sets) = read(
            r#"[{"image_id": 3, "file": "images/a.png", "correct": 1, "captions": ["x", "y"]}]"#,
        )
        .unwrap();
        assert_eq!(dataset.questions.len(), 1);
        assert_eq!(dataset.questions[0].text, "y");
        assert!(sets["3"].file.ends_with("images/a.png"));
        assert_eq!(
            (&sets["3"].captions[..], sets["3"].correct),
            (&["x".to_owned(), "y".to_owned()][..], 1)
        );
        for (json, says) in [
            (
                r#"[{"image_id": 3, "file": "a.png", "correct": 0, "captions": []}]"#,
                "image 3 has no captions",
            ),
            (
                r#"[{"image_id": 3, "file": "a.png", "correct": 2, "captions": ["x", "y"]}]"#,
                "image 3: `correct` is 2, past its 2 captions (counted from 0)",
            ),
            (
                r#"[{"image_id": 3, "file": "a.png", "correct": 0, "captions": ["x", "y", "x"]}]"#,
                "image 3: caption 2 repeats caption 0",
            ),
            (
                r#"[{"image_id": 3, "file": "a.png", "correct": 0, "captions": ["x", " "]}]"#,
                "image 3: caption 1 is empty",
            ),
            ("[]", "it holds no caption set"),
            (
                r#"[{"image_id": 3, "file": "a.png", "correct": 0, "captions": ["x"]},
                    {"image_id": 3, "file": "b.png", "correct": 0, "captions": ["y"]}]"#,
                ".json: image 3 appears twice",
            ),
            (
                r#"[{"image": "a.png", "correct": 0, "captions": ["x"]}]"#,
                "not a fiedler synth captions.json: missing field `image_id`",
            ),
        ] {
            let err = read(json).unwrap_err().to_string();
            assert!(err.contains(says), "{json}: {err}");
        }
    }
}
