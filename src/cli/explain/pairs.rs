//! What `fiedler explain` explains, read from `--pairs` (a JSON Lines file, a sample per line)
//! or from --image, --text and --regions: the requests, each `--pairs` line checked as it is
//! read, and how an error about one input names its line.

use std::fs;
use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use super::{ExplainArgs, WHAT_TO_EXPLAIN};
use fiedler::input::json::{line_error, without_bom};
use fiedler::input::regions::is_obj36_tsv;
use fiedler::names::nearest;
use fiedler::session::{PairRequest, RegionRequest, SessionError};
use serde::de::DeserializeOwned;
use serde::Deserialize;

#[derive(Deserialize)]
struct PairLine {
    image: PathBuf,
    #[serde(alias = "question")]
    text: String,
    /// The answer a VQA model should give, shown beside the one it gave.
    #[serde(default, deserialize_with = "string_or_number")]
    answer: Option<String>,
}

/// A --pairs file, read once: it may be a pipe (`--pairs -`, `<(jq …)`), which gives its
/// lines once only.
pub(super) struct PairsFile {
    /// How messages name it: its path, or "standard input".
    pub(super) name: String,
    /// The folder relative paths are resolved against: the file's, or the current one for a
    /// pipe.
    base: PathBuf,
    /// Whether the lines come from a pipe (whose relative paths are the current folder's).
    piped: bool,
    text: String,
}

impl PairsFile {
    pub(super) fn read(path: &Path) -> anyhow::Result<Self> {
        if path == Path::new("-") {
            let stdin = std::io::stdin();
            // Typed at a terminal: say what is read, and how it ends, rather than wait silently.
            if stdin.is_terminal() {
                eprintln!(
                    "reading --pairs lines from standard input, one JSON object a line; end with \
                     Ctrl-D"
                );
            }
            let mut bytes = Vec::new();
            stdin
                .lock()
                .read_to_end(&mut bytes)
                .context("cannot read --pairs from standard input")?;
            let name = "standard input".to_owned();
            return Ok(Self {
                text: utf8(&name, bytes)?,
                name,
                base: PathBuf::new(),
                piped: true,
            });
        }
        let name = path.display().to_string();
        let bytes = fs::read(path).with_context(|| format!("cannot read --pairs file {name}"))?;
        let text = utf8(&name, bytes)?;
        // A pipe's folder (/dev/fd for `<(…)`) says nothing of where its paths are.
        let piped = !fs::metadata(path).is_ok_and(|m| m.is_file());
        let base = match piped {
            false => path.parent().unwrap_or(Path::new("")).to_path_buf(),
            true => PathBuf::new(),
        };
        Ok(Self {
            name,
            base,
            piped,
            text,
        })
    }

    /// That `path`, named by a line as `what`, is a file: checked as the lines are read, so
    /// the error names the line. A piped line's relative path is looked for in the current
    /// folder, which its author may not have meant: the error says so.
    fn check_file(&self, path: &Path, what: &str) -> anyhow::Result<()> {
        if path.is_file() {
            return Ok(());
        }
        if path.exists() {
            bail!("{what} {} is not a file", path.display());
        }
        let sought = match self.piped && path.is_relative() {
            true => std::env::current_dir().map_or_else(
                |_| " (a piped line's paths are read from the current folder)".into(),
                |here| {
                    format!(
                        " (a piped line's paths are read from the current folder, {})",
                        here.display()
                    )
                },
            ),
            false => String::new(),
        };
        bail!("{what} {} not found{sought}", path.display());
    }

