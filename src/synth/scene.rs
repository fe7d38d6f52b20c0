//! Scenes: 2–6 flat-coloured shapes at random non-overlapping positions on a lightly textured
//! background, and their rasterisation into an RGB image and an instance mask.
//!
//! A pixel belongs to an object when its centre lies inside the object's shape ([`Shape::contains`]),
//! with no anti-aliasing, so the mask is exact: every mask pixel of an object has the object's
//! colour in the image and no other pixel has.

use image::{GrayImage, Luma, Rgb, RgbImage};
use serde::Serialize;

use super::rng::Rng;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Shape {
    Circle,
    Square,
    Triangle,
    Cross,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Colour {
    Red,
    Green,
    Blue,
    Yellow,
    Purple,
    Orange,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Size {
    Small,
    Large,
}

impl Shape {
    pub const ALL: [Shape; 4] = [Shape::Circle, Shape::Square, Shape::Triangle, Shape::Cross];

    pub fn name(self) -> &'static str {
        match self {
            Shape::Circle => "circle",
            Shape::Square => "square",
            Shape::Triangle => "triangle",
            Shape::Cross => "cross",
        }
    }

    pub fn plural(self) -> &'static str {
        match self {
            Shape::Circle => "circles",
            Shape::Square => "squares",
            Shape::Triangle => "triangles",
            Shape::Cross => "crosses",
        }
    }

    /// The farthest the shape reaches from its centre, in units of r (placement keeps these
    /// circles apart, so shapes never touch).
    pub fn extent(self) -> f64 {
        match self {
            Shape::Circle => 1.0,
            Shape::Square => 0.85 * std::f64::consts::SQRT_2,
            // base corners (±0.95, 0.8)
            Shape::Triangle => (0.95f64 * 0.95 + 0.8 * 0.8).sqrt(),
            Shape::Cross => (1.0f64 + 0.33 * 0.33).sqrt(),
        }
    }

    /// Whether the offset (dx, dy) from the centre lies inside the shape of radius r (the
    /// radius of the circle the shape is drawn in; y grows downwards).
    pub fn contains(self, dx: f64, dy: f64, r: f64) -> bool {
        match self {
            Shape::Circle => dx * dx + dy * dy <= r * r,
            // Side 1.7 r: about the circle's area.
            Shape::Square => dx.abs() <= 0.85 * r && dy.abs() <= 0.85 * r,
            // Apex up at −r, base at +0.8 r, base width 1.9 r.
            Shape::Triangle => {
                let t = (dy + r) / (1.8 * r);
                (0.0..=1.0).contains(&t) && dx.abs() <= 0.95 * r * t
            }
            Shape::Cross => {
                let (ax, ay) = (dx.abs(), dy.abs());
                (ax <= 0.33 * r && ay <= r) || (ay <= 0.33 * r && ax <= r)
            }
        }
    }
}

impl Colour {
    pub const ALL: [Colour; 6] = [
        Colour::Red,
        Colour::Green,
        Colour::Blue,
        Colour::Yellow,
        Colour::Purple,
        Colour::Orange,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Colour::Red => "red",
            Colour::Green => "green",
            Colour::Blue => "blue",
            Colour::Yellow => "yellow",
            Colour::Purple => "purple",
            Colour::Orange => "orange",
        }
    }

    /// The palette colour; each object jitters it a little.
    pub fn rgb(self) -> [u8; 3] {
        match self {
            Colour::Red => [215, 35, 35],
            Colour::Green => [40, 165, 60],
            Colour::Blue => [40, 80, 215],
            Colour::Yellow => [235, 210, 40],
            Colour::Purple => [135, 55, 175],
            Colour::Orange => [245, 135, 25],
        }
    }
}

impl Size {
    pub fn name(self) -> &'static str {
        match self {
            Size::Small => "small",
            Size::Large => "large",
        }
    }

    /// Radius range as a fraction of the image side.
    fn radius_range(self) -> (f64, f64) {
        match self {
            Size::Small => (0.065, 0.085),
            Size::Large => (0.11, 0.14),
        }
    }
}

/// One object of a scene, as ground_truth.json lists it.
#[derive(Debug, Clone, Serialize)]
pub struct Object {
    /// Index in the scene; the instance mask stores `id + 1`.
    pub id: usize,
    pub shape: Shape,
    pub color: Colour,
    pub size: Size,
    /// Centre (x, y) in pixels.
    pub center: [f64; 2],
    pub radius: f64,
    /// The exact fill colour in the image.
    pub rgb: [u8; 3],
    /// Tight pixel box of the mask: x1, y1 (inclusive), x2, y2 (exclusive).
    pub box_px: [u32; 4],
}

#[derive(Debug, Clone)]
pub struct Scene {
    pub width: u32,
    pub height: u32,
    pub objects: Vec<Object>,
    pub image: RgbImage,
    /// 0 = background, k + 1 = object k.
    pub mask: GrayImage,
}

