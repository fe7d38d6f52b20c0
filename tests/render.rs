//! The render module: torch-equal bilinear upsampling, min–max and viridis, PNG overlays and
//! comparison sheets, the HTML page and terminal highlighting.
//!
//! `cargo test --release --test render -- --ignored` also writes example outputs (overlay,
//! sheet, page) for a person to look at into `$TMPDIR/render_check`.

use fiedler::render::colormap::{text_color, viridis, STOPS};
use fiedler::render::font::{draw_text, fit, text_width, wrap};
use fiedler::render::html::{page, HtmlMethod, HtmlPair};
use fiedler::render::overlay::{overlay, upsample_bilinear, Layout};
use fiedler::render::sheet::comparison_sheet;
use fiedler::render::terminal::highlight;
use fiedler::render::{minmax, round_u8, strongest, strongest_regions, token_levels};
use image::{Rgb, RgbImage};

/// Elementwise equal within 1e-6 abs + 1e-6 rel (f32 rounding of the interpolation weights).
fn close(a: &[f32], b: &[f32]) {
    assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= 1e-6 + 1e-6 * y.abs(),
            "index {i}: {x} vs {y}"
        );
    }
}

fn strings(words: &[&str]) -> Vec<String> {
    words.iter().map(|s| s.to_string()).collect()
}

/// A mid-grey image, so heat colours dominate the comparison of regions.
fn grey(w: u32, h: u32) -> RgbImage {
    RgbImage::from_pixel(w, h, Rgb([128, 128, 128]))
}

fn mean_rgb(img: &RgbImage, x0: u32, y0: u32, x1: u32, y1: u32) -> [f32; 3] {
    let mut sum = [0f32; 3];
    for y in y0..y1 {
        for x in x0..x1 {
            let p = img.get_pixel(x, y).0;
            (0..3).for_each(|c| sum[c] += f32::from(p[c]));
        }
    }
    let n = ((x1 - x0) * (y1 - y0)) as f32;
    sum.map(|s| s / n)
}

fn non_background(img: &RgbImage, y0: u32, y1: u32) -> usize {
    (y0..y1)
        .flat_map(|y| (0..img.width()).map(move |x| (x, y)))
        .filter(|&(x, y)| img.get_pixel(x, y).0 != [255, 255, 255])
        .count()
}

// ---- upsampling: torch.nn.functional.interpolate(mode="bilinear", align_corners=False) ----

#[test]
fn upsample_2x2_to_4x4_matches_torch_rule() {
    let (a, b, c, d) = (1.0f32, 2.0, 5.0, 11.0);
    let out = upsample_bilinear(&[a, b, c, d], (2, 2), (4, 4));
    // Along each axis the 4 outputs sit at sources 0 (clamped from −0.25), 0.25, 0.75, 1.25→1.
    let row = |l: f32, r: f32| [l, 0.75 * l + 0.25 * r, 0.25 * l + 0.75 * r, r];
    let (top, bottom) = (row(a, b), row(c, d));
    let expected: Vec<f32> = [0.0f32, 0.25, 0.75, 1.0]
        .iter()
        .flat_map(|&t| (0..4).map(move |j| (1.0 - t) * top[j] + t * bottom[j]))
        .collect();
    close(&out, &expected);
    // Spot values written out by hand.
    close(&out[..4], &[1.0, 1.25, 1.75, 2.0]);
    close(&out[4..8], &[2.0, 2.5625, 3.6875, 4.25]);
    close(&out[12..], &[5.0, 6.5, 9.5, 11.0]);
}

#[test]
fn upsample_non_square_and_non_integer_ratio() {
    // 1×3 → 1×5: scale 0.6, sources max(0,(d+0.5)·0.6−0.5) = 0, 0.4, 1.0, 1.6, 2.2→(2,2).
    let out = upsample_bilinear(&[0.0, 10.0, 20.0], (1, 3), (1, 5));
    close(&out, &[0.0, 4.0, 10.0, 16.0, 20.0]);
    // Downsampling follows the same rule: 4 → 2 takes sources 0.5 and 2.5.
    let out = upsample_bilinear(&[0.0, 1.0, 2.0, 3.0], (1, 4), (1, 2));
    close(&out, &[0.5, 2.5]);
}

