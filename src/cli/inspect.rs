//! `fiedler inspect`: describe a model directory.

use std::path::PathBuf;

use clap::Args;
use fiedler::model::summary::ModelSummary;

#[derive(Args)]
pub struct InspectArgs {
    /// Directory with config.json and model.safetensors (or a sharded index).
    #[arg(long)]
    model: PathBuf,
}

pub fn run(args: InspectArgs) -> anyhow::Result<()> {
    println!("{}", ModelSummary::read(&args.model)?);
    Ok(())
}
