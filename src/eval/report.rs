//! The benchmark's report, from a results file alone: per method and test the mean accuracy
//! at each step and its AUC, as a markdown table in the seed's layout (method × image+,
//! image−, text+, text−), the same as JSON, and a PNG of accuracy-vs-removed curves per
//! modality; with `fiedler synth` ground truth, per method the pointing game, mass in mask and
//! relevant-word rank beside a chance row.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::eval::chance::CHANCE;
use crate::eval::protocol::{auc, Modality, Order, Test, AUC_FORMULA};
use crate::eval::results::{
    being_written, GroundTruthRecord, PerturbationRecord, Results, RunHeader,
};
use crate::eval::runner::EvalTarget;
use crate::eval::EvalError;
use crate::explain::Method;
use crate::model::{ModelFamily, VqaTarget};
use crate::render::plot::{line_charts, Axes, Panel, Series};

/// The four tests in the seed's column order.
pub const TESTS: [Test; 4] = [
    Test {
        modality: Modality::Image,
        order: Order::MostRelevantFirst,
    },
    Test {
        modality: Modality::Image,
        order: Order::LeastRelevantFirst,
    },
    Test {
        modality: Modality::Text,
        order: Order::MostRelevantFirst,
    },
    Test {
        modality: Modality::Text,
        order: Order::LeastRelevantFirst,
    },
];

/// Running sums of per-step accuracy, per method and test.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    sums: BTreeMap<(String, Test), Sums>,
}

/// One method × test: samples, Σ accuracy per step, and Σ of the products of every two
/// steps' accuracies ([steps × steps]), from which any weighted sum's variance follows.
#[derive(Debug, Clone)]
struct Sums {
    n: usize,
    accuracy: Vec<f64>,
    products: Vec<f64>,
    /// Σ units kept per step.
    kept: Vec<f64>,
}

impl Tally {
    pub fn add(&mut self, r: &PerturbationRecord) {
        let k = r.accuracy.len();
        let sums = self
            .sums
            .entry((r.method.clone(), r.test()))
            .or_insert_with(|| Sums {
                n: 0,
                accuracy: vec![0.0; k],
                products: vec![0.0; k * k],
                kept: vec![0.0; k],
            });
        sums.n += 1;
        sums.kept
            .iter_mut()
            .zip(&r.kept)
            .for_each(|(s, &u)| *s += u as f64);
        sums.accuracy
            .iter_mut()
            .zip(&r.accuracy)
            .for_each(|(s, a)| *s += a);
        for (i, a) in r.accuracy.iter().enumerate() {
            for (j, b) in r.accuracy.iter().enumerate() {
                if let Some(p) = sums.products.get_mut(i * k + j) {
                    *p += a * b;
                }
            }
        }
    }

    /// Samples and mean accuracy (%) per step of one method and test.
    pub fn curve(&self, method: &str, test: Test) -> Option<(usize, Vec<f64>)> {
        self.sums.get(&(method.to_owned(), test)).map(|s| {
            let n = s.n as f64;
            (s.n, s.accuracy.iter().map(|a| 100.0 * a / n).collect())
        })
    }

    /// The mean units kept at each step of one method and test.
    pub fn kept(&self, method: &str, test: Test) -> Option<Vec<f64>> {
        self.sums.get(&(method.to_owned(), test)).map(|s| {
            let n = s.n as f64;
            s.kept.iter().map(|u| u / n).collect()
        })
    }

    /// The standard error of one method and test's AUC over its samples (in the AUC's
    /// points): the AUC is a weighted sum of the steps' accuracies, so the samples' AUCs
    /// vary as wᵀ·Σ·w with Σ their accuracies' covariance. None below two samples.
    pub fn auc_standard_error(&self, method: &str, test: Test, steps: &[f64]) -> Option<f64> {
        let s = self.sums.get(&(method.to_owned(), test))?;
        let k = s.accuracy.len();
        if s.n < 2 || steps.len() != k {
            return None;
        }
        // AUC = Σ_m w_m·acc_m (trapezoid weights), acc in %.
        let mut w = vec![0.0; k];
        for m in 0..k.saturating_sub(1) {
            let half = (steps[m + 1] - steps[m]) / 2.0;
            w[m] += half;
            w[m + 1] += half;
        }
        let n = s.n as f64;
        let mean: f64 = w.iter().zip(&s.accuracy).map(|(w, a)| w * a / n).sum();
        let mut squares = 0.0;
        for i in 0..k {
            for j in 0..k {
                squares += w[i] * w[j] * s.products[i * k + j];
            }
        }
        let variance = ((squares - n * mean * mean) / (n - 1.0)).max(0.0);
        Some(100.0 * (variance / n).sqrt())
    }

    /// Method names in `Method::ALL` order, then any others by name.
    pub fn methods(&self) -> Vec<String> {
        method_order(self.sums.keys().map(|(m, _)| m.as_str()))
    }