#[test]
fn upsample_constant_grid_stays_constant_and_bad_shapes_give_zeros() {
    let out = upsample_bilinear(&[0.7; 49], (7, 7), (224, 224));
    assert_eq!(out.len(), 224 * 224);
    assert!(out.iter().all(|&v| (v - 0.7).abs() < 1e-6));
    close(&upsample_bilinear(&[3.0], (1, 1), (2, 3)), &[3.0; 6]);
    close(
        &upsample_bilinear(&[1.0, 2.0, 3.0], (2, 2), (2, 2)),
        &[0.0; 4],
    );
    assert!(upsample_bilinear(&[], (0, 0), (0, 0)).is_empty());
}

// ---- min–max and viridis ----

#[test]
fn minmax_constant_empty_negative_and_non_finite() {
    assert!(minmax(&[]).is_empty());
    close(&minmax(&[0.0; 5]), &[0.0; 5]);
    close(&minmax(&[-3.0; 2]), &[0.0; 2]);
    close(&minmax(&[-2.0, 0.0, 2.0]), &[0.0, 0.5, 1.0]);
    close(&minmax(&[-5.0, -4.0, -1.0]), &[0.0, 0.25, 1.0]);
    // Non-finite values count as 0.
    close(
        &minmax(&[f32::NAN, 1.0, 2.0, f32::INFINITY]),
        &[0.0, 0.5, 1.0, 0.0],
    );
    close(&minmax(&[f32::MIN, f32::MAX]), &[0.0, 1.0]);
}

#[test]
fn viridis_endpoints_stops_and_clamping() {
    assert_eq!(viridis(0.0), [0x44, 0x01, 0x54]);
    assert_eq!(viridis(1.0), [0xfd, 0xe7, 0x25]);
    for (i, &stop) in STOPS.iter().enumerate() {
        assert_eq!(viridis(i as f32 / 8.0), stop, "stop {i}");
    }
    assert_eq!(viridis(-1.0), STOPS[0]);
    assert_eq!(viridis(7.0), STOPS[8]);
    assert_eq!(viridis(f32::NAN), STOPS[0]);
    // Halfway between the first two stops.
    assert_eq!(viridis(1.0 / 16.0), [0x46, 0x15, 0x66]);
    assert_eq!(text_color(STOPS[0]), [255, 255, 255]);
    assert_eq!(text_color(STOPS[8]), [0, 0, 0]);
}

// ---- font ----

#[test]
fn text_width_fit_and_wrap() {
    assert_eq!(text_width("abc", 1), 24);
    assert_eq!(text_width("abc", 2), 48);
    // Non-ASCII is one '?' cell; "…" folds to three dots; Latin-1 keeps its glyph.
    assert_eq!(text_width("猫", 1), 8);
    assert_eq!(fit("a…b", 1, 100), "a...b");
    assert_eq!(fit("score · 23", 1, 100), "score · 23");
    assert_eq!(fit("abcdefghij", 1, 64), "abcde...");
    assert_eq!(fit("abc", 1, 8), ".");
    assert_eq!(fit("a\tb\nc\u{7}", 1, 100), "a b c?");
    assert_eq!(
        wrap("one two three four", 1, 80, 3),
        ["one two", "three four"]
    );
    assert_eq!(
        wrap("one two three four", 1, 64, 2),
        ["one two", "three..."]
    );
    assert_eq!(wrap("abcdefghijkl", 1, 40, 5), ["abcde", "fghij", "kl"]);
    assert!(wrap("", 1, 40, 3).is_empty());
}

