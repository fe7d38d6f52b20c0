//! Every method on LXMERT against the Python reference of spec §C
//! (tools/reference/lxmert_methods.py, numpy float64 over the transformers trace): Chefer's
//! relevance maps with the co-attention rules and residual normalisation (§C.1, `rm_no_lrp`),
//! raw attention (§C.4), Grad-CAM (§C.5), rollout with its transpose (§C.6), DSMI (§C.7),
//! DSMI+Grad (§C.8) and DSMI+Grad+Attn (§C.9) in fiedler's form, and the two gradient
//! methods with the seed's Σ-logits target (bug B1), for a batch of one and a ragged three.
//!
//! Tolerance: 1e-4 relative to the largest magnitude of each reference vector, as for CLIP;
//! the reference's smallest spectral gap is 1.1e-2.
// `!(err <= tol)` on purpose: unlike `err > tol`, it also fails on NaN.
#![allow(clippy::neg_cmp_op_on_partial_ord)]

mod common;

use common::{fixtures, max_abs_diff, reference_samples, Golden};
use fiedler::backend::Cpu;
use fiedler::explain::lxmert::{explain_lxmert, grad_scope};
use fiedler::explain::{Method, MethodOptions};
use fiedler::linalg::{fiedler, GraphOptions};
use fiedler::model::lxmert::{GradScope, Lxmert, LxmertInputs};
use fiedler::model::VqaTarget;

fn inputs(g: &Golden, case: &str) -> LxmertInputs {
    g.lxmert_inputs(case)
}

fn check(key: &str, method: Method, target: VqaTarget) {
    let golden = Golden::open(&fixtures().join("lxmert/golden.safetensors"));
    let reference = Golden::open(&fixtures().join("lxmert/methods.safetensors"));
    let model = Lxmert::load(&Cpu, &fixtures().join("lxmert")).unwrap();
    let mut bad = Vec::new();
    for case in ["b1", "b3"] {
        // The backward only as deep as the method reads (what sessions run).
        let x = inputs(&golden, case);
        let trace = model
            .trace_with(&Cpu, &x, &target, grad_scope(&[method]), None)
            .unwrap();
        let explained = explain_lxmert(&trace, &[method], &MethodOptions::default()).unwrap();
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
                    bad.push(format!(
                        "{name}: |Δ| {err:.3e} at {at} (max {scale:.3e}): {} vs {}",
                        ours[at], theirs[at]
                    ));
                }
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn chefer_relevance_maps_match_reference() {
    check("chefer", Method::Chefer, VqaTarget::Predicted);
}

#[test]
fn raw_attention_matches_reference() {
    check("raw-attn", Method::RawAttn, VqaTarget::Predicted);
}

#[test]
fn grad_cam_matches_reference() {
    check("grad-cam", Method::GradCam, VqaTarget::Predicted);
}

#[test]
fn rollout_matches_reference() {
    check("rollout", Method::Rollout, VqaTarget::Predicted);
}

#[test]
fn dsmi_matches_reference() {
    check("dsmi", Method::Dsmi, VqaTarget::Predicted);
}

#[test]
fn dsmi_grad_matches_reference() {
    check("dsmi-grad", Method::DsmiGrad, VqaTarget::Predicted);
}

#[test]
fn dsmi_grad_attn_matches_reference() {
    check("dsmi-grad-attn", Method::DsmiGradAttn, VqaTarget::Predicted);
}

/// `--target sum-logits` reproduces the seed's DSMI-family numbers (bug B1).
#[test]
fn sum_of_logits_target_reproduces_the_seed() {
    check(
        "dsmi-grad.sum-logits",
        Method::DsmiGrad,
        VqaTarget::SumLogits,
    );
    check(
        "dsmi-grad-attn.sum-logits",
        Method::DsmiGradAttn,
        VqaTarget::SumLogits,
    );
}

/// A backward that stopped short serves the methods within its scope (as the full one does,
/// bit for bit) and refuses the others with an error.
#[test]
fn narrower_backward_passes_agree_and_refuse_what_they_lack() {
    let golden = Golden::open(&fixtures().join("lxmert/golden.safetensors"));
    let model = Lxmert::load(&Cpu, &fixtures().join("lxmert")).unwrap();
    let x = inputs(&golden, "b3");
    let target = VqaTarget::Predicted;
    let opts = MethodOptions::default();
    let full = model.trace(&Cpu, &x, &target).unwrap();
    let cases = [
        (GradScope::LastCross, Method::GradCam, Method::DsmiGrad),
        (GradScope::Cross, Method::DsmiGradAttn, Method::Chefer),
        (GradScope::NoImageStack, Method::DsmiGrad, Method::Chefer),
    ];
    for (scope, served, refused) in cases {
        let narrow = model
            .trace_with(&Cpu, &x, &target, Some(scope), None)
            .unwrap();
        let a = explain_lxmert(&full, &[served], &opts).unwrap();
        let b = explain_lxmert(&narrow, &[served], &opts).unwrap();
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(
                x[0].image_relevance, y[0].image_relevance,
                "{scope:?} {served}"
            );
            assert_eq!(
                x[0].text_relevance, y[0].text_relevance,
                "{scope:?} {served}"
            );
        }
        // Traced for the methods: the last layer's image branch is not computed.
        assert!(narrow.cross.last().unwrap().image.is_none());
        if scope == GradScope::Cross {
            // The backward stops at the first layer's self-attention probabilities.
            let first = &narrow.cross[0];
            assert!(first.text_to_image.attention_grad.is_none());
            let image = first.image.as_ref().unwrap();
            assert!(image.image_to_text.attention_grad.is_none());
        }
        let err = explain_lxmert(&narrow, &[refused], &opts).unwrap_err();
        assert!(err.to_string().contains(refused.name()), "{scope:?}: {err}");
    }
    let forward_only = model.record(&Cpu, &x).unwrap();
    assert!(explain_lxmert(&forward_only, &[Method::GradCam], &opts).is_err());

    // Only the last layer's image branch may be missing.
    let mut holed = model
        .trace_with(&Cpu, &x, &target, Some(GradScope::Every), None)
        .unwrap();
    holed.cross[0].image = None;
    let err = explain_lxmert(&holed, &[Method::RawAttn], &opts).unwrap_err();
    assert!(err.to_string().contains("cross layer 0"), "{err}");
}

