//! Subcommands of the `fiedler` binary.

pub mod bench;
pub mod device;
pub mod eval;
pub mod explain;
pub mod inspect;
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
