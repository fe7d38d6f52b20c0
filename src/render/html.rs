//! One self-contained HTML page for a set of explained (image, text) pairs: inline CSS, no
//! script, nothing fetched from the network; images are referenced by relative file names so
//! the page works from the folder it was written into.
//!
//! Token colours are the min–max normalised relevance among each method's scored tokens; the raw
//! value is in each token's tooltip, because normalisation hides the scale.

use std::fmt::Write;

use super::colormap::{hex, text_color, viridis, STOPS};
use super::{flat_value, is_bidi_control, token_label, token_levels};

/// One method's explanation of one pair.
#[derive(Debug, Clone, Default)]
pub struct HtmlMethod {
    pub name: String,
    pub tokens: Vec<String>,
    /// Raw relevance per token (any scale).
    pub relevance: Vec<f32>,
    /// Which tokens carry relevance; the others (special tokens, padding) are shown greyed.
    pub scored: Vec<bool>,
    /// The overlay PNG, relative to the page.
    pub overlay_file: Option<String>,
    /// The strongest regions in words (`render::strongest_regions`), for a map of regions
    /// with no image to draw it on.
    pub regions: Option<String>,
    /// Warnings about this map, e.g. a Fiedler vector that is not well defined.
    pub warnings: Vec<String>,
}

/// One explained (image, text) pair.
#[derive(Debug, Clone, Default)]
pub struct HtmlPair {
    pub image_label: String,
    pub text: String,
    /// Whether the text was cut to the model's positions (the tokens are the kept ones).
    pub truncated: bool,
    pub score: f32,
    pub probability: Option<f32>,
    /// What `score` and `probability` are of, where that is not the predicted answer (a VQA
    /// target): "1", "the sum of all logits".
    pub explained: Option<String>,
    /// A VQA model's best answers with their probabilities, best first.
    pub top_answers: Vec<(String, f32)>,
    /// The answer the input expected of a VQA model, and whether the model gave it.
    pub expected: Option<(String, bool)>,
    pub methods: Vec<HtmlMethod>,
    /// The comparison sheet PNG, relative to the page.
    pub sheet_file: Option<String>,
}

/// `text` safe inside HTML elements and quoted attribute values; a bidirectional control,
/// which would reorder what follows it on the page, is shown as its escape (`\u{202e}`).
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if is_bidi_control(c) => out.extend(c.escape_unicode()),
            _ => out.push(c),
        }
    }
    out
}

/// A raw relevance with 4 significant digits, in whichever notation stays short.
fn number(v: f32) -> String {
    let a = v.abs();
    if a == 0.0 || (1e-3..1e4).contains(&a) {
        format!("{v:.4}")
    } else {
        format!("{v:.3e}")
    }
}

