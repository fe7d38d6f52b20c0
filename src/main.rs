//! The `fiedler` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use fiedler::model::summary::ModelSummary;

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
    /// Describe a Hugging Face model directory: family, layers/heads/width per tower,
    /// parameter count and stored dtype.
    Inspect {
        /// Directory with config.json and model.safetensors (or a sharded index).
        #[arg(long)]
        model: PathBuf,
    },
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Inspect { model } => {
            println!("{}", ModelSummary::read(&model)?);
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
