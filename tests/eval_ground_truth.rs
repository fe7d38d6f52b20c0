//! `fiedler eval` on a tiny `fiedler synth` set with the random-weight fixtures: a
//! `ground-truth` line per sample × method with scores in range, the report's ground-truth
//! table, reruns byte-identical, a cut-off run resumed equal to a whole one, and the run
//! header keeping runs with and without ground truth apart; LXMERT's lines equal the scores
//! computed straight from the library.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::fixtures;
use fiedler::explain::{Method, MethodOptions};
use fiedler::session::{AnswerTarget, ClipSession, LxmertSession, PairRequest, RegionRequest};
use fiedler::synth::metrics::{
    mass_in_mask, pointing_game, region_object_overlap, relevant_word_rank, span_words,
};
use serde_json::Value;

fn run(args: &[String]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_fiedler"))
        .args(args)
        .output()
        .expect("binary runs");
    out
}

fn ok(args: &[String]) -> Output {
    let out = run(args);
    assert!(
        out.status.success(),
        "fiedler {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_owned()
}

/// A 3-image synth set (14 questions) in a fresh scratch folder.
fn synth_set(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fiedler-eval-gt-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let set = dir.join("set");
    ok(&[
        "synth".into(),
        "--out".into(),
        s(&set),
        "--images".into(),
        "3".into(),
        "--seed".into(),
        "5".into(),
    ]);
    dir
}

fn vilt_args(dir: &Path, results: &Path) -> Vec<String> {
    let set = dir.join("set");
    [
        "eval",
        "--model",
        &s(&fixtures().join("vilt")),
        "--questions",
        &s(&set.join("questions.json")),
        "--annotations",
        &s(&set.join("annotations.json")),
        "--images",
        &s(&set.join("images")),
        "--file-pattern",
        "synth_{id:012}.png",
        "--results",
        &s(results),
        "--batch",
        "4",
    ]
    .iter()
    .map(|a| (*a).to_owned())
    .collect()
}

fn lines(path: &Path, kind: &str) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["kind"] == kind)
        .collect()
}

fn question_ids(dir: &Path) -> BTreeSet<String> {
    let q: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("set").join("questions.json")).unwrap(),
    )
    .unwrap();
    q["questions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["question_id"].to_string())
        .collect()
}

/// Every sample × method has one ground-truth line, with scores in range; returns how many
/// lines have an image score.
fn check_lines(results: &Path, samples: &BTreeSet<String>) -> usize {
    let gt = lines(results, "ground-truth");
    assert_eq!(gt.len(), samples.len() * Method::ALL.len());
    let mut with_image = 0;
    for sample in samples {
        let mine: Vec<&Value> = gt.iter().filter(|v| v["sample"] == **sample).collect();
        let methods: Vec<&str> = mine.iter().map(|v| v["method"].as_str().unwrap()).collect();
        let all: Vec<&str> = Method::ALL.iter().map(|m| m.name()).collect();
        assert_eq!(methods, all, "sample {sample}");
        for v in mine {
            let words = v["words"].as_u64().unwrap();
            assert!((3..=8).contains(&words), "{v}");
            if let Some(rank) = v["word_rank"].as_f64() {
                assert!((1.0..=words as f64).contains(&rank), "{v}");
                let chance = v["chance_word_rank"].as_f64().unwrap();
                assert!(chance >= 1.0 && chance <= words as f64, "{v}");
            }
            match v["pointing"].as_f64() {
                Some(p) => {
                    assert!((0.0..=1.0).contains(&p), "{v}");
                    with_image += 1;
                    let chance = v["chance_pointing"].as_f64().unwrap();
                    assert!(chance > 0.0 && chance <= 1.0, "{v}");
                    let cm = v["chance_mass"].as_f64().unwrap();
                    assert!(cm > 0.0 && cm <= chance, "{v}");
                    if let Some(m) = v["mass"].as_f64() {
                        assert!((0.0..=1.0).contains(&m), "{v}");
                    }
                }
                // no relevant object: no image score at all
                None => assert!(v["mass"].is_null() && v["chance_pointing"].is_null(), "{v}"),
            }
        }
    }
    with_image
}

