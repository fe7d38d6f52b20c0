//! `fiedler synth`: a procedurally generated visual-question set with ground truth.
//!
//! Scenes of 2–6 shapes ([`scene`]), templated questions with one derivable answer each
//! ([`questions`]), LXMERT region inputs ([`regions`]) and CLIP caption sets ([`captions`]).
//! Everything is drawn from one seeded [`rng::Rng`] stream per image, and written in a fixed
//! order with no hash-map iteration, so one seed gives byte-identical output. The layout of the
//! output folder is documented in docs/synth.md.

pub mod captions;
pub mod metrics;
pub mod questions;
pub mod regions;
pub mod rng;
pub mod scene;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, TensorView};
use serde::Serialize;
use thiserror::Error;

use self::regions::{FEATURE_DIM, REGIONS_PER_IMAGE};
use self::rng::Rng;
use self::scene::{Object, Scene};

/// The most questions asked about one image (one per template at most).
pub const QUESTIONS_PER_IMAGE: usize = 5;
/// VQA-v2's ten human answers per question; here all ten agree.
const ANSWERS_PER_QUESTION: usize = 10;
/// `data_subtype` of the JSON files and the prefix of the image names.
pub const DATA_SUBTYPE: &str = "synth";

#[derive(Debug, Error)]
pub enum SynthError {
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot encode {path}: {reason}")]
    Encode { path: PathBuf, reason: String },
    #[error("--images must be at least 1")]
    NoImages,
    #[error("--images {0}: a set has at most {MAX_IMAGES} images (its questions and ground truth are held in memory until written)")]
    TooManyImages(usize),
}

/// The most images one set may have: ~60 GB of files, and a few GB of questions and ground
/// truth held in memory until the JSON files are written at the end.
pub const MAX_IMAGES: usize = 1_000_000;

/// The JSON files of a set, written once every image is.
const SET_FILES: [&str; 4] = [
    "questions.json",
    "annotations.json",
    "ground_truth.json",
    "captions.json",
];

/// The image file stem of an image id, COCO-style: `synth_000000000042`.
pub fn image_stem(image_id: u64) -> String {
    format!("{DATA_SUBTYPE}_{image_id:012}")
}

/// One generated image with everything about it.
pub struct Item {
    pub image_id: u64,
    pub scene: Scene,
    pub questions: Vec<questions::Question>,
    pub regions: regions::SceneRegions,
    pub captions: Vec<String>,
}

/// Image `index` (0-based) of the set for `seed`; each image has its own random stream.
pub fn item(seed: u64, index: usize) -> Item {
    let mut rng = Rng::fork(seed, index as u64);
    let scene = Scene::generate(&mut rng);
    let questions = questions::ask(&scene, &mut rng, QUESTIONS_PER_IMAGE);
    let regions = regions::regions(&scene, &mut rng);
    let captions = captions::caption_set(&scene, &mut rng);
    Item {
        image_id: index as u64 + 1,
        scene,
        questions,
        regions,
        captions,
    }
}

// ------------------------------------------------------------------------------------------
// JSON layouts

#[derive(Serialize)]
struct VqaInfo {
    description: String,
    version: &'static str,
    year: u32,
}

#[derive(Serialize)]
struct VqaLicense {
    name: &'static str,
    url: &'static str,
}

#[derive(Serialize)]
struct QuestionsFile {
    info: VqaInfo,
    task_type: &'static str,
    data_type: &'static str,
    data_subtype: &'static str,
    license: VqaLicense,
    questions: Vec<VqaQuestion>,
}

#[derive(Serialize)]
struct VqaQuestion {
    image_id: u64,
    question: String,
    question_id: u64,
}

#[derive(Serialize)]
struct AnnotationsFile {
    info: VqaInfo,
    data_type: &'static str,
    data_subtype: &'static str,
    license: VqaLicense,
    annotations: Vec<VqaAnnotation>,
}

#[derive(Serialize)]
struct VqaAnnotation {
    question_id: u64,
    image_id: u64,
    question_type: &'static str,
    answer_type: &'static str,
    multiple_choice_answer: String,
    answers: Vec<VqaAnswer>,
}

#[derive(Serialize)]
struct VqaAnswer {
    answer: String,
    answer_confidence: &'static str,
    answer_id: usize,
}

/// ground_truth.json (docs/synth.md).
#[derive(Serialize)]
struct GroundTruthFile {
    seed: u64,
    images: Vec<GtImage>,
    questions: Vec<GtQuestion>,
}