    /// One line per method with its running AUCs, for progress displays.
    pub fn summary(&self, steps: &[f64]) -> String {
        let methods = self.methods();
        // Columns line up whatever the names ("transformer-attribution") and AUCs (0 to 100).
        let width = methods.iter().map(|m| m.chars().count()).max().unwrap_or(0);
        methods
            .iter()
            .map(|m| {
                let cells: Vec<String> = TESTS
                    .iter()
                    .filter_map(|&t| {
                        self.curve(m, t)
                            .map(|(_, acc)| format!("{} {:6.2}", t.column(), auc(steps, &acc)))
                    })
                    .collect();
                format!("{m:<width$} {}", cells.join("  "))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// The tests' column headers with the better direction: "image+ ↓", "image− ↑", ….
fn test_headers() -> Vec<String> {
    TESTS
        .iter()
        .map(|t| format!("{} {}", t.column(), t.order.better()))
        .collect()
}

/// Student's t distribution's 97.5% quantile for `df` ≥ 1 degrees of freedom: the bound of a
/// two-sided test at the 5% level. Tabled to df = 30, then the Cornish–Fisher expansion around
/// the normal quantile (within 1e-4 of the exact value from there on).
fn t_975(df: usize) -> f64 {
    const TABLE: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    if let Some(&t) = TABLE.get(df.wrapping_sub(1)) {
        return t;
    }
    let z: f64 = 1.959_963_984_540_054;
    let d = df as f64;
    let (z3, z5) = (z.powi(3), z.powi(5));
    z + (z3 + z) / (4.0 * d) + (5.0 * z5 + 16.0 * z3 + 3.0 * z) / (96.0 * d * d)
}

/// Method names in `Method::ALL` order, then any others by name, each once.
fn method_order<'a>(names: impl Iterator<Item = &'a str>) -> Vec<String> {
    let present: HashSet<&str> = names.collect();
    let mut out: Vec<String> = Method::ALL
        .iter()
        .map(|m| m.name())
        .filter(|m| present.contains(m))
        .map(str::to_owned)
        .collect();
    let mut others: Vec<String> = present
        .iter()
        .filter(|m| !out.iter().any(|o| o == *m))
        .map(|m| (*m).to_owned())
        .collect();
    others.sort();
    out.extend(others);
    out
}

/// One method × test cell.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    pub samples: usize,
    pub auc: f64,
    /// The AUC's standard error over the samples (none below two).
    pub standard_error: Option<f64>,
    /// Mean accuracy in % at each step.
    pub accuracy: Vec<f64>,
    /// Mean units (words, regions, patches) kept at each step.
    pub kept: Vec<f64>,
    /// This AUC against the report's reference (chance unless asked otherwise) over the same
    /// samples; none for the reference itself, or without its records.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub versus_reference: Option<Paired>,
}

/// A method's AUC minus the reference's in one test, paired over the samples both have: the
/// mean of the samples' own differences. A sample's two AUCs share its question and image, so
/// the difference varies less than the two AUCs do.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Paired {
    pub samples: usize,
    /// In the AUC's points; below 0 is better in a most-relevant-first test, above 0 in a
    /// least-relevant-first one.
    pub difference: f64,
    /// The difference's standard error over the samples (none below two).
    pub standard_error: Option<f64>,
}

impl Paired {
    /// Over the samples of `aucs` (sample → AUC) that `reference` (the same) has too; `None`
    /// when they share none.
    fn of(aucs: &BTreeMap<&str, f64>, reference: &BTreeMap<&str, f64>) -> Option<Self> {
        let differences: Vec<f64> = aucs
            .iter()
            .filter_map(|(sample, a)| Some(a - reference.get(sample)?))
            .collect();
        let n = differences.len();
        if n == 0 {
            return None;
        }
        let difference = differences.iter().sum::<f64>() / n as f64;
        let standard_error = (n >= 2).then(|| {
            let squares: f64 = differences.iter().map(|d| (d - difference).powi(2)).sum();
            (squares / (n - 1) as f64 / n as f64).sqrt()
        });
        Some(Self {
            samples: n,
            difference,
            standard_error,
        })
    }

    /// " ✓" where it beats the reference in `order`'s direction by a paired t-test at the 5%
    /// level (two-sided: the difference is more than t₀.₉₇₅ of n − 1 degrees of freedom
    /// standard errors from 0), " ✗" where it falls behind by as much, else nothing.
    fn mark(&self, order: Order) -> &'static str {
        let better = match order {
            Order::MostRelevantFirst => -self.difference,
            Order::LeastRelevantFirst => self.difference,
        };
        let Some(se) = self.standard_error else {
            return "";
        };
        let bound = t_975(self.samples - 1) * se;
        match better {
            b if b > bound => " ✓",
            b if -b > bound => " ✗",
            _ => "",
        }
    }

    /// "−28.12 ± 1.10 ✓": the difference, its standard error and `mark`.
    fn text(&self, order: Order) -> String {
        // A difference that rounds to zero shows as +0.00, not −0.00.
        let difference = match (self.difference * 100.0).round() == 0.0 {
            true => 0.0,
            false => self.difference,
        };
        let d = format!("{difference:+.2}").replace('-', "−");
        match self.standard_error {
            Some(se) => format!("{d} ± {se:.2}{}", self.mark(order)),
            None => d,
        }
    }
}

impl Cell {
    /// "36.00 ± 2.10": the AUC and its standard error.
    fn auc_text(&self) -> String {
        match self.standard_error {
            Some(se) => format!("{:.2} ± {se:.2}", self.auc),
            None => format!("{:.2}", self.auc),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct MethodRow {
    pub method: String,
    /// By column name (image+, image−, text+, text−).
    pub tests: BTreeMap<String, Cell>,
}

/// A mean over the samples where a score exists.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Mean {
    pub mean: f64,
    pub samples: usize,
}

fn mean(values: impl Iterator<Item = f64>) -> Option<Mean> {
    let (sum, samples) = values.fold((0.0, 0), |(s, n), v| (s + v, n + 1));
    (samples > 0).then(|| Mean {
        mean: sum / samples as f64,
        samples,
    })
}

/// One method's (or chance's) ground-truth scores.
#[derive(Debug, Clone, Serialize)]
pub struct GroundTruthRow {
    pub method: String,
    /// Samples scored (some without an image or word score).
    pub samples: usize,
    /// Share of samples whose most relevant unit overlaps a relevant object.
    pub pointing: Option<Mean>,
    /// Mean share of positive relevance on relevant objects.
    pub mass: Option<Mean>,
    /// Mean rank of the best relevant word.
    pub word_rank: Option<Mean>,
}

impl GroundTruthRow {
    fn of(method: String, records: &[&GroundTruthRecord]) -> Self {
        Self {
            method,
            samples: records.len(),
            pointing: mean(records.iter().filter_map(|r| r.pointing)),
            mass: mean(records.iter().filter_map(|r| r.mass).map(f64::from)),
            word_rank: mean(records.iter().filter_map(|r| r.word_rank)),
        }
    }

    /// Chance: each sample once, its chance levels.
    fn chance(records: &[GroundTruthRecord]) -> Self {
        let mut seen = HashSet::new();
        let once: Vec<&GroundTruthRecord> = records
            .iter()
            .filter(|r| seen.insert(r.sample.as_str()))
            .collect();
        Self {
            method: CHANCE.into(),
            samples: once.len(),
            pointing: mean(once.iter().filter_map(|r| r.chance_pointing)),
            mass: mean(once.iter().filter_map(|r| r.chance_mass)),
            word_rank: mean(once.iter().filter_map(|r| r.chance_word_rank)),
        }
    }

    /// Markdown cells: pointing (%), mass (%), word rank.
    pub fn cells(&self) -> [String; 3] {
        let show = |m: Option<Mean>, scale: f64, digits: usize| {
            m.map_or("–".into(), |m| format!("{:.*}", digits, m.mean * scale))
        };
        [
            show(self.pointing, 100.0, 1),
            show(self.mass, 100.0, 1),
            show(self.word_rank, 1.0, 2),
        ]
    }
}

/// CLIP's counterpart of a VQA model's accuracy: how often it scores a sample's true caption
/// above every other caption of its image.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Retrieval {
    pub samples: usize,
    /// % of them.
    pub top1: f64,
}

impl Retrieval {
    /// Over the samples of `records` that say (each sample once).
    fn of(records: &[GroundTruthRecord]) -> Option<Self> {
        let mut seen = HashSet::new();
        let shares: Vec<f64> = records
            .iter()
            .filter_map(|r| Some((r.sample.as_str(), r.retrieved?)))
            .filter(|(sample, _)| seen.insert(*sample))
            .map(|(_, share)| share)
            .collect();
        (!shares.is_empty()).then(|| Self {
            samples: shares.len(),
            top1: 100.0 * shares.iter().sum::<f64>() / shares.len() as f64,
        })
    }