#[test]
fn draw_text_marks_pixels_and_clips() {
    let mut img = RgbImage::from_pixel(40, 10, Rgb([255, 255, 255]));
    draw_text(&mut img, 1, 1, "Hi", 1, [0, 0, 0]);
    assert!(non_background(&img, 0, 10) > 10);
    // Off-canvas and partly-off text must not panic.
    draw_text(&mut img, -5, -5, "clip me", 3, [0, 0, 0]);
    draw_text(&mut img, 1000, 1000, "gone", 1, [0, 0, 0]);
}

// ---- overlay ----

/// A 7×7 grid whose right column is hottest and left column coldest.
fn right_hot() -> Vec<f32> {
    (0..49).map(|i| (i % 7) as f32 - 2.0).collect()
}

#[test]
fn overlay_dimensions_heat_and_footer() {
    let img = grey(224, 224);
    let out = overlay(
        &img,
        &right_hot(),
        (7, 7),
        "dsmi-grad · 'a photo of a cat' · score 23.1",
    );
    assert_eq!(out.width(), 224);
    assert!(out.height() > 224);
    // Hottest column (right) is yellow: more red+green, less blue than the coldest (left).
    let hot = mean_rgb(&out, 200, 0, 224, 224);
    let cold = mean_rgb(&out, 0, 0, 24, 224);
    assert!(
        hot[0] + hot[1] > cold[0] + cold[1] + 100.0,
        "{hot:?} vs {cold:?}"
    );
    assert!(hot[2] < cold[2], "{hot:?} vs {cold:?}");
    // The footer holds the title and the legend.
    assert!(non_background(&out, 224, out.height()) > 200);
}

#[test]
fn overlay_degenerate_inputs_do_not_panic() {
    let img = grey(224, 224);
    for (relevance, grid) in [
        (vec![0.0; 49], (7, 7)),
        (vec![1.5], (1, 1)),
        (vec![f32::NAN; 4], (2, 2)),
        (vec![1.0, 2.0, 3.0], (7, 7)),
        (vec![], (0, 0)),
    ] {
        let out = overlay(&img, &relevance, grid, "");
        assert_eq!(out.width(), 224);
        assert!(out.height() > 224);
    }
    // A flat map is labelled on the image: white text on a dark band at the top.
    let flat = overlay(&img, &[0.0; 49], (7, 7), "t");
    assert!((0..20).any(|y| (0..224).any(|x| flat.get_pixel(x, y).0 == [255, 255, 255])));
    // Tiny image: the canvas widens to fit the legend; a long title wraps instead of widening.
    let tiny = overlay(&grey(3, 2), &[1.0, 2.0], (1, 2), &"long title ".repeat(40));
    assert!(tiny.width() >= 3 && tiny.width() < 224);
    let empty = overlay(&RgbImage::new(0, 0), &[1.0], (1, 1), "empty");
    assert!(empty.width() > 0);
}