#[derive(Serialize)]
struct GtImage {
    image_id: u64,
    file: String,
    mask_file: String,
    regions_file: String,
    width: u32,
    height: u32,
    objects: Vec<Object>,
    /// Per region of the features file / TSV line, the object it shows (null: background).
    region_objects: Vec<Option<usize>>,
}

#[derive(Serialize)]
struct GtQuestion {
    question_id: u64,
    image_id: u64,
    question: String,
    answer: String,
    relevant_objects: Vec<usize>,
    /// Pixel boxes (x1, y1, x2, y2; x2, y2 exclusive) of the relevant objects.
    relevant_boxes: Vec<[u32; 4]>,
    relevant_words: Vec<usize>,
    relevant_word_text: Vec<String>,
}

#[derive(Serialize)]
struct CaptionSet {
    image_id: u64,
    file: String,
    /// The true caption is `captions[correct]`; the others are false of the image.
    correct: usize,
    captions: Vec<String>,
}

fn info(seed: u64) -> VqaInfo {
    VqaInfo {
        description: format!("fiedler synthetic visual questions, seed {seed}"),
        version: "1.0",
        year: 2026,
    }
}

const LICENSE: VqaLicense = VqaLicense {
    name: "CC0 1.0 (procedurally generated)",
    url: "https://creativecommons.org/publicdomain/zero/1.0/",
};

// ------------------------------------------------------------------------------------------
// writing

