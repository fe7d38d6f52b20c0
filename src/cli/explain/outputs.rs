//! What `fiedler explain` writes into `--out`: explanations.json, an overlay PNG per sample and
//! method, a comparison sheet per sample, and index.html; the images to draw on, decoded before
//! the work; the folder's lock, and the removal of an earlier run's files.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use super::run_record::RUN_FILE;
use super::terminal::{degenerate_warnings, flat_image, unseen_regions, FLAT_IMAGE};
use super::Sample;
use fiedler::explain::{Explanation, Method};
use fiedler::input::image::{decode_image, warn_orientation_once};
use fiedler::render;
use fiedler::render::overlay::Layout;
use image::metadata::Orientation;
use image::RgbImage;
use rayon::prelude::*;
use serde::Serialize;

/// One object of explanations.json: one sample, one method.
#[derive(Serialize)]
struct Record<'a> {
    family: &'static str,
    method: &'static str,
    target: &'a str,
    image: String,
    /// The image of an obj36 TSV the regions came from (LXMERT).
    #[serde(skip_serializing_if = "Option::is_none")]
    image_id: Option<&'a str>,
    text: &'a str,
    score: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    probability: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    answer: Option<&'a str>,
    /// The answer the `--pairs` line expects.
    #[serde(skip_serializing_if = "Option::is_none")]
    expected_answer: Option<&'a str>,
    /// Whether `answer` is the expected one.
    #[serde(skip_serializing_if = "Option::is_none")]
    correct: Option<bool>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    top_answers: Vec<TopAnswer<'a>>,
    text_tokens: &'a [String],
    /// Whether the text was cut to the model's positions (its tokens are the kept ones).
    truncated: bool,
    text_relevance: &'a [f32],
    /// Which tokens the method scores; the others (special tokens) hold 0.
    text_scored: &'a [bool],
    image_relevance: &'a [f32],
    image_grid: [usize; 2],
    #[serde(skip_serializing_if = "Option::is_none")]
    boxes: Option<&'a [[f32; 4]]>,
    degenerate_graphs: &'a [String],
}

#[derive(Serialize)]
struct TopAnswer<'a> {
    answer: &'a str,
    probability: f32,
}

/// The lock file that a run holds in its output folder while it writes there.
const LOCK_FILE: &str = ".fiedler-explain.lock";

