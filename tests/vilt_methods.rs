//! Every method on ViLT against the Python reference of spec §A.3/§H
//! (tools/reference/make_vilt_fixture.py: the definitions in numpy float64 over the
//! transformers trace): readout row 0, patch tokens in raster order, word tokens; one graph
//! per modality; for a batch of one and a ragged batch of three (text padding mid-sequence,
//! different image sizes).
//!
//! Tolerance: 1e-4 relative to the largest magnitude of each reference vector, as for CLIP.
//! The reference's smallest spectral gap is 3.2e-3, so Fiedler vectors compare entrywise.
// `!(err <= tol)` on purpose: unlike `err > tol`, it also fails on NaN.
#![allow(clippy::neg_cmp_op_on_partial_ord)]

mod common;

use common::{fixtures, max_abs_diff, reference_samples, Golden};
use fiedler::backend::Cpu;
use fiedler::explain::vilt::explain_vilt;
use fiedler::explain::{Method, MethodOptions};
use fiedler::model::vilt::{Vilt, ViltInputs};
use fiedler::model::VqaTarget;

fn inputs(g: &Golden, case: &str) -> ViltInputs {
    g.vilt_inputs(case)
}

fn check(key: &str, method: Method, opts: MethodOptions) {
    let golden = Golden::open(&fixtures().join("vilt/golden.safetensors"));
    let reference = Golden::open(&fixtures().join("vilt/methods.safetensors"));
    let model = Vilt::load(&Cpu, &fixtures().join("vilt")).unwrap();
    let mut bad = Vec::new();
    for case in ["b1", "b3"] {
        let trace = model
            .trace(&Cpu, &inputs(&golden, case), &VqaTarget::Predicted)
            .unwrap();
        let explained = explain_vilt(&trace, &[method], &opts).unwrap();
        // Every sample of the case is compared, not only those explained.
        assert_eq!(
            explained.len(),
            reference_samples(&reference, case),
            "{case}: samples explained"
        );
        for (b, sample) in explained.iter().enumerate() {
            let e = &sample[0];
            assert!(e.degenerate_graphs.is_empty(), "{:?}", e.degenerate_graphs);
            for (what, ours) in [("image", &e.image_relevance), ("text", &e.text_relevance)] {
                let name = format!("{case}.{key}.{what}.{b}");
                let theirs = reference.f32(&name);
                let scale = theirs.iter().fold(0.0f32, |m, x| m.max(x.abs())).max(1e-12);
                let (err, at) = max_abs_diff(ours, &theirs);
                if !(err <= 1e-4 * scale) {
                    bad.push(format!("{name}: |Δ| {err:.3e} at {at} (max {scale:.3e})"));
                }
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn raw_attention_matches_reference() {
    check("raw-attn", Method::RawAttn, MethodOptions::default());
}

#[test]
fn grad_cam_matches_reference() {
    check("grad-cam", Method::GradCam, MethodOptions::default());
}

#[test]
fn rollout_matches_reference() {
    check("rollout", Method::Rollout, MethodOptions::default());
}

#[test]
fn chefer_matches_reference() {
    check("chefer", Method::Chefer, MethodOptions::default());
    check(
        "chefer-last",
        Method::Chefer,
        MethodOptions {
            start_layer: -1,
            ..MethodOptions::default()
        },
    );
}

#[test]
fn dsmi_matches_reference() {
    check("dsmi", Method::Dsmi, MethodOptions::default());
}

#[test]
fn dsmi_grad_matches_reference() {
    check("dsmi-grad", Method::DsmiGrad, MethodOptions::default());
}

#[test]
fn dsmi_grad_attn_matches_reference() {
    check(
        "dsmi-grad-attn",
        Method::DsmiGradAttn,
        MethodOptions::default(),
    );
}
