//! `fiedler synth`: writes a synthetic visual-question set with ground truth (docs/synth.md).

use std::path::PathBuf;

use clap::Args;
use fiedler::synth;
use indicatif::{ProgressBar, ProgressStyle};

use crate::cli::{counted, positive};

#[derive(Args)]
pub struct SynthArgs {
    /// Output folder (created; existing files of the same names are overwritten).
    #[arg(long)]
    out: PathBuf,
    /// Number of images (each gets up to 5 questions).
    #[arg(long, default_value_t = 100, value_parser = positive, allow_negative_numbers = true)]
    images: usize,
    /// Random seed: the same seed writes byte-identical files.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    seed: u64,
}

pub fn run(args: SynthArgs) -> anyhow::Result<()> {
    super::check_out_folder(&args.out, "the set")?;
    let bar = ProgressBar::new(args.images as u64);
    bar.set_style(
        ProgressStyle::with_template("{msg} {bar:40} {pos}/{len} images ({eta})")
            .expect("valid template"),
    );
    bar.set_message("synth");
    let summary = synth::write_set(&args.out, args.images, args.seed, || bar.inc(1))?;
    bar.finish_and_clear();
    outln!(
        "wrote {} and {} to {}",
        counted(summary.images, "image"),
        counted(summary.questions, "question"),
        args.out.display()
    )?;
    Ok(())
}
