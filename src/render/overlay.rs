//! One explained image with its relevance heat map: min–max normalised, upsampled bilinearly
//! like `torch.nn.functional.interpolate(mode="bilinear", align_corners=False)` (what the
//! Python reference implementations use to show patch relevance), coloured with viridis and
//! blended at alpha 0.5 over the image in grey (a scene's own colours, blended in, would read
//! as heat: a yellow object looked hot); a footer holds the title and a low→high colour bar.

use image::{Rgb, RgbImage};

use super::colormap::{text_color, viridis};
use super::font::{self, draw_text, CELL};
use super::minmax;

/// Weight of the heat colour against the image: 0.5 keeps both the map and the picture legible.
pub const ALPHA: f32 = 0.5;
pub(crate) const BACKGROUND: [u8; 3] = [255, 255, 255];
pub(crate) const INK: [u8; 3] = [32, 32, 32];
pub(crate) const MUTED: [u8; 3] = [110, 110, 110];
/// Padding around text, in pixels at text scale 1.
pub(crate) const PAD: u32 = 4;
const MAX_TITLE_LINES: usize = 3;

/// Text scale for an image `width` pixels wide: 1 up to 447 pixels (the 8-pixel font is legible
/// at 1:1 on CLIP's 224), then larger so that text keeps its share of the width.
pub(crate) fn text_scale(width: u32) -> u32 {
    (width / 224).max(1)
}

/// Vertical advance of one line of text.
pub(crate) fn line_height(scale: u32) -> u32 {
    (CELL + 3) * scale
}

/// Source taps of torch's bilinear rule along one axis: for each output index, the two input
/// indices and the weight of the second. `src = (dst + 0.5)·(n_in/n_out) − 0.5`, clamped at 0;
/// the upper neighbour is clamped to the last index.
fn taps(n_in: usize, n_out: usize) -> Vec<(usize, usize, f32)> {
    // f32 like torch's CPU kernel (its opmath type for float input).
    let scale = n_in as f32 / n_out as f32;
    (0..n_out)
        .map(|dst| {
            let src = ((dst as f32 + 0.5) * scale - 0.5).max(0.0);
            let i0 = (src as usize).min(n_in - 1);
            (i0, (i0 + 1).min(n_in - 1), src - i0 as f32)
        })
        .collect()
}

/// Bilinear upsampling of a row-major `grid_hw` = (gh, gw) grid to `out_hw` = (h, w), equal to
/// `torch.nn.functional.interpolate(mode="bilinear", align_corners=False)`. A grid whose length
/// is not gh·gw (or is empty) gives all zeros.
pub fn upsample_bilinear(
    grid: &[f32],
    grid_hw: (usize, usize),
    out_hw: (usize, usize),
) -> Vec<f32> {
    let ((gh, gw), (h, w)) = (grid_hw, out_hw);
    if grid.is_empty() || gh.checked_mul(gw) != Some(grid.len()) {
        return vec![0.0; h * w];
    }
    let (ys, xs) = (taps(gh, h), taps(gw, w));
    let mut out = Vec::with_capacity(h * w);
    for &(y0, y1, ly) in &ys {
        let (top, bottom) = (&grid[y0 * gw..(y0 + 1) * gw], &grid[y1 * gw..(y1 + 1) * gw]);
        for &(x0, x1, lx) in &xs {
            // Same association as torch: h0λ·(w0λ·a + w1λ·b) + h1λ·(w0λ·c + w1λ·d).
            let upper = (1.0 - lx) * top[x0] + lx * top[x1];
            let lower = (1.0 - lx) * bottom[x0] + lx * bottom[x1];
            out.push((1.0 - ly) * upper + ly * lower);
        }
    }
    out
}

/// A pixel's luma (ITU-R BT.601 weights) as grey.
fn grey(p: Rgb<u8>) -> Rgb<u8> {
    let [r, g, b] = p.0.map(f32::from);
    let y = super::round_u8(0.299 * r + 0.587 * g + 0.114 * b);
    Rgb([y, y, y])
}

/// Mixes `color` into a pixel with weight `alpha`.
fn mix(p: &mut Rgb<u8>, color: [u8; 3], alpha: f32) {
    for (c, &h) in p.0.iter_mut().zip(&color) {
        *c = super::round_u8((1.0 - alpha) * f32::from(*c) + alpha * f32::from(h));
    }
}