/// Region maps outline their strongest boxes, and a flat map none: outlines would single out
/// regions that it does not.
#[test]
fn region_maps_outline_only_boxes_that_stand_out() {
    let img = grey(400, 400);
    let boxes = [
        [0.05, 0.05, 0.3, 0.3],
        [0.6, 0.6, 0.9, 0.9],
        [0.05, 0.6, 0.3, 0.9],
    ];
    // Pixels on the box's top edge that the outline colours (the grey is 128 everywhere).
    let edge_marked = |out: &RgbImage, b: [f32; 4]| {
        let (x0, y0, x1) = (
            (b[0] * 400.0) as u32,
            (b[1] * 400.0) as u32,
            (b[2] * 400.0) as u32,
        );
        let inside = *out.get_pixel((x0 + x1) / 2, y0 + 8);
        (x0..=x1)
            .filter(|&x| *out.get_pixel(x, y0) != inside)
            .count()
    };
    let peaked = overlay(&img, &[0.0, 1.0, 0.0], Layout::Boxes(&boxes), "t");
    assert_eq!(peaked.width(), 400);
    assert!(edge_marked(&peaked, boxes[1]) > 100);
    assert_eq!(edge_marked(&peaked, boxes[0]), 0);
    // An outlined box carries its region's number in a tab of the outline's colour.
    let tab = |out: &RgbImage, b: [f32; 4]| {
        let (x0, y0) = ((b[0] * 400.0) as u32, (b[1] * 400.0) as u32);
        let corner = *out.get_pixel(x0, y0);
        (x0..x0 + 10)
            .flat_map(|x| (y0..y0 + 10).map(move |y| (x, y)))
            .filter(|&(x, y)| *out.get_pixel(x, y) == corner)
            .count()
    };
    assert!(tab(&peaked, boxes[1]) > 50, "{}", tab(&peaked, boxes[1]));
    let plain = overlay(&img, &[0.0, 1.0, 0.0], Layout::Grid(1, 3), "t");
    assert!(tab(&plain, boxes[1]) < 50);
    for flat in [[0.0; 3], [0.25; 3]] {
        let out = overlay(&img, &flat, Layout::Boxes(&boxes), "t");
        for b in boxes {
            assert_eq!(edge_marked(&out, b), 0, "{flat:?}: box {b:?} outlined");
        }
    }
}

// ---- comparison sheet ----

fn methods(n: usize) -> Vec<(String, Vec<f32>)> {
    (0..n)
        .map(|k| {
            (
                format!("method-{k}"),
                right_hot().iter().map(|v| v * (k as f32 + 1.0)).collect(),
            )
        })
        .collect()
}

#[test]
fn sheet_grid_layout_and_heat() {
    let img = grey(224, 224);
    let seven = comparison_sheet(&img, &methods(7), (7, 7), "'a photo of a cat' · score 23.1");
    let two = comparison_sheet(&img, &methods(2), (7, 7), "caption");
    let none = comparison_sheet(&img, &[], (7, 7), "caption");
    // 8 panels → 4 columns, 2 rows; 3 panels → 3 columns.
    assert!(seven.width() > 4 * 224 && seven.width() < 5 * 224);
    assert!(two.width() > 3 * 224 && two.width() < 4 * 224);
    assert!(none.width() >= 224 && none.width() < 2 * 224);
    assert!(seven.height() > 2 * 224 && two.height() > 224);
    assert!(seven.height() > two.height());
    // In the second panel of the first row the right side is yellower than the left.
    let row = |img: &RgbImage| {
        let y = (0..img.height())
            .find(|&y| img.get_pixel(img.width() / 2, y).0 != [255, 255, 255] && y > 40)
            .unwrap_or(0);
        y + 100
    };
    let y = row(&two);
    let x0 = (two.width() - (3 * 224 + 2 * 8)) / 2 + 224 + 8;
    let hot = mean_rgb(&two, x0 + 200, y, x0 + 220, y + 20);
    let cold = mean_rgb(&two, x0 + 4, y, x0 + 24, y + 20);
    assert!(
        hot[1] > cold[1] + 60.0 && hot[2] < cold[2],
        "{hot:?} vs {cold:?}"
    );
    // Caption, titles and legend: ink outside the panels.
    assert!(non_background(&seven, 0, 30) > 100);
    assert!(non_background(&seven, seven.height() - 40, seven.height()) > 100);
}

#[test]
fn sheet_degenerate_inputs_do_not_panic() {
    let img = grey(16, 16);
    let panels = vec![
        ("zeros".to_string(), vec![0.0; 1]),
        ("wrong length".to_string(), vec![1.0; 5]),
        (
            "a very long method name that cannot fit".to_string(),
            vec![2.0],
        ),
    ];
    let out = comparison_sheet(&img, &panels, (1, 1), "");
    assert!(out.width() > 16 && out.height() > 16);
}

// ---- html ----

