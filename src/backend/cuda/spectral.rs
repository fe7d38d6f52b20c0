//! Batched Fiedler vectors on the GPU, the same algorithm, conventions and tolerances as
//! `linalg::fiedler_batch` with the Lanczos solver, so results agree with the CPU to the
//! solver's tolerance. Three stages (kernels/spectral.cu says why): `fiedler_rows` gathers
//! the rows that take part into f64, scaled, a cuBLAS DGEMM per group of equally sized
//! graphs writes F Fᵀ into each graph's workspace, and `fiedler_graphs` (or
//! `fiedler_graphs_small` for graphs of up to 256 nodes) runs one thread block per graph
//! for the rest.
//!
//! Two entry points share that: `fiedler_batch` for features in host memory (uploaded per
//! call, which at 768-wide rows costs more than the solve: 512 graphs of 196 rows are
//! 308 MB), and `fiedler_batch_device` (`fiedler_batch_buffers` for graphs spread over
//! several buffers) for features already on the device, e.g. a model's hidden states.
//! Graphs of every buffer go into one call: a trace's layers are solved together rather
//! than a layer at a time, since a call with fewer graphs than the GPU holds blocks takes
//! about as long as a full one.

use std::cell::Cell;
use std::ops::Range;
use std::time::Instant;

use cudarc::cublas::result::dgemm_strided_batched;
use cudarc::cublas::sys::cublasOperation_t;
use cudarc::driver::sys::{CUdevice_attribute, CUevent_flags, CUfunction_attribute};
use cudarc::driver::{CudaEvent, CudaSlice, DevicePtr, DeviceRepr, LaunchConfig, PushKernelArg};
use rayon::prelude::*;

use super::{device_error, int, profile, Cuda};
use crate::backend::{BackendError, Result};
use crate::linalg::{Fiedler, GraphInput, SpectralError};

/// One graph's result, or why it has none.
type GraphResult = std::result::Result<Fiedler, SpectralError>;

/// Doubles of per-graph workspace besides M and the Lanczos basis (WORK_VECTORS vectors of
/// n in kernels/spectral.cu).
const WORK_VECTORS: usize = 14;

/// Rows of the per-graph statistics `fiedler_graphs` writes, one copy to the host (STAT_* in
/// kernels/spectral.cu).
const STAT_LAMBDA2: usize = 0;
const STAT_GAP: usize = 1;
const STAT_RESIDUAL: usize = 2;
const STAT_STEPS: usize = 3;
const STAT_ROWS: usize = 4;

/// Threads of `fiedler_rows` (a warp per row).
const ROWS_BLOCK: u32 = 256;

/// Threads per graph of `fiedler_graphs`: a thread per node (each computes one entry of a
/// matrix–vector product), in whole warps, at least two and at most 16; with overlapped
/// checks a warp more, whose first thread checks convergence. Only for graphs of more than
/// [`OVERLAP_NODES`] nodes, and not where that warp would take a graph of 225–256 nodes past
/// the small kernel's bound (to the general kernel, a quarter of the blocks per SM), nor past
/// 16 warps: elsewhere the checks stay inline.
fn graph_threads(n: usize, checks: GraphChecks) -> u32 {
    let warps = n.div_ceil(32);
    let spare = checks == GraphChecks::Overlapped
        && n > OVERLAP_NODES
        && warps * 32 != SMALL_GRAPH_THREADS as usize
        && warps < 16;
    ((warps + usize::from(spare)) * 32).clamp(64, 512) as u32
}

/// The most nodes of a graph whose checks stay inline. A check hides behind one step's
/// product only as far as that product lasts, and a small graph's is short (n multiply-adds
/// a thread) while the check (~800·k multiply-adds' time at k steps) is not; there the warp
/// would only lower the blocks an SM holds (10 instead of 16 at 36 nodes).
const OVERLAP_NODES: usize = 64;

/// The most threads `fiedler_graphs_small` takes (its launch bounds, SMALL_GRAPH_THREADS in
/// kernels/spectral.cu).
const SMALL_GRAPH_THREADS: u32 = 256;