/// A dark band across the top of `img` with `note` in white (up to 2 lines): says why a map
/// looks the way it does (flat, or not drawable) where a person is looking anyway.
fn label(img: &mut RgbImage, note: &str) {
    let scale = text_scale(img.width());
    let pad = PAD * scale;
    let lines = font::wrap(note, scale, img.width().saturating_sub(2 * pad), 2);
    let band = lines.len() as u32 * line_height(scale) + pad;
    for y in 0..band.min(img.height()) {
        for x in 0..img.width() {
            mix(img.get_pixel_mut(x, y), [0, 0, 0], 0.7);
        }
    }
    for (i, line) in lines.iter().enumerate() {
        let y = pad * 3 / 4 + i as u32 * line_height(scale);
        draw_text(img, pad as i32, y as i32, line, scale, [255, 255, 255]);
    }
}

/// Where each relevance value lies on the image.
#[derive(Debug, Clone, Copy)]
pub enum Layout<'a> {
    /// A row-major (rows, cols) grid of patches covering the whole image, upsampled bilinearly.
    Grid(usize, usize),
    /// One normalised box (x1, y1, x2, y2 in [0, 1]) per value (LXMERT regions): each pixel
    /// takes the strongest box covering it, and the strongest boxes are outlined (those whose
    /// level shows above 0.00: none of a flat map).
    Boxes(&'a [[f32; 4]]),
}

impl From<(usize, usize)> for Layout<'static> {
    fn from((rows, cols): (usize, usize)) -> Self {
        Layout::Grid(rows, cols)
    }
}

/// How many of the strongest boxes a region map outlines.
const OUTLINED_BOXES: usize = 5;

/// `image` with the heat map of `relevance` blended over it.
///
/// A constant map (all zeros included, and every 1×1 grid) is drawn flat at the low colour and
/// labelled "flat map"; a relevance whose length does not match the layout is not drawn at
/// all: the image is shown dimmed with a note giving both sizes.
pub fn blend<'a>(image: &RgbImage, relevance: &[f32], layout: impl Into<Layout<'a>>) -> RgbImage {
    let layout = layout.into();
    let mut out = image.clone();
    let expected = match layout {
        Layout::Grid(gh, gw) => gh.checked_mul(gw),
        Layout::Boxes(boxes) => Some(boxes.len()),
    };
    if relevance.is_empty() || expected != Some(relevance.len()) {
        out.pixels_mut().for_each(|p| mix(p, [0, 0, 0], 0.5));
        let what = match layout {
            Layout::Grid(gh, gw) => format!("a {gh}x{gw} grid"),
            Layout::Boxes(b) => format!("{} boxes", b.len()),
        };
        label(
            &mut out,
            &format!("no map: {} values for {what}", relevance.len()),
        );
        return out;
    }
    let levels = minmax(relevance);
    let (w, h) = image.dimensions();
    let heat = match layout {
        Layout::Grid(gh, gw) => upsample_bilinear(&levels, (gh, gw), (h as usize, w as usize)),
        Layout::Boxes(boxes) => box_heat(&levels, boxes, w, h),
    };
    for (p, &t) in out.pixels_mut().zip(&heat) {
        *p = grey(*p);
        mix(p, viridis(t), ALPHA);
    }
    if let Layout::Boxes(boxes) = layout {
        // The boxes the terminal and the page would list: none of a flat map, whose outlines
        // would single out regions it does not.
        for (i, level) in super::strongest(relevance, OUTLINED_BOXES) {
            outline(&mut out, boxes[i], viridis(level));
            number(&mut out, boxes[i], i, viridis(level));
        }
    }
    if levels.iter().all(|&t| t == 0.0) {
        label(&mut out, "flat map: all values equal");
    }
    out
}

/// Pixel (col, row) of a normalised coordinate pair, clamped to the image.
fn to_pixels(b: [f32; 4], w: u32, h: u32) -> (u32, u32, u32, u32) {
    let px =
        |v: f32, size: u32| ((v.clamp(0.0, 1.0) * size as f32) as u32).min(size.saturating_sub(1));
    (px(b[0], w), px(b[1], h), px(b[2], w), px(b[3], h))
}

/// Per pixel, the largest level among the boxes covering it (0 where none does).
fn box_heat(levels: &[f32], boxes: &[[f32; 4]], w: u32, h: u32) -> Vec<f32> {
    let mut heat = vec![0.0f32; (w * h) as usize];
    for (b, &level) in boxes.iter().zip(levels) {
        let (x0, y0, x1, y1) = to_pixels(*b, w, h);
        for y in y0..=y1 {
            for x in x0..=x1 {
                let p = &mut heat[(y * w + x) as usize];
                *p = p.max(level);
            }
        }
    }
    heat
}