fn pair() -> HtmlPair {
    HtmlPair {
        image_label: "cat & dog.png".into(),
        text: "<script>alert('x')</script> \"quoted\"".into(),
        truncated: false,
        score: 23.125,
        probability: Some(0.875),
        explained: None,
        top_answers: Vec::new(),
        expected: None,
        sheet_file: Some("sheet_0.png".into()),
        methods: vec![HtmlMethod {
            name: "dsmi-grad".into(),
            tokens: strings(&["<|startoftext|>", "a", "<cat>", "'s", "<|endoftext|>"]),
            relevance: vec![0.0, 0.1, 0.9, -0.3, 0.0],
            scored: vec![false, true, true, true, false],
            overlay_file: Some("overlay \"0\".png".into()),
            regions: None,
            warnings: vec!["Fiedler vector of <text> layer 2 is not well defined".into()],
        }],
    }
}

#[test]
fn html_escapes_everything() {
    let html = page("fiedler <explain>", &[], &[pair()]);
    assert!(!html.contains("<script>"));
    assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &quot;quoted&quot;"));
    assert!(html.contains("<title>fiedler &lt;explain&gt;</title>"));
    assert!(html.contains("cat &amp; dog.png"));
    assert!(html.contains("&lt;cat&gt;") && html.contains("&#39;s"));
    assert!(html.contains("src=\"overlay &quot;0&quot;.png\""));
    // A text that reverses what follows it on the page is shown with the escape instead.
    let spoof = HtmlPair {
        text: "cat\u{202e}gnp.exe".into(),
        ..pair()
    };
    let html_spoof = page("t", &[], &[spoof]);
    assert!(html_spoof.contains("cat\\u{202e}gnp.exe") && !html_spoof.contains('\u{202e}'));
    // No script and nothing fetched: the only URLs are the two relative image files.
    assert!(!html.contains("<script") && !html.contains("http"));
}

/// Each pair says what it expected and whether the model gave it; the page counts them and
/// links the wrong ones. Without expected answers it says nothing of them.
#[test]
fn html_marks_answers_against_the_expected_ones() {
    let right = HtmlPair {
        expected: Some(("2".into(), true)),
        ..pair()
    };
    let wrong = HtmlPair {
        expected: Some(("<yes>".into(), false)),
        ..pair()
    };
    let html = page("t", &[], &[right, wrong, pair()]);
    assert!(html.contains("answers as expected: 1 of 2"), "{html}");
    assert!(html.contains("<span class=\"wrong\">wrong:</span> <a href=\"#sample-1\">sample 1</a>"));
    assert!(html.contains("&middot; expected: 2 (right)"));
    assert!(html.contains("<span class=\"wrong\">expected: &lt;yes&gt; (wrong)</span>"));
    let plain = page("t", &[], &[pair()]);
    assert!(!plain.contains("expected"), "{plain}");
    // The score and probability of an answer other than the prediction say whose they are.
    let other = HtmlPair {
        explained: Some("<no>".into()),
        ..pair()
    };
    let html = page("t", &[], &[other]);
    assert!(
        html.contains(
            "<p class=\"score\">explained &lt;no&gt;: score 23.125 &middot; probability 87.5%"
        ),
        "{html}"
    );
    assert!(plain.contains("<p class=\"score\">score 23.125"), "{plain}");
}

