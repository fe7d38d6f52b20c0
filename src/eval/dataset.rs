//! Question files: LXMERT's JSON (`[{"question_id", "img_id", "sent", "label": {answer:
//! score}}]`, spec §E) and the official VQA v2 pair (questions JSON + annotations JSON).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::eval::answers::GroundTruth;
use crate::eval::EvalError;

/// One question about one image.
#[derive(Debug, Clone, PartialEq)]
pub struct Question {
    /// The question id (LXMERT files without one: the item's index).
    pub id: String,
    /// The image id as the file names it: LXMERT's `img_id` ("COCO_val2014_000000393267"),
    /// or VQA's numeric `image_id`.
    pub image_id: String,
    pub text: String,
    pub truth: GroundTruth,
}

/// A whole question file.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Where it came from, for the results header.
    pub source: String,
    pub questions: Vec<Question>,
}

fn read_json(path: &Path) -> Result<Value, EvalError> {
    let text = fs::read_to_string(path).map_err(|e| EvalError::Dataset {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    serde_json::from_str(&text).map_err(|e| EvalError::Dataset {
        path: path.to_path_buf(),
        reason: format!("not valid JSON: {e}"),
    })
}

fn bad(path: &Path, reason: String) -> EvalError {
    EvalError::Dataset {
        path: path.to_path_buf(),
        reason,
    }
}

/// A JSON id (number or string) as text.
fn id_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[derive(Deserialize)]
struct LxmertItem {
    #[serde(default)]
    question_id: Option<Value>,
    img_id: Value,
    sent: String,
    #[serde(default)]
    label: Option<BTreeMap<String, f64>>,
}

/// Reads an LXMERT-format file (e.g. `data/vqa/valid.json`).
pub fn read_lxmert_json(path: &Path) -> Result<Dataset, EvalError> {
    let items: Vec<LxmertItem> = serde_json::from_value(read_json(path)?).map_err(|e| {
        bad(
            path,
            format!("expected a list of {{\"question_id\", \"img_id\", \"sent\", \"label\"}}: {e}"),
        )
    })?;
    let questions = items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let id = match &item.question_id {
                None => i.to_string(),
                Some(v) => id_text(v)
                    .ok_or_else(|| bad(path, format!("item {i}: question_id {v} is not an id")))?,
            };
            let image_id = id_text(&item.img_id).ok_or_else(|| {
                bad(
                    path,
                    format!("item {i}: img_id {} is not an id", item.img_id),
                )
            })?;
            let label = item.label.ok_or_else(|| {
                bad(
                    path,
                    format!(
                        "question {id} has no \"label\" (a test split has no answers to score)"
                    ),
                )
            })?;
            check_scores(&label)
                .map_err(|reason| bad(path, format!("item {i} (question {id}): {reason}")))?;
            Ok(Question {
                id,
                image_id,
                text: item.sent,
                truth: GroundTruth::Scores(label),
            })
        })
        .collect::<Result<Vec<_>, EvalError>>()?;
    finish(path.display().to_string(), questions, path)
}

/// Label scores are VQA accuracies: in [0, 1] (a NaN is not).
fn check_scores(label: &BTreeMap<String, f64>) -> Result<(), String> {
    match label.iter().find(|(_, s)| !(0.0..=1.0).contains(*s)) {
        Some((answer, score)) => Err(format!(
            "label {answer:?} has score {score}; a score is a VQA accuracy, in [0, 1]"
        )),
        None => Ok(()),
    }
}

#[derive(Deserialize)]
struct VqaQuestions {
    questions: Vec<VqaQuestion>,
}

#[derive(Deserialize)]
struct VqaQuestion {
    question_id: u64,
    image_id: u64,
    question: String,
}

#[derive(Deserialize)]
struct VqaAnnotations {
    annotations: Vec<VqaAnnotation>,
}

#[derive(Deserialize)]
struct VqaAnnotation {
    question_id: u64,
    image_id: u64,
    answers: Vec<VqaAnswer>,
}

#[derive(Deserialize)]
struct VqaAnswer {
    answer: String,
}

