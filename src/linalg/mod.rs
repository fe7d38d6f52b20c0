//! Spectral core: affinity graphs over token features and their Fiedler vectors
//! (spec/methods.md §B, `seed:spectral/get_fev.py::get_eigs`).
//!
//! - [`Graph`] (`affinity.rs`): §B steps 1–4, features → W → degrees, in the symmetric
//!   form M = D^-1/2 W D^-1/2.
//! - [`fiedler`] / [`Graph::fiedler`]: §B steps 5–6, the Fiedler vector |v| (vᵀDv = 1), λ₂
//!   and the gap λ₃ − λ₂, by Lanczos ([`Solver::Lanczos`], with its tridiagonal solver)
//!   or a dense reference ([`Solver::Dense`], faer).
//! - [`fiedler_batch`]: many graphs of different sizes per call, threaded across graphs.
//! - [`synthetic`]: the deterministic features the golden tests and benchmarks share with
//!   `tools/reference/spectral_features.py`.
//!
//! Precision: everything after the f32 features is f64 (F Fᵀ, degrees, Lanczos and its
//! tridiagonal solves); only the returned vectors are rounded to f32. The seed computes W
//! in f32 and runs ARPACK in f32; this path agrees with `scipy.linalg.eigh(L, D)` in f64 to
//! ~1e-15 on λ₂ and to the f32 rounding on |v|, and with the seed to the seed's own f32
//! error (≲ 1e-5).
//!
//! For the CUDA kernel (one block per graph): F Fᵀ dominates the FLOPs; do it as a
//! DGEMM/DSYRK (H100/H200 run FP64 at half the FP32 rate) or as an SGEMM with TF32 off
//! (TF32 would put 1e-3 errors into W). Keep M, the Lanczos vectors, the dot products
//! (block reductions) and the tridiagonal solves in f64: the residual test at 1e-10 and
//! the reorthogonalisation need it, and f32 would make the Fiedler vector wrong by
//! ~1e-7/gap. The tridiagonal work is O(k) per check and fits one thread.

mod affinity;
mod batch;
mod blas;
mod dense;
mod error;
mod lanczos;
mod solve;
pub mod synthetic;
mod tridiagonal;

pub use affinity::Graph;
pub use batch::{fiedler_batch, fiedler_unmasked, solve_batch, GraphInput};
pub use error::SpectralError;
pub use solve::{fiedler, Fiedler, GraphOptions, Solver};
