//! `fiedler inspect`: describe a model directory, and check that it loads.

use std::path::PathBuf;

use anyhow::bail;
use clap::Args;
use fiedler::backend::Cpu;
use fiedler::model::clip::Clip;
use fiedler::model::config::{read_family, ModelFamily};
use fiedler::model::lxmert::Lxmert;
use fiedler::model::summary::ModelSummary;
use fiedler::model::vilt::Vilt;
use fiedler::model::ModelError;

#[derive(Args)]
pub struct InspectArgs {
    /// Directory with config.json and model.safetensors (or a sharded index).
    #[arg(long)]
    model: PathBuf,
}

pub fn run(args: InspectArgs) -> anyhow::Result<()> {
    let dir = &args.model;
    if dir.is_file() {
        bail!(
            "{} is a file: --model takes the model's folder (the one holding config.json)",
            dir.display()
        );
    }
    outln!("{}", ModelSummary::read(dir)?)?;
    // The summary reads config.json and the weights' headers; loading checks every tensor's
    // presence, shape and dtype against the config, as explain would.
    let loaded: Result<(), ModelError> = match read_family(dir)? {
        ModelFamily::Clip => Clip::load(&Cpu, dir).map(drop),
        ModelFamily::Vilt => Vilt::load(&Cpu, dir).map(drop),
        ModelFamily::Lxmert => Lxmert::load(&Cpu, dir).map(drop),
    };
    match loaded {
        Ok(()) => {
            outln!("loads       yes: every tensor present, with the shape the config implies")?;
            Ok(())
        }
        Err(e) => bail!("the model does not load: {e}"),
    }
}
