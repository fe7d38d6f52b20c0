//! `fiedler bench`: arguments that cannot make a measurement are refused before any work, and
//! a small Fiedler run prints its table.

use std::process::{Command, Output};

fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fiedler"))
        .arg("bench")
        .args(args)
        .output()
        .expect("binary runs")
}

/// The standard output of a bench that succeeds.
fn bench_ok(args: &[&str]) -> String {
    let out = bench(args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn arguments_that_cannot_be_measured_are_refused_first() {
    for (args, needle) in [
        (
            &["--size", "fiedler", "--nodes", "8,1"][..],
            "--nodes 1: a graph needs at least 2",
        ),
        (
            &["--size", "fiedler", "--nodes", "0"],
            "--nodes 0: a graph needs at least 2",
        ),
        (
            &["--size", "fiedler", "--method", "dsmi"],
            "--method is not read by this measurement",
        ),
        (
            &["--size", "fiedler", "--text-tokens", "5"],
            "--text-tokens is not read",
        ),
        (
            &["--size", "vit-b16", "--nodes", "36"],
            "it is for --size fiedler",
        ),
        (
            &["--size", "lxmert-base", "--eval-samples", "4"],
            "it is for --eval",
        ),
        (
            &["--size", "vit-b32", "--text-tokens", "100"],
            "the model has 77 text positions",
        ),
        (
            &["--size", "lxmert-base", "--text-tokens", "600"],
            "512 text positions",
        ),
        (
            &["--size", "vilt-b32", "--text-tokens", "41"],
            "the model has 40 text positions",
        ),
        (&["--size", "vilt-b32", "--eval"], "--eval times LXMERT"),
        (&["--method", "all,dsmi"], "`all` stands alone"),
    ] {
        let out = bench(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?} printed before failing");
    }
}

#[test]
fn fiedler_bench_prints_a_row_per_size() {
    let stdout = bench_ok(&[
        "--size",
        "fiedler",
        "--nodes",
        "8,12",
        "--batch",
        "3",
        "--repeats",
        "1",
    ]);
    let rows: Vec<&str> = stdout
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .next()
                .is_some_and(|w| w == "8" || w == "12")
        })
        .collect();
    assert_eq!(rows.len(), 2, "{stdout}");
    for row in rows {
        let graphs_per_s: f64 = row.split_whitespace().nth(3).unwrap().parse().unwrap();
        assert!(graphs_per_s > 0.0, "{row}");
    }
}

/// ViLT-B/32 on a 384 × 512 image (192 patches, 193 image tokens with its class token) and
/// a question of 12 tokens: a row per method, whose dense products are those of a forward
/// over the 205 tokens (raw attention reads no backward).
#[test]
fn vilt_bench_prints_a_row_per_method() {
    let stdout = bench_ok(&[
        "--size",
        "vilt-b32",
        "--batch",
        "1",
        "--method",
        "raw-attn,grad-cam",
        "--repeats",
        "1",
    ]);
    assert!(stdout.contains("(192 patches)"), "{stdout}");
    let gflop = |method: &str| -> f64 {
        let row = stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(method))
            .unwrap_or_else(|| panic!("no {method} row: {stdout}"));
        row.split_whitespace().nth(7).unwrap().parse().unwrap()
    };
    // Per layer: the query, key, value and output projections (4·2·T·768²), the
    // feed-forward (2·2·T·768·3072) and the attention's two products (2·2·T²·768); then the
    // patch embedding (192 patches of 3·32² pixels), the pooler at [CLS] and the answer
    // head (768 → 1536 → 3129).
    let t = 205.0;
    let layer = 8.0 * t * 768.0 * 768.0 + 4.0 * t * 768.0 * 3072.0 + 4.0 * t * t * 768.0;
    let forward = 12.0 * layer
        + 2.0 * 192.0 * 3072.0 * 768.0
        + 2.0 * 768.0 * 768.0
        + 2.0 * (768.0 * 1536.0 + 1536.0 * 3129.0);
    let raw_attn = gflop("raw-attn");
    assert!(
        (raw_attn - forward / 1e9).abs() < 0.05,
        "{raw_attn} against {}",
        forward / 1e9
    );
    // Grad-CAM adds the last layer's backward at [CLS].
    assert!(gflop("grad-cam") > raw_attn, "{stdout}");
}

/// Sizes beyond the machine's memory are refused with the memory they need, before any work
/// (a graph of 10⁶ nodes takes 16 TB of f64 matrices; 10⁷ ViT-B/32 images 6 TB of pixels),
/// not met by an aborted allocation or the OOM killer. (Where the system says how much memory
/// is free: Linux.)
#[cfg(target_os = "linux")]
#[test]
fn sizes_beyond_memory_are_refused() {
    for (args, needle) in [
        (
            &["--size", "fiedler", "--nodes", "1000000", "--batch", "1"][..],
            "error: 1 graph of 1000000 nodes: out of host memory: solving the graphs needs",
        ),
        (
            &[
                "--size", "vit-b32", "--batch", "10000000", "--method", "raw-attn",
            ],
            "error: batch 10000000: out of host memory: making the input images needs",
        ),
        (
            &[
                "--size",
                "lxmert-base",
                "--batch",
                "10000000",
                "--method",
                "raw-attn",
            ],
            "error: batch 10000000: out of host memory: making the input regions needs",
        ),
        (
            &[
                "--size", "vilt-b32", "--batch", "10000000", "--method", "raw-attn",
            ],
            "error: batch 10000000: out of host memory: making the input images needs",
        ),
    ] {
        let out = bench(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

/// Under an address-space limit (`ulimit -v`, as some clusters set), a batch past it is
/// refused with the batch size, not aborted by the failed allocation: here 2.4 GiB against a
/// batch whose attention alone needs 455 MiB more than is left.
#[cfg(target_os = "linux")]
#[test]
fn an_address_space_limit_is_a_memory_limit() {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -v 2500000 && exec {} bench --size vit-b16 --method dsmi-grad \
             --batch 256 --repeats 1",
            env!("CARGO_BIN_EXE_fiedler")
        ))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("error: batch 256: out of host memory:") && stderr.contains("of 2.4 GiB)"),
        "{stderr}"
    );
}
