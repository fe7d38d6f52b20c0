//! `fiedler eval` end to end on the random-weight fixtures, with a tiny question file in each
//! format: the report's files and numbers, step 0 equal to the model's plain accuracy, reruns
//! byte-identical, a run killed part-way (kill -9) and resumed equal to an uninterrupted one,
//! and bad inputs failing with clear messages (or, per sample, logged and counted).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::fixtures;
use fiedler::eval::dataset::{read_lxmert_json, read_vqa_v2, Question};
use fiedler::eval::results::{read_results, PerturbationRecord};
use fiedler::explain::{Method, MethodOptions};
use fiedler::session::{AnswerTarget, LxmertSession, PairRequest, RegionRequest, ViltSession};
use serde_json::Value;

fn fiedler() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fiedler"))
}

fn run(args: &[&str]) -> Output {
    fiedler().args(args).output().expect("binary runs")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fiedler-eval-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn eval_fixture(name: &str) -> PathBuf {
    fixtures().join("eval").join(name)
}

/// LXMERT on its features folder, 7 questions (LXMERT format).
fn lxmert_args(results: &Path, batch: &str) -> Vec<String> {
    [
        "eval",
        "--model",
        &s(&fixtures().join("lxmert")),
        "--dataset",
        &s(&eval_fixture("lxmert-valid.json")),
        "--features",
        &s(&fixtures().join("lxmert")),
        "--file-pattern",
        "regions_{id}.safetensors",
        "--results",
        &s(results),
        "--batch",
        batch,
    ]
    .iter()
    .map(|a| (*a).to_owned())
    .collect()
}

/// The LXMERT questions of `lxmert_args` written to `dir/valid.json`, those `missing` picks
/// (by index) naming an image that has no features file; its path.
fn lxmert_dataset_without_features(dir: &Path, missing: impl Fn(usize) -> bool) -> PathBuf {
    let data: Value =
        serde_json::from_str(&std::fs::read_to_string(eval_fixture("lxmert-valid.json")).unwrap())
            .unwrap();
    let mut items = data.as_array().unwrap().clone();
    for (i, item) in items.iter_mut().enumerate() {
        if missing(i) {
            item["img_id"] = Value::from("synth_000404");
        }
    }
    let dataset = dir.join("valid.json");
    std::fs::write(&dataset, serde_json::to_string(&items).unwrap()).unwrap();
    dataset
}

/// `args` with `dataset` in place of their --dataset.
fn on_dataset(mut args: Vec<String>, dataset: &Path) -> Vec<String> {
    let at = args.iter().position(|a| a == "--dataset").unwrap();
    args[at + 1] = s(dataset);
    args
}

/// ViLT on one COCO image, 5 questions (official VQA v2 format).
fn vilt_args(results: &Path) -> Vec<String> {
    [
        "eval",
        "--model",
        &s(&fixtures().join("vilt")),
        "--questions",
        &s(&eval_fixture("vilt-questions.json")),
        "--annotations",
        &s(&eval_fixture("vilt-annotations.json")),
        "--images",
        &s(&fixtures().join("images")),
        "--file-pattern",
        "coco_{id}.jpg",
        "--results",
        &s(results),
        "--batch",
        "2",
    ]
    .iter()
    .map(|a| (*a).to_owned())
    .collect()
}

fn run_ok(args: &[String]) -> Output {
    let out = fiedler().args(args).output().expect("binary runs");
    assert!(out.status.success(), "{}", stderr(&out));
    out
}

/// The mean VQA accuracy (%) of these answers.
fn mean_accuracy(questions: &[Question], answers: &[&str]) -> f64 {
    let total: f64 = questions
        .iter()
        .zip(answers)
        .map(|(q, a)| q.truth.accuracy(a))
        .sum();
    100.0 * total / questions.len() as f64
}

/// The plain predictions through the explain path (one cheap method).
/// The perturbation records of `method` in a results file, in key order.
fn records_of(path: &Path, method: &str) -> Vec<PerturbationRecord> {
    let mut records: Vec<PerturbationRecord> = read_results(path)
        .unwrap()
        .perturbations
        .into_iter()
        .filter(|r| r.method == method)
        .collect();
    records.sort_by_key(|r| r.key());
    records
}

fn explain_args() -> (Vec<Method>, MethodOptions, AnswerTarget) {
    (
        vec![Method::RawAttn],
        MethodOptions::default(),
        AnswerTarget::Predicted,
    )
}

fn report_json(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap()
}

/// Every cell has every method's 4 tests, AUCs (the area under its accuracy curve) and
/// accuracies in [0, 100], and step 0 equal to `plain` (the model's accuracy on the
/// unperturbed questions, in %).
fn check_report(dir: &Path, samples: usize, plain: f64) {
    for file in [
        "report.md",
        "report.json",
        "curves-image.png",
        "curves-text.png",
    ] {
        assert!(dir.join(file).is_file(), "{file} missing");
    }
    let png = image::open(dir.join("curves-image.png")).unwrap();
    assert!(png.width() > 600 && png.height() > 300);
    let report = report_json(dir);
    assert_eq!(report["samples"].as_u64().unwrap() as usize, samples);
    let rows = report["methods"].as_array().unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r["method"].as_str().unwrap()).collect();
    let expected: Vec<&str> = Method::ALL.iter().map(|m| m.name()).collect();
    assert_eq!(names, [&expected[..], &["chance"]].concat());
    for row in rows {
        let tests = row["tests"].as_object().unwrap();
        assert_eq!(tests.len(), 4, "{row}");
        for (column, cell) in tests {
            let auc = cell["auc"].as_f64().unwrap();
            assert!((0.0..=100.0).contains(&auc), "{column}: {auc}");
            let numbers = |key: &str| -> Vec<f64> {
                let values = cell[key].as_array().unwrap();
                values.iter().map(|v| v.as_f64().unwrap()).collect()
            };
            let acc = numbers("accuracy");
            assert_eq!(acc.len(), 9);
            assert!(acc.iter().all(|a| (0.0..=100.0).contains(a)));
            assert!(
                (acc[0] - plain).abs() < 1e-9,
                "{} {column}: step 0 {} vs plain accuracy {plain}",
                row["method"],
                acc[0]
            );
            assert_eq!(cell["samples"].as_u64().unwrap() as usize, samples);
            // The AUC is the trapezoid area under the cell's own accuracy curve.
            let steps: Vec<f64> = report["steps"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            let area: f64 = steps
                .windows(2)
                .zip(acc.windows(2))
                .map(|(s, a)| (s[1] - s[0]) * (a[0] + a[1]) / 2.0)
                .sum();
            assert!((auc - area).abs() < 1e-9, "{column}: AUC {auc} vs {area}");
            // Units kept: all at s = 0, fewer at every step, none at s = 1.
            let kept = numbers("kept");
            assert_eq!(kept.len(), 9);
            assert!(kept[0] > 0.0 && kept[8] == 0.0, "{column}: {kept:?}");
            assert!(kept.windows(2).all(|w| w[1] <= w[0]), "{column}: {kept:?}");
            let se = &cell["standard_error"];
            assert!(se.as_f64().is_some_and(|e| e >= 0.0), "{column}: {se}");
        }
    }
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(md.contains("| method | image+ ↓ | image− ↑ | text+ ↓ | text− ↑ | samples |"));
    assert!(md.contains("| *regions kept (mean)* | ") || md.contains("| *patches kept (mean)* | "));
    assert!(md.contains("| *words kept (mean)* | "));
    assert!(md.contains("AUC = Σ_m"));
    assert!(md
        .contains("- `chance`: the same tests with each sample's units removed in a random order"));
}

#[test]
fn lxmert_eval_reports_and_reruns_identically() {
    let dir = scratch("lxmert");
    let results = dir.join("a/results.jsonl");
    run_ok(&lxmert_args(&results, "3"));

    // The model's plain accuracy on the same questions, through the explain path.
    let data = read_lxmert_json(&eval_fixture("lxmert-valid.json")).unwrap();
    let session = LxmertSession::open(&fixtures().join("lxmert"), None).unwrap();
    let (methods, opts, target) = explain_args();
    let requests: Vec<RegionRequest> = data
        .questions
        .iter()
        .map(|q| RegionRequest {
            regions: fixtures().join(format!("lxmert/regions_{}.safetensors", q.image_id)),
            image_id: None,
            question: q.text.clone(),
        })
        .collect();
    let answers = session
        .explain(&requests, &methods, &opts, &target, 1, |_| {})
        .unwrap();
    let answers: Vec<&str> = answers.iter().map(|(r, _)| r.answer.as_str()).collect();
    let plain = mean_accuracy(&data.questions, &answers);
    check_report(results.parent().unwrap(), 7, plain);

    // The same run again, elsewhere: byte-identical results and report.
    let again = dir.join("b/results.jsonl");
    run_ok(&lxmert_args(&again, "3"));
    let bytes = |p: &Path| std::fs::read(p).unwrap();
    let text = |p: &Path| {
        std::fs::read_to_string(p)
            .unwrap()
            .replace(&s(&dir.join("b")), "")
    };
    assert_eq!(bytes(&results), bytes(&again));
    assert_eq!(
        text(&dir.join("a/report.md")).replace(&s(&dir.join("a")), ""),
        text(&dir.join("b/report.md"))
    );
    // A rerun into the same file has nothing left to do and changes nothing.
    let before = bytes(&results);
    run_ok(&lxmert_args(&results, "3"));
    assert_eq!(bytes(&results), before);

    // `eval report` rebuilds the same report from the results alone.
    let rebuilt = dir.join("rebuilt");
    run_ok(&[
        "eval".into(),
        "report".into(),
        s(&results),
        "--out".into(),
        s(&rebuilt),
    ]);
    assert_eq!(
        std::fs::read(dir.join("a/report.json")).unwrap(),
        std::fs::read(rebuilt.join("report.json")).unwrap()
    );
    // The TSV holds the same features: the same numbers.
    let tsv = dir.join("tsv/results.jsonl");
    let mut args = lxmert_args(&tsv, "3");
    let at = args.iter().position(|a| a == "--features").unwrap();
    args[at + 1] = s(&fixtures().join("lxmert/regions.tsv"));
    args.drain(at + 2..at + 4);
    run_ok(&args);
    let records = |p: &Path| -> Vec<String> {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .skip(1)
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(records(&tsv), records(&results));
}

#[test]
fn vilt_eval_with_official_vqa_files() {
    let dir = scratch("vilt");
    let results = dir.join("results.jsonl");
    run_ok(&vilt_args(&results));
    let data = read_vqa_v2(
        &eval_fixture("vilt-questions.json"),
        &eval_fixture("vilt-annotations.json"),
    )
    .unwrap();
    let session = ViltSession::open(&fixtures().join("vilt")).unwrap();
    let (methods, opts, target) = explain_args();
    let pairs: Vec<PairRequest> = data
        .questions
        .iter()
        .map(|q| PairRequest {
            image: fixtures().join(format!("images/coco_{}.jpg", q.image_id)),
            text: q.text.clone(),
        })
        .collect();
    let answers = session
        .explain(&pairs, &methods, &opts, &target, 1, |_| {})
        .unwrap();
    let answers: Vec<&str> = answers.iter().map(|r| r.answer.as_str()).collect();
    let plain = mean_accuracy(&data.questions, &answers);
    assert!(
        plain > 0.0,
        "the fixture questions should credit some answers"
    );
    check_report(&dir, 5, plain);
}

fn lines(p: &Path) -> usize {
    std::fs::read(p).map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count())
}

#[test]
fn killed_run_resumes_to_the_uninterrupted_result() {
    let dir = scratch("resume");
    let full = dir.join("full/results.jsonl");
    run_ok(&lxmert_args(&full, "2"));
    let total = lines(&full);
    // The header, the run's start and end, and its records (every method's and chance's).
    assert_eq!(total, 3 + 7 * (Method::ALL.len() + 1) * 4);

    // kill -9 once some records are on disk, however far the run got by then.
    let part = dir.join("part/results.jsonl");
    let mut killed = false;
    for threshold in [40, 10, 2] {
        let _ = std::fs::remove_file(&part);
        let mut child = fiedler()
            .args(lxmert_args(&part, "2"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while lines(&part) < threshold && start.elapsed() < Duration::from_secs(60) {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        let _ = child.kill();
        let status = child.wait().unwrap();
        if !status.success() && lines(&part) < total {
            killed = true;
            break;
        }
    }
    assert!(killed, "the run always finished before it could be killed");
    let done_before = lines(&part);
    assert!(done_before < total);

    // The report of the part done says the run did not end, in the terminal and the files.
    let unfinished = "unfinished: the last `fiedler eval` on this file set out to evaluate 7 samples and stopped before it ended";
    let reported = |results: &Path| {
        let out = run_ok(&["eval".into(), "report".into(), s(results)]);
        let md = std::fs::read_to_string(results.with_file_name("report.md")).unwrap();
        let json = report_json(results.parent().unwrap());
        (String::from_utf8(out.stdout).unwrap(), md, json)
    };
    let (stdout, md, json) = reported(&part);
    assert!(stdout.contains(unfinished), "{stdout}");
    let summary = run_ok(&["eval".into(), "summary".into(), s(&part)]);
    let summary = String::from_utf8(summary.stdout).unwrap();
    assert!(summary.contains(unfinished), "{summary}");
    assert!(md.contains(unfinished), "{md}");
    assert_eq!(json["unfinished"]["planned"], 7, "{json}");
    assert_eq!(json["unfinished"]["running"], false, "{json}");
    let (stdout, md, json) = reported(&full);
    assert!(!stdout.contains("unfinished") && !md.contains("unfinished"));
    assert!(json["unfinished"].is_null(), "{json}");

    // A torn last line, as a kill in the middle of a write leaves it.
    let mut bytes = std::fs::read(&part).unwrap();
    bytes.extend_from_slice(br#"{"kind":"perturbation","sample":"10"#);
    std::fs::write(&part, bytes).unwrap();

    let out = run_ok(&lxmert_args(&part, "2"));
    assert!(
        stderr(&out).contains("partly written line"),
        "{}",
        stderr(&out)
    );
    // The same records as the uninterrupted run's; the resumed run marked its own start.
    let records = |p: &Path| -> Vec<String> {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .filter(|l| !l.contains(r#""kind":"started""#))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(
        records(&part),
        records(&full),
        "resumed results differ from the uninterrupted run's"
    );
    let (stdout, md, _) = reported(&part);
    assert!(!stdout.contains("unfinished") && !md.contains("unfinished"));
}

/// Ctrl-C stops a run once the batch in hand is written: the process says how far it got and
/// exits with 130, the report covers the samples done and says the run stopped, and the same
/// command then finishes it with the uninterrupted run's records.
#[cfg(unix)]
#[test]
fn ctrl_c_stops_after_the_batch_in_hand_with_a_report() {
    let dir = scratch("ctrl-c");
    let full = dir.join("full/results.jsonl");
    run_ok(&lxmert_args(&full, "1"));
    let total = lines(&full);

    let part = dir.join("part/results.jsonl");
    let mut stopped = None;
    for threshold in [20, 6, 3] {
        let _ = std::fs::remove_dir_all(part.parent().unwrap());
        let child = fiedler()
            .args(lxmert_args(&part, "1"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while lines(&part) < threshold && start.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_micros(200));
        }
        stopped = common::interrupt(child);
        if stopped.is_some() {
            break;
        }
    }
    let stderr = stopped.expect("the run always finished before Ctrl-C reached it");
    assert!(
        stderr.contains("stopping once the batch in hand is done"),
        "{stderr}"
    );
    assert!(
        stderr.contains("of 7 samples: the report covers them, and the same command goes on"),
        "{stderr}"
    );
    assert!(!stderr.contains("error"), "{stderr}");
    // Whole records only, and no end mark: the report says the run stopped.
    let text = std::fs::read_to_string(&part).unwrap();
    assert!(text.ends_with('\n') && !text.contains(r#""kind":"finished""#));
    assert!(lines(&part) < total);
    let md = std::fs::read_to_string(part.with_file_name("report.md")).unwrap();
    assert!(md.contains("stopped before it ended"), "{md}");

    run_ok(&lxmert_args(&part, "1"));
    let records = |p: &Path| -> Vec<String> {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .filter(|l| !l.contains(r#""kind":"started""#) && !l.contains(r#""kind":"finished""#))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(records(&part), records(&full));
}

#[test]
fn failing_samples_are_logged_counted_and_strict_stops() {
    let dir = scratch("failing");
    // Question 1004's image has no features file.
    let dataset = lxmert_dataset_without_features(&dir, |i| i == 3);
    let with_dataset = |results: &Path| on_dataset(lxmert_args(results, "3"), &dataset);
    let out = run_ok(&with_dataset(&dir.join("results.jsonl")));
    assert!(
        stderr(&out).contains("sample 1004 failed"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("synth_000404"), "{}", stderr(&out));
    let report = report_json(&dir);
    assert_eq!(report["samples"], 6);
    assert_eq!(report["failed_samples"][0]["sample"], "1004");
    assert!(std::fs::read_to_string(dir.join("report.md"))
        .unwrap()
        .contains("6 evaluated, 1 failed"));
    assert!(
        stderr(&out).contains("7/7 samples done; 6 evaluated, 1 failed in"),
        "{}",
        stderr(&out)
    );

    let mut args = with_dataset(&dir.join("strict/results.jsonl"));
    args.push("--strict".into());
    let out = fiedler().args(&args).output().unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("sample 1004"), "{}", stderr(&out));
    // It reports the samples it finished, marked unfinished, as a stop by Ctrl-C does.
    let md = std::fs::read_to_string(dir.join("strict/report.md")).unwrap();
    assert!(md.contains("unfinished: the last `fiedler eval`"), "{md}");
}

/// A run whose every sample fails exits non-zero and still reports what failed, under the
/// perturbation benchmark's title (not as a model with no answer); a results file holding
/// its header alone has nothing to report, and says so.
#[test]
fn a_run_with_no_sample_evaluated_reports_no_benchmark() {
    let dir = scratch("none-evaluated");
    // Questions without a word token: each sample fails on its own (inputs that no sample
    // finds are refused before the run).
    let data: Value =
        serde_json::from_str(&std::fs::read_to_string(eval_fixture("lxmert-valid.json")).unwrap())
            .unwrap();
    let mut items = data.as_array().unwrap().clone();
    for item in &mut items {
        item["sent"] = Value::from("\u{200b}");
    }
    let dataset = dir.join("wordless.json");
    std::fs::write(&dataset, serde_json::to_string(&items).unwrap()).unwrap();
    let results = dir.join("results.jsonl");
    let args = on_dataset(lxmert_args(&results, "3"), &dataset);
    let out = fiedler().args(&args).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("7/7 samples done; 0 evaluated, 7 failed in"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("every sample failed (7)"),
        "{}",
        stderr(&out)
    );
    let report = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(report.starts_with("# Perturbation benchmark\n"), "{report}");
    assert!(report.contains("no sample was evaluated"), "{report}");
    assert!(report.contains("## Failed samples (7)"), "{report}");
    assert!(
        report.contains(": the question \"\\u{200b}\" has no word tokens\n"),
        "{report}"
    );

    // A folder for the results file is said to be one, with the results files it holds.
    let out = run(&["eval", "report", &s(&dir)]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!(
            "{} is a folder; give the results file (it holds {})",
            dir.display(),
            results.display()
        )),
        "{}",
        stderr(&out)
    );

    // An --out that is a file is said to be one, before any report is written.
    let file = dir.join("afile");
    std::fs::write(&file, "").unwrap();
    let out = run(&["eval", "report", &s(&results), "--out", &s(&file)]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!(
            "--out {} is a file; give a folder for the report",
            file.display()
        )),
        "{}",
        stderr(&out)
    );

    // A report that cannot be written says so, and that the results are saved.
    if cfg!(target_os = "linux") {
        let out = run(&[
            "eval",
            "report",
            &s(&results),
            "--out",
            "/proc/fiedler-report",
        ]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains("cannot write the report /proc/fiedler-report: ")
                && err.contains(&format!("(the results are saved in {}", results.display())),
            "{err}"
        );
    }

    let header_only = dir.join("header-only.jsonl");
    let first = std::fs::read_to_string(&results).unwrap();
    std::fs::write(
        &header_only,
        first.lines().next().unwrap().to_owned() + "\n",
    )
    .unwrap();
    let out = run(&["eval", "report", &s(&header_only)]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("holds a run header but no sample yet"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn bad_inputs_fail_with_clear_messages() {
    let dir = scratch("bad");
    let results = dir.join("results.jsonl");
    let expect_error = |args: Vec<String>, needle: &str| {
        let out = fiedler().args(&args).output().unwrap();
        assert!(!out.status.success(), "expected failure with {needle:?}");
        let err = stderr(&out);
        assert!(err.contains(needle), "{needle:?} not in: {err}");
        assert!(!err.contains("panicked"), "{err}");
    };
    let with = |mut args: Vec<String>, flag: &str, value: &Path| {
        let at = args.iter().position(|a| a == flag).unwrap();
        args[at + 1] = s(value);
        args
    };

    // Annotations that do not belong to the questions.
    let annotations = dir.join("annotations.json");
    let mut ann: Value = serde_json::from_str(
        &std::fs::read_to_string(eval_fixture("vilt-annotations.json")).unwrap(),
    )
    .unwrap();
    ann["annotations"][2]["question_id"] = Value::from(99);
    std::fs::write(&annotations, ann.to_string()).unwrap();
    expect_error(
        with(vilt_args(&results), "--annotations", &annotations),
        "question 127510002 has no annotation",
    );
    ann["annotations"][2]["question_id"] = Value::from(127510002);
    ann["annotations"][2]["image_id"] = Value::from(5);
    std::fs::write(&annotations, ann.to_string()).unwrap();
    expect_error(
        with(vilt_args(&results), "--annotations", &annotations),
        "is about image 127510 but its annotation about image 5",
    );

    // A missing question file is named by its flag.
    let missing = dir.join("nope.json");
    for flag in ["--questions", "--annotations"] {
        expect_error(
            with(vilt_args(&results), flag, &missing),
            &format!("{flag} {}: no such file", missing.display()),
        );
    }
    expect_error(
        with(lxmert_args(&results, "2"), "--dataset", &missing),
        &format!("--dataset {}: no such file", missing.display()),
    );
    let clip = |args: &[&str]| {
        let mut all = vec![
            "eval".to_owned(),
            "--model".into(),
            s(&fixtures().join("clip")),
        ];
        all.extend(args.iter().map(|a| (*a).to_owned()));
        all.extend(["--results".into(), s(&dir.join("clip.jsonl"))]);
        all
    };
    expect_error(
        clip(&["--captions", &s(&missing)]),
        &format!("--captions {}: no such file", missing.display()),
    );

    // An empty dataset.
    let empty = dir.join("empty.json");
    std::fs::write(&empty, "[]").unwrap();
    expect_error(
        with(lxmert_args(&results, "2"), "--dataset", &empty),
        &format!("--dataset {} has no questions", empty.display()),
    );

    // Answers the model does not know.
    let foreign = dir.join("foreign.json");
    std::fs::write(
        &foreign,
        r#"[{"question_id": 1, "img_id": "synth_000001", "sent": "what is it?", "label": {"spaceship": 1.0}}]"#,
    )
    .unwrap();
    expect_error(
        with(lxmert_args(&results, "2"), "--dataset", &foreign),
        "answer list does not match the dataset",
    );

    // A results file from other settings is not mixed into.
    run_ok(&lxmert_args(&results, "2"));
    let mut args = lxmert_args(&results, "2");
    args.extend(["--steps".into(), "0,0.5,1".into()]);
    expect_error(args, "was written with steps");

    // Orders are named, never booleans.
    let mut args = lxmert_args(&dir.join("o.jsonl"), "2");
    args.extend(["--order".into(), "true".into()]);
    expect_error(args, "unknown order \"true\"");

    // CLIP is not a VQA model: given VQA questions or none, it is pointed to --captions.
    for args in [
        &["--dataset", &s(&eval_fixture("lxmert-valid.json"))][..],
        &[],
    ] {
        expect_error(
            clip(args),
            "needs a VQA model (ViLT or LXMERT); CLIP is scored against ground truth only, on a `fiedler synth` set: give --captions DIR/captions.json",
        );
    }
    assert!(!dir.join("clip.jsonl").exists());
}

/// Methods added to a results file with a larger --samples: the report says the tests
/// cover different numbers of samples, and the summary's plain VQA accuracy is over the
/// widest test, not the first method's subset.
#[test]
fn methods_over_different_samples_are_flagged() {
    let dir = scratch("uneven");
    let results = dir.join("results.jsonl");
    let with = |samples: &str, method: &str| {
        let mut args = lxmert_args(&results, "4");
        args.extend(["--samples", samples, "--methods", method].map(String::from));
        run_ok(&args);
    };
    // raw-attn comes first in the report, on the smaller set
    with("3", "raw-attn");
    with("7", "chefer");
    // rollout on the image tests alone: its text tests are not run
    let mut args = lxmert_args(&results, "4");
    args.extend(
        [
            "--samples",
            "7",
            "--methods",
            "rollout",
            "--modality",
            "image",
        ]
        .map(String::from),
    );
    run_ok(&args);
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(md.contains("different numbers of samples"), "{md}");
    let report = report_json(&dir);
    let widest = report["methods"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|m| m["tests"].as_object().unwrap().values())
        .max_by_key(|c| c["samples"].as_u64().unwrap())
        .unwrap()["accuracy"][0]
        .as_f64()
        .unwrap();
    let summary = run_ok(&["eval".into(), "summary".into(), s(&results)]);
    let first = String::from_utf8_lossy(&summary.stdout);
    assert!(
        first.contains(&format!("VQA accuracy {widest:.1}%")),
        "{first}"
    );
    // The summary says so too, and the report names the target explained.
    assert!(first.contains("different numbers of samples"), "{first}");
    let rollout = first
        .lines()
        .find(|l| l.starts_with("| rollout |"))
        .unwrap();
    assert!(rollout.ends_with(" | – | – |"), "{rollout}");
    assert!(
        md.contains("- target: the predicted answer's logit"),
        "{md}"
    );
    // Each table is headed by the results file it comes from.
    assert!(
        first.starts_with(&format!("### `{}`: `", results.display())),
        "{first}"
    );
}

/// An LXMERT fixture eval of raw-attn over `samples` samples (and `extra`), into
/// `dir/name/results.jsonl`, which it returns.
fn raw_attn_run(dir: &Path, name: &str, samples: &str, extra: &[&str]) -> PathBuf {
    let results = dir.join(name).join("results.jsonl");
    let mut args = lxmert_args(&results, "4");
    args.extend(["--samples", samples, "--methods", "raw-attn"].map(String::from));
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    run_ok(&args);
    results
}

/// The summary heads each run with what tells runs of one set apart: its seed, and steps
/// other than the default (AUCs over other steps do not compare).
#[test]
fn the_summary_names_the_seed_and_other_steps() {
    let dir = scratch("summary-steps");
    let run = |name: &str, extra: &[&str]| raw_attn_run(&dir, name, "2", extra);
    let plain = run("plain", &[]);
    let steps = run("steps", &["--steps", "0,0.5,1"]);
    let summary = run_ok(&["eval".into(), "summary".into(), s(&plain), s(&steps)]);
    let summary = String::from_utf8_lossy(&summary.stdout);
    let heads: Vec<&str> = summary.lines().filter(|l| l.starts_with("### ")).collect();
    assert_eq!(heads.len(), 2, "{summary}");
    assert!(heads.iter().all(|h| h.contains(", seed ")), "{summary}");
    assert!(!heads[0].contains("not the default"), "{}", heads[0]);
    assert!(
        heads[1].contains("; steps [0.0, 0.5, 1.0], not the default"),
        "{}",
        heads[1]
    );
}

/// The header records the precision the products ran in: f32 where `--device auto` fell back
/// to the CPU, though --tf32 was asked (it said "tf32", and a run on the GPU resumed it).
#[test]
fn the_header_records_the_precision_computed_in() {
    let dir = scratch("precision");
    let results = dir.join("results.jsonl");
    let mut args = lxmert_args(&results, "4");
    args.extend(
        [
            "--samples",
            "1",
            "--methods",
            "raw-attn",
            "--device",
            "auto",
            "--tf32",
        ]
        .map(String::from),
    );
    let out = run_ok(&args);
    let header: Value = serde_json::from_str(
        std::fs::read_to_string(&results)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    let on_cpu = stderr(&out).contains("--device auto: using the CPU");
    let expected = if on_cpu { "f32" } else { "tf32" };
    assert_eq!(header["precision"], expected, "{header}");
}

/// A run that asks for fewer methods or tests than its results file holds says that the
/// report covers them all, and which.
#[test]
fn a_report_over_more_than_was_asked_says_so() {
    let dir = scratch("more-rows");
    let results = dir.join("results.jsonl");
    let run = |extra: &[&str]| {
        let mut args = lxmert_args(&results, "4");
        args.extend(["--samples", "2", "--no-chance"].map(String::from));
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        String::from_utf8_lossy(&run_ok(&args).stdout).into_owned()
    };
    let all = run(&["--methods", "raw-attn,dsmi"]);
    assert!(!all.contains("which this run did not ask for"), "{all}");
    let fewer = run(&["--methods", "raw-attn", "--modality", "image"]);
    assert!(
        fewer.contains(&format!(
            "report over every method and test in {} (methods dsmi and tests text+, text− too, \
             which this run did not ask for)",
            results.display()
        )),
        "{fewer}"
    );
}

/// The chance rows run every test on the same units as the methods, in the summary beside
/// them; `--no-chance` leaves them out.
#[test]
fn chance_rows_run_beside_the_methods_unless_left_out() {
    let dir = scratch("chance");
    let run = |name: &str, extra: &[&str]| raw_attn_run(&dir, name, "3", extra);
    let with = run("with", &[]);
    let records = read_results(&with).unwrap().perturbations;
    let kept = |method: &str| -> Vec<(String, Vec<usize>)> {
        records
            .iter()
            .filter(|r| r.method == method)
            .map(|r| {
                (
                    format!("{} {} {}", r.sample, r.modality, r.order),
                    r.kept.clone(),
                )
            })
            .collect()
    };
    assert_eq!(kept("chance").len(), 3 * 4);
    assert_eq!(kept("chance"), kept("raw-attn"));
    let summary = run_ok(&["eval".into(), "summary".into(), s(&with)]);
    let summary = String::from_utf8_lossy(&summary.stdout);
    let row = summary
        .lines()
        .find(|l| l.starts_with("| chance |"))
        .unwrap();
    let aucs: Vec<f64> = row
        .split('|')
        .filter_map(|cell| cell.trim().parse().ok())
        .collect();
    assert_eq!(aucs.len(), 4, "{row}");

    // The report compares with another method on request, and refuses one the file lacks.
    let report = |against: &str| {
        let args = ["eval", "report", &s(&with), "--against", against];
        fiedler().args(args).output().unwrap()
    };
    assert!(report("raw-attn").status.success());
    let md = std::fs::read_to_string(with.parent().unwrap().join("report.md")).unwrap();
    let section = md
        .split("## Against raw-attn")
        .nth(1)
        .expect("an Against raw-attn section");
    assert!(section.contains("\n| chance | "), "{md}");
    let args = ["eval", "summary", &s(&with), "--against", "raw-attn"];
    let table = fiedler().args(args).output().unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.contains("better / worse than raw-attn's"), "{table}");
    // The summary refuses it too.
    let summary = |against: &str| {
        let args = ["eval", "summary", &s(&with), "--against", against];
        fiedler().args(args).output().unwrap()
    };
    for refused in [report("chefer"), summary("chefer")] {
        assert_eq!(refused.status.code(), Some(1));
        assert!(
            stderr(&refused).contains("no perturbation records of `chefer`"),
            "{}",
            stderr(&refused)
        );
    }

    let without = run("without", &["--no-chance"]);
    let records = read_results(&without).unwrap().perturbations;
    assert_eq!(records.len(), 3 * 4);
    assert!(records.iter().all(|r| r.method == "raw-attn"));

    // Rerun without --no-chance, a file without chance rows is resumed as it is (adding them
    // would redo every sample), and says so; --chance adds them, as a fresh run draws them.
    let mut args = lxmert_args(&without, "4");
    args.extend(["--samples", "3", "--methods", "raw-attn"].map(String::from));
    let out = run_ok(&args);
    assert!(
        stderr(&out).contains("has no chance rows") && stderr(&out).contains("--chance adds them"),
        "{}",
        stderr(&out)
    );
    assert_eq!(read_results(&without).unwrap().perturbations.len(), 3 * 4);
    args.push("--chance".into());
    run_ok(&args);
    let chance = |path: &Path| records_of(path, "chance");
    assert_eq!(chance(&without), chance(&with));

    // A run that drew chance rows but was cut off before writing any (its header says it
    // drew them) gets them on resuming, with no note.
    let cut = dir.join("cut/results.jsonl");
    std::fs::create_dir_all(cut.parent().unwrap()).unwrap();
    let text = std::fs::read_to_string(&with).unwrap();
    let kept: String = text
        .lines()
        .filter(|l| !l.contains(r#""method":"chance""#))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(
        kept.lines().next().unwrap().contains(r#""chance":true"#),
        "{kept}"
    );
    std::fs::write(&cut, kept).unwrap();
    let mut args = lxmert_args(&cut, "4");
    args.extend(["--samples", "3", "--methods", "raw-attn"].map(String::from));
    let out = run_ok(&args);
    assert!(
        !stderr(&out).contains("has no chance rows"),
        "{}",
        stderr(&out)
    );
    assert_eq!(chance(&cut), chance(&with));
}

/// `--against` reads a method's name as `--methods` does (any case, `_` for `-`, the seed's
/// keys), and chance in any case: the report and the summary compare with it by its name.
#[test]
fn against_reads_method_names_as_methods_does() {
    let dir = scratch("against-names");
    let results = raw_attn_run(&dir, "run", "2", &[]);
    for (against, name) in [
        ("RAW_ATTN", "raw-attn"),
        ("Raw-Attn", "raw-attn"),
        ("Chance", "chance"),
    ] {
        let report = run(&["eval", "report", &s(&results), "--against", against]);
        assert!(report.status.success(), "{against}: {}", stderr(&report));
        let md = std::fs::read_to_string(results.with_file_name("report.md")).unwrap();
        assert!(
            md.contains(&format!("## Against {name}")),
            "{against}: {md}"
        );
        let summary = run(&["eval", "summary", &s(&results), "--against", against]);
        assert!(summary.status.success(), "{against}: {}", stderr(&summary));
        let table = String::from_utf8_lossy(&summary.stdout);
        assert!(
            table.contains(&format!("better / worse than {name}'s")),
            "{against}: {table}"
        );
    }
}

/// `--seed` draws the chance orders: over every question (so the seed picks no subset), two
/// seeds give the methods' records unchanged and chance's different, and the same seed again
/// gives the same ones.
#[test]
fn the_seed_draws_the_chance_orders() {
    let dir = scratch("chance-seed");
    let run = |name: &str, seed: &str| {
        let results = dir.join(name).join("results.jsonl");
        let mut args = lxmert_args(&results, "4");
        args.extend(["--methods", "raw-attn", "--seed", seed].map(String::from));
        run_ok(&args);
        results
    };
    let of = |results: &Path, method: &str| {
        let picked = records_of(results, method);
        assert_eq!(picked.len(), 7 * 4, "{method}");
        picked
    };
    let (one, two, again) = (run("1", "1"), run("2", "2"), run("1b", "1"));
    assert_eq!(of(&one, "raw-attn"), of(&two, "raw-attn"));
    assert_ne!(of(&one, "chance"), of(&two, "chance"));
    assert_eq!(of(&one, "chance"), of(&again, "chance"));
}

/// `--target sum-logits` (the seed's DSMI-family target) reaches the explanations (the removal
/// orders, so the answers along them, change), `--target seed` gives it to dsmi-grad alone
/// (its records are the sum-logits run's, the others' the predicted run's); the target is
/// recorded in the run header and said in the report, and a file of one target is not
/// resumed with another.
#[test]
fn the_sum_of_logits_target_is_recorded_and_kept_apart() {
    let dir = scratch("target");
    let args = |results: &Path, target: &str| {
        let mut args = lxmert_args(results, "4");
        args.extend(
            [
                "--methods",
                "grad-cam,dsmi-grad,raw-attn",
                "--no-chance",
                "--target",
                target,
            ]
            .map(String::from),
        );
        args
    };
    let run = |target: &str| {
        let results = dir.join(target).join("results.jsonl");
        run_ok(&args(&results, target));
        results
    };
    let (sum, predicted, seed) = (run("sum-logits"), run("predicted"), run("seed"));
    let records = |path: &Path, method: &str| {
        let records = records_of(path, method);
        assert_eq!(records.len(), 7 * 4, "{method}");
        records
    };
    for method in ["grad-cam", "dsmi-grad"] {
        assert_ne!(
            records(&sum, method),
            records(&predicted, method),
            "{method}"
        );
    }
    // The seed's passes are merged back into the order asked.
    assert_eq!(records(&seed, "raw-attn"), records(&predicted, "raw-attn"));
    assert_eq!(records(&seed, "grad-cam"), records(&predicted, "grad-cam"));
    assert_eq!(records(&seed, "dsmi-grad"), records(&sum, "dsmi-grad"));
    let header = |path: &Path| read_results(path).unwrap().header.unwrap().target;
    assert_eq!(header(&sum).as_deref(), Some("sum-logits"));
    assert_eq!(header(&seed).as_deref(), Some("seed"));
    assert_eq!(header(&predicted), None);
    let md =
        |path: &Path| std::fs::read_to_string(path.parent().unwrap().join("report.md")).unwrap();
    assert!(
        md(&sum).contains("- target: the sum of all logits, for every method"),
        "{}",
        md(&sum)
    );
    assert!(
        md(&seed).contains("- target: the seed's (bug B1): the sum of all logits for `dsmi-grad`, the predicted answer's logit for `raw-attn`, `grad-cam`;"),
        "{}",
        md(&seed)
    );
    for (file, theirs, ours) in [
        (&sum, "sum-logits", "predicted"),
        (&seed, "seed", "sum-logits"),
    ] {
        let out = fiedler().args(args(file, ours)).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(
            stderr(&out).contains(&format!(
                "was written with --target {theirs}, this run has --target {ours}"
            )),
            "{}",
            stderr(&out)
        );
    }
    let summary = run_ok(&["eval".into(), "summary".into(), s(&seed)]);
    let summary = String::from_utf8_lossy(&summary.stdout);
    assert!(
        summary
            .lines()
            .next()
            .unwrap()
            .ends_with("; explained with --target seed"),
        "{summary}"
    );
    // A file resumes with its own target: nothing is left to do.
    run_ok(&args(&seed, "seed"));
    assert_eq!(records(&seed, "dsmi-grad"), records(&sum, "dsmi-grad"));
}

/// Inputs for another family are refused, not ignored.
#[test]
fn inputs_for_another_family_are_refused() {
    let dir = scratch("foreign");
    let mut args = lxmert_args(&dir.join("results.jsonl"), "4");
    args.extend(["--images".into(), s(&fixtures().join("images"))]);
    let out = fiedler().args(&args).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("(lxmert) reads --features: drop --images; --images is for ViLT"),
        "{}",
        stderr(&out)
    );
    let refused = |args: &[String], needle: &str| {
        let out = fiedler().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(stderr(&out).contains(needle), "{}", stderr(&out));
    };
    // --captions is CLIP's
    refused(
        &[
            "eval".into(),
            "--model".into(),
            s(&fixtures().join("vilt")),
            "--captions".into(),
            s(&dir.join("captions.json")),
            "--results".into(),
            s(&dir.join("c.jsonl")),
        ],
        "(vilt) reads --images DIR: drop --captions; --images is for ViLT, --features for LXMERT, --captions for CLIP",
    );
    // Its own input beside another's: the other one is named.
    let mut args = vilt_args(&dir.join("v.jsonl"));
    args.extend(["--features".into(), s(&dir)]);
    refused(&args, "(vilt) reads --images DIR: drop --features;");
    // --answers is LXMERT's answer list: refused for ViLT and CLIP, as explain does
    let mut args = vilt_args(&dir.join("v.jsonl"));
    args.extend(["--answers".into(), s(&dir.join("label2ans.json"))]);
    refused(
        &args,
        "--answers applies to LXMERT (its answer list); this is a vilt model",
    );
    refused(
        &[
            "eval".into(),
            "--model".into(),
            s(&fixtures().join("clip")),
            "--captions".into(),
            s(&dir.join("captions.json")),
            "--answers".into(),
            s(&dir.join("label2ans.json")),
        ],
        "this is a clip model",
    );
    assert!(!dir.join("c.jsonl").exists() && !dir.join("v.jsonl").exists());
}

/// A features file of one image given as `--features` is refused as such, not scanned as an
/// obj36 TSV whose "ids" would be its raw bytes.
#[test]
fn a_features_file_is_not_read_as_a_tsv() {
    let dir = scratch("features-file");
    let mut args = lxmert_args(&dir.join("results.jsonl"), "4");
    let at = args.iter().position(|a| a == "--features").unwrap();
    let file = fixtures().join("lxmert/regions_synth_000001.safetensors");
    args[at + 1] = s(&file);
    let out = fiedler().args(&args).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("a file here is an obj36 TSV, named .tsv;")
            && stderr(&out).contains("give their folder"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("it holds"), "{}", stderr(&out));
    assert!(!dir.join("results.jsonl").exists());
}

/// An `--images` that is a file, or no folder at all, is named as such, not through the
/// image paths the patterns would make of it ("FILE/coco_1.jpg").
#[test]
fn images_must_be_a_folder() {
    let dir = scratch("images-file");
    let image = fixtures().join("images/catdog.png");
    for (images, needle) in [
        (image.clone(), "is a file: give the folder of images"),
        (dir.join("nowhere"), "nowhere: no such folder"),
    ] {
        let mut args = vilt_args(&dir.join("results.jsonl"));
        let at = args.iter().position(|a| a == "--images").unwrap();
        args[at + 1] = s(&images);
        let out = fiedler().args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(stderr(&out).contains(needle), "{}", stderr(&out));
        assert!(!stderr(&out).contains("tried"), "{}", stderr(&out));
    }
    assert!(!dir.join("results.jsonl").exists());
}

/// `--results` naming a file that is not a results file (an official VQA questions JSON, on
/// one line) is refused, and the file left as it was: it is not taken for a results file
/// with a torn last line and cut.
#[test]
fn a_results_file_without_a_run_header_is_refused_untouched() {
    let dir = scratch("not-results");
    let questions: Value = serde_json::from_str(
        &std::fs::read_to_string(eval_fixture("vilt-questions.json")).unwrap(),
    )
    .unwrap();
    let one_line = dir.join("questions.json");
    let two_lines = dir.join("notes.txt");
    std::fs::write(&one_line, questions.to_string()).unwrap();
    std::fs::write(&two_lines, "notes\nmore notes\n").unwrap();
    for file in [&one_line, &two_lines] {
        let before = std::fs::read(file).unwrap();
        let out = fiedler().args(lxmert_args(file, "3")).output().unwrap();
        assert!(!out.status.success());
        assert!(
            stderr(&out).contains(&format!(
                "{} is not a fiedler results file: its first line is not a run header",
                file.display()
            )),
            "{}",
            stderr(&out)
        );
        assert_eq!(std::fs::read(file).unwrap(), before);
        // What to do instead.
        assert!(
            stderr(&out).contains("a new --results path starts a run"),
            "{}",
            stderr(&out)
        );
        let out = run(&["eval", "report", &s(file)]);
        assert!(!out.status.success());
        assert!(stderr(&out).contains("is not a fiedler results file"));
    }
}

/// Off a terminal (here stderr is a pipe) the bar draws nothing: plain lines say how many
/// samples there are, how far the run is and, at the end, the running AUCs; a resumed run
/// says how many were done before, and counts as evaluated only the samples it did (here a
/// chunk of three holds one sample done before and two new ones).
#[test]
fn progress_is_plain_lines_off_a_terminal() {
    let dir = scratch("progress");
    let results = dir.join("results.jsonl");
    let mut args = lxmert_args(&results, "3");
    args.extend(["--methods".into(), "raw-attn".into()]);
    let mut first = args.clone();
    first.extend(["--samples".into(), "4".into()]);
    let err = stderr(&run_ok(&first));
    assert!(err.starts_with("eval: 4 samples\n"), "{err}");
    assert!(
        err.contains("eval: 4/4 samples done; 4 evaluated in"),
        "{err}"
    );

    let err = stderr(&run_ok(&args));
    assert!(
        err.starts_with("eval: resuming, 4 of 7 samples done earlier; 3 to go\n"),
        "{err}"
    );
    let last = err
        .rfind("eval: 7/7 samples done; 3 evaluated in")
        .unwrap_or_else(|| {
            panic!("no final line in: {err}");
        });
    assert!(err[last..].contains("samples/s)\n  raw-attn"), "{err}");
    assert!(err[last..].contains("image+"), "{err}");

    // resumed with `--method`, the spelling explain and bench use: the same run
    let args: Vec<String> = args
        .into_iter()
        .map(|a| {
            if a == "--methods" {
                "--method".into()
            } else {
                a
            }
        })
        .collect();
    let err = stderr(&run_ok(&args));
    assert!(
        err.starts_with("eval: resuming, 7 of 7 samples done earlier; 0 to go\n"),
        "{err}"
    );
    assert!(
        err.contains("eval: 7/7 samples done; nothing left to do"),
        "{err}"
    );
}

/// --samples beyond the dataset is noted; a report over more samples than the run asked for
/// (the file holds an earlier, larger run's) says so.
#[test]
fn samples_beyond_the_dataset_or_the_run_are_noted() {
    let dir = scratch("samples-note");
    let results = dir.join("results.jsonl");
    let with = |samples: &str| {
        let mut args = lxmert_args(&results, "4");
        args.extend(["--samples", samples, "--methods", "raw-attn"].map(String::from));
        run_ok(&args)
    };
    let out = with("100");
    assert!(
        stderr(&out).contains("note: --samples 100: the dataset has 7 questions; evaluating all 7"),
        "{}",
        stderr(&out)
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("report over all"));
    let out = with("3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "report over all 7 samples in {} (this run asked for 3)",
            results.display()
        )),
        "{stdout}"
    );
    assert!(
        !stderr(&out).contains("note: --samples"),
        "{}",
        stderr(&out)
    );
}

/// --file-pattern mistakes stop the run before it starts: a placeholder other than {id} and
/// {id:0N}, and {id:012} on image ids that are not numbers.
#[test]
fn file_pattern_mistakes_are_refused_upfront() {
    let dir = scratch("patterns");
    let results = dir.join("results.jsonl");
    let vilt = |pattern: &str| {
        let out = run(&[
            "eval",
            "--model",
            &s(&fixtures().join("vilt")),
            "--dataset",
            &s(&eval_fixture("lxmert-valid.json")),
            "--images",
            &s(&fixtures().join("images")),
            "--file-pattern",
            pattern,
            "--results",
            &s(&results),
            "--methods",
            "raw-attn",
        ]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        stderr(&out)
    };
    let err = vilt("x_{idx}.png");
    assert!(
        err.contains("--file-pattern x_{idx}.png: unknown placeholder {idx}"),
        "{err}"
    );
    let err = vilt("{id:012}.png");
    assert!(err.contains("--file-pattern {id:012}.png: "), "{err}");
    assert!(
        err.contains("none of the questions' image ids is a number (e.g. synth_000001)"),
        "{err}"
    );
    // A pattern that names files no question has: refused before any sample fails alike.
    let err = vilt("{id}.webp");
    assert!(
        err.contains("none of the 7 questions' inputs is found; the first: no input file for image synth_000001 (tried "),
        "{err}"
    );
    // The same for LXMERT's ids in a TSV, which says what its ids look like.
    let mut args = lxmert_args(&results, "2");
    let at = args.iter().position(|a| a == "--features").unwrap();
    args[at + 1] = s(&fixtures().join("lxmert/regions.tsv"));
    args[at + 3] = "COCO_{id}".into();
    let out = run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("none of the 7 questions' inputs is found; the first: no input file for image synth_000001 (tried ids COCO_synth_000001 in "),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("it holds"), "{}", stderr(&out));
    assert!(!results.exists());
}

/// The reports of two results files in one folder have names of their own; results.jsonl's
/// keep the plain ones.
#[test]
fn reports_are_named_after_their_results_file() {
    let dir = scratch("report-names");
    for (name, samples) in [("a.jsonl", "2"), ("b.jsonl", "3")] {
        let mut args = lxmert_args(&dir.join(name), "4");
        args.extend(["--samples", samples, "--methods", "raw-attn"].map(String::from));
        run_ok(&args);
    }
    for (stem, samples) in [("a", 2), ("b", 3)] {
        for file in ["report.md", "curves-image.png", "curves-text.png"] {
            assert!(
                dir.join(format!("{stem}.{file}")).is_file(),
                "{stem}.{file}"
            );
        }
        let report: Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join(format!("{stem}.report.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(report["samples"], samples);
    }
    assert!(!dir.join("report.md").exists());
    let rebuilt = dir.join("rebuilt");
    run_ok(&[
        "eval".into(),
        "report".into(),
        s(&dir.join("a.jsonl")),
        "--out".into(),
        s(&rebuilt),
    ]);
    assert_eq!(
        std::fs::read(dir.join("a.report.json")).unwrap(),
        std::fs::read(rebuilt.join("a.report.json")).unwrap()
    );
}

/// Weights retrained or replaced in place do not resume into the old weights' results: the
/// header's fingerprint differs, and the rerun is refused, naming the model. Nor does a run
/// with another eigensolver.
#[test]
fn changed_weights_do_not_resume_old_results() {
    let dir = scratch("changed-weights");
    let model = dir.join("lxmert");
    std::fs::create_dir_all(&model).unwrap();
    for entry in std::fs::read_dir(fixtures().join("lxmert")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, model.join(path.file_name().unwrap())).unwrap();
    }
    let results = dir.join("results.jsonl");
    let args = |results: &Path| -> Vec<String> {
        let mut a = lxmert_args(results, "4");
        let at = a.iter().position(|x| x == "--model").unwrap() + 1;
        a[at] = s(&model);
        a.extend(["--methods".into(), "raw-attn".into()]);
        a
    };
    run_ok(&args(&results));
    // the same weights resume (nothing left to do)
    run_ok(&args(&results));
    // another eigensolver does not resume
    let mut dense = args(&results);
    dense.extend(["--solver".into(), "dense".into()]);
    let out = fiedler().args(dense).output().unwrap();
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("solver lanczos, this run has dense"), "{err}");
    // an answer renamed in config.json: the same weights, other answers
    let config = model.join("config.json");
    let original = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, original.replacen("\"yes\"", "\"yeah\"", 1)).unwrap();
    let out = fiedler().args(args(&results)).output().unwrap();
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("model files") && err.contains("or the --answers file, changed since"),
        "{err}"
    );
    std::fs::write(&config, original).unwrap();
    run_ok(&args(&results));
    // one byte of one tensor changed
    let weights = model.join("model.safetensors");
    let mut bytes = std::fs::read(&weights).unwrap();
    let middle = bytes.len() / 2 + 1234;
    bytes[middle] ^= 0x01;
    std::fs::write(&weights, bytes).unwrap();
    let out = fiedler().args(args(&results)).output().unwrap();
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("model weights") && err.contains("changed since"),
        "{err}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// A dataset written again in place (new questions under the same ids, as a `fiedler synth`
/// rerun into the same folder gives) does not resume into the old questions' results.
#[test]
fn a_dataset_rewritten_in_place_does_not_resume_old_results() {
    let dir = scratch("rewritten-dataset");
    let dataset = lxmert_dataset_without_features(&dir, |_| false);
    let results = dir.join("results.jsonl");
    let mut args = on_dataset(lxmert_args(&results, "4"), &dataset);
    args.extend(["--methods".into(), "raw-attn".into()]);
    run_ok(&args);
    run_ok(&args);
    let mut items: Value =
        serde_json::from_str(&std::fs::read_to_string(&dataset).unwrap()).unwrap();
    items[0]["sent"] = Value::from("is there a cat?");
    std::fs::write(&dataset, serde_json::to_string(&items).unwrap()).unwrap();
    let out = fiedler().args(&args).output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("was written with dataset contents fnv1a64w:")
            && err.contains("changed since"),
        "{err}"
    );
}
