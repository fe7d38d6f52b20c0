//! ViLT forward/backward against Hugging Face transformers (spec §A.3, §H).
//!
//! Golden values: tools/reference/make_vilt_fixture.py, a small random-weight
//! ViltForQuestionAnswering in float32 with patches in raster order (§H), attention
//! probabilities from `output_attentions`, layer outputs from `hidden_states`, and
//! ∂logit[predicted]/∂A from torch autograd. The engine gets the golden pixel values, pixel
//! masks and token ids, so this pins the model, not preprocessing.
//!
//! Tolerances as for CLIP (issue 5): logits ≤ 1e-5 relative to the largest logit; attention
//! ≤ 1e-5 absolute; layer outputs and ∂y/∂A ≤ 1e-4 relative to the tensor's largest
//! magnitude. Rows of padding tokens hold whatever the padding computes; transformers pads
//! the image with randomly drawn (identical) padding patches, fiedler with the same values in
//! raster order, so every tensor compares over the whole padded sequence.
// `!(err <= tol)` on purpose: unlike `err > tol`, it also fails on NaN.
#![allow(clippy::neg_cmp_op_on_partial_ord)]

mod common;

use common::{fixtures, max_abs_diff, max_diff_rel_to_max, Golden};
use fiedler::backend::Cpu;
use fiedler::model::vilt::{Vilt, ViltInputs, ViltTrace};
use fiedler::model::VqaTarget;

fn golden() -> Golden {
    Golden::open(&fixtures().join("vilt/golden.safetensors"))
}

fn inputs(g: &Golden, case: &str) -> ViltInputs {
    g.vilt_inputs(case)
}

fn deviations(g: &Golden, case: &str, trace: &ViltTrace<Vec<f32>>) -> Vec<String> {
    let mut bad = Vec::new();
    let logits = g.f32(&format!("{case}.logits"));
    let err = max_diff_rel_to_max(&trace.output.logits, &logits);
    if !(err <= 1e-5) {
        bad.push(format!("logits: err/max {err:.3e}"));
    }
    let predicted: Vec<usize> = g
        .i64(&format!("{case}.predicted"))
        .iter()
        .map(|&p| p as usize)
        .collect();
    if trace.targets.as_deref() != Some(predicted.as_slice()) {
        bad.push(format!("predicted {:?} vs {predicted:?}", trace.targets));
    }
    for (l, layer) in trace.joint.layers.iter().enumerate() {
        let (err, at) = max_abs_diff(&layer.attention, &g.f32(&format!("{case}.attn.{l}")));
        if !(err <= 1e-5) {
            bad.push(format!("attn.{l}: abs err {err:.3e} at {at}"));
        }
        let err = max_diff_rel_to_max(&layer.output, &g.f32(&format!("{case}.hidden.{l}")));
        if !(err <= 1e-4) {
            bad.push(format!("hidden.{l}: err/max {err:.3e}"));
        }
        let err = max_diff_rel_to_max(
            layer
                .attention_grad
                .as_deref()
                .expect("traced with a backward"),
            &g.f32(&format!("{case}.grad_attn.{l}")),
        );
        if !(err <= 1e-4) {
            bad.push(format!("grad_attn.{l}: err/max {err:.3e}"));
        }
    }
    bad
}

fn check_case(case: &str) {
    let g = golden();
    let model = Vilt::load(&Cpu, &fixtures().join("vilt")).expect("fixture loads");
    let trace = model
        .trace(&Cpu, &inputs(&g, case), &VqaTarget::Predicted)
        .expect("trace runs");
    assert_eq!(trace.joint.layers.len(), 3);
    assert_eq!(
        trace.joint.tokens,
        g.shape(&format!("{case}.hidden.0"))[1],
        "token count"
    );
    let bad = deviations(&g, case, &trace);
    assert!(
        bad.is_empty(),
        "case {case} deviates from transformers:\n{}",
        bad.join("\n")
    );
}

#[test]
fn vilt_batch_of_one_matches_transformers() {
    check_case("b1");
}

/// Different question lengths and image sizes: text padding mid-sequence, pixel masks,
/// per-sample position interpolation and image padding tokens.
#[test]
fn vilt_ragged_batch_of_three_matches_transformers() {
    check_case("b3");
}

