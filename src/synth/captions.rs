//! CLIP caption sets: the true caption of a scene (its objects left to right) and distractors,
//! each the true caption with one object's colour or shape replaced by one the scene lacks — so
//! every distractor is false of the image, and telling them apart needs the objects' attributes.

use super::rng::Rng;
use super::scene::{Colour, Object, Scene, Shape};

pub const DISTRACTORS: usize = 4;

/// "a red circle, a blue square and an orange triangle"
pub fn caption(objects: &[(Colour, Shape)]) -> String {
    let parts: Vec<String> = objects
        .iter()
        .map(|(c, s)| {
            let article = if c.name().starts_with('o') { "an" } else { "a" };
            format!("{article} {} {}", c.name(), s.name())
        })
        .collect();
    match parts.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        Some((last, _)) => last.clone(),
        None => String::new(),
    }
}

fn left_to_right(scene: &Scene) -> Vec<&Object> {
    let mut objs: Vec<&Object> = scene.objects.iter().collect();
    objs.sort_by(|a, b| a.center[0].total_cmp(&b.center[0]));
    objs
}

/// The true caption first, then up to [`DISTRACTORS`] distinct false ones.
pub fn caption_set(scene: &Scene, rng: &mut Rng) -> Vec<String> {
    let objs: Vec<(Colour, Shape)> = left_to_right(scene)
        .iter()
        .map(|o| (o.color, o.shape))
        .collect();
    let truth = caption(&objs);
    let absent_colours: Vec<Colour> = Colour::ALL
        .into_iter()
        .filter(|&c| scene.count_colour(c) == 0)
        .collect();
    let absent_shapes: Vec<Shape> = Shape::ALL
        .into_iter()
        .filter(|&s| scene.count_shape(s) == 0)
        .collect();
    let mut set = vec![truth];
    let mut tries = 0;
    while set.len() < 1 + DISTRACTORS && tries < 200 {
        tries += 1;
        let mut changed = objs.clone();
        let k = rng.below(changed.len());
        let recolour = absent_shapes.is_empty() || (!absent_colours.is_empty() && rng.chance(0.5));
        if recolour {
            if absent_colours.is_empty() {
                break;
            }
            changed[k].0 = *rng.pick(&absent_colours);
        } else {
            changed[k].1 = *rng.pick(&absent_shapes);
        }
        let text = caption(&changed);
        if !set.contains(&text) {
            set.push(text);
        }
    }
    set
}
