//! Question files: LXMERT's JSON (`[{"question_id", "img_id", "sent", "label": {answer:
//! score}}]`, spec §E) and the official VQA v2 pair (questions JSON + annotations JSON).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::error::Category;
use serde_json::Value;

use crate::eval::answers::GroundTruth;
use crate::eval::EvalError;
use crate::input::json::without_bom;

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

/// The text of the question file `flag` gave.
pub(crate) fn read_text(flag: &'static str, path: &Path) -> Result<String, EvalError> {
    fs::read_to_string(path).map_err(|e| match e.kind() {
        ErrorKind::NotFound => bad(flag, path, "no such file".into()),
        _ => bad(flag, path, e.to_string()),
    })
}

/// The question file `flag` gave, parsed as `T` (what `expected` describes). The file is read
/// straight into `T`: a tree of VQA v2's 170 MB annotations file took 2.4 GB. Only a file of
/// another shape is parsed again as a tree, for `recognise` to say what it is instead.
fn read_json<T: DeserializeOwned>(
    flag: &'static str,
    path: &Path,
    expected: &str,
    recognise: impl Fn(&Value) -> Option<String>,
) -> Result<T, EvalError> {
    let text = read_text(flag, path)?;
    let text = without_bom(&text);
    serde_json::from_str(text).map_err(|e| {
        let reason = match e.classify() {
            Category::Data => match serde_json::from_str::<Value>(text) {
                Ok(json) => recognise(&json).unwrap_or_else(|| format!("expected {expected}: {e}")),
                Err(syntax) => format!("not valid JSON: {syntax}"),
            },
            _ => format!("not valid JSON: {e}"),
        };
        bad(flag, path, reason)
    })
}

/// What is wrong with the question file `flag` gave.
pub(crate) fn bad(flag: &'static str, path: &Path, reason: String) -> EvalError {
    EvalError::Dataset {
        flag,
        path: path.to_path_buf(),
        reason,
    }
}

/// A JSON id (a string, or a whole number of 64 bits: a larger one reads as a float, which
/// would name another id) as text.
fn id_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) if !n.is_f64() => Some(n.to_string()),
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
    const FLAG: &str = "--dataset";
    let fail = |reason: String| bad(FLAG, path, reason);
    let items: Vec<LxmertItem> = read_json(
        FLAG,
        path,
        "a list of {\"question_id\", \"img_id\", \"sent\", \"label\"}",
        |json| {
            json.get("questions").map(|_| {
                "this is a VQA v2 questions file (an object with \"questions\"): give it with \
                 --questions, and its annotations with --annotations"
                    .into()
            })
        },
    )?;
    let questions = items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let id = match &item.question_id {
                None => i.to_string(),
                Some(v) => id_text(v)
                    .ok_or_else(|| fail(format!("item {i}: question_id {v} is not an id (a string, or a whole number below 2^64)")))?,
            };
            let image_id = id_text(&item.img_id)
                .ok_or_else(|| fail(format!("item {i}: img_id {} is not an id (a string, or a whole number below 2^64)", item.img_id)))?;
            let label = item.label.ok_or_else(|| {
                fail(format!(
                    "question {id} has no \"label\" (a test split has no answers to score)"
                ))
            })?;
            check_scores(&label)
                .map_err(|reason| fail(format!("item {i} (question {id}): {reason}")))?;
            Ok(Question {
                id,
                image_id,
                text: item.sent,
                truth: GroundTruth::Scores(label),
            })
        })
        .collect::<Result<Vec<_>, EvalError>>()?;
    finish(path.display().to_string(), questions, FLAG, path)
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
    const QUESTIONS: &str = "--questions";
    const ANNOTATIONS: &str = "--annotations";
    let q: VqaQuestions = read_json(
        QUESTIONS,
        questions,
        "{\"questions\": [{\"question_id\", \"image_id\", \"question\"}]}",
        |_| None,
    )?;
    let a: VqaAnnotations = read_json(
        ANNOTATIONS,
        annotations,
        "{\"annotations\": [{\"question_id\", \"image_id\", \"answers\": [{\"answer\"}]}]}",
        |_| None,
    )?;
    let mut by_id: HashMap<u64, VqaAnnotation> = HashMap::with_capacity(a.annotations.len());
    for ann in a.annotations {
        let id = ann.question_id;
        if by_id.insert(id, ann).is_some() {
            return Err(bad(
                ANNOTATIONS,
                annotations,
                format!("question {id} is annotated twice"),
            ));
        }
    }
    let mut out = Vec::with_capacity(q.questions.len());
    let mut seen = HashSet::with_capacity(q.questions.len());
    for question in q.questions {
        let id = question.question_id;
        // Before its annotation is looked up: the first copy took it.
        if !seen.insert(id) {
            return Err(bad(
                QUESTIONS,
                questions,
                format!("question id {id} appears twice"),
            ));
        }
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
            return Err(bad(
                ANNOTATIONS,
                annotations,
                format!("question {id} has no answers"),
            ));
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
    finish(source, out, QUESTIONS, questions)
}

