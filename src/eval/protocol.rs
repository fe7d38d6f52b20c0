//! The perturbation protocol of spec §E, on one sample's relevance: which tokens, regions or
//! patches each step keeps, and the area under the accuracy curve.
//!
//! Relevance is min–max normalised first (in f32, as torch does), then each step keeps the
//! top k = int((1 − step)·n) units by relevance, computed in f64 exactly like Python's
//! `int((1 - step) * n)` (so n = 5 keeps 0 words at step .8, because (1 − .8)·5 = 0.999…).
//! Ties keep the lower index first (torch.topk leaves them platform-dependent, §Open 7).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::explain::matrix::min_max;

/// The seed's steps: fractions of the tokens (or regions, patches) removed.
pub const DEFAULT_STEPS: [f64; 9] = [0.0, 0.25, 0.5, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0];

/// What a test removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Modality {
    /// LXMERT regions or ViLT patches; the text is unchanged.
    Image,
    /// Word tokens ([CLS] and [SEP] always stay); the image is unchanged.
    Text,
}

/// Which tokens go first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Order {
    /// The seed's "positive" test: a good explanation makes accuracy fall fast (lower AUC is
    /// better).
    MostRelevantFirst,
    /// The seed's "negative" test: a good explanation keeps accuracy up (higher AUC is
    /// better).
    LeastRelevantFirst,
}

impl Modality {
    pub const ALL: [Modality; 2] = [Modality::Image, Modality::Text];

    pub fn name(self) -> &'static str {
        match self {
            Modality::Image => "image",
            Modality::Text => "text",
        }
    }
}

impl Order {
    pub const ALL: [Order; 2] = [Order::MostRelevantFirst, Order::LeastRelevantFirst];

    pub fn name(self) -> &'static str {
        match self {
            Order::MostRelevantFirst => "most-relevant-first",
            Order::LeastRelevantFirst => "least-relevant-first",
        }
    }

    /// The seed's sign: "+" for the positive test, "−" for the negative one.
    pub fn sign(self) -> &'static str {
        match self {
            Order::MostRelevantFirst => "+",
            Order::LeastRelevantFirst => "−",
        }
    }

    /// Which AUC is better, as an arrow for table headers.
    pub fn better(self) -> &'static str {
        match self {
            Order::MostRelevantFirst => "↓",
            Order::LeastRelevantFirst => "↑",
        }
    }
}

macro_rules! named_enum {
    ($t:ty, $what:literal) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }

        impl FromStr for $t {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, String> {
                <$t>::ALL
                    .into_iter()
                    .find(|v| v.name() == s)
                    .ok_or_else(|| {
                        let valid: Vec<&str> = <$t>::ALL.iter().map(|v| v.name()).collect();
                        format!("unknown {} {s:?}; valid: {}", $what, valid.join(", "))
                    })
            }
        }
    };
}
named_enum!(Modality, "modality");
named_enum!(Order, "order");

/// One test of the benchmark: a modality and a removal order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Test {
    pub modality: Modality,
    pub order: Order,
}

impl Test {
    /// The seed's column name: image+, image−, text+, text−.
    pub fn column(self) -> String {
        format!("{}{}", self.modality, self.order.sign())
    }
}

/// How many of `n` units step `step` keeps: Python's `int((1 - step) * n)`.
pub fn keep_count(step: f64, n: usize) -> usize {
    ((1.0 - step) * n as f64) as usize
}

/// The most steps a curve may have: far more than any protocol's (the seed's has 9), few
/// enough that a report's per-step sums stay small.
pub const MAX_STEPS: usize = 1000;

/// Checks user steps: at least two and at most `MAX_STEPS`, ascending, within [0, 1].
pub fn check_steps(steps: &[f64]) -> Result<(), String> {
    if steps.len() < 2 {
        return Err(format!("need at least two steps, got {steps:?}"));
    }
    if steps.len() > MAX_STEPS {
        return Err(format!(
            "{} steps, more than the {MAX_STEPS} a curve can take (the report's variances hold \
             steps² sums per method and test)",
            steps.len()
        ));
    }
    if let Some(s) = steps.iter().find(|s| !(0.0..=1.0).contains(*s)) {
        return Err(format!("step {s} is outside [0, 1]"));
    }
    if steps[0] != 0.0 {
        return Err(format!(
            "the first step must be 0, the unperturbed input the AUC starts from; got {steps:?}"
        ));
    }
    if steps.windows(2).any(|w| w[1] <= w[0]) {
        return Err(format!("steps must increase: {steps:?}"));
    }
    Ok(())
}

