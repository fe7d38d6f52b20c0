//! A trace brought to the host for given methods (`into_host_for`: head means averaged by
//! the backend, only what the methods read moved) explains exactly as the whole trace does:
//! every method, bit for bit, on the ragged CLIP, ViLT and LXMERT fixture batches (the rows of
//! rollout's and Chefer's products, and Grad-CAM's reads at a row, formed by the backend
//! too). A method whose
//! parts were left behind is refused, never explained from zeros.

mod common;

use common::{clip_method_inputs, fixtures, Golden};
use fiedler::backend::Cpu;
use fiedler::explain::clip::{clip_reads, explain_clip};
use fiedler::explain::lxmert::{explain_lxmert, grad_scope, lrp_scope, lxmert_reads};
use fiedler::explain::vilt::{explain_vilt, vilt_reads};
use fiedler::explain::{ExplainError, Explanation, Method, MethodOptions};
use fiedler::linalg::GraphOptions;
use fiedler::model::clip::Clip;
use fiedler::model::lxmert::Lxmert;
use fiedler::model::vilt::Vilt;
use fiedler::model::VqaTarget;
use fiedler::trace::TowerTrace;

fn assert_same(what: &str, whole: &[Vec<Explanation>], reduced: &[Vec<Explanation>]) {
    assert_eq!(whole.len(), reduced.len());
    for (b, (w, r)) in whole.iter().zip(reduced).enumerate() {
        assert_eq!(w.len(), r.len());
        for (w, r) in w.iter().zip(r) {
            let at = format!("{what}, sample {b}, {}", w.method);
            assert_eq!(w.method, r.method);
            assert_eq!(w.score.to_bits(), r.score.to_bits(), "{at}: score");
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(
                bits(&w.image_relevance),
                bits(&r.image_relevance),
                "{at}: image"
            );
            assert_eq!(
                bits(&w.text_relevance),
                bits(&r.text_relevance),
                "{at}: text"
            );
            assert_eq!(w.degenerate_graphs, r.degenerate_graphs, "{at}");
        }
    }
}

#[test]
fn clip_explains_the_same_from_a_reduced_trace() {
    let model = Clip::load(&Cpu, &fixtures().join("clip")).unwrap();
    let x = clip_method_inputs("m3");
    let opts = MethodOptions::default();
    let all = &Method::ALL[..];
    let whole = explain_clip(&model.lrp(&Cpu, &x, true).unwrap(), all, &opts).unwrap();
    // All methods from one reduced trace, then each method from a trace reduced for it alone.
    let trace = model.lrp(&Cpu, &x, true).unwrap();
    let reads = clip_reads(all, &trace, &opts);
    let reduced = trace.into_host_for(&Cpu, &reads).unwrap();
    assert_same("all", &whole, &explain_clip(&reduced, all, &opts).unwrap());
    for (i, &m) in all.iter().enumerate() {
        let trace = model.lrp(&Cpu, &x, true).unwrap();
        let reads = clip_reads(&[m], &trace, &opts);
        let reduced = trace.into_host_for(&Cpu, &reads).unwrap();
        let alone = explain_clip(&reduced, &[m], &opts).unwrap();
        let column: Vec<Vec<Explanation>> = whole.iter().map(|s| vec![s[i].clone()]).collect();
        assert_same(m.name(), &column, &alone);
    }
    // Kept for Chefer's maps: one row per sample of each tower, formed by the backend from
    // the first layer on, and no layer's mean.
    let trace = model.lrp(&Cpu, &x, true).unwrap();
    let reads = clip_reads(&[Method::Chefer], &trace, &opts);
    let reduced = trace.into_host_for(&Cpu, &reads).unwrap();
    assert!(reduced.vision.layers.iter().all(|l| l.means.is_empty()));
    let [(product, rows)] = &reduced.vision.products[..] else {
        panic!("one product kept");
    };
    assert_eq!(Some(*product), Method::Chefer.product());
    assert_eq!(rows.len(), reduced.vision.batch);
    assert!(rows.iter().all(|r| r.len() == reduced.vision.tokens));
    // Kept for Grad-CAM: what it reads of the last layer's heads at each row, not the heads.
    let trace = model.lrp(&Cpu, &x, true).unwrap();
    let reads = clip_reads(&[Method::GradCam], &trace, &opts);
    let reduced = trace.into_host_for(&Cpu, &reads).unwrap();
    let last = reduced.text.layers.last().unwrap();
    assert!(last.attention.is_empty() && last.attention_grad.as_ref().unwrap().is_empty());
    assert_eq!(reduced.text.head_rows.len(), reduced.text.batch);
    // Kept for raw attention only: the last layer's mean and nothing of the layers before,
    // so the spectral and gradient methods are refused, and so is rollout, which reads every
    // layer's mean.
    let trace = model.lrp(&Cpu, &x, true).unwrap();
    let reads = clip_reads(&[Method::RawAttn], &trace, &opts);
    let reduced = trace.into_host_for(&Cpu, &reads).unwrap();
    let (last, before) = reduced.vision.layers.split_last().unwrap();
    assert_eq!(last.means.len(), 1);
    assert!(before.iter().all(|l| l.means.is_empty()));
    for m in [
        Method::DsmiGrad,
        Method::Chefer,
        Method::GradCam,
        Method::PartialLrp,
        Method::Rollout,
    ] {
        match explain_clip(&reduced, &[m], &opts) {
            Err(ExplainError::NotKept(refused)) => assert_eq!(refused, m),
            Err(e) => panic!("{m}: {e}"),
            Ok(_) => panic!("{m} explained from a trace reduced for raw-attn"),
        }
    }
}

