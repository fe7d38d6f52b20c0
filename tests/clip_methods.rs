//! Every CLIP method against the Python reference of spec §C/§H
//! (tools/reference/make_clip_methods.py: the same definitions in numpy float64 over the
//! transformers trace), for a batch of one and a ragged batch of three.
//!
//! Tolerance: 1e-4 relative to the largest magnitude of each reference vector (grad-cam
//! vectors can be ~1e-4 in total, so an absolute bound would not test them). The reference
//! reports that 1e-6 relative noise in the trace moves any output by ≤ 2.6e-6 of its max.
//! No graph of these cases has λ₃ − λ₂ below 1e-3, so Fiedler vectors compare entrywise.
// `!(err <= tol)` on purpose: unlike `err > tol`, it also fails on NaN.
#![allow(clippy::neg_cmp_op_on_partial_ord)]

mod common;

use common::{clip_method_inputs, fixtures, max_abs_diff, reference_samples, Golden};
use fiedler::backend::Cpu;
use fiedler::explain::clip::explain_clip;
use fiedler::explain::{Method, MethodOptions};
use fiedler::linalg::Solver;
use fiedler::model::clip::{Clip, ClipInputs};

const REL_TO_MAX: f32 = 1e-4;

fn explain(
    case: &str,
    methods: &[Method],
    opts: &MethodOptions,
) -> Vec<Vec<fiedler::explain::Explanation>> {
    let model = Clip::load(&Cpu, &fixtures().join("clip")).unwrap();
    let trace = model.trace(&Cpu, &clip_method_inputs(case), None).unwrap();
    explain_clip(&trace, methods, opts).unwrap()
}

fn compare(what: &str, ours: &[f32], reference: &[f32]) -> Option<String> {
    let scale = reference
        .iter()
        .fold(0.0f32, |m, x| m.max(x.abs()))
        .max(1e-12);
    let (err, at) = max_abs_diff(ours, reference);
    (!(err <= REL_TO_MAX * scale)).then(|| {
        format!(
            "{what}: |Δ| {err:.3e} at {at} (max |ref| {scale:.3e}): {} vs {}",
            ours[at], reference[at]
        )
    })
}

