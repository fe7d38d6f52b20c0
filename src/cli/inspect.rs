//! `fiedler inspect`: describe a model directory, and check that it loads.

use std::path::PathBuf;

use anyhow::bail;
use clap::Args;
use fiedler::model::config::{read_family, ModelFamily};
use fiedler::model::summary::ModelSummary;
use fiedler::session::{ClipSession, LxmertSession, SessionError, ViltSession};

#[derive(Args)]
pub struct InspectArgs {
    /// Directory with config.json, the weights (model.safetensors, pytorch_model.bin or a
    /// sharded index) and the tokenizer (tokenizer.json or vocab.txt); or the Hub id of a
    /// model in the local Hugging Face cache.
    #[arg(long, conflicts_with = "folder")]
    model: Option<PathBuf>,
    /// The model folder, as --model gives it (`fiedler inspect DIR`).
    #[arg(value_name = "DIR")]
    folder: Option<PathBuf>,
}

pub fn run(args: InspectArgs) -> anyhow::Result<()> {
    // How the folder was given, for a message about it.
    let (model, given) = match (args.model, args.folder) {
        (Some(model), _) => (model, "--model takes"),
        (None, Some(folder)) => (folder, "inspect takes"),
        (None, None) => bail!("give the model folder: fiedler inspect DIR (or --model DIR)"),
    };
    let dir = &super::model_folder(&model);
    if dir.is_file() {
        bail!(
            "{} is a file: {given} the model's folder (the one holding config.json)",
            dir.display()
        );
    }
    outln!("{}", ModelSummary::read(dir)?)?;
    // The summary reads config.json and the weights' headers; opening a session checks every
    // tensor's presence, shape and dtype against the config, and reads the tokenizer and the
    // image preprocessing, as explain would.
    let opened: Result<(), SessionError> = match read_family(dir)? {
        ModelFamily::Clip => ClipSession::open(dir).map(drop),
        ModelFamily::Vilt => ViltSession::open(dir).map(drop),
        ModelFamily::Lxmert => LxmertSession::open(dir, None).map(drop),
    };
    match opened {
        Ok(()) => {
            outln!(
                "loads       yes: every tensor present, with the shape the config implies; \
                 tokenizer and preprocessing read"
            )?;
            Ok(())
        }
        Err(e) => bail!("the model does not load: {e}"),
    }
}