/// The dataset of `questions`, from the file `flag` gave, refused when empty or when a
/// question id appears twice.
pub(crate) fn finish(
    source: String,
    questions: Vec<Question>,
    flag: &'static str,
    path: &Path,
) -> Result<Dataset, EvalError> {
    if questions.is_empty() {
        return Err(EvalError::EmptyDataset {
            flag,
            path: path.to_path_buf(),
        });
    }
    let mut seen = HashSet::with_capacity(questions.len());
    if let Some(q) = questions.iter().find(|q| !seen.insert(q.id.as_str())) {
        return Err(bad(
            flag,
            path,
            format!("question id {} appears twice", q.id),
        ));
    }
    Ok(Dataset { source, questions })
}

/// Where a question's image (ViLT) or region features (LXMERT) are: a file name pattern in a
/// folder, `{id}` standing for the image id and `{id:0N}` for a numeric id zero-padded to N
/// digits (`{id:012}`: COCO's names). Several patterns are tried in turn.
#[derive(Debug, Clone)]
pub struct FilePattern {
    dir: PathBuf,
    patterns: Vec<Pattern>,
}

/// One pattern as given and as parsed.
#[derive(Debug, Clone)]
struct Pattern {
    text: String,
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    /// `{id}`
    Id,
    /// `{id:0N}`: the id as a number, zero-padded to this many digits.
    Padded(usize),
}

/// The widest `{id:0N}`: a longer name is no file name.
const MAX_WIDTH: usize = 255;

/// What the patterns give one image id.
#[derive(Debug, Clone, PartialEq)]
pub struct Names {
    /// In pattern order.
    pub names: Vec<String>,
    /// The patterns with `{id:0N}`, which give no name when the id is not a number.
    pub not_numeric: Vec<String>,
}

impl Names {
    /// The error for an image none of whose names was found; `tried` says where they were
    /// looked for (used when there are any).
    pub fn missing(&self, image_id: &str, tried: String) -> EvalError {
        let mut searched = Vec::new();
        if !self.names.is_empty() {
            searched.push(format!("tried {tried}"));
        }
        if !self.not_numeric.is_empty() {
            let verb = if self.not_numeric.len() == 1 {
                "needs"
            } else {
                "need"
            };
            searched.push(format!(
                "{} {verb} a numeric image id",
                self.not_numeric.join(", ")
            ));
        }
        EvalError::MissingInput {
            image_id: image_id.to_owned(),
            searched: searched.join("; "),
        }
    }
}

impl FilePattern {
    /// Parses `patterns` for files in `dir`, refusing placeholders other than `{id}` and
    /// `{id:0N}` (which would otherwise be taken as part of the name, and every file missed).
    pub fn new(dir: &Path, patterns: &[String]) -> Result<Self, EvalError> {
        let patterns = patterns
            .iter()
            .map(|text| {
                Ok(Pattern {
                    text: text.clone(),
                    parts: parse(text).map_err(|reason| EvalError::FilePattern {
                        pattern: text.clone(),
                        reason,
                    })?,
                })
            })
            .collect::<Result<_, EvalError>>()?;
        Ok(Self {
            dir: dir.to_path_buf(),
            patterns,
        })
    }

    /// The names the patterns give `image_id`, in order.
    pub fn names(&self, image_id: &str) -> Names {
        let mut names = Names {
            names: Vec::new(),
            not_numeric: Vec::new(),
        };
        for p in &self.patterns {
            match expand(&p.parts, image_id) {
                Some(name) => names.names.push(name),
                None => names.not_numeric.push(p.text.clone()),
            }
        }
        names
    }

