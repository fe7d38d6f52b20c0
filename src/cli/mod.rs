//! Subcommands of the `fiedler` binary.

/// `print!`/`println!` for the subcommands' results: a standard output that cannot be written
/// (a full disk) gives the error "cannot write to standard output: …" instead of the panic
/// the std macros raise. (A closed pipe ends the process quietly first: see `pipe`.)
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        write!(std::io::stdout().lock(), $($arg)*)
            .map_err(|e| anyhow::anyhow!("cannot write to standard output: {e}"))
    }};
}

/// `out!` with a line break.
macro_rules! outln {
    () => { out!("\n") };
    ($($arg:tt)*) => { out!("{}\n", format_args!($($arg)*)) };
}

pub mod bench;
pub mod device;
pub mod eval;
pub mod explain;
pub mod inspect;
pub mod interrupt;
pub mod memory;
pub mod pipe;
pub mod progress;
pub mod synth;

/// clap's parser of counts that must be at least 1 (batch sizes, repeats, sample counts): a 0
/// is refused when the arguments are read, before any work or output.
pub fn positive(arg: &str) -> Result<usize, String> {
    match arg.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) if arg.trim().starts_with('-') => Err("must be at least 1".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// "1 sample", "7 samples": a count and its noun (one made plural with an s).
pub fn counted(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("{n} {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// The folder a `--model` names: itself, or for a Hub id or a repository folder of the local
/// Hugging Face cache, its snapshot (said on stderr, so that a run records what it read).
pub fn model_folder(model: &std::path::Path) -> std::path::PathBuf {
    let folder = fiedler::model::hub::resolve(model);
    if folder != model {
        eprintln!(
            "model: {} (from the local Hugging Face cache)",
            folder.display()
        );
    }
    folder
}

/// Refuses an `--out` that names something other than a folder, before any work: `what` (the
/// outputs, the report) is written into a folder.
pub fn check_out_folder(out: &std::path::Path, what: &str) -> anyhow::Result<()> {
    if out.exists() && !out.is_dir() {
        anyhow::bail!(
            "--out {} is a file; give a folder for {what}",
            out.display()
        );
    }
    Ok(())
}
