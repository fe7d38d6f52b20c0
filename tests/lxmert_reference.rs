//! LXMERT forward/backward against Hugging Face transformers (spec §A.1).
//!
//! Golden values: tools/reference/make_lxmert_fixture.py, a small random-weight
//! LxmertForQuestionAnswering in float32; every attention module's probabilities (both
//! directions of each cross-attention captured separately) and ∂y/∂A by torch autograd, for
//! the predicted answer's logit and for the Σ-logits target of the seed (bug B1). The last
//! cross layer's image branch has no gradient: the golden zeros must come out as zeros.
//!
//! Tolerances: logits ≤ 1e-5 relative to the largest; attention ≤ 1e-5 absolute; layer
//! outputs and ∂y/∂A ≤ 1e-4 relative to the tensor's largest magnitude (absolute 1e-7 when
//! the reference is all zeros).
// `!(err <= tol)` on purpose: unlike `err > tol`, it also fails on NaN.
#![allow(clippy::neg_cmp_op_on_partial_ord)]

mod common;

use common::{fixtures, max_abs_diff, max_diff_rel_to_max, Golden};
use fiedler::backend::Cpu;
use fiedler::model::lxmert::{GivenStacks, Lxmert, LxmertInputs, LxmertTrace};
use fiedler::model::VqaTarget;

fn golden() -> Golden {
    Golden::open(&fixtures().join("lxmert/golden.safetensors"))
}

fn inputs(g: &Golden, case: &str) -> LxmertInputs {
    g.lxmert_inputs(case)
}

fn compare_grad(bad: &mut Vec<String>, name: &str, ours: &[f32], theirs: &[f32]) {
    let all_zero = theirs.iter().all(|&v| v == 0.0);
    let (abs, _) = max_abs_diff(ours, theirs);
    let ok = if all_zero {
        abs <= 1e-7
    } else {
        max_diff_rel_to_max(ours, theirs) <= 1e-4
    };
    if !ok {
        bad.push(format!(
            "{name}: |Δ| {abs:.3e} (reference all zero: {all_zero})"
        ));
    }
}

fn deviations(
    g: &Golden,
    case: &str,
    grad_prefix: &str,
    trace: &LxmertTrace<Vec<f32>>,
) -> Vec<String> {
    let mut bad = Vec::new();
    let err = max_diff_rel_to_max(&trace.output.logits, &g.f32(&format!("{case}.logits")));
    if !(err <= 1e-5) {
        bad.push(format!("logits: err/max {err:.3e}"));
    }
    let mut check = |module: String, attn: &[f32], grad: &[f32], output: Option<(&str, &[f32])>| {
        let (err, at) = max_abs_diff(attn, &g.f32(&format!("{case}.attn.{module}")));
        if !(err <= 1e-5) {
            bad.push(format!("attn.{module}: abs err {err:.3e} at {at}"));
        }
        compare_grad(
            &mut bad,
            &format!("{grad_prefix}grad_attn.{module}"),
            grad,
            &g.f32(&format!("{case}.{grad_prefix}grad_attn.{module}")),
        );
        if let Some((name, out)) = output {
            let err = max_diff_rel_to_max(out, &g.f32(&format!("{case}.{name}")));
            if !(err <= 1e-4) {
                bad.push(format!("{name}: err/max {err:.3e}"));
            }
        }
    };
    for (l, layer) in trace.lang.iter().enumerate() {
        check(
            format!("lang.{l}"),
            &layer.attention,
            layer
                .attention_grad
                .as_deref()
                .expect("traced with a backward"),
            Some((&format!("lang.{l}"), &layer.output)),
        );
    }
    for (r, layer) in trace.visn.iter().enumerate() {
        check(
            format!("visn.{r}"),
            &layer.attention,
            layer
                .attention_grad
                .as_deref()
                .expect("traced with a backward"),
            Some((&format!("visn.{r}"), &layer.output)),
        );
    }
    for (k, x) in trace.cross.iter().enumerate() {
        check(
            format!("xt2i.{k}"),
            &x.text_to_image.attention,
            x.text_to_image
                .attention_grad
                .as_deref()
                .expect("traced with a backward"),
            None,
        );
        let image = x
            .image
            .as_ref()
            .expect("a full trace keeps every image branch");
        check(
            format!("xi2t.{k}"),
            &image.image_to_text.attention,
            image
                .image_to_text
                .attention_grad
                .as_deref()
                .expect("traced with a backward"),
            None,
        );
        check(
            format!("xlang.{k}"),
            &x.lang_self.attention,
            x.lang_self
                .attention_grad
                .as_deref()
                .expect("traced with a backward"),
            Some((&format!("xlang.{k}"), &x.lang_output)),
        );
        check(
            format!("xvisn.{k}"),
            &image.visn_self.attention,
            image
                .visn_self
                .attention_grad
                .as_deref()
                .expect("traced with a backward"),
            Some((&format!("xvisn.{k}"), &image.visn_output)),
        );
    }
    bad
}

