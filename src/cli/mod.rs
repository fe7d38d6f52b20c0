//! Subcommands of the `fiedler` binary.

pub mod bench;
pub mod device;
pub mod eval;
pub mod explain;
pub mod inspect;
pub mod memory;
pub mod pipe;
pub mod synth;
