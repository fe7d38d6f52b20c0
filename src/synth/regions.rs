//! LXMERT-style region inputs for a scene: one region per object and background/distractor
//! regions up to [`REGIONS_PER_IMAGE`], in random order, each with a small feature vector in
//! place of Faster R-CNN's 2048 floats.
//!
//! Feature layout ([`FEATURE_DIM`] floats, every one with Gaussian noise of σ = [`NOISE`]):
//! `[0..6)` colour one-hot (red, green, blue, yellow, purple, orange), `[6..10)` shape one-hot
//! (circle, square, triangle, cross), `[10..12)` size one-hot (small, large), `[12]` background
//! flag, `[13..16)` the mean RGB of the box / 255. Background regions have zero one-hots.

use super::rng::Rng;
use super::scene::{Colour, Scene, Shape, Size};

pub const REGIONS_PER_IMAGE: usize = 10;
pub const FEATURE_DIM: usize = 16;
pub const NOISE: f64 = 0.1;

/// The regions of one image.
#[derive(Debug, Clone)]
pub struct SceneRegions {
    /// [REGIONS_PER_IMAGE, FEATURE_DIM]
    pub features: Vec<f32>,
    /// Absolute pixel corners x1, y1, x2, y2, [REGIONS_PER_IMAGE, 4].
    pub boxes_px: Vec<f32>,
    /// Per region, the object it shows (None: background).
    pub objects: Vec<Option<usize>>,
}

impl SceneRegions {
    /// Boxes divided by the image width and height (the features file's layout).
    pub fn normalised_boxes(&self, width: u32, height: u32) -> Vec<f32> {
        self.boxes_px
            .chunks_exact(4)
            .flat_map(|b| {
                [
                    b[0] / width as f32,
                    b[1] / height as f32,
                    b[2] / width as f32,
                    b[3] / height as f32,
                ]
            })
            .collect()
    }
}

pub fn regions(scene: &Scene, rng: &mut Rng) -> SceneRegions {
    let (w, h) = (scene.width as f64, scene.height as f64);
    let mut entries: Vec<([f64; 4], Option<usize>)> = scene
        .objects
        .iter()
        .map(|o| {
            // A detector's box is a little off: jitter each side by up to 1.5 px.
            let b = o.box_px.map(|v| v as f64);
            let j = |v: f64, hi: f64, rng: &mut Rng| (v + rng.range(-1.5, 1.5)).clamp(0.0, hi);
            let (x1, y1) = (j(b[0], w, rng), j(b[1], h, rng));
            let (x2, y2) = (
                j(b[2], w, rng).max(x1 + 1.0).min(w),
                j(b[3], h, rng).max(y1 + 1.0).min(h),
            );
            ([x1, y1, x2, y2], Some(o.id))
        })
        .collect();
    while entries.len() < REGIONS_PER_IMAGE {
        let bw = rng.range(0.1, 0.45) * w;
        let bh = rng.range(0.1, 0.45) * h;
        let x1 = rng.range(0.0, w - bw);
        let y1 = rng.range(0.0, h - bh);
        entries.push(([x1, y1, x1 + bw, y1 + bh], None));
    }
    entries.truncate(REGIONS_PER_IMAGE);
    rng.shuffle(&mut entries);

    let mut features = Vec::with_capacity(REGIONS_PER_IMAGE * FEATURE_DIM);
    let mut boxes_px = Vec::with_capacity(REGIONS_PER_IMAGE * 4);
    let mut objects = Vec::with_capacity(REGIONS_PER_IMAGE);
    for (b, object) in entries {
        let mut f = [0.0f64; FEATURE_DIM];
        match object {
            Some(id) => {
                let o = &scene.objects[id];
                f[Colour::ALL.iter().position(|&c| c == o.color).unwrap_or(0)] = 1.0;
                f[6 + Shape::ALL.iter().position(|&s| s == o.shape).unwrap_or(0)] = 1.0;
                f[10 + usize::from(o.size == Size::Large)] = 1.0;
            }
            None => f[12] = 1.0,
        }
        let mean = mean_rgb(scene, b);
        f[13..16].copy_from_slice(&mean);
        for v in &mut f {
            *v += NOISE * rng.normal();
        }
        features.extend(f.iter().map(|&v| v as f32));
        boxes_px.extend(b.iter().map(|&v| v as f32));
        objects.push(object);
    }
    SceneRegions {
        features,
        boxes_px,
        objects,
    }
}

fn mean_rgb(scene: &Scene, b: [f64; 4]) -> [f64; 3] {
    let (x1, y1) = (b[0].floor() as u32, b[1].floor() as u32);
    let (x2, y2) = (
        (b[2].ceil() as u32).min(scene.width),
        (b[3].ceil() as u32).min(scene.height),
    );
    let mut sum = [0.0f64; 3];
    let mut n = 0.0f64;
    for y in y1..y2.max(y1 + 1).min(scene.height) {
        for x in x1..x2.max(x1 + 1).min(scene.width) {
            let p = scene.image.get_pixel(x, y).0;
            for c in 0..3 {
                sum[c] += p[c] as f64;
            }
            n += 1.0;
        }
    }
    sum.map(|s| s / n.max(1.0) / 255.0)
}

/// Standard base64 with padding (what Python's `base64.b64encode` writes into obj36 TSVs).
pub fn base64(bytes: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.len();
        let v = (chunk[0] as u32) << 16
            | (*chunk.get(1).unwrap_or(&0) as u32) << 8
            | *chunk.get(2).unwrap_or(&0) as u32;
        for k in 0..4 {
            if k <= n {
                out.push(TABLE[(v >> (18 - 6 * k) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// One obj36 TSV line (LXMERT's `FIELDNAMES` order, no trailing newline). Object class ids are
/// `1 + 4·colour + shape` for object regions and 0 for background, confidences 1 and 0.
pub fn obj36_line(image_id: &str, scene: &Scene, r: &SceneRegions) -> String {
    let n = r.objects.len();
    let mut class = Vec::with_capacity(n * 8);
    let mut conf = Vec::with_capacity(n * 4);
    for o in &r.objects {
        let id: i64 = match o {
            Some(id) => {
                let o = &scene.objects[*id];
                let c = Colour::ALL.iter().position(|&c| c == o.color).unwrap_or(0);
                let s = Shape::ALL.iter().position(|&s| s == o.shape).unwrap_or(0);
                1 + 4 * c as i64 + s as i64
            }
            None => 0,
        };
        class.extend(id.to_le_bytes());
        conf.extend((if o.is_some() { 1.0f32 } else { 0.0 }).to_le_bytes());
    }
    let f32s = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    [
        image_id.to_string(),
        scene.height.to_string(),
        scene.width.to_string(),
        base64(&class),
        base64(&conf),
        base64(&vec![0u8; n * 8]),
        base64(&vec![0u8; n * 4]),
        n.to_string(),
        base64(&f32s(&r.boxes_px)),
        base64(&f32s(&r.features)),
    ]
    .join("\t")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (raw, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(raw.as_bytes()), enc);
        }
    }
}
