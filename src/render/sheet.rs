//! A comparison sheet: the plain input and one heat-map panel per method side by side, so that
//! methods can be compared on the same image at a glance.
//!
//! Each panel is normalised on its own (relevance scales differ between methods by orders of
//! magnitude), which the sheet says under its one shared legend.

use image::{Rgb, RgbImage};

use super::font::{self, draw_text, text_width};
use super::overlay::{
    blend, draw_legend, legend_height, legend_min_width, line_height, text_scale, Layout,
    BACKGROUND, INK, MUTED, PAD,
};

/// Panels per row; 4 keeps a sheet of 224-pixel panels under 1000 pixels wide.
pub const MAX_COLUMNS: usize = 4;
const MAX_CAPTION_LINES: usize = 3;
const LEGEND_NOTE: &str = "each panel min-max scaled on its own";

/// The plain `image` (panel "input"), then one panel per (method name, relevance over the
/// `grid_hw` grid) drawn as in [`super::overlay::blend`], in rows of up to [`MAX_COLUMNS`];
/// `caption` (wrapped) on top, each panel's name above it, one legend at the bottom.
pub fn comparison_sheet<'a>(
    image: &RgbImage,
    panels: &[(String, Vec<f32>)],
    layout: impl Into<Layout<'a>>,
    caption: &str,
) -> RgbImage {
    let layout = layout.into();
    let (w, h) = image.dimensions();
    let scale = text_scale(w);
    let (margin, gap) = (2 * PAD * scale, 2 * PAD * scale);
    let tiles: Vec<(&str, RgbImage)> = std::iter::once(("input", image.clone()))
        .chain(
            panels
                .iter()
                .map(|(name, relevance)| (name.as_str(), blend(image, relevance, layout))),
        )
        .collect();
    let cols = tiles.len().min(MAX_COLUMNS) as u32;
    let rows = tiles.len().div_ceil(MAX_COLUMNS) as u32;
    let grid_w = cols * w + (cols - 1) * gap;
    let inner_w = grid_w.max(legend_min_width(scale));
    let width = inner_w + 2 * margin;

    // The caption is the sheet's headline: twice the panel text size when that keeps it short.
    let big = font::wrap(caption, 2 * scale, inner_w, MAX_CAPTION_LINES);
    let (caption_scale, caption_lines) = if big.len() <= 2 {
        (2 * scale, big)
    } else {
        (
            scale,
            font::wrap(caption, scale, inner_w, MAX_CAPTION_LINES),
        )
    };
    let caption_h = caption_lines.len() as u32 * line_height(caption_scale);
    let tile_h = line_height(scale) + h + gap;
    let legend_h = legend_height(scale) + PAD * scale + line_height(scale);
    let height = margin + caption_h + gap + rows * tile_h + legend_h + margin;
    let mut canvas = RgbImage::from_pixel(width, height, Rgb(BACKGROUND));

    let mut y = margin;
    for line in &caption_lines {
        draw_text(
            &mut canvas,
            margin as i32,
            y as i32,
            line,
            caption_scale,
            INK,
        );
        y += line_height(caption_scale);
    }
    y += gap;
    let grid_x = margin + (inner_w - grid_w) / 2;
    for (i, (name, tile)) in tiles.iter().enumerate() {
        let (col, row) = (i as u32 % cols, i as u32 / cols);
        let (x, top) = (grid_x + col * (w + gap), y + row * tile_h);
        let name = font::fit(name, scale, w);
        let name_x = x + (w.saturating_sub(text_width(&name, scale))) / 2;
        draw_text(&mut canvas, name_x as i32, top as i32, &name, scale, INK);
        let image_y = top + line_height(scale);
        image::imageops::replace(&mut canvas, tile, i64::from(x), i64::from(image_y));
    }
    y += rows * tile_h;

    let legend_w = (grid_w / 2).clamp(legend_min_width(scale), inner_w);
    draw_legend(
        &mut canvas,
        margin + (inner_w - legend_w) / 2,
        y,
        legend_w,
        scale,
    );
    y += legend_height(scale) + PAD * scale;
    let note = font::fit(LEGEND_NOTE, scale, inner_w);
    let note_x = margin + (inner_w - text_width(&note, scale)) / 2;
    draw_text(&mut canvas, note_x as i32, y as i32, &note, scale, MUTED);
    canvas
}
