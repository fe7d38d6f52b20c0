//! The model-side deletions of the perturbation benchmark (spec §E) against transformers:
//! ViLT with patches deleted from the sequence (each kept patch with its own position
//! embedding), LXMERT with regions kept in top-k order down to none, both with words deleted.
//! Golden logits: tools/reference/make_eval_fixture.py (tests/fixtures/eval/deletion.json).
//!
//! Tolerance: logits ≤ 1e-5 relative to the largest logit, as the forward tests. Keeping
//! every patch or region through the deletion options must give the plain forward's logits
//! exactly, and mixing deletions in one padded batch must give each sample's own logits.
//! The benchmark's own forwards (`EvalModel::predict` on a step's `Keep`) must give the
//! golden logits' answers.

mod common;

use common::{fixtures, floats, max_diff_rel_to_max, Golden};
use fiedler::backend::Cpu;
use fiedler::eval::runner::{Answering, Keep};
use fiedler::input::regions::{load_regions, Regions};
use fiedler::input::text::TextTokenizer;
use fiedler::input::vilt::pad_batch;
use fiedler::model::lxmert::LxmertInputs;
use fiedler::model::vilt::ViltInputs;
use fiedler::session::{LxmertSession, ViltSession};
use serde_json::Value;

fn golden() -> Value {
    let text = std::fs::read_to_string(fixtures().join("eval/deletion.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn indices(v: &Value) -> Vec<usize> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect()
}

fn pad_rows(rows: &[Vec<u32>]) -> (Vec<u32>, Vec<usize>, usize) {
    let seq_len = rows.iter().map(Vec::len).max().unwrap();
    let mut ids = Vec::new();
    for r in rows {
        ids.extend(r);
        ids.extend(std::iter::repeat_n(0, seq_len - r.len()));
    }
    (ids, rows.iter().map(Vec::len).collect(), seq_len)
}

/// The golden question's ids, checked against the golden's.
fn question_ids(tokenizer: &TextTokenizer, g: &Value) -> Vec<u32> {
    let tokens = tokenizer
        .encode_batch(&[g["question"].as_str().unwrap()])
        .unwrap();
    let ids: Vec<u32> = tokens.row(0)[..tokens.lengths[0]].to_vec();
    let golden: Vec<u32> = indices(&g["ids"]).iter().map(|&i| i as u32).collect();
    assert_eq!(ids, golden);
    ids
}

/// Each case's (token ids, kept image units): `image_key` lists the units kept, `kept_words`
/// the token positions kept; neither keeps everything.
fn case_rows(
    cases: &[Value],
    image_key: &str,
    ids: &[u32],
    all: &[usize],
) -> Vec<(Vec<u32>, Vec<usize>)> {
    cases
        .iter()
        .map(|c| match (&c[image_key], &c["kept_words"]) {
            (Value::Array(_), _) => (ids.to_vec(), indices(&c[image_key])),
            (_, Value::Array(_)) => {
                let words = indices(&c["kept_words"]);
                (words.iter().map(|&p| ids[p]).collect(), all.to_vec())
            }
            _ => (ids.to_vec(), all.to_vec()),
        })
        .collect()
}

fn check(what: &str, ours: &[f32], theirs: &[f32]) {
    let err = max_diff_rel_to_max(ours, theirs);
    assert!(err <= 1e-5, "{what}: logits err/max {err:.3e}");
}

#[test]
fn vilt_patch_and_word_deletion_match_transformers() {
    let g = &golden()["vilt"];
    let session = ViltSession::open(&fixtures().join("vilt")).unwrap();
    // transformers' pixel values: the model is under test here, not preprocessing.
    let (_, h, w) = session
        .processor()
        .preprocess_file(&fixtures().join("images").join(g["image"].as_str().unwrap()))
        .unwrap();
    let pixels =
        Golden::open(&fixtures().join("eval/deletion.safetensors")).f32("vilt.pixel_values");
    assert_eq!(pixels.len(), 3 * h * w);
    let ids = question_ids(session.tokenizer(), g);
    let patch = session.model().config.patch_size;
    let all: Vec<usize> = (0..(h / patch) * (w / patch)).collect();

    // One padded batch per case list: every row's logits against its own golden.
    let cases = g["cases"].as_array().unwrap();
    let rows = case_rows(cases, "kept_patches", &ids, &all);
    let images: Vec<(&[f32], usize, usize)> =
        rows.iter().map(|_| (pixels.as_slice(), h, w)).collect();
    let padded = pad_batch(&images);
    let texts: Vec<Vec<u32>> = rows.iter().map(|(t, _)| t.clone()).collect();
    let (batch_ids, lengths, seq_len) = pad_rows(&texts);
    let x = ViltInputs {
        pixels: padded.data.clone(),
        pixel_mask: padded.mask.clone(),
        height: padded.height,
        width: padded.width,
        ids: batch_ids,
        lengths,
        seq_len,
        kept_patches: Some(rows.iter().map(|(_, k)| k.clone()).collect()),
    };
    let out = session.model().logits(&Cpu, &x).unwrap();
    let n = out.labels;
    for (b, case) in cases.iter().enumerate() {
        check(
            &format!("vilt case {b}"),
            &out.logits[b * n..(b + 1) * n],
            &floats(&case["logits"]),
        );
    }

    // Keeping every patch through kept_patches is the plain forward, bit for bit.
    let single = |kept: Option<Vec<Vec<usize>>>| {
        let x = ViltInputs {
            pixels: pixels.clone(),
            pixel_mask: vec![true; h * w],
            height: h,
            width: w,
            ids: ids.clone(),
            lengths: vec![ids.len()],
            seq_len: ids.len(),
            kept_patches: kept,
        };
        session.model().logits(&Cpu, &x).unwrap().logits
    };
    assert_eq!(single(None), single(Some(vec![all.clone()])));
}

/// The LXMERT fixture's session and the golden's region features.
fn lxmert_fixture(g: &Value) -> (LxmertSession, Regions) {
    let session = LxmertSession::open(&fixtures().join("lxmert"), None).unwrap();
    let regions = load_regions(
        &fixtures()
            .join("lxmert")
            .join(g["regions"].as_str().unwrap()),
        None,
    )
    .unwrap();
    (session, regions)
}

#[test]
fn lxmert_region_and_word_deletion_match_transformers() {
    let g = &golden()["lxmert"];
    let (session, regions) = lxmert_fixture(g);
    let ids = question_ids(session.tokenizer(), g);
    let (f, all) = (regions.dim, (0..regions.count).collect::<Vec<_>>());

    let cases = g["cases"].as_array().unwrap();
    let rows = case_rows(cases, "regions", &ids, &all);
    let n = regions.count;
    let mut features = vec![0.0f32; rows.len() * n * f];
    let mut boxes = vec![0.0f32; rows.len() * n * 4];
    for (s, (_, order)) in rows.iter().enumerate() {
        for (slot, &r) in order.iter().enumerate() {
            let row = s * n + slot;
            features[row * f..(row + 1) * f].copy_from_slice(&regions.features[r * f..(r + 1) * f]);
            boxes[row * 4..(row + 1) * 4].copy_from_slice(&regions.boxes[r * 4..(r + 1) * 4]);
        }
    }
    let texts: Vec<Vec<u32>> = rows.iter().map(|(t, _)| t.clone()).collect();
    let (batch_ids, lengths, seq_len) = pad_rows(&texts);
    let x = LxmertInputs {
        features,
        boxes,
        regions: n,
        region_counts: Some(rows.iter().map(|(_, o)| o.len()).collect()),
        ids: batch_ids,
        lengths,
        seq_len,
    };
    let out = session.model().logits(&Cpu, &x).unwrap();
    let labels = out.labels;
    for (b, case) in cases.iter().enumerate() {
        check(
            &format!("lxmert case {b}"),
            &out.logits[b * labels..(b + 1) * labels],
            &floats(&case["logits"]),
        );
    }

    // region_counts that keep everything are the plain forward, bit for bit.
    let single = |counts: Option<Vec<usize>>| {
        let x = LxmertInputs {
            features: regions.features.clone(),
            boxes: regions.boxes.clone(),
            regions: n,
            region_counts: counts,
            ids: ids.clone(),
            lengths: vec![ids.len()],
            seq_len: ids.len(),
        };
        session.model().logits(&Cpu, &x).unwrap().logits
    };
    assert_eq!(single(None), single(Some(vec![n])));
}

fn argmax(v: &[f32]) -> usize {
    (0..v.len()).fold(0, |best, i| if v[i] > v[best] { i } else { best })
}

/// Each golden case as the benchmark names its input: `image_key` lists the units kept,
/// `kept_words` the token positions kept, neither: the whole input.
fn case_keeps(cases: &[Value], image_key: &str) -> Vec<Keep> {
    cases
        .iter()
        .map(|c| match (&c[image_key], &c["kept_words"]) {
            (Value::Array(_), _) => Keep::Image(indices(&c[image_key])),
            (_, Value::Array(_)) => Keep::Text(indices(&c["kept_words"])),
            _ => Keep::All,
        })
        .collect()
}

/// The golden answers (argmax of each case's logits; every margin ≥ 0.066, against logit
/// errors ≤ 1e-5 of the max), checked to tell deletions apart from the whole input: a
/// forward that ignored the deletion would answer differently.
fn golden_answers(cases: &[Value], deleting: &[&str]) -> Vec<usize> {
    let answers: Vec<usize> = cases
        .iter()
        .map(|c| argmax(&floats(&c["logits"])))
        .collect();
    for key in deleting {
        assert!(
            cases
                .iter()
                .zip(&answers)
                .any(|(c, &a)| c[key].is_array() && a != answers[0]),
            "no {key} case changes the answer: the check below could not fail"
        );
    }
    answers
}

/// The benchmark's own perturbed forwards (`EvalModel::predict` on a step's `Keep`, as the
/// runner calls it) answer as transformers does on the same deletions: LXMERT regions kept
/// in top-k order down to none, ViLT patches deleted, words deleted. This pins the glue from
/// kept units to model inputs (`eval::tokens`, `LxmertEval::batch`, `ViltSession::batch`),
/// which the tests above bypass by building the model inputs by hand.
#[test]
fn benchmark_forwards_answer_like_the_golden_deletions() {
    let g = &golden()["lxmert"];
    let (session, regions) = lxmert_fixture(g);
    let input = session
        .eval_input(regions, g["question"].as_str().unwrap())
        .unwrap();
    let cases = g["cases"].as_array().unwrap();
    let keeps = case_keeps(cases, "regions");
    let items: Vec<_> = keeps.iter().map(|k| (&input, k)).collect();
    let expected = golden_answers(cases, &["regions", "kept_words"]);
    assert_eq!(
        session.evaluator().predict(&items).unwrap(),
        expected,
        "lxmert, cases {keeps:?}"
    );

    let g = &golden()["vilt"];
    let session = ViltSession::open(&fixtures().join("vilt")).unwrap();
    let image = fixtures().join("images").join(g["image"].as_str().unwrap());
    let input = session
        .eval_input(&image, g["question"].as_str().unwrap())
        .unwrap();
    let cases = g["cases"].as_array().unwrap();
    let keeps = case_keeps(cases, "kept_patches");
    let items: Vec<_> = keeps.iter().map(|k| (&input, k)).collect();
    let expected = golden_answers(cases, &["kept_patches"]);
    assert_eq!(
        session.predict(&items).unwrap(),
        expected,
        "vilt, cases {keeps:?}"
    );
}