fn check_case(case: &str, target: VqaTarget, grad_prefix: &str) {
    let g = golden();
    let model = Lxmert::load(&Cpu, &fixtures().join("lxmert")).expect("fixture loads");
    let trace = model
        .trace(&Cpu, &inputs(&g, case), &target)
        .expect("trace runs");
    if target == VqaTarget::Predicted {
        let predicted: Vec<usize> = g
            .i64(&format!("{case}.predicted"))
            .iter()
            .map(|&p| p as usize)
            .collect();
        assert_eq!(trace.targets.as_deref(), Some(predicted.as_slice()));
    }
    let bad = deviations(&g, case, grad_prefix, &trace);
    assert!(
        bad.is_empty(),
        "case {case} deviates from transformers:\n{}",
        bad.join("\n")
    );
}

#[test]
fn lxmert_batch_of_one_matches_transformers() {
    check_case("b1", VqaTarget::Predicted, "");
}

#[test]
fn lxmert_ragged_batch_of_three_matches_transformers() {
    check_case("b3", VqaTarget::Predicted, "");
}

/// The seed's DSMI family differentiates the sum of all logits (bug B1).
#[test]
fn lxmert_sum_of_logits_gradients_match_transformers() {
    check_case("b1", VqaTarget::SumLogits, "sum.");
    check_case("b3", VqaTarget::SumLogits, "sum.");
}

/// §H: a VQA answer's `probability` is σ(logit) (LXMERT's head is trained with a binary loss
/// per answer), read here from the explained answer's raw logit (`score`, pinned above
/// against transformers), best answer first.
#[test]
fn answer_probability_is_the_sigmoid_of_the_logit() {
    use fiedler::explain::{Method, MethodOptions};
    use fiedler::session::{AnswerTarget, LxmertSession, RegionRequest};

    let session = LxmertSession::open(&fixtures().join("lxmert"), None).unwrap();
    let requests: Vec<RegionRequest> = ["synth_000001", "synth_000002"]
        .iter()
        .zip(["what is on the table?", "what color is the cat?"])
        .map(|(image, question)| RegionRequest {
            regions: fixtures().join(format!("lxmert/regions_{image}.safetensors")),
            image_id: None,
            question: question.to_owned(),
        })
        .collect();
    let explain = |target: AnswerTarget| {
        session
            .explain(
                &requests,
                &[Method::RawAttn],
                &MethodOptions::default(),
                &target,
                2,
                |_| {},
            )
            .unwrap()
    };
    let sigmoid = |logit: f64| 1.0 / (1.0 + (-logit).exp());
    for (r, _) in &explain(AnswerTarget::Predicted) {
        let logit = r.explanations[0].score as f64;
        let (answer, p) = &r.top_answers[0];
        assert_eq!(answer, &r.answer);
        let expected = sigmoid(logit);
        assert!(
            (*p as f64 - expected).abs() <= 1e-6,
            "{}: p {p} vs σ({logit}) = {expected}",
            r.question
        );
        assert!(r.top_answers.windows(2).all(|w| w[0].1 >= w[1].1));
        assert_eq!(
            r.probability,
            Some(*p),
            "the explained answer's probability"
        );
    }
    // Explaining another answer, its own: σ of its logit, the explanations' score, whether
    // it is among the top answers or not; the Σ-logits target has none.
    for k in 0..12 {
        for (r, _) in &explain(AnswerTarget::Answer(k)) {
            let logit = r.explanations[0].score as f64;
            let p = r.probability.unwrap() as f64;
            assert!(
                (p - sigmoid(logit)).abs() <= 1e-6,
                "answer {k}: p {p} vs σ({logit})"
            );
        }
    }
    let summed = explain(AnswerTarget::SumLogits);
    assert!(summed.iter().all(|(r, _)| r.probability.is_none()));
}

