//! Rows of the relevance products (spec §C.1, §C.6) with the arithmetic every backend follows
//! (kernels/relevance.cu does the same roundings in the same order).
//!
//! A method reads one row q of R = F_last·…·F_first, so the row is formed as a chain of
//! vector–matrix products from the last layer down, u ← uᵀ·F_l starting at e_q: n² work per
//! layer instead of the n³ of each matrix product.

use crate::backend::RelevanceProduct;

/// The state of row q over m tokens before any factor: rollout carries u itself (e_q); a
/// residual product carries w = u − e_q (0), so that the small terms it adds never meet
/// the 1 at q in f32 (spec §H, last item).
pub fn row_start(product: RelevanceProduct, m: usize, q: usize) -> Vec<f32> {
    let mut state = vec![0.0; m];
    if product == RelevanceProduct::Rollout {
        state[q] = 1.0;
    }
    state
}

/// Applies one factor, formed from the head mean M over the row's m tokens (`mean`, m × m
/// row-major), to the state of row q: u ← uᵀ·F.
///
/// - Rollout, F = rownorm(M + I): d_i = (Σ_j M_ij) + 1, F_ij = (M_ij + δ_ij) / d_i and
///   u'_j = Σ_i u_i·F_ij.
/// - Residual, F = I + M with u = e_q + w: w'_j = (w_j + M_qj) + Σ_i w_i·M_ij.
///
/// Every sum runs in index order from +0 with each product rounded on its own (no FMA).
pub fn row_step(product: RelevanceProduct, state: &mut [f32], mean: &[f32], q: usize) {
    let m = state.len();
    debug_assert_eq!(mean.len(), m * m);
    let mut next = vec![0.0f32; m];
    match product {
        RelevanceProduct::Rollout => {
            for (i, (&u, row)) in state.iter().zip(mean.chunks_exact(m)).enumerate() {
                let d = row.iter().fold(0.0f32, |s, &x| s + x) + 1.0;
                for (j, (acc, &x)) in next.iter_mut().zip(row).enumerate() {
                    let f = (if i == j { x + 1.0 } else { x }) / d;
                    *acc += u * f;
                }
            }
        }
        RelevanceProduct::Residual(_) => {
            for (&w, row) in state.iter().zip(mean.chunks_exact(m)) {
                for (acc, &x) in next.iter_mut().zip(row) {
                    *acc += w * x;
                }
            }
            let query = &mean[q * m..(q + 1) * m];
            for ((acc, &w), &x) in next.iter_mut().zip(state.iter()).zip(query) {
                *acc += w + x;
            }
        }
    }
    state.copy_from_slice(&next);
}

/// Row q of the product from the state after the last factor.
pub fn row_finish(product: RelevanceProduct, mut state: Vec<f32>, q: usize) -> Vec<f32> {
    if let RelevanceProduct::Residual(_) = product {
        state[q] += 1.0;
    }
    state
}

/// The m × m block of one sample's padded n × n matrix at the token positions `tokens`.
pub fn gather_square(padded: &[f32], n: usize, tokens: &[usize]) -> Vec<f32> {
    tokens
        .iter()
        .flat_map(|&ti| tokens.iter().map(move |&tj| padded[ti * n + tj]))
        .collect()
}