/// Which kernels solve the graphs (kernels/spectral.cu): the same code in three builds, so
/// that one card can time them against each other (scripts/gpu-check.sh sets
/// `FIEDLER_GRAPH_KERNEL`; tests use [`Cuda::with_graph_kernel`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GraphKernel {
    /// `fiedler_graphs_small` for graphs of up to 256 nodes (a register budget that lets four
    /// blocks share an SM), `fiedler_graphs` above: the default.
    Auto,
    /// `fiedler_graphs` for every graph (`FIEDLER_GRAPH_KERNEL=general`).
    General,
    /// `fiedler_graphs_shared` where a graph's operator, packed, fits a block's shared memory
    /// (up to 235 nodes on an H100, 197 on an A100) and its threads are within the small
    /// kernel's bound, as `Auto` elsewhere (`FIEDLER_GRAPH_KERNEL=shared`).
    /// Each Lanczos step reads the whole operator, 307 KB at 196 nodes; this keeps it on the
    /// SM, at one block per SM.
    Shared,
}

impl GraphKernel {
    /// From `FIEDLER_GRAPH_KERNEL` ("general" or "shared"; anything else is `Auto`).
    pub fn from_env() -> Self {
        match std::env::var("FIEDLER_GRAPH_KERNEL").as_deref() {
            Ok("general") => Self::General,
            Ok("shared") => Self::Shared,
            _ => Self::Auto,
        }
    }

    /// The kernel for graphs of n nodes when the operator stays in the workspace.
    fn dense(self, n: usize, checks: GraphChecks) -> &'static str {
        if graph_threads(n, checks) <= SMALL_GRAPH_THREADS && self != Self::General {
            "fiedler_graphs_small"
        } else {
            "fiedler_graphs"
        }
    }
}

/// Where a Lanczos run's convergence checks run (kernels/spectral.cu's `lanczos`). A check
/// finds the top eigenpair of the small tridiagonal matrix on one thread, a chain of
/// divisions that at n ≈ 200 takes about as long as a step; the blocks of a launch start
/// together and keep in step, so while they check, the memory the products stream sits idle.
/// Both give the same bits (the checks fall on the same steps); the choice is for timing
/// them against each other on one card (scripts/gpu-check.sh sets `FIEDLER_GRAPH_CHECKS`;
/// tests use [`Cuda::with_graph_checks`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GraphChecks {
    /// On a warp of their own, beside the next step's product, which is dropped when the
    /// check says done: the default.
    Overlapped,
    /// On one thread, the block waiting (`FIEDLER_GRAPH_CHECKS=inline`).
    Inline,
}

impl GraphChecks {
    /// From `FIEDLER_GRAPH_CHECKS` ("inline"; anything else is `Overlapped`).
    pub fn from_env() -> Self {
        match std::env::var("FIEDLER_GRAPH_CHECKS").as_deref() {
            Ok("inline") => Self::Inline,
            _ => Self::Overlapped,
        }
    }
}

/// Bytes of a graph's operator packed as a triangle (n(n+1)/2 doubles).
fn packed_bytes(n: usize) -> usize {
    n * (n + 1) / 2 * std::mem::size_of::<f64>()
}

/// Graphs resident per SM when `FIEDLER_GRAPH_RESIDENT=K` is set (a positive integer), for
/// scripts/gpu-check.sh's sweep; otherwise every graph of a call gets its own block. Each
/// resident graph streams its n² f64 operator at every Lanczos step: 512 graphs of 196 nodes
/// are 157 MB, three times an H100's L2, and fewer at a time may run from L2 instead of
/// memory.
fn resident_per_sm() -> Option<usize> {
    static PER_SM: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    *PER_SM.get_or_init(|| {
        std::env::var("FIEDLER_GRAPH_RESIDENT")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|&k| k > 0)
    })
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

