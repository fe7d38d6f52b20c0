//! The `fiedler` command line.

mod cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "fiedler",
    version,
    about = "Explains what image+text transformers look at"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Time explanations per second on a full-size model with random weights.
    Bench(cli::bench::BenchArgs),
    /// The perturbation benchmark of a VQA model (ViLT, LXMERT): AUC table and curves; or a
    /// CLIP model's scores against `fiedler synth` ground truth (--captions). Resumable;
    /// `fiedler eval report RESULTS.jsonl` rebuilds the report.
    Eval(cli::eval::EvalArgs),
    /// Explain (image, text) pairs: scores, token relevances, overlay PNGs, HTML and JSON.
    Explain(cli::explain::ExplainArgs),
    /// Describe a Hugging Face model directory: family, layers/heads/width per tower,
    /// parameter count and stored dtype.
    Inspect(cli::inspect::InspectArgs),
    /// Write a procedurally generated visual-question set with ground truth (images, VQA-v2
    /// questions and annotations, masks, LXMERT regions, CLIP caption sets).
    Synth(cli::synth::SynthArgs),
}

fn main() -> ExitCode {
    cli::memory::reuse_freed_memory();
    cli::pipe::end_quietly_on_closed_pipe();
    let result = match Cli::parse().command {
        Command::Bench(args) => cli::bench::run(args),
        Command::Eval(args) => cli::eval::run_command(args),
        Command::Explain(args) => cli::explain::run(args),
        Command::Inspect(args) => cli::inspect::run(args),
        Command::Synth(args) => cli::synth::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // Ctrl-C stopped the work with what was done saved: said as such, not as an error.
        Err(e) if e.is::<cli::interrupt::Interrupted>() => {
            eprintln!("{e}");
            ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("error: {}", message(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, "outer: cause: …", leaving out a cause whose text the messages
/// before it already hold (errors that print their source themselves, as serde's and io's
/// wrappers do).
fn message(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}