/// A model with a single cross layer: that layer is also the last, so its image branch is
/// kept (DSMI reads its output as "layer X − 2"), and every method explains the ragged batch
/// with finite values. DSMI's vectors are the Fiedler vectors of that layer's outputs: the
/// image output over every region, the text output over the words.
#[test]
fn a_lone_cross_layer_keeps_its_image_branch_and_every_method_runs() {
    use fiedler::explain::lxmert::lrp_scope;
    use fiedler::model::config::LxmertConfig;
    use fiedler::model::source::RandomWeights;

    let golden = Golden::open(&fixtures().join("lxmert/golden.safetensors"));
    let mut config = LxmertConfig::from_dir(&fixtures().join("lxmert")).unwrap();
    config.x_layers = 1;
    let weights = RandomWeights {
        seed: 7,
        scale: 0.2,
    };
    let model = Lxmert::from_source(&Cpu, config, &weights).unwrap();
    let x = inputs(&golden, "b3");
    let methods = Method::ALL;
    let trace = model
        .trace_with(
            &Cpu,
            &x,
            &VqaTarget::Predicted,
            grad_scope(&methods),
            lrp_scope(&methods),
        )
        .unwrap();
    assert_eq!(trace.cross.len(), 1);
    assert!(trace.cross[0].image.is_some());
    let explained = explain_lxmert(&trace, &methods, &MethodOptions::default()).unwrap();
    for (b, sample) in explained.iter().enumerate() {
        for e in sample {
            assert_eq!(e.image_relevance.len(), x.regions, "{}", e.method);
            assert_eq!(e.text_relevance.len(), trace.lengths[b], "{}", e.method);
            let values = e.image_relevance.iter().chain(&e.text_relevance);
            assert!(
                values.clone().all(|v| v.is_finite()),
                "sample {b} {}",
                e.method
            );
        }
    }

    let opts = GraphOptions::default();
    let layer = &trace.cross[0];
    let image = layer.image.as_ref().unwrap();
    let batch = trace.lengths.len();
    let fiedler_of = |output: &[f32], padded: usize, b: usize, rows: std::ops::Range<usize>| {
        let width = output.len() / (batch * padded);
        let features = &output[(b * padded + rows.start) * width..(b * padded + rows.end) * width];
        let mask = vec![true; rows.len()];
        fiedler(features, rows.len(), width, &mask, &opts)
            .unwrap()
            .vector
    };
    let dsmi = Method::ALL.iter().position(|&m| m == Method::Dsmi).unwrap();
    for (b, sample) in explained.iter().enumerate() {
        let e = &sample[dsmi];
        let regions = fiedler_of(&image.visn_output, x.regions, b, 0..x.regions);
        assert_eq!(e.image_relevance, regions, "sample {b}: image");
        let t = trace.lengths[b];
        let words = fiedler_of(&layer.lang_output, trace.seq_len, b, 1..t - 1);
        assert_eq!(e.text_relevance[1..t - 1], words[..], "sample {b}: words");
        assert_eq!((e.text_relevance[0], e.text_relevance[t - 1]), (0.0, 0.0));
    }
}
