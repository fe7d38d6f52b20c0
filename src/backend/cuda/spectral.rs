//! Batched Fiedler vectors on the GPU: one thread block per graph (kernels/spectral.cu),
//! the same algorithm, conventions and tolerances as `linalg::fiedler_batch` with the
//! Lanczos solver, so results agree with the CPU to the solver's tolerance.

use cudarc::driver::{LaunchConfig, PushKernelArg};

use super::{device_error, int, Cuda};
use crate::backend::{BackendError, Result};
use crate::linalg::{Fiedler, GraphInput, SpectralError};

/// Doubles of per-graph workspace besides M and the Lanczos basis (WORK_VECTORS vectors of
/// n in kernels/spectral.cu).
const WORK_VECTORS: usize = 13;

/// Threads per graph.
const BLOCK: u32 = 256;

/// Shape and finiteness checks of one graph (as `Graph::from_features` makes them): the
/// rows that take part.
fn nodes(g: &GraphInput<'_>) -> std::result::Result<Vec<usize>, SpectralError> {
    if g.rows.checked_mul(g.dim) != Some(g.features.len()) {
        return Err(SpectralError::FeatureShape {
            len: g.features.len(),
            rows: g.rows,
            dim: g.dim,
        });
    }
    if g.mask.len() != g.rows {
        return Err(SpectralError::MaskLength {
            mask: g.mask.len(),
            rows: g.rows,
        });
    }
    let nodes: Vec<usize> = (0..g.rows).filter(|&r| g.mask[r]).collect();
    for &r in &nodes {
        let row = &g.features[r * g.dim..(r + 1) * g.dim];
        if let Some((col, &value)) = row.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(SpectralError::NonFiniteFeature { row: r, col, value });
        }
    }
    Ok(nodes)
}

impl Cuda {
    /// The Fiedler vector of every graph, in input order (spec §B with the options'
    /// `l2_normalize`; the solver is always Lanczos). Every graph of a call must have the
    /// same feature width. A bad graph gives its own error and does not stop the others;
    /// the outer error is a device failure (e.g. out of memory for the workspace of
    /// 2n² + 13n doubles per graph).
    pub fn fiedler_batch(
        &self,
        graphs: &[GraphInput<'_>],
        l2_normalize: bool,
    ) -> Result<Vec<std::result::Result<Fiedler, SpectralError>>> {
        const OP: &str = "fiedler_batch";
        let dim = graphs.first().map_or(0, |g| g.dim);
        if let Some(g) = graphs.iter().find(|g| g.dim != dim) {
            return Err(BackendError::Invalid {
                op: OP,
                message: format!("graphs of feature widths {dim} and {} in one call", g.dim),
            });
        }
        let checked: Vec<_> = graphs.iter().map(nodes).collect();
        // The valid graphs, packed: their selected rows, node offsets, workspace offsets.
        let mut features = Vec::new();
        let mut node_start = vec![0i32];
        let mut work_start = Vec::new();
        let mut work = 0usize;
        for (g, nodes) in graphs.iter().zip(&checked) {
            let Ok(nodes) = nodes else { continue };
            for &r in nodes {
                features.extend_from_slice(&g.features[r * dim..(r + 1) * dim]);
            }
            let n = nodes.len();
            node_start.push(int(
                OP,
                node_start.last().copied().unwrap_or(0) as usize + n,
            )?);
            work_start.push(work as i64);
            work += 2 * n * n + WORK_VECTORS * n;
        }
        let blocks = work_start.len();
        let total = *node_start.last().expect("starts with 0") as usize;
        let mut solved = Vec::with_capacity(blocks);
        if blocks > 0 {
            let dev_features = self.upload_any(OP, &features)?;
            let dev_starts = self.upload_any(OP, &node_start)?;
            let dev_work_starts = self.upload_any(OP, &work_start)?;
            let mut dev_work = self.alloc::<f64>(OP, work.max(1))?;
            let mut abs = self.alloc::<f32>(OP, total.max(1))?;
            let mut signed = self.alloc::<f32>(OP, total.max(1))?;
            let mut lambda2 = self.alloc::<f64>(OP, blocks)?;
            let mut gap = self.alloc::<f64>(OP, blocks)?;
            let mut residual = self.alloc::<f64>(OP, blocks)?;
            let mut steps = self.alloc::<i32>(OP, blocks)?;
            let (d, l2) = (int(OP, dim)?, i32::from(l2_normalize));
            let cfg = LaunchConfig {
                grid_dim: (blocks as u32, 1, 1),
                block_dim: (BLOCK, 1, 1),
                shared_mem_bytes: 0,
            };
            launch!(
                self,
                "fiedler_graphs",
                cfg,
                &dev_features,
                &dev_starts,
                &dev_work_starts,
                &mut dev_work,
                &d,
                &l2,
                &mut abs,
                &mut signed,
                &mut lambda2,
                &mut gap,
                &mut residual,
                &mut steps
            )?;
            let host = |e| device_error(OP, "device-to-host copy (or the kernel before it)", e);
            let abs = self.stream.clone_dtoh(&abs).map_err(host)?;
            let signed = self.stream.clone_dtoh(&signed).map_err(host)?;
            let lambda2 = self.stream.clone_dtoh(&lambda2).map_err(host)?;
            let gap = self.stream.clone_dtoh(&gap).map_err(host)?;
            let residual = self.stream.clone_dtoh(&residual).map_err(host)?;
            let steps = self.stream.clone_dtoh(&steps).map_err(host)?;
            self.synchronize()?;
            for b in 0..blocks {
                let range = node_start[b] as usize..node_start[b + 1] as usize;
                let defined = |v: f64| (!v.is_nan()).then_some(v);
                solved.push((
                    abs[range.clone()].to_vec(),
                    signed[range].to_vec(),
                    defined(lambda2[b]),
                    defined(gap[b]),
                    residual[b],
                    steps[b] as usize,
                ));
            }
        }
        let mut solved = solved.into_iter();
        Ok(graphs
            .iter()
            .zip(checked)
            .map(|(g, nodes)| {
                let nodes = nodes?;
                let (abs, signed, lambda2, gap, residual, steps) =
                    solved.next().expect("one result per valid graph");
                let scatter = |values: &[f32]| {
                    let mut out = vec![0.0f32; g.rows];
                    for (&r, &v) in nodes.iter().zip(values) {
                        out[r] = v;
                    }
                    out
                };
                Ok(Fiedler {
                    vector: scatter(&abs),
                    signed: scatter(&signed),
                    tokens: nodes.len(),
                    lambda2,
                    gap,
                    residual,
                    iterations: steps,
                })
            })
            .collect())
    }
}