#[test]
fn html_one_span_per_token_and_images() {
    let html = page("t", &[], &[pair()]);
    assert_eq!(html.matches("<span class=\"tok\"").count(), 3);
    assert_eq!(html.matches("<span class=\"tok off\"").count(), 2);
    assert!(html.contains("<img class=\"sheet\" src=\"sheet_0.png\""));
    assert!(html.contains("<img class=\"overlay\" src="));
    // Images load as they scroll into view (a page of 200 samples holds 2,200), and each
    // sample has the terminal's number and an anchor.
    assert_eq!(
        html.matches("<img ").count(),
        html.matches(" loading=\"lazy\">").count()
    );
    let two = page("t", &[], &[pair(), pair()]);
    assert!(two.contains("<section class=\"pair\" id=\"sample-1\">"));
    assert!(two.contains("<h2><a href=\"#sample-1\">sample 1</a>: "));
    // The hottest token is yellow with black text, the coldest purple with white; raw values in
    // the tooltip.
    assert!(html.contains(
        "background:#fde725;color:#000000\" title=\"relevance 0.9000 (scaled 1.00)\">&lt;cat&gt;"
    ));
    assert!(html.contains(
        "background:#440154;color:#ffffff\" title=\"relevance -0.3000 (scaled 0.00)\">&#39;s"
    ));
    assert!(html.contains("score 23.125 ") && html.contains("probability 87.5%"));
    assert!(html.contains("linear-gradient(to right,#440154,"));
    // warnings are on the page (escaped); a ranked map is not called flat
    assert!(html.contains("warning: Fiedler vector of &lt;text&gt; layer 2 is not well defined"));
    assert!(!html.contains("flat:"));
    let mut flat = pair();
    flat.methods[0].relevance = vec![0.0, 0.25, 0.25, 0.25, 0.0];
    assert!(page("t", &[], &[flat]).contains("flat: every word has raw relevance 0.2500"));
    // An empty method (no tokens, no relevance) and no pairs still make a page.
    let mut empty = pair();
    empty.methods[0].tokens.clear();
    empty.methods[0].relevance.clear();
    assert!(page("t", &[], &[empty]).contains("<p class=\"tokens\"></p>"));
    assert!(page("t", &[], &[]).ends_with("</html>\n"));
}

// ---- terminal ----

#[test]
fn terminal_plain_is_exact() {
    let tokens = strings(&["<s>", "a", "cat", "sat", "</s>"]);
    let out = highlight(
        &tokens,
        &[9.0, 1.0, 5.0, 3.0, 9.0],
        &[false, true, true, true, false],
        false,
    );
    assert_eq!(out, "<s> a(0.00) cat(1.00) sat(0.50) </s>");
    // The spaces tokens carry (WordPiece's before, CLIP's after a word) are not doubled.
    let spaced = strings(&["[CLS]", " what", "?", "cat ", " [SEP]"]);
    let out = highlight(
        &spaced,
        &[0.0, 1.0, 2.0, 3.0, 0.0],
        &[false, true, true, true, false],
        false,
    );
    assert_eq!(out, "[CLS] what(0.00) ?(0.50) cat(1.00) [SEP]");
    // A token with no text (the first bytes of a character split over tokens) keeps a place.
    let split = strings(&["<s>", "", "日", "</s>"]);
    let out = highlight(
        &split,
        &[0.0, 1.0, 3.0, 0.0],
        &[false, true, true, false],
        false,
    );
    assert_eq!(out, "<s> ·(0.00) 日(1.00) </s>");
    let mut html = pair();
    html.methods[0].tokens = split;
    html.methods[0].relevance = vec![0.0, 1.0, 3.0, 0.0];
    html.methods[0].scored = vec![false, true, true, false];
    assert!(page("t", &[], &[html]).contains("(scaled 0.00)\">·</span>"));
    // Relevance shorter than the tokens: the rest is unscored; all-equal scored values are 0,
    // and the line says the map is flat.
    let out = highlight(&tokens[..3], &[2.0, 2.0], &[true, true, true], false);
    assert_eq!(
        out,
        "<s>(0.00) a(0.00) cat  (flat: every word has raw relevance 2.0000; none ranked)"
    );
    // equal values among unscored tokens do not make a map flat
    let out = highlight(&tokens[..3], &[7.0, 2.0, 2.0], &[true, true, true], false);
    assert!(!out.contains("flat"), "{out}");
    assert_eq!(highlight(&[], &[], &[], false), "");
    assert_eq!(highlight(&[], &[], &[], true), "");
}