    /// The lines that hold a sample, with their numbers (from 1): the non-blank ones, a byte
    /// order mark at a line's start skipped (Windows editors write one at the file's; files
    /// joined leave theirs inside).
    pub(super) fn sample_lines(&self) -> impl Iterator<Item = (usize, &str)> {
        self.text
            .lines()
            .map(without_bom)
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| (i + 1, l))
    }

    /// Each sample line parsed as `T`, with where it is ("FILE:LINE"); a line that does not
    /// parse is named with `expected`, the line format. A key a typo away from one of `keys`
    /// (a misspelt "answer" would go unchecked) is warned of, once per key, with its first line
    /// and how many more have it; other keys (a "question_id", LXMERT's "regions") are
    /// ignored. `foreign` names keys of another model's lines, for the error of a line that
    /// lacks its own.
    fn samples<T: DeserializeOwned>(
        &self,
        expected: &str,
        keys: &[&str],
        foreign: &[(&str, &str)],
    ) -> anyhow::Result<Vec<(String, T)>> {
        // Each misspelt key: what it is near, its first line, how many lines have it.
        let mut typos: Vec<(String, &str, usize, usize)> = Vec::new();
        let samples = self
            .sample_lines()
            .map(|(n, line)| {
                let at = format!("{}:{n}", self.name);
                let hint = match line.trim_start().starts_with('[') {
                    true => " (a line holds one JSON object, not a list: JSON Lines)",
                    false => "",
                };
                let value: serde_json::Value = serde_json::from_str(line).map_err(|e| {
                    anyhow::anyhow!("{at}: expected {expected}{hint}: {}", line_error(&e))
                })?;
                // serde reads a struct from a list too, by position: refused here, with any
                // other value that is not an object.
                if let Some(kind) = not_an_object(&value) {
                    bail!("{at}: expected {expected}{hint}: the line is {kind}, not a JSON object");
                }
                let object = value.as_object();
                let near: Vec<(&String, &str)> = object
                    .into_iter()
                    .flat_map(|o| o.keys())
                    .filter(|k| !keys.contains(&k.as_str()))
                    .filter_map(|k| Some((k, nearest(k, keys.iter().copied())?)))
                    .collect();
                let parsed = T::deserialize(&value).map_err(|e| {
                    // serde names no key when a value has the wrong type: the line's key
                    // without which the error changes is the one.
                    let e = match object.and_then(|o| offending_key::<T>(o, &e.to_string())) {
                        Some(key) => format!("{key:?}: {e}"),
                        None => e.to_string(),
                    };
                    let mut also: Vec<String> = near
                        .iter()
                        .map(|(k, key)| format!("{k:?}: did you mean {key:?}?"))
                        .collect();
                    also.extend(
                        foreign
                            .iter()
                            .filter(|(k, _)| object.is_some_and(|o| o.contains_key(*k)))
                            .map(|(k, whose)| {
                                format!("{k:?} is {whose}: is --model the one meant?")
                            }),
                    );
                    match also.is_empty() {
                        true => anyhow::anyhow!("{at}: expected {expected}{hint}: {e}"),
                        false => anyhow::anyhow!(
                            "{at}: expected {expected}{hint}: {e} ({})",
                            also.join("; ")
                        ),
                    }
                })?;
                for (k, key) in near {
                    match typos.iter_mut().find(|t| t.0 == *k) {
                        Some(t) => t.3 += 1,
                        None => typos.push((k.clone(), key, n, 1)),
                    }
                }
                Ok((at, parsed))
            })
            .collect::<anyhow::Result<_>>()?;
        for (typo, key, n, lines) in typos {
            let more = match lines {
                1 => String::new(),
                2 => " (one more line has it)".to_owned(),
                k => format!(" ({} more lines have it)", k - 1),
            };
            eprintln!(
                "warning: {}:{n}: key {typo:?} is not read; did you mean {key:?}?{more}",
                self.name
            );
        }
        Ok(samples)
    }
}

/// The key of `object` whose value `T` cannot read, where `error` (T's) says a value has the
/// wrong type or form: the one key that, left out, makes `T`'s error a different one.
fn offending_key<T: DeserializeOwned>(
    object: &serde_json::Map<String, serde_json::Value>,
    error: &str,
) -> Option<String> {
    if !(error.starts_with("invalid type") || error.starts_with("invalid value")) {
        return None;
    }
    let mut keys = object.keys().filter(|key| {
        let mut without = object.clone();
        without.remove(*key);
        match T::deserialize(&serde_json::Value::Object(without)) {
            Ok(_) => true,
            Err(e) => e.to_string() != error,
        }
    });
    match (keys.next(), keys.next()) {
        (Some(key), None) => Some(key.clone()),
        _ => None,
    }
}

/// What a --pairs line's JSON value is, where it is not an object.
fn not_an_object(value: &serde_json::Value) -> Option<&'static str> {
    use serde_json::Value;
    match value {
        Value::Object(_) => None,
        Value::Array(_) => Some("a list"),
        Value::String(_) => Some("a string"),
        Value::Number(_) => Some("a number"),
        Value::Bool(_) => Some("true or false"),
        Value::Null => Some("null"),
    }
}

