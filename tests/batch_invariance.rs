//! On the CPU a sample's explanation does not depend on the batch it runs in: every method of
//! every family gives the same bits at batch 1 as in a batch of several samples of other
//! sizes (ragged ViLT images, CLIP texts padded to the longest in the batch). The dense
//! products keep each element's sum in one order whatever the shape (`backend::cpu::matmul`);
//! before that, Transformer Attribution, whose LRP divisions amplify rounding, moved by up to
//! 61% of its maximum between batch 1 and batch 2.

use std::path::PathBuf;

use fiedler::explain::{Explanation, Method, MethodOptions};
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
    let alone = run(1);
    for batch in [2, 5] {
        assert_same_bits("CLIP", batch, &alone, &run(batch));
    }
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
    let alone = run(1);
    for batch in [2, 5] {
        assert_same_bits("ViLT", batch, &alone, &run(batch));
    }
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
    let alone = run(1);
    for batch in [3, 4] {
        assert_same_bits("LXMERT", batch, &alone, &run(batch));
    }
}