fn write_err(path: &Path) -> impl FnOnce(std::io::Error) -> SynthError + '_ {
    move |source| SynthError::Write {
        path: path.to_path_buf(),
        source,
    }
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), SynthError> {
    let text = serde_json::to_string(value).map_err(|e| SynthError::Encode {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    fs::write(path, text + "\n").map_err(write_err(path))
}

fn save_png<P, C>(img: &image::ImageBuffer<P, C>, path: &Path) -> Result<(), SynthError>
where
    P: image::PixelWithColorType,
    [P::Subpixel]: image::EncodableLayout,
    C: std::ops::Deref<Target = [P::Subpixel]>,
{
    img.save_with_format(path, image::ImageFormat::Png)
        .map_err(|e| SynthError::Encode {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
}

fn features_file(path: &Path, item: &Item) -> Result<(), SynthError> {
    let bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let features = bytes(&item.regions.features);
    let boxes = bytes(
        &item
            .regions
            .normalised_boxes(item.scene.width, item.scene.height),
    );
    let enc = |e: safetensors::SafeTensorError| SynthError::Encode {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let views = vec![
        (
            "boxes",
            TensorView::new(Dtype::F32, vec![REGIONS_PER_IMAGE, 4], &boxes).map_err(enc)?,
        ),
        (
            "features",
            TensorView::new(Dtype::F32, vec![REGIONS_PER_IMAGE, FEATURE_DIM], &features)
                .map_err(enc)?,
        ),
    ];
    safetensors::serialize_to_file(views, None, path).map_err(enc)
}

/// What was written.
pub struct Summary {
    pub images: usize,
    pub questions: usize,
}

/// Removes the file at `path`, if there is one.
fn remove_if_there(path: &Path) -> Result<(), SynthError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(write_err(path)(e)),
        _ => Ok(()),
    }
}

/// Whether `path` is named as a set's item file of extension `ext` is ([`image_stem`]).
fn is_item_file(path: &Path, ext: &str) -> bool {
    let digits = |d: &str| d.len() == 12 && d.bytes().all(|b| b.is_ascii_digit());
    path.extension().is_some_and(|e| e == ext)
        && path
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.strip_prefix(DATA_SUBTYPE))
            .and_then(|s| s.strip_prefix('_'))
            .is_some_and(digits)
}

/// Writes the set of `count` images for `seed` under `out` (see docs/synth.md); `progress` is
/// called after each image.
pub fn write_set(
    out: &Path,
    count: usize,
    seed: u64,
    mut progress: impl FnMut(),
) -> Result<Summary, SynthError> {
    if count == 0 {
        return Err(SynthError::NoImages);
    }
    if count > MAX_IMAGES {
        return Err(SynthError::TooManyImages(count));
    }
    // An earlier set's JSON goes first, and this set's is written last: a run cut short over
    // an earlier set leaves no JSON to pass its mixed images off as either set.
    for file in SET_FILES {
        remove_if_there(&out.join(file))?;
    }
    // Then its images, masks and features files, which a smaller set would leave beside its
    // own; other files there stay.
    for (dir, ext) in [
        ("images", "png"),
        ("masks", "png"),
        ("regions", "safetensors"),
    ] {
        let d = out.join(dir);
        fs::create_dir_all(&d).map_err(write_err(&d))?;
        for entry in fs::read_dir(&d).map_err(write_err(&d))? {
            let path = entry.map_err(write_err(&d))?.path();
            if is_item_file(&path, ext) {
                remove_if_there(&path)?;
            }
        }
    }
    let tsv_path = out.join("regions.tsv");
    let mut tsv =
        std::io::BufWriter::new(fs::File::create(&tsv_path).map_err(write_err(&tsv_path))?);

    let mut vqa_questions = Vec::new();
    let mut annotations = Vec::new();
    let mut caption_sets = Vec::new();
    // The ground truth keeps what it writes, not the items: an item's pixels and features
    // (~0.4 MB) go once its files are written, so a large set does not fill the memory.
    let mut gt = GroundTruthFile {
        seed,
        images: Vec::new(),
        questions: Vec::new(),
    };
    for index in 0..count {
        let item = item(seed, index);
        let stem = image_stem(item.image_id);
        save_png(
            &item.scene.image,
            &out.join("images").join(format!("{stem}.png")),
        )?;
        save_png(
            &item.scene.mask,
            &out.join("masks").join(format!("{stem}.png")),
        )?;
        features_file(
            &out.join("regions").join(format!("{stem}.safetensors")),
            &item,
        )?;
        writeln!(
            tsv,
            "{}",
            regions::obj36_line(&stem, &item.scene, &item.regions)
        )
        .map_err(write_err(&tsv_path))?;
        let Item {
            image_id,
            scene,
            questions,
            regions,
            captions,
        } = item;
        for (k, q) in questions.into_iter().enumerate() {
            let question_id = image_id * 1000 + k as u64;
            vqa_questions.push(VqaQuestion {
                image_id,
                question: q.question.clone(),
                question_id,
            });
            annotations.push(VqaAnnotation {
                question_id,
                image_id,
                question_type: q.question_type,
                answer_type: q.answer_type,
                multiple_choice_answer: q.answer.clone(),
                answers: (1..=ANSWERS_PER_QUESTION)
                    .map(|answer_id| VqaAnswer {
                        answer: q.answer.clone(),
                        answer_confidence: "yes",
                        answer_id,
                    })
                    .collect(),
            });
            let words = questions::words(&q.question);
            gt.questions.push(GtQuestion {
                question_id,
                image_id,
                relevant_boxes: q
                    .relevant_objects
                    .iter()
                    .map(|&o| scene.objects[o].box_px)
                    .collect(),
                relevant_word_text: q
                    .relevant_words
                    .iter()
                    .map(|&i| words[i].to_string())
                    .collect(),
                relevant_objects: q.relevant_objects,
                relevant_words: q.relevant_words,
                answer: q.answer,
                question: q.question,
            });
        }
        caption_sets.push(CaptionSet {
            image_id,
            file: format!("images/{stem}.png"),
            correct: 0,
            captions,
        });
        gt.images.push(GtImage {
            image_id,
            file: format!("images/{stem}.png"),
            mask_file: format!("masks/{stem}.png"),
            regions_file: format!("regions/{stem}.safetensors"),
            width: scene.width,
            height: scene.height,
            objects: scene.objects,
            region_objects: regions.objects,
        });
        progress();
    }
    tsv.flush().map_err(write_err(&tsv_path))?;

    let n_questions = vqa_questions.len();
    write_json(
        &out.join(SET_FILES[0]),
        &QuestionsFile {
            info: info(seed),
            task_type: "Open-Ended",
            data_type: DATA_SUBTYPE,
            data_subtype: DATA_SUBTYPE,
            license: LICENSE,
            questions: vqa_questions,
        },
    )?;
    write_json(
        &out.join(SET_FILES[1]),
        &AnnotationsFile {
            info: info(seed),
            data_type: DATA_SUBTYPE,
            data_subtype: DATA_SUBTYPE,
            license: LICENSE,
            annotations,
        },
    )?;
    write_json(&out.join(SET_FILES[2]), &gt)?;
    write_json(&out.join(SET_FILES[3]), &caption_sets)?;
    Ok(Summary {
        images: count,
        questions: n_questions,
    })
}
