//! Text on PNGs with the public-domain 8×8 bitmap font of `font8x8`, drawn at an integer scale
//! so that it stays crisp.
//!
//! Printable ASCII and Latin-1 (U+00A0–U+00FF, so "·", "×" and accented letters in captions)
//! have glyphs; typographic quotes, dashes and "…" are folded to their ASCII look-alikes, tabs
//! and line breaks to spaces; every other character, other control characters included, is drawn
//! as '?'. Every drawn character is one 8×8 cell, so widths are exact and text is laid out by
//! counting characters.

use font8x8::legacy::{BASIC_LEGACY, LATIN_LEGACY};
use image::RgbImage;

/// Width and height of one character cell at scale 1, in pixels.
pub const CELL: u32 = 8;

/// `text` with every character replaced by one the font draws (see the module docs).
pub fn fold(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            ' '..='~' | '\u{a0}'..='\u{ff}' => out.push(c),
            '\t' | '\n' | '\r' => out.push(' '),
            '\u{2018}' | '\u{2019}' | '\u{201a}' | '\u{2032}' => out.push('\''),
            '\u{201c}' | '\u{201d}' | '\u{201e}' | '\u{2033}' => out.push('"'),
            '\u{2010}'..='\u{2015}' | '\u{2212}' => out.push('-'),
            '\u{2022}' | '\u{2027}' | '\u{22c5}' => out.push('\u{b7}'),
            '\u{2026}' => out.push_str("..."),
            _ => out.push('?'),
        }
    }
    out
}

fn glyph(c: char) -> [u8; 8] {
    match c {
        ' '..='~' => BASIC_LEGACY[c as usize],
        '\u{a0}'..='\u{ff}' => LATIN_LEGACY[c as usize - 0xa0],
        _ => BASIC_LEGACY['?' as usize],
    }
}

/// Draws `text` with its top-left corner at (x, y), each font pixel a `scale`×`scale` block;
/// whatever falls outside `img` is clipped.
pub fn draw_text(img: &mut RgbImage, x: i32, y: i32, text: &str, scale: u32, color: [u8; 3]) {
    let (w, h) = (i64::from(img.width()), i64::from(img.height()));
    let s = i64::from(scale);
    for (k, c) in fold(text).chars().enumerate() {
        let x0 = i64::from(x) + k as i64 * i64::from(CELL) * s;
        if x0 >= w {
            break;
        }
        for (row, bits) in glyph(c).iter().enumerate() {
            // font8x8 stores each row as a byte whose least significant bit is the leftmost pixel.
            for col in (0..8).filter(|col| bits & (1 << col) != 0) {
                let (bx, by) = (x0 + col * s, i64::from(y) + row as i64 * s);
                for py in by.max(0)..(by + s).min(h) {
                    for px in bx.max(0)..(bx + s).min(w) {
                        img.put_pixel(px as u32, py as u32, image::Rgb(color));
                    }
                }
            }
        }
    }
}

/// The width `draw_text` covers for `text` at `scale`, in pixels.
pub fn text_width(text: &str, scale: u32) -> u32 {
    let chars = u32::try_from(fold(text).chars().count()).unwrap_or(u32::MAX);
    chars.saturating_mul(CELL * scale)
}

/// How many characters fit in `max_width` pixels at `scale`.
fn chars_in(max_width: u32, scale: u32) -> usize {
    (max_width / (CELL * scale.max(1))) as usize
}

/// `chars` cut to `max` characters of which the last (up to) three are "...".
fn ellipsize(chars: &[char], max: usize) -> String {
    let keep = max.saturating_sub(3).min(chars.len());
    let dots = max.saturating_sub(keep).min(3);
    chars[..keep]
        .iter()
        .copied()
        .chain(std::iter::repeat_n('.', dots))
        .collect()
}

/// `text` (folded) cut to fit in `max_width` pixels, ending in "..." when something was cut.
pub fn fit(text: &str, scale: u32, max_width: u32) -> String {
    let chars: Vec<char> = fold(text).chars().collect();
    let max = chars_in(max_width, scale);
    if chars.len() <= max {
        chars.into_iter().collect()
    } else {
        ellipsize(&chars, max)
    }
}

/// `text` (folded) broken at spaces into at most `max_lines` lines of at most `max_width`
/// pixels; a word longer than a line is split, and the last line ends in "..." when text was
/// left over.
pub fn wrap(text: &str, scale: u32, max_width: u32, max_lines: usize) -> Vec<String> {
    let max = chars_in(max_width, scale).max(1);
    let mut lines: Vec<String> = Vec::new();
    let mut line: Vec<char> = Vec::new();
    for word in fold(text).split(' ').filter(|w| !w.is_empty()) {
        let word: Vec<char> = word.chars().collect();
        if !line.is_empty() && line.len() + 1 + word.len() <= max {
            line.push(' ');
            line.extend(&word);
            continue;
        }
        if !line.is_empty() {
            lines.push(line.drain(..).collect());
        }
        let mut pieces = word.chunks(max).peekable();
        while let Some(piece) = pieces.next() {
            if pieces.peek().is_some() {
                lines.push(piece.iter().collect());
            } else {
                line.extend(piece);
            }
        }
    }
    if !line.is_empty() {
        lines.push(line.into_iter().collect());
    }
    if lines.len() > max_lines {
        let rest: Vec<char> = lines
            .split_off(max_lines.saturating_sub(1))
            .join(" ")
            .chars()
            .collect();
        if max_lines > 0 {
            lines.push(ellipsize(&rest, max));
        }
    }
    lines
}