#[test]
fn vilt_explains_the_same_from_a_reduced_trace() {
    let golden = Golden::open(&fixtures().join("vilt/golden.safetensors"));
    let model = Vilt::load(&Cpu, &fixtures().join("vilt")).unwrap();
    let x = golden.vilt_inputs("b3");
    let target = VqaTarget::Predicted;
    let opts = MethodOptions::default();
    let all = &Method::ALL[..];
    let trace = || model.lrp(&Cpu, &x, &target, true).unwrap();
    let whole = explain_vilt(&trace(), all, &opts).unwrap();
    let t = trace();
    let reads = vilt_reads(all, &t, &opts);
    let reduced = t.into_host_for(&Cpu, &reads).unwrap();
    assert_same("all", &whole, &explain_vilt(&reduced, all, &opts).unwrap());
    for (i, &m) in all.iter().enumerate() {
        let t = trace();
        let reads = vilt_reads(&[m], &t, &opts);
        let reduced = t.into_host_for(&Cpu, &reads).unwrap();
        let alone = explain_vilt(&reduced, &[m], &opts).unwrap();
        let column: Vec<Vec<Explanation>> = whole.iter().map(|s| vec![s[i].clone()]).collect();
        assert_same(m.name(), &column, &alone);
    }
}

/// LXMERT's reduced trace holds every head mean of every module, the Fiedler vectors of the
/// cross layers' graphs solved by the backend in place of their outputs, and, for Grad-CAM
/// alone, the last cross layer's per-head text maps: every method explains the same from
/// it, and one whose parts were left behind is refused.
#[test]
fn lxmert_explains_the_same_from_a_reduced_trace() {
    let golden = Golden::open(&fixtures().join("lxmert/golden.safetensors"));
    let model = Lxmert::load(&Cpu, &fixtures().join("lxmert")).unwrap();
    let x = golden.lxmert_inputs("b3");
    let target = VqaTarget::Predicted;
    let opts = MethodOptions::default();
    let all = &Method::ALL[..];
    let trace = |methods: &[Method]| {
        model
            .trace_with(&Cpu, &x, &target, grad_scope(methods), lrp_scope(methods))
            .unwrap()
    };
    let whole = explain_lxmert(&trace(all), all, &opts).unwrap();
    let reduced = trace(all)
        .into_host_for(&Cpu, lxmert_reads(all, &opts))
        .unwrap();
    let last = reduced.cross.last().unwrap();
    assert!(
        !last.lang_self.attention.is_empty(),
        "Grad-CAM's heads kept"
    );
    assert!(reduced.cross[0].lang_self.attention.is_empty());
    assert!(reduced
        .cross
        .iter()
        .all(|c| c.lang_output.is_empty() && c.lang_fiedlers.len() == x.lengths.len()));
    assert!(reduced
        .lang
        .iter()
        .all(|l| l.attention.is_empty() && l.output.is_empty()));
    assert_same(
        "all",
        &whole,
        &explain_lxmert(&reduced, all, &opts).unwrap(),
    );
    // Each method from a trace taken and reduced for it alone (its own backward and LRP
    // scopes), against the same method on the whole trace of that scope.
    for &m in all {
        let whole = explain_lxmert(&trace(&[m]), &[m], &opts).unwrap();
        let reduced = trace(&[m])
            .into_host_for(&Cpu, lxmert_reads(&[m], &opts))
            .unwrap();
        assert_same(
            m.name(),
            &whole,
            &explain_lxmert(&reduced, &[m], &opts).unwrap(),
        );
    }
    // Reduced for raw attention: Grad-CAM's heads and the spectral graphs are not there; and
    // graphs solved with other options than the explanation's are not used.
    let reduced = trace(all)
        .into_host_for(&Cpu, lxmert_reads(&[Method::RawAttn], &opts))
        .unwrap();
    let other = MethodOptions {
        graph: GraphOptions {
            l2_normalize: !opts.graph.l2_normalize,
            ..opts.graph
        },
        ..MethodOptions::default()
    };
    let solved = trace(all)
        .into_host_for(&Cpu, lxmert_reads(&[Method::Dsmi], &other))
        .unwrap();
    for (m, t) in [
        (Method::GradCam, &reduced),
        (Method::DsmiGrad, &reduced),
        (Method::Dsmi, &solved),
    ] {
        match explain_lxmert(t, &[m], &opts) {
            Err(ExplainError::NotKept(refused)) => assert_eq!(refused, m),
            Err(e) => panic!("{m}: {e}"),
            Ok(_) => panic!("{m} explained from a trace reduced without its parts"),
        }
    }
}