/// `logits` runs the last layer at the [CLS] rows alone (a causal-free single query over
/// the same masked keys): the same logits as transformers' full forward, on the ragged
/// batch whose masks that query must keep.
#[test]
fn vilt_logits_without_trace_match_transformers() {
    let g = golden();
    let model = Vilt::load(&Cpu, &fixtures().join("vilt")).unwrap();
    for case in ["b1", "b3"] {
        let out = model.logits(&Cpu, &inputs(&g, case)).unwrap();
        let err = max_diff_rel_to_max(&out.logits, &g.f32(&format!("{case}.logits")));
        assert!(err <= 1e-5, "{case}: logits err/max {err:.3e}");
    }
}

#[test]
fn vilt_layouts_follow_the_token_order() {
    let g = golden();
    let model = Vilt::load(&Cpu, &fixtures().join("vilt")).unwrap();
    let out = model.logits(&Cpu, &inputs(&g, "b3")).unwrap();
    let grids: Vec<(usize, usize)> = out.layouts.iter().map(|l| l.grid).collect();
    assert_eq!(grids, vec![(4, 4), (4, 6), (6, 2)]);
    assert_eq!(out.layouts[1].patch_tokens(), 14..38);
    assert_eq!(out.layouts[0].word_tokens(), 1..6);
}

/// Inputs no image could give are refused: a pixel mask that marks no patch, a patch kept
/// twice. Keeping no patch is allowed (the perturbation benchmark's last step).
#[test]
fn impossible_patch_inputs_are_refused() {
    let g = golden();
    let model = Vilt::load(&Cpu, &fixtures().join("vilt")).unwrap();
    let mut x = inputs(&g, "b1");
    x.kept_patches = Some(vec![Vec::new()]);
    assert!(model.logits(&Cpu, &x).is_ok());
    x.kept_patches = Some(vec![vec![0, 3, 0]]);
    let err = model.logits(&Cpu, &x).expect_err("refused").to_string();
    assert!(err.contains("keeps patch 0 twice"), "{err}");
    x.kept_patches = None;
    x.pixel_mask.iter_mut().for_each(|m| *m = false);
    let err = model.logits(&Cpu, &x).expect_err("refused").to_string();
    assert!(err.contains("marks no patch"), "{err}");
}

/// A positive `max_image_length` (tools/reference/make_vilt_cap_golden.py, cap 14 on grids
/// of 16, 24 and 12 patches): each sample keeps an evenly spaced subset of at most 14
/// patches, and the logits are what transformers computes for those patches (≤ 1e-5
/// relative); the patches left out get relevance 0 over the sample's whole grid.
#[test]
fn capped_image_length_keeps_evenly_spaced_patches_like_transformers() {
    let dir = fixtures().join("vilt");
    let cap = Golden::open(&dir.join("cap.safetensors"));
    let mut config = fiedler::model::config::ViltConfig::from_dir(&dir).unwrap();
    config.max_image_length = 14;
    let weights = fiedler::model::weights::Weights::open(&dir).unwrap();
    let model = Vilt::from_source(&Cpu, config, &weights).unwrap();
    let x = inputs(&golden(), "b3");
    let trace = model.trace(&Cpu, &x, &VqaTarget::Predicted).unwrap();
    let err = max_diff_rel_to_max(&trace.output.logits, &cap.f32("b3.logits"));
    assert!(err <= 1e-5, "logits: err/max {err:.3e}");
    let mut dropped = Vec::new();
    for (b, layout) in trace.output.layouts.iter().enumerate() {
        let kept: Vec<usize> = cap
            .i64(&format!("b3.kept.{b}"))
            .iter()
            .map(|&k| k as usize)
            .collect();
        assert_eq!(layout.patch_index, kept, "sample {b}");
        dropped.push(layout.dropped_patches());
    }
    assert_eq!(dropped, [2, 10, 0]);
    let explained = fiedler::explain::vilt::explain_vilt(
        &trace,
        &[fiedler::explain::Method::DsmiGrad],
        &fiedler::explain::MethodOptions::default(),
    )
    .unwrap();
    for (sample, layout) in explained.iter().zip(&trace.output.layouts) {
        let image = &sample[0].image_relevance;
        assert_eq!(image.len(), layout.grid.0 * layout.grid.1);
        for (i, v) in image.iter().enumerate() {
            if !layout.patch_index.contains(&i) {
                assert_eq!(*v, 0.0, "left-out patch {i}");
            }
        }
        assert!(image.iter().any(|&v| v > 0.0));
    }
}
