//! Explanation methods over a trace, written once for every model family (spec §C, §H).
//!
//! A method reads one sample of one tower ([`view::SampleView`]) and produces relevance over
//! chosen tokens: the attention family builds a token×token matrix and reads one row
//! (`attention`), the spectral family scores the tokens of a graph directly (`spectral`).
//! Family modules (`clip`, `vilt`, `lxmert`) say which row and which tokens.

pub mod attention;
pub mod clip;
pub mod lxmert;
pub mod matrix;
pub mod readout;
pub mod spectral;
pub mod view;
pub mod vilt;

use std::fmt;
use std::str::FromStr;

use serde::{Serialize, Serializer};
use thiserror::Error;

use crate::backend::{HeadMean, RelevanceProduct};
use crate::linalg::{GraphOptions, SpectralError};
use crate::trace::{Layers, Reads, RowSpec, TowerTrace};

/// Every method fiedler implements, by its CLI name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// §C.4: head-averaged attention of the last layer.
    RawAttn,
    /// §C.6: attention rollout (Abnar & Zuidema), row-normalised (A + I) products.
    Rollout,
    /// §C.5: attention Grad-CAM on the last layer.
    GradCam,
    /// §C.1: Chefer et al.'s relevance maps (ICCV'21), gradient-weighted attention, no LRP.
    Chefer,
    /// §C.7: the Fiedler vector of the last layer's token graph (class-agnostic).
    Dsmi,
    /// §C.8: Σ_l mean_h(∇A⁺)·Fiedler_l.
    DsmiGrad,
    /// §C.9: Σ_l mean_h((∇A⊙A)⁺)·Fiedler_l.
    DsmiGradAttn,
    /// §C.2: Transformer Attribution (Chefer et al., CVPR'21), R = Π_l (I + Ā_l) with
    /// Ā_l = mean_h((∇A_l ⊙ R_A,l)⁺) and R_A the LRP relevance at the attention maps.
    TransformerAttribution,
    /// §C.3: partial LRP, the head-averaged LRP relevance of the last layer, min–max scaled.
    PartialLrp,
    /// §C.1 with LRP relevance in place of A (`rm_with_lrp`, `chefer --lrp`).
    CheferLrp,
}

