//! `fiedler inspect`: what it prints for the fixtures, and clean failures (exit 1 with a
//! message naming the path, never a panic's exit 101).

mod common;

use std::process::{Command, Output};

use common::fixtures;

fn fiedler(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fiedler"))
        .args(args)
        .output()
        .expect("binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn inspect_describes_the_clip_fixture() {
    let dir = fixtures().join("clip");
    let out = fiedler(&["inspect", "--model", dir.to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.contains("family      clip"), "{stdout}");
    assert!(
        stdout.contains("vision      3 layers, 4 heads, width 64, feed-forward 128, 37 tokens"),
        "{stdout}"
    );
    assert!(
        stdout
            .contains("text        3 layers, 4 heads, width 48, feed-forward 96, up to 32 tokens"),
        "{stdout}"
    );
    assert!(
        stdout.contains("image       48×48 pixels, cut into 6×6 patches of 8×8"),
        "{stdout}"
    );
    assert!(stdout.contains("projection  40 (the shared"), "{stdout}");
    assert!(stdout.contains("vocabulary  814 word pieces"), "{stdout}");
    assert!(stdout.contains("parameters  217457"), "{stdout}");
    assert!(stdout.contains("F32 (110 tensors)"), "{stdout}");
    assert!(stdout.contains("loads       yes"), "{stdout}");
    // The folder may be given alone, as `eval report` takes its file.
    let bare = fiedler(&["inspect", dir.to_str().unwrap()]);
    assert!(bare.status.success(), "{}", text(&bare.stderr));
    assert_eq!(text(&bare.stdout), stdout);
}

#[test]
fn inspect_reports_f16_storage_of_the_sharded_fixture() {
    let dir = fixtures().join("clip-f16-sharded");
    let out = fiedler(&["inspect", "--model", dir.to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.contains("parameters  217457"), "{stdout}");
    assert!(stdout.contains("F16"), "{stdout}");
}

#[test]
fn inspect_of_a_missing_directory_fails_cleanly() {
    let out = fiedler(&["inspect", "--model", "/nonexistent/model"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("error: no model folder /nonexistent/model"),
        "{stderr}"
    );
}

/// Without a folder, inspect asks for one the way the README gives it (`fiedler inspect DIR`),
/// rather than clap's "required: --model", which hid that the folder may be given alone.
#[test]
fn inspect_without_a_folder_asks_for_one() {
    let out = fiedler(&["inspect"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("error: give the model folder: fiedler inspect DIR (or --model DIR)"),
        "{stderr}"
    );
    assert!(!stderr.contains("required arguments"), "{stderr}");
}

#[test]
fn inspect_without_weights_fails_cleanly() {
    let dir = std::env::temp_dir().join(format!("fiedler-cli-noweights-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(fixtures().join("clip/config.json"), dir.join("config.json")).unwrap();
    let out = fiedler(&["inspect", "--model", dir.to_str().unwrap()]);
    let stderr = text(&out.stderr);
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("model.safetensors"), "{stderr}");
}

#[test]
fn inspect_describes_the_vqa_fixtures() {
    let out = fiedler(&[
        "inspect",
        "--model",
        fixtures().join("vilt").to_str().unwrap(),
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.contains("family      vilt"), "{stdout}");
    assert!(
        stdout.contains("joint       3 layers, 4 heads, width 48"),
        "{stdout}"
    );
    let out = fiedler(&[
        "inspect",
        "--model",
        fixtures().join("lxmert").to_str().unwrap(),
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        stdout.contains("language    3 layers") && stdout.contains("regions     2 layers"),
        "{stdout}"
    );
    assert!(stdout.contains("cross       2 layers"), "{stdout}");
    assert!(
        stdout.contains("features    16 wide per region"),
        "{stdout}"
    );
    assert!(
        stdout.contains("answers     12 (named in config.json)"),
        "{stdout}"
    );
}

/// A folder whose config and weights disagree is described, then refused (exit 1) with what
/// loading it says: inspect is where one checks a model before a long run. A file given as
/// the folder says so.
#[test]
fn inspect_refuses_a_model_that_does_not_load() {
    let dir = common::edited_fixture("vilt", "inspect-width", |c| c["hidden_size"] = 64.into());
    let out = fiedler(&["inspect", "--model", dir.to_str().unwrap()]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stdout.contains("width 64"), "{stdout}");
    assert!(
        stderr.contains("the model does not load") && stderr.contains("shape"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();

    let file = fixtures().join("lxmert/config.json");
    for (args, says) in [
        (
            vec!["inspect", "--model", file.to_str().unwrap()],
            "--model takes",
        ),
        (vec!["inspect", file.to_str().unwrap()], "inspect takes"),
    ] {
        let out = fiedler(&args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains(&format!("is a file: {says} the model's folder")),
            "{stderr}"
        );
    }
}

/// A standard output that cannot be written (a full disk; /dev/full here) is an error that
/// says so, exit 1, not a panic (exit 101): inspect and bench print through the CLI's `out!`.
#[cfg(target_os = "linux")]
#[test]
fn unwritable_standard_output_is_an_error_not_a_panic() {
    let model = fixtures().join("clip");
    for args in [
        vec!["inspect", "--model", model.to_str().unwrap()],
        vec![
            "bench",
            "--size",
            "fiedler",
            "--nodes",
            "4",
            "--batch",
            "1",
            "--repeats",
            "1",
        ],
    ] {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .expect("/dev/full");
        let out = Command::new(env!("CARGO_BIN_EXE_fiedler"))
            .args(&args)
            .stdout(full)
            .output()
            .expect("binary runs");
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains("cannot write to standard output"),
            "{args:?}: {stderr}"
        );
    }
}

/// A folder whose weights load but that has no tokenizer (neither tokenizer.json nor
/// vocab.txt) is refused, as explain would refuse it; inspect used to say "loads yes".
#[test]
fn inspect_refuses_a_model_without_a_tokenizer() {
    let dir = common::edited_fixture("lxmert", "inspect-no-tokenizer", |_| {});
    for file in ["tokenizer.json", "vocab.txt"] {
        std::fs::remove_file(dir.join(file)).unwrap();
    }
    let out = fiedler(&["inspect", "--model", dir.to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the model does not load") && stderr.contains("tokenizer.json"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A model already in the local Hugging Face cache is found from its Hub id or its
/// repository folder (the snapshot refs/main names), as from_pretrained finds it offline; a
/// Hub id that is not there says where it was looked for and how to download it.
#[test]
fn a_model_in_the_hub_cache_is_found_by_its_id() {
    let cache = std::env::temp_dir().join(format!("fiedler-hub-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cache);
    let repo = cache.join("models--unc-nlp--lxmert-tiny");
    let snapshot = repo.join("snapshots").join("0123abcd");
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs").join("main"), "0123abcd").unwrap();
    for entry in std::fs::read_dir(fixtures().join("lxmert")).unwrap() {
        let path = entry.unwrap().path();
        std::os::unix::fs::symlink(&path, snapshot.join(path.file_name().unwrap())).unwrap();
    }
    // A second, older snapshot: refs/main decides.
    std::fs::create_dir_all(repo.join("snapshots").join("old")).unwrap();
    for model in ["unc-nlp/lxmert-tiny", repo.to_str().unwrap()] {
        let out = Command::new(env!("CARGO_BIN_EXE_fiedler"))
            .args(["inspect", "--model", model])
            .env("HF_HUB_CACHE", &cache)
            .output()
            .unwrap();
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert!(out.status.success(), "{model}: {stderr}");
        assert!(stdout.contains("family      lxmert"), "{stdout}");
        assert!(
            stderr.contains(&snapshot.display().to_string()),
            "says which snapshot: {stderr}"
        );
    }
    let out = Command::new(env!("CARGO_BIN_EXE_fiedler"))
        .args(["inspect", "--model", "unc-nlp/not-downloaded"])
        .env("HF_HUB_CACHE", &cache)
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            &cache
                .join("models--unc-nlp--not-downloaded")
                .display()
                .to_string()
        ) && stderr.contains("huggingface-cli download unc-nlp/not-downloaded"),
        "{stderr}"
    );

    // A cache entry that is there but resolves to no model folder says why.
    let inspect = |model: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_fiedler"))
            .args(["inspect", "--model", model])
            .env("HF_HUB_CACHE", &cache)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{model}: {}", text(&out.stderr));
        text(&out.stderr)
    };
    let broken = cache.join("models--me--broken");
    std::fs::create_dir_all(broken.join("snapshots").join("abc")).unwrap();
    std::fs::create_dir_all(broken.join("refs")).unwrap();
    std::fs::write(broken.join("refs").join("main"), "zzz").unwrap();
    for model in ["me/broken", broken.to_str().unwrap()] {
        let stderr = inspect(model);
        assert!(
            stderr.contains("gives no model folder: no snapshot in")
                && stderr.contains("holds a config.json (an interrupted download?)"),
            "{stderr}"
        );
    }
    for name in ["abc", "def"] {
        let snapshot = broken.join("snapshots").join(name);
        std::fs::create_dir_all(&snapshot).unwrap();
        std::fs::copy(
            fixtures().join("lxmert/config.json"),
            snapshot.join("config.json"),
        )
        .unwrap();
    }
    let stderr = inspect("me/broken");
    assert!(
        stderr.contains("refs/main names snapshot \"zzz\", which has no config.json"),
        "{stderr}"
    );
    let missing = cache.join("no-such-folder");
    assert!(inspect(missing.to_str().unwrap())
        .contains(&format!("no model folder {}", missing.display())),);
    std::fs::remove_dir_all(&cache).unwrap();
}
