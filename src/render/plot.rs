//! Line charts on PNG: panels side by side that share axes (x and y from 0 to the given
//! maxima, gridlines, tick labels), one coloured line with markers per series and one legend
//! below. Drawn by hand with the bitmap font, so it needs no system fonts.

use image::{Rgb, RgbImage};

use crate::render::font::{draw_text, text_width, CELL};

/// One line: (x, y) points in data units, drawn in order.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    /// Its colour, by index into the palette: the same series keeps its colour in every
    /// figure, whichever others it shares it with.
    pub color: usize,
}

/// One chart of a figure.
#[derive(Debug, Clone)]
pub struct Panel {
    pub title: String,
    pub series: Vec<Series>,
}

/// Axes shared by every panel of a figure.
#[derive(Debug, Clone)]
pub struct Axes {
    pub x_label: String,
    pub y_label: String,
    /// Tick positions and their labels.
    pub x_ticks: Vec<(f64, String)>,
    pub y_ticks: Vec<(f64, String)>,
    pub x_max: f64,
    pub y_max: f64,
}

/// Tableau's ten colours (matplotlib's tab10), distinct for the usual colour-vision
/// deficiencies too, one per method; then black, for the chance rows.
const PALETTE: [[u8; 3]; 11] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
    [227, 119, 194],
    [127, 127, 127],
    [188, 189, 34],
    [23, 190, 207],
    [0, 0, 0],
];

pub fn series_color(i: usize) -> [u8; 3] {
    PALETTE[i % PALETTE.len()]
}

/// The side of series `k`'s point markers: each drawn over the last a size smaller, so that
/// where lines coincide (two methods with the same curve) every colour still shows, as rings.
fn marker_size(k: usize) -> u32 {
    11 - 2 * (k % 4) as u32
}

const WHITE: [u8; 3] = [255, 255, 255];
const BLACK: [u8; 3] = [0, 0, 0];
const GRID: [u8; 3] = [225, 225, 225];
const PLOT_W: u32 = 480;
const PLOT_H: u32 = 320;
const LEFT: u32 = 80;
const RIGHT: u32 = 30;
const TOP: u32 = 100;
const BOTTOM: u32 = 64;

/// A figure: a title, the panels left to right, a legend of the first panel's series names
/// (every panel is expected to list the same series in the same order).
pub fn line_charts(title: &str, axes: &Axes, panels: &[Panel]) -> RgbImage {
    let legend: Vec<(&str, usize)> = panels
        .first()
        .map(|p| {
            p.series
                .iter()
                .map(|s| (s.name.as_str(), s.color))
                .collect()
        })
        .unwrap_or_default();
    let panel_w = LEFT + PLOT_W + RIGHT;
    let width = (panel_w * panels.len().max(1) as u32).max(text_width(title, 2) + 40);
    let entry_w = legend
        .iter()
        .map(|(n, _)| text_width(n, 2))
        .max()
        .unwrap_or(0)
        + 64;
    let legend_cols = (width.saturating_sub(20) / entry_w).max(1);
    let legend_rows = (legend.len() as u32).div_ceil(legend_cols);
    let height = TOP + PLOT_H + BOTTOM + 20 + legend_rows * 24 + 10;
    let mut img = RgbImage::from_pixel(width, height, Rgb(WHITE));
    draw_text(&mut img, 20, 14, title, 2, BLACK);
    for (p, panel) in panels.iter().enumerate() {
        draw_panel(&mut img, LEFT + p as u32 * panel_w, panel, axes);
    }
    let legend_top = TOP + PLOT_H + BOTTOM + 20;
    for (i, &(name, color)) in legend.iter().enumerate() {
        let (col, row) = (i as u32 % legend_cols, i as u32 / legend_cols);
        let (x, y) = (20 + col * entry_w, legend_top + row * 24);
        let color = series_color(color);
        fill(&mut img, x, y + 6, 28, 4, color);
        fill(&mut img, x + 10, y + 4, 8, 8, color);
        draw_text(&mut img, (x + 36) as i32, y as i32, name, 2, BLACK);
    }
    img
}

fn draw_panel(img: &mut RgbImage, left: u32, panel: &Panel, axes: &Axes) {
    let (x0, y0) = (left, TOP);
    let to_px = |x: f64, y: f64| -> (f64, f64) {
        (
            f64::from(x0) + x / axes.x_max * f64::from(PLOT_W),
            f64::from(y0 + PLOT_H) - y / axes.y_max * f64::from(PLOT_H),
        )
    };
    let title_x = x0 + PLOT_W.saturating_sub(text_width(&panel.title, 2)) / 2;
    draw_text(
        img,
        title_x as i32,
        (TOP - 44) as i32,
        &panel.title,
        2,
        BLACK,
    );
    for (y, label) in &axes.y_ticks {
        let (_, py) = to_px(0.0, *y);
        fill(img, x0, py as u32, PLOT_W, 1, GRID);
        let w = text_width(label, 1);
        draw_text(img, (x0 - 8 - w) as i32, py as i32 - 4, label, 1, BLACK);
    }
    for (x, label) in &axes.x_ticks {
        let (px, _) = to_px(*x, 0.0);
        fill(img, px as u32, y0, 1, PLOT_H, GRID);
        let w = text_width(label, 1);
        draw_text(
            img,
            px as i32 - (w / 2) as i32,
            (y0 + PLOT_H + 8) as i32,
            label,
            1,
            BLACK,
        );
    }
    fill(img, x0, y0, 1, PLOT_H + 1, BLACK);
    fill(img, x0, y0 + PLOT_H, PLOT_W, 1, BLACK);
    let xl = &axes.x_label;
    let xl_x = x0 + PLOT_W.saturating_sub(text_width(xl, 2)) / 2;
    draw_text(img, xl_x as i32, (y0 + PLOT_H + 26) as i32, xl, 2, BLACK);
    // The y label, horizontal above the axis (the font has no rotation).
    draw_text(
        img,
        x0 as i32 - 40,
        (TOP - 8 - CELL) as i32,
        &axes.y_label,
        1,
        BLACK,
    );
    for (k, s) in panel.series.iter().enumerate() {
        let color = series_color(s.color);
        let px: Vec<(f64, f64)> = s.points.iter().map(|&(x, y)| to_px(x, y)).collect();
        for w in px.windows(2) {
            line(img, w[0], w[1], color);
        }
        let size = marker_size(k);
        let half = f64::from(size / 2);
        for &(x, y) in &px {
            fill(
                img,
                (x - half).max(0.0) as u32,
                (y - half).max(0.0) as u32,
                size,
                size,
                color,
            );
        }
    }
}