/// A backward and an LRP pass run only as deep as the methods read ∂y/∂A and the relevance
/// (`clip_trace`, `Vilt::trace_from`, `Vilt::lrp_from`) record, at the layers they reach,
/// the same maps as the whole passes, bit for bit, and none below; Grad-CAM and partial LRP
/// (the last layer), Chefer's maps and Transformer Attribution from a start layer explain
/// the same from them, and a method that reads deeper is refused.
#[test]
fn shallow_passes_explain_the_same() {
    use fiedler::explain::clip::{clip_depth, clip_trace};
    use fiedler::explain::vilt::vilt_depth;
    use fiedler::explain::Depth;
    use fiedler::model::clip::FirstLayers;
    // Each layer's ∂y/∂A and R_A of the shallow trace: the whole trace's bits from `first`
    // on, none below.
    let same_maps =
        |what: &str, whole: &TowerTrace<Vec<f32>>, shallow: &TowerTrace<Vec<f32>>, first| {
            let bits = |v: &Option<Vec<f32>>| {
                v.as_ref()
                    .map(|v| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>())
            };
            for (l, (w, s)) in whole.layers.iter().zip(&shallow.layers).enumerate() {
                for (map, w, s) in [
                    ("∂y/∂A", &w.attention_grad, &s.attention_grad),
                    ("R_A", &w.relevance, &s.relevance),
                ] {
                    let expected = if l >= first { bits(w) } else { None };
                    assert_eq!(bits(s), expected, "{what} {map}, layer {l}");
                }
            }
        };
    let opts = MethodOptions {
        start_layer: 1,
        ..MethodOptions::default()
    };
    let methods = [
        Method::GradCam,
        Method::Chefer,
        Method::PartialLrp,
        Method::TransformerAttribution,
    ];

    let model = Clip::load(&Cpu, &fixtures().join("clip")).unwrap();
    let (vision_layers, text_layers) = model.layers();
    let x = clip_method_inputs("m3");
    let last = FirstLayers {
        vision: vision_layers - 1,
        text: text_layers - 1,
    };
    let from_start = FirstLayers { vision: 1, text: 0 };
    let depth = |m: &[Method]| clip_depth(m, model.layers(), &opts);
    assert_eq!(
        depth(&methods),
        Depth {
            gradients: Some(from_start),
            relevance: Some(from_start)
        }
    );
    assert_eq!(
        depth(&[Method::GradCam, Method::PartialLrp]),
        Depth {
            gradients: Some(last),
            relevance: Some(last)
        }
    );
    assert_eq!(
        depth(&[Method::RawAttn]),
        Depth {
            gradients: None,
            relevance: None
        }
    );
    let whole = model.lrp(&Cpu, &x, true).unwrap();
    for (ms, first) in [
        (&[Method::GradCam, Method::PartialLrp][..], last),
        (&methods[..], from_start),
    ] {
        let shallow = clip_trace(&model, &Cpu, &x, ms, &opts).unwrap();
        same_maps("vision", &whole.vision, &shallow.vision, first.vision);
        same_maps("text", &whole.text, &shallow.text, first.text);
        assert_same(
            "clip",
            &explain_clip(&whole, ms, &opts).unwrap(),
            &explain_clip(&shallow, ms, &opts).unwrap(),
        );
    }
    let last_only = clip_trace(
        &model,
        &Cpu,
        &x,
        &[Method::GradCam, Method::PartialLrp],
        &opts,
    )
    .unwrap();
    for m in [Method::DsmiGrad, Method::TransformerAttribution] {
        match explain_clip(&last_only, &[m], &opts) {
            Err(ExplainError::NoGradients(r) | ExplainError::NoRelevance(r)) => assert_eq!(r, m),
            other => panic!("{m} from the last layer's maps: {:?}", other.err()),
        }
    }

    let golden = Golden::open(&fixtures().join("vilt/golden.safetensors"));
    let model = Vilt::load(&Cpu, &fixtures().join("vilt")).unwrap();
    let x = golden.vilt_inputs("b3");
    let target = VqaTarget::Predicted;
    let layers = model.config.num_hidden_layers;
    assert_eq!(
        vilt_depth(&methods, layers, &opts),
        Depth {
            gradients: Some(1),
            relevance: Some(1)
        }
    );
    let whole = model.lrp(&Cpu, &x, &target, true).unwrap();
    let shallow = model.lrp_from(&Cpu, &x, &target, Some(1), 1).unwrap();
    same_maps("vilt", &whole.joint, &shallow.joint, 1);
    assert_same(
        "vilt",
        &explain_vilt(&whole, &methods, &opts).unwrap(),
        &explain_vilt(&shallow, &methods, &opts).unwrap(),
    );
    let deeper = MethodOptions::default();
    match explain_vilt(&shallow, &[Method::Chefer], &deeper) {
        Err(ExplainError::NoGradients(Method::Chefer)) => {}
        other => panic!(
            "chefer from layer 0 on a backward to layer 1: {:?}",
            other.err()
        ),
    }
}