/// The text of the --pairs file `name`, which must be UTF-8 (as JSON is): a byte that is not
/// is placed by its line, and a UTF-16 file (a Windows editor's "Unicode") is named as such.
fn utf8(name: &str, bytes: Vec<u8>) -> anyhow::Result<String> {
    String::from_utf8(bytes).map_err(|e| {
        let bytes = e.as_bytes();
        if bytes.starts_with(&[0xff, 0xfe]) || bytes.starts_with(&[0xfe, 0xff]) {
            return anyhow::anyhow!("{name} is UTF-16: save it as UTF-8, as JSON Lines are");
        }
        let bad = e.utf8_error().valid_up_to();
        let line_start = bytes[..bad]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        let line = 1 + bytes[..bad].iter().filter(|&&b| b == b'\n').count();
        anyhow::anyhow!(
            "{name}:{line}: byte 0x{:02x} at column {} is not UTF-8: save the file as UTF-8, \
             as JSON Lines are",
            bytes[bad],
            1 + bad - line_start
        )
    })
}

/// Where a request's input is: its file as messages name it (the image; LXMERT's regions)
/// with its image id, and its --pairs line.
pub(super) struct Whence {
    pub(super) file: String,
    pub(super) image_id: Option<String>,
    pub(super) line: Option<String>,
}

/// A session error about one input, named by its --pairs line: the question without words,
/// or the first request of the file (and image id) the error is about.
pub(super) fn at_pairs_line(e: SessionError, inputs: &[Whence]) -> anyhow::Error {
    let index = match &e {
        SessionError::NoWords { index, .. } => Some(*index),
        SessionError::Input(input) => input.input_file().and_then(|(file, id)| {
            inputs
                .iter()
                .position(|w| w.file == file && (id.is_none() || w.image_id.as_deref() == id))
        }),
        _ => None,
    };
    match index.and_then(|i| inputs.get(i)?.line.clone()) {
        Some(line) => anyhow::Error::from(e).context(line),
        None => e.into(),
    }
}

/// Where each pair's image is.
pub(super) fn whence_of_images(requests: &[PairRequest], lines: &[Option<String>]) -> Vec<Whence> {
    requests
        .iter()
        .zip(lines)
        .map(|(r, line)| Whence {
            file: r.image.display().to_string(),
            image_id: None,
            line: line.clone(),
        })
        .collect()
}

/// A pair to explain, the answer its --pairs line expects, and the line.
type PairSample = (PairRequest, Option<String>, Option<String>);

/// The pairs of a --pairs file, each with the answer its line expects and where it is.
fn read_pairs(pairs: &PairsFile) -> anyhow::Result<Vec<PairSample>> {
    let lines = pairs.samples::<PairLine>(
        r#"{"image": PATH, "text": "..."} ("question" may stand for "text", not beside it)"#,
        &["image", "text", "question", "answer"],
        &[("regions", "an LXMERT line's region features")],
    )?;
    lines
        .into_iter()
        .map(|(at, p)| {
            let at = || at.clone();
            let image = pairs.base.join(p.image);
            pairs.check_file(&image, "image").with_context(at)?;
            check_text(&p.text).with_context(at)?;
            check_answer(p.answer.as_deref()).with_context(at)?;
            let request = PairRequest {
                image,
                text: p.text,
            };
            let answer = p.answer.map(|a| a.trim().to_owned());
            Ok((request, answer, Some(at())))
        })
        .collect()
}

/// The pairs to explain, the answer each `--pairs` line expects, and the line.
type Requests = (Vec<PairRequest>, Vec<Option<String>>, Vec<Option<String>>);

pub(super) fn requests(args: &ExplainArgs, pairs: Option<&PairsFile>) -> anyhow::Result<Requests> {
    let mut out: Requests = Default::default();
    let lines = match (pairs, &args.image) {
        (Some(pairs), _) => read_pairs(pairs)?,
        (None, Some(image)) => args
            .texts
            .iter()
            .map(|t| {
                let request = PairRequest {
                    image: image.clone(),
                    text: t.clone(),
                };
                (request, None, None)
            })
            .collect(),
        (None, None) => bail!("{WHAT_TO_EXPLAIN}"),
    };
    for (request, answer, at) in lines {
        out.0.push(request);
        out.1.push(answer);
        out.2.push(at);
    }
    Ok(out)
}

