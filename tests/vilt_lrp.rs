//! LRP on ViLT's joint pre-LN encoder (spec §D, Chefer's CVPR'21 block wiring) and the
//! single-stream LRP methods (§A.3, §C.2, §C.3, readouts of §H) against the PyTorch reference
//! of tools/reference/lrp_single_stream.py (make_lrp_goldens.py, float64), for a batch of one
//! and a ragged batch of three (padding in mid-sequence), each sample compared with its own
//! unpadded reference run over its real tokens (text, image [CLS], valid patches).
//!
//! Tolerances as in lxmert_lrp.rs: 1e-4 of the reference's largest magnitude for the methods
//! fed the reference's own relevance and gradients; max(1e-4, 2·spread) for our LRP pass and
//! the methods end to end (`spread`: how far rounding-level weight changes move the reference).

mod common;

use common::{check_rel, check_vectors, fixtures, spread_tolerance, undetermined_tensors, Golden};
use fiedler::backend::Cpu;
use fiedler::explain::vilt::explain_vilt;
use fiedler::explain::{Method, MethodOptions};
use fiedler::model::vilt::{Vilt, ViltTrace};
use fiedler::model::VqaTarget;

const METHODS: [Method; 3] = [
    Method::TransformerAttribution,
    Method::PartialLrp,
    Method::CheferLrp,
];

fn open() -> (Golden, Golden, Vilt<Cpu>) {
    (
        Golden::open(&fixtures().join("vilt/golden.safetensors")),
        Golden::open(&fixtures().join("vilt/lrp.safetensors")),
        Vilt::load(&Cpu, &fixtures().join("vilt")).unwrap(),
    )
}

/// Padded positions of sample b's real tokens, in sequence order.
fn real_tokens(tr: &ViltTrace<Vec<f32>>, b: usize) -> Vec<usize> {
    let l = &tr.output.layouts[b];
    (0..l.text_len)
        .chain(std::iter::once(l.image_class))
        .chain(l.patch_tokens())
        .collect()
}

/// Sample b's [heads, real, real] block of a padded [batch, heads, n, n] buffer, and back.
fn gather(buf: &[f32], b: usize, heads: usize, n: usize, real: &[usize]) -> Vec<f32> {
    let mut out = Vec::with_capacity(heads * real.len() * real.len());
    for h in 0..heads {
        for &i in real {
            let row = ((b * heads + h) * n + i) * n;
            out.extend(real.iter().map(|&j| buf[row + j]));
        }
    }
    out
}

fn scatter(buf: &mut [f32], src: &[f32], b: usize, heads: usize, n: usize, real: &[usize]) {
    let r = real.len();
    for h in 0..heads {
        for (ii, &i) in real.iter().enumerate() {
            let row = ((b * heads + h) * n + i) * n;
            for (jj, &j) in real.iter().enumerate() {
                buf[row + j] = src[(h * r + ii) * r + jj];
            }
        }
    }
}

fn check_methods(
    tr: &ViltTrace<Vec<f32>>,
    reference: &Golden,
    case: &str,
    tol: impl Fn(&str, usize) -> f32,
    bad: &mut Vec<String>,
) {
    let explained = explain_vilt(tr, &METHODS, &MethodOptions::default()).unwrap();
    check_vectors(&explained, reference, case, "", tol, bad);
}

#[test]
fn attention_relevance_matches_reference() {
    let (golden, reference, model) = open();
    let mut bad = Vec::new();
    for case in ["b1", "b3"] {
        let tr = model
            .lrp(
                &Cpu,
                &golden.vilt_inputs(case),
                &VqaTarget::Predicted,
                false,
            )
            .unwrap();
        let (heads, n) = (tr.joint.heads, tr.joint.tokens);
        for (l, layer) in tr.joint.layers.iter().enumerate() {
            let cam = layer
                .relevance
                .as_ref()
                .expect("the LRP pass records every layer");
            for b in 0..tr.output.layouts.len() {
                let ours = gather(cam, b, heads, n, &real_tokens(&tr, b));
                let name = format!("{case}.cam.{l}.{b}");
                let tol = spread_tolerance(&reference, case, &format!("cam.{l}"), b);
                check_rel(&name, &ours, &reference.f32(&name), tol, &mut bad);
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// Every reference tensor is determined to better than half its largest value, so every
/// comparison above can fail (CLIP's fixture has undetermined ones: clip_lrp.rs).
#[test]
fn no_reference_tensor_is_undetermined() {
    let reference = Golden::open(&fixtures().join("vilt/lrp.safetensors"));
    assert_eq!(undetermined_tensors(&reference), Vec::<String>::new());
}

#[test]
fn lrp_methods_match_reference_end_to_end() {
    let (golden, reference, model) = open();
    let mut bad = Vec::new();
    for case in ["b1", "b3"] {
        let tr = model
            .lrp(&Cpu, &golden.vilt_inputs(case), &VqaTarget::Predicted, true)
            .unwrap();
        let tol = |key: &str, b| spread_tolerance(&reference, case, key, b);
        check_methods(&tr, &reference, case, tol, &mut bad);
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn lrp_methods_match_reference_on_its_relevance() {
    let (golden, reference, model) = open();
    let mut bad = Vec::new();
    for case in ["b1", "b3"] {
        let mut tr = model
            .lrp(&Cpu, &golden.vilt_inputs(case), &VqaTarget::Predicted, true)
            .unwrap();
        let (heads, n) = (tr.joint.heads, tr.joint.tokens);
        let reals: Vec<Vec<usize>> = (0..tr.output.layouts.len())
            .map(|b| real_tokens(&tr, b))
            .collect();
        for (l, layer) in tr.joint.layers.iter_mut().enumerate() {
            let (mut cam, mut grad) = (
                vec![0.0; layer.attention.len()],
                vec![0.0; layer.attention.len()],
            );
            for (b, real) in reals.iter().enumerate() {
                let rc = reference.f32(&format!("{case}.cam.{l}.{b}"));
                let rg = reference.f32(&format!("{case}.grad.{l}.{b}"));
                scatter(&mut cam, &rc, b, heads, n, real);
                scatter(&mut grad, &rg, b, heads, n, real);
            }
            layer.relevance = Some(cam);
            layer.attention_grad = Some(grad);
        }
        check_methods(&tr, &reference, case, |_, _| 1e-4, &mut bad);
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}
