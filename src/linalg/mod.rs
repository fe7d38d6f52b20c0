//! Spectral core: affinity graphs over token features and their Fiedler vectors
//! (spec/methods.md §B, `seed:spectral/get_fev.py::get_eigs`).
//!
//! - [`affinity`]: §B steps 1–4, features → W → degrees, in the symmetric form
//!   M = D^-1/2 W D^-1/2 ([`Graph`]).
//! - [`solve`](fiedler): §B steps 5–6, the Fiedler vector |v| (vᵀDv = 1), λ₂ and the gap
//!   λ₃ − λ₂, by Lanczos ([`Solver::Lanczos`]) or a dense reference ([`Solver::Dense`]).
//! - [`fiedler_batch`]: many graphs of different sizes per call, threaded across graphs.
//! - [`synthetic`]: the deterministic features the golden tests and benchmarks share with
//!   `tools/reference/spectral_features.py`.
//!
//! Precision: everything after the f32 features is f64 (F Fᵀ, degrees, Lanczos, QL).
//! The seed computes W in f32 and runs ARPACK in f32; the f64 path agrees with
//! `scipy.linalg.eigh(L, D)` in f64 to ~1e-12 and with the seed to the seed's own f32
//! rounding.

pub mod affinity;
mod batch;
mod blas;
mod dense;
mod error;
mod lanczos;
mod solve;
pub mod synthetic;
pub mod tridiagonal;

pub use affinity::{Graph, DEGREE_GUARD};
pub use batch::{fiedler_batch, solve_batch, GraphInput};
pub use error::SpectralError;
pub use solve::{fiedler, Fiedler, GraphOptions, Solver};
