//! Explanations of the bundled demo models scored against `fiedler synth` ground truth: per
//! method, the pointing game, relevance mass on the relevant objects and the rank of the best
//! relevant question word, on held-out questions whose answer needs an object in view. Checks
//! that the scores are computed end to end and that explanations of a trained model localise
//! the asked-about objects better than relevance spread evenly (the chance baseline).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use fiedler::explain::{Explanation, Method, MethodOptions};
use fiedler::session::{AnswerTarget, LxmertSession, PairRequest, RegionRequest, ViltSession};
use fiedler::synth::metrics::{
    mass_in_mask, patch_overlap, pointing_game, region_object_overlap, relevant_word_rank,
    span_words, ObjectMask,
};
use serde_json::Value;

const HELD_OUT_SEED: u64 = 9001;
const IMAGES: usize = 25;

struct Case {
    image: PathBuf,
    regions: PathBuf,
    question: String,
    mask: Vec<u8>,
    width: usize,
    height: usize,
    relevant: Vec<usize>,
    relevant_words: Vec<usize>,
    region_objects: Vec<Option<usize>>,
}

fn cases(name: &str) -> (PathBuf, Vec<Case>) {
    let dir = std::env::temp_dir().join(format!("fiedler-gt-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fiedler::synth::write_set(&dir, IMAGES, HELD_OUT_SEED, || {}).unwrap();
    let gt: Value =
        serde_json::from_str(&fs::read_to_string(dir.join("ground_truth.json")).unwrap()).unwrap();
    let images: BTreeMap<u64, &Value> = gt["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|im| (im["image_id"].as_u64().unwrap(), im))
        .collect();
    let ids = |v: &Value| -> Vec<usize> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as usize)
            .collect()
    };
    let cases = gt["questions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|q| !q["relevant_objects"].as_array().unwrap().is_empty())
        .map(|q| {
            let im = images[&q["image_id"].as_u64().unwrap()];
            let mask = image::open(dir.join(im["mask_file"].as_str().unwrap()))
                .unwrap()
                .to_luma8();
            Case {
                image: dir.join(im["file"].as_str().unwrap()),
                regions: dir.join(im["regions_file"].as_str().unwrap()),
                question: q["question"].as_str().unwrap().to_owned(),
                width: mask.width() as usize,
                height: mask.height() as usize,
                mask: mask.into_raw(),
                relevant: ids(&q["relevant_objects"]),
                relevant_words: ids(&q["relevant_words"]),
                region_objects: im["region_objects"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_u64().map(|x| x as usize))
                    .collect(),
            }
        })
        .collect();
    (dir, cases)
}

#[derive(Default)]
struct Tally {
    hits: f64,
    games: usize,
    mass: f64,
    masses: usize,
    rank: f64,
    ranks: usize,
}

/// Adds one explanation's scores; returns the chance mass (uniform relevance) for the baseline.
fn score(t: &mut Tally, e: &Explanation, overlap: &[f32], words: &[Option<usize>], case: &Case) {
    if let Some(hit) = pointing_game(&e.image_relevance, overlap).unwrap() {
        t.games += 1;
        t.hits += hit;
    }
    if let Some(m) = mass_in_mask(&e.image_relevance, overlap).unwrap() {
        t.mass += m as f64;
        t.masses += 1;
    }
    if let Some(r) = relevant_word_rank(&e.text_relevance, words, &case.relevant_words).unwrap() {
        t.rank += r;
        t.ranks += 1;
    }
}

/// Prints the table and checks that every method was scored and the best one beats chance on
/// pointing and mass.
fn report(
    model: &str,
    tallies: &BTreeMap<&'static str, Tally>,
    chance_point: f64,
    chance_mass: f64,
) {
    eprintln!("{model}: chance pointing {chance_point:.3}, chance mass {chance_mass:.3}");
    let mut best_point: f64 = 0.0;
    let mut best_mass: f64 = 0.0;
    for (name, t) in tallies {
        let point = t.hits / t.games.max(1) as f64;
        let mass = t.mass / t.masses.max(1) as f64;
        eprintln!(
            "  {name:15} pointing {point:.3} ({:.1}/{})  mass {mass:.3}  mean best-word rank {:.2}",
            t.hits,
            t.games,
            t.rank / t.ranks.max(1) as f64
        );
        best_point = best_point.max(point);
        best_mass = best_mass.max(mass);
        // Every method was scored on every case, and the questions name words to rank.
        assert!(
            t.games > 0 && t.masses > 0 && t.ranks > 0,
            "{model} {name}: unscored"
        );
    }
    assert!(
        best_point > 1.5 * chance_point,
        "{model}: no method points better than chance"
    );
    assert!(
        best_mass > 1.5 * chance_mass,
        "{model}: no method puts more mass on the objects than chance"
    );
}

fn models() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models")
}

#[test]
fn vilt_explanations_find_the_asked_about_objects() {
    let (dir, cases) = cases("vilt");
    let session = ViltSession::open(&models().join("vilt-synth")).unwrap();
    let pairs: Vec<PairRequest> = cases
        .iter()
        .map(|c| PairRequest {
            image: c.image.clone(),
            text: c.question.clone(),
        })
        .collect();
    let results = session
        .explain(
            &pairs,
            &Method::ALL,
            &MethodOptions::default(),
            &AnswerTarget::Predicted,
            16,
            |_| {},
        )
        .unwrap();
    let mut tallies: BTreeMap<&'static str, Tally> = BTreeMap::new();
    let (mut chance_point, mut chance_mass) = (0.0, 0.0);
    for (case, r) in cases.iter().zip(&results) {
        let (rows, cols) = r.explanations[0].image_grid;
        let mask = ObjectMask {
            labels: &case.mask,
            width: case.width,
            height: case.height,
            relevant: &case.relevant,
        };
        let overlap = patch_overlap(&mask, rows, cols).unwrap();
        let spans = session.tokenizer().token_spans(&case.question).unwrap();
        let words = span_words(&case.question, &spans);
        chance_point += overlap.iter().filter(|&&o| o > 0.0).count() as f64 / overlap.len() as f64;
        chance_mass += overlap.iter().map(|&o| o as f64).sum::<f64>() / overlap.len() as f64;
        for e in &r.explanations {
            score(
                tallies.entry(e.method.name()).or_default(),
                e,
                &overlap,
                &words,
                case,
            );
        }
    }
    let n = cases.len() as f64;
    report("vilt-synth", &tallies, chance_point / n, chance_mass / n);
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn lxmert_explanations_find_the_asked_about_regions() {
    let (dir, cases) = cases("lxmert");
    let session = LxmertSession::open(&models().join("lxmert-synth"), None).unwrap();
    let requests: Vec<RegionRequest> = cases
        .iter()
        .map(|c| RegionRequest {
            regions: c.regions.clone(),
            image_id: None,
            question: c.question.clone(),
        })
        .collect();
    let results = session
        .explain(
            &requests,
            &Method::ALL,
            &MethodOptions::default(),
            &AnswerTarget::Predicted,
            16,
            |_| {},
        )
        .unwrap();
    let mut tallies: BTreeMap<&'static str, Tally> = BTreeMap::new();
    let (mut chance_point, mut chance_mass) = (0.0, 0.0);
    for (case, (r, _)) in cases.iter().zip(&results) {
        // a region is on target when it shows a relevant object
        let overlap = region_object_overlap(&case.region_objects, &case.relevant);
        let spans = session.tokenizer().token_spans(&case.question).unwrap();
        let words = span_words(&case.question, &spans);
        let share = overlap.iter().sum::<f32>() as f64 / overlap.len() as f64;
        chance_point += share;
        chance_mass += share;
        for e in &r.explanations {
            score(
                tallies.entry(e.method.name()).or_default(),
                e,
                &overlap,
                &words,
                case,
            );
        }
    }
    let n = cases.len() as f64;
    report("lxmert-synth", &tallies, chance_point / n, chance_mass / n);
    fs::remove_dir_all(dir).unwrap();
}