    /// Refuses patterns that give none of these image ids a name (`{id:0N}` alone, ids that
    /// are not numbers): every sample would fail.
    pub fn check_fits<'a>(
        &self,
        image_ids: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), EvalError> {
        let mut ids = image_ids.into_iter().peekable();
        let Some(&example) = ids.peek() else {
            return Ok(());
        };
        if ids.all(|id| self.names(id).names.is_empty()) {
            let texts: Vec<&str> = self.patterns.iter().map(|p| p.text.as_str()).collect();
            return Err(EvalError::FilePattern {
                pattern: texts.join(", "),
                reason: format!(
                    "{{id:0N}} zero-pads numeric image ids, and none of the questions' image \
                     ids is a number (e.g. {example}); use {{id}}"
                ),
            });
        }
        Ok(())
    }

    /// The first existing file for `image_id`, or an error listing what was tried.
    pub fn find(&self, image_id: &str) -> Result<PathBuf, EvalError> {
        let names = self.names(image_id);
        let tried: Vec<PathBuf> = names.names.iter().map(|n| self.dir.join(n)).collect();
        tried.iter().find(|p| p.is_file()).cloned().ok_or_else(|| {
            let shown: Vec<String> = tried.iter().map(|p| p.display().to_string()).collect();
            names.missing(image_id, shown.join(", "))
        })
    }
}

/// The parts of a pattern; an error names a placeholder other than `{id}` and `{id:0N}`.
fn parse(pattern: &str) -> Result<Vec<Part>, String> {
    let mut parts = Vec::new();
    let mut rest = pattern;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            parts.push(Part::Text(rest[..open].to_owned()));
        }
        let Some(len) = rest[open..].find('}') else {
            return Err(format!("{{ at {:?} is not closed", &rest[open..]));
        };
        parts.push(placeholder(&rest[open + 1..open + len])?);
        rest = &rest[open + len + 1..];
    }
    if !rest.is_empty() {
        parts.push(Part::Text(rest.to_owned()));
    }
    if parts.iter().all(|p| matches!(p, Part::Text(_))) {
        return Err("it has no {id}: every image would be read from this one file".into());
    }
    Ok(parts)
}

fn placeholder(inner: &str) -> Result<Part, String> {
    if inner == "id" {
        return Ok(Part::Id);
    }
    let unknown = || {
        format!(
            "unknown placeholder {{{inner}}}; the placeholders are {{id}} (the image id) and \
             {{id:0N}} (a numeric id zero-padded to N digits, e.g. {{id:012}})"
        )
    };
    let digits = inner
        .strip_prefix("id:0")
        .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(unknown)?;
    match digits.parse::<usize>() {
        Ok(width) if width <= MAX_WIDTH => Ok(Part::Padded(width)),
        _ => Err(format!("{{{inner}}} pads to more than {MAX_WIDTH} digits")),
    }
}

