//! Ground-truth scores for explanations: how well a relevance map points at the objects a
//! question is about, and how high the question's relevant words rank.
//!
//! Image units are patches (a `rows × cols` grid laid over the whole image, as ViLT's and CLIP's
//! patch grids are when the preprocessed image is a whole number of patches, which holds for
//! every `fiedler synth` scene) or regions (LXMERT). Each unit gets the fraction of it that lies
//! on a relevant object ([`patch_overlap`], [`region_object_overlap`]); the scores are then:
//!
//! - **pointing game**: the unit with the highest relevance overlaps a relevant object; units
//!   tied for the top score the share of them that do ([`pointing_game`]);
//! - **mass in mask**: `Σ max(r, 0) · overlap / Σ max(r, 0)` — the share of positive relevance that
//!   falls on relevant objects (negative relevance is not evidence for anything);
//! - **word rank**: words ranked by relevance (a word's relevance is the largest of its tokens'),
//!   the 1-based rank of the best-ranked relevant word.
//!
//! Questions without relevant objects (e.g. "is there a blue circle?" answered "no") have no
//! image score: the functions return `None` there.

use thiserror::Error;

#[derive(Debug, Error, PartialEq)]
pub enum MetricError {
    #[error("{what}: {found} values for {expected} {units}")]
    Length {
        what: &'static str,
        found: usize,
        expected: usize,
        units: &'static str,
    },
    #[error("relevance value {index} is {value}, not finite")]
    NotFinite { index: usize, value: f32 },
    #[error("the instance mask is {width}×{height} = {expected} pixels but has {found} values")]
    Mask {
        width: usize,
        height: usize,
        expected: usize,
        found: usize,
    },
    #[error("a patch grid needs rows and columns ≥ 1 and at most the image size, got {rows}×{cols} on {width}×{height}")]
    Grid {
        rows: usize,
        cols: usize,
        width: usize,
        height: usize,
    },
    #[error("relevant word index {index} is not below the {words} words")]
    Word { index: usize, words: usize },
}

/// An instance mask (row-major, `0` = background, `k + 1` = object k, as `fiedler synth` writes
/// masks/*.png) and the ids of the objects a question is about.
#[derive(Debug, Clone, Copy)]
pub struct ObjectMask<'a> {
    pub labels: &'a [u8],
    pub width: usize,
    pub height: usize,
    pub relevant: &'a [usize],
}

impl ObjectMask<'_> {
    fn check(&self) -> Result<(), MetricError> {
        let expected = self.width * self.height;
        if self.labels.len() != expected {
            return Err(MetricError::Mask {
                width: self.width,
                height: self.height,
                expected,
                found: self.labels.len(),
            });
        }
        Ok(())
    }

    fn is_relevant(&self, x: usize, y: usize) -> bool {
        let l = self.labels[y * self.width + x] as usize;
        l > 0 && self.relevant.contains(&(l - 1))
    }
}

/// Per patch of a `rows × cols` grid over the whole image (raster order), the fraction of its
/// pixels on a relevant object. Pixel (x, y) lies in patch (⌊y·rows/H⌋, ⌊x·cols/W⌋).
pub fn patch_overlap(mask: &ObjectMask, rows: usize, cols: usize) -> Result<Vec<f32>, MetricError> {
    mask.check()?;
    if rows == 0 || cols == 0 || rows > mask.height || cols > mask.width {
        return Err(MetricError::Grid {
            rows,
            cols,
            width: mask.width,
            height: mask.height,
        });
    }
    let mut hits = vec![0usize; rows * cols];
    let mut totals = vec![0usize; rows * cols];
    for y in 0..mask.height {
        let r = y * rows / mask.height;
        for x in 0..mask.width {
            let p = r * cols + x * cols / mask.width;
            totals[p] += 1;
            hits[p] += usize::from(mask.is_relevant(x, y));
        }
    }
    Ok(hits
        .iter()
        .zip(&totals)
        .map(|(&h, &t)| h as f32 / t as f32)
        .collect())
}

fn check_relevance(relevance: &[f32], overlap: &[f32]) -> Result<(), MetricError> {
    if relevance.len() != overlap.len() {
        return Err(MetricError::Length {
            what: "image relevance",
            found: relevance.len(),
            expected: overlap.len(),
            units: "patches or regions",
        });
    }
    match relevance.iter().position(|v| !v.is_finite()) {
        Some(index) => Err(MetricError::NotFinite {
            index,
            value: relevance[index],
        }),
        None => Ok(()),
    }
}