/// Reads the official VQA v2 questions and annotations files
/// (`v2_OpenEnded_mscoco_val2014_questions.json`, `v2_mscoco_val2014_annotations.json`); every
/// question needs its annotation with the same image, and the other way round.
pub fn read_vqa_v2(questions: &Path, annotations: &Path) -> Result<Dataset, EvalError> {
    let q: VqaQuestions = serde_json::from_value(read_json(questions)?).map_err(|e| {
        bad(
            questions,
            format!("expected {{\"questions\": [{{\"question_id\", \"image_id\", \"question\"}}]}}: {e}"),
        )
    })?;
    let a: VqaAnnotations = serde_json::from_value(read_json(annotations)?).map_err(|e| {
        bad(
            annotations,
            format!("expected {{\"annotations\": [{{\"question_id\", \"image_id\", \"answers\": [{{\"answer\"}}]}}]}}: {e}"),
        )
    })?;
    let mut by_id: HashMap<u64, VqaAnnotation> = HashMap::with_capacity(a.annotations.len());
    for ann in a.annotations {
        let id = ann.question_id;
        if by_id.insert(id, ann).is_some() {
            return Err(bad(
                annotations,
                format!("question {id} is annotated twice"),
            ));
        }
    }
    let mut out = Vec::with_capacity(q.questions.len());
    for question in q.questions {
        let id = question.question_id;
        let ann = by_id.remove(&id).ok_or_else(|| EvalError::Mismatch {
            questions: questions.to_path_buf(),
            annotations: annotations.to_path_buf(),
            reason: format!("question {id} has no annotation"),
        })?;
        if ann.image_id != question.image_id {
            return Err(EvalError::Mismatch {
                questions: questions.to_path_buf(),
                annotations: annotations.to_path_buf(),
                reason: format!(
                    "question {id} is about image {} but its annotation about image {}",
                    question.image_id, ann.image_id
                ),
            });
        }
        if ann.answers.is_empty() {
            return Err(bad(annotations, format!("question {id} has no answers")));
        }
        out.push(Question {
            id: id.to_string(),
            image_id: question.image_id.to_string(),
            text: question.question,
            truth: GroundTruth::Annotators(ann.answers.into_iter().map(|a| a.answer).collect()),
        });
    }
    if let Some(extra) = by_id.keys().min() {
        return Err(EvalError::Mismatch {
            questions: questions.to_path_buf(),
            annotations: annotations.to_path_buf(),
            reason: format!(
                "{} annotations have no question (e.g. question {extra})",
                by_id.len()
            ),
        });
    }
    let source = format!("{} + {}", questions.display(), annotations.display());
    finish(source, out, questions)
}

/// Rejects empty files and repeated question ids.
fn finish(source: String, questions: Vec<Question>, path: &Path) -> Result<Dataset, EvalError> {
    if questions.is_empty() {
        return Err(EvalError::EmptyDataset(path.to_path_buf()));
    }
    let mut seen = HashSet::with_capacity(questions.len());
    if let Some(q) = questions.iter().find(|q| !seen.insert(q.id.as_str())) {
        return Err(bad(path, format!("question id {} appears twice", q.id)));
    }
    Ok(Dataset { source, questions })
}

/// Where a question's image (ViLT) or region features (LXMERT) are: a file name pattern in a
/// folder, `{id}` standing for the image id and `{id:012}` for a numeric id zero-padded to
/// 12 digits (COCO's names). Several patterns are tried in turn.
#[derive(Debug, Clone)]
pub struct FilePattern {
    pub dir: PathBuf,
    pub patterns: Vec<String>,
}

impl FilePattern {
    /// The names the patterns give `image_id`, in order.
    pub fn names(&self, image_id: &str) -> Vec<String> {
        self.patterns
            .iter()
            .filter_map(|p| expand(p, image_id))
            .collect()
    }

    /// The first existing file for `image_id`, or an error listing what was tried.
    pub fn find(&self, image_id: &str) -> Result<PathBuf, EvalError> {
        let tried: Vec<PathBuf> = self
            .names(image_id)
            .into_iter()
            .map(|name| self.dir.join(name))
            .collect();
        tried
            .iter()
            .find(|p| p.is_file())
            .cloned()
            .ok_or_else(|| EvalError::MissingInput {
                image_id: image_id.to_owned(),
                tried: tried
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

/// `{id}` → the id; `{id:012}` → the numeric id zero-padded (None when it is not a number).
fn expand(pattern: &str, image_id: &str) -> Option<String> {
    if pattern.contains("{id:012}") {
        let n: u64 = image_id.parse().ok()?;
        return Some(pattern.replace("{id:012}", &format!("{n:012}")));
    }
    Some(pattern.replace("{id}", image_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_expand_coco_names() {
        assert_eq!(
            expand("COCO_val2014_{id:012}.jpg", "393267").as_deref(),
            Some("COCO_val2014_000000393267.jpg")
        );
        assert_eq!(expand("COCO_val2014_{id:012}.jpg", "abc"), None);
        assert_eq!(
            expand("{id}.jpg", "COCO_val2014_000000393267").as_deref(),
            Some("COCO_val2014_000000393267.jpg")
        );
    }

    /// Label scores are accuracies: outside [0, 1] (or NaN) the entry and answer are named.
    #[test]
    fn label_scores_outside_0_1_are_refused() {
        let label = |answer: &str, score: f64| {
            BTreeMap::from([("red".to_owned(), 0.3), (answer.to_owned(), score)])
        };
        assert!(check_scores(&label("blue", 1.0)).is_ok());
        assert!(check_scores(&label("blue", 0.0)).is_ok());
        for score in [2.5, -0.1, f64::NAN, f64::INFINITY] {
            let err = check_scores(&label("blue", score)).unwrap_err();
            assert!(err.contains("label \"blue\" has score"), "{err}");
            assert!(err.contains("in [0, 1]"), "{err}");
        }
        let dir = std::env::temp_dir().join(format!("fiedler-labels-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("valid.json");
        std::fs::write(
            &path,
            r#"[{"question_id": 1, "img_id": "a", "sent": "what?", "label": {"red": 1}},
                {"question_id": 7, "img_id": "b", "sent": "which?", "label": {"blue": 2.5}}]"#,
        )
        .unwrap();
        let err = read_lxmert_json(&path).unwrap_err().to_string();
        assert!(
            err.contains("item 1 (question 7): label \"blue\" has score 2.5"),
            "{err}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