/// The name `parts` give `image_id` (None when one is `{id:0N}` and the id is not a number).
fn expand(parts: &[Part], image_id: &str) -> Option<String> {
    let mut name = String::new();
    for part in parts {
        match part {
            Part::Text(text) => name.push_str(text),
            Part::Id => name.push_str(image_id),
            Part::Padded(width) => {
                let n: u64 = image_id.parse().ok()?;
                name.push_str(&format!("{n:0width$}"));
            }
        }
    }
    Some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patterns(texts: &[&str]) -> Result<FilePattern, EvalError> {
        let texts: Vec<String> = texts.iter().map(|t| (*t).to_owned()).collect();
        FilePattern::new(Path::new("dir"), &texts)
    }

    /// A scratch folder of one test, and a function writing a named file of text there.
    fn scratch(test: &str) -> (PathBuf, impl Fn(&str, &str) -> PathBuf) {
        let dir = std::env::temp_dir().join(format!("fiedler-{test}-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let at = dir.clone();
        let write = move |name: &str, text: &str| {
            let path = at.join(name);
            fs::write(&path, text).unwrap();
            path
        };
        (dir, write)
    }

    /// An LXMERT question file read through a byte order mark; ids past 64 bits (read as
    /// floats, which named neither id), a VQA v2 questions file, a file of another shape and
    /// broken JSON are refused with what to do.
    #[test]
    fn lxmert_files_of_other_shapes_say_what_to_do() {
        let (dir, write) = scratch("dataset");
        let read = |name: &str, text: &str| read_lxmert_json(&write(name, text));
        let item = |id: &str| {
            format!(
                r#"{{"question_id": {id}, "img_id": "a", "sent": "what?", "label": {{"yes": 1}}}}"#
            )
        };
        let data = read("bom.json", &format!("\u{feff}[{}]", item("7"))).unwrap();
        assert_eq!(data.questions[0].id, "7");
        let huge = format!(
            "[{}, {}]",
            item("18446744073709551616"),
            item("18446744073709551617")
        );
        let err = read("huge.json", &huge).unwrap_err().to_string();
        assert!(
            err.contains("item 0: question_id 1.8446744073709552e+19 is not an id (a string, or a whole number below 2^64)"),
            "{err}"
        );
        let err = read("v2.json", r#"{"questions": []}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("this is a VQA v2 questions file"), "{err}");
        // Another shape says what was expected; broken JSON says so, even where an item of
        // another shape comes first (the typed read stops there).
        let err = read("object.json", r#"{"sent": "what?"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("expected a list of {\"question_id\""), "{err}");
        let err = read("broken.json", r#"[{"sent": 1}, {"sent": "#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not valid JSON: EOF while parsing"), "{err}");
        fs::remove_dir_all(dir).unwrap();
    }

    /// A question of a VQA v2 file given twice is named as such (its second copy was said to
    /// have no annotation, the first having taken it).
    #[test]
    fn vqa_v2_questions_given_twice_are_named() {
        let (dir, write) = scratch("vqa2");
        let question = r#"{"question_id": 1000, "image_id": 1, "question": "what?"}"#;
        let questions = write(
            "q.json",
            &format!(r#"{{"questions": [{question}, {question}]}}"#),
        );
        let annotations = write(
            "a.json",
            r#"{"annotations": [{"question_id": 1000, "image_id": 1, "answers": [{"answer": "yes"}]}]}"#,
        );
        let err = read_vqa_v2(&questions, &annotations)
            .unwrap_err()
            .to_string();
        assert!(err.ends_with("question id 1000 appears twice"), "{err}");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn patterns_expand_coco_names() {
        let coco = patterns(&["COCO_val2014_{id:012}.jpg", "{id}.jpg", "x{id:04}_{id}"]).unwrap();
        assert_eq!(
            coco.names("393267").names,
            [
                "COCO_val2014_000000393267.jpg",
                "393267.jpg",
                "x393267_393267"
            ]
        );
        assert_eq!(coco.names("7").names[2], "x0007_7");
        let named = coco.names("COCO_val2014_000000393267");
        assert_eq!(named.names, ["COCO_val2014_000000393267.jpg"]);
        assert_eq!(
            named.not_numeric,
            ["COCO_val2014_{id:012}.jpg", "x{id:04}_{id}"]
        );
    }

    /// A placeholder other than {id} and {id:0N} is refused, not used as text, and so is a
    /// pattern with none (one file for every image).
    #[test]
    fn unknown_placeholders_are_refused() {
        for (pattern, needle) in [
            ("x_{idx}.png", "unknown placeholder {idx}"),
            ("{ID}.png", "unknown placeholder {ID}"),
            ("{id:12}.png", "unknown placeholder {id:12}"),
            ("{id:0x}.png", "unknown placeholder {id:0x}"),
            ("{}.png", "unknown placeholder {}"),
            ("regions_1.safetensors", "has no {id}"),
            ("{id.png", "is not closed"),
            ("{id:09999}", "more than 255 digits"),
        ] {
            let err = patterns(&["{id}.png", pattern]).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("--file-pattern {pattern}: ")),
                "{err}"
            );
            assert!(err.contains(needle), "{pattern}: {err}");
        }
    }

    /// An id {id:0N} cannot pad is named in the error, beside what the other patterns tried.
    #[test]
    fn a_missing_file_says_which_patterns_need_numbers() {
        let both = patterns(&["{id:012}.png", "{id}.png"]).unwrap();
        let err = both.find("synth_000001").unwrap_err().to_string();
        assert!(
            err.contains(&format!(
                "(tried {}; {{id:012}}.png needs a numeric image id)",
                Path::new("dir/synth_000001.png").display()
            )),
            "{err}"
        );
        let numeric = patterns(&["{id:012}.png"]).unwrap();
        let err = numeric.find("synth_000001").unwrap_err().to_string();
        assert!(
            err.contains("({id:012}.png needs a numeric image id)"),
            "{err}"
        );
        assert!(!err.contains("tried"), "{err}");
        // …and when it fits no image at all, the run is refused before it starts
        let err = numeric
            .check_fits(["synth_000001", "synth_000002"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("none of the questions' image ids is a number (e.g. synth_000001)"),
            "{err}"
        );
        numeric.check_fits(["synth_000001", "42"]).unwrap();
        both.check_fits(["synth_000001"]).unwrap();
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
