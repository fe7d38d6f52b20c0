//! Templated questions with exactly one answer derivable from the scene, and what they are
//! about: the relevant objects and the relevant question words.
//!
//! | template | asked when | answer | relevant objects | relevant words |
//! |---|---|---|---|---|
//! | what color is the {shape}? | exactly one {shape} | its colour | it | shape |
//! | what shape is the {color} object? | exactly one {color} object | its shape | it | color |
//! | is there a {color} {shape}? | always (half yes); a "no" names a present colour or shape | yes / no | every {color} {shape} (none for "no") | color, shape |
//! | how many {shapes} are there? | always | 0–6 | every {shape} | shapes |
//! | what is left of the {color} {shape}? | the {color} {shape} is unique, exactly one object lies left of it and none level with it | that object's shape | both | left, color, shape |

use serde::Serialize;

use super::rng::Rng;
use super::scene::{Colour, Scene, Shape};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Template {
    ColorOfShape,
    ShapeOfColor,
    Exists,
    Count,
    LeftOf,
}

impl Template {
    pub const ALL: [Template; 5] = [
        Template::ColorOfShape,
        Template::ShapeOfColor,
        Template::Exists,
        Template::Count,
        Template::LeftOf,
    ];
}

#[derive(Debug, Clone, Serialize)]
pub struct Question {
    pub question: String,
    pub answer: String,
    /// VQA-v2's `answer_type`: "yes/no", "number" or "other".
    pub answer_type: &'static str,
    /// VQA-v2's `question_type`: the question's leading words.
    pub question_type: &'static str,
    /// Ids of the objects the answer depends on.
    pub relevant_objects: Vec<usize>,
    /// Indices of the relevant words among the question's words (split on spaces, "?" dropped).
    pub relevant_words: Vec<usize>,
}

/// Two objects are "level" (neither left of the other) when their centres are closer than this
/// fraction of the image width.
pub const LEVEL_FRACTION: f64 = 0.06;

/// Up to `per_image` questions, at most one per template, templates in random order.
pub fn ask(scene: &Scene, rng: &mut Rng, per_image: usize) -> Vec<Question> {
    let mut order = Template::ALL;
    rng.shuffle(&mut order);
    order
        .iter()
        .filter_map(|&t| ask_one(scene, t, rng))
        .take(per_image)
        .collect()
}

pub fn ask_one(scene: &Scene, template: Template, rng: &mut Rng) -> Option<Question> {
    match template {
        Template::ColorOfShape => {
            let unique: Vec<Shape> = Shape::ALL
                .into_iter()
                .filter(|&s| scene.count_shape(s) == 1)
                .collect();
            let shape = *pick(rng, &unique)?;
            let obj = scene.objects.iter().find(|o| o.shape == shape)?;
            Some(question(
                format!("what color is the {}?", shape.name()),
                obj.color.name(),
                "other",
                "what color is the",
                vec![obj.id],
                &[shape.name()],
            ))
        }
        Template::ShapeOfColor => {
            let unique: Vec<Colour> = Colour::ALL
                .into_iter()
                .filter(|&c| scene.count_colour(c) == 1)
                .collect();
            let colour = *pick(rng, &unique)?;
            let obj = scene.objects.iter().find(|o| o.color == colour)?;
            Some(question(
                format!("what shape is the {} object?", colour.name()),
                obj.shape.name(),
                "other",
                "what shape is the",
                vec![obj.id],
                &[colour.name()],
            ))
        }
        Template::Exists => {
            let (colour, shape) = if rng.chance(0.5) {
                let o = rng.pick(&scene.objects);
                (o.color, o.shape)
            } else {
                // A hard "no": the colour or the shape is in the scene, the pair is not.
                let mut absent = Vec::new();
                for c in Colour::ALL {
                    for s in Shape::ALL {
                        let near = scene.count_colour(c) > 0 || scene.count_shape(s) > 0;
                        if near && scene.count_kind(c, s) == 0 {
                            absent.push((c, s));
                        }
                    }
                }
                *pick(rng, &absent)?
            };
            let relevant = scene
                .objects
                .iter()
                .filter(|o| o.color == colour && o.shape == shape)
                .map(|o| o.id)
                .collect::<Vec<_>>();
            let answer = if relevant.is_empty() { "no" } else { "yes" };
            Some(question(
                format!("is there a {} {}?", colour.name(), shape.name()),
                answer,
                "yes/no",
                "is there a",
                relevant,
                &[colour.name(), shape.name()],
            ))
        }
        Template::Count => {
            let shape = *rng.pick(&Shape::ALL);
            let relevant: Vec<usize> = scene
                .objects
                .iter()
                .filter(|o| o.shape == shape)
                .map(|o| o.id)
                .collect();
            Some(question(
                format!("how many {} are there?", shape.plural()),
                &relevant.len().to_string(),
                "number",
                "how many",
                relevant,
                &[shape.plural()],
            ))
        }
        Template::LeftOf => {
            let level = LEVEL_FRACTION * scene.width as f64;
            let candidates: Vec<(usize, usize)> = scene
                .objects
                .iter()
                .filter(|r| scene.count_kind(r.color, r.shape) == 1)
                .filter_map(|r| {
                    let rx = r.center[0];
                    let others = scene.objects.iter().filter(|o| o.id != r.id);
                    if others.clone().any(|o| (o.center[0] - rx).abs() < level) {
                        return None;
                    }
                    let left: Vec<_> = others.filter(|o| o.center[0] < rx).collect();
                    (left.len() == 1).then(|| (r.id, left[0].id))
                })
                .collect();
            let &(reference, target) = pick(rng, &candidates)?;
            let (r, t) = (&scene.objects[reference], &scene.objects[target]);
            Some(question(
                format!("what is left of the {} {}?", r.color.name(), r.shape.name()),
                t.shape.name(),
                "other",
                "what is",
                vec![reference, target],
                &["left", r.color.name(), r.shape.name()],
            ))
        }
    }
}

fn pick<'a, T>(rng: &mut Rng, items: &'a [T]) -> Option<&'a T> {
    (!items.is_empty()).then(|| rng.pick(items))
}

/// The words of a question as ground truth indexes them: split on spaces, "?" dropped.
pub fn words(question: &str) -> Vec<&str> {
    question
        .split(' ')
        .map(|w| w.trim_end_matches('?'))
        .collect()
}

fn question(
    text: String,
    answer: &str,
    answer_type: &'static str,
    question_type: &'static str,
    relevant_objects: Vec<usize>,
    relevant: &[&str],
) -> Question {
    let relevant_words = words(&text)
        .iter()
        .enumerate()
        .filter(|(_, w)| relevant.contains(w))
        .map(|(i, _)| i)
        .collect();
    Question {
        question: text,
        answer: answer.to_string(),
        answer_type,
        question_type,
        relevant_objects,
        relevant_words,
    }
}