const CSS: &str = "\
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px;color:#202020;background:#fff;max-width:1200px}
h1{font-size:1.4em;margin:0 0 12px}
.legend{display:flex;align-items:center;gap:8px;font-size:.9em;color:#555;margin-bottom:20px}
.legend .bar{width:240px;height:14px;border:1px solid #202020}
.pair{border-top:1px solid #ddd;padding:16px 0}
.pair h2{font-size:1.15em;margin:0 0 4px}
.text{font-size:1.05em;margin:4px 0}
.score{color:#555;margin:4px 0 12px}
.sheet{max-width:100%;display:block;margin-bottom:12px}
.methods{display:flex;flex-wrap:wrap;gap:16px}
.method{border:1px solid #e4e4e4;border-radius:6px;padding:8px 12px;max-width:480px}
.method h3{font-size:1em;margin:0 0 6px;font-family:ui-monospace,monospace}
.tokens{line-height:2;margin:0 0 8px}
.tok{padding:2px 4px;border-radius:3px;font-family:ui-monospace,monospace;white-space:pre}
.tok.off{color:#999;background:#f2f2f2}
.note{color:#8a5a00;font-size:.9em;margin:0 0 8px}
.wrong{color:#b00020;font-weight:600}
.regions{font-size:.9em;margin:0 0 8px}
.overlay{display:block}
";

/// How many pairs got the answer they expected, with links to the others; empty when no
/// pair expects one.
fn expected_summary(pairs: &[HtmlPair]) -> String {
    let expecting: Vec<(usize, bool)> = pairs
        .iter()
        .enumerate()
        .filter_map(|(i, p)| p.expected.as_ref().map(|(_, correct)| (i, *correct)))
        .collect();
    if expecting.is_empty() {
        return String::new();
    }
    let right = expecting.iter().filter(|(_, c)| *c).count();
    let mut out = format!(
        "<p class=\"score\">answers as expected: {right} of {}",
        expecting.len()
    );
    let wrong: Vec<String> = expecting
        .iter()
        .filter(|(_, c)| !c)
        .map(|(i, _)| format!("<a href=\"#sample-{i}\">sample {i}</a>"))
        .collect();
    if !wrong.is_empty() {
        let _ = write!(
            out,
            " &middot; <span class=\"wrong\">wrong:</span> {}",
            wrong.join(", ")
        );
    }
    out.push_str("</p>\n");
    out
}

fn legend() -> String {
    let stops: Vec<String> = STOPS.iter().map(|&s| hex(s)).collect();
    format!(
        "<div class=\"legend\">relevance <span>low</span><span class=\"bar\" \
         style=\"background:linear-gradient(to right,{})\"></span><span>high</span>\
         <span>(min-max per method; raw values in the tooltips; grey: not scored)</span></div>\n",
        stops.join(",")
    )
}

fn method(out: &mut String, m: &HtmlMethod) {
    out.push_str("<div class=\"method\">\n");
    let _ = writeln!(out, "<h3>{}</h3>", escape(&m.name));
    out.push_str("<p class=\"tokens\">");
    let levels = token_levels(m.tokens.len(), &m.relevance, &m.scored);
    for (i, (token, level)) in m.tokens.iter().zip(levels).enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let token = escape(token_label(token));
        match level {
            Some(t) => {
                let bg = viridis(t);
                let _ = write!(
                    out,
                    "<span class=\"tok\" style=\"background:{};color:{}\" title=\"relevance {} (scaled {t:.2})\">{token}</span>",
                    hex(bg),
                    hex(text_color(bg)),
                    number(m.relevance[i]),
                );
            }
            None => {
                let _ = write!(
                    out,
                    "<span class=\"tok off\" title=\"not scored\">{token}</span>"
                );
            }
        }
    }
    out.push_str("</p>\n");
    if let Some(v) = flat_value(m.tokens.len(), &m.relevance, &m.scored) {
        let _ = writeln!(
            out,
            "<p class=\"note\">flat: every word has raw relevance {}; none is ranked</p>",
            number(v)
        );
    }
    for w in &m.warnings {
        let _ = writeln!(out, "<p class=\"note\">warning: {}</p>", escape(w));
    }
    if let Some(regions) = &m.regions {
        let _ = writeln!(
            out,
            "<p class=\"regions\">strongest regions: {}</p>",
            escape(regions)
        );
    }
    if let Some(file) = &m.overlay_file {
        let _ = writeln!(
            out,
            "<img class=\"overlay\" src=\"{}\" alt=\"{} heat map\" loading=\"lazy\">",
            escape(file),
            escape(&m.name)
        );
    }
    out.push_str("</div>\n");
}

/// The whole page: `title`, `notes` on the run (where it stopped short), the legend, then per
/// pair its label, text (and whether it was cut), score and probability or top answers, its
/// comparison sheet, and per method the highlighted tokens and the overlay image.
pub fn page(title: &str, notes: &[String], pairs: &[HtmlPair]) -> String {
    let mut out = String::new();
    let title = escape(title);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\n\
         <title>{title}</title>\n<style>\n{CSS}</style>\n</head>\n<body>\n<h1>{title}</h1>\n"
    );
    for note in notes {
        let _ = writeln!(out, "<p class=\"note\">{}</p>", escape(note));
    }
    out.push_str(&legend());
    out.push_str(&expected_summary(pairs));
    for (i, pair) in pairs.iter().enumerate() {
        // Numbered as the terminal numbers the samples, with an anchor (#sample-7) to link.
        let _ = writeln!(out, "<section class=\"pair\" id=\"sample-{i}\">");
        let _ = writeln!(
            out,
            "<h2><a href=\"#sample-{i}\">sample {i}</a>: {}</h2>",
            escape(&pair.image_label)
        );
        let _ = writeln!(out, "<p class=\"text\">{}</p>", escape(&pair.text));
        if pair.truncated {
            out.push_str(
                "<p class=\"note\">truncated: longer than the model's positions, so the model \
                 read only the tokens shown below</p>\n",
            );
        }
        // Shortest form that reads back as the same f32: "23.1", not "23.1000".
        let _ = match &pair.explained {
            Some(e) => write!(
                out,
                "<p class=\"score\">explained {}: score {}",
                escape(e),
                pair.score
            ),
            None => write!(out, "<p class=\"score\">score {}", pair.score),
        };
        if let Some(p) = pair.probability {
            let _ = write!(out, " &middot; probability {:.1}%", 100.0 * p);
        }
        if !pair.top_answers.is_empty() {
            let answers: Vec<String> = pair
                .top_answers
                .iter()
                .map(|(a, p)| format!("{} {:.1}%", escape(a), 100.0 * p))
                .collect();
            let _ = write!(out, " &middot; top answers: {}", answers.join(", "));
        }
        if let Some((answer, correct)) = &pair.expected {
            let _ = match correct {
                true => write!(out, " &middot; expected: {} (right)", escape(answer)),
                false => write!(
                    out,
                    " &middot; <span class=\"wrong\">expected: {} (wrong)</span>",
                    escape(answer)
                ),
            };
        }
        out.push_str("</p>\n");
        if let Some(file) = &pair.sheet_file {
            let _ = writeln!(
                out,
                "<img class=\"sheet\" src=\"{}\" alt=\"comparison of methods\" loading=\"lazy\">",
                escape(file)
            );
        }
        out.push_str("<div class=\"methods\">\n");
        for m in &pair.methods {
            method(&mut out, m);
        }
        out.push_str("</div>\n</section>\n");
    }
    out.push_str("</body>\n</html>\n");
    out
}
