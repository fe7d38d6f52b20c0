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
use fiedler::model::lxmert::{Lxmert, LxmertInputs, LxmertTrace};
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
/// per answer), read here from the predicted answer's raw logit (`score`, pinned above
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
    let results = session
        .explain(
            &requests,
            &[Method::RawAttn],
            &MethodOptions::default(),
            &AnswerTarget::Predicted,
            2,
            |_| {},
        )
        .unwrap();
    for (r, _) in &results {
        let logit = r.explanations[0].score as f64;
        let (answer, p) = &r.top_answers[0];
        assert_eq!(answer, &r.answer);
        let expected = 1.0 / (1.0 + (-logit).exp());
        assert!(
            (*p as f64 - expected).abs() <= 1e-6,
            "{}: p {p} vs σ({logit}) = {expected}",
            r.question
        );
        assert!(r.top_answers.windows(2).all(|w| w[0].1 >= w[1].1));
    }
}
