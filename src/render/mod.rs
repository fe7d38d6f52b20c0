//! Turning relevance numbers into outputs a person can look at: heat-map overlays and
//! comparison sheets (PNG), token highlighting for the terminal and one self-contained HTML
//! page.
//!
//! Relevance arrives raw (any scale, possibly all zero or negative); it is min–max normalised
//! here for display only and never written back. Nothing in this module panics on bad input:
//! a constant map is drawn flat and labelled so, a relevance grid whose length does not match
//! its shape is drawn as the plain image with a note saying why, and token lists shorter or
//! longer than their relevance show the unmatched tokens as unscored.

pub mod colormap;
pub mod font;
pub mod html;
pub mod overlay;
pub mod plot;
pub mod sheet;
pub mod terminal;

/// `x.round() as u8`, computed without a call: `f32::round` is a libm call on x86-64's
/// baseline, and rounding each channel of each pixel took a third of `explain`'s image
/// writing. For x ≥ 0 its fraction `x − trunc(x)` is exact, so the result is the same byte
/// for every x (NaN and negatives give 0, past 255 gives 255).
pub fn round_u8(x: f32) -> u8 {
    let whole = (x as u32).min(255); // truncates; NaN and negatives give 0
    let up = x - whole as f32 >= 0.5;
    (whole + up as u32).min(255) as u8
}

/// `(v − min)/(max − min)` over the finite values; non-finite values count as 0. A constant
/// (or empty) vector gives all zeros, so the result is always in [0, 1] and never NaN.
pub fn minmax(values: &[f32]) -> Vec<f32> {
    // f64 so that a range such as [-3e38, 3e38] cannot overflow to inf and give inf/inf = NaN.
    let finite = |v: f32| if v.is_finite() { f64::from(v) } else { 0.0 };
    let (lo, hi) = values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(finite(v)), hi.max(finite(v)))
        });
    let range = hi - lo;
    if range.is_nan() || range <= 0.0 {
        return vec![0.0; values.len()];
    }
    values
        .iter()
        .map(|&v| ((finite(v) - lo) / range) as f32)
        .collect()
}

/// The display level of each of `n_tokens` tokens: its relevance min–max normalised among the
/// scored tokens only, or `None` for a token that carries no relevance (not scored, or past the
/// end of `relevance` or `scored`).
pub fn token_levels(n_tokens: usize, relevance: &[f32], scored: &[bool]) -> Vec<Option<f32>> {
    let is_scored = |i: usize| i < relevance.len() && scored.get(i).copied().unwrap_or(false);
    let mut levels = minmax(&scored_values(n_tokens, relevance, scored)).into_iter();
    (0..n_tokens)
        .map(|i| if is_scored(i) { levels.next() } else { None })
        .collect()
}

/// The relevance of the scored tokens among the first `n_tokens`, in order.
fn scored_values(n_tokens: usize, relevance: &[f32], scored: &[bool]) -> Vec<f32> {
    (0..n_tokens.min(relevance.len()))
        .filter(|&i| scored.get(i).copied().unwrap_or(false))
        .map(|i| relevance[i])
        .collect()
}

/// The value every scored token shares, when there are any and they are all equal: such a
/// map ranks nothing, and min–max levels would show it as all zeros, so displays say so.
pub fn flat_value(n_tokens: usize, relevance: &[f32], scored: &[bool]) -> Option<f32> {
    let values = scored_values(n_tokens, relevance, scored);
    let first = *values.first()?;
    values.iter().all(|&v| v == first).then_some(first)
}

/// How a token that shows no text is drawn: the first bytes of a character that byte-level
/// BPE splits over several tokens (the character shows on the token that completes it).
/// Drawn as nothing, its relevance would have no place on the line.
pub const PARTIAL_TOKEN: &str = "·";

/// Whether `c` reorders the text around it (Unicode's bidirectional controls): shown raw, a
/// text or token holding one would display in another order than the model read it.
pub fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// A token as the terminal and the page show it (see [`PARTIAL_TOKEN`]).
pub fn token_label(token: &str) -> &str {
    if token.is_empty() {
        PARTIAL_TOKEN
    } else {
        token
    }
}

/// How many regions the terminal and the page list for a map they cannot draw.
pub const LISTED_REGIONS: usize = 3;

/// The lowest min–max level worth listing: it shows as 0.01 at two decimals.
const LISTED_LEVEL: f32 = 0.005;

/// Up to `k` of `relevance`'s strongest entries, best first, as (index, min–max level):
/// those whose level shows above 0.00, so a flat map lists none. Equal levels keep the lower
/// index first.
pub fn strongest(relevance: &[f32], k: usize) -> Vec<(usize, f32)> {
    let levels = minmax(relevance);
    let mut order: Vec<usize> = (0..levels.len())
        .filter(|&i| levels[i] >= LISTED_LEVEL)
        .collect();
    order.sort_by(|&a, &b| levels[b].total_cmp(&levels[a]).then(a.cmp(&b)));
    order.into_iter().take(k).map(|i| (i, levels[i])).collect()
}

/// A region box (x0, y0, x1, y1) for a reader: whole pixels, or two decimals for boxes in
/// normalised coordinates.
pub fn box_label(b: &[f32; 4]) -> String {
    let digits = if b.iter().all(|v| v.abs() <= 1.0) {
        2
    } else {
        0
    };
    let [x0, y0, x1, y1] = b.map(|v| format!("{v:.digits$}"));
    format!("({x0}, {y0})–({x1}, {y1})")
}

/// "#3 (12, 40)–(88, 120) 1.00, …": the strongest regions of a map (see `strongest`), or
/// "flat" when it ranks none.
pub fn strongest_regions(relevance: &[f32], boxes: &[[f32; 4]]) -> String {
    let listed: Vec<String> = strongest(relevance, LISTED_REGIONS)
        .into_iter()
        .map(|(i, level)| match boxes.get(i) {
            Some(b) => format!("#{i} {} {level:.2}", box_label(b)),
            None => format!("#{i} {level:.2}"),
        })
        .collect();
    if listed.is_empty() {
        "flat".to_string()
    } else {
        listed.join(", ")
    }
}