/// Locks `out` for this run, until the returned file is dropped: two runs writing into one
/// folder at once would mix their images under one page.
pub(super) fn lock_output_folder(out: &Path) -> anyhow::Result<fs::File> {
    let path = out.join(LOCK_FILE);
    let file = fs::File::create(&path)
        .with_context(|| format!("cannot write in output folder {}", out.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => bail!(
            "another fiedler explain is writing into {}; wait for it to end, or give another --out",
            out.display()
        ),
        // A file system without locks (some network mounts): run unguarded.
        Err(fs::TryLockError::Error(e)) if e.kind() == std::io::ErrorKind::Unsupported => Ok(file),
        Err(fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
}

/// The output folder, made for this run where it did not exist: a run that fails before it
/// has anything to write (a mistyped image, a model that does not load) removes what it made,
/// the lock file and the folders, rather than leave an empty `fiedler-out/` behind. A folder
/// that was there before is left as it is.
pub(super) struct OutputFolder {
    /// The lock file, then the folders this run made, innermost first.
    made: Vec<PathBuf>,
    kept: bool,
}

impl OutputFolder {
    /// Makes `out` (and any missing parent); the lock file is `out`'s part of the mess to
    /// clear, when the run made `out`.
    pub fn make(out: &Path) -> anyhow::Result<Self> {
        let made: Vec<PathBuf> = out
            .ancestors()
            .take_while(|dir| !dir.as_os_str().is_empty() && !dir.exists())
            .map(Path::to_path_buf)
            .collect();
        fs::create_dir_all(out)
            .with_context(|| format!("cannot create output folder {}", out.display()))?;
        let lock = (!made.is_empty()).then(|| out.join(LOCK_FILE));
        Ok(Self {
            made: lock.into_iter().chain(made).collect(),
            kept: false,
        })
    }

    /// The run has outputs to write: the folder stays, whatever happens next.
    pub fn keep(&mut self) {
        self.kept = true;
    }
}

impl Drop for OutputFolder {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        let mut made = self.made.iter();
        if let Some(lock) = made.next() {
            // Best effort: a folder something else wrote into meanwhile is not empty, and stays.
            let _ = fs::remove_file(lock);
            for dir in made {
                if fs::remove_dir(dir).is_err() {
                    break;
                }
            }
        }
    }
}

/// How many bytes of display images the check before the work keeps for the drawing; the
/// images past them are decoded again when drawn, so that a run over thousands of images holds
/// a bounded amount (an image drawn at 384 pixels is about 440 KB).
pub(super) const KEPT_DISPLAY_BYTES: usize = 1 << 30;

/// How an image is decoded to be drawn on.
type LoadImage = Box<dyn Fn(&Path) -> anyhow::Result<RgbImage> + Send + Sync>;

/// The images to draw on: none with --no-images; else the ones the check before the work
/// kept, and how to decode the others again.
pub(super) struct Displayed {
    kept: HashMap<PathBuf, RgbImage>,
    load: Option<LoadImage>,
}

impl Displayed {
    /// The image at `path` to draw on; none with --no-images.
    fn get(&self, path: &Path) -> anyhow::Result<Option<Cow<'_, RgbImage>>> {
        let Some(load) = &self.load else {
            return Ok(None);
        };
        Ok(Some(match self.kept.get(path) {
            Some(image) => Cow::Borrowed(image),
            None => Cow::Owned(load(path)?),
        }))
    }
}

/// Each distinct image decoded once, as drawn (`load`), on every core, before the work: a file
/// that does not decode stops the run before it starts (and costs no batch done), named by its
/// --pairs line when it has one, the first such line of the file. Unless `keep` is false
/// (--no-images), the images are kept for the drawing up to `budget` bytes.
pub(super) fn display_images<'a>(
    images: impl IntoIterator<Item = (&'a PathBuf, &'a Option<String>)>,
    keep: bool,
    budget: usize,
    load: impl Fn(&Path) -> anyhow::Result<(RgbImage, Option<Orientation>)> + Send + Sync + 'static,
) -> anyhow::Result<Displayed> {
    let mut seen = HashSet::new();
    let distinct: Vec<_> = images
        .into_iter()
        .filter(|(path, _)| seen.insert(*path))
        .collect();
    let mut kept = HashMap::new();
    let mut bytes = 0;
    // A few images per thread at a time, so that the ones not kept are freed as they go.
    for chunk in distinct.chunks(4 * rayon::current_num_threads()) {
        let decoded: Vec<_> = chunk.par_iter().map(|(path, _)| load(path)).collect();
        for ((path, line), image) in chunk.iter().zip(decoded) {
            let (image, orientation) = match (image, line) {
                (Ok(image), _) => image,
                (Err(e), Some(line)) => return Err(e.context(line.clone())),
                (Err(e), None) => return Err(e),
            };
            // Warned of here, in the order given, not as the threads decode: the first photo
            // with an EXIF orientation is the one named.
            if let Some(orientation) = orientation {
                warn_orientation_once(path, orientation);
            }
            let size = image.as_raw().len();
            if keep && bytes + size <= budget {
                bytes += size;
                kept.insert((*path).clone(), image);
            }
        }
    }
    Ok(Displayed {
        kept,
        load: keep.then(|| Box::new(move |path: &Path| Ok(load(path)?.0)) as LoadImage),
    })
}

/// Decodes an image file and `shape`s it to be drawn on (the family's display size), with
/// the EXIF orientation the decoding did not apply, for `display_images`.
pub(super) fn decoded(
    shape: impl Fn(&RgbImage) -> RgbImage + Send + Sync + 'static,
) -> impl Fn(&Path) -> anyhow::Result<(RgbImage, Option<Orientation>)> + Send + Sync + 'static {
    move |path| {
        let (image, orientation) = decode_image(path)?;
        Ok((shape(&image), orientation))
    }
}

/// How `write_outputs` draws, from its drawing threads: whether to stop (Ctrl-C) before the
/// next sample's images, and what to call after each sample drawn.
pub(super) struct Drawing<'a> {
    pub(super) stop: &'a (dyn Fn() -> bool + Sync),
    pub(super) drawn: &'a (dyn Fn() + Sync),
}

/// The image files of one sample: an overlay per explanation and the comparison sheet, where
/// they were drawn.
#[derive(Default)]
struct SampleFiles {
    overlays: Vec<Option<String>>,
    sheet: Option<String>,
}

