//! Batched Fiedler vectors on the GPU, the same algorithm, conventions and tolerances as
//! `linalg::fiedler_batch` with the Lanczos solver, so results agree with the CPU to the
//! solver's tolerance. Three stages (kernels/spectral.cu says why): `fiedler_rows` scales the
//! rows into f64, a cuBLAS DGEMM per group of equally sized graphs writes F Fᵀ into each
//! graph's workspace, and `fiedler_graphs` runs one thread block per graph for the rest.

use std::ops::Range;

use cudarc::cublas::result::dgemm_strided_batched;
use cudarc::cublas::sys::cublasOperation_t;
use cudarc::driver::{CudaSlice, DevicePtr, LaunchConfig, PushKernelArg};
use rayon::prelude::*;

use super::{device_error, int, Cuda};
use crate::backend::{BackendError, Result};
use crate::linalg::{Fiedler, GraphInput, SpectralError};

/// Doubles of per-graph workspace besides M and the Lanczos basis (WORK_VECTORS vectors of
/// n in kernels/spectral.cu).
const WORK_VECTORS: usize = 14;

/// Threads of `fiedler_rows` (a warp per row).
const ROWS_BLOCK: u32 = 256;

/// Threads per graph of `fiedler_graphs`: a thread per node (each computes one entry of a
/// matrix–vector product), in whole warps, at least two and at most 16 warps.
fn graph_threads(n: usize) -> u32 {
    (n.div_ceil(32) * 32).clamp(64, 512) as u32
}

/// Doubles of workspace for a graph of n nodes.
fn work_len(n: usize) -> usize {
    2 * n * n + WORK_VECTORS * n
}

