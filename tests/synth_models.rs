//! The bundled demo models (models/*-synth, trained by tools/train_demo/) answer a held-out
//! synthetic set through the Rust engine. The set is regenerated here with `fiedler synth`'s
//! generator and the held-out seed, which the trainers never train on (they train on seed 1).
//!
//! Issue 8 asks for ≥ 85% (VQA accuracy for ViLT and LXMERT, caption-retrieval top-1 for CLIP),
//! and all three meet it (the answer prior is ≈ 0.3, a random caption 0.2).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use fiedler::explain::{Method, MethodOptions};
use fiedler::session::{
    AnswerTarget, ClipSession, LxmertSession, PairRequest, RegionRequest, SessionError, ViltSession,
};
use serde_json::Value;

/// tools/train_demo/common.py's HELD_OUT_SEED.
const HELD_OUT_SEED: u64 = 9001;
/// Held-out images for the VQA models (about 4.4 questions each) and for CLIP (one caption set each).
const VQA_IMAGES: usize = 60;
const CLIP_IMAGES: usize = 200;
const LXMERT_REQUIRED: f64 = 0.85;
const VILT_REQUIRED: f64 = 0.85;
const CLIP_REQUIRED: f64 = 0.85;

fn models() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models")
}

struct Held {
    dir: PathBuf,
    /// (image file, regions file, question, answer, question type)
    questions: Vec<(PathBuf, PathBuf, String, String, String)>,
}