/// A 2-pixel rectangle around a normalised box.
fn outline(img: &mut RgbImage, b: [f32; 4], color: [u8; 3]) {
    let (w, h) = img.dimensions();
    let (x0, y0, x1, y1) = to_pixels(b, w, h);
    for t in 0..2u32 {
        for x in x0..=x1 {
            for y in [y0.saturating_add(t).min(h - 1), y1.saturating_sub(t)] {
                img.put_pixel(x, y, Rgb(color));
            }
        }
        for y in y0..=y1 {
            for x in [x0.saturating_add(t).min(w - 1), x1.saturating_sub(t)] {
                img.put_pixel(x, y, Rgb(color));
            }
        }
    }
}

/// Region `i`'s number (its index in the explanation's `image_relevance`) in a tab of the
/// outline's colour inside its box's top-left corner, so that overlapping boxes can be told
/// apart and matched to the numbers.
fn number(img: &mut RgbImage, b: [f32; 4], i: usize, color: [u8; 3]) {
    let (w, h) = img.dimensions();
    let (x0, y0, _, _) = to_pixels(b, w, h);
    let scale = text_scale(w);
    let text = i.to_string();
    let (tab_w, tab_h) = (font::text_width(&text, scale) + 2, CELL * scale + 2);
    for y in y0..(y0 + tab_h).min(h) {
        for x in x0..(x0 + tab_w).min(w) {
            img.put_pixel(x, y, Rgb(color));
        }
    }
    draw_text(
        img,
        x0 as i32 + 1,
        y0 as i32 + 1,
        &text,
        scale,
        text_color(color),
    );
}

/// Narrowest legend that still shows "low", a bar of 8 cells and "high".
pub fn legend_min_width(scale: u32) -> u32 {
    (3 + 1 + 8 + 1 + 4) * CELL * scale
}

/// Height of the legend drawn by [`draw_legend`].
pub fn legend_height(scale: u32) -> u32 {
    CELL * scale
}

/// Draws "low", a viridis bar from t = 0 to t = 1, and "high" in `width` pixels from (x, y).
pub fn draw_legend(img: &mut RgbImage, x: u32, y: u32, width: u32, scale: u32) {
    let cell = CELL * scale;
    draw_text(img, x as i32, y as i32, "low", scale, INK);
    let high_x = (x + width).saturating_sub(4 * cell);
    draw_text(img, high_x as i32, y as i32, "high", scale, INK);
    let (bar_x0, bar_x1) = (x + 4 * cell, high_x.saturating_sub(cell));
    let span = bar_x1.saturating_sub(bar_x0).max(2) - 1;
    for bx in bar_x0..bar_x1.min(img.width()) {
        for by in y..(y + cell).min(img.height()) {
            // A 1-pixel frame keeps the dark purple end visible against any background.
            let edge = bx == bar_x0 || bx + 1 == bar_x1 || by == y || by + 1 == y + cell;
            let color = if edge {
                INK
            } else {
                viridis((bx - bar_x0) as f32 / span as f32)
            };
            img.put_pixel(bx, by, Rgb(color));
        }
    }
}

/// The explained `image` (as the model saw it, any size) with the heat map of `relevance`
/// blended over it (see [`blend`]), above a footer holding `title` (wrapped, at most 3 lines,
/// cut with "..." beyond) and the low→high legend. The output is as wide as the image, or as
/// wide as the legend needs for a very small image (which is then centred).
pub fn overlay<'a>(
    image: &RgbImage,
    relevance: &[f32],
    layout: impl Into<Layout<'a>>,
    title: &str,
) -> RgbImage {
    let (w, h) = image.dimensions();
    let scale = text_scale(w);
    let pad = PAD * scale;
    let width = w.max(legend_min_width(scale) + 2 * pad);
    let lines = font::wrap(title, scale, width - 2 * pad, MAX_TITLE_LINES);
    let footer = pad + lines.len() as u32 * line_height(scale) + pad + legend_height(scale) + pad;
    let mut canvas = RgbImage::from_pixel(width, h + footer, Rgb(BACKGROUND));
    let heat = blend(image, relevance, layout);
    image::imageops::replace(&mut canvas, &heat, i64::from((width - w) / 2), 0);
    let mut y = h + pad;
    for line in &lines {
        draw_text(&mut canvas, pad as i32, y as i32, line, scale, INK);
        y += line_height(scale);
    }
    draw_legend(&mut canvas, pad, y + pad, width - 2 * pad, scale);
    canvas
}