    pub fn sentence(&self) -> String {
        format!(
            "caption retrieval: {:.1}% of {} samples score their true caption above every other caption of their image",
            self.top1, self.samples
        )
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    pub sample: String,
    pub error: String,
}

/// A results file whose last `fiedler eval` has not ended: its numbers are of the samples
/// done so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Unfinished {
    /// Samples that run set out to evaluate.
    pub planned: usize,
    /// Whether it is writing the file now (else it stopped: interrupted, or failed).
    pub running: bool,
}

impl Unfinished {
    pub fn sentence(&self) -> String {
        let planned = self.planned;
        if self.running {
            format!(
                "unfinished: a `fiedler eval` is writing this file now (it set out to evaluate \
                 {planned} samples); the numbers are of the samples done so far"
            )
        } else {
            format!(
                "unfinished: the last `fiedler eval` on this file set out to evaluate {planned} \
                 samples and stopped before it ended; the numbers are of the samples done so \
                 far (the same command resumes it)"
            )
        }
    }
}

/// Everything the report shows.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub family: String,
    pub model: String,
    pub dataset: String,
    pub seed: u64,
    /// The perturbation protocol's steps, AUC and columns; empty (and left out of
    /// report.json) for a model with no answer to perturb (CLIP).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<f64>,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub auc_formula: &'static str,
    /// "+": most-relevant-first (the seed's positive test, lower is better); "−":
    /// least-relevant-first (negative, higher is better).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<String>,
    pub samples: usize,
    /// Of `samples`, those lacking records the others have (a run stopped while writing
    /// them, or one that ran fewer methods or tests).
    pub partial_samples: usize,
    /// Set when the run writing the file has not ended.
    pub unfinished: Option<Unfinished>,
    pub methods: Vec<MethodRow>,
    /// The ground truth scored against (empty: none).
    pub ground_truth_file: Option<String>,
    /// Per method, then chance; empty without ground truth.
    pub ground_truth: Vec<GroundTruthRow>,
    /// What the explanations explain when not the predicted answer ("sum-logits", "seed").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// What `Cell::versus_reference` compares with: chance unless asked otherwise.
    pub reference: String,
    /// CLIP's caption retrieval, where the records say.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caption_retrieval: Option<Retrieval>,
    pub failed_samples: Vec<Failure>,
}

impl Report {
    /// The report of `results`, read from `path` (named in errors), comparing each method
    /// with chance.
    pub fn build(results: &Results, path: &Path) -> Result<Self, EvalError> {
        Self::build_against(results, path, CHANCE)
    }

    /// The same, comparing each method with `reference` (a method of the results, or
    /// chance), sample by sample; no comparison where the results have none of its
    /// records.
    pub fn build_against(
        results: &Results,
        path: &Path,
        reference: &str,
    ) -> Result<Self, EvalError> {
        let header: &RunHeader = results.header.as_ref().ok_or_else(|| EvalError::Results {
            path: path.to_path_buf(),
            reason: "no run header; nothing to report".into(),
        })?;
        if results.perturbations.is_empty()
            && results.ground_truth.is_empty()
            && results.failures.is_empty()
        {
            return Err(EvalError::Results {
                path: path.to_path_buf(),
                reason: "it holds a run header but no sample yet (the run stopped before its first batch was written); nothing to report".into(),
            });
        }
        // CLIP has no answer to perturb: its runs are scored against ground truth only.
        let perturbs = ModelFamily::from_model_type(&header.family) != Some(ModelFamily::Clip);
        let mut tally = Tally::default();
        // Each sample's AUC per method and test, for the comparisons with chance (in sample
        // order, so that the sums and the report's bytes do not vary from run to run).
        let mut aucs: HashMap<(&str, Test), BTreeMap<&str, f64>> = HashMap::new();
        for r in &results.perturbations {
            // `read_results` has checked that every record has the run's steps.
            tally.add(r);
            let percent: Vec<f64> = r.accuracy.iter().map(|a| 100.0 * a).collect();
            aucs.entry((&r.method, r.test()))
                .or_default()
                .insert(&r.sample, auc(&header.steps, &percent));
        }
        let versus_reference = |method: &str, t: Test| {
            let theirs = aucs.get(&(reference, t)).filter(|_| method != reference)?;
            Paired::of(&aucs[&(method, t)], theirs)
        };
        let methods = tally
            .methods()
            .into_iter()
            .map(|method| {
                let tests = TESTS
                    .iter()
                    .filter_map(|&t| {
                        tally.curve(&method, t).map(|(samples, accuracy)| {
                            let cell = Cell {
                                samples,
                                auc: auc(&header.steps, &accuracy),
                                standard_error: tally.auc_standard_error(&method, t, &header.steps),
                                kept: tally.kept(&method, t).unwrap_or_default(),
                                accuracy,
                                versus_reference: versus_reference(&method, t),
                            };
                            (t.column(), cell)
                        })
                    })
                    .collect();
                MethodRow { method, tests }
            })
            .collect();
        let (samples, partial_samples) = sample_counts(results);
        let mut by_method: BTreeMap<&str, Vec<&GroundTruthRecord>> = BTreeMap::new();
        for r in &results.ground_truth {
            by_method.entry(&r.method).or_default().push(r);
        }
        let mut ground_truth: Vec<GroundTruthRow> = method_order(by_method.keys().copied())
            .into_iter()
            .map(|m| {
                let records = &by_method[m.as_str()];
                GroundTruthRow::of(m, records)
            })
            .collect();
        if !results.ground_truth.is_empty() {
            ground_truth.push(GroundTruthRow::chance(&results.ground_truth));
        }
        Ok(Self {
            family: header.family.clone(),
            model: header.model.clone(),
            dataset: header.dataset.clone(),
            seed: header.seed,
            steps: if perturbs {
                header.steps.clone()
            } else {
                Vec::new()
            },
            auc_formula: if perturbs { AUC_FORMULA } else { "" },
            columns: match perturbs {
                true => TESTS.iter().map(|t| t.column()).collect(),
                false => Vec::new(),
            },
            samples,
            partial_samples,
            unfinished: results
                .last_run
                .filter(|run| !run.finished)
                .map(|run| Unfinished {
                    planned: run.samples,
                    running: being_written(path),
                }),
            methods,
            ground_truth_file: header.ground_truth.clone(),
            ground_truth,
            reference: reference.to_owned(),
            target: header.target.clone(),
            caption_retrieval: Retrieval::of(&results.ground_truth),
            failed_samples: results
                .failed_samples()
                .into_iter()
                .map(|f| Failure {
                    sample: f.sample.clone(),
                    error: f.error.clone(),
                })
                .collect(),
        })
    }

    /// Whether any perturbation test ran (CLIP runs are scored against ground truth only).
    pub fn perturbed(&self) -> bool {
        self.methods.iter().any(|r| !r.tests.is_empty())
    }