fn check(case: &str, key: &str, method: Method, opts: MethodOptions) {
    let golden = Golden::open(&fixtures().join("clip/methods.safetensors"));
    let explanations = explain(case, &[method], &opts);
    // Every pair of the case is compared, not only those explained.
    assert_eq!(
        explanations.len(),
        reference_samples(&golden, case),
        "{case}: pairs explained"
    );
    let mut bad = Vec::new();
    for (b, pair) in explanations.iter().enumerate() {
        let e = &pair[0];
        assert!(e.degenerate_graphs.is_empty(), "{:?}", e.degenerate_graphs);
        bad.extend(compare(
            &format!("{case}.{key}.image.{b}"),
            &e.image_relevance,
            &golden.f32(&format!("{case}.{key}.image.{b}")),
        ));
        bad.extend(compare(
            &format!("{case}.{key}.text.{b}"),
            &e.text_relevance,
            &golden.f32(&format!("{case}.{key}.text.{b}")),
        ));
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

fn all_cases(key: &str, method: Method, opts: MethodOptions) {
    for case in ["b1", "m3"] {
        check(case, key, method, opts);
    }
}

#[test]
fn raw_attention_matches_reference() {
    all_cases("raw-attn", Method::RawAttn, MethodOptions::default());
}

#[test]
fn grad_cam_matches_reference() {
    all_cases("grad-cam", Method::GradCam, MethodOptions::default());
}

#[test]
fn rollout_matches_reference() {
    all_cases("rollout", Method::Rollout, MethodOptions::default());
}

#[test]
fn chefer_all_layers_matches_reference() {
    all_cases("chefer", Method::Chefer, MethodOptions::default());
}

#[test]
fn chefer_last_layer_matches_reference() {
    let opts = MethodOptions {
        start_layer: -1,
        start_layer_text: -1,
        ..MethodOptions::default()
    };
    all_cases("chefer-last", Method::Chefer, opts);
}

#[test]
fn dsmi_matches_reference_with_both_solvers() {
    for solver in [Solver::Lanczos, Solver::Dense] {
        let mut opts = MethodOptions::default();
        opts.graph.solver = solver;
        all_cases("dsmi", Method::Dsmi, opts);
    }
}

#[test]
fn dsmi_grad_matches_reference() {
    all_cases("dsmi-grad", Method::DsmiGrad, MethodOptions::default());
}

#[test]
fn dsmi_grad_attn_matches_reference() {
    all_cases(
        "dsmi-grad-attn",
        Method::DsmiGradAttn,
        MethodOptions::default(),
    );
}

/// A pair explained inside a padded batch gets the numbers it gets alone.
#[test]
fn batched_pairs_equal_single_pairs() {
    let model = Clip::load(&Cpu, &fixtures().join("clip")).unwrap();
    let batch = clip_method_inputs("m3");
    let opts = MethodOptions::default();
    let together =
        explain_clip(&model.lrp(&Cpu, &batch, true).unwrap(), &Method::ALL, &opts).unwrap();
    assert_eq!(
        together.len(),
        batch.lengths.len(),
        "pairs explained together"
    );
    for (b, together) in together.iter().enumerate() {
        let len = batch.lengths[b];
        let image_len = batch.pixels.len() / 3;
        let alone = ClipInputs {
            pixels: batch.pixels[b * image_len..(b + 1) * image_len].to_vec(),
            ids: batch.ids[b * batch.seq_len..b * batch.seq_len + len].to_vec(),
            lengths: vec![len],
            seq_len: len,
        };
        let single =
            explain_clip(&model.lrp(&Cpu, &alone, true).unwrap(), &Method::ALL, &opts).unwrap();
        assert_eq!(single.len(), 1, "pair {b} alone");
        assert_eq!(together.len(), Method::ALL.len(), "pair {b} together");
        assert_eq!(single[0].len(), Method::ALL.len(), "pair {b} alone");
        for (x, y) in together.iter().zip(&single[0]) {
            for (u, v) in [
                (&x.image_relevance, &y.image_relevance),
                (&x.text_relevance, &y.text_relevance),
            ] {
                let scale = v.iter().fold(0.0f32, |m, x| m.max(x.abs())).max(1e-12);
                let (err, _) = max_abs_diff(u, v);
                assert!(err <= 1e-5 * scale, "{} pair {b}: {err:e}", x.method);
            }
        }
    }
}

#[test]
fn start_layer_out_of_range_is_an_error() {
    let opts = MethodOptions {
        start_layer: 3,
        ..MethodOptions::default()
    };
    let model = Clip::load(&Cpu, &fixtures().join("clip")).unwrap();
    let trace = model.trace(&Cpu, &clip_method_inputs("b1"), None).unwrap();
    let err = explain_clip(&trace, &[Method::Chefer], &opts)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("--start-layer 3 is outside a tower of 3 layers"),
        "{err}"
    );
    let err = "lime".parse::<Method>().unwrap_err().to_string();
    assert!(
        err.contains("raw-attn, rollout, grad-cam, chefer, dsmi, dsmi-grad, dsmi-grad-attn"),
        "{err}"
    );
}

/// A forward-only recording gives the gradient-free methods the same numbers as a full trace,
/// and a gradient method on it is a clear error.
#[test]
fn recording_without_backward_serves_gradient_free_methods() {
    let model = Clip::load(&Cpu, &fixtures().join("clip")).unwrap();
    let x = clip_method_inputs("m3");
    let opts = MethodOptions::default();
    let free = [Method::RawAttn, Method::Rollout, Method::Dsmi];
    let full = explain_clip(&model.trace(&Cpu, &x, None).unwrap(), &free, &opts).unwrap();
    let recorded = model.record(&Cpu, &x).unwrap();
    let fast = explain_clip(&recorded, &free, &opts).unwrap();
    assert_eq!(full.len(), x.lengths.len());
    assert_eq!(fast.len(), full.len());
    assert!(fast.iter().all(|pair| pair.len() == free.len()));
    for (a, b) in full.iter().flatten().zip(fast.iter().flatten()) {
        assert_eq!(a.image_relevance, b.image_relevance, "{}", a.method);
        assert_eq!(a.text_relevance, b.text_relevance, "{}", a.method);
    }
    let err = explain_clip(&recorded, &[Method::DsmiGrad], &opts)
        .unwrap_err()
        .to_string();
    assert!(err.contains("dsmi-grad reads attention gradients"), "{err}");
}