/// Writes explanations.json first, then the samples' overlays and sheets (several samples at
/// once), then index.html, which shows the images drawn and says where a stop left the run
/// short: of the `asked` samples, or of their images. Returns how many samples are done:
/// drawn, or with nothing to draw (no image, or --no-images); fewer when `drawing.stop`
/// stopped the drawing.
pub(super) fn write_outputs(
    family: &'static str,
    samples: &[Sample],
    asked: usize,
    displayed: &Displayed,
    out: &Path,
    drawing: Drawing<'_>,
) -> anyhow::Result<usize> {
    let records: Vec<Record> = samples
        .iter()
        .flat_map(|s| s.explanations.iter().map(move |e| record(family, s, e)))
        .collect();
    let json = serde_json::to_string_pretty(&records)?;
    fs::write(out.join("explanations.json"), json).context("cannot write explanations.json")?;
    let files: Vec<Option<SampleFiles>> = samples
        .par_iter()
        .enumerate()
        .map(|(i, s)| {
            let Some(path) = s.image.as_ref().filter(|_| displayed.load.is_some()) else {
                return Ok(Some(SampleFiles::default()));
            };
            if (drawing.stop)() {
                return Ok(None);
            }
            let Some(image) = displayed
                .get(path)
                .with_context(|| format!("cannot draw sample {i}"))?
            else {
                return Ok(Some(SampleFiles::default()));
            };
            let files = draw_sample(i, s, &image, out)?;
            (drawing.drawn)();
            Ok(Some(files))
        })
        .collect::<anyhow::Result<_>>()?;
    let html_samples: Vec<render::html::HtmlPair> = samples
        .iter()
        .zip(&files)
        .map(|(s, files)| html_sample(s, files.as_ref()))
        .collect();
    let mut notes = Vec::new();
    if samples.len() < asked {
        notes.push(format!(
            "stopped (Ctrl-C) after {} of {asked} samples: the page holds the samples done",
            samples.len()
        ));
    }
    let undrawn = files.iter().filter(|f| f.is_none()).count();
    if undrawn > 0 {
        notes.push(format!(
            "the drawing was stopped (Ctrl-C): {undrawn} of {} samples have no images",
            samples.len()
        ));
    }
    let page = render::html::page("fiedler explanations", &notes, &html_samples);
    fs::write(out.join("index.html"), page).context("cannot write index.html")?;
    Ok(files.iter().flatten().count())
}

/// One object of explanations.json.
fn record<'a>(family: &'static str, s: &'a Sample, e: &'a Explanation) -> Record<'a> {
    Record {
        family,
        method: e.method.name(),
        target: &s.target,
        image: s.label.clone(),
        image_id: s.image_id.as_deref(),
        text: &s.text,
        score: e.score,
        probability: s.probability,
        answer: s.answer.as_deref(),
        expected_answer: s.expected.as_ref().map(|e| e.answer.as_str()),
        correct: s.expected.as_ref().map(|e| e.correct),
        top_answers: s
            .top_answers
            .iter()
            .map(|(a, p)| TopAnswer {
                answer: a,
                probability: *p,
            })
            .collect(),
        text_tokens: &s.tokens,
        truncated: s.truncated,
        text_relevance: &e.text_relevance,
        text_scored: &e.text_scored,
        image_relevance: &e.image_relevance,
        image_grid: [e.image_grid.0, e.image_grid.1],
        boxes: s.boxes.as_deref(),
        degenerate_graphs: &e.degenerate_graphs,
    }
}