    /// `--target seed` in words: which of the file's methods explained the sum of the logits
    /// and which the predicted answer (`EvalTarget::Seed`).
    fn seed_targets(&self) -> String {
        let (mut sum, mut predicted) = (Vec::new(), Vec::new());
        for row in self.methods.iter().filter(|r| r.method != CHANCE) {
            let explains_sum = row
                .method
                .parse::<Method>()
                .is_ok_and(|m| EvalTarget::Seed.of(m) == VqaTarget::SumLogits);
            match explains_sum {
                true => sum.push(format!("`{}`", row.method)),
                false => predicted.push(format!("`{}`", row.method)),
            }
        }
        let list = |methods: &[String]| match methods.is_empty() {
            true => "no method of this file".to_owned(),
            false => methods.join(", "),
        };
        format!(
            "the seed's (bug B1): the sum of all logits for {}, the predicted answer's logit for {}; the accuracy is the predicted answer's",
            list(&sum),
            list(&predicted)
        )
    }

    pub fn markdown(&self) -> String {
        let mut md = String::new();
        // CLIP has no answer to perturb: its runs are scored against ground truth only.
        let clip = ModelFamily::from_model_type(&self.family) == Some(ModelFamily::Clip);
        let title = if clip {
            "Ground-truth scores"
        } else {
            "Perturbation benchmark"
        };
        let _ = writeln!(md, "# {title}\n");
        let _ = writeln!(md, "- model: `{}` ({})", self.model, self.family);
        let _ = writeln!(md, "- dataset: `{}`", self.dataset);
        let partial = match self.partial_samples {
            0 => String::new(),
            n => format!(" ({n} of them in part: without records the others have)"),
        };
        let _ = writeln!(
            md,
            "- samples: {} evaluated{partial}, {} failed; seed {}",
            self.samples,
            self.failed_samples.len(),
            self.seed
        );
        if let Some(unfinished) = self.unfinished {
            let _ = writeln!(md, "- **{}**", unfinished.sentence());
        }
        if let Some(retrieval) = self.caption_retrieval {
            let _ = writeln!(md, "- {}", retrieval.sentence());
        }
        if !self.perturbed() {
            let why = if clip {
                "no perturbation tests (a model with no answer to perturb): ground-truth scores only"
            } else {
                "no perturbation results: no sample was evaluated"
            };
            let _ = writeln!(md, "- {why}");
            if !self.ground_truth.is_empty() {
                md.push_str(&self.ground_truth_markdown());
            }
            self.failed_markdown(&mut md);
            return md;
        }
        let target = match self.target.as_deref() {
            Some("sum-logits") => "the sum of all logits, for every method (the seed's DSMI-family target, bug B1); the accuracy is still the predicted answer's".into(),
            Some("seed") => self.seed_targets(),
            _ => "the predicted answer's logit (each sample's explanations explain it)".into(),
        };
        let _ = writeln!(md, "- target: {target}");
        let _ = writeln!(md, "- steps (fraction removed): {:?}", self.steps);
        let _ = writeln!(md, "- {}", self.auc_formula);
        let _ = writeln!(
            md,
            "- `+` = most-relevant-first (the seed's positive test, lower AUC is better ↓); `−` = least-relevant-first (negative, higher is better ↑)"
        );
        if self.methods.iter().any(|r| r.method == CHANCE) {
            let _ = writeln!(
                md,
                "- `chance`: the same tests with each sample's units removed in a random order (one order per sample and modality, drawn from the seed and the sample's id; the `+` and `−` tests take it from either end): the level a method has to beat"
            );
        }
        let _ = writeln!(
            md,
            "- `± e`: the standard error of the AUC over the samples (the spread of their own AUCs / √n); two methods over the same samples differ by less noise than their two errors suggest, since their samples' AUCs move together\n"
        );
        let _ = writeln!(md, "## AUC\n");
        let headers = test_headers();
        let _ = writeln!(md, "| method | {} | samples |", headers.join(" | "));
        let _ = writeln!(md, "|---|{}---:|", "---:|".repeat(TESTS.len()));
        for row in &self.methods {
            let n = row.tests.values().map(|c| c.samples).max().unwrap_or(0);
            let cells: Vec<String> = TESTS
                .iter()
                .map(|t| match row.tests.get(&t.column()) {
                    Some(c) if c.samples == n => c.auc_text(),
                    Some(c) => format!("{} (n={})", c.auc_text(), c.samples),
                    None => "–".into(),
                })
                .collect();
            let _ = writeln!(md, "| {} | {} | {n} |", row.method, cells.join(" | "));
        }
        if let Some(note) = self.uneven_samples_note() {
            let _ = writeln!(md, "\n{note}");
        }
        md.push_str(&self.versus_markdown());
        if !self.ground_truth.is_empty() {
            md.push_str(&self.ground_truth_markdown());
        }
        for t in TESTS {
            let present: Vec<&MethodRow> = self
                .methods
                .iter()
                .filter(|r| r.tests.contains_key(&t.column()))
                .collect();
            if present.is_empty() {
                continue;
            }
            let _ = writeln!(
                md,
                "\n## Accuracy (%) per step: {} ({}, {})\n",
                t.column(),
                t.modality,
                t.order
            );
            let steps: Vec<String> = self.steps.iter().map(|s| format!("{s}")).collect();
            let _ = writeln!(md, "| method | {} |", steps.join(" | "));
            let _ = writeln!(md, "|---|{}", "---:|".repeat(steps.len()));
            let widest = present
                .iter()
                .map(|r| &r.tests[&t.column()])
                .max_by_key(|c| c.samples);
            for row in &present {
                let acc: Vec<String> = row.tests[&t.column()]
                    .accuracy
                    .iter()
                    .map(|a| format!("{a:.2}"))
                    .collect();
                let _ = writeln!(md, "| {} | {} |", row.method, acc.join(" | "));
            }
            // What a step removes in units: small inputs keep none well before s = 1.
            if let Some(cell) = widest {
                let kept: Vec<String> = cell.kept.iter().map(|u| format!("{u:.1}")).collect();
                let _ = writeln!(
                    md,
                    "| *{} kept (mean)* | {} |",
                    unit_name(t.modality, &self.family),
                    kept.join(" | ")
                );
            }
        }
        self.failed_markdown(&mut md);
        md
    }