impl Method {
    pub const ALL: [Method; 10] = [
        Method::RawAttn,
        Method::Rollout,
        Method::GradCam,
        Method::Chefer,
        Method::Dsmi,
        Method::DsmiGrad,
        Method::DsmiGradAttn,
        Method::TransformerAttribution,
        Method::PartialLrp,
        Method::CheferLrp,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Method::RawAttn => "raw-attn",
            Method::Rollout => "rollout",
            Method::GradCam => "grad-cam",
            Method::Chefer => "chefer",
            Method::Dsmi => "dsmi",
            Method::DsmiGrad => "dsmi-grad",
            Method::DsmiGradAttn => "dsmi-grad-attn",
            Method::TransformerAttribution => "transformer-attribution",
            Method::PartialLrp => "partial-lrp",
            Method::CheferLrp => "chefer-lrp",
        }
    }

    /// Whether the method reads ∂target/∂A (so the trace needs a backward pass).
    pub fn needs_gradients(self) -> bool {
        matches!(
            self,
            Method::GradCam
                | Method::Chefer
                | Method::DsmiGrad
                | Method::DsmiGradAttn
                | Method::TransformerAttribution
                | Method::CheferLrp
        )
    }

    /// Parses `all` or a comma-separated list of names.
    pub fn parse_list(spec: &str) -> Result<Vec<Method>, ExplainError> {
        let is_all = |s: &str| s.trim().eq_ignore_ascii_case("all");
        if is_all(spec) {
            return Ok(Method::ALL.to_vec());
        }
        let mut methods: Vec<Method> = Vec::new();
        for m in spec.split(',') {
            if is_all(m) {
                return Err(ExplainError::AllInList(spec.to_owned()));
            }
            let m: Method = m.trim().parse()?;
            // Each once: a method named twice would be explained (and recorded) twice.
            if !methods.contains(&m) {
                methods.push(m);
            }
        }
        Ok(methods)
    }

    /// The first layer of a single-stream tower of `layers` layers whose ∂y/∂A the method
    /// reads (its relevance products start at `start`): a backward need go no deeper.
    /// `None` for a method that reads no gradient.
    pub fn gradient_from(self, start: usize, layers: usize) -> Option<usize> {
        match self {
            Method::GradCam => Some(layers.saturating_sub(1)),
            Method::Chefer | Method::TransformerAttribution | Method::CheferLrp => Some(start),
            Method::DsmiGrad | Method::DsmiGradAttn => Some(0),
            _ => None,
        }
    }

    /// The first layer of a single-stream tower of `layers` layers whose LRP relevance the
    /// method reads (its relevance products start at `start`): an LRP pass need go no
    /// deeper. `None` for a method that reads no relevance.
    pub fn relevance_from(self, start: usize, layers: usize) -> Option<usize> {
        match self {
            Method::PartialLrp => Some(layers.saturating_sub(1)),
            Method::TransformerAttribution | Method::CheferLrp => Some(start),
            _ => None,
        }
    }

    /// Whether the method reads the LRP relevance at the attention maps (so the trace needs
    /// an LRP pass, §D).
    pub fn needs_relevance(self) -> bool {
        matches!(
            self,
            Method::TransformerAttribution | Method::PartialLrp | Method::CheferLrp
        )
    }

    /// The relevance product whose row the method reads in a single stream (CLIP, ViLT).
    pub fn product(self) -> Option<RelevanceProduct> {
        match self {
            Method::Rollout => Some(RelevanceProduct::Rollout),
            Method::Chefer => Some(RelevanceProduct::Residual(
                HeadMean::PositiveGradientTimesAttention,
            )),
            // In a single stream, relevance maps with LRP are Transformer Attribution (§A.3).
            Method::TransformerAttribution | Method::CheferLrp => Some(RelevanceProduct::Residual(
                HeadMean::PositiveGradientTimesRelevance,
            )),
            _ => None,
        }
    }

    /// What the method reads of a single-stream tower trace (CLIP, ViLT), so that only that
    /// is brought to the host (`TowerTrace::into_host_for`).
    pub fn reads(self) -> Reads {
        let means = |kind: HeadMean, layers: Layers| Reads {
            means: vec![(kind, layers)],
            ..Reads::default()
        };
        match self {
            Method::RawAttn => means(HeadMean::Attention, Layers::Last),
            Method::GradCam => Reads {
                last_layer_heads: true,
                ..Reads::default()
            },
            Method::PartialLrp => means(HeadMean::Relevance, Layers::Last),
            Method::Dsmi => Reads {
                features: Layers::Last,
                ..Reads::default()
            },
            // Ḡ_l·f_l over each graph: formed where the trace lives when it solves the graphs.
            Method::DsmiGrad => Reads {
                features: Layers::All,
                weighted: vec![HeadMean::PositiveGradient],
                ..Reads::default()
            },
            Method::DsmiGradAttn => Reads {
                features: Layers::All,
                weighted: vec![HeadMean::PositiveGradientTimesAttention],
                ..Reads::default()
            },
            // One row of the product: formed where the trace lives when it knows the rows.
            Method::Rollout
            | Method::Chefer
            | Method::TransformerAttribution
            | Method::CheferLrp => Reads {
                products: self.product().into_iter().collect(),
                ..Reads::default()
            },
        }
    }

    /// `chefer` with `--lrp`: its LRP form; every other method as it is.
    pub fn with_lrp(self, lrp: bool) -> Method {
        match self {
            Method::Chefer if lrp => Method::CheferLrp,
            m => m,
        }
    }

    /// The comma-separated list of valid names, for messages and `--help`.
    pub fn valid_names() -> String {
        Method::ALL
            .iter()
            .map(|m| m.name())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// As its CLI name ("dsmi-grad"), as explanations.json names it.
impl Serialize for Method {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The seed's method keys (spec §F, README demo), with `_` read as `-`: the names a user of
/// the original code types.
const SEED_NAMES: [(&str, Method); 9] = [
    ("dsm", Method::Dsmi),
    ("dsm-grad", Method::DsmiGrad),
    ("dsm-grad-cam", Method::DsmiGradAttn),
    ("transformer-att", Method::TransformerAttribution),
    ("attn-gradcam", Method::GradCam),
    ("gradcam", Method::GradCam),
    ("rm", Method::Chefer),
    ("rm-no-lrp", Method::Chefer),
    ("rm-with-lrp", Method::CheferLrp),
];

impl FromStr for Method {
    type Err = ExplainError;

    /// A method's name in any case, with `_` for `-`, or the seed's key for it; an unknown
    /// name is refused with the closest valid one, if one is close.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let key = s.trim().to_ascii_lowercase().replace('_', "-");
        let named = Method::ALL.into_iter().find(|m| m.name() == key);
        let seed = || SEED_NAMES.iter().find(|(n, _)| *n == key).map(|&(_, m)| m);
        named
            .or_else(seed)
            .ok_or_else(|| ExplainError::UnknownMethod {
                name: s.to_owned(),
                closest: crate::names::nearest(&key, Method::ALL.map(Method::name)),
            })
    }
}

/// One method's explanation of one sample (an image and its text), for every family.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub method: Method,
    /// The target's raw value: CLIP's pair score, a VQA answer's logit.
    pub score: f32,
    /// One value per image unit, raw (not normalised): per patch in raster order (CLIP,
    /// ViLT), per region in the features' order (LXMERT).
    pub image_relevance: Vec<f32>,
    /// The units' grid (rows, columns): the patch grid, or (1, regions) for LXMERT.
    pub image_grid: (usize, usize),
    /// One value per real token of the text (special tokens included; 0 where not scored).
    pub text_relevance: Vec<f32>,
    /// Which of those tokens the method scores: the words, and on LXMERT also [SEP] for the
    /// attention and LRP methods (its row is read like any other; the spectral methods score
    /// words only).
    pub text_scored: Vec<bool>,
    /// Spectral graphs with a near-degenerate Fiedler vector, e.g. "text layer 2 (gap 4e-5)".
    pub degenerate_graphs: Vec<String>,
}

