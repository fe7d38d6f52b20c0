//! `fiedler explain`: scores, token relevances in the terminal, and files a person can open —
//! an overlay PNG per pair and method, a comparison sheet when several methods run, an HTML
//! page and a JSON file with every number.

use std::collections::HashMap;
use std::fs;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use fiedler::explain::{Method, MethodOptions};
use fiedler::linalg::Solver;
use fiedler::render;
use fiedler::session::{ClipSession, PairRequest, PairResult};
use image::RgbImage;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, ValueEnum)]
enum Device {
    Cpu,
    Cuda,
    Auto,
}

#[derive(Args)]
pub struct ExplainArgs {
    /// Hugging Face model directory (config.json, *.safetensors, tokenizer.json).
    #[arg(long)]
    model: PathBuf,
    /// Image to explain; every --text is paired with it.
    #[arg(long, requires = "texts")]
    image: Option<PathBuf>,
    /// A caption to explain; repeat for several (probabilities are a softmax over them).
    #[arg(long = "text", requires = "image")]
    texts: Vec<String>,
    /// JSON Lines file of {"image": PATH, "text": "..."} pairs; relative image paths are
    /// resolved against the file's folder.
    #[arg(long, conflicts_with_all = ["image", "texts"])]
    pairs: Option<PathBuf>,
    /// Method(s): a name, a comma-separated list or `all`. Valid: raw-attn, rollout,
    /// grad-cam, chefer, dsmi, dsmi-grad, dsmi-grad-attn.
    #[arg(long, default_value = "all")]
    method: String,
    /// Folder for the overlay PNGs, comparison sheets, index.html and explanations.json.
    #[arg(long, default_value = "fiedler-out")]
    out: PathBuf,
    /// Pairs per forward/backward pass.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Where to compute (the CUDA backend is not part of this build yet).
    #[arg(long, value_enum, default_value = "cpu")]
    device: Device,
    /// First vision layer that rollout and chefer use; negative counts from the end
    /// (-1 = last layer only, as Chefer's CLIP notebook). Default: every layer.
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    start_layer: i64,
    /// The same for the text tower.
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    start_layer_text: i64,
    /// Eigensolver for the spectral methods: lanczos (fast) or dense (reference).
    #[arg(long, default_value = "lanczos")]
    solver: Solver,
}

#[derive(Deserialize)]
struct PairLine {
    image: PathBuf,
    text: String,
}

/// One object of explanations.json: one pair, one method.
#[derive(Serialize)]
struct Record<'a> {
    family: &'static str,
    method: &'static str,
    target: &'static str,
    image: String,
    text: &'a str,
    score: f32,
    probability: f32,
    text_tokens: &'a [String],
    text_relevance: &'a [f32],
    image_relevance: &'a [f32],
    image_grid: [usize; 2],
    degenerate_graphs: &'a [String],
}

fn parse_methods(spec: &str) -> anyhow::Result<Vec<Method>> {
    if spec.trim() == "all" {
        return Ok(Method::ALL.to_vec());
    }
    let methods = spec
        .split(',')
        .map(|m| m.trim().parse::<Method>())
        .collect::<Result<Vec<_>, _>>()?;
    if methods.is_empty() {
        bail!(
            "--method is empty; valid methods: {}, all",
            Method::valid_names()
        );
    }
    Ok(methods)
}

fn read_pairs(path: &Path) -> anyhow::Result<Vec<PairRequest>> {
    let text = fs::read_to_string(path)
        .with_context(|| format!("cannot read --pairs file {}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, line)| {
            let p: PairLine = serde_json::from_str(line).with_context(|| {
                format!(
                    "{}:{}: expected {{\"image\": PATH, \"text\": \"...\"}}",
                    path.display(),
                    i + 1
                )
            })?;
            Ok(PairRequest {
                image: base.join(p.image),
                text: p.text,
            })
        })
        .collect()
}

fn requests(args: &ExplainArgs) -> anyhow::Result<Vec<PairRequest>> {
    match (&args.pairs, &args.image) {
        (Some(file), _) => read_pairs(file),
        (None, Some(image)) => Ok(args
            .texts
            .iter()
            .map(|t| PairRequest {
                image: image.clone(),
                text: t.clone(),
            })
            .collect()),
        (None, None) => bail!("give --image IMG --text \"...\" (repeatable) or --pairs FILE.jsonl"),
    }
}