    /// The section comparing each method with the reference, sample by sample; empty
    /// without the reference's records.
    pub fn versus_markdown(&self) -> String {
        let compared = |r: &&MethodRow| r.tests.values().any(|c| c.versus_reference.is_some());
        if !self.methods.iter().any(|r| compared(&r)) {
            return String::new();
        }
        let reference = &self.reference;
        let mut md = String::new();
        let _ = writeln!(md, "\n## Against {reference}\n");
        let _ = writeln!(
            md,
            "Each method's AUC minus {reference}'s, paired over the samples both ran: the mean of the samples' own differences ± its standard error (a sample's two AUCs share its question, so this is less noisy than the two AUCs' errors suggest); (n=…) where those are fewer than the method's samples. ✓: better than {reference} by a paired t-test at the 5% level (two-sided; below it in a `+` test, above it in a `−` test); ✗: worse by as much.\n"
        );
        let headers = test_headers();
        let _ = writeln!(md, "| method | {} |", headers.join(" | "));
        let _ = writeln!(md, "|---|{}", "---:|".repeat(TESTS.len()));
        for row in self.methods.iter().filter(compared) {
            let cells: Vec<String> = TESTS
                .iter()
                .map(
                    |t| match row.tests.get(&t.column()).map(|c| (c, c.versus_reference)) {
                        Some((c, Some(v))) if v.samples == c.samples => v.text(t.order),
                        Some((_, Some(v))) => format!("{} (n={})", v.text(t.order), v.samples),
                        _ => "–".into(),
                    },
                )
                .collect();
            let _ = writeln!(md, "| {} | {} |", row.method, cells.join(" | "));
        }
        md
    }

    /// A warning when the tests cover different numbers of samples (methods added to a
    /// results file with another --samples): their AUCs are not over the same questions.
    pub fn uneven_samples_note(&self) -> Option<&'static str> {
        let counts: std::collections::BTreeSet<usize> = self
            .methods
            .iter()
            .flat_map(|r| r.tests.values().map(|c| c.samples))
            .collect();
        (counts.len() > 1).then_some(
            "Note: the tests ran on different numbers of samples (see `samples`); AUCs compare \
             only over the same samples (rerun the smaller ones with the larger --samples).",
        )
    }

    /// The failed samples' section, if any failed.
    fn failed_markdown(&self, md: &mut String) {
        if !self.failed_samples.is_empty() {
            let _ = writeln!(md, "\n## Failed samples ({})\n", self.failed_samples.len());
            for f in &self.failed_samples {
                let _ = writeln!(md, "- {}: {}", f.sample, f.error);
            }
        }
    }

    /// One table of every method: ground-truth scores and AUCs side by side ("N/A" where a
    /// number does not exist: no perturbation tests for CLIP, no word rank for captions; "–"
    /// where a test was not run), each AUC marked ✓ or ✗ where it beats the reference (chance
    /// unless asked otherwise) or falls behind it by a paired t-test (`Paired::mark`), when
    /// the comparison covers all of its samples.
    pub fn summary_markdown(&self) -> String {
        let not_run = if self.perturbed() { "–" } else { "N/A" };
        let mut md = String::new();
        let auc_headers: Vec<String> = TESTS
            .iter()
            .map(|t| format!("{} AUC {}", t.column(), t.order.better()))
            .collect();
        let _ = writeln!(
            md,
            "| method | pointing game (%) ↑ | mass in mask (%) ↑ | word rank ↓ | {} |",
            auc_headers.join(" | ")
        );
        let _ = writeln!(md, "|---|{}", "---:|".repeat(3 + TESTS.len()));
        let mut names: Vec<String> = method_order(
            self.methods
                .iter()
                .map(|r| r.method.as_str())
                .chain(self.ground_truth.iter().map(|r| r.method.as_str()))
                .filter(|m| *m != CHANCE),
        );
        if !self.ground_truth.is_empty() || self.methods.iter().any(|r| r.method == CHANCE) {
            names.push(CHANCE.into());
        }
        for name in names {
            let gt = self
                .ground_truth
                .iter()
                .find(|r| r.method == name)
                .map_or(["N/A".into(), "N/A".into(), "N/A".into()], |r| {
                    r.cells().map(|c| if c == "–" { "N/A".into() } else { c })
                });
            let row = self.methods.iter().find(|r| r.method == name);
            let aucs: Vec<String> = TESTS
                .iter()
                .map(|t| {
                    row.and_then(|r| r.tests.get(&t.column()))
                        .map_or(not_run.into(), |c| {
                            let mark = c
                                .versus_reference
                                .filter(|v| v.samples == c.samples)
                                .map_or("", |v| v.mark(t.order));
                            format!("{:.2}{mark}", c.auc)
                        })
                })
                .collect();
            let _ = writeln!(md, "| {name} | {} | {} |", gt.join(" | "), aucs.join(" | "));
        }
        let reference = &self.reference;
        if self.methods.iter().any(|r| r.method == *reference) {
            let _ = writeln!(
                md,
                "\n✓ / ✗: the AUC is better / worse than {reference}'s by a paired t-test over the same samples at the 5% level (report.md, \"Against {reference}\")."
            );
        } else if *reference != CHANCE {
            let _ = writeln!(md, "\n(No `{reference}` records here: no marks.)");
        }
        md
    }

    /// The ground-truth section: a table of method × pointing game, mass in mask, word rank.
    pub fn ground_truth_markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(md, "\n## Ground truth\n");
        if let Some(file) = &self.ground_truth_file {
            let (unit, units) = if self.family == "lxmert" {
                ("region", "regions")
            } else {
                ("patch", "patches")
            };
            // CLIP explains a caption that names every object; the VQA models a question.
            let (about, words) = if self.family == "clip" {
                (
                    "an object the caption names, i.e. any object of the image",
                    "captions mark no relevant words, so CLIP has none",
                )
            } else {
                (
                    "an object the question is about",
                    "mean rank of the best relevant question word (1 = top; expected over ties)",
                )
            };
            // ViLT's patches are scored by the pixels they share with the objects' masks,
            // LXMERT's regions by the object each was cut around.
            let (on, share) = if self.family == "lxmert" {
                (
                    "was cut around",
                    "on the regions cut around them (a map with none positive: chance)",
                )
            } else {
                (
                    "overlaps (by any of its pixels)",
                    "on those objects, each patch's relevance weighted by the fraction of it on them (so a perfect map stays below 100% where objects fill patches in part; a map with none positive: chance)",
                )
            };
            let _ = writeln!(md, "Against `{file}` (`fiedler synth`): pointing game = % of samples whose most relevant {unit} {on} {about} ({units} tied for the top count by the share of them that do); mass = mean % of the positive image relevance {share}; word rank = {words}. Samples without a relevant object in view have no image score. `chance` = the same scores for relevance in random order.\n");
        }
        let _ = writeln!(
            md,
            "| method | pointing game (%) ↑ | mass in mask (%) ↑ | word rank ↓ | samples |"
        );
        let _ = writeln!(md, "|---|---:|---:|---:|---:|");
        for row in &self.ground_truth {
            let [p, m, w] = row.cells();
            // The image scores cover the samples with a relevant object in view.
            let samples = match row.pointing.as_ref().map(|p| p.samples) {
                Some(in_view) if in_view != row.samples => {
                    format!("{} ({in_view} in view)", row.samples)
                }
                _ => row.samples.to_string(),
            };
            let _ = writeln!(md, "| {} | {p} | {m} | {w} | {samples} |", row.method);
        }
        md
    }

    /// Accuracy-vs-removed curves of one modality: a panel per order, a line per method.
    pub fn plot(&self, modality: Modality) -> Option<image::RgbImage> {
        let panels: Vec<Panel> = Order::ALL
            .iter()
            .map(|&order| {
                let t = Test { modality, order };
                Panel {
                    title: format!("{} ({})", order, t.column()),
                    series: self
                        .methods
                        .iter()
                        .filter_map(|row| {
                            row.tests.get(&t.column()).map(|c| Series {
                                name: row.method.clone(),
                                // Each method keeps its colour in every report.
                                color: Method::ALL
                                    .iter()
                                    .position(|m| m.name() == row.method)
                                    .unwrap_or(Method::ALL.len()),
                                points: self
                                    .steps
                                    .iter()
                                    .copied()
                                    .zip(c.accuracy.iter().copied())
                                    .collect(),
                            })
                        })
                        .collect(),
                }
            })
            .filter(|p| !p.series.is_empty())
            .collect();
        if panels.is_empty() {
            return None;
        }
        let panels = name_hidden_series(panels);
        let axes = Axes {
            x_label: format!("fraction of {} removed", unit_name(modality, &self.family)),
            y_label: "VQA accuracy (%)".into(),
            x_ticks: [0.0, 0.25, 0.5, 0.75, 1.0]
                .iter()
                .map(|&x| (x, format!("{}%", (x * 100.0) as u32)))
                .collect(),
            y_ticks: (0..=5)
                .map(|i| (20.0 * f64::from(i), format!("{}", 20 * i)))
                .collect(),
            x_max: 1.0,
            y_max: 100.0,
        };
        let title = format!(
            "{modality} test: VQA accuracy as {} are removed ({} samples)",
            unit_name(modality, &self.family),
            self.samples
        );
        Some(line_charts(&title, &axes, &panels))
    }

    /// Writes the report of the results file `results` into `dir`: report.md, report.json
    /// and curves-{image,text}.png, each name prefixed as [`file_prefix`] says; returns the
    /// paths written.
    pub fn write(&self, dir: &Path, results: &Path) -> Result<Vec<PathBuf>, EvalError> {
        let prefix = file_prefix(results);
        let fail = |path: &Path, e: String| EvalError::Report {
            path: path.to_path_buf(),
            reason: e,
            results: results.to_path_buf(),
        };
        std::fs::create_dir_all(dir).map_err(|e| fail(dir, e.to_string()))?;
        let mut written = Vec::new();
        let md = dir.join(format!("{prefix}report.md"));
        std::fs::write(&md, self.markdown()).map_err(|e| fail(&md, e.to_string()))?;
        written.push(md);
        let json = dir.join(format!("{prefix}report.json"));
        let text = serde_json::to_string_pretty(self).map_err(|e| fail(&json, e.to_string()))?;
        std::fs::write(&json, text + "\n").map_err(|e| fail(&json, e.to_string()))?;
        written.push(json);
        for modality in Modality::ALL {
            if let Some(img) = self.plot(modality) {
                let png = dir.join(format!("{prefix}curves-{modality}.png"));
                img.save(&png).map_err(|e| fail(&png, e.to_string()))?;
                written.push(png);
            }
        }
        Ok(written)
    }
}

