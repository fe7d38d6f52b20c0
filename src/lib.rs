//! fiedler: explanations for image+text transformers (CLIP, ViLT, LXMERT).
//!
//! Start with [`session`]: open a Hugging Face model folder once ([`session::ClipSession`],
//! [`session::ViltSession`], [`session::LxmertSession`]), then explain batches of requests
//! with any of the [`explain::Method`]s. Each result holds, per method, an
//! [`explain::Explanation`]: the relevance of every image patch (or LXMERT region) and text
//! token, and the score it explains.
//!
//! ```
//! use fiedler::explain::{Method, MethodOptions};
//! use fiedler::session::{AnswerTarget, PairRequest, ViltSession};
//! # fn main() -> anyhow::Result<()> {
//! let session = ViltSession::open("models/vilt-synth".as_ref())?;
//! let questions = [PairRequest {
//!     image: "examples/images/shapes-1.png".into(),
//!     text: "what color is the square?".into(),
//! }];
//! let methods = [Method::DsmiGrad, Method::Chefer];
//! let opts = MethodOptions::default();
//! let results = session.explain(&questions, &methods, &opts, &AnswerTarget::Predicted, 8, |_| {})?;
//! let result = &results[0];
//! println!("{} -> {} {:?}", result.question, result.answer, result.top_answers);
//! for e in &result.explanations {
//!     // image_relevance: one value per patch of e.image_grid (rows, columns), raster order;
//!     // text_relevance: one value per entry of result.tokens
//!     assert_eq!(e.image_relevance.len(), e.image_grid.0 * e.image_grid.1);
//!     assert_eq!(e.text_relevance.len(), result.tokens.len());
//! }
//! # Ok(()) }
//! ```
//!
//! Warnings that do not stop the work go to stderr unless [`warning::set_handler`] routes
//! them elsewhere. Lower down, the engine runs a model as a straight sequence of ops
//! (`backend`) over preallocated activations, records what the explanation methods read
//! (`trace`: `model::clip::Clip::trace` and its ViLT and LXMERT twins), and the spectral
//! core (`linalg::fiedler_batch`) turns any token features into Fiedler vectors.

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
pub mod names;
pub mod render;
pub mod session;
pub mod synth;
pub mod trace;
pub mod warning;
