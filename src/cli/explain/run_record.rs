//! run.json: what made the files beside it (model, device, methods and their options, how
//! many samples), so that explanations.json can be read, and the run made again, without
//! the command line that wrote it.

use std::fs;
use std::path::Path;

use anyhow::Context;
use fiedler::model::weights::Weights;
use fiedler::model::ModelFamily;
use serde::Serialize;

use super::{ExplainArgs, Input};

/// The file's name in `--out`.
pub(super) const RUN_FILE: &str = "run.json";

#[derive(Serialize)]
pub(super) struct RunRecord {
    fiedler: &'static str,
    /// The command line, program name first.
    command: Vec<String>,
    /// The folder it ran in: relative paths here and in explanations.json are relative to
    /// it.
    #[serde(skip_serializing_if = "Option::is_none")]
    cwd: Option<String>,
    family: &'static str,
    model: String,
    /// `Weights::fingerprint`, as `fiedler eval` records it: weights replaced in place are
    /// told apart.
    weights: String,
    /// "cpu (2 threads)" or the GPU.
    device: String,
    /// The dense products' precision: "f32", or "tf32" on a GPU with --tf32.
    precision: &'static str,
    methods: Vec<&'static str>,
    /// VQA: what the maps explain (--target as given); CLIP: each pair's score.
    target: String,
    /// --start-layer, where the family takes it (not LXMERT).
    #[serde(skip_serializing_if = "Option::is_none")]
    start_layer: Option<i64>,
    /// --start-layer-text (CLIP).
    #[serde(skip_serializing_if = "Option::is_none")]
    start_layer_text: Option<i64>,
    solver: String,
    batch: usize,
    /// Samples asked for, and explained: fewer where Ctrl-C stopped the run.
    samples: usize,
    explained: usize,
    /// Seconds the explanations took (reading the inputs and the model included, drawing
    /// the images not).
    seconds: f64,
}

impl RunRecord {
    /// The run about to start on `device` (`Opened::describe`, and the precision it
    /// computes in): `samples` asked for, none explained yet.
    pub fn new(
        args: &ExplainArgs,
        family: ModelFamily,
        input: &Input<'_>,
        device: (String, &'static str),
        samples: usize,
    ) -> anyhow::Result<Self> {
        let opts = input.opts;
        Ok(Self {
            fiedler: env!("CARGO_PKG_VERSION"),
            command: std::env::args().collect(),
            cwd: std::env::current_dir()
                .ok()
                .map(|d| d.display().to_string()),
            family: family.model_type(),
            model: input.model_dir.display().to_string(),
            weights: Weights::open(input.model_dir)?.fingerprint(),
            device: device.0,
            precision: device.1,
            methods: input.methods.iter().map(|m| m.name()).collect(),
            target: match family {
                ModelFamily::Clip => "pair-score".into(),
                _ => args.target.trim().to_owned(),
            },
            start_layer: (family != ModelFamily::Lxmert).then_some(opts.start_layer),
            start_layer_text: (family == ModelFamily::Clip).then_some(opts.start_layer_text),
            solver: opts.graph.solver.to_string(),
            batch: args.batch,
            samples,
            explained: 0,
            seconds: 0.0,
        })
    }

    /// The run done: `explained` samples in `seconds`.
    pub fn done(&mut self, explained: usize, seconds: f64) {
        self.explained = explained;
        self.seconds = seconds;
    }

    pub fn write(&self, out: &Path) -> anyhow::Result<()> {
        let json = serde_json::to_string_pretty(self)?;
        fs::write(out.join(RUN_FILE), json).with_context(|| format!("cannot write {RUN_FILE}"))
    }
}