/// Each series whose line a later one covers in every panel (the same curve: on ViLT and
/// CLIP chefer-lrp is transformer-attribution) is named "X (= Y)" in the legend, since only
/// its markers' rings would show it.
fn name_hidden_series(mut panels: Vec<Panel>) -> Vec<Panel> {
    let points = |panel: &Panel, name: &str| {
        panel
            .series
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.points.clone())
    };
    // Drawn in order: a series is covered by one after it in the first panel's order.
    let names: Vec<String> = panels[0].series.iter().map(|s| s.name.clone()).collect();
    let covered: Vec<(String, String)> = names
        .iter()
        .enumerate()
        .filter_map(|(i, a)| {
            let by = names[i + 1..].iter().rev().find(|b| {
                panels.iter().all(|p| {
                    let (pa, pb) = (points(p, a), points(p, b));
                    pa.is_some() && pa == pb
                })
            })?;
            Some((a.clone(), by.clone()))
        })
        .collect();
    for (a, by) in covered {
        for series in panels.iter_mut().flat_map(|p| &mut p.series) {
            if series.name == a {
                series.name = format!("{a} (= {by})");
            }
        }
    }
    panels
}

/// What the report's file names start with: nothing for the default results file,
/// results.jsonl (report.md, …), else the file's name and a dot, less a `.jsonl` extension
/// (X.report.md beside X.jsonl, X.json.report.md beside X.json), so that the reports of
/// several results files in one folder do not overwrite each other.
pub fn file_prefix(results: &Path) -> String {
    let Some(name) = results.file_name().map(|n| n.to_string_lossy()) else {
        return String::new();
    };
    if name == DEFAULT_RESULTS {
        return String::new();
    }
    format!("{}.", name.strip_suffix(".jsonl").unwrap_or(&name))
}

/// The results file name whose report keeps the plain names (`fiedler eval`'s default).
pub const DEFAULT_RESULTS: &str = "results.jsonl";

fn unit_name(modality: Modality, family: &str) -> &'static str {
    match (modality, family) {
        (Modality::Text, _) => "words",
        (Modality::Image, "lxmert") => "regions",
        (Modality::Image, _) => "patches",
    }
}