/// A 3-pixel-wide line, stamped along the segment; a point off the image is moved to its
/// edge (a value far out of range must not cost a stamp per pixel of its distance).
fn line(img: &mut RgbImage, a: (f64, f64), b: (f64, f64), color: [u8; 3]) {
    let on_image = |(x, y): (f64, f64)| {
        (
            x.clamp(-1.0, f64::from(img.width())),
            y.clamp(-1.0, f64::from(img.height())),
        )
    };
    let (a, b) = (on_image(a), on_image(b));
    let steps = ((b.0 - a.0).abs().max((b.1 - a.1).abs()).ceil() as usize).max(1);
    for i in 0..=steps {
        let t = i as f64 / steps as f64;
        let (x, y) = (a.0 + t * (b.0 - a.0), a.1 + t * (b.1 - a.1));
        fill(
            img,
            (x - 1.0).max(0.0) as u32,
            (y - 1.0).max(0.0) as u32,
            3,
            3,
            color,
        );
    }
}

fn fill(img: &mut RgbImage, x: u32, y: u32, w: u32, h: u32, color: [u8; 3]) {
    for py in y..y.saturating_add(h).min(img.height()) {
        for px in x..x.saturating_add(w).min(img.width()) {
            img.put_pixel(px, py, Rgb(color));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// x from 0 to 1, y from 0 to 100.
    fn unit_axes() -> Axes {
        Axes {
            x_label: "x".into(),
            y_label: "y".into(),
            x_ticks: vec![(0.0, "0".into()), (1.0, "1".into())],
            y_ticks: vec![(0.0, "0".into()), (100.0, "100".into())],
            x_max: 1.0,
            y_max: 100.0,
        }
    }

    #[test]
    fn draws_series_in_their_colours() {
        let axes = unit_axes();
        let panel = Panel {
            title: "p".into(),
            series: vec![
                Series {
                    name: "a".into(),
                    points: vec![(0.0, 100.0), (1.0, 0.0)],
                    color: 3,
                },
                Series {
                    name: "b".into(),
                    points: vec![(0.0, 50.0), (1.0, 50.0)],
                    color: 1,
                },
                // drawn exactly over b: its smaller markers leave a ring of b's colour
                Series {
                    name: "c".into(),
                    points: vec![(0.0, 50.0), (1.0, 50.0)],
                    color: 5,
                },
            ],
        };
        let img = line_charts("t", &axes, &[panel.clone(), panel]);
        // The middle of series c (y = 50, over b) in the first panel is c's colour.
        let (x, y) = (LEFT + PLOT_W / 4, TOP + PLOT_H / 2);
        assert_eq!(img.get_pixel(x, y).0, series_color(5));
        // At the point (1, 50) c's marker (7 px) sits inside b's (9 px): both show.
        let (px, py) = (LEFT + PLOT_W, TOP + PLOT_H / 2);
        assert_eq!(img.get_pixel(px, py).0, series_color(5));
        assert_eq!(img.get_pixel(px + 4, py + 4).0, series_color(1));
        // Series a starts at the top-left corner of the plot, in its own colour.
        assert_eq!(img.get_pixel(LEFT + 1, TOP + 1).0, series_color(3));
    }

    /// Values far out of range are drawn to the image's edge, at once (a line to 1e20 stamped
    /// once per pixel of its length, and −1e12 overflowed a marker's extent).
    #[test]
    fn points_far_off_the_plot_stop_at_its_edge() {
        let axes = unit_axes();
        let panel = Panel {
            title: "p".into(),
            series: vec![Series {
                name: "a".into(),
                points: vec![(0.0, 1e20), (0.5, -1e12), (1.0, f64::NAN)],
                color: 3,
            }],
        };
        let start = std::time::Instant::now();
        let img = line_charts("t", &axes, &[panel]);
        assert!(start.elapsed().as_secs() < 5, "{:?}", start.elapsed());
        // The segment from (0, 1e20) to (0.5, −1e12) crosses the plot's middle.
        let (x, y) = (LEFT + PLOT_W / 4, TOP + PLOT_H / 2);
        let drawn = (0..PLOT_H)
            .filter(|dy| img.get_pixel(x, TOP + dy).0 == series_color(3))
            .count();
        assert!(drawn > 0, "the line crosses column {x} near row {y}");
    }
}
