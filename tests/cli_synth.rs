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
    assert!(stdout.contains("answer: green"), "{stdout}");
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
    assert_eq!(records[0]["answer"], "green");
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
