//! Viridis, the perceptually uniform colormap of matplotlib: relevance reads the same in
//! lightness as in hue, and it stays ordered in greyscale and for colour-blind readers.

/// The 9 standard viridis stops, from t = 0 (dark purple) to t = 1 (yellow), evenly spaced.
pub const STOPS: [[u8; 3]; 9] = [
    [0x44, 0x01, 0x54],
    [0x48, 0x28, 0x78],
    [0x3e, 0x49, 0x89],
    [0x31, 0x68, 0x8e],
    [0x26, 0x82, 0x8e],
    [0x1f, 0x9e, 0x89],
    [0x35, 0xb7, 0x79],
    [0x6e, 0xce, 0x58],
    [0xfd, 0xe7, 0x25],
];

/// The viridis colour at `t`, linear between the stops; `t` is clamped to [0, 1] and a
/// non-finite `t` gives the low end.
pub fn viridis(t: f32) -> [u8; 3] {
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let x = t * (STOPS.len() - 1) as f32;
    let i = (x as usize).min(STOPS.len() - 2); // x ≥ 0: truncation is its floor
    let f = x - i as f32;
    let (a, b) = (STOPS[i], STOPS[i + 1]);
    std::array::from_fn(|c| {
        super::round_u8(f32::from(a[c]) + f * (f32::from(b[c]) - f32::from(a[c])))
    })
}

/// Black or white, whichever contrasts more with `background` (WCAG relative luminance).
pub fn text_color(background: [u8; 3]) -> [u8; 3] {
    let linear = |c: u8| {
        let c = f32::from(c) / 255.0;
        if c <= 0.040_45 {
            c / 12.92
        } else {
            ((c + 0.055) / 1.055).powf(2.4)
        }
    };
    let [r, g, b] = background.map(linear);
    let luminance = 0.2126 * r + 0.7152 * g + 0.0722 * b;
    // Contrast with black, (L + 0.05)/0.05, beats contrast with white, 1.05/(L + 0.05), above
    // L = √(1.05·0.05) − 0.05 ≈ 0.179.
    if luminance > 0.179 {
        [0, 0, 0]
    } else {
        [255, 255, 255]
    }
}

/// `#rrggbb`, for CSS.
pub fn hex(rgb: [u8; 3]) -> String {
    format!("#{:02x}{:02x}{:02x}", rgb[0], rgb[1], rgb[2])
}
