//! On the CPU a sample's explanation does not depend on the batch it runs in: every method of
//! every family gives the same bits at batch 1 as in a batch of several samples of other
//! sizes (ragged ViLT images, CLIP texts padded to the longest in the batch). The dense
//! products keep each element's sum in one order whatever the shape (`backend::cpu::matmul`);
//! before that, Transformer Attribution, whose LRP divisions amplify rounding, moved by up to
//! 61% of its maximum between batch 1 and batch 2.

use std::path::PathBuf;

use fiedler::backend::cpu::Cpu;
use fiedler::explain::clip::{clip_reads, clip_trace, explain_clip};
use fiedler::explain::{Explanation, Method, MethodOptions};
use fiedler::model::config::ClipConfig;
use fiedler::model::source::RandomWeights;
use fiedler::model::{Clip, ClipInputs};
use fiedler::session::{
    AnswerTarget, ClipSession, LxmertSession, PairRequest, RegionRequest, ViltSession,
};

fn path(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// The same explanations, bit for bit: every method's maps and score.
fn assert_same_bits(
    family: &str,
    batch: usize,
    alone: &[Vec<Explanation>],
    batched: &[Vec<Explanation>],
) {
    assert_eq!(alone.len(), batched.len());
    for (sample, (a, b)) in alone.iter().zip(batched).enumerate() {
        assert_eq!(a.len(), b.len());
        for (a, b) in a.iter().zip(b) {
            let bits = |e: &Explanation| {
                let maps = e.image_relevance.iter().chain(&e.text_relevance);
                (
                    maps.map(|v| v.to_bits()).collect::<Vec<_>>(),
                    e.score.to_bits(),
                )
            };
            assert!(
                bits(a) == bits(b),
                "{family} sample {sample}, {}: batch 1 and batch {batch} differ",
                a.method.name()
            );
        }
    }
}

/// Explains the same requests at batch 1 and at each of `batches` (`run(batch)`: every
/// sample's explanations) and asserts the same bits.
fn batches_agree(family: &str, batches: &[usize], run: impl Fn(usize) -> Vec<Vec<Explanation>>) {
    let alone = run(1);
    for &batch in batches {
        assert_same_bits(family, batch, &alone, &run(batch));
    }
}

fn pairs(images: &[&str], texts: &[&str]) -> Vec<PairRequest> {
    images
        .iter()
        .zip(texts)
        .map(|(image, text)| PairRequest {
            image: path(image),
            text: text.to_string(),
        })
        .collect()
}

const IMAGES: [&str; 5] = [
    "examples/images/shapes-1.png",
    "tests/fixtures/images/catdog.png",
    "tests/fixtures/images/tall.png",
    "examples/images/shapes-3.png",
    "tests/fixtures/images/coco_127510.jpg",
];

#[test]
fn clip_explanations_do_not_depend_on_the_batch() {
    let clip = ClipSession::open(&path("models/clip-synth")).unwrap();
    // Texts of different lengths: each batch pads to its longest.
    let texts = [
        "a red square",
        "a cat and a dog sitting on a sofa next to each other",
        "a",
        "a green triangle above a blue circle",
        "two people",
    ];
    let requests = pairs(&IMAGES, &texts);
    let opts = MethodOptions::default();
    let run = |batch| {
        let results = clip.explain(&requests, &Method::ALL, &opts, batch, |_| {});
        let results = results.unwrap();
        results
            .into_iter()
            .map(|r| r.explanations)
            .collect::<Vec<_>>()
    };
    batches_agree("CLIP", &[2, 5], run);
}

#[test]
fn vilt_explanations_do_not_depend_on_the_batch() {
    let vilt = ViltSession::open(&path("models/vilt-synth")).unwrap();
    // Images of different sizes: a batch pads them to its largest.
    let questions = [
        "what color is the square?",
        "how many crosses are there?",
        "is there a green triangle?",
        "what shape is the blue object?",
        "what is left of the green square?",
    ];
    let requests = pairs(&IMAGES, &questions);
    let opts = MethodOptions::default();
    let run = |batch| {
        let results = vilt.explain(
            &requests,
            &Method::ALL,
            &opts,
            &AnswerTarget::Predicted,
            batch,
            |_| {},
        );
        let results = results.unwrap();
        results
            .into_iter()
            .map(|r| r.explanations)
            .collect::<Vec<_>>()
    };
    batches_agree("ViLT", &[2, 5], run);
}

#[test]
fn lxmert_explanations_do_not_depend_on_the_batch() {
    let lxmert = LxmertSession::open(&path("models/lxmert-synth"), None).unwrap();
    let questions = [
        "what color is the triangle?",
        "how many crosses are there?",
        "is there a green triangle?",
        "what shape is the blue object?",
    ];
    let requests: Vec<RegionRequest> = questions
        .iter()
        .enumerate()
        .map(|(i, question)| RegionRequest {
            regions: path(&format!("examples/regions/shapes-{}.safetensors", i + 1)),
            image_id: None,
            question: question.to_string(),
        })
        .collect();
    let opts = MethodOptions::default();
    let run = |batch| {
        let results = lxmert.explain(
            &requests,
            &Method::ALL,
            &opts,
            &AnswerTarget::Predicted,
            batch,
            |_| {},
        );
        let results = results.unwrap();
        results
            .into_iter()
            .map(|(r, _)| r.explanations)
            .collect::<Vec<_>>()
    };
    batches_agree("LXMERT", &[3, 4], run);
}

/// A ViT-B/32-sized CLIP (768 wide, feed-forwards of 3072: products deeper than one depth
/// run) with random weights: two pairs, captions of 9 and 14 tokens, explained together
/// and each alone, every method from one trace.
#[test]
fn full_size_clip_explanations_do_not_depend_on_the_batch() {
    let config = ClipConfig::vit_base_patch32();
    let weights = RandomWeights {
        seed: 3,
        scale: 0.02,
    };
    let model = Clip::from_source(&Cpu, config.clone(), &weights).unwrap();
    let side = config.vision.image_size;
    let image = |b: usize| -> Vec<f32> {
        (0..3 * side * side)
            .map(|i| ((i * 7919 + b * 104_729) % 1000) as f32 / 500.0 - 1.0)
            .collect()
    };
    let text = |b: usize, len: usize| -> Vec<u32> {
        let words = (1..len - 1).map(|t| (300 + 13 * t + 101 * b) as u32);
        std::iter::once(config.text.bos_token_id)
            .chain(words)
            .chain([config.text.eos_token_id])
            .collect()
    };
    let lengths = [9, 14];
    let inputs = |samples: &[usize]| {
        let seq_len = samples.iter().map(|&b| lengths[b]).max().unwrap();
        let mut ids = Vec::new();
        for &b in samples {
            ids.extend(text(b, lengths[b]));
            ids.resize(ids.len().next_multiple_of(seq_len), 0);
        }
        ClipInputs {
            pixels: samples.iter().flat_map(|&b| image(b)).collect(),
            ids,
            lengths: samples.iter().map(|&b| lengths[b]).collect(),
            seq_len,
        }
    };
    let opts = MethodOptions::default();
    let explain = |samples: &[usize]| {
        let x = inputs(samples);
        let trace = clip_trace(&model, &Cpu, &x, &Method::ALL, &opts).unwrap();
        let reads = clip_reads(&Method::ALL, &trace, &opts);
        let trace = trace.into_host_for(&Cpu, &reads).unwrap();
        explain_clip(&trace, &Method::ALL, &opts).unwrap()
    };
    let together = explain(&[0, 1]);
    let alone: Vec<_> = [0, 1].iter().flat_map(|&b| explain(&[b])).collect();
    assert_same_bits("ViT-B/32 CLIP", 2, &alone, &together);
}
