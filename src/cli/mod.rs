//! Subcommands of the `fiedler` binary.

pub mod bench;
pub mod eval;
pub mod explain;
pub mod inspect;
pub mod synth;