/// One sample of a batch, alone: its tokens unpadded and its regions.
fn sample(x: &LxmertInputs, b: usize, dims: (usize, usize)) -> LxmertInputs {
    let (f, p) = dims;
    let n = x.regions;
    let len = x.lengths[b];
    LxmertInputs {
        features: x.features[b * n * f..(b + 1) * n * f].to_vec(),
        boxes: x.boxes[b * n * p..(b + 1) * n * p].to_vec(),
        regions: n,
        region_counts: None,
        ids: x.ids[b * x.seq_len..b * x.seq_len + len].to_vec(),
        lengths: vec![len],
        seq_len: len,
    }
}

/// `logits_given` scores with the given stack outputs in place of its own stacks' (what the
/// perturbation benchmark gives the modality a step leaves whole): on the ragged b3 batch,
/// each stack's output computed for one sample at a time (unpadded) and laid out as the
/// batch pads it, alone or both, scores as the whole forward and as transformers. And it
/// is what the scoring uses: the stacks of other inputs (other word ids, other region
/// features) score as the forward of those inputs.
#[test]
fn given_stack_outputs_score_as_the_forward_they_come_from() {
    let g = golden();
    let model = Lxmert::load(&Cpu, &fixtures().join("lxmert")).expect("fixture loads");
    let x = inputs(&g, "b3");
    let c = &model.config;
    let (d, batch, t, n) = (c.hidden_size, x.batch(), x.seq_len, x.regions);
    let whole = model.logits(&Cpu, &x).unwrap().logits;
    assert!(max_diff_rel_to_max(&whole, &g.f32("b3.logits")) <= 1e-5);

    let mut text = vec![0.0f32; batch * t * d];
    let mut image = vec![0.0f32; batch * n * d];
    for b in 0..batch {
        let one = sample(&x, b, (c.visual_feat_dim, c.visual_pos_dim));
        let stacks = model.stack_outputs(&Cpu, &one).unwrap();
        text[b * t * d..][..one.seq_len * d].copy_from_slice(&stacks.text);
        image[b * n * d..][..n * d].copy_from_slice(&stacks.image);
    }
    let given = |text: Option<&Vec<f32>>, image: Option<&Vec<f32>>| GivenStacks {
        text: text.cloned(),
        image: image.cloned(),
    };
    for (what, stacks) in [
        ("text", given(Some(&text), None)),
        ("image", given(None, Some(&image))),
        ("both", given(Some(&text), Some(&image))),
    ] {
        let ours = model.logits_given(&Cpu, &x, stacks).unwrap().logits;
        let err = max_diff_rel_to_max(&ours, &whole);
        assert!(
            err <= 1e-6,
            "{what} given: logits off the forward's by {err:.3e} of max"
        );
    }

    // Other inputs of the same shape: every word token moved to another id, the region
    // features scaled and shifted.
    let mut other = x.clone();
    for (i, id) in other.ids.iter_mut().enumerate() {
        let (b, pos) = (i / t, i % t);
        if pos > 0 && pos + 1 < x.lengths[b] {
            *id = 5 + (*id * 7 + pos as u32) % 200;
        }
    }
    other.features.iter_mut().for_each(|v| *v = 0.5 * *v + 0.1);
    let theirs = model.logits(&Cpu, &other).unwrap().logits;
    assert!(
        max_diff_rel_to_max(&theirs, &whole) > 1e-2,
        "the other input scores apart"
    );
    let stacks = model.stack_outputs(&Cpu, &other).unwrap();
    let both = GivenStacks {
        text: Some(stacks.text),
        image: Some(stacks.image),
    };
    let ours = model.logits_given(&Cpu, &x, both).unwrap().logits;
    let err = max_diff_rel_to_max(&ours, &theirs);
    assert!(
        err <= 1e-6,
        "other stacks given: off their forward by {err:.3e} of max"
    );

    // A given output of the wrong size is refused, naming it.
    let short = GivenStacks {
        text: Some(vec![0.0; (batch * t - 1) * d]),
        image: None,
    };
    let err = model.logits_given(&Cpu, &x, short).unwrap_err().to_string();
    assert!(err.contains("given text stack output"), "{err}");
}