#[test]
fn vilt_eval_scores_ground_truth_and_resumes() {
    let dir = synth_set("vilt");
    let samples = question_ids(&dir);
    let results = dir.join("a").join("results.jsonl");
    let out = ok(&vilt_args(&dir, &results));
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains("## Ground truth"), "{printed}");

    let header = &lines(&results, "run")[0];
    assert_eq!(
        header["ground_truth"].as_str().unwrap(),
        s(&dir.join("set").join("ground_truth.json"))
    );
    let with_image = check_lines(&results, &samples);
    // "is there …?" answered "no" has no relevant object; the rest do
    assert!(with_image > 0 && with_image < samples.len() * Method::ALL.len());
    // the scores are those of the explanation: patch grids of 4×4 on these 64-px inputs
    let gt = lines(&results, "ground-truth");
    assert!(gt
        .iter()
        .filter_map(|v| v["chance_pointing"].as_f64())
        .all(|c| (c * 16.0 - (c * 16.0).round()).abs() < 1e-9));

    // the report: one row per method and a chance row, in markdown and JSON
    let md = std::fs::read_to_string(dir.join("a").join("report.md")).unwrap();
    let section = md
        .split("## Ground truth")
        .nth(1)
        .expect("ground-truth section");
    for m in Method::ALL {
        assert!(section.contains(&format!("| {} | ", m.name())), "{m}");
    }
    assert!(section.contains("| chance | "));
    assert!(
        section.contains("most relevant patch overlaps (by any of its pixels) an object"),
        "{section}"
    );
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("a").join("report.json")).unwrap())
            .unwrap();
    let rows = json["ground_truth"].as_array().unwrap();
    assert_eq!(rows.len(), Method::ALL.len() + 1);
    for row in rows {
        assert_eq!(row["samples"].as_u64().unwrap() as usize, samples.len());
        let p = row["pointing"]["mean"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&p), "{row}");
    }

    // a rerun adds nothing; a fresh run writes the same bytes
    let whole = std::fs::read(&results).unwrap();
    ok(&vilt_args(&dir, &results));
    assert_eq!(std::fs::read(&results).unwrap(), whole);
    let again = dir.join("b").join("results.jsonl");
    ok(&vilt_args(&dir, &again));
    assert_eq!(std::fs::read(&again).unwrap(), whole);

    // cut off inside the last chunk's ground-truth lines and inside its perturbation lines:
    // the resumed file holds the whole one's lines, and the resumed run's start
    let text = String::from_utf8(whole.clone()).unwrap();
    let all: Vec<&str> = text.lines().collect();
    let without_starts = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| !l.contains(r#""kind":"started""#))
            .map(str::to_owned)
            .collect()
    };
    for cut in [3, Method::ALL.len() * 2 + 7] {
        let kept = all[..all.len() - cut].join("\n") + "\n";
        std::fs::write(&again, kept).unwrap();
        ok(&vilt_args(&dir, &again));
        let resumed = std::fs::read_to_string(&again).unwrap();
        assert_eq!(
            without_starts(&resumed),
            without_starts(&text),
            "resumed after cutting {cut} lines"
        );
        assert_eq!(resumed.matches(r#""kind":"started""#).count(), 2);
        std::fs::write(&again, &whole).unwrap();
    }

    // `eval report` rebuilds the same report
    let rebuilt = dir.join("rebuilt");
    ok(&[
        "eval".into(),
        "report".into(),
        s(&results),
        "--out".into(),
        s(&rebuilt),
    ]);
    assert_eq!(
        std::fs::read_to_string(rebuilt.join("report.md")).unwrap(),
        md
    );

    // without ground truth: no ground-truth lines, and the two runs do not mix
    let mut plain = vilt_args(&dir, &results);
    plain.push("--no-ground-truth".into());
    let out = run(&plain);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ground truth"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plain_results = dir.join("c").join("results.jsonl");
    let mut plain = vilt_args(&dir, &plain_results);
    plain.push("--no-ground-truth".into());
    ok(&plain);
    assert!(lines(&plain_results, "ground-truth").is_empty());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn lxmert_eval_scores_regions_against_their_objects() {
    let dir = synth_set("lxmert");
    let set = dir.join("set");
    let samples = question_ids(&dir);
    let results = dir.join("results.jsonl");
    let args: Vec<String> = [
        "eval",
        "--model",
        &s(&fixtures().join("lxmert")),
        "--questions",
        &s(&set.join("questions.json")),
        "--annotations",
        &s(&set.join("annotations.json")),
        "--ground-truth",
        &s(&set.join("ground_truth.json")),
        "--features",
        &s(&set.join("regions")),
        "--file-pattern",
        "synth_{id:012}.safetensors",
        "--results",
        &s(&results),
        "--modality",
        "text",
    ]
    .iter()
    .map(|a| (*a).to_owned())
    .collect();
    ok(&args);
    assert!(check_lines(&results, &samples) > 0);
    // The report says how regions are scored: by the object each was cut around.
    let md = std::fs::read_to_string(results.with_file_name("report.md")).unwrap();
    assert!(
        md.contains("most relevant region was cut around an object the question is about")
            && !md.contains("by any of its pixels"),
        "{md}"
    );

    // the same scores straight from the library: each question explained alone, its regions
    // scored by the objects ground_truth.json says they show
    let truth: Value =
        serde_json::from_str(&std::fs::read_to_string(set.join("ground_truth.json")).unwrap())
            .unwrap();
    let session = LxmertSession::open(&fixtures().join("lxmert"), None).unwrap();
    let eval_lines = lines(&results, "ground-truth");
    for q in truth["questions"].as_array().unwrap() {
        let image =
            &truth["images"].as_array().unwrap()[q["image_id"].as_u64().unwrap() as usize - 1];
        let ids = |v: &Value| -> Vec<usize> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as usize)
                .collect()
        };
        let region_objects: Vec<Option<usize>> = image["region_objects"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().map(|x| x as usize))
            .collect();
        let question = q["question"].as_str().unwrap();
        let request = RegionRequest {
            regions: set.join(image["regions_file"].as_str().unwrap()),
            image_id: None,
            question: question.to_owned(),
        };
        let (r, _) = session
            .explain(
                &[request],
                &Method::ALL,
                &MethodOptions::default(),
                &AnswerTarget::Predicted,
                1,
                |_| {},
            )
            .unwrap()
            .remove(0);
        let overlap = region_object_overlap(&region_objects, &ids(&q["relevant_objects"]));
        let words = span_words(
            question,
            &session.tokenizer().token_spans(question).unwrap(),
        );
        // The results name a sample by its question id as a string.
        let sample = q["question_id"].to_string();
        for e in &r.explanations {
            let line = eval_lines
                .iter()
                .find(|v| v["sample"] == sample && v["method"] == e.method.name())
                .unwrap();
            let pointing = pointing_game(&e.image_relevance, &overlap).unwrap();
            assert_eq!(line["pointing"].as_f64(), pointing, "{line}");
            // The eval batches questions, the library call here does not: the two differ by
            // the products' rounding. The LRP maps amplify it (partial LRP's min–max scaling
            // of a nearly constant map moved one mass by 7e-4 on this random-weight model).
            let tolerance = if e.method.needs_relevance() {
                5e-3
            } else {
                1e-4
            };
            match mass_in_mask(&e.image_relevance, &overlap).unwrap() {
                Some(m) => assert!(
                    (line["mass"].as_f64().unwrap() - f64::from(m)).abs() < tolerance,
                    "{line}"
                ),
                None => assert!(line["mass"].is_null(), "{line}"),
            }
            let rank =
                relevant_word_rank(&e.text_relevance, &words, &ids(&q["relevant_words"])).unwrap();
            assert_eq!(line["word_rank"].as_f64(), rank, "{line}");
        }
    }
    // 10 regions per image, each on one object or none: chance levels are tenths, and
    // pointing at a region of a relevant object is a whole hit
    for v in lines(&results, "ground-truth") {
        if let Some(c) = v["chance_pointing"].as_f64() {
            assert!((c * 10.0 - (c * 10.0).round()).abs() < 1e-9, "{v}");
            assert_eq!(v["chance_mass"].as_f64().unwrap(), c, "{v}");
        }
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// Whether the fixture CLIP scores each image's true caption above its others (1, 0, 1/k for a
/// tie of k at the top), as the library's explanation pass (a trace, not the forward eval
/// uses) finds, by sample id. So that both cases occur, with the true caption second: the
/// first image that scores it above a distractor keeps only the lowest one before it, and the
/// first that scores a distractor above it keeps only the highest one.
fn clip_retrieval(set: &Path) -> Vec<(String, f64)> {
    let path = set.join("captions.json");
    let mut sets: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let session = ClipSession::open(&fixtures().join("clip")).unwrap();
    let (mut beaten, mut beating) = (false, false);
    let mut retrieval = Vec::new();
    for line in sets.as_array_mut().unwrap() {
        let pairs: Vec<PairRequest> = line["captions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| PairRequest {
                image: set.join(line["file"].as_str().unwrap()),
                text: c.as_str().unwrap().to_owned(),
            })
            .collect();
        let scores: Vec<f32> = session
            .explain(&pairs, &[], &MethodOptions::default(), 8, |_| {})
            .unwrap()
            .iter()
            .map(|r| r.score)
            .collect();
        let correct = line["correct"].as_u64().unwrap() as usize;
        let truth = scores[correct];
        let others = (0..scores.len()).filter(|&k| k != correct);
        let lowest = others
            .clone()
            .min_by(|&a, &b| scores[a].total_cmp(&scores[b]));
        let highest = others.max_by(|&a, &b| scores[a].total_cmp(&scores[b]));
        let keep_before_truth = |k: usize, line: &mut Value| {
            let captions = [
                line["captions"][k].clone(),
                line["captions"][correct].clone(),
            ];
            line["captions"] = Value::from(captions.to_vec());
            line["correct"] = Value::from(1);
        };
        let share = match (lowest, highest) {
            (Some(k), _) if !beaten && scores[k] < truth => {
                beaten = true;
                keep_before_truth(k, line);
                1.0
            }
            (_, Some(k)) if !beating && scores[k] > truth => {
                beating = true;
                keep_before_truth(k, line);
                0.0
            }
            _ if scores.iter().any(|&s| s > truth) => 0.0,
            _ => 1.0 / scores.iter().filter(|&&s| s == truth).count() as f64,
        };
        retrieval.push((line["image_id"].to_string(), share));
    }
    assert!(beaten && beating, "{retrieval:?}");
    std::fs::write(&path, sets.to_string()).unwrap();
    retrieval
}

#[test]
fn clip_eval_scores_true_captions_against_all_objects() {
    let dir = synth_set("clip");
    let set = dir.join("set");
    let results = dir.join("results.jsonl");
    let args: Vec<String> = [
        "eval",
        "--model",
        &s(&fixtures().join("clip")),
        "--captions",
        &s(&set.join("captions.json")),
        "--results",
        &s(&results),
    ]
    .iter()
    .map(|a| (*a).to_owned())
    .collect();
    let retrieval = clip_retrieval(&set);
    ok(&args);
    // ground truth only: no perturbation lines; every image × method scored, no word rank
    assert!(lines(&results, "perturbation").is_empty());
    let gt = lines(&results, "ground-truth");
    assert_eq!(gt.len(), 3 * Method::ALL.len());
    for v in &gt {
        let p = v["pointing"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&p), "{v}");
        assert!(v["word_rank"].is_null(), "{v}");
        let m = v["mass"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&m), "{v}");
    }
    for (sample, expected) in &retrieval {
        let said: Vec<Option<f64>> = gt
            .iter()
            .filter(|v| v["sample"] == sample.as_str())
            .map(|v| v["retrieved"].as_f64())
            .collect();
        assert_eq!(
            said,
            vec![Some(*expected); Method::ALL.len()],
            "sample {sample}"
        );
    }
    let summary = ok(&["eval".into(), "summary".into(), s(&results)]);
    let table = String::from_utf8_lossy(&summary.stdout);
    assert!(table.contains("| chance | "), "{table}");
    assert!(table.contains("| dsmi | "), "{table}");
    let top1 = 100.0 * retrieval.iter().map(|(_, r)| r).sum::<f64>() / 3.0;
    assert!(
        table.contains(&format!("; caption retrieval {top1:.1}% of 3")),
        "{table}"
    );
    // there is no perturbation record to compare the methods with
    let out = run(&[
        "eval".into(),
        "report".into(),
        s(&results),
        "--against".into(),
        "chefer".into(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains(&format!(
                "{} holds no perturbation records at all (a CLIP run is scored against ground truth only), so --against does not apply",
                results.display()
            )),
        "{err}"
    );
    // the report has no perturbation section: no empty AUC table, no steps
    let report = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(report.starts_with("# Ground-truth scores"), "{report}");
    assert!(
        !report.contains("## AUC") && !report.contains("steps"),
        "{report}"
    );
    assert!(report.contains("## Ground truth"), "{report}");
    assert!(
        report.contains(&format!("- caption retrieval: {top1:.1}% of 3 samples score their true caption above every other caption of their image")),
        "{report}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    for absent in ["steps", "auc_formula", "columns"] {
        assert!(json.get(absent).is_none(), "{absent} in {json}");
    }

    // refused runs: `eval --model CLIP` with `args`, failing with `needle` on stderr
    let refused = |args: &[String], needle: &str| {
        let mut all = vec!["eval".into(), "--model".into(), s(&fixtures().join("clip"))];
        all.extend_from_slice(args);
        let out = run(&all);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "{err}");
        assert!(err.contains(needle), "{err}");
    };
    let strings = |a: &[&str]| a.iter().map(|x| (*x).to_owned()).collect::<Vec<String>>();
    let captions = s(&set.join("captions.json"));
    // without captions, CLIP is refused with a pointer to them
    refused(
        &strings(&[
            "--questions",
            &s(&set.join("questions.json")),
            "--annotations",
            &s(&set.join("annotations.json")),
            "--results",
            &s(&dir.join("x.jsonl")),
        ]),
        "--captions",
    );
    // with captions but without ground truth there is nothing to score
    refused(
        &strings(&[
            "--captions",
            &captions,
            "--no-ground-truth",
            "--results",
            &s(&dir.join("y.jsonl")),
        ]),
        "scored against ground truth only",
    );
    // options that shape perturbation tests are refused, not ignored: CLIP removes nothing
    refused(
        &strings(&[
            "--captions",
            &captions,
            "--steps",
            "0,0.5,1",
            "--order",
            "most-relevant-first",
            "--results",
            &s(&dir.join("z.jsonl")),
        ]),
        "--order, --steps: these shape the perturbation tests of ViLT and LXMERT",
    );
    refused(
        &strings(&[
            "--captions",
            &captions,
            "--no-chance",
            "--target",
            "sum-logits",
            "--results",
            &s(&dir.join("z.jsonl")),
        ]),
        "--no-chance, --target: these shape the perturbation tests of ViLT and LXMERT",
    );
    assert!(!dir.join("z.jsonl").exists());
    std::fs::remove_dir_all(dir).unwrap();
}
