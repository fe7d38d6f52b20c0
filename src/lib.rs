//! fiedler: explanations for image+text transformers (CLIP, ViLT, LXMERT).
//!
//! The engine runs a model as a straight sequence of ops (`backend`) over preallocated
//! activations, records what the explanation methods read (`trace`), and the spectral core
//! (`linalg`) turns token features into Fiedler vectors.

// The docs write token names and indices in brackets ([CLS], out[b, e]), as the papers and
// transformers do; rustdoc would take each for a link to an item.
#![allow(rustdoc::broken_intra_doc_links)]

pub mod backend;
pub mod eval;
pub mod explain;
pub mod hash;
pub mod input;
pub mod linalg;
pub mod model;
pub mod render;
pub mod session;
pub mod synth;
pub mod trace;
pub mod warning;
