//! Ground-truth scores of explanations on a `fiedler synth` set (docs/synth.md): per sample ×
//! method, from the explanation pass alone, the pointing game and relevance mass on the objects
//! the question is about (ViLT: the patch grid against the instance mask; LXMERT: the regions
//! cut around those objects) and the rank of the best relevant question word. The scoring
//! itself is [`crate::synth::metrics`]; this module reads `ground_truth.json`, finds each
//! question's objects and words, and adds what the same scores would be by chance.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::eval::dataset::Question;
use crate::eval::results::GroundTruthRecord;
use crate::eval::EvalError;
use crate::explain::Explanation;
use crate::input::json::without_bom;
use crate::input::text::TextTokenizer;
use crate::synth::metrics::{
    mass_in_mask, patch_overlap, pointing_game, region_object_overlap, relevant_word_rank,
    span_words, ObjectMask,
};

/// What the model's image units are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageUnits {
    /// A patch grid over the whole image (ViLT), scored against the instance mask.
    Patches,
    /// The regions of the set's regions file, in file order (LXMERT).
    Regions,
}

#[derive(Deserialize)]
struct TruthFile {
    images: Vec<ImageTruth>,
    questions: Vec<QuestionTruth>,
}

#[derive(Deserialize)]
struct ImageTruth {
    image_id: u64,
    mask_file: String,
    objects: Vec<ObjectTruth>,
    region_objects: Vec<Option<usize>>,
}

#[derive(Deserialize)]
struct ObjectTruth {
    id: usize,
    /// What the true caption calls it: "{color} {shape}".
    #[serde(default)]
    color: Option<String>,
    #[serde(default)]
    shape: Option<String>,
}

#[derive(Deserialize)]
struct QuestionTruth {
    question_id: u64,
    image_id: u64,
    /// The question's text: a dataset's question of the same id must read the same (its
    /// relevant words are positions in it).
    #[serde(default)]
    question: Option<String>,
    relevant_objects: Vec<usize>,
    relevant_words: Vec<usize>,
}

