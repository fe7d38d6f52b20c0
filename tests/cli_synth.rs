//! The bundled demo: `fiedler explain` without --model runs the bundled ViLT on an example, from
//! the checkout and from any other directory.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fiedler-cli-synth-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    dir
}

fn explain_without_model(cwd: &Path, image: &Path, out: &Path) {
    let run = Command::new(env!("CARGO_BIN_EXE_fiedler"))
        .current_dir(cwd)
        .args(["explain", "--image"])
        .arg(image)
        .args([
            "--question",
            "what color is the square?",
            "--method",
            "dsmi-grad,chefer",
            "--out",
        ])
        .arg(out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{}\n{}",
        stdout,
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains("answer: "), "{stdout}");
    for f in [
        "sample0-dsmi-grad.png",
        "sample0-chefer.png",
        "index.html",
        "explanations.json",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let overlay = image::open(out.join("sample0-dsmi-grad.png")).unwrap();
    assert!(overlay.width() >= 200);
    let records: Vec<Value> =
        serde_json::from_str(&fs::read_to_string(out.join("explanations.json")).unwrap()).unwrap();
    assert_eq!(records.len(), 2);
    assert_eq!(records[0]["family"], "vilt");
    // an answer of the bundled model's vocabulary, the same for both methods
    let config: Value = serde_json::from_str(
        &fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("models/vilt-synth/config.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let answer = records[0]["answer"].as_str().unwrap();
    assert!(
        config["id2label"]
            .as_object()
            .unwrap()
            .values()
            .any(|v| v == answer),
        "{answer}"
    );
    assert_eq!(records[1]["answer"], answer);
}

#[test]
fn explain_defaults_to_the_bundled_vilt() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let example = root.join("examples/images/shapes-1.png");
    // from the checkout (models/ in the current directory) ...
    let out = scratch("here");
    explain_without_model(root, &example, &out);
    fs::remove_dir_all(&out).unwrap();
    // ... and from elsewhere (the checkout's models/ through the build's manifest directory)
    let out = scratch("elsewhere");
    fs::create_dir_all(&out).unwrap();
    explain_without_model(&out, &example, &out.join("o"));
    fs::remove_dir_all(&out).unwrap();
}

/// examples/captions.jsonl is a --pairs file for the bundled CLIP: each image's five captions
/// share a softmax, and the true one (first, marked "true") is the most probable.
#[test]
fn example_caption_sets_explain_with_the_bundled_clip() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = scratch("captions");
    let run = Command::new(env!("CARGO_BIN_EXE_fiedler"))
        .current_dir(root)
        .args([
            "explain",
            "--model",
            "models/clip-synth",
            "--pairs",
            "examples/captions.jsonl",
        ])
        .args(["--method", "raw-attn", "--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let lines: Vec<Value> = fs::read_to_string(root.join("examples/captions.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let records: Vec<Value> =
        serde_json::from_str(&fs::read_to_string(out.join("explanations.json")).unwrap()).unwrap();
    assert_eq!(records.len(), 20);
    for (set, (lines, records)) in lines.chunks(5).zip(records.chunks(5)).enumerate() {
        let p: Vec<f64> = records
            .iter()
            .map(|r| r["probability"].as_f64().unwrap())
            .collect();
        assert!(
            (p.iter().sum::<f64>() - 1.0).abs() < 1e-5,
            "set {set}: {p:?}"
        );
        let best = (0..5).max_by(|&a, &b| p[a].total_cmp(&p[b])).unwrap();
        assert_eq!(lines[best]["true"], true, "set {set}: {p:?}");
        assert!(lines.iter().all(|l| l["image"] == lines[0]["image"]));
    }
    fs::remove_dir_all(&out).unwrap();
}