/// The selected rows as ranges of consecutive rows (one for a full or a trimmed mask).
fn row_runs(nodes: &[usize]) -> Vec<Range<usize>> {
    let mut runs: Vec<Range<usize>> = Vec::new();
    for &r in nodes {
        match runs.last_mut() {
            Some(run) if run.end == r => run.end = r + 1,
            _ => runs.push(r..r + 1),
        }
    }
    runs
}

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
    /// the outer error is a device failure (e.g. out of memory for the f64 copy of the
    /// features or the workspace of 2n² + 14n doubles per graph).
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
        // Reading every feature for the finiteness check is the host's largest pass: in
        // parallel over the graphs.
        let checked: Vec<_> = graphs.par_iter().map(nodes).collect();
        // The valid graphs, smallest first, so that equal sizes are adjacent and share one
        // DGEMM and one launch; packed on the device: their selected rows, node and
        // workspace offsets.
        let mut order: Vec<(usize, &[usize])> = checked
            .iter()
            .enumerate()
            .filter_map(|(i, nodes)| Some((i, nodes.as_deref().ok()?)))
            .collect();
        order.sort_by_key(|(_, nodes)| nodes.len());
        let mut node_start = vec![0i32];
        let mut work_start = Vec::with_capacity(order.len());
        let mut work = 0usize;
        for &(_, nodes) in &order {
            let total = node_start.last().copied().unwrap_or(0) as usize + nodes.len();
            node_start.push(int(OP, total)?);
            work_start.push(work as i64);
            work += work_len(nodes.len());
        }
        let blocks = order.len();
        let total = *node_start.last().expect("starts with 0") as usize;
        // Runs of equal size in the packed order: (n, graphs).
        let mut groups: Vec<(usize, Range<usize>)> = Vec::new();
        for b in 0..blocks {
            let n = (node_start[b + 1] - node_start[b]) as usize;
            match groups.last_mut() {
                Some((size, range)) if *size == n => range.end = b + 1,
                _ => groups.push((n, b..b + 1)),
            }
        }
        let mut solved = vec![None; graphs.len()];
        if blocks > 0 {
            self.bind(OP)?;
            // Straight from the callers' rows, a copy per run of consecutive selected rows:
            // packing them on the host first would copy every feature once more.
            let mut dev_features = self.alloc::<f32>(OP, total * dim)?;
            for (b, &(i, nodes)) in order.iter().enumerate() {
                let mut at = node_start[b] as usize * dim;
                for run in row_runs(nodes) {
                    let src = &graphs[i].features[run.start * dim..run.end * dim];
                    if src.is_empty() {
                        continue;
                    }
                    let mut dst = dev_features.slice_mut(at..at + src.len());
                    self.stream
                        .memcpy_htod(src, &mut dst)
                        .map_err(|e| device_error(OP, "host-to-device copy", e))?;
                    at += src.len();
                }
            }
            let dev_starts = self.upload_any(OP, &node_start)?;
            let dev_work_starts = self.upload_any(OP, &work_start)?;
            let mut rows = self.alloc::<f64>(OP, total * dim)?;
            let mut dev_work = self.alloc::<f64>(OP, work.max(1))?;
            let mut abs = self.alloc::<f32>(OP, total.max(1))?;
            let mut signed = self.alloc::<f32>(OP, total.max(1))?;
            let mut lambda2 = self.alloc::<f64>(OP, blocks)?;
            let mut gap = self.alloc::<f64>(OP, blocks)?;
            let mut residual = self.alloc::<f64>(OP, blocks)?;
            let mut steps = self.alloc::<i32>(OP, blocks)?;
            let (d, l2) = (int(OP, dim)?, i32::from(l2_normalize));
            if total > 0 && dim > 0 {
                let warps = ROWS_BLOCK as usize / 32;
                let cfg = LaunchConfig {
                    grid_dim: (int(OP, total.div_ceil(warps))? as u32, 1, 1),
                    block_dim: (ROWS_BLOCK, 1, 1),
                    shared_mem_bytes: 0,
                };
                let n_rows = int(OP, total)?;
                launch!(
                    self,
                    "fiedler_rows",
                    cfg,
                    &dev_features,
                    &mut rows,
                    &n_rows,
                    &d,
                    &l2
                )?;
                for (n, range) in &groups {
                    let first_node = node_start[range.start] as usize;
                    self.gram(
                        &rows,
                        first_node * dim,
                        &dev_work,
                        work_start[range.start] as usize,
                        *n,
                        dim,
                        range.len(),
                    )?;
                }
            }
            for (n, range) in &groups {
                let cfg = LaunchConfig {
                    grid_dim: (range.len() as u32, 1, 1),
                    block_dim: (graph_threads(*n), 1, 1),
                    shared_mem_bytes: 0,
                };
                let first_graph = int(OP, range.start)?;
                launch!(
                    self,
                    "fiedler_graphs",
                    cfg,
                    &dev_starts,
                    &dev_work_starts,
                    &mut dev_work,
                    &first_graph,
                    &mut abs,
                    &mut signed,
                    &mut lambda2,
                    &mut gap,
                    &mut residual,
                    &mut steps
                )?;
            }
            let host = |e| device_error(OP, "device-to-host copy (or a kernel before it)", e);
            let abs = self.stream.clone_dtoh(&abs).map_err(host)?;
            let signed = self.stream.clone_dtoh(&signed).map_err(host)?;
            let lambda2 = self.stream.clone_dtoh(&lambda2).map_err(host)?;
            let gap = self.stream.clone_dtoh(&gap).map_err(host)?;
            let residual = self.stream.clone_dtoh(&residual).map_err(host)?;
            let steps = self.stream.clone_dtoh(&steps).map_err(host)?;
            self.synchronize()?;
            for (b, &(i, _)) in order.iter().enumerate() {
                let range = node_start[b] as usize..node_start[b + 1] as usize;
                let defined = |v: f64| (!v.is_nan()).then_some(v);
                solved[i] = Some((
                    abs[range.clone()].to_vec(),
                    signed[range].to_vec(),
                    defined(lambda2[b]),
                    defined(gap[b]),
                    residual[b],
                    steps[b] as usize,
                ));
            }
        }
        Ok(graphs
            .iter()
            .zip(checked)
            .zip(solved)
            .map(|((g, nodes), solved)| {
                let nodes = nodes?;
                let (abs, signed, lambda2, gap, residual, steps) =
                    solved.expect("every valid graph was solved");
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

impl Cuda {
    /// F Fᵀ of `count` graphs of `n` nodes each, into the first n² doubles of their
    /// workspaces: `rows` holds their f64 feature rows (n × dim each, one graph after the
    /// other) from `row_offset` on, and their workspaces start at `work_offset`, one
    /// `work_len(n)` apart. Column-major cuBLAS sees each graph's rows as a dim × n matrix
    /// X, so Xᵀ X is the Gram matrix (written in full; the kernel reads one triangle).
    #[allow(clippy::too_many_arguments)]
    fn gram(
        &self,
        rows: &CudaSlice<f64>,
        row_offset: usize,
        work: &CudaSlice<f64>,
        work_offset: usize,
        n: usize,
        dim: usize,
        count: usize,
    ) -> Result<()> {
        const OP: &str = "fiedler_batch";
        if n == 0 || dim == 0 || count == 0 {
            return Ok(());
        }
        let cublas = |e| BackendError::Device {
            op: OP,
            message: format!("cuBLAS DGEMM: {e:?}"),
        };
        let f64_size = std::mem::size_of::<f64>() as u64;
        // Event tracking is off: the returned guards record nothing.
        let x = rows.device_ptr(&self.stream).0 + row_offset as u64 * f64_size;
        let c = work.device_ptr(&self.stream).0 + work_offset as u64 * f64_size;
        let (n32, d32) = (int(OP, n)?, int(OP, dim)?);
        let (alpha, beta) = (1.0f64, 0.0f64);
        // A cuBLAS handle must not be used by two threads at once; the backend is `Sync`.
        let blas = self.blas.lock().unwrap_or_else(|p| p.into_inner());
        // SAFETY: graph b reads rows row_offset + b·n·dim .. + n·dim of `rows` and writes
        // n² doubles from work_offset + b·work_len(n), all inside the buffers the caller
        // sized for these graphs.
        unsafe {
            dgemm_strided_batched(
                *blas.handle(),
                cublasOperation_t::CUBLAS_OP_T,
                cublasOperation_t::CUBLAS_OP_N,
                n32,
                n32,
                d32,
                &alpha,
                x as *const f64,
                d32,
                (n * dim) as i64,
                x as *const f64,
                d32,
                (n * dim) as i64,
                &beta,
                c as *mut f64,
                n32,
                work_len(n) as i64,
                int(OP, count)?,
            )
        }
        .map_err(cublas)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selected_rows_are_copied_in_runs_of_consecutive_rows() {
        assert!(row_runs(&[]).is_empty());
        assert_eq!(row_runs(&[0, 1, 2, 3]), vec![0..4]);
        assert_eq!(row_runs(&[1, 2, 5, 7, 8]), vec![1..3, 5..6, 7..9]);
    }

    #[test]
    fn a_graph_gets_a_thread_per_node_in_whole_warps_within_bounds() {
        assert_eq!(graph_threads(0), 64);
        assert_eq!(graph_threads(36), 64);
        assert_eq!(graph_threads(196), 224);
        assert_eq!(graph_threads(577), 512);
        assert_eq!(graph_threads(10_000), 512);
    }
}