/// Sample `i`'s overlay per explanation, and its comparison sheet when it has several, drawn
/// on `image` and written into `out`.
fn draw_sample(i: usize, s: &Sample, image: &RgbImage, out: &Path) -> anyhow::Result<SampleFiles> {
    let layout = |e: &Explanation| match &s.boxes {
        Some(b) => Layout::Boxes(b),
        None => Layout::Grid(e.image_grid.0, e.image_grid.1),
    };
    let mut overlays = Vec::new();
    for e in &s.explanations {
        let shown = match (&s.explained, &s.answer) {
            (Some(target), _) => Some(format!("explained: {target}")),
            (None, answer) => answer.clone(),
        };
        // The answer (CLIP has none) before the text: a long text is cut at the end of the
        // title.
        let title = [
            Some(e.method.name().to_owned()),
            shown,
            Some(s.text.clone()),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" | ");
        let file = format!("sample{i}-{}.png", e.method);
        let overlay = render::overlay::overlay(image, &e.image_relevance, layout(e), &title);
        save_png(&overlay, &out.join(&file))?;
        overlays.push(Some(file));
    }
    let sheet = match s.explanations.first() {
        Some(first) if s.explanations.len() > 1 => {
            let panels: Vec<(String, Vec<f32>)> = s
                .explanations
                .iter()
                .map(|e| (e.method.name().to_owned(), e.image_relevance.clone()))
                .collect();
            let caption = format!("\"{}\"  {}", s.text, s.score_line);
            let sheet = render::sheet::comparison_sheet(image, &panels, layout(first), &caption);
            let file = format!("sample{i}-sheet.png");
            save_png(&sheet, &out.join(&file))?;
            Some(file)
        }
        _ => None,
    };
    Ok(SampleFiles { overlays, sheet })
}

/// A sample as index.html shows it, with its image files where they were drawn (`None`: the
/// drawing stopped before it).
fn html_sample(s: &Sample, files: Option<&SampleFiles>) -> render::html::HtmlPair {
    let methods = s
        .explanations
        .iter()
        .enumerate()
        .map(|(m, e)| render::html::HtmlMethod {
            name: e.method.name().to_owned(),
            tokens: s.tokens.clone(),
            relevance: e.text_relevance.clone(),
            scored: e.text_scored.clone(),
            overlay_file: files.and_then(|f| f.overlays.get(m).cloned().flatten()),
            regions: unseen_regions(s, e),
            warnings: {
                let mut warnings = degenerate_warnings(e);
                // Where the overlay is drawn, as the terminal says (regions say it there).
                if unseen_regions(s, e).is_none() && flat_image(e) {
                    warnings.push(format!("image: {FLAT_IMAGE}, nothing is ranked"));
                }
                warnings
            },
        })
        .collect();
    render::html::HtmlPair {
        image_label: s.shown_label(),
        text: match (&s.answer, &s.explained) {
            (Some(a), Some(target)) => format!("{}  → {a}  (explained: {target})", s.text),
            (Some(a), None) => format!("{}  → {a}", s.text),
            (None, _) => s.text.clone(),
        },
        truncated: s.truncated,
        score: s.explanations.first().map_or(f32::NAN, |e| e.score),
        probability: s.probability,
        explained: s.explained.clone(),
        top_answers: s.top_answers.clone(),
        expected: s.expected.as_ref().map(|e| (e.answer.clone(), e.correct)),
        methods,
        sheet_file: files.and_then(|f| f.sheet.clone()),
    }
}

/// Whether an earlier `explain` wrote into `out`: it holds explanations.json, or the lock
/// file a run leaves (one cut short before writing its page).
pub(super) fn earlier_run(out: &Path) -> bool {
    out.join("explanations.json").is_file() || out.join(LOCK_FILE).is_file()
}

/// In a folder an earlier `explain` wrote, the files that run wrote: the PNGs, then the page
/// and explanations.json. A run with fewer samples or methods would leave PNGs beside its
/// own, looking current, and a run cut short before it writes its page would leave the
/// earlier page pointing at PNGs it has removed or replaced. Only the names `explain` gives
/// (`sampleN-METHOD.png`, `sampleN-sheet.png`, index.html, explanations.json, run.json) are
/// removed; other files, `sample0-mine.png` included, are left alone.
pub(super) fn remove_earlier_outputs(out: &Path) -> anyhow::Result<()> {
    let ours = |name: &str| {
        name.strip_prefix("sample")
            .and_then(|rest| rest.strip_suffix(".png"))
            .and_then(|rest| rest.split_once('-'))
            .is_some_and(|(n, what)| {
                !n.is_empty()
                    && n.bytes().all(|b| b.is_ascii_digit())
                    && (what == "sheet" || Method::ALL.iter().any(|m| m.name() == what))
            })
    };
    let entries = fs::read_dir(out).with_context(|| format!("cannot list {}", out.display()))?;
    for entry in entries.flatten() {
        if entry.file_name().to_str().is_some_and(ours) {
            fs::remove_file(entry.path())
                .with_context(|| format!("cannot remove {}", entry.path().display()))?;
        }
    }
    for page in ["index.html", "explanations.json", RUN_FILE] {
        match fs::remove_file(out.join(page)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e)
                    .with_context(|| format!("cannot remove {}", out.join(page).display()))
            }
            _ => {}
        }
    }
    Ok(())
}