/// That a `--pairs` line's text has something to explain.
fn check_text(text: &str) -> anyhow::Result<()> {
    if text.trim().is_empty() {
        bail!("the text is empty: nothing to explain");
    }
    Ok(())
}

/// That a `--pairs` line's expected answer, if it gives one, says something: an empty one
/// is a slip in the data (it would only count the sample wrong).
fn check_answer(answer: Option<&str>) -> anyhow::Result<()> {
    if answer.is_some_and(|a| a.trim().is_empty()) {
        bail!("the \"answer\" is empty: give the answer the model should say, or leave it out");
    }
    Ok(())
}

/// A value a `--pairs` line may give as a string or a number: an image id (COCO ids are
/// numbers), an answer ("2").
fn string_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match Option::<serde_json::Value>::deserialize(d)? {
        None => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s)),
        Some(serde_json::Value::Number(n)) if n.is_u64() => Ok(Some(n.to_string())),
        Some(other) => Err(serde::de::Error::custom(format!(
            "an \"answer\" or \"image_id\" is a string or a whole number from 0 to 2^64 - 1, not {other}"
        ))),
    }
}

/// One line of an LXMERT `--pairs` file.
#[derive(Deserialize)]
struct RegionLine {
    regions: PathBuf,
    #[serde(default, deserialize_with = "string_or_number")]
    image_id: Option<String>,
    /// An image to draw the regions on.
    #[serde(default)]
    image: Option<PathBuf>,
    #[serde(alias = "text")]
    question: String,
    /// The answer the model should give, shown beside the one it gave.
    #[serde(default, deserialize_with = "string_or_number")]
    answer: Option<String>,
}

/// An LXMERT request, the image to draw it on (if any), the answer its line expects and
/// the line.
type RegionSample = (
    RegionRequest,
    Option<PathBuf>,
    Option<String>,
    Option<String>,
);

/// LXMERT requests, each with the image to draw on (if any), the answer it expects and its
/// --pairs line.
pub(super) fn region_requests(
    args: &ExplainArgs,
    pairs: Option<&PairsFile>,
) -> anyhow::Result<Vec<RegionSample>> {
    if let Some(pairs) = pairs {
        let lines = pairs.samples::<RegionLine>(
            r#"{"regions": PATH, "image_id": ID?, "image": PATH?, "question": "..."}"#,
            &["regions", "image_id", "image", "question", "text", "answer"],
            &[],
        )?;
        let base = &pairs.base;
        return lines
            .into_iter()
            .map(|(at, l)| {
                let at = || at.clone();
                let regions = base.join(l.regions);
                pairs.check_file(&regions, "regions").with_context(at)?;
                match (is_obj36_tsv(&regions), &l.image_id) {
                    (true, None) => bail!(
                        "{}: {} is an obj36 TSV, which holds many images: give the line an \"image_id\"",
                        at(),
                        regions.display()
                    ),
                    (false, Some(_)) => bail!(
                        "{}: \"image_id\" picks an image of an obj36 TSV (.tsv), and {} is a features file of one image",
                        at(),
                        regions.display()
                    ),
                    _ => {}
                }
                check_text(&l.question).with_context(at)?;
                check_answer(l.answer.as_deref()).with_context(at)?;
                let image = l.image.map(|p| base.join(p));
                if let Some(image) = &image {
                    pairs.check_file(image, "image").with_context(at)?;
                }
                let request = RegionRequest {
                    regions,
                    image_id: l.image_id,
                    question: l.question,
                };
                let answer = l.answer.map(|a| a.trim().to_owned());
                Ok((request, image, answer, Some(at())))
            })
            .collect();
    }
    let Some(regions) = &args.regions else {
        bail!("LXMERT reads region features: give --regions FILE [--image-id ID] (and --image IMG to draw on)");
    };
    Ok(args
        .texts
        .iter()
        .map(|q| {
            let request = RegionRequest {
                regions: regions.clone(),
                image_id: args.image_id.clone(),
                question: q.clone(),
            };
            (request, args.image.clone(), None, None)
        })
        .collect())
}