#[test]
fn terminal_colour_has_escapes_and_tokens() {
    let tokens = strings(&["<s>", "low", "high", "bad\x1b[2J", "\u{202e}gnp"]);
    let out = highlight(
        &tokens,
        &[0.0, -1.0, 1.0, 0.0, 0.0],
        &[false, true, true, true, true],
        true,
    );
    assert!(out.contains("\x1b[48;2;68;1;84m\x1b[38;2;255;255;255mlow\x1b[0m"));
    assert!(out.contains("\x1b[48;2;253;231;37m\x1b[38;2;0;0;0mhigh\x1b[0m"));
    assert!(out.contains("\x1b[90m<s>\x1b[0m"));
    // A control character inside a token is shown, not obeyed; so is one that reverses the
    // text after it.
    assert!(out.contains("bad?[2J") && !out.contains("\x1b[2J"));
    assert!(out.contains("?gnp") && !out.contains('\u{202e}'));
}

#[test]
fn token_levels_normalise_among_scored_only() {
    let levels = token_levels(4, &[100.0, 1.0, 3.0], &[false, true, true, true]);
    assert_eq!(levels, [None, Some(0.0), Some(1.0), None]);
}

// ---- a real example for a person to look at ----

#[test]
#[ignore = "writes PNGs and HTML to $TMPDIR/render_check for viewing"]
fn write_example_outputs() {
    let dir = std::env::temp_dir().join("render_check");
    std::fs::create_dir_all(&dir).expect("create output dir");
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/images/catdog.png"
    );
    let img = image::open(path).expect("fixture image").to_rgb8();
    let img = image::imageops::resize(&img, 224, 224, image::imageops::FilterType::Triangle);
    // Hot on the right, with a peak at row 2, column 5.
    let grid: Vec<f32> = (0..49)
        .map(|i| {
            let (r, c) = ((i / 7) as f32, (i % 7) as f32);
            c / 6.0 + 2.0 * (-((r - 2.0).powi(2) + (c - 5.0).powi(2)) / 2.0).exp()
        })
        .collect();
    let title = "dsmi-grad · 'a photo of a cat' · score 23.1";
    overlay(&img, &grid, (7, 7), title)
        .save(dir.join("overlay.png"))
        .expect("save");
    // What a person sees when a method gives nothing usable.
    let flat = overlay(&img, &[0.0; 49], (7, 7), "rollout · all-zero relevance");
    flat.save(dir.join("overlay_flat.png")).expect("save");
    let short = overlay(&img, &grid[..40], (7, 7), "chefer · wrong length");
    short.save(dir.join("overlay_mismatch.png")).expect("save");
    let names = [
        "raw-attention",
        "rollout",
        "grad-cam",
        "chefer",
        "transformer-attribution",
        "dsmi",
        "dsmi-grad",
    ];
    let panels: Vec<(String, Vec<f32>)> = names
        .iter()
        .enumerate()
        .map(|(k, name)| {
            let shift = k as f32 * 0.7;
            let values = grid
                .iter()
                .enumerate()
                .map(|(i, v)| v + shift * ((i % 7) as f32 - 3.0).abs() / 3.0 * (k % 2) as f32)
                .collect();
            (name.to_string(), values)
        })
        .collect();
    comparison_sheet(
        &img,
        &panels,
        (7, 7),
        "'a photo of a cat' · score 23.1 · p 0.87",
    )
    .save(dir.join("sheet.png"))
    .expect("save");
    let tokens = strings(&[
        "<|startoftext|>",
        "a</w>",
        "photo</w>",
        "of</w>",
        "a</w>",
        "cat</w>",
        "<|endoftext|>",
    ]);
    let scored = vec![false, true, true, true, true, true, false];
    let methods = names
        .iter()
        .enumerate()
        .map(|(k, name)| HtmlMethod {
            name: name.to_string(),
            tokens: tokens.clone(),
            relevance: (0..7).map(|i| ((i * (k + 3)) % 7) as f32 * 0.01).collect(),
            scored: scored.clone(),
            overlay_file: Some("overlay.png".into()),
            regions: None,
            warnings: Vec::new(),
        })
        .collect();
    let pairs = [HtmlPair {
        image_label: "catdog.png".into(),
        text: "a photo of a cat".into(),
        truncated: false,
        score: 23.1,
        probability: Some(0.87),
        explained: None,
        top_answers: Vec::new(),
        expected: None,
        methods,
        sheet_file: Some("sheet.png".into()),
    }];
    std::fs::write(
        dir.join("page.html"),
        page("fiedler explain · catdog.png", &[], &pairs),
    )
    .expect("write");
    println!(
        "{}",
        highlight(&tokens, &pairs[0].methods[6].relevance, &scored, true)
    );
    println!(
        "{}",
        highlight(&tokens, &pairs[0].methods[6].relevance, &scored, false)
    );
}

