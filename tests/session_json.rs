//! A session's results serialize (`serde`) as a library user would store them: every field
//! by name, methods by their CLI names, the numbers as computed.

use std::path::PathBuf;

use fiedler::explain::{Explanation, Method, MethodOptions};
use fiedler::session::{AnswerTarget, ClipSession, PairRequest, ViltSession};
use serde_json::Value;

fn path(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn request(text: &str) -> Vec<PairRequest> {
    vec![PairRequest {
        image: path("examples/images/shapes-1.png"),
        text: text.to_string(),
    }]
}

/// The JSON of each explanation, in order, holds its values exactly (f32 → JSON → f32).
fn assert_explanations(json: &Value, explanations: &[Explanation], tokens: usize) {
    let json = json.as_array().expect("an array of explanations");
    assert_eq!(json.len(), explanations.len());
    for (json, explanation) in json.iter().zip(explanations) {
        assert_explanation(json, explanation, tokens);
    }
}

fn assert_explanation(json: &Value, explanation: &Explanation, tokens: usize) {
    let floats = |v: &Value| -> Vec<f32> {
        let values = v.as_array().expect("an array of numbers");
        values.iter().map(|x| x.as_f64().unwrap() as f32).collect()
    };
    assert_eq!(json["method"], explanation.method.name());
    assert_eq!(json["score"].as_f64().unwrap() as f32, explanation.score);
    let (rows, columns) = explanation.image_grid;
    assert_eq!(json["image_grid"], serde_json::json!([rows, columns]));
    assert_eq!(
        floats(&json["image_relevance"]),
        explanation.image_relevance
    );
    assert_eq!(explanation.image_relevance.len(), rows * columns);
    assert_eq!(floats(&json["text_relevance"]), explanation.text_relevance);
    assert_eq!(explanation.text_relevance.len(), tokens);
    let scored: Vec<bool> = serde_json::from_value(json["text_scored"].clone()).unwrap();
    assert_eq!(scored, explanation.text_scored);
    assert!(json["degenerate_graphs"].is_array());
}

#[test]
fn clip_results_serialize() {
    let clip = ClipSession::open(&path("models/clip-synth")).unwrap();
    let methods = [Method::DsmiGrad, Method::Chefer];
    let results = clip
        .explain(
            &request("a green square"),
            &methods,
            &MethodOptions::default(),
            1,
            |_| {},
        )
        .unwrap();
    let json = serde_json::to_value(&results).unwrap();
    let (result, json) = (&results[0], &json[0]);
    assert_eq!(json["image"], result.image.display().to_string());
    assert_eq!(json["text"], "a green square");
    assert_eq!(json["tokens"], serde_json::json!(result.tokens));
    assert_eq!(json["truncated"], false);
    assert_eq!(json["score"].as_f64().unwrap() as f32, result.score);
    assert!(
        json["probability"].is_null(),
        "one text per image: no softmax"
    );
    assert_explanations(
        &json["explanations"],
        &result.explanations,
        result.tokens.len(),
    );
    assert_eq!(json["explanations"][0]["method"], "dsmi-grad");
}

#[test]
fn vqa_results_serialize() {
    let vilt = ViltSession::open(&path("models/vilt-synth")).unwrap();
    let methods = [Method::Dsmi, Method::TransformerAttribution];
    let results = vilt
        .explain(
            &request("what color is the square?"),
            &methods,
            &MethodOptions::default(),
            &AnswerTarget::Predicted,
            1,
            |_| {},
        )
        .unwrap();
    let json = serde_json::to_value(&results).unwrap();
    let (result, json) = (&results[0], &json[0]);
    assert_eq!(json["question"], "what color is the square?");
    assert_eq!(json["answer"], result.answer.as_str());
    let top = json["top_answers"].as_array().unwrap();
    assert_eq!(top.len(), result.top_answers.len());
    assert_eq!(top[0][0], result.top_answers[0].0.as_str());
    assert_eq!(top[0][1].as_f64().unwrap() as f32, result.top_answers[0].1);
    assert_eq!(
        json["probability"].as_f64().map(|p| p as f32),
        result.probability
    );
    assert_explanations(
        &json["explanations"],
        &result.explanations,
        result.tokens.len(),
    );
    assert_eq!(json["explanations"][1]["method"], "transformer-attribution");
}
