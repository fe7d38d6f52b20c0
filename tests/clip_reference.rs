//! CLIP forward/backward against Hugging Face transformers (spec §A.2).
//!
//! Golden values come from tools/reference/make_clip_fixture.py: a small random-weight
//! CLIPModel in float32, attention probabilities from `output_attentions` (eager), layer
//! outputs from `hidden_states`, and ∂(Σ pair scores)/∂A from torch autograd. The engine gets
//! the golden pixel values and token ids, so this test pins the model, not preprocessing.
//!
//! Tolerances (issue 2): pair scores ≤ 1e-5 relative; attention ≤ 1e-5 absolute; layer
//! outputs and ∂y/∂A ≤ 1e-4 relative to the tensor's largest magnitude.
// `!(err <= tol)` on purpose: unlike `err > tol`, it also fails on NaN.
#![allow(clippy::neg_cmp_op_on_partial_ord)]

mod common;

use common::{fixtures, max_abs_diff, max_diff_rel_to_max, max_rel_diff, Golden};
use fiedler::backend::Cpu;
use fiedler::model::clip::{Clip, ClipInputs, ClipTrace};
use fiedler::model::config::ClipConfig;
use fiedler::model::source::WeightSource;
use fiedler::model::weights::{LoadError, Weights};

const SCORE_REL: f32 = 1e-5;
const ATTN_ABS: f32 = 1e-5;
const HIDDEN_REL_MAX: f32 = 1e-4;
const GRAD_REL_MAX: f32 = 1e-4;

fn golden() -> Golden {
    Golden::open(&fixtures().join("clip/golden.safetensors"))
}

fn inputs(g: &Golden, case: &str) -> ClipInputs {
    let shape = g.shape(&format!("{case}.input_ids"));
    let (batch, seq_len) = (shape[0], shape[1]);
    let ids = g
        .i64(&format!("{case}.input_ids"))
        .iter()
        .map(|&i| i as u32)
        .collect();
    let mask = g.i64(&format!("{case}.attention_mask"));
    let lengths = mask
        .chunks_exact(seq_len)
        .map(|m| m.iter().filter(|&&v| v == 1).count())
        .collect();
    let inputs = ClipInputs {
        pixels: g.f32(&format!("{case}.pixel_values")),
        ids,
        lengths,
        seq_len,
    };
    assert_eq!(inputs.batch(), batch);
    inputs
}

/// Every deviation from the golden case, worst first; empty when within tolerance.
fn deviations(g: &Golden, case: &str, trace: &ClipTrace<Vec<f32>>) -> Vec<String> {
    let mut bad = Vec::new();
    let scores = g.f32(&format!("{case}.pair_scores"));
    let err = max_rel_diff(&trace.output.pair_scores, &scores);
    if !(err <= SCORE_REL) {
        bad.push(format!(
            "pair scores: rel err {err:.3e} ({:?} vs {scores:?})",
            trace.output.pair_scores
        ));
    }
    for (name, ours) in [
        ("image_embeds", &trace.output.image_embeds),
        ("text_embeds", &trace.output.text_embeds),
    ] {
        let (err, _) = max_abs_diff(ours, &g.f32(&format!("{case}.{name}")));
        if !(err <= 1e-5) {
            bad.push(format!("{name}: abs err {err:.3e}"));
        }
    }
    for tower in [&trace.vision, &trace.text] {
        for (l, layer) in tower.layers.iter().enumerate() {
            let key = |what: &str| format!("{case}.{}.{what}.{l}", tower.name);
            let (err, at) = max_abs_diff(&layer.attention, &g.f32(&key("attn")));
            if !(err <= ATTN_ABS) {
                bad.push(format!("{}: abs err {err:.3e} at {at}", key("attn")));
            }
            let err = max_diff_rel_to_max(&layer.output, &g.f32(&key("hidden")));
            if !(err <= HIDDEN_REL_MAX) {
                bad.push(format!("{}: err/max {err:.3e}", key("hidden")));
            }
            let err = max_diff_rel_to_max(
                layer
                    .attention_grad
                    .as_deref()
                    .expect("traced with a backward"),
                &g.f32(&key("grad_attn")),
            );
            if !(err <= GRAD_REL_MAX) {
                bad.push(format!("{}: err/max {err:.3e}", key("grad_attn")));
            }
        }
    }
    bad
}

/// Prints the worst error of each kind (visible with --nocapture), like llm.c's checks.
fn report(g: &Golden, case: &str, trace: &ClipTrace<Vec<f32>>) {
    let (mut attn, mut hidden, mut grad) = (0.0f32, 0.0f32, 0.0f32);
    let mut grad_scale = 0.0f32;
    for tower in [&trace.vision, &trace.text] {
        for (l, layer) in tower.layers.iter().enumerate() {
            let key = |what: &str| format!("{case}.{}.{what}.{l}", tower.name);
            attn = attn.max(max_abs_diff(&layer.attention, &g.f32(&key("attn"))).0);
            hidden = hidden.max(max_diff_rel_to_max(&layer.output, &g.f32(&key("hidden"))));
            let golden_grad = g.f32(&key("grad_attn"));
            grad = grad.max(max_diff_rel_to_max(
                layer
                    .attention_grad
                    .as_deref()
                    .expect("traced with a backward"),
                &golden_grad,
            ));
            grad_scale = grad_scale.max(golden_grad.iter().fold(0.0, |m, x| m.max(x.abs())));
        }
    }
    let score = max_rel_diff(
        &trace.output.pair_scores,
        &g.f32(&format!("{case}.pair_scores")),
    );
    eprintln!(
        "{case}: scores {:?} rel {score:.2e}; attention abs {attn:.2e}; outputs {hidden:.2e}; dA {grad:.2e} (max |dA| {grad_scale:.2e})",
        trace.output.pair_scores
    );
}

