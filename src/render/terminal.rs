//! Tokens coloured by relevance for a terminal: 24-bit ANSI backgrounds from viridis, or a
//! plain `token(0.82)` form for pipes, logs and terminals without colour.

use std::fmt::Write;

use super::colormap::{text_color, viridis};
use super::{flat_value, is_bidi_control, token_label, token_levels};

const RESET: &str = "\x1b[0m";
/// Bright black: unscored tokens recede, as they do in the HTML view.
const GREY: &str = "\x1b[90m";

/// Control characters in a token (an escape in user text, say) would drive the terminal
/// instead of being shown, and bidirectional controls reorder what follows; they are printed
/// as '?'.
fn printable(token: &str) -> String {
    token
        .chars()
        .map(|c| match c.is_control() || is_bidi_control(c) {
            true => '?',
            false => c,
        })
        .collect()
}

/// `tokens` joined by spaces. Scored tokens are levelled by their min–max normalised relevance
/// among the scored tokens: with `color`, a viridis background and a readable foreground, reset
/// after each token, unscored tokens grey; without, `token(0.82)` for scored tokens and the
/// bare token otherwise. A token past the end of `relevance` or `scored` counts as unscored.
/// A map whose scored tokens are all equal ends with "(flat: …)", since its levels are all 0.
pub fn highlight(tokens: &[String], relevance: &[f32], scored: &[bool], color: bool) -> String {
    let mut out = String::new();
    let levels = token_levels(tokens.len(), relevance, scored);
    for (i, (token, level)) in tokens.iter().zip(levels).enumerate() {
        if i > 0 {
            out.push(' ');
        }
        // The tokens are spaced here: the spaces they carry (" what", "photo ") would double.
        let token = printable(token_label(match token.trim() {
            "" => token,
            trimmed => trimmed,
        }));
        // Writing into a String cannot fail.
        let _ = match (level, color) {
            (Some(t), true) => {
                let ([br, bg, bb], [fr, fg, fb]) = (viridis(t), text_color(viridis(t)));
                write!(
                    out,
                    "\x1b[48;2;{br};{bg};{bb}m\x1b[38;2;{fr};{fg};{fb}m{token}{RESET}"
                )
            }
            (Some(t), false) => write!(out, "{token}({t:.2})"),
            (None, true) => write!(out, "{GREY}{token}{RESET}"),
            (None, false) => write!(out, "{token}"),
        };
    }
    if let Some(v) = flat_value(tokens.len(), relevance, scored) {
        let _ = write!(
            out,
            "  (flat: every word has raw relevance {v:.4}; none ranked)"
        );
    }
    out
}