/// Where the graphs of a call go in the packed batch: smallest first, so that equal sizes
/// are adjacent and share one DGEMM and one launch.
struct Layout {
    /// The caller's index of each packed graph.
    order: Vec<usize>,
    /// Packed graph b has nodes node_start[b] .. node_start[b + 1].
    node_start: Vec<i32>,
    /// Packed graph b's workspace starts at this many doubles.
    work_start: Vec<i64>,
    /// Doubles of workspace in all.
    work: usize,
    /// Runs of equal size: (n, packed graphs).
    groups: Vec<(usize, Range<usize>)>,
}

impl Layout {
    /// From each graph's node count, `None` for a graph that is left out (it has an error).
    fn new(op: &'static str, sizes: &[Option<usize>]) -> Result<Self> {
        let mut order: Vec<usize> = (0..sizes.len()).filter(|&i| sizes[i].is_some()).collect();
        order.sort_by_key(|&i| sizes[i]);
        let mut node_start = vec![0i32];
        let mut work_start = Vec::with_capacity(order.len());
        let mut work = 0usize;
        let mut groups: Vec<(usize, Range<usize>)> = Vec::new();
        for (b, n) in order.iter().filter_map(|&i| sizes[i]).enumerate() {
            let total = node_start[b] as usize + n;
            node_start.push(int(op, total)?);
            work_start.push(i64::try_from(work).map_err(|_| BackendError::Invalid {
                op,
                message: format!("{work} doubles of workspace"),
            })?);
            work += work_len(n);
            match groups.last_mut() {
                Some((size, range)) if *size == n => range.end = b + 1,
                _ => groups.push((n, b..b + 1)),
            }
        }
        Ok(Self {
            order,
            node_start,
            work_start,
            work,
            groups,
        })
    }

    /// Nodes of packed graph b, as a range of the packed nodes.
    fn nodes(&self, b: usize) -> Range<usize> {
        self.node_start[b] as usize..self.node_start[b + 1] as usize
    }

    fn total(&self) -> usize {
        *self.node_start.last().expect("starts with 0") as usize
    }
}

/// Where the time of one solve goes, in milliseconds: the device time of its three stages
/// (from events on the stream), and the host's wall-clock time around them.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FiedlerStages {
    /// `fiedler_rows`: the f64 scaled feature rows.
    pub rows: f32,
    /// The cuBLAS DGEMMs: F Fᵀ of every graph.
    pub gram: f32,
    /// `fiedler_graphs(_small)`: affinity, both Lanczos runs and the result.
    pub graphs: f32,
    /// Host: from the call until the last kernel was launched (checks, layout, row
    /// addresses, uploads, allocations, launches).
    pub before: f32,
    /// Host: from then until the results had landed (the stages, the copies back, the
    /// synchronisation).
    pub wait: f32,
    /// Host: from then until the call returned (each graph's result assembled).
    pub after: f32,
}

/// Timing events recorded on the stream between the stages, and the host's clock at the
/// call's start, the last launch and the results' landing, when a caller asks for them;
/// otherwise nothing is recorded (and nothing waits).
struct StageClock(Option<Timing>);

struct Timing {
    events: [CudaEvent; 4],
    started: Instant,
    launched: Cell<Option<Instant>>,
    landed: Cell<Option<Instant>>,
}

impl StageClock {
    /// A clock that records nothing.
    const OFF: Self = Self(None);

    /// Started now when `timed`.
    fn new(cuda: &Cuda, op: &'static str, timed: bool) -> Result<Self> {
        if !timed {
            return Ok(Self::OFF);
        }
        let started = Instant::now();
        let event = || {
            cuda.ctx
                .new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
                .map_err(|e| device_error(op, "creating a timing event", e))
        };
        Ok(Self(Some(Timing {
            events: [event()?, event()?, event()?, event()?],
            started,
            launched: Cell::new(None),
            landed: Cell::new(None),
        })))
    }

    /// Records boundary `i` (0: before stage 1, …, 3: after stage 3); at 3, also the host's
    /// clock.
    fn mark(&self, cuda: &Cuda, op: &'static str, i: usize) -> Result<()> {
        let Some(t) = &self.0 else { return Ok(()) };
        if i == 3 {
            t.launched.set(Some(Instant::now()));
        }
        t.events[i]
            .record(&cuda.stream)
            .map_err(|e| device_error(op, "recording a timing event", e))
    }