/// `(x − min)/(max − min)` in f32, as the reference normalises its cams. A constant vector,
/// where the reference divides 0 by 0, gives all zeros (so ties keep index order).
pub fn normalise(values: &[f32]) -> Vec<f32> {
    let mut normalised = values.to_vec();
    min_max(&mut normalised);
    normalised
}

/// The indices of the `k` highest scores, highest first; ties keep the lower index first.
fn top_k(scores: &[f32], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&i, &j| scores[j].total_cmp(&scores[i]));
    order.truncate(k);
    order
}

/// The reference keeps `topk(cam)` for the negative test and `topk(−cam)` for the positive.
fn signed(normalised: &[f32], order: Order) -> Vec<f32> {
    match order {
        Order::MostRelevantFirst => normalised.iter().map(|v| -v).collect(),
        Order::LeastRelevantFirst => normalised.to_vec(),
    }
}

/// The image units (regions, patches) step `step` keeps, in top-k order, from the relevance
/// of every unit.
pub fn kept_image(relevance: &[f32], order: Order, step: f64) -> Vec<usize> {
    let k = keep_count(step, relevance.len());
    top_k(&signed(&normalise(relevance), order), k)
}

/// The token positions step `step` keeps, ascending, from the relevance of every real token
/// ([CLS] … [SEP]): the top k of the n = T − 2 words, plus [CLS] and [SEP]. The normalisation
/// includes the special tokens, as the reference's does.
pub fn kept_text(relevance: &[f32], order: Order, step: f64) -> Vec<usize> {
    let t = relevance.len();
    if t < 2 {
        return (0..t).collect();
    }
    let scores = signed(&normalise(relevance), order);
    let words = &scores[1..t - 1];
    let mut kept: Vec<usize> = top_k(words, keep_count(step, words.len()))
        .into_iter()
        .map(|i| i + 1)
        .chain([0, t - 1])
        .collect();
    kept.sort_unstable();
    kept
}

/// Area under the accuracy curve by the trapezoid rule over `steps` (x = fraction removed,
/// y = accuracy in %): Σ_m (x_{m+1} − x_m)·(y_m + y_{m+1})/2, i.e. `np.trapz(y, x)`.
pub fn auc(steps: &[f64], accuracy: &[f64]) -> f64 {
    steps
        .windows(2)
        .zip(accuracy.windows(2))
        .map(|(x, y)| (x[1] - x[0]) * (y[0] + y[1]) / 2.0)
        .sum()
}

/// The AUC formula, as the report prints it.
pub const AUC_FORMULA: &str = "AUC = Σ_m (s_{m+1} − s_m)·(acc_m + acc_{m+1})/2 over the steps s (fraction removed, the unperturbed s = 0 included), acc = mean VQA accuracy in % at each step (np.trapz(acc, s))";

#[cfg(test)]
mod tests {
    use super::*;

    /// Python: `[int((1 - s) * n) for s in [0, .25, .5, .75, .8, .85, .9, .95, 1]]`.
    const PYTHON_K: [(usize, [usize; 9]); 8] = [
        (5, [5, 3, 2, 1, 0, 0, 0, 0, 0]),
        (36, [36, 27, 18, 9, 7, 5, 3, 1, 0]),
        (3, [3, 2, 1, 0, 0, 0, 0, 0, 0]),
        (7, [7, 5, 3, 1, 1, 1, 0, 0, 0]),
        (10, [10, 7, 5, 2, 1, 1, 0, 0, 0]),
        (13, [13, 9, 6, 3, 2, 1, 1, 0, 0]),
        (20, [20, 15, 10, 5, 3, 3, 1, 1, 0]),
        (100, [100, 75, 50, 25, 19, 15, 9, 5, 0]),
    ];

    #[test]
    fn keep_counts_match_python_truncation() {
        for (n, expected) in PYTHON_K {
            let k: Vec<usize> = DEFAULT_STEPS.iter().map(|&s| keep_count(s, n)).collect();
            assert_eq!(k, expected, "n = {n}");
        }
        // The truncation cases themselves: (1 − .8)·5 = 0.9999…, (1 − .8)·10 = 1.9999….
        assert_eq!(keep_count(0.8, 5), 0);
        assert_eq!(keep_count(0.8, 10), 1);
    }