/// The samples with any record, and of them those lacking a record (a method × test, or a
/// method's ground-truth score) that another sample has.
fn sample_counts(results: &Results) -> (usize, usize) {
    let mut records: HashMap<&str, usize> = HashMap::new();
    let mut kinds = HashSet::new();
    for r in &results.perturbations {
        *records.entry(&r.sample).or_default() += 1;
        kinds.insert((r.method.as_str(), Some(r.test())));
    }
    for r in &results.ground_truth {
        *records.entry(&r.sample).or_default() += 1;
        kinds.insert((r.method.as_str(), None));
    }
    let partial = records.values().filter(|&&n| n < kinds.len()).count();
    (records.len(), partial)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A difference that rounds to zero is shown without a sign of its own (a walkthrough
    /// found "−0.00 ± 3.23").
    #[test]
    fn a_difference_that_rounds_to_zero_shows_as_plus_zero() {
        let paired = |difference| Paired {
            samples: 4,
            difference,
            standard_error: Some(3.23),
        };
        let order = Order::MostRelevantFirst;
        assert_eq!(paired(-0.004).text(order), "+0.00 ± 3.23");
        assert_eq!(paired(-0.006).text(order), "−0.01 ± 3.23");
        assert_eq!(paired(0.004).text(order), "+0.00 ± 3.23");
    }

    /// The AUC's standard error from the running sums equals the one of the samples' own
    /// AUCs (sample standard deviation / √n), on uneven steps and VQA's soft accuracies.
    #[test]
    fn auc_standard_error_is_that_of_the_samples_aucs() {
        let steps = [0.0, 0.25, 0.5, 0.8, 1.0];
        let test = TESTS[0];
        let accuracies: [[f64; 5]; 4] = [
            [1.0, 1.0, 0.3, 0.0, 0.0],
            [1.0, 0.6, 0.6, 0.3, 0.0],
            [0.9, 0.9, 0.9, 0.9, 0.3],
            [1.0, 0.0, 0.0, 0.0, 0.0],
        ];
        let mut tally = Tally::default();
        for (i, a) in accuracies.iter().enumerate() {
            tally.add(&PerturbationRecord {
                sample: i.to_string(),
                method: "dsmi".into(),
                modality: test.modality,
                order: test.order,
                kept: vec![0; 5],
                answers: vec![String::new(); 5],
                accuracy: a.to_vec(),
            });
        }
        let aucs: Vec<f64> = accuracies
            .iter()
            .map(|a| auc(&steps, &a.map(|x| 100.0 * x)))
            .collect();
        let n = aucs.len() as f64;
        let mean = aucs.iter().sum::<f64>() / n;
        let variance = aucs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
        let expected = (variance / n).sqrt();
        let se = tally.auc_standard_error("dsmi", test, &steps).unwrap();
        assert!((se - expected).abs() < 1e-9, "{se} vs {expected}");
        let (_, curve) = tally.curve("dsmi", test).unwrap();
        assert!((auc(&steps, &curve) - mean).abs() < 1e-9);
        assert_eq!(tally.auc_standard_error("chefer", test, &steps), None);
    }

    /// The report names which of its methods `--target seed` explained by the sum of the
    /// logits and which by the predicted answer, "no method" where a kind is missing.
    #[test]
    fn the_seed_target_names_each_methods_target() {
        let record = |method: &str| PerturbationRecord {
            sample: "q1".into(),
            method: method.into(),
            modality: TESTS[0].modality,
            order: TESTS[0].order,
            kept: vec![1, 0],
            answers: vec![String::new(); 2],
            accuracy: vec![1.0, 0.0],
        };
        let target = |methods: &[&str]| {
            let results = Results {
                header: Some(RunHeader {
                    family: "lxmert".into(),
                    steps: vec![0.0, 1.0],
                    target: Some("seed".into()),
                    ..crate::eval::results::tests::header(0)
                }),
                perturbations: methods.iter().map(|m| record(m)).collect(),
                ..Results::default()
            };
            let md = Report::build(&results, Path::new("results.jsonl"))
                .unwrap()
                .markdown();
            md.lines()
                .find_map(|l| l.strip_prefix("- target: the seed's (bug B1): "))
                .unwrap_or_else(|| panic!("{md}"))
                .to_owned()
        };
        assert!(
            target(&["dsmi-grad-attn", "chefer", CHANCE]).starts_with(
                "the sum of all logits for `dsmi-grad-attn`, the predicted answer's logit for `chefer`;"
            ),
            "{}",
            target(&["dsmi-grad-attn", "chefer", CHANCE])
        );
        assert!(target(&["chefer"])
            .starts_with("the sum of all logits for no method of this file, the predicted"));
    }

    /// Against chance: the mean and standard error of the samples' own AUC differences, over
    /// the samples both have; ✓ and ✗ by the test's direction, and in the summary only where
    /// the comparison covers all of the method's samples.
    #[test]
    fn methods_are_compared_with_chance_sample_by_sample() {
        let record = |sample: usize, method: &str, test: Test, a1: f64| PerturbationRecord {
            sample: sample.to_string(),
            method: method.into(),
            modality: test.modality,
            order: test.order,
            kept: vec![2, 1, 0],
            answers: vec![String::new(); 3],
            accuracy: vec![1.0, a1, 0.0],
        };
        let (plus, minus) = (TESTS[0], TESTS[1]);
        // Steps 0, .5, 1: AUC = 25 + 50·a1 (accuracies in %). Samples → accuracy at .5.
        let chance = [(0, 1.0), (1, 0.8), (2, 0.8), (3, 0.6), (4, 0.0)];
        let dsmi = [(0, 0.0), (1, 0.2), (2, 0.4), (3, 0.0), (4, 0.0)];
        // Three samples shared with chance, one (5) it lacks.
        let rollout = [(0, 0.0), (1, 0.0), (2, 0.0), (5, 0.0)];
        let mut results = Results {
            header: Some(RunHeader {
                family: "lxmert".into(),
                steps: vec![0.0, 0.5, 1.0],
                ..crate::eval::results::tests::header(0)
            }),
            ..Results::default()
        };
        for (method, rows) in [
            (CHANCE, &chance[..]),
            ("dsmi", &dsmi),
            ("rollout", &rollout),
        ] {
            for &(sample, a1) in rows {
                for t in [plus, minus] {
                    results.perturbations.push(record(sample, method, t, a1));
                }
            }
        }
        let report = Report::build(&results, Path::new("results.jsonl")).unwrap();
        // dsmi − chance: 50·(0 − 1, .2 − .8, .4 − .8, 0 − .6, 0 − 0) = −50, −30, −20, −30, 0.
        let differences = [-50.0, -30.0, -20.0, -30.0, 0.0];
        let mean = differences.iter().sum::<f64>() / 5.0;
        let variance = differences.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / 4.0;
        let se = (variance / 5.0).sqrt();
        let row = |m: &str| report.methods.iter().find(|r| r.method == m).unwrap();
        for t in [plus, minus] {
            let v = row("dsmi").tests[&t.column()].versus_reference.unwrap();
            assert_eq!(v.samples, 5);
            assert!((v.difference - mean).abs() < 1e-9, "{v:?}");
            assert!(
                (v.standard_error.unwrap() - se).abs() < 1e-9,
                "{v:?} vs {se}"
            );
            let v = row("rollout").tests[&t.column()].versus_reference.unwrap();
            assert_eq!((v.samples, v.difference), (3, -130.0 / 3.0), "{v:?}");
            assert!(row(CHANCE).tests[&t.column()].versus_reference.is_none());
        }
        // −26.00 ± 8.12: t = 3.20 beyond t₀.₉₇₅(4) = 2.776, better in +, worse in −.
        let md = report.markdown();
        let line = |md: &str, start: &str| {
            md.lines()
                .find(|l| l.starts_with(start))
                .unwrap()
                .to_owned()
        };
        assert_eq!(
            line(&md, "| dsmi | −26.00"),
            "| dsmi | −26.00 ± 8.12 ✓ | −26.00 ± 8.12 ✗ | – | – |"
        );
        assert!(line(&md, "| rollout | −43.33").contains(" (n=3) |"), "{md}");
        assert!(md.contains("## Against chance"));
        // The summary marks dsmi's AUCs (25 + 50·a1: mean 31), not rollout's, which the
        // comparison covers in part.
        let summary = report.summary_markdown();
        assert!(
            summary.contains("| dsmi | N/A | N/A | N/A | 31.00 ✓ | 31.00 ✗ | – | – |"),
            "{summary}"
        );
        assert!(
            summary.contains("| rollout | N/A | N/A | N/A | 25.00 | 25.00 | – | – |"),
            "{summary}"
        );
        assert!(summary.contains("✓ / ✗: the AUC is better / worse than chance's"));
        // Against dsmi instead, chance is the one 26 behind in + and ahead in −.
        let against = Report::build_against(&results, Path::new("r.jsonl"), "dsmi").unwrap();
        let md = against.markdown();
        assert!(md.contains("## Against dsmi"), "{md}");
        assert_eq!(
            line(&md, "| chance | +26.00"),
            "| chance | +26.00 ± 8.12 ✗ | +26.00 ± 8.12 ✓ | – | – |"
        );
        // Without the reference's records: no comparison, and the summary says so.
        let none = Report::build_against(&results, Path::new("r.jsonl"), "chefer").unwrap();
        let compared = |r: &MethodRow| r.tests.values().any(|c| c.versus_reference.is_some());
        assert!(!none.methods.iter().any(compared));
        assert!(none
            .summary_markdown()
            .contains("(No `chefer` records here: no marks.)"));
    }

    /// Caption retrieval: each sample once (its methods' records repeat it), a tie counted as
    /// its share, samples without it left out.
    #[test]
    fn caption_retrieval_counts_each_sample_once_and_ties_by_share() {
        let record = |sample: &str, method: &str, retrieved| GroundTruthRecord {
            sample: sample.into(),
            method: method.into(),
            pointing: None,
            mass: None,
            word_rank: None,
            words: 3,
            chance_pointing: None,
            chance_mass: None,
            chance_word_rank: None,
            retrieved,
        };
        let mut records = Vec::new();
        for (sample, retrieved) in [
            ("a", Some(1.0)),
            ("b", Some(0.5)),
            ("c", Some(0.0)),
            ("d", None),
        ] {
            for method in ["dsmi", "chefer"] {
                records.push(record(sample, method, retrieved));
            }
        }
        let r = Retrieval::of(&records).unwrap();
        assert_eq!((r.samples, r.top1), (3, 50.0));
        assert_eq!(Retrieval::of(&records[6..]), None);
    }

    /// The t bound is Student's 97.5% quantile (scipy.stats.t.ppf(0.975, df), scipy 1.17.1),
    /// and a mark needs the difference strictly beyond it.
    #[test]
    fn marks_follow_a_paired_t_test_at_five_percent() {
        let scipy = [
            (1, 12.7062),
            (2, 4.3027),
            (3, 3.1824),
            (5, 2.5706),
            (10, 2.2281),
            (29, 2.0452),
            (30, 2.0423),
            (31, 2.0395),
            (40, 2.0211),
            (60, 2.0003),
            (100, 1.984),
            (434, 1.9654),
            (1000, 1.9623),
        ];
        for (df, t) in scipy {
            assert!(
                (t_975(df) - t).abs() < 6e-4,
                "df {df}: {} vs {t}",
                t_975(df)
            );
        }
        let paired = |difference| Paired {
            samples: 11,
            difference,
            standard_error: Some(1.0),
        };
        assert_eq!(paired(-2.229).mark(Order::MostRelevantFirst), " ✓");
        assert_eq!(paired(-2.227).mark(Order::MostRelevantFirst), "");
        assert_eq!(paired(2.229).mark(Order::MostRelevantFirst), " ✗");
        assert_eq!(paired(2.229).mark(Order::LeastRelevantFirst), " ✓");
    }

    /// A sample missing a record the others have (here: one test of one method) is counted
    /// among the samples, and as one in part; the report says so.
    #[test]
    fn samples_without_every_record_are_counted_in_part() {
        let record = |sample: &str, test: Test| PerturbationRecord {
            sample: sample.into(),
            method: "dsmi".into(),
            modality: test.modality,
            order: test.order,
            kept: vec![1, 0],
            answers: vec![String::new(); 2],
            accuracy: vec![1.0, 0.0],
        };
        let mut results = Results {
            header: Some(RunHeader {
                family: "lxmert".into(),
                ..crate::eval::results::tests::header(0)
            }),
            ..Results::default()
        };
        for sample in ["a", "b", "c"] {
            results
                .perturbations
                .extend(TESTS.iter().map(|&t| record(sample, t)));
        }
        assert_eq!(sample_counts(&results), (3, 0));
        results.perturbations.pop();
        assert_eq!(sample_counts(&results), (3, 1));
        let report = Report::build(&results, Path::new("results.jsonl")).unwrap();
        assert!(report.markdown().contains(
            "- samples: 3 evaluated (1 of them in part: without records the others have), 0 failed"
        ));
    }

    /// A method whose curves another drawn after it covers in every panel is named with the
    /// one covering it; one that differs in any panel is not.
    #[test]
    fn methods_hidden_under_the_same_curve_are_named_in_the_legend() {
        let series = |name: &str, ys: [f64; 2]| Series {
            name: name.into(),
            points: vec![(0.0, ys[0]), (1.0, ys[1])],
            color: 0,
        };
        let panels = vec![
            Panel {
                title: "+".into(),
                series: vec![
                    series("transformer-attribution", [80.0, 20.0]),
                    series("rollout", [80.0, 20.0]),
                    series("chefer-lrp", [80.0, 20.0]),
                ],
            },
            Panel {
                title: "-".into(),
                series: vec![
                    series("transformer-attribution", [80.0, 60.0]),
                    series("rollout", [80.0, 40.0]),
                    series("chefer-lrp", [80.0, 60.0]),
                ],
            },
        ];
        let named: Vec<String> = name_hidden_series(panels)[1]
            .series
            .iter()
            .map(|s| s.name.clone())
            .collect();
        assert_eq!(
            named,
            [
                "transformer-attribution (= chefer-lrp)",
                "rollout",
                "chefer-lrp"
            ]
        );
    }

    /// Reports of results files in one folder do not share names; results.jsonl's keep the
    /// plain ones.
    #[test]
    fn report_files_are_named_after_their_results_file() {
        assert_eq!(file_prefix(Path::new("out/results.jsonl")), "");
        assert_eq!(file_prefix(Path::new("results.jsonl")), "");
        assert_eq!(file_prefix(Path::new("out/vilt.jsonl")), "vilt.");
        assert_eq!(file_prefix(Path::new("out/run.2.jsonl")), "run.2.");
        assert_eq!(file_prefix(Path::new("out/results")), "results.");
        // other extensions are kept, so that r.json and r.txt do not share r.jsonl's report
        assert_eq!(file_prefix(Path::new("out/r.json")), "r.json.");
        assert_eq!(file_prefix(Path::new("out/r.txt")), "r.txt.");
        assert_eq!(file_prefix(Path::new("out/r.JSONL")), "r.JSONL.");
    }
}