    /// The results are on the host.
    fn landed(&self) {
        if let Some(t) = &self.0 {
            t.landed.set(Some(Instant::now()));
        }
    }

    /// The times, once the stream has passed the last boundary; all zero when no stage ran.
    fn stages(&self, op: &'static str) -> Result<Option<FiedlerStages>> {
        let Some(t) = &self.0 else { return Ok(None) };
        let (Some(launched), Some(landed)) = (t.launched.get(), t.landed.get()) else {
            return Ok(Some(FiedlerStages::default()));
        };
        let ms = |a: &CudaEvent, b: &CudaEvent| {
            a.elapsed_ms(b)
                .map_err(|err| device_error(op, "reading a timing event", err))
        };
        let host_ms = |from: Instant, to: Instant| (to - from).as_secs_f32() * 1e3;
        let e = &t.events;
        Ok(Some(FiedlerStages {
            rows: ms(&e[0], &e[1])?,
            gram: ms(&e[1], &e[2])?,
            graphs: ms(&e[2], &e[3])?,
            before: host_ms(t.started, launched),
            wait: host_ms(launched, landed),
            after: host_ms(landed, Instant::now()),
        }))
    }
}

/// No result yet for any of `graphs` graphs.
fn unsolved(graphs: usize) -> Vec<Option<Solved>> {
    (0..graphs).map(|_| None).collect()
}

/// One graph as the device solved it.
struct Solved {
    signed: Vec<f32>,
    lambda2: Option<f64>,
    gap: Option<f64>,
    residual: f64,
    steps: usize,
    /// The first of its nodes (index into its node list) whose features are not all finite:
    /// then the numbers above mean nothing.
    nonfinite: Option<usize>,
}

impl Solved {
    /// The result over `rows` feature rows, of which `nodes` took part.
    fn into_fiedler(self, rows: usize, nodes: &[usize]) -> Fiedler {
        let scatter = |values: &[f32]| {
            let mut out = vec![0.0f32; rows];
            for (&r, &v) in nodes.iter().zip(values) {
                out[r] = v;
            }
            out
        };
        // |v| from v: rounding to f32 commutes with the sign, so this equals the f64 |v|
        // rounded, which is what the CPU solver returns.
        let abs: Vec<f32> = self.signed.iter().map(|v| v.abs()).collect();
        Fiedler {
            vector: scatter(&abs),
            signed: scatter(&self.signed),
            tokens: nodes.len(),
            lambda2: self.lambda2,
            gap: self.gap,
            residual: self.residual,
            iterations: self.steps,
        }
    }
}

/// A graph over rows of a device buffer: `(features, first_row, mask)`, the `mask.len()`
/// rows from `first_row` on, of which those where `mask` is true take part.
pub type BufferGraph<'a> = (&'a CudaSlice<f32>, usize, &'a [bool]);

/// `(first_row, mask)` graphs of one buffer as [`BufferGraph`]s.
fn in_one_buffer<'a>(
    features: &'a CudaSlice<f32>,
    graphs: &[(usize, &'a [bool])],
) -> Vec<BufferGraph<'a>> {
    graphs
        .iter()
        .map(|&(first, mask)| (features, first, mask))
        .collect()
}

/// The device address of row `row` of `dim`-wide f32 rows from `base` on.
fn row_address(base: u64, row: usize, dim: usize) -> u64 {
    base + (row * dim * std::mem::size_of::<f32>()) as u64
}