/// Whether the most relevant unit overlaps a relevant object: 1 (a hit) or 0 (a miss).
/// Where several units tie for the top, the share of them on a relevant object: the chance
/// of a hit with ties broken at random, so a flat map scores chance rather than the fate of
/// whichever unit comes first. `None` when no unit overlaps one (the question has no
/// relevant object in view).
pub fn pointing_game(relevance: &[f32], overlap: &[f32]) -> Result<Option<f64>, MetricError> {
    check_relevance(relevance, overlap)?;
    if overlap.iter().all(|&o| o == 0.0) || relevance.is_empty() {
        return Ok(None);
    }
    let top = relevance.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let (tied, hits) = relevance
        .iter()
        .zip(overlap)
        .filter(|(&r, _)| r == top)
        .fold((0usize, 0usize), |(t, h), (_, &o)| {
            (t + 1, h + usize::from(o > 0.0))
        });
    Ok(Some(hits as f64 / tied as f64))
}

/// Share of the positive relevance on relevant objects; `None` when no unit overlaps one.
/// A map with no positive relevance (a flat map) points nowhere: it scores the mean overlap,
/// what relevance spread evenly gets (chance), rather than dropping out of the mean.
pub fn mass_in_mask(relevance: &[f32], overlap: &[f32]) -> Result<Option<f32>, MetricError> {
    check_relevance(relevance, overlap)?;
    if overlap.iter().all(|&o| o == 0.0) {
        return Ok(None);
    }
    let total: f64 = relevance.iter().map(|&r| r.max(0.0) as f64).sum();
    if total <= 0.0 {
        let mean = overlap.iter().map(|&o| o as f64).sum::<f64>() / overlap.len() as f64;
        return Ok(Some(mean as f32));
    }
    let inside: f64 = relevance
        .iter()
        .zip(overlap)
        .map(|(&r, &o)| r.max(0.0) as f64 * o as f64)
        .sum();
    Ok(Some((inside / total) as f32))
}

/// The 1-based rank of the best-ranked relevant word. `token_words[t]` is the word of token t
/// (None for special tokens such as [CLS]); a word's relevance is its tokens' maximum. Where
/// words tie with the best relevant one, its expected rank with ties broken at random: with g
/// words above, and r relevant among the t tied, g + (t + 1)/(r + 1), so a flat map scores
/// chance rather than the top rank. `None` when there are no relevant words.
pub fn relevant_word_rank(
    token_relevance: &[f32],
    token_words: &[Option<usize>],
    relevant_words: &[usize],
) -> Result<Option<f64>, MetricError> {
    if token_relevance.len() != token_words.len() {
        return Err(MetricError::Length {
            what: "token words",
            found: token_words.len(),
            expected: token_relevance.len(),
            units: "tokens",
        });
    }
    if let Some(index) = token_relevance.iter().position(|v| !v.is_finite()) {
        return Err(MetricError::NotFinite {
            index,
            value: token_relevance[index],
        });
    }
    let words = token_words.iter().flatten().max().map_or(0, |&m| m + 1);
    if let Some(&index) = relevant_words.iter().find(|&&i| i >= words) {
        return Err(MetricError::Word { index, words });
    }
    if relevant_words.is_empty() {
        return Ok(None);
    }
    let mut word_rel = vec![f32::NEG_INFINITY; words];
    for (&r, w) in token_relevance.iter().zip(token_words) {
        if let Some(w) = *w {
            word_rel[w] = word_rel[w].max(r);
        }
    }
    let best = relevant_words
        .iter()
        .map(|&i| word_rel[i])
        .fold(f32::NEG_INFINITY, f32::max);
    let above = word_rel.iter().filter(|&&r| r > best).count();
    let tied = word_rel.iter().filter(|&&r| r == best).count();
    let mut relevant = relevant_words.to_vec();
    relevant.sort_unstable();
    relevant.dedup();
    let relevant_tied = relevant.iter().filter(|&&i| word_rel[i] == best).count();
    Ok(Some(
        above as f64 + (tied as f64 + 1.0) / (relevant_tied as f64 + 1.0),
    ))
}

/// Per region, 1 when it shows a relevant object and 0 otherwise: LXMERT's image units against
/// `region_objects` of `fiedler synth`'s ground truth (the object each region was cut around, or
/// `None` for a background region). A region is its object's box, so it counts as wholly on it.
pub fn region_object_overlap(region_objects: &[Option<usize>], relevant: &[usize]) -> Vec<f32> {
    region_objects
        .iter()
        .map(|o| f32::from(u8::from(o.is_some_and(|id| relevant.contains(&id)))))
        .collect()
}