/// Image sides a scene may have (square images).
pub const SIDES: [u32; 4] = [96, 128, 160, 192];

impl Scene {
    pub fn generate(rng: &mut Rng) -> Scene {
        let side = *rng.pick(&SIDES);
        let count = rng.between(2, 6);
        let placed = place(rng, side as f64, count);
        let mut image = background(rng, side);
        let mut mask = GrayImage::new(side, side);
        let mut objects = Vec::with_capacity(placed.len());
        for (id, (shape, colour, size, center, radius)) in placed.into_iter().enumerate() {
            let base = colour.rgb();
            let rgb = base.map(|c| (c as i32 + rng.between(0, 24) as i32 - 12).clamp(0, 255) as u8);
            let mut box_px = [u32::MAX, u32::MAX, 0, 0];
            let (x0, x1) = span(center[0], radius, side);
            let (y0, y1) = span(center[1], radius, side);
            for y in y0..y1 {
                for x in x0..x1 {
                    let (dx, dy) = (x as f64 + 0.5 - center[0], y as f64 + 0.5 - center[1]);
                    if shape.contains(dx, dy, radius) {
                        image.put_pixel(x, y, Rgb(rgb));
                        mask.put_pixel(x, y, Luma([id as u8 + 1]));
                        box_px = [
                            box_px[0].min(x),
                            box_px[1].min(y),
                            box_px[2].max(x + 1),
                            box_px[3].max(y + 1),
                        ];
                    }
                }
            }
            objects.push(Object {
                id,
                shape,
                color: colour,
                size,
                center,
                radius,
                rgb,
                box_px,
            });
        }
        Scene {
            width: side,
            height: side,
            objects,
            image,
            mask,
        }
    }

    pub fn count_shape(&self, shape: Shape) -> usize {
        self.objects.iter().filter(|o| o.shape == shape).count()
    }

    pub fn count_colour(&self, colour: Colour) -> usize {
        self.objects.iter().filter(|o| o.color == colour).count()
    }

    pub fn count_kind(&self, colour: Colour, shape: Shape) -> usize {
        self.objects
            .iter()
            .filter(|o| o.color == colour && o.shape == shape)
            .count()
    }
}

/// Pixel range [lo, hi) that a shape of radius r centred at c can touch.
fn span(c: f64, r: f64, side: u32) -> (u32, u32) {
    let lo = (c - r - 1.0).floor().max(0.0) as u32;
    let hi = ((c + r + 1.0).ceil() as u32).min(side);
    (lo, hi)
}

type Placed = (Shape, Colour, Size, [f64; 2], f64);

/// Random attributes and non-overlapping positions (by rejection: the shapes' circumscribed
/// circles keep a gap). Fewer objects than asked for only if the side is too crowded after many tries.
fn place(rng: &mut Rng, side: f64, count: usize) -> Vec<Placed> {
    let gap = 0.04 * side;
    let margin = 0.03 * side;
    let mut placed: Vec<Placed> = Vec::with_capacity(count);
    let mut tries = 0;
    while placed.len() < count && tries < 2000 {
        tries += 1;
        let shape = *rng.pick(&Shape::ALL);
        let colour = *rng.pick(&Colour::ALL);
        let size = if rng.chance(0.5) {
            Size::Small
        } else {
            Size::Large
        };
        let (lo, hi) = size.radius_range();
        let radius = rng.range(lo, hi) * side;
        let reach = radius * shape.extent();
        let x = rng.range(reach + margin, side - reach - margin);
        let y = rng.range(reach + margin, side - reach - margin);
        let clear = placed.iter().all(|&(s, _, _, c, r)| {
            let (dx, dy) = (c[0] - x, c[1] - y);
            (dx * dx + dy * dy).sqrt() >= r * s.extent() + reach + gap
        });
        if clear {
            placed.push((shape, colour, size, [x, y], radius));
        }
    }
    placed
}

/// A light, slightly tinted background with pixel noise and faint low-frequency waves.
fn background(rng: &mut Rng, side: u32) -> RgbImage {
    let level = rng.range(185.0, 225.0);
    let tint = [
        rng.range(-8.0, 8.0),
        rng.range(-8.0, 8.0),
        rng.range(-8.0, 8.0),
    ];
    let (fx, fy) = (rng.range(0.02, 0.08), rng.range(0.02, 0.08));
    let phase = rng.range(0.0, std::f64::consts::TAU);
    let mut img = RgbImage::new(side, side);
    for y in 0..side {
        for x in 0..side {
            let wave = 5.0 * libm::sin(fx * x as f64 + fy * y as f64 + phase);
            let noise = rng.range(-7.0, 7.0);
            let px = tint.map(|t| (level + t + wave + noise).round().clamp(0.0, 255.0) as u8);
            img.put_pixel(x, y, Rgb(px));
        }
    }
    img
}