pub fn run(args: ExplainArgs) -> anyhow::Result<()> {
    let methods = parse_methods(&args.method)?;
    let pairs = requests(&args)?;
    if let Device::Cuda = args.device {
        bail!("--device cuda: this build has no CUDA backend yet; use --device cpu");
    }
    let opts = MethodOptions {
        start_layer: args.start_layer,
        start_layer_text: args.start_layer_text,
        graph: fiedler::linalg::GraphOptions {
            solver: args.solver,
            ..Default::default()
        },
    };
    let session = ClipSession::open(&args.model)?;

    let bar = ProgressBar::new(pairs.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} pairs  {per_sec}  eta {eta}")
            .expect("static template is valid"),
    );
    if pairs.len() <= args.batch {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let results = session.explain(&pairs, &methods, &opts, args.batch, |done| {
        bar.set_position(done as u64)
    })?;
    bar.finish_and_clear();

    print_results(&results);
    write_outputs(&session, &results, &args.out)?;
    println!("wrote {}", args.out.join("index.html").display());
    Ok(())
}

fn print_results(results: &[PairResult]) {
    let color = std::io::stdout().is_terminal();
    let width = results
        .iter()
        .flat_map(|r| &r.explanations)
        .map(|e| e.method.name().len())
        .max()
        .unwrap_or(0);
    for (i, r) in results.iter().enumerate() {
        println!(
            "pair {i}: {}  \"{}\"  score {:.3}  p {:.3}",
            r.image.display(),
            r.text,
            r.score,
            r.probability
        );
        for e in &r.explanations {
            let tokens =
                render::terminal::highlight(&r.tokens, &e.text_relevance, &e.text_scored, color);
            println!("  {:<width$}  {tokens}", e.method.name());
            for g in &e.degenerate_graphs {
                eprintln!(
                    "warning: pair {i} {}: Fiedler vector of {g} is not well defined",
                    e.method
                );
            }
        }
    }
}

fn write_outputs(session: &ClipSession, results: &[PairResult], out: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(out)
        .with_context(|| format!("cannot create output folder {}", out.display()))?;
    let mut displayed: HashMap<&Path, RgbImage> = HashMap::new();
    let mut records = Vec::new();
    let mut html_pairs = Vec::new();
    for (i, r) in results.iter().enumerate() {
        if !displayed.contains_key(r.image.as_path()) {
            displayed.insert(&r.image, session.display_image(&r.image)?);
        }
        let image = &displayed[r.image.as_path()];
        let mut html_methods = Vec::new();
        for e in &r.explanations {
            let title = format!("{} | {} | score {:.2}", e.method, r.text, r.score);
            let file = format!("pair{i}-{}.png", e.method);
            let overlay = render::overlay::overlay(image, &e.image_relevance, e.image_grid, &title);
            save_png(&overlay, &out.join(&file))?;
            html_methods.push(render::html::HtmlMethod {
                name: e.method.name().to_owned(),
                tokens: r.tokens.clone(),
                relevance: e.text_relevance.clone(),
                scored: e.text_scored.clone(),
                overlay_file: Some(file),
            });
            records.push(Record {
                family: "clip",
                method: e.method.name(),
                target: "pair-score",
                image: r.image.display().to_string(),
                text: &r.text,
                score: r.score,
                probability: r.probability,
                text_tokens: &r.tokens,
                text_relevance: &e.text_relevance,
                image_relevance: &e.image_relevance,
                image_grid: [e.image_grid.0, e.image_grid.1],
                degenerate_graphs: &e.degenerate_graphs,
            });
        }
        let sheet_file = if r.explanations.len() > 1 {
            let panels: Vec<(String, Vec<f32>)> = r
                .explanations
                .iter()
                .map(|e| (e.method.name().to_owned(), e.image_relevance.clone()))
                .collect();
            let caption = format!(
                "\"{}\"  score {:.2}  p {:.2}",
                r.text, r.score, r.probability
            );
            let sheet = render::sheet::comparison_sheet(
                image,
                &panels,
                r.explanations[0].image_grid,
                &caption,
            );
            let file = format!("pair{i}-sheet.png");
            save_png(&sheet, &out.join(&file))?;
            Some(file)
        } else {
            None
        };
        html_pairs.push(render::html::HtmlPair {
            image_label: r.image.display().to_string(),
            text: r.text.clone(),
            score: r.score,
            probability: Some(r.probability),
            methods: html_methods,
            sheet_file,
        });
    }
    let json = serde_json::to_string_pretty(&records)?;
    fs::write(out.join("explanations.json"), json).context("cannot write explanations.json")?;
    let page = render::html::page("fiedler explanations", &html_pairs);
    fs::write(out.join("index.html"), page).context("cannot write index.html")?;
    Ok(())
}

fn save_png(image: &RgbImage, path: &Path) -> anyhow::Result<()> {
    image
        .save(path)
        .with_context(|| format!("cannot write {}", path.display()))
}
