//! The samples as the terminal shows them: each one's label, text and score, its tokens
//! coloured by each method's relevance, and how many answers were as expected; and what the
//! terminal and the page say of a map that ranks nothing or a near-degenerate graph.

use std::io::{IsTerminal, Write};

use super::Sample;
use fiedler::explain::Explanation;
use fiedler::render;

/// The most characters of a text its sample line shows: the whole text is in the JSON and
/// the page, and its tokens follow on the next lines.
const SHOWN_CHARS: usize = 120;

/// A text as its sample line shows it, quoted: tabs and line breaks as \t, \n (raw, they
/// would break the layout), bidirectional controls as \u{202e} (raw, they would reorder it),
/// and a long text cut with "…" and its length.
fn shown_text(text: &str) -> String {
    let escaped = |c: char| match c.is_control() || render::is_bidi_control(c) {
        true => c.escape_default().to_string(),
        false => c.to_string(),
    };
    let count = text.chars().count();
    if count <= SHOWN_CHARS {
        let all: String = text.chars().map(escaped).collect();
        return format!("\"{all}\"");
    }
    let start: String = text.chars().take(SHOWN_CHARS).map(escaped).collect();
    format!("\"{start}…\" ({count} characters)")
}

/// Whether the tokens are coloured: on a terminal, unless `NO_COLOR` is set to anything but
/// the empty string (no-color.org).
fn colour_wanted(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Each sample with its tokens coloured per method, unless `quiet` (a long run's outputs
/// hold them), then how many answers were as expected.
pub(super) fn print_samples(
    out: &mut impl Write,
    samples: &[Sample],
    quiet: bool,
) -> std::io::Result<()> {
    let color = colour_wanted(
        std::io::stdout().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let width = samples
        .iter()
        .flat_map(|s| &s.explanations)
        .map(|e| e.method.name().len())
        .max()
        .unwrap_or(0);
    for (i, s) in samples.iter().enumerate() {
        let warn = || {
            for w in shared_degenerate_warnings(&s.explanations) {
                eprintln!("warning: sample {i} {w}");
            }
        };
        if quiet {
            warn();
            continue;
        }
        writeln!(
            out,
            "sample {i}: {}  {}  {}",
            s.shown_label(),
            shown_text(&s.text),
            s.score_line
        )?;
        for e in &s.explanations {
            let tokens =
                render::terminal::highlight(&s.tokens, &e.text_relevance, &e.text_scored, color);
            writeln!(out, "  {:<width$}  {tokens}", e.method.name())?;
            if let Some(regions) = unseen_regions(s, e) {
                writeln!(out, "  {:<width$}  regions: {regions}", "")?;
            } else if flat_image(e) {
                // The overlay says so too; here it would go unseen beside the tokens.
                writeln!(out, "  {:<width$}  image: {FLAT_IMAGE}", "")?;
            }
        }
        warn();
    }
    if let Some(line) = expected_summary(samples) {
        writeln!(out, "{line}")?;
    }
    Ok(())
}

/// How many wrong samples the summary line names (explanations.json marks every one).
const WRONG_LISTED: usize = 20;

/// "answers as expected: 17 of 19 (wrong: samples 8, 12)", where the inputs expected answers.
fn expected_summary(samples: &[Sample]) -> Option<String> {
    let expecting: Vec<(usize, bool)> = samples
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.expected.as_ref().map(|e| (i, e.correct)))
        .collect();
    if expecting.is_empty() {
        return None;
    }
    let right = expecting.iter().filter(|(_, c)| *c).count();
    let wrong: Vec<String> = expecting
        .iter()
        .filter(|(_, c)| !c)
        .map(|(i, _)| i.to_string())
        .collect();
    let mut line = format!("answers as expected: {right} of {}", expecting.len());
    let listed = wrong.len().min(WRONG_LISTED);
    let more = match wrong.len() - listed {
        0 => String::new(),
        k => format!(" and {k} more"),
    };
    match wrong.len() {
        0 => {}
        1 => line.push_str(&format!(" (wrong: sample {})", wrong[0])),
        _ => line.push_str(&format!(
            " (wrong: samples {}{more})",
            wrong[..listed].join(", ")
        )),
    }
    Some(line)
}

/// The strongest regions of an LXMERT map in words, when there is no image to draw the map
/// on (otherwise the overlay shows them).
pub(super) fn unseen_regions(s: &Sample, e: &Explanation) -> Option<String> {
    match (&s.image, &s.boxes) {
        (None, Some(boxes)) => Some(render::strongest_regions(&e.image_relevance, boxes)),
        _ => None,
    }
}

/// Whether the image map ranks nothing: every value equal.
pub(super) fn flat_image(e: &Explanation) -> bool {
    render::strongest(&e.image_relevance, 1).is_empty()
}

pub(super) const FLAT_IMAGE: &str = "flat map (all values equal)";

/// What the page says of each near-degenerate graph of an explanation.
pub(super) fn degenerate_warnings(e: &Explanation) -> Vec<String> {
    e.degenerate_graphs
        .iter()
        .map(|g| not_well_defined(g))
        .collect()
}

fn not_well_defined(graph: &str) -> String {
    format!("Fiedler vector of {graph} is not well defined")
}

/// What the terminal says of a sample's near-degenerate graphs: each once, after the methods
/// that read it ("dsmi, dsmi-grad: Fiedler vector of text layer 2 (gap 4e-5) is not well
/// defined"). The spectral methods solve the same graphs, so per method the warnings repeated.
fn shared_degenerate_warnings(explanations: &[Explanation]) -> Vec<String> {
    let mut graphs: Vec<(&str, Vec<&str>)> = Vec::new();
    for e in explanations {
        for g in &e.degenerate_graphs {
            match graphs.iter_mut().find(|(seen, _)| seen == g) {
                Some((_, methods)) => methods.push(e.method.name()),
                None => graphs.push((g, vec![e.method.name()])),
            }
        }
    }
    graphs
        .into_iter()
        .map(|(g, methods)| format!("{}: {}", methods.join(", "), not_well_defined(g)))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    use super::*;
    use fiedler::explain::Method;

    #[test]
    fn a_graph_read_by_several_methods_is_warned_of_once() {
        let explanation = |method, graphs: &[&str]| Explanation {
            method,
            score: 0.0,
            image_relevance: Vec::new(),
            image_grid: (0, 0),
            text_relevance: Vec::new(),
            text_scored: Vec::new(),
            degenerate_graphs: graphs.iter().map(|g| (*g).to_owned()).collect(),
        };
        let text = "text layer 2 (gap 4e-5)";
        let image = "image layer 0 (gap 1e-6)";
        let explanations = [
            explanation(Method::Dsmi, &[text]),
            explanation(Method::RawAttn, &[]),
            explanation(Method::DsmiGrad, &[image, text]),
        ];
        assert_eq!(
            shared_degenerate_warnings(&explanations),
            [
                format!("dsmi, dsmi-grad: Fiedler vector of {text} is not well defined"),
                format!("dsmi-grad: Fiedler vector of {image} is not well defined"),
            ]
        );
    }

    #[test]
    fn tokens_are_coloured_on_a_terminal_unless_no_color_is_set() {
        assert!(colour_wanted(true, None));
        assert!(colour_wanted(true, Some(OsStr::new(""))));
        assert!(!colour_wanted(true, Some(OsStr::new("1"))));
        assert!(!colour_wanted(false, None));
    }
}