/// Puts word relevance into a vector over all `len` real text tokens (0 elsewhere).
pub(crate) fn spread_words(len: usize, words: &[usize], values: Vec<f32>) -> (Vec<f32>, Vec<bool>) {
    let mut relevance = vec![0.0; len];
    let mut scored = vec![false; len];
    for (&j, v) in words.iter().zip(values) {
        relevance[j] = v;
        scored[j] = true;
    }
    (relevance, scored)
}

/// Options shared by the methods.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MethodOptions {
    /// First layer of the vision (or only) tower that rollout, chefer (with or without LRP)
    /// and Transformer Attribution use; negative counts from the end (−1 = last layer only,
    /// as in Chefer's CLIP notebook). The other methods do not read it.
    pub start_layer: i64,
    /// The same for the text tower.
    pub start_layer_text: i64,
    pub graph: GraphOptions,
}

impl Default for MethodOptions {
    /// Every layer (§H), normalised graph rows, Lanczos.
    fn default() -> Self {
        Self {
            start_layer: 0,
            start_layer_text: 0,
            graph: GraphOptions::default(),
        }
    }
}

/// Refuses a start layer the family has no use for (given, i.e. not 0).
pub(crate) fn unused_start(
    start: i64,
    flag: &'static str,
    family: &'static str,
    why: &'static str,
) -> Result<(), ExplainError> {
    if start == 0 {
        Ok(())
    } else {
        Err(ExplainError::NotApplicable { flag, family, why })
    }
}

/// Resolves a possibly negative start layer against a tower of `layers` layers (-1: the
/// last); one outside the tower is refused, naming `flag`.
pub(crate) fn resolve_start(
    start: i64,
    layers: usize,
    flag: &'static str,
) -> Result<usize, ExplainError> {
    let resolved = if start < 0 {
        layers as i64 + start
    } else {
        start
    };
    if (0..layers as i64).contains(&resolved) {
        Ok(resolved as usize)
    } else {
        Err(ExplainError::StartLayer {
            flag,
            value: start,
            layers,
        })
    }
}