/// Word index of each token of `text`, as [`relevant_word_rank`] takes it, from the byte range
/// each token comes from (`None`: a special token). Words are `fiedler synth`'s: `text` split
/// on whitespace with "?" dropped, so a token of a "?" belongs to no word and sub-word pieces
/// belong to the word they are cut from, whatever the vocabulary.
pub fn span_words(text: &str, spans: &[Option<(usize, usize)>]) -> Vec<Option<usize>> {
    // Byte ranges of the words, without their "?".
    let mut words: Vec<(usize, usize)> = Vec::new();
    let mut start = None;
    for (i, c) in text.char_indices().chain([(text.len(), ' ')]) {
        match (c.is_whitespace(), start) {
            (false, None) => start = Some(i),
            (true, Some(s)) => {
                let word = text[s..i].trim_end_matches('?');
                if !word.trim_start_matches('?').is_empty() {
                    let lead = word.len() - word.trim_start_matches('?').len();
                    words.push((s + lead, s + word.len()));
                }
                start = None;
            }
            _ => {}
        }
    }
    spans
        .iter()
        .map(|span| {
            let (lo, hi) = (*span)?;
            words.iter().position(|&(s, e)| lo < e && hi > s)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 4×4 image: object 0 in the top-left 2×2, object 1 in the bottom-right pixel.
    fn labels() -> Vec<u8> {
        #[rustfmt::skip]
        let l = vec![
            1, 1, 0, 0,
            1, 1, 0, 0,
            0, 0, 0, 0,
            0, 0, 0, 2,
        ];
        l
    }

    #[test]
    fn patch_overlap_counts_pixels_per_patch() {
        let l = labels();
        let m = ObjectMask {
            labels: &l,
            width: 4,
            height: 4,
            relevant: &[0],
        };
        assert_eq!(patch_overlap(&m, 2, 2).unwrap(), vec![1.0, 0.0, 0.0, 0.0]);
        let m = ObjectMask {
            labels: &l,
            width: 4,
            height: 4,
            relevant: &[1],
        };
        assert_eq!(patch_overlap(&m, 2, 2).unwrap(), vec![0.0, 0.0, 0.0, 0.25]);
        let m = ObjectMask {
            labels: &l,
            width: 4,
            height: 4,
            relevant: &[0, 1],
        };
        assert_eq!(patch_overlap(&m, 1, 1).unwrap(), vec![5.0 / 16.0]);
        assert!(matches!(
            patch_overlap(&m, 0, 2),
            Err(MetricError::Grid { .. })
        ));
        let short = ObjectMask {
            labels: &l[..15],
            ..m
        };
        assert!(matches!(
            patch_overlap(&short, 2, 2),
            Err(MetricError::Mask { .. })
        ));
    }

    /// A wide mask on a grid of other rows and columns than it has: rows run down the image,
    /// columns across, in raster order (a transposed reading would move the object).
    #[test]
    fn patch_overlap_reads_rows_down_and_columns_across() {
        #[rustfmt::skip]
        let l = [
            0, 0, 0, 0, 0, 1,
            0, 0, 0, 0, 1, 1,
        ];
        let m = ObjectMask {
            labels: &l,
            width: 6,
            height: 2,
            relevant: &[0],
        };
        // 1 × 3 patches of 2 × 2 pixels: the object is in the last one, 3 of its 4 pixels.
        assert_eq!(patch_overlap(&m, 1, 3).unwrap(), vec![0.0, 0.0, 0.75]);
        // 2 × 2 patches of 3 × 1 pixels: top right holds 1 of 3, bottom right 2 of 3.
        assert_eq!(
            patch_overlap(&m, 2, 2).unwrap(),
            vec![0.0, 1.0 / 3.0, 0.0, 2.0 / 3.0]
        );
    }

    #[test]
    fn pointing_game_scores_ties_at_the_chance_of_a_hit() {
        let overlap = [0.0, 0.5, 0.0, 1.0];
        assert_eq!(
            pointing_game(&[0.1, 0.9, 0.2, 0.3], &overlap),
            Ok(Some(1.0))
        );
        assert_eq!(
            pointing_game(&[0.9, 0.1, 0.2, 0.3], &overlap),
            Ok(Some(0.0))
        );
        // a tie between a miss and a hit: half a hit, whichever comes first
        assert_eq!(
            pointing_game(&[0.5, 0.1, 0.2, 0.5], &overlap),
            Ok(Some(0.5))
        );
        assert_eq!(
            pointing_game(&[0.2, 0.5, 0.2, 0.5], &overlap),
            Ok(Some(1.0))
        );
        // a flat map: the share of units on the objects, i.e. chance
        assert_eq!(pointing_game(&[0.0; 4], &overlap), Ok(Some(0.5)));
        assert_eq!(pointing_game(&[0.5, 0.1, 0.2, 0.5], &[0.0; 4]), Ok(None));
        assert!(matches!(
            pointing_game(&[0.5, f32::NAN, 0.0, 0.0], &overlap),
            Err(MetricError::NotFinite { index: 1, .. })
        ));
        assert!(matches!(
            pointing_game(&[0.5], &overlap),
            Err(MetricError::Length { .. })
        ));
    }

    #[test]
    fn mass_in_mask_weights_positive_relevance_by_overlap() {
        let overlap = [1.0, 0.5, 0.0, 0.0];
        // positive mass 1 + 1 + 2 = 4; inside 1·1 + 1·0.5 = 1.5; the −3 is ignored
        let m = mass_in_mask(&[1.0, 1.0, 2.0, -3.0], &overlap)
            .unwrap()
            .unwrap();
        assert!((m - 0.375).abs() < 1e-7, "{m}");
        // nothing positive: the mean overlap, as an even spread gets
        assert_eq!(
            mass_in_mask(&[0.0, -1.0, 0.0, 0.0], &overlap),
            Ok(Some(0.375))
        );
        assert_eq!(mass_in_mask(&[1.0, 1.0, 0.0, 0.0], &[0.0; 4]), Ok(None));
    }

    #[test]
    fn word_rank_uses_each_words_best_token() {
        // [CLS] what color is the tri ##angle ? [SEP]: words 0..=4 ("?" is word 4's token here)
        let words = [
            None,
            Some(0),
            Some(1),
            Some(2),
            Some(3),
            Some(4),
            Some(4),
            Some(4),
            None,
        ];
        let rel = [9.0, 0.3, 0.5, 0.1, 0.0, 0.2, 0.8, 0.0, 9.0];
        // word 4 (max 0.8) ranks first, word 1 (0.5) second
        assert_eq!(relevant_word_rank(&rel, &words, &[4]), Ok(Some(1.0)));
        assert_eq!(relevant_word_rank(&rel, &words, &[1]), Ok(Some(2.0)));
        assert_eq!(relevant_word_rank(&rel, &words, &[3, 1]), Ok(Some(2.0)));
        assert_eq!(relevant_word_rank(&rel, &words, &[]), Ok(None));
        // words 0 and 2 tie at 0.3 below words 1 and 4: the relevant word 2 ranks 3 or 4
        let tie = [9.0, 0.3, 0.5, 0.3, 0.0, 0.2, 0.8, 0.0, 9.0];
        assert_eq!(relevant_word_rank(&tie, &words, &[2]), Ok(Some(3.5)));
        // both tied words relevant: the better of two random places among two is rank 3
        assert_eq!(relevant_word_rank(&tie, &words, &[2, 0, 2]), Ok(Some(3.0)));
        // a flat map: (5 + 1) / (1 + 1), the chance rank of one relevant word among five
        assert_eq!(relevant_word_rank(&[0.0; 9], &words, &[3]), Ok(Some(3.0)));
        assert!(matches!(
            relevant_word_rank(&rel, &words, &[5]),
            Err(MetricError::Word { index: 5, words: 5 })
        ));
        assert!(matches!(
            relevant_word_rank(&rel[..3], &words, &[1]),
            Err(MetricError::Length { .. })
        ));
    }

    #[test]
    fn region_object_overlap_marks_regions_of_relevant_objects() {
        let regions = [Some(2), None, Some(0), Some(1), Some(2)];
        assert_eq!(
            region_object_overlap(&regions, &[2]),
            vec![1.0, 0.0, 0.0, 0.0, 1.0]
        );
        assert_eq!(
            region_object_overlap(&regions, &[0, 1]),
            vec![0.0, 0.0, 1.0, 1.0, 0.0]
        );
        assert_eq!(region_object_overlap(&regions, &[]), vec![0.0; 5]);
    }

    #[test]
    fn span_words_follow_the_spaces_and_drop_question_marks() {
        let text = "is there a purple triangle?";
        // [CLS] is there a p ##urple tri ##angle ? [SEP], as byte ranges
        let spans = [
            None,
            Some((0, 2)),
            Some((3, 8)),
            Some((9, 10)),
            Some((11, 12)),
            Some((12, 17)),
            Some((18, 21)),
            Some((21, 26)),
            Some((26, 27)),
            None,
        ];
        assert_eq!(
            span_words(text, &spans),
            vec![
                None,
                Some(0),
                Some(1),
                Some(2),
                Some(3),
                Some(3),
                Some(4),
                Some(4),
                None,
                None
            ]
        );
        // a "?" on its own is not a word
        assert_eq!(
            span_words("what ? now", &[Some((0, 4)), Some((5, 6)), Some((7, 10))]),
            vec![Some(0), None, Some(1)]
        );
    }
}