/// The regions listed for a map that is not drawn: best first, ties by index, only levels that
/// show above 0.00, boxes in pixels or normalised, and "flat" for a map that ranks nothing.
#[test]
fn strongest_regions_in_words() {
    let relevance = [0.2, 1.0, f32::NAN, 0.6, 0.6, 0.0];
    assert_eq!(strongest(&relevance, 3), vec![(1, 1.0), (3, 0.6), (4, 0.6)]);
    // NaN counts as 0 (the minimum), so it is never listed.
    assert_eq!(strongest(&[1.0, f32::NAN, 0.0], 5), vec![(0, 1.0)]);
    assert_eq!(strongest(&[0.3; 4], 3), vec![]);
    let boxes = [
        [0.0, 0.0, 0.5, 0.5],
        [12.0, 40.4, 88.0, 120.6],
        [0.1, 0.2, 0.3, 0.4],
    ];
    assert_eq!(
        strongest_regions(&[0.0, 2.0, 1.0], &boxes),
        "#1 (12, 40)–(88, 121) 1.00, #2 (0.10, 0.20)–(0.30, 0.40) 0.50"
    );
    assert_eq!(strongest_regions(&[1.0, 1.0], &boxes), "flat");
}

/// The map is blended over the image in grey: two pictures of the same luma (BT.601) give the
/// same overlay whatever their colours, so a yellow object does not look hot.
#[test]
fn overlays_blend_over_the_image_in_grey() {
    use fiedler::render::overlay::blend;
    let colourful = RgbImage::from_fn(16, 16, |x, y| {
        Rgb([(x * 16) as u8, (y * 16) as u8, ((x + y) * 8) as u8])
    });
    let luma = |p: &Rgb<u8>| {
        let [r, g, b] = p.0.map(f32::from);
        (0.299 * r + 0.587 * g + 0.114 * b).round() as u8
    };
    let grey = RgbImage::from_fn(16, 16, |x, y| {
        let y = luma(colourful.get_pixel(x, y));
        Rgb([y, y, y])
    });
    let relevance = [0.1, 0.9, 0.4, 0.0];
    let blended = blend(&colourful, &relevance, Layout::Grid(2, 2));
    assert_eq!(blended, blend(&grey, &relevance, Layout::Grid(2, 2)));
    assert_ne!(
        blended,
        blend(&grey, &[0.9, 0.1, 0.4, 0.0], Layout::Grid(2, 2))
    );
}

/// The pixel rounding gives `x.round() as u8`'s byte for every value a channel can take, and
/// at the edges of f32 rounding.
#[test]
fn round_u8_is_round_as_u8() {
    let edges = [
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        -0.0,
        -0.5,
        -0.7,
        -300.0,
        0.5 - f32::EPSILON / 4.0, // the largest f32 below 0.5: x + 0.5 would round up to 1
        0.5,
        2.5,
        254.5,
        254.99998,
        255.49998,
        255.5,
        256.0,
        1e9,
    ];
    let sweep = (0..=2_600_000).map(|i| i as f32 * 1e-4);
    for x in edges.into_iter().chain(sweep) {
        assert_eq!(round_u8(x), x.round() as u8, "{x}");
    }
}