#[derive(Debug, Error)]
pub enum ExplainError {
    #[error(
        "unknown method {name:?}{hint}; valid methods: {valids}, all",
        hint = closest.map(|c| format!(" (did you mean {c}?)")).unwrap_or_default(),
        valids = Method::valid_names()
    )]
    UnknownMethod {
        name: String,
        closest: Option<&'static str>,
    },
    #[error("methods {0:?}: `all` stands alone (it already names every method)")]
    AllInList(String),
    #[error(
        "{flag} {value} is outside a tower of {layers} layer{s} (use 0 to {last}, or -1 to -{layers})",
        last = layers.saturating_sub(1),
        s = if *layers == 1 { "" } else { "s" }
    )]
    StartLayer {
        flag: &'static str,
        value: i64,
        layers: usize,
    },
    #[error("{flag} does not apply to {family}: {why}")]
    NotApplicable {
        flag: &'static str,
        family: &'static str,
        why: &'static str,
    },
    #[error("{0} reads attention gradients the trace's backward did not record (it ran none, or stopped short of the modules {0} reads)")]
    NoGradients(Method),
    #[error("{0} reads LRP relevance the trace's LRP pass did not record (it ran none, or stopped short of the modules {0} reads)")]
    NoRelevance(Method),
    #[error("{0} reads parts of the trace that were left on the device: bring the trace to the host for every method asked (`into_host_for(reads(methods))`)")]
    NotKept(Method),
    #[error("the LXMERT trace lacks the image branch of cross layer {0}: only the last layer's may be left out")]
    MissingImageBranch(usize),
    #[error("spectral graph of {tower} tokens, sample {pair}: {source}")]
    Spectral {
        tower: &'static str,
        pair: usize,
        #[source]
        source: SpectralError,
    },
}

/// Fails on the first method that needs ∂y/∂A which the trace does not hold (`serves` says).
pub(crate) fn check_gradients(
    methods: &[Method],
    serves: impl Fn(Method) -> bool,
) -> Result<(), ExplainError> {
    match methods.iter().find(|&&m| m.needs_gradients() && !serves(m)) {
        Some(&m) => Err(ExplainError::NoGradients(m)),
        None => Ok(()),
    }
}

/// Fails on the first method that needs LRP relevance which the trace does not hold (`serves`
/// says).
pub(crate) fn check_relevance(
    methods: &[Method],
    serves: impl Fn(Method) -> bool,
) -> Result<(), ExplainError> {
    match methods.iter().find(|&&m| m.needs_relevance() && !serves(m)) {
        Some(&m) => Err(ExplainError::NoRelevance(m)),
        None => Ok(()),
    }
}

/// Everything `methods` read of a single-stream tower trace.
pub fn reads(methods: &[Method]) -> Reads {
    methods
        .iter()
        .fold(Reads::default(), |acc, m| acc.union(&m.reads()))
}

/// `reads` with the rows its products and Grad-CAM read (`rows`), formed where the trace
/// lives (the products from the first layer `start`); as it is where no method reads such a
/// row, or where the flag gave no layer (the means and heads then come whole, and
/// explaining names the error).
pub(crate) fn with_readout_rows(
    reads: Reads,
    rows: impl FnOnce() -> Vec<RowSpec>,
    start: Result<usize, ExplainError>,
) -> Reads {
    match start {
        Ok(start) if !reads.products.is_empty() || reads.last_layer_heads => {
            reads.with_rows(rows(), start)
        }
        _ => reads,
    }
}

/// Fails on the first method that reads what a reduced trace left on the device.
pub(crate) fn check_kept(
    methods: &[Method],
    towers: &[&TowerTrace<Vec<f32>>],
) -> Result<(), ExplainError> {
    match methods
        .iter()
        .find(|m| towers.iter().any(|t| !t.serves(&m.reads())))
    {
        Some(&m) => Err(ExplainError::NotKept(m)),
        None => Ok(()),
    }
}

/// How deep the passes over a single-stream tower must run for some methods: the first
/// layer whose ∂y/∂A (`gradients`) and LRP relevance (`relevance`) any of them reads; `None`
/// where none reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Depth<T> {
    pub gradients: Option<T>,
    pub relevance: Option<T>,
}