fn read(path: &Path) -> Result<TruthFile, EvalError> {
    let fail = |reason: String| EvalError::GroundTruth {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    let file: TruthFile = serde_json::from_str(without_bom(&text))
        .map_err(|e| fail(format!("not a fiedler synth ground_truth.json: {e}")))?;
    // An id given twice would have its last truth win, unsaid.
    let mut images = HashSet::new();
    if let Some(im) = file.images.iter().find(|im| !images.insert(im.image_id)) {
        return Err(fail(format!("image {} appears twice", im.image_id)));
    }
    let mut questions = HashSet::new();
    if let Some(q) = file
        .questions
        .iter()
        .find(|q| !questions.insert(q.question_id))
    {
        return Err(fail(format!("question {} appears twice", q.question_id)));
    }
    Ok(file)
}

/// An instance mask (0 background, k + 1 object k).
struct Mask {
    labels: Vec<u8>,
    width: usize,
    height: usize,
}

/// The ground truth of the questions under evaluation.
pub struct SynthTruth {
    path: PathBuf,
    units: ImageUnits,
    questions: HashMap<String, QuestionTruth>,
    region_objects: HashMap<u64, Vec<Option<usize>>>,
    /// Instance masks by image id (patch units only).
    masks: HashMap<u64, Mask>,
}

impl SynthTruth {
    /// Reads `path` (a `ground_truth.json`) for `questions`, each of which it must cover, with
    /// the same image; loads the instance masks those questions need (patch units).
    pub fn open(
        path: &Path,
        questions: &[&Question],
        units: ImageUnits,
    ) -> Result<Self, EvalError> {
        let file = read(path)?;
        let by_id = file
            .questions
            .into_iter()
            .map(|q| (q.question_id.to_string(), q))
            .collect();
        Self::select(path, file.images, by_id, questions, units)
    }

    /// For CLIP's true captions (`Question::id` = the image id): a caption names every object
    /// of its image, so all are relevant; no word is singled out (no word rank).
    pub fn for_captions(path: &Path, captions: &[&Question]) -> Result<Self, EvalError> {
        let file = read(path)?;
        // A true caption names every object of its image: one that does not is another
        // set's caption (the masks would score it against other objects).
        for q in captions {
            let Some(image) = file
                .images
                .iter()
                .find(|im| im.image_id.to_string() == q.id)
            else {
                // A caption's question id is its image's.
                return Err(EvalError::GroundTruth {
                    path: path.to_path_buf(),
                    reason: format!("no ground truth for image {}", q.id),
                });
            };
            let named = |o: &ObjectTruth| match (&o.color, &o.shape) {
                (Some(color), Some(shape)) => Some(format!("{color} {shape}")),
                _ => None,
            };
            if let Some(missing) = image
                .objects
                .iter()
                .filter_map(named)
                .find(|n| !q.text.contains(n.as_str()))
            {
                return Err(EvalError::GroundTruth {
                    path: path.to_path_buf(),
                    reason: format!(
                        "image {} has an object {missing:?} there, which its caption {:?} does not name (the ground truth of another set?)",
                        q.id, q.text
                    ),
                });
            }
        }
        let by_id = file
            .images
            .iter()
            .map(|im| {
                let truth = QuestionTruth {
                    question_id: im.image_id,
                    image_id: im.image_id,
                    question: None,
                    relevant_objects: im.objects.iter().map(|o| o.id).collect(),
                    relevant_words: Vec::new(),
                };
                (im.image_id.to_string(), truth)
            })
            .collect();
        Self::select(path, file.images, by_id, captions, ImageUnits::Patches)
    }

    /// Keeps the truth of `questions` (each must have one, about the same image) and loads
    /// what their scores need.
    fn select(
        path: &Path,
        images: Vec<ImageTruth>,
        mut by_id: HashMap<String, QuestionTruth>,
        questions: &[&Question],
        units: ImageUnits,
    ) -> Result<Self, EvalError> {
        let fail = |reason: String| EvalError::GroundTruth {
            path: path.to_path_buf(),
            reason,
        };
        let images: HashMap<u64, ImageTruth> =
            images.into_iter().map(|im| (im.image_id, im)).collect();
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut kept = HashMap::new();
        let mut region_objects = HashMap::new();
        let mut masks = HashMap::new();
        for q in questions {
            let Some(truth) = by_id.remove(&q.id) else {
                if kept.contains_key(&q.id) {
                    continue;
                }
                return Err(fail(format!("no ground truth for question {}", q.id)));
            };
            if truth.image_id.to_string() != q.image_id {
                return Err(fail(format!(
                    "question {} is about image {} there, image {} in the dataset",
                    q.id, truth.image_id, q.image_id
                )));
            }
            if let Some(text) = truth.question.as_ref().filter(|t| **t != q.text) {
                return Err(fail(format!(
                    "question {} reads {text:?} there, {:?} in the dataset (the ground truth of another set?)",
                    q.id, q.text
                )));
            }
            let image = images.get(&truth.image_id).ok_or_else(|| {
                fail(format!(
                    "question {} names image {}, which it lacks",
                    q.id, truth.image_id
                ))
            })?;
            region_objects
                .entry(image.image_id)
                .or_insert_with(|| image.region_objects.clone());
            if units == ImageUnits::Patches && !masks.contains_key(&image.image_id) {
                let file = dir.join(&image.mask_file);
                let luma = image::open(&file)
                    .map_err(|e| fail(format!("mask {}: {e}", file.display())))?
                    .to_luma8();
                let (width, height) = (luma.width() as usize, luma.height() as usize);
                masks.insert(
                    image.image_id,
                    Mask {
                        labels: luma.into_raw(),
                        width,
                        height,
                    },
                );
            }
            kept.insert(q.id.clone(), truth);
        }
        Ok(Self {
            path: path.to_path_buf(),
            units,
            questions: kept,
            region_objects,
            masks,
        })
    }

    /// Scores one explanation of question `q`, tokenized by `tokenizer`.
    pub fn score(
        &self,
        q: &Question,
        e: &Explanation,
        tokenizer: &TextTokenizer,
    ) -> Result<GroundTruthRecord, EvalError> {
        let spans = tokenizer
            .token_spans(&q.text)
            .map_err(|e| EvalError::Session(e.into()))?;
        self.score_words(q, e, &span_words(&q.text, &spans))
    }

    /// Scores one explanation of question `q` whose tokens belong to `words` (see
    /// [`span_words`]).
    fn score_words(
        &self,
        q: &Question,
        e: &Explanation,
        words: &[Option<usize>],
    ) -> Result<GroundTruthRecord, EvalError> {
        let truth = self
            .questions
            .get(&q.id)
            .ok_or_else(|| EvalError::GroundTruth {
                path: self.path.clone(),
                reason: format!("no ground truth for question {}", q.id),
            })?;
        let overlap = match self.units {
            ImageUnits::Patches => {
                let m = &self.masks[&truth.image_id];
                let mask = ObjectMask {
                    labels: &m.labels,
                    width: m.width,
                    height: m.height,
                    relevant: &truth.relevant_objects,
                };
                let (rows, cols) = e.image_grid;
                patch_overlap(&mask, rows, cols)?
            }
            ImageUnits::Regions => {
                let objects = &self.region_objects[&truth.image_id];
                if objects.len() != e.image_relevance.len() {
                    return Err(EvalError::GroundTruth {
                        path: self.path.clone(),
                        reason: format!(
                            "image {}: its region_objects name {} regions, and the model read \
                             {} (the ground truth of other region features?)",
                            truth.image_id,
                            objects.len(),
                            e.image_relevance.len()
                        ),
                    });
                }
                region_object_overlap(objects, &truth.relevant_objects)
            }
        };
        let word_count = words.iter().flatten().max().map_or(0, |&w| w + 1);
        let word_rank = relevant_word_rank(&e.text_relevance, words, &truth.relevant_words)?;
        let units = overlap.len().max(1) as f64;
        let on_target = overlap.iter().filter(|&&o| o > 0.0).count() as f64;
        let in_view = on_target > 0.0;
        Ok(GroundTruthRecord {
            sample: q.id.clone(),
            method: e.method.name().to_owned(),
            pointing: pointing_game(&e.image_relevance, &overlap)?,
            mass: mass_in_mask(&e.image_relevance, &overlap)?,
            word_rank,
            words: word_count,
            chance_pointing: in_view.then(|| on_target / units),
            chance_mass: in_view
                .then(|| overlap.iter().map(|&o| f64::from(o)).sum::<f64>() / units),
            // The best of r relevant words among w, in random order, ranks (w + 1) / (r + 1).
            chance_word_rank: word_rank
                .map(|_| (word_count as f64 + 1.0) / (truth.relevant_words.len() as f64 + 1.0)),
            retrieved: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::answers::GroundTruth as Answers;
    use crate::explain::Method;

    fn question(id: &str, image: &str) -> Question {
        Question {
            id: id.into(),
            image_id: image.into(),
            text: "what color is the circle?".into(),
            truth: Answers::Scores(Default::default()),
        }
    }

    #[test]
    fn regions_score_against_their_objects() {
        let dir = std::env::temp_dir().join(format!("fiedler-gt-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ground_truth.json");
        std::fs::write(
            &path,
            r#"{"seed": 1, "images": [{"image_id": 3, "mask_file": "none.png", "objects": [{"id": 0}, {"id": 1}], "region_objects": [null, 1, 0]}],
               "questions": [{"question_id": 3000, "image_id": 3, "question": "what color is the circle?", "relevant_objects": [0], "relevant_words": [4]},
                             {"question_id": 3001, "image_id": 3, "relevant_objects": [], "relevant_words": []}]}"#,
        )
        .unwrap();
        let q = question("3000", "3");
        let truth = SynthTruth::open(&path, &[&q], ImageUnits::Regions).unwrap();
        // [CLS] what color is the circle ? [SEP]
        let words = [
            None,
            Some(0),
            Some(1),
            Some(2),
            Some(3),
            Some(4),
            None,
            None,
        ];
        let e = Explanation {
            method: Method::RawAttn,
            score: 0.0,
            image_relevance: vec![0.5, 0.1, 0.4],
            image_grid: (1, 3),
            text_relevance: vec![0.0, 0.1, 0.5, 0.2, 0.0, 0.3, 0.0, 0.0],
            text_scored: vec![true; 8],
            degenerate_graphs: vec![],
        };
        let r = truth.score_words(&q, &e, &words).unwrap();
        // the top region is background; 0.4 of 1.0 is on object 0; "circle" ranks 2nd of 5
        assert_eq!(r.pointing, Some(0.0));
        assert!((r.mass.unwrap() - 0.4).abs() < 1e-6);
        assert_eq!((r.word_rank, r.words), (Some(2.0), 5));
        assert_eq!(r.chance_pointing, Some(1.0 / 3.0));
        assert_eq!(r.chance_word_rank, Some(3.0));

        // Relevance over other regions than the ground truth's is refused by image.
        let four = Explanation {
            image_relevance: vec![0.5, 0.1, 0.4, 0.0],
            image_grid: (1, 4),
            ..e.clone()
        };
        let err = truth
            .score_words(&q, &four, &words)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("image 3: its region_objects name 3 regions, and the model read 4"),
            "{err}"
        );

        let other = question("3001", "3");
        let truth = SynthTruth::open(&path, &[&other], ImageUnits::Regions).unwrap();
        let r = truth.score_words(&other, &e, &words).unwrap();
        assert_eq!((r.pointing, r.mass, r.word_rank), (None, None, None));

        let wrong_image = question("3000", "4");
        assert!(matches!(
            SynthTruth::open(&path, &[&wrong_image], ImageUnits::Regions),
            Err(EvalError::GroundTruth { .. })
        ));
        // the same id asking something else: another set's ground truth
        let reworded = Question {
            text: "what shape is the blue object?".into(),
            ..question("3000", "3")
        };
        let err = SynthTruth::open(&path, &[&reworded], ImageUnits::Regions)
            .err()
            .expect("a question of another set is refused")
            .to_string();
        assert!(
            err.contains("reads \"what color is the circle?\" there"),
            "{err}"
        );
        let missing = question("5000", "3");
        assert!(SynthTruth::open(&path, &[&missing], ImageUnits::Regions).is_err());
        // An id given twice is refused, not read as its last truth.
        let text = std::fs::read_to_string(&path).unwrap();
        for (twice, needle) in [
            (text.replace("3001", "3000"), "question 3000 appears twice"),
            (
                text.replace(r#""images": ["#, r#""images": [{"image_id": 3, "mask_file": "m.png", "objects": [], "region_objects": []}, "#),
                "image 3 appears twice",
            ),
        ] {
            let doubled = dir.join("doubled.json");
            std::fs::write(&doubled, twice).unwrap();
            let err = SynthTruth::open(&doubled, &[&q], ImageUnits::Regions)
                .err()
                .unwrap()
                .to_string();
            assert!(err.contains(needle), "{err}");
        }
        // a caption is about every object of its image, and needs the (missing) mask
        let caption = question("3", "3");
        assert!(SynthTruth::for_captions(&path, &[&caption]).is_err());
        // A caption's id is its image's, and is named as one.
        let unknown = question("9", "9");
        let err = SynthTruth::for_captions(&path, &[&unknown])
            .err()
            .unwrap()
            .to_string();
        assert!(err.ends_with("no ground truth for image 9"), "{err}");
        // patches need the (missing) mask file
        assert!(SynthTruth::open(&path, &[&q], ImageUnits::Patches).is_err());
        // a caption that does not name its image's objects is another set's
        let named = dir.join("named.json");
        std::fs::write(
            &named,
            r#"{"seed": 1, "images": [{"image_id": 3, "mask_file": "none.png", "objects": [{"id": 0, "color": "red", "shape": "circle"}], "region_objects": []}], "questions": []}"#,
        )
        .unwrap();
        let other = Question {
            text: "a blue square".into(),
            ..question("3", "3")
        };
        let err = SynthTruth::for_captions(&named, &[&other])
            .err()
            .expect("another set's caption is refused")
            .to_string();
        assert!(err.contains("\"red circle\" there"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
