//! `fiedler explain` end to end: files written and their schema, numbers equal to the Python
//! reference when starting from an image file and a caption, and each bad input failing with
//! a clear message (exit 1, never a panic).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{edited_fixture, fixtures, floats, jpeg_with_orientation, max_abs_diff, Golden};
use serde_json::Value;

fn fiedler(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fiedler"))
        .args(args)
        .output()
        .expect("binary runs")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fiedler-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `fiedler explain` on the CLIP fixture and catdog.png, a `--text` per entry of `texts`,
/// with `method`, into `out`; not yet run.
fn clip_catdog(texts: &[&str], method: &str, out: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_fiedler"));
    command
        .args(["explain", "--model"])
        .arg(fixtures().join("clip"))
        .arg("--image")
        .arg(fixtures().join("images/catdog.png"));
    for text in texts {
        command.args(["--text", text]);
    }
    command.args(["--method", method, "--out"]).arg(out);
    command
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn records(out_dir: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(out_dir.join("explanations.json")).unwrap();
    serde_json::from_str::<Value>(&text)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// Writes `dir/pairs.jsonl`, a CLIP pair per line, and returns its path.
fn pairs_file(dir: &Path, pairs: &[(PathBuf, &str)]) -> PathBuf {
    let lines: Vec<String> = pairs
        .iter()
        .map(|(image, text)| serde_json::json!({"image": s(image), "text": text}).to_string())
        .collect();
    let list = dir.join("pairs.jsonl");
    std::fs::write(&list, lines.join("\n")).unwrap();
    list
}

#[test]
fn explain_all_methods_writes_every_output() {
    let out = scratch("all");
    let model = fixtures().join("clip");
    let image = fixtures().join("images/catdog.png");
    let run = fiedler(&[
        "explain",
        "--model",
        s(&model),
        "--image",
        s(&image),
        "--text",
        "a photo of a cat",
        "--text",
        "a photo of a dog",
        "--method",
        "all",
        "--out",
        s(&out),
    ]);
    assert!(run.status.success(), "{}", stderr(&run));
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        stdout.contains("sample 0:") && stdout.contains("sample 1:"),
        "{stdout}"
    );
    assert!(
        stdout.contains("photo(") && stdout.contains("dsmi-grad-attn"),
        "{stdout}"
    );

    let methods = [
        "raw-attn",
        "rollout",
        "grad-cam",
        "chefer",
        "dsmi",
        "dsmi-grad",
        "dsmi-grad-attn",
        "transformer-attribution",
        "partial-lrp",
        "chefer-lrp",
    ];
    for pair in 0..2 {
        for m in methods {
            let png =
                image::open(out.join(format!("sample{pair}-{m}.png"))).expect("overlay is a PNG");
            assert!(png.width() >= 224 && png.height() > 224);
        }
        image::open(out.join(format!("sample{pair}-sheet.png")))
            .expect("comparison sheet is a PNG");
    }
    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert!(html.contains("sample0-dsmi.png") && html.contains("a photo of a dog"));

    let records = records(&out);
    assert_eq!(records.len(), 2 * methods.len());
    let keys = [
        "family",
        "method",
        "target",
        "score",
        "probability",
        "text_tokens",
        "truncated",
        "text_relevance",
        "text_scored",
        "image_relevance",
        "image_grid",
    ];
    for r in &records {
        for k in keys {
            assert!(r.get(k).is_some(), "missing {k} in {r}");
        }
        assert_eq!(r["family"], "clip");
        assert_eq!(r["image_grid"], serde_json::json!([6, 6]));
        assert_eq!(r["image_relevance"].as_array().unwrap().len(), 36);
        let tokens = r["text_tokens"].as_array().unwrap();
        assert_eq!(tokens.len(), 7);
        assert_eq!(tokens[0], "<|startoftext|>");
        assert_eq!(r["text_relevance"].as_array().unwrap().len(), tokens.len());
        // the start and end tokens are not scored, the words are
        let scored: Vec<bool> = r["text_scored"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_bool().unwrap())
            .collect();
        assert_eq!(scored.len(), tokens.len());
        assert!(
            !scored[0] && !scored[tokens.len() - 1] && scored[1],
            "{scored:?}"
        );
        assert_eq!(r["truncated"], false);
        assert!(floats(&r["image_relevance"]).iter().all(|v| v.is_finite()));
    }
    let p0 = records[0]["probability"].as_f64().unwrap();
    let p1 = records[methods.len()]["probability"].as_f64().unwrap();
    assert!(
        (p0 + p1 - 1.0).abs() < 1e-5,
        "softmax over the two texts: {p0} + {p1}"
    );
}

/// From the PNG file and the caption (preprocessing and tokenizer included) to the JSON: the
/// numbers equal the reference's for case b1 (whose preprocessing is bit-exact for PNGs).
#[test]
fn explain_json_matches_the_reference_from_files() {
    let out = scratch("b1");
    let run = clip_catdog(&["a photo of a cat"], "dsmi-grad,chefer", &out)
        .output()
        .expect("binary runs");
    assert!(run.status.success(), "{}", stderr(&run));
    let golden = Golden::open(&fixtures().join("clip/methods.safetensors"));
    let records = records(&out);
    let methods: Vec<&str> = records
        .iter()
        .map(|r| r["method"].as_str().unwrap())
        .collect();
    assert_eq!(methods, ["dsmi-grad", "chefer"]);
    for r in records {
        let m = r["method"].as_str().unwrap();
        for (field, key) in [("image_relevance", "image"), ("text_relevance", "text")] {
            let reference = golden.f32(&format!("b1.{m}.{key}.0"));
            let scale = reference.iter().fold(0.0f32, |a, x| a.max(x.abs()));
            let (err, _) = max_abs_diff(&floats(&r[field]), &reference);
            assert!(err <= 1e-4 * scale, "{m} {field}: {err:e}");
        }
    }
}

#[test]
fn explain_pairs_file_in_batches() {
    let out = scratch("pairs");
    let images = fixtures().join("images");
    let list = pairs_file(
        &out,
        &[
            (images.join("catdog.png"), "a cat"),
            (images.join("coco_127510.jpg"), "two people"),
            (images.join("odd.png"), "a small bird"),
        ],
    );
    let run = fiedler(&[
        "explain",
        "--model",
        s(&fixtures().join("clip")),
        "--pairs",
        s(&list),
        "--batch",
        "2",
        "--method",
        "rollout",
        "--out",
        s(&out),
    ]);
    assert!(run.status.success(), "{}", stderr(&run));
    let records = records(&out);
    assert_eq!(records.len(), 3);
    // Off a terminal, progress is plain lines: the start and the end of a run of 2 batches.
    let err = stderr(&run);
    assert!(err.contains("explain: 3 samples\n"), "{err}");
    assert!(
        err.contains("explain: 3/3 samples done; 3 explained in "),
        "{err}"
    );
    // Each image has one text: no probability among captions, in the files as on the terminal.
    assert!(records.iter().all(|r| r.get("probability").is_none()));
    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert!(!html.contains("probability"), "{html}");
    assert!(String::from_utf8_lossy(&run.stdout).contains("one caption"));
}

/// A --pairs file as Windows editors save it, with a UTF-8 byte order mark and CRLF line ends,
/// reads as the same file without them, for CLIP/ViLT lines and for LXMERT lines.
#[test]
fn pairs_file_with_byte_order_mark_and_crlf_is_read() {
    let out = scratch("bom");
    let image = fixtures().join("images/catdog.png");
    let lxmert = fixtures().join("lxmert");
    let regions = lxmert.join("regions_synth_000001.safetensors");
    for (model, line) in [
        (
            fixtures().join("clip"),
            serde_json::json!({"image": s(&image), "text": "a cat"}),
        ),
        (
            lxmert,
            serde_json::json!({"regions": s(&regions), "question": "is there a dog?"}),
        ),
    ] {
        let list = out.join("bom.jsonl");
        // The second mark is what joining two such files leaves.
        std::fs::write(&list, format!("\u{feff}{line}\r\n\u{feff}{line}\r\n")).unwrap();
        let run = fiedler(&[
            "explain",
            "--model",
            s(&model),
            "--pairs",
            s(&list),
            "--method",
            "rollout",
            "--out",
            s(&out),
        ]);
        assert!(run.status.success(), "{}", stderr(&run));
        assert_eq!(records(&out).len(), 2);
    }
    // "question" is another name for "text": both in one line is explained as such, where
    // serde alone said only "duplicate field `text`".
    let list = out.join("both.jsonl");
    let line = serde_json::json!({"image": s(&image), "text": "a cat", "question": "a dog"});
    std::fs::write(&list, format!("{line}\n")).unwrap();
    let run = fiedler(&[
        "explain",
        "--model",
        s(&fixtures().join("clip")),
        "--pairs",
        s(&list),
    ]);
    assert_eq!(run.status.code(), Some(1));
    assert!(
        stderr(&run).contains(r#""question" may stand for "text", not beside it"#),
        "{}",
        stderr(&run)
    );
}

/// Sideways photos are explained as stored (as the reference does), with one warning that
/// names the first of them and says how to turn it upright.
#[test]
fn exif_orientation_is_warned_about_once() {
    let out = scratch("exif");
    let mut pairs = Vec::new();
    // The first line's photo is named, though the images are decoded on every core and the
    // others, smaller, are decoded first.
    for i in 0..8 {
        let path = out.join(format!("{}.jpg", (b'a' + i) as char));
        let photo = match i {
            0 => jpeg_with_orientation(1600, 1200, 6),
            _ => jpeg_with_orientation(40, 30, 8),
        };
        std::fs::write(&path, photo).unwrap();
        pairs.push((path, "a cat"));
    }
    let list = pairs_file(&out, &pairs);
    let run = fiedler(&[
        "explain",
        "--model",
        s(&fixtures().join("clip")),
        "--pairs",
        s(&list),
        "--method",
        "raw-attn",
        "--out",
        s(&out.join("out")),
    ]);
    let err = stderr(&run);
    assert!(run.status.success(), "{err}");
    assert_eq!(err.matches("EXIF orientation").count(), 1, "{err}");
    assert!(
        err.contains("a.jpg") && err.contains("rotate it 90° clockwise"),
        "{err}"
    );
}

/// An --out that cannot be a folder fails before any work (nothing printed); a run that fails
/// before it has anything to write leaves no folder it made; and the files are written before
/// the terminal summary, so a reader that stops early (`| head`) still gets them.
#[test]
fn output_folder_is_checked_first_and_written_before_the_summary() {
    let dir = scratch("out-order");
    let file = dir.join("a-file");
    std::fs::write(&file, "x").unwrap();
    let model = fixtures().join("clip");
    let image = fixtures().join("images/catdog.png");
    let args = |out: &Path| -> Vec<String> {
        [
            "explain",
            "--model",
            s(&model),
            "--image",
            s(&image),
            "--text",
            "a cat",
            "--method",
            "rollout",
            "--out",
            s(out),
        ]
        .iter()
        .map(|a| (*a).to_owned())
        .collect()
    };
    for (out, says) in [
        (
            file.clone(),
            format!("--out {} is a file; give a folder", file.display()),
        ),
        (file.join("below"), "cannot create output folder".to_owned()),
    ] {
        let run = Command::new(env!("CARGO_BIN_EXE_fiedler"))
            .args(args(&out))
            .output()
            .unwrap();
        assert_eq!(run.status.code(), Some(1));
        assert!(stderr(&run).contains(&says), "{}", stderr(&run));
        assert!(
            run.stdout.is_empty(),
            "{}",
            String::from_utf8_lossy(&run.stdout)
        );
    }

    // A folder another run is writing into (here: whose lock this test holds) is refused.
    let busy = dir.join("busy");
    std::fs::create_dir_all(&busy).unwrap();
    let lock = std::fs::File::create(busy.join(".fiedler-explain.lock")).unwrap();
    lock.lock().unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_fiedler"))
        .args(args(&busy))
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(1));
    assert!(
        stderr(&run).contains(&format!(
            "another fiedler explain is writing into {}",
            busy.display()
        )),
        "{}",
        stderr(&run)
    );
    assert!(!busy.join("explanations.json").exists());
    drop(lock);

    // A run that fails before it has anything to write removes the folders it made, and
    // leaves one that was there as it was.
    let typo = |out: &Path| {
        let mut args = args(out);
        args[4] = s(&dir.join("no-such.png")).to_owned();
        Command::new(env!("CARGO_BIN_EXE_fiedler"))
            .args(args)
            .output()
            .unwrap()
    };
    let made = dir.join("made");
    let run = typo(&made.join("deeper"));
    assert_eq!(run.status.code(), Some(1));
    assert!(
        stderr(&run).contains("no-such.png not found"),
        "{}",
        stderr(&run)
    );
    assert!(!made.exists(), "{} is left", made.display());
    let there = dir.join("there");
    std::fs::create_dir_all(&there).unwrap();
    std::fs::write(there.join("notes.txt"), "kept").unwrap();
    assert_eq!(typo(&there).status.code(), Some(1));
    assert!(there.join("notes.txt").is_file());

    // stdout closed before the first line: the process ends at its first print
    let out = dir.join("out");
    let mut child = Command::new(env!("CARGO_BIN_EXE_fiedler"))
        .args(args(&out))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    child.wait().unwrap();
    assert!(out.join("index.html").is_file());
    assert_eq!(records(&out).len(), 1);
    std::fs::remove_dir_all(dir).unwrap();
}

/// run.json, beside explanations.json.
fn run_record(out_dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(out_dir.join("run.json")).unwrap()).unwrap()
}

/// run.json says what made the files beside it: the model and its weights, the device, the
/// methods and their options, the command and the samples; a run of another family into the
/// same folder replaces it, with the fields that family takes.
#[test]
fn run_json_records_what_made_the_outputs() {
    let out = scratch("run-json");
    let run = clip_catdog(&["a cat", "a dog"], "rollout,dsmi", &out)
        .args(["--start-layer", "-1", "--batch", "1"])
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", stderr(&run));
    let record = run_record(&out);
    let text = |key: &str| record[key].as_str().unwrap_or_default().to_owned();
    assert_eq!(text("family"), "clip");
    assert_eq!(text("model"), s(&fixtures().join("clip")));
    assert!(text("weights").starts_with("fnv1a64w:"), "{record}");
    assert!(text("device").starts_with("cpu ("), "{record}");
    assert_eq!(text("precision"), "f32");
    assert_eq!(text("target"), "pair-score");
    assert_eq!(text("solver"), "lanczos");
    assert_eq!(record["methods"], serde_json::json!(["rollout", "dsmi"]));
    assert_eq!(record["start_layer"], -1);
    assert_eq!(record["start_layer_text"], 0);
    assert_eq!(record["batch"], 1);
    assert_eq!(
        (record["samples"].as_u64(), record["explained"].as_u64()),
        (Some(2), Some(2))
    );
    assert!(
        record["seconds"].as_f64().is_some_and(|t| t > 0.0),
        "{record}"
    );
    let command: Vec<&str> = record["command"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(command[1..3], ["explain", "--model"]);
    assert!(
        command.ends_with(&["--start-layer", "-1", "--batch", "1"]),
        "{command:?}"
    );
    let clip_weights = text("weights");

    let run = fiedler(&[
        "explain",
        "--model",
        s(&fixtures().join("vilt")),
        "--image",
        s(&fixtures().join("images/catdog.png")),
        "--question",
        "what animal is this?",
        "--method",
        "grad-cam",
        "--target",
        "index:3",
        "--out",
        s(&out),
    ]);
    assert!(run.status.success(), "{}", stderr(&run));
    let record = run_record(&out);
    assert_eq!(record["family"], "vilt");
    assert_eq!(record["target"], "index:3");
    assert_eq!(record["start_layer"], 0);
    assert!(record.get("start_layer_text").is_none(), "{record}");
    assert_ne!(record["weights"].as_str(), Some(&*clip_weights));
    std::fs::remove_dir_all(out).unwrap();
}

/// Captions of one image file share a softmax however the path is written.
#[test]
fn captions_of_one_file_share_a_softmax_whatever_the_path() {
    let out = scratch("same-file");
    let images = fixtures().join("images");
    let list = pairs_file(
        &out,
        &[
            (images.join("catdog.png"), "a cat"),
            (images.join("../images/catdog.png"), "a dog"),
        ],
    );
    let run = fiedler(&[
        "explain",
        "--model",
        s(&fixtures().join("clip")),
        "--pairs",
        s(&list),
        "--method",
        "raw-attn",
        "--out",
        s(&out.join("out")),
    ]);
    assert!(run.status.success(), "{}", stderr(&run));
    let p: Vec<f64> = records(&out.join("out"))
        .iter()
        .map(|r| {
            r["probability"]
                .as_f64()
                .expect("two captions: a probability")
        })
        .collect();
    assert_eq!(p.len(), 2);
    assert!((p[0] + p[1] - 1.0).abs() < 1e-6, "{p:?}");
    std::fs::remove_dir_all(out).unwrap();
}

/// An LXMERT config without answer names (unc-nlp/lxmert-vqa-uncased ships none) runs, with
/// a warning that says how to name the answers; with --answers there is none.
#[test]
fn lxmert_without_answer_names_says_to_give_answers() {
    let model = edited_fixture("lxmert", "unnamed", |c| {
        let c = c.as_object_mut().unwrap();
        c.remove("id2label");
        c.remove("label2id");
    });
    let out = scratch("unnamed");
    let regions = fixtures().join("lxmert/regions_synth_000001.safetensors");
    let mut args = vec![
        "explain".to_owned(),
        "--model".into(),
        s(&model).into(),
        "--regions".into(),
        s(&regions).into(),
        "--question".into(),
        "what is on the table?".into(),
        "--method".into(),
        "raw-attn".into(),
        "--out".into(),
        s(&out).into(),
    ];
    let run = fiedler(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let err = stderr(&run);
    assert!(run.status.success(), "{err}");
    assert!(
        err.contains("names no answers") && err.contains("--answers"),
        "{err}"
    );
    assert!(String::from_utf8_lossy(&run.stdout).contains("LABEL_"));

    let answers = out.join("answers.json");
    let names: Vec<String> = (0..12).map(|i| format!("answer {i}")).collect();
    // The answer-to-index map, the list's neighbour in LXMERT's data, is named as such.
    let map: serde_json::Map<String, serde_json::Value> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.clone(), i.into()))
        .collect();
    std::fs::write(&answers, serde_json::to_string(&map).unwrap()).unwrap();
    args.extend(["--answers".into(), s(&answers).into()]);
    let run = fiedler(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(run.status.code(), Some(1));
    assert!(
        stderr(&run).contains("this is an object (trainval_ans2label.json maps answers to indices: give trainval_label2ans.json)"),
        "{}",
        stderr(&run)
    );
    // With a byte order mark, as an editor may save it.
    let list = format!("\u{feff}{}", serde_json::to_string(&names).unwrap());
    std::fs::write(&answers, list).unwrap();
    let run = fiedler(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(
        !stderr(&run).contains("names no answers"),
        "{}",
        stderr(&run)
    );
    std::fs::remove_dir_all(out).unwrap();
    std::fs::remove_dir_all(model).unwrap();
}

/// --answers over a config that names its answers already says it replaces them (where they
/// differ), and an answer named twice is pointed out; the same names as the config's pass
/// silently.
#[test]
fn answer_lists_that_replace_or_repeat_names_are_pointed_out() {
    let model = fixtures().join("lxmert");
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("config.json")).unwrap()).unwrap();
    let id2label = config["id2label"].as_object().unwrap();
    let own: Vec<String> = (0..id2label.len())
        .map(|i| id2label[&i.to_string()].as_str().unwrap().to_owned())
        .collect();
    let out = scratch("answer-lists");
    let regions = fixtures().join("lxmert/regions_synth_000001.safetensors");
    let run_with = |names: &[String]| {
        let answers = out.join("answers.json");
        std::fs::write(&answers, serde_json::to_string(names).unwrap()).unwrap();
        let run = fiedler(&[
            "explain",
            "--model",
            s(&model),
            "--regions",
            s(&regions),
            "--question",
            "what is on the table?",
            "--method",
            "raw-attn",
            "--answers",
            s(&answers),
            "--out",
            s(&out),
        ]);
        assert!(run.status.success(), "{}", stderr(&run));
        stderr(&run)
    };
    let err = run_with(&own);
    assert!(!err.contains("warning"), "{err}");
    let mut renamed = own.clone();
    renamed[3] = "something else".into();
    renamed[7] = renamed[1].clone();
    let err = run_with(&renamed);
    assert!(
        err.contains(&format!(
            "replaces the answer names of {} (logit 3: {:?} there, \"something else\" here)",
            model.join("config.json").display(),
            own[3]
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "names {:?} twice (logits 1 and 7): answer:{} explains logit 1",
            own[1], own[1]
        )),
        "{err}"
    );
    std::fs::remove_dir_all(out).unwrap();
}

/// `explain --model model --pairs list --out out` fails cleanly, saying `needle`.
fn assert_pairs_fail(model: &Path, list: &Path, out: &Path, needle: &str) {
    assert_fails(
        &[
            "explain",
            "--model",
            s(model),
            "--pairs",
            s(list),
            "--out",
            s(out),
        ],
        needle,
    );
}

fn assert_fails<S: AsRef<str>>(args: &[S], needle: &str) {
    let args: Vec<&str> = args.iter().map(|a| a.as_ref()).collect();
    let args = args.as_slice();
    let run = fiedler(args);
    let err = stderr(&run);
    assert_eq!(
        run.status.code(),
        Some(1),
        "expected a clean failure, got {:?}: {err}",
        run.status
    );
    assert!(
        err.contains(needle),
        "message should contain {needle:?}: {err}"
    );
}

#[test]
fn explain_rejects_bad_input_clearly() {
    let out = scratch("bad");
    let model = fixtures().join("clip");
    let m = s(&model);
    let image = fixtures().join("images/catdog.png");
    let img = s(&image);
    let o = s(&out);
    // Nothing to explain: the message gives both ways to say what, for every family, and
    // nothing is written.
    for args in [
        &["explain"][..],
        &["explain", "--out", o],
        &["explain", "--image", img],
    ] {
        assert_fails(
            args,
            "give what to explain: --image IMG --text \"...\" (repeatable; --question for VQA), or --pairs FILE.jsonl (LXMERT: --regions FILE",
        );
    }
    assert!(!out.join("explanations.json").exists());
    // Options for another family, or for methods not asked, are refused, not ignored.
    for (extra, needle) in [
        (
            &["--target", "answer:cat"][..],
            "--target applies to VQA models",
        ),
        (
            &["--regions", "r.safetensors"][..],
            "--regions applies to LXMERT",
        ),
        (
            &["--method", "dsmi", "--lrp"][..],
            "--lrp applies to chefer",
        ),
        (
            &["--method", "dsmi,grad-cam", "--start-layer", "1"][..],
            "--start-layer applies to rollout, chefer, transformer-attribution and chefer-lrp",
        ),
        (
            &["--method", "raw-attn", "--start-layer-text", "-1"][..],
            "--start-layer-text applies to rollout",
        ),
    ] {
        let mut args = vec![
            "explain", "--model", m, "--image", img, "--text", "a cat", "--out", o,
        ];
        args.extend_from_slice(extra);
        assert_fails(&args, needle);
    }
    // A --pairs line naming a missing image is named by its line, before any work.
    let pairs = out.join("missing.jsonl");
    std::fs::write(
        &pairs,
        format!("{{\"image\": \"{img}\", \"text\": \"a cat\"}}\n{{\"image\": \"gone.png\", \"text\": \"a dog\"}}\n"),
    )
    .unwrap();
    let p = s(&pairs);
    assert_fails(
        &["explain", "--model", m, "--pairs", p, "--out", o],
        "missing.jsonl:2: image",
    );
    // A folder is not called missing.
    std::fs::write(
        &pairs,
        format!("{{\"image\": \"{o}\", \"text\": \"a cat\"}}\n"),
    )
    .unwrap();
    assert_fails(
        &["explain", "--model", m, "--pairs", p, "--out", o],
        &format!("missing.jsonl:1: image {o} is not a file"),
    );
    // An empty text, likewise.
    std::fs::write(
        &pairs,
        format!("{{\"image\": \"{img}\", \"text\": \"a cat\"}}\n{{\"image\": \"{img}\", \"text\": \"\"}}\n"),
    )
    .unwrap();
    assert_fails(
        &["explain", "--model", m, "--pairs", p, "--out", o],
        "missing.jsonl:2: the text is empty",
    );
    // TF32 is a GPU math mode: asking for it on the CPU is refused, not ignored.
    assert_fails(
        &[
            "explain", "--model", m, "--image", img, "--text", "a cat", "--tf32", "--out", o,
        ],
        "--tf32 applies to the GPU",
    );
    assert_fails(
        &[
            "explain",
            "--model",
            m,
            "--image",
            "/no/such.png",
            "--text",
            "a cat",
            "--out",
            o,
        ],
        "/no/such.png",
    );
    let not_image = model.join("config.json");
    assert_fails(
        &[
            "explain",
            "--model",
            m,
            "--image",
            s(&not_image),
            "--text",
            "a cat",
            "--out",
            o,
        ],
        "config.json",
    );
    assert_fails(
        &[
            "explain", "--model", m, "--image", img, "--text", "  ", "--out", o,
        ],
        "text 0 (a caption or question) is empty",
    );
    assert_fails(
        &[
            "explain", "--model", m, "--image", img, "--text", "a cat", "--method", "lrp", "--out",
            o,
        ],
        "valid methods: raw-attn, rollout",
    );
    let vilt = scratch("vilt");
    std::fs::write(vilt.join("config.json"), r#"{"model_type": "vilt"}"#).unwrap();
    assert_fails(
        &[
            "explain",
            "--model",
            s(&vilt),
            "--image",
            img,
            "--text",
            "a cat",
            "--out",
            o,
        ],
        "vilt",
    );
    assert_fails(
        &[
            "explain", "--model", m, "--image", img, "--text", "a cat", "--device", "cuda",
            "--out", o,
        ],
        "CUDA",
    );
    assert_fails(
        &[
            "explain",
            "--model",
            m,
            "--image",
            img,
            "--text",
            "a cat",
            "--start-layer",
            "7",
            "--out",
            o,
        ],
        "--start-layer 7",
    );
}

/// ViLT: the answer, the top answers and the relevance vectors from the image file and the
/// question, equal to the reference's case b1 (PNG preprocessing is bit-exact).
#[test]
fn explain_vilt_question_matches_the_reference() {
    let out = scratch("vilt-b1");
    let run = fiedler(&[
        "explain",
        "--model",
        s(&fixtures().join("vilt")),
        "--image",
        s(&fixtures().join("images/catdog.png")),
        "--question",
        "what animal is on the left?",
        "--method",
        "dsmi-grad,chefer,rollout",
        "--out",
        s(&out),
    ]);
    assert!(run.status.success(), "{}", stderr(&run));
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(stdout.contains("answer: no"), "{stdout}");
    let golden = Golden::open(&fixtures().join("vilt/methods.safetensors"));
    let records = records(&out);
    assert_eq!(records.len(), 3);
    for r in &records {
        assert_eq!(r["family"], "vilt");
        assert_eq!(r["answer"], "no");
        assert_eq!(r["top_answers"].as_array().unwrap().len(), 5);
        assert_eq!(r["probability"], r["top_answers"][0]["probability"]);
        assert_eq!(r["image_grid"], serde_json::json!([4, 4]));
        let m = r["method"].as_str().unwrap();
        for (field, key) in [("image_relevance", "image"), ("text_relevance", "text")] {
            let reference = golden.f32(&format!("b1.{m}.{key}.0"));
            let scale = reference.iter().fold(0.0f32, |a, x| a.max(x.abs()));
            let (err, _) = max_abs_diff(&floats(&r[field]), &reference);
            assert!(err <= 1e-4 * scale, "{m} {field}: {err:e}");
        }
    }
    image::open(out.join("sample0-sheet.png")).expect("comparison sheet");
    // The page lists the top answers as the terminal does, with their probabilities.
    let top = records[0]["top_answers"].as_array().unwrap();
    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    let listed = format!(
        "top answers: {} {:.1}%, {} ",
        top[0]["answer"].as_str().unwrap(),
        100.0 * top[0]["probability"].as_f64().unwrap(),
        top[1]["answer"].as_str().unwrap()
    );
    assert!(html.contains(&listed), "{listed} not in {html}");
}

/// LXMERT from an obj36 TSV and a question: the JSON equals the reference for case b1
/// (region set synth_000001, "what is on the table?"), boxes included, and a features file
/// gives the same numbers as the TSV; so does the same model saved as pytorch_model.bin with
/// only vocab.txt for its tokenizer (as older Hub repositories ship it).
#[test]
fn explain_lxmert_regions_match_the_reference() {
    let lxmert = fixtures().join("lxmert");
    let golden = Golden::open(&lxmert.join("methods.safetensors"));
    let question = "what is on the table?";
    let photo = fixtures().join("images/coco_127510.jpg");
    let mut runs = Vec::new();
    let features = lxmert.join("regions_synth_000001.safetensors");
    let torch = fixtures().join("lxmert-torch");
    for (name, model, regions, id) in [
        (
            "tsv",
            &lxmert,
            lxmert.join("regions.tsv"),
            Some("synth_000001"),
        ),
        ("file", &lxmert, features.clone(), None),
        ("torch", &torch, features, None),
    ] {
        let out = scratch(&format!("lxmert-{name}"));
        let mut args = vec![
            "explain",
            "--model",
            s(model),
            "--regions",
            s(&regions),
            "--question",
            question,
            "--image",
            s(&photo),
            "--method",
            "chefer,dsmi-grad",
            "--out",
            s(&out),
        ];
        if let Some(id) = id {
            args.extend(["--image-id", id]);
        }
        let run = fiedler(&args);
        assert!(run.status.success(), "{}", stderr(&run));
        image::open(out.join("sample0-sheet.png")).expect("comparison sheet");
        runs.push(records(&out));
    }
    for run in &runs {
        let methods: Vec<&str> = run.iter().map(|r| r["method"].as_str().unwrap()).collect();
        assert_eq!(methods, ["chefer", "dsmi-grad"]);
    }
    for r in &runs[0] {
        assert_eq!(r["family"], "lxmert");
        assert_eq!(r["target"], "predicted-answer");
        assert_eq!(r["boxes"].as_array().unwrap().len(), 10);
        let m = r["method"].as_str().unwrap();
        for (field, key) in [("image_relevance", "image"), ("text_relevance", "text")] {
            let reference = golden.f32(&format!("b1.{m}.{key}.0"));
            let scale = reference.iter().fold(0.0f32, |a, x| a.max(x.abs()));
            let (err, _) = max_abs_diff(&floats(&r[field]), &reference);
            assert!(err <= 1e-4 * scale, "{m} {field}: {err:e}");
        }
    }
    for (a, b) in runs[0].iter().zip(&runs[1]) {
        for field in ["image_relevance", "text_relevance"] {
            assert_eq!(a[field], b[field], "TSV and features file disagree");
        }
    }
    assert_eq!(
        runs[1], runs[2],
        "pytorch_model.bin and safetensors disagree"
    );
}

#[test]
fn explain_vqa_targets_and_bad_input() {
    let lxmert = fixtures().join("lxmert");
    let tsv = lxmert.join("regions.tsv");
    let out = scratch("lxmert-bad");
    let base = [
        "explain",
        "--model",
        s(&lxmert),
        "--question",
        "what is on the table?",
        "--out",
        s(&out),
    ];
    let with = |extra: &[&str]| -> Vec<String> {
        base.iter().chain(extra).map(|a| a.to_string()).collect()
    };
    assert_fails(&with(&[]), "give --regions FILE");
    assert_fails(&with(&["--regions", s(&tsv)]), "--image-id");
    assert_fails(&with(&["--regions", s(&tsv), "--image-id", "nope"]), "nope");
    assert_fails(
        &with(&[
            "--regions",
            s(&tsv),
            "--image-id",
            "synth_000001",
            "--target",
            "answer:zebra",
        ]),
        "no such answer",
    );
    assert_fails(
        &with(&[
            "--regions",
            s(&tsv),
            "--image-id",
            "synth_000001",
            "--target",
            "maybe",
        ]),
        "expected predicted",
    );
    let answers = out.join("answers.json");
    for (list, says) in [
        (
            r#"["yes", "no"]"#,
            "2 answers for a model with 12 answer logits",
        ),
        (r#"["yes"]"#, "1 answer for a model with 12 answer logits"),
    ] {
        std::fs::write(&answers, list).unwrap();
        assert_fails(
            &with(&[
                "--regions",
                s(&tsv),
                "--image-id",
                "synth_000001",
                "--answers",
                s(&answers),
            ]),
            says,
        );
    }
    let vilt = fixtures().join("vilt");
    let photo = fixtures().join("images/catdog.png");
    assert_fails(
        &[
            "explain",
            "--model",
            s(&vilt),
            "--image",
            s(&photo),
            "--question",
            "\u{1}\u{2}",
            "--out",
            s(&out),
        ],
        "has no word tokens",
    );
    // In a --pairs file, a question without words is named by its line, whatever the batch
    // size, before any batch is explained.
    let pairs = out.join("wordless.jsonl");
    let line = |q: &str| serde_json::json!({"image": s(&photo), "question": q}).to_string();
    let lines = [
        line("is there a cat?"),
        String::new(),
        line("is there a dog?"),
        line("\u{200b}\u{200b}"),
    ];
    std::fs::write(&pairs, lines.join("\n")).unwrap();
    for batch in ["1", "2", "8"] {
        assert_fails(
            &[
                "explain", "--model", s(&vilt), "--pairs", s(&pairs), "--batch", batch, "--out",
                s(&out),
            ],
            &format!(
                "{}:4: question \"\\u{{200b}}\\u{{200b}}\" (input 2, counted from 0) has no word tokens",
                pairs.display()
            ),
        );
    }
    // A chosen answer and the seed's Σ-logits target both run and say what they explain.
    for (target, name) in [
        ("answer:table", "answer:table"),
        ("sum-logits", "sum-logits"),
        ("index:3", "answer:1"),
    ] {
        let args = with(&[
            "--regions",
            s(&tsv),
            "--image-id",
            "synth_000001",
            "--target",
            target,
            "--method",
            "dsmi-grad",
        ]);
        let run = fiedler(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(run.status.success(), "{}", stderr(&run));
        assert_eq!(records(&out)[0]["target"], name);
    }
}

/// LXMERT from a --pairs file: one line per question with its own regions, image id and
/// image; batched. The first line is case b1 of the reference.
#[test]
fn explain_lxmert_pairs_file() {
    let lxmert = fixtures().join("lxmert");
    let out = scratch("lxmert-pairs");
    let list = out.join("pairs.jsonl");
    let tsv = lxmert.join("regions.tsv");
    let photo = fixtures().join("images/coco_127510.jpg");
    let lines = [
        format!(
            r#"{{"regions": "{}", "image_id": "synth_000001", "image": "{}", "question": "what is on the table?"}}"#,
            s(&tsv),
            s(&photo)
        ),
        format!(
            r#"{{"regions": "{}", "image_id": "synth_000002", "question": "is there a dog?"}}"#,
            s(&tsv)
        ),
    ];
    std::fs::write(&list, lines.join("\n")).unwrap();
    let run = fiedler(&[
        "explain",
        "--model",
        s(&lxmert),
        "--pairs",
        s(&list),
        "--batch",
        "2",
        "--method",
        "chefer",
        "--out",
        s(&out),
    ]);
    assert!(run.status.success(), "{}", stderr(&run));
    let records = records(&out);
    assert_eq!(records.len(), 2);
    // Both lines read one TSV: each sample is told by its image id, in every output.
    let stdout = String::from_utf8_lossy(&run.stdout);
    let page = std::fs::read_to_string(out.join("index.html")).unwrap();
    for (i, id) in ["synth_000001", "synth_000002"].iter().enumerate() {
        assert_eq!(records[i]["image_id"], *id);
        let label = format!("{} (image {id})", s(&tsv));
        assert!(stdout.contains(&format!("sample {i}: {label}")), "{stdout}");
        assert!(page.contains(&label), "{page}");
    }
    let reference = Golden::open(&lxmert.join("methods.safetensors")).f32("b1.chefer.image.0");
    let scale = reference.iter().fold(0.0f32, |a, x| a.max(x.abs()));
    let (err, _) = max_abs_diff(&floats(&records[0]["image_relevance"]), &reference);
    assert!(err <= 1e-4 * scale, "{err:e}");
    assert!(
        out.join("sample0-chefer.png").exists(),
        "the line with an image gets an overlay"
    );
    assert!(
        !out.join("sample1-chefer.png").exists(),
        "the line without one does not"
    );
    // Each line names its regions: --regions or --image-id beside the file is refused, not
    // ignored.
    for (flag, value) in [("--regions", s(&tsv)), ("--image-id", "synth_000003")] {
        let run = fiedler(&[
            "explain",
            "--model",
            s(&lxmert),
            "--pairs",
            s(&list),
            flag,
            value,
            "--out",
            s(&out),
        ]);
        let err = stderr(&run);
        assert_eq!(run.status.code(), Some(2), "{err}");
        assert!(err.contains("cannot be used with"), "{err}");
    }
}

/// LXMERT only draws on its images, so they are read before any sample is explained: a
/// missing one fails the run at once (here before the second line's missing regions file is
/// reached), not after the work.
#[test]
fn lxmert_images_are_read_before_the_work() {
    let lxmert = fixtures().join("lxmert");
    let out = scratch("lxmert-gone-image");
    let list = out.join("pairs.jsonl");
    let regions = lxmert.join("regions_synth_000001.safetensors");
    let lines = [
        serde_json::json!({"regions": s(&regions), "image": "gone.png", "question": "is there a dog?"}),
        serde_json::json!({"regions": "gone.safetensors", "question": "is there a dog?"}),
    ];
    std::fs::write(&list, format!("{}\n{}\n", lines[0], lines[1])).unwrap();
    assert_pairs_fail(&lxmert, &list, &out, "gone.png not found");
}

/// A negative count is read as the number it is and refused as such, not taken for an
/// unknown option; a negative or zero count says what it must be, as --batch does.
#[test]
fn negative_counts_are_refused_as_numbers() {
    for (args, says) in [
        (
            &["explain", "--batch", "-1"][..],
            "invalid value '-1' for '--batch <BATCH>': must be at least 1",
        ),
        (
            &["synth", "--out", "x", "--images", "-2"][..],
            "invalid value '-2' for '--images <IMAGES>': must be at least 1",
        ),
        (
            &["eval", "--samples", "-3"][..],
            "invalid value '-3' for '--samples <SAMPLES>': must be at least 1",
        ),
        (
            &["eval", "--samples", "0"],
            "invalid value '0' for '--samples <SAMPLES>': must be at least 1",
        ),
        (
            &["synth", "--out", "x", "--images", "0"],
            "invalid value '0' for '--images <IMAGES>': must be at least 1",
        ),
    ] {
        let run = fiedler(args);
        let err = stderr(&run);
        assert_eq!(run.status.code(), Some(2), "{err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

/// Every --pairs line is checked as the file is read, and what is wrong is named by its line:
/// regions that are not there, a TSV without an "image_id" or an "image_id" beside a features
/// file, an empty question. An "image_id" may be a number, as COCO's are.
#[test]
fn lxmert_pairs_lines_are_checked_as_read() {
    let lxmert = fixtures().join("lxmert");
    let out = scratch("lxmert-pair-lines");
    let list = out.join("pairs.jsonl");
    let tsv = lxmert.join("regions.tsv");
    let features = lxmert.join("regions_synth_000001.safetensors");
    let good = serde_json::json!({"regions": s(&features), "question": "is there a dog?"});
    for (line, needle) in [
        (
            serde_json::json!({"regions": "gone.safetensors", "question": "is there a dog?"}),
            "pairs.jsonl:2: regions ".to_owned(),
        ),
        (
            serde_json::json!({"regions": s(&tsv), "question": "is there a dog?"}),
            format!("pairs.jsonl:2: {} is an obj36 TSV, which holds many images: give the line an \"image_id\"", s(&tsv)),
        ),
        (
            serde_json::json!({"regions": s(&features), "image_id": "synth_000001", "question": "is there a dog?"}),
            "pairs.jsonl:2: \"image_id\" picks an image of an obj36 TSV".to_owned(),
        ),
        (
            serde_json::json!({"regions": s(&features), "question": " "}),
            "pairs.jsonl:2: the text is empty".to_owned(),
        ),
        (
            serde_json::json!({"regions": s(&tsv), "image_id": 7, "question": "is there a dog?"}),
            format!("image id \"7\" not found in {}", s(&tsv)),
        ),
    ] {
        std::fs::write(&list, format!("{good}\n{line}\n")).unwrap();
        assert_pairs_fail(&lxmert, &list, &out, &needle);
    }
}

/// `--method chefer,partial-lrp --lrp` on LXMERT: chefer reads as chefer-lrp, and both match
/// the LRP goldens (tolerance of tests/lxmert_lrp.rs: max(1e-4, 2·spread)).
#[test]
fn explain_lxmert_with_lrp_matches_the_reference() {
    let lxmert = fixtures().join("lxmert");
    let golden = Golden::open(&lxmert.join("lrp.safetensors"));
    let out = scratch("lxmert-lrp");
    let run = fiedler(&[
        "explain",
        "--model",
        s(&lxmert),
        "--regions",
        s(&lxmert.join("regions_synth_000001.safetensors")),
        "--question",
        "what is on the table?",
        "--method",
        "chefer,partial-lrp",
        "--lrp",
        "--out",
        s(&out),
    ]);
    assert!(run.status.success(), "{}", stderr(&run));
    let records = records(&out);
    let methods: Vec<&str> = records
        .iter()
        .map(|r| r["method"].as_str().unwrap())
        .collect();
    assert_eq!(methods, ["chefer-lrp", "partial-lrp"]);
    for r in &records {
        let m = r["method"].as_str().unwrap();
        for (field, key) in [("image_relevance", "image"), ("text_relevance", "text")] {
            let reference = golden.f32(&format!("b1.{m}.{key}.0"));
            let spread = golden.f32(&format!("b1.spread.{m}.{key}.0"))[0];
            let scale = reference.iter().fold(0.0f32, |a, x| a.max(x.abs()));
            let (err, _) = max_abs_diff(&floats(&r[field]), &reference);
            assert!(
                err <= (2.0 * spread).max(1e-4) * scale,
                "{m} {field}: {err:e}"
            );
        }
    }
}

/// A rerun into the same folder leaves no image of the earlier run behind (a sheet or an
/// overlay of a method not asked this time), and files fiedler did not write stay.
#[test]
fn rerun_into_the_same_folder_leaves_no_stale_images() {
    let out = scratch("rerun");
    let model = fixtures().join("clip");
    let image = fixtures().join("images/catdog.png");
    let run = |method: &str| {
        let args = [
            "explain",
            "--model",
            s(&model),
            "--image",
            s(&image),
            "--text",
            "a cat",
            "--method",
            method,
            "--out",
            s(&out),
        ];
        let o = fiedler(&args);
        assert!(o.status.success(), "{}", stderr(&o));
    };
    run("all");
    assert!(out.join("sample0-sheet.png").is_file());
    // Named like fiedler's images, but by no method: not fiedler's.
    std::fs::write(out.join("notes.png"), b"mine").unwrap();
    std::fs::write(out.join("sample0-mine.png"), b"mine").unwrap();
    run("dsmi");
    let mut pngs: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".png"))
        .collect();
    pngs.sort();
    assert_eq!(pngs, ["notes.png", "sample0-dsmi.png", "sample0-mine.png"]);
    std::fs::remove_dir_all(out).unwrap();
}

/// A text longer than the model's positions is explained as cut, and every output says so:
/// a warning, `truncated` in explanations.json and a note on the page, which shows the whole
/// text above tokens that stop early.
#[test]
fn truncated_text_is_flagged_in_every_output() {
    let out = scratch("truncated");
    let long = ["a photo of a cat"; 40].join(" and ");
    let run = clip_catdog(&[&long, "a dog"], "rollout", &out)
        .output()
        .expect("binary runs");
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(stderr(&run).contains("it is truncated"), "{}", stderr(&run));
    // The terminal's sample line shows the text's start and its length, not all of it.
    let stdout = String::from_utf8_lossy(&run.stdout);
    let shown: String = long.chars().take(120).collect();
    assert!(
        stdout.contains(&format!("\"{shown}…\" ({} characters)", long.len())),
        "{stdout}"
    );
    assert!(!stdout.contains(&long), "{stdout}");
    let truncated: Vec<bool> = records(&out)
        .iter()
        .map(|r| r["truncated"].as_bool().unwrap())
        .collect();
    assert_eq!(truncated, [true, false]);
    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert_eq!(html.matches("truncated: longer than the model").count(), 1);
}

/// Standard output that cannot be written (a full disk; /dev/full here) is an error that says
/// so, after the files are written, not a panic.
#[cfg(target_os = "linux")]
#[test]
fn unwritable_standard_output_is_an_error_not_a_panic() {
    let out = scratch("stdout-full");
    let run = clip_catdog(&["a cat"], "rollout", &out)
        .stdout(std::fs::File::create("/dev/full").unwrap())
        .output()
        .expect("binary runs");
    let err = stderr(&run);
    assert_eq!(run.status.code(), Some(1), "{err}");
    assert!(
        err.contains("cannot write to standard output") && !err.contains("panicked"),
        "{err}"
    );
    assert!(out.join("explanations.json").is_file());
}

/// LXMERT without an image to draw on: the terminal and index.html name each map's strongest
/// region (the largest entry of its image_relevance in explanations.json) and its box; with an
/// image the overlays show them, and the list is left out.
#[test]
fn lxmert_without_an_image_lists_its_strongest_regions() {
    let lxmert = fixtures().join("lxmert");
    let regions = lxmert.join("regions_synth_000001.safetensors");
    let photo = fixtures().join("images/coco_127510.jpg");
    for with_image in [false, true] {
        let out = scratch(&format!("lxmert-regions-listed-{with_image}"));
        let mut args = vec![
            "explain",
            "--model",
            s(&lxmert),
            "--regions",
            s(&regions),
            "--question",
            "what is on the table?",
            "--method",
            "chefer,dsmi-grad",
            "--out",
            s(&out),
        ];
        if with_image {
            args.extend(["--image", s(&photo)]);
        }
        let run = fiedler(&args);
        assert!(run.status.success(), "{}", stderr(&run));
        let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
        let html = std::fs::read_to_string(out.join("index.html")).unwrap();
        if with_image {
            assert!(!stdout.contains("regions: #"), "{stdout}");
            assert!(!html.contains("strongest regions"));
            continue;
        }
        let records = records(&out);
        assert_eq!(records.len(), 2);
        let lines: Vec<&str> = stdout.lines().collect();
        for r in records {
            let relevance = floats(&r["image_relevance"]);
            let best = (0..relevance.len())
                .max_by(|&a, &b| relevance[a].total_cmp(&relevance[b]).then(b.cmp(&a)))
                .unwrap();
            let listed = format!("regions: #{best} (");
            // The line under the method's tokens lists its regions.
            let method = format!("  {} ", r["method"].as_str().unwrap());
            let at = lines.iter().position(|l| l.starts_with(&method)).unwrap();
            assert!(
                lines[at + 1].contains(&listed),
                "{} lacks {listed}: {stdout}",
                r["method"]
            );
            assert!(
                html.contains(&format!("strongest {listed}")),
                "{}",
                r["method"]
            );
        }
    }
}

/// A tab or line break inside a text is shown escaped on the terminal's sample line (raw, it
/// broke the layout), as is a bidirectional control (raw, it reorders the line), while
/// explanations.json keeps the text as given.
#[test]
fn control_characters_in_a_text_are_escaped_on_the_terminal() {
    let out = scratch("control-chars");
    let text = "a photo\tof a\ncat\u{202e}god";
    let run = clip_catdog(&[text], "rollout", &out)
        .output()
        .expect("binary runs");
    assert!(run.status.success(), "{}", stderr(&run));
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    let line = stdout.lines().next().unwrap();
    assert!(
        line.contains(r#""a photo\tof a\ncat\u{202e}god""#),
        "{line}"
    );
    assert_eq!(records(&out)[0]["text"], text);
}

/// A flat image map is said on the terminal and in index.html, not only on its overlay: the
/// bundled LXMERT's Grad-CAM map of the README's question is all zero, its chefer map is not.
#[test]
fn a_flat_image_map_is_said_on_the_terminal() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = scratch("flat-image");
    let run = fiedler(&[
        "explain",
        "--model",
        s(&root.join("models/lxmert-synth")),
        "--regions",
        s(&root.join("examples/regions/shapes-4.safetensors")),
        "--image",
        s(&root.join("examples/images/shapes-4.png")),
        "--question",
        "what color is the triangle?",
        "--method",
        "grad-cam,chefer",
        "--out",
        s(&out),
    ]);
    assert!(run.status.success(), "{}", stderr(&run));
    let stdout = String::from_utf8_lossy(&run.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    let flat = "image: flat map (all values equal)";
    assert_eq!(stdout.matches(flat).count(), 1, "{stdout}");
    let at = lines.iter().position(|l| l.contains(flat)).unwrap();
    assert!(
        lines[at - 1].trim_start().starts_with("grad-cam"),
        "{stdout}"
    );
    let page = std::fs::read_to_string(out.join("index.html")).unwrap();
    let said = "warning: image: flat map (all values equal), nothing is ranked";
    assert_eq!(page.matches(said).count(), 1, "{page}");
    let records = records(&out);
    assert!(records[0]["image_relevance"]
        .as_array()
        .unwrap()
        .iter()
        .all(|v| v.as_f64() == Some(0.0)));
}

/// A --pairs line may give the answer it expects (a string or a number): each sample says
/// whether the model gave it, the JSON records it, and the terminal and the page count the
/// right ones and name the wrong ones. A line without one says nothing of it.
#[test]
fn expected_answers_are_marked_right_or_wrong() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = scratch("expected");
    let image = root.join("examples/images/shapes-1.png");
    let list = out.join("pairs.jsonl");
    let lines = [
        format!(
            r#"{{"image": "{}", "question": "how many crosses are there?", "answer": 1}}"#,
            s(&image)
        ),
        format!(
            r#"{{"image": "{}", "question": "what shape is the blue object?", "answer": "elephant"}}"#,
            s(&image)
        ),
        format!(
            r#"{{"image": "{}", "question": "is there a green triangle?"}}"#,
            s(&image)
        ),
    ];
    let run_with = |lines: &[String], extra: &[&str]| {
        std::fs::write(&list, lines.join("\n")).unwrap();
        let model = root.join("models/vilt-synth");
        let mut args = vec!["explain", "--model", s(&model), "--pairs", s(&list)];
        args.extend(["--method", "raw-attn", "--no-images", "--out", s(&out)]);
        args.extend(extra);
        fiedler(&args)
    };
    let run_on = |lines: &[String]| run_with(lines, &[]);
    let run = run_on(&lines);
    assert!(run.status.success(), "{}", stderr(&run));
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    let records = records(&out);
    assert_eq!(
        records[0]["answer"], "1",
        "the bundled ViLT counts the one cross"
    );
    assert_eq!(records[0]["expected_answer"], "1");
    assert_eq!(records[0]["correct"], true);
    assert_eq!(records[1]["expected_answer"], "elephant");
    assert_eq!(records[1]["correct"], false);
    assert!(records[2].get("expected_answer").is_none());
    assert!(records[2].get("correct").is_none());
    let sample_line = |i: usize| {
        let start = format!("sample {i}:");
        stdout
            .lines()
            .find(|l| l.starts_with(&start))
            .unwrap()
            .to_owned()
    };
    assert!(sample_line(0).contains("expected: 1 (right)"), "{stdout}");
    assert!(
        sample_line(1).contains("expected: elephant (wrong)"),
        "{stdout}"
    );
    assert!(!sample_line(2).contains("expected"), "{stdout}");
    assert!(
        stdout.contains("answers as expected: 1 of 2 (wrong: sample 1)"),
        "{stdout}"
    );
    // An answer the model does not have is said to be one before the work.
    let warned = stderr(&run);
    assert!(
        warned.contains("warning: expected answer not among the model's")
            && warned.contains(&format!(
                "so it cannot be right ({}:2: \"elephant\")",
                list.display()
            )),
        "{warned}"
    );
    let page = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert!(page.contains("answers as expected: 1 of 2"));
    // A key a typo away from one a line reads (a misspelt "answer", which would go unchecked)
    // is warned of by its first line, once, whatever other keys lines hold; where the line
    // lacks a key it needs, the error names it, and LXMERT's "regions".
    let good = |extra: &str| {
        format!(
            r#"{{"image": "{}", "question": "how many crosses are there?"{extra}}}"#,
            s(&image)
        )
    };
    let run = run_on(&[
        good(r#", "question_id": 1"#),
        good(r#", "question_id": 2, "answr": "1""#),
        good(r#", "question_id": 3, "answr": "1""#),
    ]);
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(
        stderr(&run).contains(&format!(
            "warning: {}:2: key \"answr\" is not read; did you mean \"answer\"? (one more line has it)",
            list.display()
        )),
        "{}",
        stderr(&run)
    );
    assert!(!stderr(&run).contains("question_id"), "{}", stderr(&run));
    for (line, needle) in [
        (
            good("").replace("question", "qestion"),
            "missing field `text` (\"qestion\": did you mean \"question\"?)",
        ),
        (
            good("").replace("image", "regions"),
            "missing field `image` (\"regions\" is an LXMERT line's region features: is --model the one meant?)",
        ),
    ] {
        let run = run_on(&[line]);
        assert_eq!(run.status.code(), Some(1));
        assert!(stderr(&run).contains(needle), "{}", stderr(&run));
    }
    // --quiet prints no sample, and the summary names twenty wrong samples at most.
    let wrong: Vec<String> = (0..25).map(|_| good(r#", "answer": "9""#)).collect();
    let run = run_with(&wrong, &["--quiet"]);
    assert!(run.status.success(), "{}", stderr(&run));
    let listed: Vec<String> = (0..20).map(|i| i.to_string()).collect();
    assert_eq!(
        String::from_utf8_lossy(&run.stdout),
        format!(
            "answers as expected: 0 of 25 (wrong: samples {} and 5 more)\nwrote {}\n",
            listed.join(", "),
            out.join("index.html").display()
        )
    );
    // An answer (or image id) that is neither a string nor a whole number says so, by line.
    for answer in ["-1", "2.5", "[\"yes\"]"] {
        let run = run_on(&[good(&format!(r#", "answer": {answer}"#))]);
        assert_eq!(run.status.code(), Some(1));
        assert!(
            stderr(&run).contains(&format!(
                "an \"answer\" or \"image_id\" is a string or a whole number from 0 to 2^64 - 1, not {answer}"
            )),
            "{}",
            stderr(&run)
        );
    }
}

/// A --pairs file that is not UTF-8 is refused by the line and column of its first bad byte
/// (a Latin-1 "café"), or as UTF-16 (a Windows editor's "Unicode").
#[test]
fn pairs_files_that_are_not_utf8_say_where() {
    let out = scratch("not-utf8");
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/vilt-synth");
    let list = out.join("pairs.jsonl");
    std::fs::write(
        &list,
        b"{\"image\": \"a.png\", \"text\": \"x\"}\n{\"image\": \"b.png\", \"text\": \"caf\xe9\"}\n",
    )
    .unwrap();
    let needle = format!(
        "{}:2: byte 0xe9 at column 32 is not UTF-8: save the file as UTF-8",
        list.display()
    );
    assert_pairs_fail(&model, &list, &out, &needle);
    std::fs::write(&list, b"\xff\xfe{\x00}\x00").unwrap();
    let needle = format!("{} is UTF-16: save it as UTF-8", list.display());
    assert_pairs_fail(&model, &list, &out, &needle);
    std::fs::write(&list, "\n \r\n").unwrap();
    let needle = format!(
        "--pairs {} holds no samples: every line is blank",
        list.display()
    );
    assert_pairs_fail(&model, &list, &out, &needle);
}

/// `--target expected` explains each --pairs line's answer (found in another case, or as VQA
/// accuracy reads it: "Two" is "2"): the maps of each sample are those of `--target
/// answer:NAME` on its line alone, bit for bit (the CPU gives the same bits at any batch
/// size), across batches of 2; a line without an answer, an answer the model lacks, and
/// questions not from --pairs are refused, named by their line, before the work.
#[test]
fn target_expected_explains_each_lines_answer() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let model = root.join("models/vilt-synth");
    let out = scratch("target-expected");
    let image = root.join("examples/images/shapes-1.png");
    let line = |question: &str, answer: Option<&str>| {
        let mut l = serde_json::json!({"image": s(&image), "question": question});
        if let Some(a) = answer {
            l["answer"] = a.into();
        }
        l.to_string()
    };
    let asked = [
        ("what color is the square?", "Blue", "blue"),
        ("what color is the square?", "green", "green"),
        ("how many crosses are there?", "Two", "2"),
    ];
    let list = out.join("pairs.jsonl");
    let lines: Vec<String> = asked.iter().map(|(q, a, _)| line(q, Some(a))).collect();
    std::fs::write(&list, lines.join("\n")).unwrap();
    let explain = |list: &Path, target: &str, batch: &str, out: &Path| {
        fiedler(&[
            "explain",
            "--model",
            s(&model),
            "--pairs",
            s(list),
            "--target",
            target,
            "--method",
            "dsmi-grad,chefer",
            "--batch",
            batch,
            "--no-images",
            "--out",
            s(out),
        ])
    };
    let run = explain(&list, "expected", "2", &out);
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(
        !stderr(&run).contains("forward pass alone"),
        "{}",
        stderr(&run)
    );
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        stdout.contains("explained: green (the prediction)"),
        "{stdout}"
    );
    assert!(stdout.contains("explained: blue\n"), "{stdout}");
    let together = records(&out);
    assert_eq!(together.len(), 2 * asked.len());
    for (i, (question, _, name)) in asked.iter().enumerate() {
        let alone_dir = out.join(format!("alone-{i}"));
        let alone_list = out.join(format!("alone-{i}.jsonl"));
        std::fs::write(&alone_list, &lines[i]).unwrap();
        let run = explain(&alone_list, &format!("answer:{name}"), "1", &alone_dir);
        assert!(run.status.success(), "{}", stderr(&run));
        for (a, b) in records(&alone_dir).iter().zip(&together[2 * i..]) {
            assert_eq!(b["target"], format!("answer:{name}"), "{question}");
            for key in ["method", "target", "score", "probability", "text_relevance"] {
                assert_eq!(a[key], b[key], "sample {i}, {key}");
            }
            assert_eq!(a["image_relevance"], b["image_relevance"], "sample {i}");
        }
    }
    assert_ne!(
        together[0]["score"], together[2]["score"],
        "two answers to one question explain two logits"
    );
    let refused = |lines: &[String], needle: &str| {
        std::fs::write(&list, lines.join("\n")).unwrap();
        let run = explain(&list, "expected", "2", &out);
        assert_eq!(run.status.code(), Some(1), "{}", stderr(&run));
        assert!(stderr(&run).contains(needle), "{}", stderr(&run));
    };
    let at = |n: usize| format!("{}:{n}", list.display());
    refused(
        &[lines[0].clone(), line("is there a cross?", None)],
        &format!("--target expected: {}: no \"answer\" to explain", at(2)),
    );
    refused(
        &[line("is there a cross?", Some("purpel")), lines[1].clone()],
        &format!(
            "--target expected: {}: the model has no answer \"purpel\" (19 answers; did you mean \"purple\"?)",
            at(1)
        ),
    );
    // Every line at fault is listed, up to ten.
    let mut bad: Vec<String> = (0..12).map(|_| line("is there a cross?", None)).collect();
    bad.insert(1, lines[0].clone());
    refused(
        &bad,
        &format!(
            "--target expected: 12 lines cannot be explained:\n  {}: no \"answer\" to explain (it explains each line's \"answer\")\n  {}: no",
            at(1),
            at(3)
        ),
    );
    refused(
        &bad,
        &format!(
            "{}: no \"answer\" to explain (it explains each line's \"answer\")\n  and 2 more",
            at(11)
        ),
    );
    // Methods that read the forward pass alone are said to be blind to the target.
    let ask = |target: &str| {
        fiedler(&[
            "explain",
            "--model",
            s(&model),
            "--image",
            s(&image),
            "--question",
            "is there?",
            "--target",
            target,
            // The spelling eval takes.
            "--methods",
            "raw-attn,chefer,dsmi",
            "--no-images",
            "--out",
            s(&out),
        ])
    };
    let run = ask("answer:no");
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(
        stderr(&run).contains("warning: --target answer:no: raw-attn and dsmi read the forward pass alone, so their maps are the same whatever answer is explained"),
        "{}",
        stderr(&run)
    );
    for (target, needle) in [
        (
            "expected",
            "for questions given with --question, name the answer",
        ),
        (
            "expcted",
            "index:N, expected (each --pairs line's \"answer\")",
        ),
    ] {
        let run = ask(target);
        assert_eq!(run.status.code(), Some(1));
        assert!(stderr(&run).contains(needle), "{}", stderr(&run));
    }
}

/// Ctrl-C stops `explain` after the batch in hand: the outputs hold the samples done, and the
/// process says how far it got and exits with 130.
#[cfg(unix)]
#[test]
fn ctrl_c_writes_the_samples_done() {
    let out = scratch("ctrl-c");
    // The example questions twenty times over: long enough to be stopped midway.
    let (list, total) = example_questions(&out, 20);
    // The lock file is made once Ctrl-C is caught, just before the work.
    let stopped = stop_explain(
        &out,
        &list,
        "1",
        "raw-attn",
        ".fiedler-explain.lock",
        &[100, 30, 300, 5],
    );
    let stderr = stopped.expect("explain was never stopped midway");
    let records = records(&out.join("out"));
    let methods: std::collections::BTreeSet<&str> = records
        .iter()
        .map(|r| r["method"].as_str().unwrap())
        .collect();
    let done = records.len() / methods.len();
    assert!(done > 0 && done < total, "{done} of {total}");
    assert_eq!(records.len(), done * methods.len());
    assert!(
        stderr.contains(&format!(
            "stopped after {done} of {total} samples: the outputs hold them"
        )),
        "{stderr}"
    );
    let run = run_record(&out.join("out"));
    assert_eq!(
        (run["samples"].as_u64(), run["explained"].as_u64()),
        (Some(total as u64), Some(done as u64))
    );
    let page = std::fs::read_to_string(out.join("out/index.html")).unwrap();
    assert!(page.contains(&format!("id=\"sample-{}\"", done - 1)));
    assert!(!page.contains(&format!("id=\"sample-{done}\"")));
    // The samples done are drawn, as a run that was not stopped draws them.
    assert!(
        stderr.contains(&format!("drawing the images of the {done} samples done")),
        "{stderr}"
    );
    for i in [0, done - 1] {
        assert!(
            out.join(format!("out/sample{i}-raw-attn.png")).is_file(),
            "sample {i}"
        );
    }
    assert!(
        page.contains(&format!(
            "<p class=\"note\">stopped (Ctrl-C) after {done} of {total} samples: the page holds the samples done</p>"
        )),
        "{page}"
    );
}

/// `fiedler explain` of the bundled ViLT on `list` into `out/out`, sent Ctrl-C each delay of
/// `delays_ms` after the file `mark` appears in that folder, tried until it exits as stopped
/// (status 130): its stderr then.
#[cfg(unix)]
fn stop_explain(
    out: &Path,
    list: &Path,
    batch: &str,
    method: &str,
    mark: &str,
    delays_ms: &[u64],
) -> Option<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (model, out_dir) = (root.join("models/vilt-synth"), out.join("out"));
    let args = [
        "explain",
        "--model",
        s(&model),
        "--pairs",
        s(list),
        "--batch",
        batch,
        "--method",
        method,
        "--out",
        s(&out_dir),
    ];
    delays_ms.iter().find_map(|&delay_ms| {
        let _ = std::fs::remove_dir_all(&out_dir);
        interrupted_after(&args, &out_dir.join(mark), delay_ms)
    })
}

/// Runs `fiedler args`, sends it Ctrl-C `delay_ms` after the file `mark` appears, and returns
/// its stderr if it exited as stopped (status 130).
#[cfg(unix)]
fn interrupted_after(args: &[&str], mark: &Path, delay_ms: u64) -> Option<String> {
    let child = Command::new(env!("CARGO_BIN_EXE_fiedler"))
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while !mark.exists() && start.elapsed() < std::time::Duration::from_secs(60) {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    std::thread::sleep(std::time::Duration::from_millis(delay_ms));
    common::interrupt(child)
}

/// The example questions, `copies` times over, with absolute image paths, as a pairs file in
/// `dir`; returns it and the number of samples.
fn example_questions(dir: &Path, copies: usize) -> (PathBuf, usize) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let examples = std::fs::read_to_string(root.join("examples/questions.jsonl")).unwrap();
    let base = root.join("examples");
    let lines: Vec<String> = examples
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.replace("\"images/", &format!("\"{}/images/", s(&base))))
        .collect();
    let list = dir.join("pairs.jsonl");
    std::fs::write(&list, vec![lines.join("\n"); copies].join("\n")).unwrap();
    (list, copies * lines.len())
}

/// Ctrl-C while the images are drawn stops the drawing: explanations.json (written first) and
/// index.html hold every sample, the page shows the images drawn, and the process says so
/// and exits with 130.
#[cfg(unix)]
#[test]
fn ctrl_c_while_drawing_keeps_every_sample() {
    let out = scratch("ctrl-c-drawing");
    let (list, total) = example_questions(&out, 20);
    // explanations.json is written as the drawing starts.
    let stopped = stop_explain(&out, &list, "64", "all", "explanations.json", &[200; 3]);
    let stderr = stopped.expect("explain was never stopped while drawing");
    let methods = 10;
    assert_eq!(records(&out.join("out")).len(), total * methods);
    let sheets = std::fs::read_dir(out.join("out"))
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            name.to_str().unwrap().ends_with("-sheet.png")
        })
        .count();
    assert!(sheets > 0 && sheets < total, "{sheets} of {total} drawn");
    assert!(
        stderr.contains(&format!(
            "stopped drawing after the images of {sheets} of {total} samples: \
             explanations.json and index.html hold every sample"
        )),
        "{stderr}"
    );
    let page = std::fs::read_to_string(out.join("out/index.html")).unwrap();
    assert!(page.contains(&format!("id=\"sample-{}\"", total - 1)));
    assert_eq!(page.matches("-sheet.png").count(), sheets);
    assert!(
        page.contains(&format!(
            "<p class=\"note\">the drawing was stopped (Ctrl-C): {} of {total} samples have no images</p>",
            total - sheets
        )),
        "{page}"
    );
}

/// --no-images writes explanations.json and the page, and no PNG; the lines can come from
/// standard input (`--pairs -`), relative paths then resolving against the current folder,
/// which an image not found there names.
#[test]
fn no_images_and_pairs_from_standard_input() {
    use std::io::Write;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = scratch("no-images");
    let examples = std::fs::read(root.join("examples/questions.jsonl")).unwrap();
    let piped_from = |folder: &Path| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_fiedler"))
            .current_dir(folder)
            .args(["explain", "--model", s(&root.join("models/vilt-synth"))])
            .args(["--pairs", "-", "--method", "dsmi,chefer", "--no-images"])
            .args(["--out", s(&out)])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&examples).unwrap();
        child.wait_with_output().unwrap()
    };
    let elsewhere = piped_from(root);
    assert_eq!(elsewhere.status.code(), Some(1));
    assert!(
        stderr(&elsewhere).contains(&format!(
            "not found (a piped line's paths are read from the current folder, {})",
            root.canonicalize().unwrap().display()
        )),
        "{}",
        stderr(&elsewhere)
    );
    let run = piped_from(&root.join("examples"));
    assert!(run.status.success(), "{}", stderr(&run));
    // The prompt is for a person at a terminal, not a pipe.
    assert!(
        !stderr(&run).contains("reading --pairs lines"),
        "{}",
        stderr(&run)
    );
    let samples = examples
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .count();
    assert_eq!(records(&out).len(), samples * 2);
    let page = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert!(page.contains(&format!("id=\"sample-{}\"", samples - 1)));
    let pngs = std::fs::read_dir(&out)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "png")
        })
        .count();
    assert_eq!(pngs, 0);
}

/// An image that fails only when decoded (a JPEG cut short), or that the model's resize
/// leaves no pixels, on the last line of a --pairs file stops the run before any work, named
/// by its line; a line holding a JSON list says that a line holds one object.
#[test]
fn bad_images_and_lines_are_named_by_their_line_before_the_work() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = scratch("late-bad");
    let (list, total) = example_questions(&out, 1);
    let jpeg = std::fs::read(root.join("tests/fixtures/images/coco_127510.jpg")).unwrap();
    let cut = out.join("cut.jpg");
    std::fs::write(&cut, &jpeg[..jpeg.len() / 2]).unwrap();
    let wide = out.join("wide.png");
    image::RgbImage::new(3000, 6).save(&wide).unwrap();
    let good = std::fs::read_to_string(&list).unwrap();
    for (bad, expected) in [
        (&cut, "ends before its end-of-image marker"),
        (&wide, "which resizes to 144×0"),
    ] {
        let line = serde_json::json!({"image": s(bad), "question": "what color is it?"});
        std::fs::write(&list, format!("{good}\n{line}\n")).unwrap();
        let run = fiedler(&[
            "explain",
            "--model",
            s(&root.join("models/vilt-synth")),
            "--pairs",
            s(&list),
            "--method",
            "dsmi",
            "--out",
            s(&out.join("out")),
        ]);
        let message = stderr(&run);
        assert_eq!(run.status.code(), Some(1), "{message}");
        let at = format!("{}:{}", list.display(), total + 1);
        assert!(
            message.contains(&at) && message.contains(expected),
            "{message}"
        );
        assert!(
            !message.contains("samples done"),
            "work was done: {message}"
        );
    }
    for (line, expected) in [
        (
            serde_json::json!([{"image": s(&wide), "question": "what?"}]),
            "a line holds one JSON object, not a list",
        ),
        (
            serde_json::json!({"image": s(&wide), "question": "what?", "answer": " "}),
            "1: the \"answer\" is empty",
        ),
    ] {
        std::fs::write(&list, format!("{line}\n")).unwrap();
        let run = fiedler(&["explain", "--pairs", s(&list), "--out", s(&out.join("out"))]);
        assert!(stderr(&run).contains(expected), "{}", stderr(&run));
    }
}

/// A --pairs line that is JSON but not an object is refused, named by its line: a list is not
/// read as a pair by position (serde would take `[IMAGE, TEXT]` for one), and a string or a
/// number is not answered with the reader's type name.
#[test]
fn pairs_lines_that_are_not_objects_are_refused() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = scratch("not-objects");
    let list = out.join("pairs.jsonl");
    let image = root.join("examples/images/shapes-1.png");
    let regions = root.join("examples/regions/shapes-1.safetensors");
    for (model, line, kind) in [
        (
            "vilt-synth",
            serde_json::json!([s(&image), "what color?"]),
            "a list",
        ),
        ("vilt-synth", serde_json::json!("what color?"), "a string"),
        ("lxmert-synth", serde_json::json!(42), "a number"),
        (
            "lxmert-synth",
            serde_json::json!([s(&regions), "x", null, null, "what color?"]),
            "a list",
        ),
    ] {
        std::fs::write(&list, format!("{line}\n")).unwrap();
        let model = root.join("models").join(model);
        let run = fiedler(&[
            "explain",
            "--model",
            s(&model),
            "--pairs",
            s(&list),
            "--out",
            s(&out.join("out")),
        ]);
        let message = stderr(&run);
        assert_eq!(run.status.code(), Some(1), "{message}");
        assert!(
            message.contains("pairs.jsonl:1: expected {")
                && message.contains(&format!("the line is {kind}, not a JSON object")),
            "{message}"
        );
        assert!(!message.contains("struct"), "{message}");
        assert!(!out.join("out/explanations.json").exists());
    }
    // A value of the wrong type is named by its key.
    let line = serde_json::json!({"image": s(&image), "question": ["what color?"]});
    std::fs::write(&list, format!("{line}\n")).unwrap();
    let model = root.join("models/vilt-synth");
    let run = fiedler(&["explain", "--model", s(&model), "--pairs", s(&list)]);
    let message = stderr(&run);
    assert_eq!(run.status.code(), Some(1), "{message}");
    assert!(
        message.contains("\"question\": invalid type: sequence, expected a string"),
        "{message}"
    );
}