impl Cuda {
    /// The Fiedler vector of every graph, in input order (spec §B with the options'
    /// `l2_normalize`; the solver is always Lanczos). Every graph of a call must have the
    /// same feature width. A bad graph gives its own error and does not stop the others;
    /// the outer error is a device failure (e.g. out of memory for the features, their f64
    /// copy or the workspace of 2n² + 14n doubles per graph).
    pub fn fiedler_batch(
        &self,
        graphs: &[GraphInput<'_>],
        l2_normalize: bool,
    ) -> Result<Vec<GraphResult>> {
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
        let sizes: Vec<Option<usize>> = checked
            .iter()
            .map(|c| c.as_ref().ok().map(Vec::len))
            .collect();
        let layout = Layout::new(OP, &sizes)?;
        let mut solved = unsolved(graphs.len());
        if !layout.order.is_empty() {
            self.bind(OP)?;
            // Straight from the callers' rows, in packed order, a copy per run of consecutive
            // selected rows: packing them on the host first would copy every feature once
            // more.
            let total = layout.total();
            // SAFETY: the copies below write every row of every packed node.
            let mut features = unsafe { self.alloc_unwritten::<f32>(OP, total * dim) }?;
            for (b, &i) in layout.order.iter().enumerate() {
                let Ok(nodes) = &checked[i] else { continue };
                let mut at = layout.node_start[b] as usize * dim;
                for run in row_runs(nodes) {
                    let src = &graphs[i].features[run.start * dim..run.end * dim];
                    if src.is_empty() {
                        continue;
                    }
                    let mut dst = features.slice_mut(at..at + src.len());
                    self.stream
                        .memcpy_htod(src, &mut dst)
                        .map_err(|e| device_error(OP, "host-to-device copy", e))?;
                    at += src.len();
                }
            }
            let base = self.ptr(&features);
            let source: Vec<u64> = (0..total).map(|k| row_address(base, k, dim)).collect();
            let clock = &StageClock::OFF;
            solved = self.solve(OP, dim, &source, &layout, l2_normalize, graphs.len(), clock)?;
        }
        // Checked on the host: no row can have been flagged non-finite.
        Ok(graphs
            .iter()
            .zip(checked)
            .zip(solved)
            .map(|((g, nodes), solved)| {
                let nodes = nodes?;
                let solved = solved.expect("every valid graph was solved");
                Ok(solved.into_fiedler(g.rows, &nodes))
            })
            .collect())
    }

    /// [`Cuda::fiedler_batch`] for features already in device memory, without the upload:
    /// `features` is row-major, `dim` wide, and graph b is the `mask.len()` rows from row
    /// `first_row` on, of which those where `mask` is true take part, given as
    /// `(first_row, mask)`. Graphs may share or overlap rows. A graph with a NaN or
    /// infinite feature in a row that takes part gets its error, as on the host; a graph
    /// reaching past the end of `features` is an error of the whole call.
    pub fn fiedler_batch_device(
        &self,
        features: &CudaSlice<f32>,
        dim: usize,
        graphs: &[(usize, &[bool])],
        l2_normalize: bool,
    ) -> Result<Vec<GraphResult>> {
        self.fiedler_batch_buffers(dim, &in_one_buffer(features, graphs), l2_normalize)
    }

    /// [`Cuda::fiedler_batch_device`] for graphs over rows of several buffers, all `dim`
    /// wide, given as `(features, first_row, mask)`: solved in one call.
    pub fn fiedler_batch_buffers(
        &self,
        dim: usize,
        graphs: &[BufferGraph<'_>],
        l2_normalize: bool,
    ) -> Result<Vec<GraphResult>> {
        Ok(self.batch_device(dim, graphs, l2_normalize, false)?.0)
    }

    /// [`Cuda::fiedler_batch_device`], and where its time went (for `fiedler bench
    /// --stages`): each stage's device time, from events on the stream (no more waiting than
    /// the untimed call, which records none), and the host's time before, during and after
    /// them. All zero when no graph has a node.
    pub fn fiedler_batch_device_timed(
        &self,
        features: &CudaSlice<f32>,
        dim: usize,
        graphs: &[(usize, &[bool])],
        l2_normalize: bool,
    ) -> Result<(Vec<GraphResult>, FiedlerStages)> {
        let graphs = in_one_buffer(features, graphs);
        let (results, stages) = self.batch_device(dim, &graphs, l2_normalize, true)?;
        Ok((results, stages.unwrap_or_default()))
    }

    /// Both of the above: the times when `timed`.
    fn batch_device(
        &self,
        dim: usize,
        graphs: &[BufferGraph<'_>],
        l2_normalize: bool,
        timed: bool,
    ) -> Result<(Vec<GraphResult>, Option<FiedlerStages>)> {
        const OP: &str = "fiedler_batch_device";
        let clock = StageClock::new(self, OP, timed)?;
        for &(features, first, mask) in graphs {
            let rows = features.len().checked_div(dim).unwrap_or(0);
            if first
                .checked_add(mask.len())
                .is_none_or(|end| end > rows && !mask.is_empty())
            {
                return Err(BackendError::Invalid {
                    op: OP,
                    message: format!(
                        "a graph of rows {first}..{} of {rows} feature rows ({} values, {dim} wide)",
                        first.saturating_add(mask.len()),
                        features.len()
                    ),
                });
            }
        }
        let nodes: Vec<Vec<usize>> = graphs
            .iter()
            .map(|(_, _, mask)| (0..mask.len()).filter(|&r| mask[r]).collect())
            .collect();
        let sizes: Vec<Option<usize>> = nodes.iter().map(|n| Some(n.len())).collect();
        let layout = Layout::new(OP, &sizes)?;
        let mut source = Vec::with_capacity(layout.total());
        for &i in &layout.order {
            let (features, first, _) = graphs[i];
            let base = self.ptr(features);
            source.extend(nodes[i].iter().map(|&r| row_address(base, first + r, dim)));
        }
        let mut solved = unsolved(graphs.len());
        if !layout.order.is_empty() {
            self.bind(OP)?;
            solved = self.solve(
                OP,
                dim,
                &source,
                &layout,
                l2_normalize,
                graphs.len(),
                &clock,
            )?;
        }
        let mut out = Vec::with_capacity(graphs.len());
        for (((features, first, mask), nodes), solved) in graphs.iter().zip(&nodes).zip(solved) {
            let solved = solved.expect("every graph was solved");
            out.push(match solved.nonfinite {
                None => Ok(solved.into_fiedler(mask.len(), nodes)),
                Some(k) => {
                    // Which feature it was: one row back to the host.
                    let row = nodes[k];
                    let at = (first + row) * dim;
                    let values = self.host_now(OP, &features.slice(at..at + dim))?;
                    match values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
                        Some((col, &value)) => {
                            Err(SpectralError::NonFiniteFeature { row, col, value })
                        }
                        None => {
                            return Err(BackendError::Device {
                                op: OP,
                                message: format!(
                                    "row {row} was flagged non-finite but reads back finite"
                                ),
                            })
                        }
                    }
                }
            });
        }
        Ok((out, clock.stages(OP)?))
    }

    /// `src` on the host, once the copy has landed. Into the pageable memory cudarc copies
    /// to, the driver returns only once the copy is done; the stream is synchronised anyway,
    /// so that nothing rests on the kind of host memory. The CUDA emulator lands such copies
    /// only when their stream is synchronised, so a read before that fails its tests.
    fn host_now<T: DeviceRepr, S: DevicePtr<T>>(
        &self,
        op: &'static str,
        src: &S,
    ) -> Result<Vec<T>> {
        let host = self
            .stream
            .clone_dtoh(src)
            .map_err(|e| device_error(op, "device-to-host copy", e))?;
        self.synchronize()?;
        Ok(host)
    }

    /// The kernel that solves graphs of n nodes, and the dynamic shared memory it needs.
    fn graph_kernel_for(&self, op: &'static str, n: usize) -> Result<(&'static str, u32)> {
        const SHARED: &str = "fiedler_graphs_shared";
        let dense = self.graph_kernel.dense(n, self.graph_checks);
        if self.graph_kernel != GraphKernel::Shared
            || graph_threads(n, self.graph_checks) > SMALL_GRAPH_THREADS
        {
            return Ok((dense, 0));
        }
        let f = self.kernels.get(SHARED)?;
        let attribute = |what, e| device_error(op, what, e);
        let opt_in = self
            .ctx
            .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)
            .map_err(|e| attribute("reading the shared memory per block", e))?;
        let own = f
            .get_attribute(CUfunction_attribute::CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES)
            .map_err(|e| attribute("reading a kernel's shared memory", e))?;
        let most = (opt_in - own).max(0);
        let bytes = packed_bytes(n);
        if bytes > most as usize {
            return Ok((dense, 0));
        }
        // The most there is, whatever this graph needs: a limit set to each launch's size
        // could be lowered by a caller on another thread between the setting and the launch.
        f.set_attribute(
            CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
            most,
        )
        .map_err(|e| attribute("allowing a kernel more shared memory", e))?;
        Ok((SHARED, bytes as u32))
    }

    /// How many graphs one launch of `fiedler_graphs` works on at once (its grid; each block
    /// then takes every grid-th graph): all of them, unless [`resident_per_sm`] bounds it.
    fn resident_graphs(&self, op: &'static str) -> Result<usize> {
        let Some(per_sm) = resident_per_sm() else {
            return Ok(usize::MAX);
        };
        let sms = self
            .ctx
            .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_err(|e| device_error(op, "reading the SM count", e))?;
        Ok(per_sm * sms.max(1) as usize)
    }

    /// Runs the three stages on the packed graphs of `layout`, whose node k is the `dim`
    /// floats at device address `source[k]` (inside a buffer the caller holds until this
    /// returns, which synchronises); returns the results by the caller's graph index, one for
    /// each of `graphs` (`None` for graphs not in the layout). `clock` marks the stages and
    /// the results' landing when it is timing.
    #[allow(clippy::too_many_arguments)]
    fn solve(
        &self,
        op: &'static str,
        dim: usize,
        source: &[u64],
        layout: &Layout,
        l2_normalize: bool,
        graphs: usize,
        clock: &StageClock,
    ) -> Result<Vec<Option<Solved>>> {
        let blocks = layout.order.len();
        let total = layout.total();
        let dev_source = self.upload_any(op, source)?;
        let dev_starts = self.upload_any(op, &layout.node_start)?;
        let dev_work_starts = self.upload_any(op, &layout.work_start)?;
        // SAFETY: `fiedler_rows` writes every row (it runs whenever total·dim > 0).
        let mut rows = unsafe { self.alloc_unwritten::<f64>(op, total * dim) }?;
        // A flag per node, then how many are set.
        let mut nonfinite = self.alloc::<i32>(op, total + 1)?;
        // Every part of a graph's workspace is written before it is read — M by the DGEMM,
        // which is skipped for zero-width features: then M must be (and is) all zero.
        let mut work = if dim > 0 {
            // SAFETY: as said above.
            unsafe { self.alloc_unwritten::<f64>(op, layout.work.max(1)) }?
        } else {
            self.alloc::<f64>(op, layout.work.max(1))?
        };
        let mut signed = self.alloc::<f32>(op, total.max(1))?;
        let mut stats = self.alloc::<f64>(op, STAT_ROWS * blocks)?;
        clock.mark(self, op, 0)?;
        let has_rows = total > 0 && dim > 0;
        if has_rows {
            let warps = ROWS_BLOCK as usize / 32;
            let cfg = LaunchConfig {
                grid_dim: (int(op, total.div_ceil(warps))? as u32, 1, 1),
                block_dim: (ROWS_BLOCK, 1, 1),
                shared_mem_bytes: 0,
            };
            let (n_rows, d, l2) = (int(op, total)?, int(op, dim)?, i32::from(l2_normalize));
            launch!(
                self,
                "fiedler_rows",
                cfg,
                &dev_source,
                &mut rows,
                &mut nonfinite,
                &n_rows,
                &d,
                &l2
            )?;
        }
        clock.mark(self, op, 1)?;
        if has_rows {
            for (n, range) in &layout.groups {
                self.profile.span(
                    &self.ctx,
                    &self.stream,
                    profile::Kind::Gemm,
                    "fiedler_gram",
                    || {
                        self.gram(
                            &rows,
                            layout.node_start[range.start] as usize * dim,
                            &work,
                            layout.work_start[range.start] as usize,
                            *n,
                            dim,
                            range.len(),
                        )
                    },
                )?;
            }
        }
        clock.mark(self, op, 2)?;
        let resident = self.resident_graphs(op)?;
        for (n, range) in &layout.groups {
            let (kernel, shared_mem_bytes) = self.graph_kernel_for(op, *n)?;
            let cfg = LaunchConfig {
                grid_dim: (int(op, range.len().min(resident))? as u32, 1, 1),
                block_dim: (graph_threads(*n, self.graph_checks), 1, 1),
                shared_mem_bytes,
            };
            let (first_graph, count) = (int(op, range.start)?, int(op, range.len())?);
            let all = int(op, blocks)?;
            let overlap = i32::from(self.graph_checks == GraphChecks::Overlapped);
            launch!(
                self,
                kernel,
                cfg,
                &dev_starts,
                &dev_work_starts,
                &mut work,
                &first_graph,
                &count,
                &mut signed,
                &mut stats,
                &all,
                &overlap
            )?;
        }
        clock.mark(self, op, 3)?;
        let host = |e| device_error(op, "device-to-host copy (or a kernel before it)", e);
        let signed = self.stream.clone_dtoh(&signed).map_err(host)?;
        let stats = self.stream.clone_dtoh(&stats).map_err(host)?;
        let flagged = self
            .stream
            .clone_dtoh(&nonfinite.slice(total..))
            .map_err(host)?;
        // The copies have landed only once the stream is done (see `host_now`).
        self.synchronize()?;
        clock.landed();
        // The per-node flags cross only when a row was flagged: rarely, and then to name it.
        let nonfinite = if flagged[0] > 0 {
            self.host_now(op, &nonfinite.slice(..total))?
        } else {
            Vec::new()
        };
        let stat = |row: usize, b: usize| stats[row * blocks + b];
        let defined = |v: f64| (!v.is_nan()).then_some(v);
        let mut solved = unsolved(graphs);
        for (b, &i) in layout.order.iter().enumerate() {
            let range = layout.nodes(b);
            solved[i] = Some(Solved {
                signed: signed[range.clone()].to_vec(),
                lambda2: defined(stat(STAT_LAMBDA2, b)),
                gap: defined(stat(STAT_GAP, b)),
                residual: stat(STAT_RESIDUAL, b),
                steps: stat(STAT_STEPS, b) as usize,
                nonfinite: nonfinite
                    .get(range)
                    .and_then(|flags| flags.iter().position(|&f| f != 0)),
            });
        }
        Ok(solved)
    }
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
                blas.raw(),
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
        .map_err(|e| self.lost_or(OP, cublas(e)))
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
        use GraphChecks::{Inline, Overlapped};
        for (n, inline, overlapped) in [
            (0, 64, 64),
            (20, 64, 64),
            (36, 64, 64),
            (64, 64, 64),
            (65, 96, 128),
            (196, 224, 256),
            (224, 224, 256),
            (225, 256, 256),
            (256, 256, 256),
            (257, 288, 320),
            (480, 480, 512),
            (481, 512, 512),
            (577, 512, 512),
            (10_000, 512, 512),
        ] {
            assert_eq!(graph_threads(n, Inline), inline, "{n} nodes, inline");
            assert_eq!(graph_threads(n, Overlapped), overlapped, "{n} nodes");
        }
    }

    #[test]
    fn graphs_up_to_256_nodes_go_to_the_small_kernel_within_its_bounds() {
        for checks in [GraphChecks::Inline, GraphChecks::Overlapped] {
            for n in [0, 1, 36, 196, 224, 225, 256] {
                assert_eq!(
                    GraphKernel::Auto.dense(n, checks),
                    "fiedler_graphs_small",
                    "{n} nodes, {checks:?}"
                );
                assert_eq!(GraphKernel::General.dense(n, checks), "fiedler_graphs");
                assert!(graph_threads(n, checks) <= SMALL_GRAPH_THREADS);
            }
            for n in [257, 577, 10_000] {
                let kernel = GraphKernel::Auto.dense(n, checks);
                assert_eq!(kernel, "fiedler_graphs", "{n} nodes, {checks:?}");
            }
        }
    }
}