fn held_out(name: &str, images: usize) -> Held {
    let dir = std::env::temp_dir().join(format!("fiedler-held-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fiedler::synth::write_set(&dir, images, HELD_OUT_SEED, || {}).unwrap();
    let read = |f: &str| -> Value {
        serde_json::from_str(&fs::read_to_string(dir.join(f)).unwrap()).unwrap()
    };
    let (q, a, gt) = (
        read("questions.json"),
        read("annotations.json"),
        read("ground_truth.json"),
    );
    let images: BTreeMap<u64, &Value> = gt["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|im| (im["image_id"].as_u64().unwrap(), im))
        .collect();
    let questions = q["questions"]
        .as_array()
        .unwrap()
        .iter()
        .zip(a["annotations"].as_array().unwrap())
        .map(|(q, a)| {
            let im = images[&q["image_id"].as_u64().unwrap()];
            (
                dir.join(im["file"].as_str().unwrap()),
                dir.join(im["regions_file"].as_str().unwrap()),
                q["question"].as_str().unwrap().to_owned(),
                a["multiple_choice_answer"].as_str().unwrap().to_owned(),
                a["question_type"].as_str().unwrap().to_owned(),
            )
        })
        .collect::<Vec<_>>();
    assert!(
        questions.len() >= 200,
        "{} held-out questions",
        questions.len()
    );
    Held { dir, questions }
}

/// Overall accuracy, asserting the requirement and printing accuracy per question type.
fn check_accuracy(model: &str, held: &Held, predicted: &[String], required: f64) {
    let mut by_type: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for (q, p) in held.questions.iter().zip(predicted) {
        let e = by_type.entry(q.4.as_str()).or_default();
        e.0 += usize::from(&q.3 == p);
        e.1 += 1;
    }
    let right: usize = by_type.values().map(|v| v.0).sum();
    let acc = right as f64 / held.questions.len() as f64;
    eprintln!(
        "{model}: {right}/{} = {acc:.3}  {by_type:?}",
        held.questions.len()
    );
    assert!(
        acc >= required,
        "{model}: held-out accuracy {acc:.3} < {required} ({by_type:?})"
    );
}

#[test]
fn bundled_vilt_answers_held_out_questions() {
    let held = held_out("vilt", VQA_IMAGES);
    let session = ViltSession::open(&models().join("vilt-synth")).unwrap();
    let pairs: Vec<PairRequest> = held
        .questions
        .iter()
        .map(|q| PairRequest {
            image: q.0.clone(),
            text: q.2.clone(),
        })
        .collect();
    let results = session
        .explain(
            &pairs,
            &[],
            &MethodOptions::default(),
            &AnswerTarget::Predicted,
            64,
            |_| {},
        )
        .unwrap();
    let predicted: Vec<String> = results.into_iter().map(|r| r.answer).collect();
    check_accuracy("vilt-synth", &held, &predicted, VILT_REQUIRED);
    fs::remove_dir_all(held.dir).unwrap();
}

#[test]
fn bundled_lxmert_answers_held_out_questions() {
    let held = held_out("lxmert", VQA_IMAGES);
    let session = LxmertSession::open(&models().join("lxmert-synth"), None).unwrap();
    let requests: Vec<RegionRequest> = held
        .questions
        .iter()
        .map(|q| RegionRequest {
            regions: q.1.clone(),
            image_id: None,
            question: q.2.clone(),
        })
        .collect();
    let results = session
        .explain(
            &requests,
            &[],
            &MethodOptions::default(),
            &AnswerTarget::Predicted,
            64,
            |_| {},
        )
        .unwrap();
    let predicted: Vec<String> = results.into_iter().map(|(r, _)| r.answer).collect();
    check_accuracy("lxmert-synth", &held, &predicted, LXMERT_REQUIRED);
    fs::remove_dir_all(held.dir).unwrap();
}

#[test]
fn bundled_clip_retrieves_true_captions() {
    let held = held_out("clip", CLIP_IMAGES);
    let sets: Value =
        serde_json::from_str(&fs::read_to_string(held.dir.join("captions.json")).unwrap()).unwrap();
    let sets = sets.as_array().unwrap();
    let mut pairs = Vec::new();
    for set in sets {
        for c in set["captions"].as_array().unwrap() {
            pairs.push(PairRequest {
                image: held.dir.join(set["file"].as_str().unwrap()),
                text: c.as_str().unwrap().to_owned(),
            });
        }
    }
    let session = ClipSession::open(&models().join("clip-synth")).unwrap();
    let results = session
        .explain(&pairs, &[], &MethodOptions::default(), 64, |_| {})
        .unwrap();
    let mut at = 0;
    let mut right = 0;
    for set in sets {
        let k = set["captions"].as_array().unwrap().len();
        let scores: Vec<f32> = results[at..at + k].iter().map(|r| r.score).collect();
        assert!(scores.iter().all(|s| s.is_finite()));
        let best = (0..k)
            .max_by(|&i, &j| scores[i].total_cmp(&scores[j]))
            .unwrap();
        right += usize::from(best as u64 == set["correct"].as_u64().unwrap());
        at += k;
    }
    let acc = right as f64 / sets.len() as f64;
    eprintln!(
        "clip-synth: caption retrieval top-1 {right}/{} = {acc:.3}",
        sets.len()
    );
    assert!(
        acc >= CLIP_REQUIRED,
        "clip-synth: held-out caption retrieval top-1 {acc:.3} < {CLIP_REQUIRED}"
    );
    fs::remove_dir_all(held.dir).unwrap();
}

/// An explanation lists only the degenerate graphs its method reads: on this question the
/// bundled LXMERT's text graph of cross layer 0 has a zero gap, which DSMI+Grad sums over and
/// DSMI (the last layer's text graph) never reads.
#[test]
fn lxmert_explanations_name_only_the_degenerate_graphs_they_read() {
    let session = LxmertSession::open(&models().join("lxmert-synth"), None).unwrap();
    let request = RegionRequest {
        regions: Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples/regions/shapes-4.safetensors"),
        image_id: None,
        question: "many triangle green".into(),
    };
    let methods = [Method::Dsmi, Method::DsmiGrad];
    let results = session
        .explain(
            &[request],
            &methods,
            &MethodOptions::default(),
            &AnswerTarget::Predicted,
            1,
            |_| {},
        )
        .unwrap();
    let explained = &results[0].0.explanations;
    let degenerate = |m: Method| {
        let e = explained.iter().find(|e| e.method == m).unwrap();
        e.degenerate_graphs.clone()
    };
    assert_eq!(degenerate(Method::Dsmi), Vec::<String>::new());
    // A gap at rounding level: exactly 0, or 4.4e-16 as the products round now.
    let graphs = degenerate(Method::DsmiGrad);
    let gap = match graphs.as_slice() {
        [graph] => graph
            .strip_prefix("text cross layer 0 (gap ")
            .and_then(|rest| rest.strip_suffix(')'))
            .and_then(|gap| gap.parse::<f64>().ok()),
        _ => None,
    };
    assert!(
        gap.is_some_and(|gap| gap < 1e-12),
        "expected text cross layer 0 with a zero gap, got {graphs:?}"
    );
}

/// LXMERT says an empty question is empty, as ViLT and CLIP do (it said "no word tokens").
#[test]
fn an_empty_lxmert_question_is_said_to_be_empty() {
    let session = LxmertSession::open(&models().join("lxmert-synth"), None).unwrap();
    let request = |question: &str| RegionRequest {
        regions: Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples/regions/shapes-4.safetensors"),
        image_id: None,
        question: question.into(),
    };
    let Err(e) = session.explain(
        &[request("what color is the triangle?"), request("  ")],
        &[],
        &MethodOptions::default(),
        &AnswerTarget::Predicted,
        2,
        |_| {},
    ) else {
        panic!("an empty question was explained");
    };
    assert!(matches!(e, SessionError::EmptyText { index: 1 }), "{e}");
}

/// CLIP's scores refuse an empty text, or no texts, as its explanations do (an empty
/// caption was scored).
#[test]
fn clip_scores_refuse_empty_texts() {
    let session = ClipSession::open(&models().join("clip-synth")).unwrap();
    let image = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/images/shapes-1.png");
    let e = session.scores(&image, &["a red square", " "]).unwrap_err();
    assert!(matches!(e, SessionError::EmptyText { index: 1 }), "{e}");
    let e = session.scores(&image, &[]).unwrap_err();
    assert!(matches!(e, SessionError::NoPairs), "{e}");
    assert_eq!(session.scores(&image, &["a red square"]).unwrap().len(), 1);
}

/// A missing or unreadable file in any request, or an answer the model lacks, stops the call
/// before the first batch runs (it was found when its batch came, after the work before it,
/// which was then dropped).
#[test]
fn requests_are_checked_before_any_batch() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // A format the guesser knows and fiedler is built without: a 1 × 1 PPM.
    let scratch = |name: &str| {
        std::env::temp_dir().join(format!("fiedler-requests-{}-{name}", std::process::id()))
    };
    let ppm = scratch("ppm.png");
    fs::write(&ppm, b"P6\n1 1\n255\n\0\0\0").unwrap();
    // A JPEG cut short (a partial download), a PNG whose header is cut, and an image so wide
    // that ViLT's resize leaves it no rows: each found from the file and its header alone.
    let jpeg = fs::read(root.join("tests/fixtures/images/coco_127510.jpg")).unwrap();
    let cut_jpeg = scratch("cut.jpg");
    fs::write(&cut_jpeg, &jpeg[..jpeg.len() / 2]).unwrap();
    let png = fs::read(root.join("examples/images/shapes-1.png")).unwrap();
    let cut_png = scratch("cut.png");
    fs::write(&cut_png, &png[..20]).unwrap();
    let wide = scratch("wide.png");
    image::RgbImage::new(3000, 6).save(&wide).unwrap();
    let pair = |image: &str| PairRequest {
        image: root.join(image),
        text: "what color is the square?".into(),
    };
    fn no_batch_ran(done: usize) {
        panic!("a batch ran ({done} done) before the bad file was found")
    }
    let vilt = ViltSession::open(&models().join("vilt-synth")).unwrap();
    let opts = MethodOptions::default();
    for (bad, expected) in [
        ("examples/images/missing.png", "not found"),
        ("README.md", "none of the formats fiedler reads"),
        ("examples", "cannot read image"),
        (ppm.to_str().unwrap(), "none of the formats fiedler reads"),
        (
            cut_jpeg.to_str().unwrap(),
            "ends before its end-of-image marker",
        ),
        (cut_png.to_str().unwrap(), "is not a readable image"),
        (
            wide.to_str().unwrap(),
            "3000×6 pixels, which resizes to 144×0",
        ),
    ] {
        let pairs = [pair("examples/images/shapes-1.png"), pair(bad)];
        let e = vilt
            .explain(
                &pairs,
                &[Method::Dsmi],
                &opts,
                &AnswerTarget::Predicted,
                1,
                no_batch_ran,
            )
            .unwrap_err();
        assert!(e.to_string().contains(expected), "{bad}: {e}");
    }
    for file in [&ppm, &cut_jpeg, &cut_png, &wide] {
        fs::remove_file(file).unwrap();
    }
    let shapes = [pair("examples/images/shapes-1.png")];
    let e = vilt
        .explain(
            &shapes,
            &[Method::Dsmi],
            &opts,
            &AnswerTarget::Answer(999),
            1,
            no_batch_ran,
        )
        .unwrap_err();
    assert!(e.to_string().contains("index 999 is out of range"), "{e}");
    let clip = ClipSession::open(&models().join("clip-synth")).unwrap();
    let pairs = [
        pair("examples/images/shapes-1.png"),
        pair("examples/images/missing.png"),
    ];
    let e = clip
        .explain(&pairs, &[Method::Dsmi], &opts, 1, no_batch_ran)
        .unwrap_err();
    assert!(e.to_string().contains("not found"), "{e}");

    let lxmert = LxmertSession::open(&models().join("lxmert-synth"), None).unwrap();
    let request = |regions: &str| RegionRequest {
        regions: root.join(regions),
        image_id: None,
        question: "what color is the triangle?".into(),
    };
    for (bad, expected) in [
        ("examples/regions/missing.safetensors", "not found"),
        ("tests/fixtures/lxmert/regions.tsv", "image id"),
        ("examples/regions", "Is a directory"),
    ] {
        let requests = [
            request("examples/regions/shapes-1.safetensors"),
            request(bad),
        ];
        let e = lxmert
            .explain(
                &requests,
                &[Method::Dsmi],
                &opts,
                &AnswerTarget::Predicted,
                1,
                no_batch_ran,
            )
            .unwrap_err();
        assert!(e.to_string().contains(expected), "{bad}: {e}");
    }
    let e = lxmert
        .explain(
            &[request("examples/regions/shapes-1.safetensors")],
            &[Method::Dsmi],
            &opts,
            &AnswerTarget::Answer(999),
            1,
            no_batch_ran,
        )
        .unwrap_err();
    assert!(e.to_string().contains("index 999 is out of range"), "{e}");
}

/// The progress callback stops the work after the batch it is told of, by `false` or by a
/// `ControlFlow::Break`, and `explain` returns the batches done, in order.
#[test]
fn the_progress_callback_can_stop_the_work() {
    let vilt = ViltSession::open(&models().join("vilt-synth")).unwrap();
    let image = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/images/shapes-1.png");
    let questions = [
        "what color is the square?",
        "is there a cross?",
        "how many?",
    ];
    let pairs: Vec<PairRequest> = questions
        .iter()
        .map(|q| PairRequest {
            image: image.clone(),
            text: q.to_string(),
        })
        .collect();
    let (methods, opts) = ([Method::Dsmi], MethodOptions::default());
    let target = AnswerTarget::Predicted;
    let done = vilt
        .explain(&pairs, &methods, &opts, &target, 1, |done| done < 2)
        .unwrap();
    let questions_of = |done: &[fiedler::session::QuestionResult]| {
        done.iter().map(|r| r.question.clone()).collect::<Vec<_>>()
    };
    assert_eq!(questions_of(&done), questions[..2]);
    let stop = |done: usize| {
        if done < 1 {
            std::ops::ControlFlow::Continue(())
        } else {
            std::ops::ControlFlow::Break(())
        }
    };
    let done = vilt
        .explain(&pairs, &methods, &opts, &target, 1, stop)
        .unwrap();
    assert_eq!(questions_of(&done), questions[..1]);
}

/// A start layer outside the model is refused before any batch runs (it was found only
/// after the first batch's forward and backward), for each family: before the batch's
/// missing image or regions file is found missing.
#[test]
fn start_layers_are_checked_before_any_batch() {
    let opts = |start_layer, start_layer_text| MethodOptions {
        start_layer,
        start_layer_text,
        ..MethodOptions::default()
    };
    let image = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/images/missing.png");
    let pair = |text: &str| PairRequest {
        image: image.clone(),
        text: text.into(),
    };
    let vilt = ViltSession::open(&models().join("vilt-synth")).unwrap();
    let e = vilt
        .explain(
            &[pair("what color is the square?")],
            &[Method::Rollout],
            &opts(99, 0),
            &AnswerTarget::Predicted,
            1,
            |_| {},
        )
        .unwrap_err();
    assert!(e.to_string().contains("--start-layer"), "{e}");
    let clip = ClipSession::open(&models().join("clip-synth")).unwrap();
    let e = clip
        .explain(
            &[pair("a green square")],
            &[Method::Rollout],
            &opts(0, -99),
            1,
            |_| {},
        )
        .unwrap_err();
    assert!(e.to_string().contains("--start-layer-text"), "{e}");
    let lxmert = LxmertSession::open(&models().join("lxmert-synth"), None).unwrap();
    let request = RegionRequest {
        regions: Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/regions/missing.safetensors"),
        image_id: None,
        question: "what color is the triangle?".into(),
    };
    let e = lxmert
        .explain(
            &[request],
            &[Method::Rollout],
            &opts(1, 0),
            &AnswerTarget::Predicted,
            1,
            |_| {},
        )
        .unwrap_err();
    assert!(e.to_string().contains("--start-layer"), "{e}");
}