fn check_case(case: &str) {
    let g = golden();
    let model = Clip::load(&Cpu, &fixtures().join("clip")).expect("fixture loads");
    let trace = model
        .trace(&Cpu, &inputs(&g, case), None)
        .expect("trace runs");
    assert_eq!(
        trace.vision.layers.len(),
        model.config.vision.num_hidden_layers
    );
    assert_eq!(trace.text.layers.len(), model.config.text.num_hidden_layers);
    report(&g, case, &trace);
    let bad = deviations(&g, case, &trace);
    assert!(
        bad.is_empty(),
        "case {case} deviates from transformers:\n{}",
        bad.join("\n")
    );
}

#[test]
fn clip_batch_of_one_matches_transformers() {
    check_case("b1");
}

#[test]
fn clip_ragged_batch_of_three_matches_transformers() {
    check_case("b3");
}

#[test]
fn clip_scores_without_trace_equal_traced_scores() {
    let g = golden();
    let model = Clip::load(&Cpu, &fixtures().join("clip")).unwrap();
    let inputs = inputs(&g, "b3");
    let plain = model.scores(&Cpu, &inputs).unwrap();
    let err = max_rel_diff(&plain.pair_scores, &g.f32("b3.pair_scores"));
    assert!(err <= SCORE_REL, "rel err {err:e}");
    let logits: Vec<f32> = plain.logits_per_image().concat();
    let err = max_rel_diff(&logits, &g.f32("b3.logits_per_image"));
    assert!(err <= SCORE_REL, "logits_per_image rel err {err:e}");
}

/// One image against every text of the batch, its vision tower run once: row i of
/// transformers' logits_per_image. More or fewer images than one are refused.
#[test]
fn clip_one_image_scores_every_text_as_transformers_does() {
    let g = golden();
    let model = Clip::load(&Cpu, &fixtures().join("clip")).unwrap();
    let batch = inputs(&g, "b3");
    let logits = g.f32("b3.logits_per_image");
    let image_len = batch.pixels.len() / 3;
    for i in 0..3 {
        let one = ClipInputs {
            pixels: batch.pixels[i * image_len..(i + 1) * image_len].to_vec(),
            ..batch.clone()
        };
        let scores = model.scores_of_one_image(&Cpu, &one).unwrap().pair_scores;
        let err = max_rel_diff(&scores, &logits[i * 3..(i + 1) * 3]);
        assert!(err <= SCORE_REL, "image {i}: rel err {err:e}");
    }
    let err = model
        .scores_of_one_image(&Cpu, &batch)
        .unwrap_err()
        .to_string();
    assert!(err.contains("expected one image of"), "{err}");
}

/// Float16 weights, sharded with an index: compared against transformers run on the same
/// f16-rounded weights upcast to f32 (so the f32 tolerance applies), and against the f32
/// model within the f16 rounding bound: weights carry a relative error ≤ 2⁻¹¹, which on
/// this 3-layer model moves pair scores by well under 1%.
#[test]
fn clip_f16_sharded_weights_match() {
    let g = golden();
    let dir = fixtures().join("clip-f16-sharded");
    let model = Clip::load(&Cpu, &dir).expect("f16 sharded fixture loads");
    for case in ["b1", "b3"] {
        let out = model.scores(&Cpu, &inputs(&g, case)).unwrap();
        let err = max_rel_diff(&out.pair_scores, &g.f32(&format!("f16.{case}.pair_scores")));
        assert!(
            err <= SCORE_REL,
            "{case}: f16 weights vs transformers on f16 weights: rel err {err:e}"
        );
        let err = max_rel_diff(&out.pair_scores, &g.f32(&format!("{case}.pair_scores")));
        assert!(err <= 1e-2, "{case}: f16 vs f32 weights: rel err {err:e}");
    }
}

/// Wraps the fixture's weights and nudges one entry of one tensor.
struct Perturbed {
    inner: Weights,
    name: &'static str,
    delta: f32,
}

impl WeightSource for Perturbed {
    fn tensor(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, LoadError> {
        let mut t = self.inner.get(name, shape)?;
        if name == self.name {
            t[0] += self.delta;
        }
        Ok(t)
    }
}

/// The comparison can fail: a 1e-2 change to one weight of the last text layer must be
/// detected, and a change of the first vision layer must show up in its gradients.
#[test]
fn perturbed_weight_is_detected() {
    let g = golden();
    let dir = fixtures().join("clip");
    for name in [
        "text_model.encoder.layers.2.mlp.fc2.weight",
        "vision_model.encoder.layers.0.self_attn.q_proj.weight",
    ] {
        let source = Perturbed {
            inner: Weights::open(&dir).unwrap(),
            name,
            delta: 1e-2,
        };
        let model = Clip::from_source(&Cpu, ClipConfig::from_dir(&dir).unwrap(), &source).unwrap();
        let trace = model.trace(&Cpu, &inputs(&g, "b1"), None).unwrap();
        let bad = deviations(&g, "b1", &trace);
        assert!(!bad.is_empty(), "perturbing {name} went unnoticed");
    }
}