/// The `Depth` of a tower of `layers` layers for `methods`, their products starting at
/// `start`. A start the flag gave no layer for counts as the first layer (explaining then
/// names the error).
pub fn depth(
    methods: &[Method],
    start: Result<usize, ExplainError>,
    layers: usize,
) -> Depth<usize> {
    let start = start.unwrap_or(0);
    let first = |from: fn(Method, usize, usize) -> Option<usize>| {
        methods.iter().filter_map(|&m| from(m, start, layers)).min()
    };
    Depth {
        gradients: first(Method::gradient_from),
        relevance: first(Method::relevance_from),
    }
}

/// Fails on the first method whose gradients or relevance a single-stream tower (with its
/// products' start layer) lacks.
pub(crate) fn check_towers(
    methods: &[Method],
    towers: &[(&TowerTrace<Vec<f32>>, usize)],
) -> Result<(), ExplainError> {
    let serves = |has: fn(&TowerTrace<Vec<f32>>, usize) -> bool,
                  from: fn(Method, usize, usize) -> Option<usize>| {
        move |m: Method| {
            towers.iter().all(|&(tower, start)| {
                from(m, start, tower.layers.len()).is_none_or(|first| has(tower, first))
            })
        }
    };
    check_gradients(
        methods,
        serves(TowerTrace::has_gradients_from, Method::gradient_from),
    )?;
    check_relevance(
        methods,
        serves(TowerTrace::has_relevance_from, Method::relevance_from),
    )
}

/// Whether any of `methods` reads ∂y/∂A, i.e. whether a trace needs a backward.
pub fn need_gradients(methods: &[Method]) -> bool {
    methods.iter().any(|m| m.needs_gradients())
}

impl ExplainError {
    /// Names the batch sample a spectral error came from.
    pub(crate) fn for_sample(self, sample: usize) -> Self {
        match self {
            ExplainError::Spectral { tower, source, .. } => ExplainError::Spectral {
                tower,
                pair: sample,
                source,
            },
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_lists_name_each_method_once() {
        assert_eq!(
            Method::parse_list("dsmi, chefer,dsmi").unwrap(),
            vec![Method::Dsmi, Method::Chefer]
        );
        assert_eq!(Method::parse_list("all").unwrap(), Method::ALL.to_vec());
        assert!(matches!(
            Method::parse_list("dsmi,nope"),
            Err(ExplainError::UnknownMethod { name, closest: None }) if name == "nope"
        ));
        let err = Method::parse_list("all,dsmi").unwrap_err().to_string();
        assert!(err.contains("`all` stands alone"), "{err}");
        assert_eq!(Method::parse_list("ALL").unwrap(), Method::ALL.to_vec());
    }

    /// Names in any case and with `_`, and the seed's keys, read as the methods they name; a
    /// typo is answered with the name it is nearest.
    #[test]
    fn method_names_forgive_case_underscores_and_the_seeds_keys() {
        for (given, method) in [
            ("Chefer", Method::Chefer),
            ("RAW_ATTN", Method::RawAttn),
            ("partial_lrp", Method::PartialLrp),
            ("dsm", Method::Dsmi),
            ("dsm_grad", Method::DsmiGrad),
            ("dsm_grad_cam", Method::DsmiGradAttn),
            ("transformer_att", Method::TransformerAttribution),
            ("attn_gradcam", Method::GradCam),
            ("rm", Method::Chefer),
            ("rm_no_lrp", Method::Chefer),
            ("rm_with_lrp", Method::CheferLrp),
        ] {
            assert_eq!(given.parse::<Method>().unwrap(), method, "{given}");
        }
        for (typo, nearest) in [
            ("chefr", Some("chefer")),
            ("rolout", Some("rollout")),
            ("dsmi-gradd", Some("dsmi-grad")),
            ("transformer-atribution", Some("transformer-attribution")),
            ("lime", None),
            ("xy", None),
        ] {
            let err = typo.parse::<Method>().unwrap_err();
            assert!(
                matches!(&err, ExplainError::UnknownMethod { closest, .. } if *closest == nearest),
                "{typo}: {err}"
            );
        }
        let err = "chefr".parse::<Method>().unwrap_err().to_string();
        assert!(
            err.starts_with(
                "unknown method \"chefr\" (did you mean chefer?); valid methods: raw-attn,"
            ),
            "{err}"
        );
    }
}