    #[test]
    fn text_keeps_special_tokens_and_original_order() {
        // [CLS] w1..w5 [SEP]; word relevance 0.1, 0.9, 0.5, 0.7, 0.3.
        let rel = [0.0, 0.1, 0.9, 0.5, 0.7, 0.3, 0.0];
        // Least relevant first removes 0.1 then 0.3: step .5 keeps k = 2 words (0.9, 0.7).
        assert_eq!(
            kept_text(&rel, Order::LeastRelevantFirst, 0.5),
            vec![0, 2, 4, 6]
        );
        assert_eq!(
            kept_text(&rel, Order::MostRelevantFirst, 0.5),
            vec![0, 1, 5, 6]
        );
        assert_eq!(
            kept_text(&rel, Order::MostRelevantFirst, 0.25),
            vec![0, 1, 3, 5, 6]
        );
        // Step .8: k = int(0.999…) = 0, only [CLS] and [SEP].
        assert_eq!(kept_text(&rel, Order::LeastRelevantFirst, 0.8), vec![0, 6]);
        assert_eq!(
            kept_text(&rel, Order::LeastRelevantFirst, 0.0),
            (0..7).collect::<Vec<_>>()
        );
        // Special tokens stay even when they carry the highest relevance.
        let loud = [9.0, 0.2, 0.1, 9.0];
        assert_eq!(
            kept_text(&loud, Order::LeastRelevantFirst, 0.5),
            vec![0, 1, 3]
        );
    }

    #[test]
    fn image_keeps_top_k_order() {
        let rel = [0.3, 0.8, 0.1, 0.5, 0.9];
        assert_eq!(
            kept_image(&rel, Order::LeastRelevantFirst, 0.25),
            vec![4, 1, 3]
        );
        assert_eq!(
            kept_image(&rel, Order::MostRelevantFirst, 0.25),
            vec![2, 0, 3]
        );
        assert_eq!(
            kept_image(&rel, Order::MostRelevantFirst, 1.0),
            Vec::<usize>::new()
        );
        // Ties (a constant map normalises to zeros) keep index order.
        assert_eq!(
            kept_image(&[2.0; 4], Order::MostRelevantFirst, 0.5),
            vec![0, 1]
        );
    }

    #[test]
    fn normalisation_is_torch_minmax() {
        assert_eq!(normalise(&[2.0, 4.0, 3.0]), vec![0.0, 1.0, 0.5]);
        assert_eq!(normalise(&[1.5, 1.5]), vec![0.0, 0.0]);
    }

    #[test]
    fn auc_of_known_curves() {
        let s = DEFAULT_STEPS;
        // Constant accuracy: the area is that constant (the weights sum to 1).
        assert!((auc(&s, &[70.0; 9]) - 70.0).abs() < 1e-12);
        // The spec's weights w = [.125, .25, .25, .15, .05, .05, .05, .05, .025].
        let w = [0.125, 0.25, 0.25, 0.15, 0.05, 0.05, 0.05, 0.05, 0.025];
        let y = [80.0, 60.0, 50.0, 40.0, 30.0, 25.0, 20.0, 10.0, 5.0];
        let expected: f64 = w.iter().zip(&y).map(|(w, y)| w * y).sum();
        assert!((auc(&s, &y) - expected).abs() < 1e-9);
        // A straight line from 100 to 0 encloses half the square.
        let line: Vec<f64> = s.iter().map(|x| 100.0 * (1.0 - x)).collect();
        assert!((auc(&s, &line) - 50.0).abs() < 1e-9);
    }

    #[test]
    fn steps_are_checked() {
        assert!(check_steps(&DEFAULT_STEPS).is_ok());
        assert!(check_steps(&[0.0]).is_err());
        assert!(check_steps(&[0.0, 0.5, 0.5]).is_err());
        assert!(check_steps(&[0.0, 1.5]).is_err());
        assert!(check_steps(&[0.5, 1.0]).is_err(), "no unperturbed step");
        assert!(check_steps(&[0.0, 0.5]).is_ok());
        let fine: Vec<f64> = (0..=MAX_STEPS)
            .map(|i| i as f64 / MAX_STEPS as f64)
            .collect();
        assert!(check_steps(&fine[1..]).is_err(), "no unperturbed step");
        assert!(check_steps(&fine[..MAX_STEPS]).is_ok());
        let err = check_steps(&fine).unwrap_err();
        assert!(err.starts_with("1001 steps, more than the 1000"), "{err}");
    }

    #[test]
    fn names_parse_back() {
        for o in Order::ALL {
            assert_eq!(o.name().parse::<Order>().unwrap(), o);
        }
        assert!("true".parse::<Order>().is_err());
        assert_eq!("image".parse::<Modality>().unwrap(), Modality::Image);
    }
}