fn save_png(image: &RgbImage, path: &Path) -> anyhow::Result<()> {
    image
        .save(path)
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;

    /// The check before the work keeps images up to its budget and decodes the others again
    /// when they are drawn, to the same pixels; it decodes each distinct image once; the error
    /// it names is the first bad line's, though its images decode in parallel; and with
    /// --no-images it keeps none and draws none.
    #[test]
    fn display_images_are_kept_within_the_budget() {
        let loads = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&loads);
        // A 10 × 10 image (300 bytes) whose pixels say which file it is.
        let load = move |p: &Path| -> anyhow::Result<(RgbImage, Option<Orientation>)> {
            counted.fetch_add(1, Ordering::Relaxed);
            let name = p.to_string_lossy();
            let Some(n) = name.strip_prefix("image-") else {
                bail!("{name} does not decode");
            };
            let n: u8 = n.parse()?;
            Ok((RgbImage::from_pixel(10, 10, image::Rgb([n, 0, 0])), None))
        };
        let paths: Vec<PathBuf> = ["image-1", "image-2", "image-1", "image-3"]
            .map(PathBuf::from)
            .to_vec();
        let lines: Vec<Option<String>> = (1..=4).map(|n| Some(format!("line {n}"))).collect();
        let shown = display_images(paths.iter().zip(&lines), true, 650, load.clone()).unwrap();
        assert_eq!(loads.load(Ordering::Relaxed), 3, "each distinct image once");
        assert_eq!(shown.kept.len(), 2, "600 bytes of a budget of 650");
        for (n, path) in [(1, "image-1"), (2, "image-2"), (3, "image-3")] {
            let image = shown.get(Path::new(path)).unwrap().unwrap();
            assert_eq!(image.get_pixel(9, 9).0, [n, 0, 0], "{path}");
        }
        assert_eq!(loads.load(Ordering::Relaxed), 4, "image-3 decoded again");

        let many: Vec<PathBuf> = (0..64)
            .map(|n| match n {
                40 | 50 => PathBuf::from(format!("broken-{n}")),
                n => PathBuf::from(format!("image-{n}")),
            })
            .collect();
        let lines: Vec<Option<String>> = (1..=64).map(|n| Some(format!("line {n}"))).collect();
        for _ in 0..5 {
            let err = display_images(many.iter().zip(&lines), true, 0, load.clone())
                .err()
                .unwrap();
            assert_eq!(format!("{err:#}"), "line 41: broken-40 does not decode");
        }
        let none = display_images(paths.iter().zip(&lines), false, 1 << 20, load).unwrap();
        assert!(none.kept.is_empty());
        assert!(none.get(Path::new("image-1")).unwrap().is_none());
    }

    /// A folder an earlier run wrote (its page, or only the lock file of a run cut short) is
    /// recognised, and a new run removes that run's PNGs and then its page, so that no page
    /// is left pointing at images removed or replaced; other files stay.
    #[test]
    fn an_earlier_runs_page_goes_with_its_images() {
        let out = std::env::temp_dir().join(format!("fiedler-earlier-{}", std::process::id()));
        let _ = fs::remove_dir_all(&out);
        fs::create_dir_all(&out).unwrap();
        assert!(!earlier_run(&out));
        fs::write(out.join(LOCK_FILE), "").unwrap();
        assert!(earlier_run(&out));
        let ours = [
            "index.html",
            "explanations.json",
            RUN_FILE,
            "sample0-chefer.png",
            "sample12-sheet.png",
        ];
        let theirs = ["notes.txt", "sample0-mine.png", "photo.png", LOCK_FILE];
        for name in ours.iter().chain(&theirs) {
            fs::write(out.join(name), "x").unwrap();
        }
        remove_earlier_outputs(&out).unwrap();
        for name in ours {
            assert!(!out.join(name).exists(), "{name} left");
        }
        for name in theirs {
            assert!(out.join(name).exists(), "{name} removed");
        }
        fs::remove_dir_all(&out).unwrap();
    }
}
