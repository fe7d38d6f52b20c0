//! The CUDA backend: f32 buffers in device memory, one stream, the dense products in cuBLAS
//! and everything else in the hand-written kernels of kernels/ (see `kernels`). It has the
//! CPU backend's contract op for op; tests/cuda_backend.rs holds it to the CPU oracle.
//!
//! Nothing here waits for the device except `download`/`move_to_host`: ops only enqueue work,
//! so a model's forward and backward run without host round-trips (index-like arguments —
//! token ids, gathered rows, key masks — are copied up, never read back).

mod blas;
mod error;
pub mod kernels;
pub mod plan;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};

use cudarc::driver::result::memset_d8_async;
use cudarc::driver::sys::{CUdeviceptr, CUresult};
use cudarc::driver::{
    CudaContext, CudaSlice, CudaStream, DevicePtr, DeviceRepr, DriverError, LaunchConfig,
    PushKernelArg, ValidAsZeroBits,
};

use crate::backend::cpu::relevance;
use crate::linalg::{Fiedler, GraphOptions, SpectralError};

use super::{
    check, Activation, AttentionShape, Backend, BackendError, HeadMean, HeadRows, MeanGraph,
    PatchGeometry, ReadoutRow, RelevanceProduct, Result,
};
pub use error::CudaError;
use kernels::Kernels;
use row_table::RowTable;
pub use spectral::{BufferGraph, FiedlerStages, GraphChecks, GraphKernel};
pub use staging::Downloads;
use staging::Staging;

/// Threads per block of the elementwise and per-row kernels.
const BLOCK: u32 = 256;

/// Output rows per block of `head_mean_matvec` (MATVEC_ROWS in kernels/attention.cu).
const MATVEC_ROWS: usize = 32;

pub struct Cuda {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    blas: Mutex<blas::BlasHandle>,
    kernels: Kernels,
    /// The last attention key mask uploaded: every layer of a tower reuses it.
    mask: Mutex<Option<(Vec<bool>, CudaSlice<u8>)>>,
    /// Passed where an attention has no key mask (the kernel does not read it).
    no_mask: CudaSlice<u8>,
    description: String,
    /// Device time per op, when FIEDLER_CUDA_PROFILE asks for it.
    profile: profile::Profile,
    /// Which kernels solve Fiedler graphs.
    graph_kernel: GraphKernel,
    /// Where their Lanczos runs check convergence.
    graph_checks: GraphChecks,
    /// The page-locked buffer downloads land in.
    staging: Mutex<Staging>,
}

/// Launches `$kernel` with `$cfg` and the arguments (references that outlive the call).
macro_rules! launch {
    ($self:expr, $kernel:expr, $cfg:expr, $($arg:expr),+ $(,)?) => {{
        let cfg: LaunchConfig = $cfg;
        let f = $self.kernels.get($kernel)?;
        let mut builder = $self.stream.launch_builder(f);
        $( builder.arg($arg); )+
        let kernel: &'static str = $kernel;
        $self.profile.span(&$self.ctx, &$self.stream, profile::Kind::Kernel, kernel, || {
            // SAFETY: the argument list matches the kernel's signature in kernels/, and the
            // caller checked every buffer's length against the sizes passed.
            unsafe { builder.launch(cfg) }
                .map(|_| ())
                .map_err(|e| device_error(kernel, "kernel launch", e))
        })
    }};
}

mod graph_rows;
mod profile;
mod row_table;
mod spectral;
mod staging;

fn device_error(op: &'static str, what: &str, e: DriverError) -> BackendError {
    let message = format!("{what} failed: {e}");
    match loses_the_context(&e) {
        true => BackendError::DeviceLost { op, message },
        false => BackendError::Device { op, message },
    }
}

/// The errors after which a context runs nothing more: cuda.h documents each as leaving the
/// process in an inconsistent state (the process must end to use CUDA again). Kernels run
/// asynchronously, so the call that returns one is whichever came next (a launch, a copy, a
/// synchronisation), not the kernel that failed. A contained hardware fault (H100 and later
/// report those), leaked tensor memory, an MPS server that ended, and an external device's
/// failure lose the context too.
fn loses_the_context(e: &DriverError) -> bool {
    use CUresult::*;
    matches!(
        e.0,
        CUDA_ERROR_ILLEGAL_ADDRESS
            | CUDA_ERROR_LAUNCH_TIMEOUT
            | CUDA_ERROR_ASSERT
            | CUDA_ERROR_HARDWARE_STACK_ERROR
            | CUDA_ERROR_ILLEGAL_INSTRUCTION
            | CUDA_ERROR_MISALIGNED_ADDRESS
            | CUDA_ERROR_INVALID_ADDRESS_SPACE
            | CUDA_ERROR_INVALID_PC
            | CUDA_ERROR_LAUNCH_FAILED
            | CUDA_ERROR_CONTAINED
            | CUDA_ERROR_TENSOR_MEMORY_LEAK
            | CUDA_ERROR_MPS_CLIENT_TERMINATED
            | CUDA_ERROR_EXTERNAL_DEVICE
    )
}

/// The most blocks `per_element` launches.
const MAX_ELEMENT_BLOCKS: u32 = 65_535 * 16;

/// The largest size a kernel takes: its grid-stride loops (`FOR_EACH`) step a 32-bit index
/// past the last element by up to the grid's thread count, which must not wrap.
const MAX_INT: usize = i32::MAX as usize - (MAX_ELEMENT_BLOCKS * BLOCK) as usize;

/// A size as the kernels take it.
fn int(op: &'static str, v: usize) -> Result<i32> {
    if v > MAX_INT {
        return Err(BackendError::Invalid {
            op,
            message: format!(
                "{v} elements exceed the kernels' 32-bit indices (at most {MAX_INT}); use a smaller batch"
            ),
        });
    }
    Ok(v as i32)
}

/// Enough blocks of `BLOCK` threads for one thread per element (the kernels loop over the
/// rest with a grid stride).
fn per_element(n: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (
            (n as u32).div_ceil(BLOCK).clamp(1, MAX_ELEMENT_BLOCKS),
            1,
            1,
        ),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// One block per row, with at most `BLOCK` threads (a whole number of warps).
fn per_row(rows: usize, dim: usize) -> LaunchConfig {
    let threads = (dim as u32).div_ceil(32).clamp(1, BLOCK / 32) * 32;
    LaunchConfig {
        grid_dim: (rows as u32, 1, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// One warp per row.
fn warp_per_row(rows: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: ((rows as u32).div_ceil(BLOCK / 32), 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

impl Cuda {
    /// Opens the first CUDA device. Every way this can fail (no driver, no device, missing
    /// cuBLAS or NVRTC, kernels that do not load) is an error value, never a panic.
    pub fn new() -> std::result::Result<Self, CudaError> {
        Self::on_device(0)
    }

    pub fn on_device(ordinal: usize) -> std::result::Result<Self, CudaError> {
        // SAFETY: only tries to dlopen the library.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err(CudaError::MissingLibrary {
                library: "libcuda.so (the NVIDIA driver)",
                needed: "use a GPU",
            });
        }
        let ctx = catch_unwind(|| CudaContext::new(ordinal))
            .map_err(|_| CudaError::Panic("opening the device".into()))?
            .map_err(|e| match e.0 {
                CUresult::CUDA_ERROR_NO_DEVICE | CUresult::CUDA_ERROR_INVALID_DEVICE => {
                    CudaError::NoDevice(format!("device {ordinal}: {e}"))
                }
                _ => CudaError::driver("opening the device", e),
            })?;
        // One stream: the multi-stream event bookkeeping would only add overhead.
        // SAFETY: nothing has been allocated yet, and every op runs on `stream`.
        unsafe { ctx.disable_event_tracking() };
        let release = std::env::var("FIEDLER_CUDA_MEMORY").is_ok_and(|v| v == "release");
        if ctx.has_async_alloc() && !release {
            keep_freed_device_memory(&ctx)?;
        }
        let stream = ctx
            .new_stream()
            .map_err(|e| CudaError::driver("creating a stream", e))?;
        // SAFETY: only tries to dlopen the libraries.
        if !unsafe { cudarc::cublas::sys::is_culib_present() } {
            return Err(CudaError::MissingLibrary {
                library: "libcublas.so.13 (with libcublasLt.so.13)",
                needed: "run the dense products",
            });
        }
        let blas = catch_unwind(AssertUnwindSafe(|| blas::BlasHandle::new(stream.clone())))
            .map_err(|_| CudaError::Panic("cuBLAS".into()))?
            .map_err(|e| CudaError::Blas {
                during: "creating a handle",
                error: format!("{e:?}"),
            })?;
        let kernels = catch_unwind(AssertUnwindSafe(|| Kernels::load(&ctx)))
            .map_err(|_| CudaError::Panic("loading the kernels".into()))??;
        let no_mask = stream
            .alloc_zeros::<u8>(1)
            .map_err(|e| CudaError::driver("allocating", e))?;
        let name = ctx.name().unwrap_or_else(|_| "unknown GPU".into());
        let (major, minor) = ctx
            .compute_capability()
            .map_err(|e| CudaError::driver("reading the compute capability", e))?;
        let total = ctx.total_mem().unwrap_or(0);
        let description = format!(
            "{name} (sm_{major}{minor}, {}; kernels: {})",
            super::human_size(total),
            kernels.origin
        );
        Ok(Self {
            ctx,
            stream,
            blas: Mutex::new(blas),
            kernels,
            mask: Mutex::new(None),
            no_mask,
            description,
            profile: profile::Profile::from_env(),
            graph_kernel: GraphKernel::from_env(),
            graph_checks: GraphChecks::from_env(),
            staging: Mutex::new(Staging::new(Downloads::from_env())),
        })
    }

    /// The device and how its kernels were obtained, for people.
    pub fn describe(&self) -> &str {
        &self.description
    }

    /// Lets cuBLAS run the f32 dense products on TF32 tensor cores: inputs rounded to a
    /// 10-bit mantissa (relative error up to 2⁻¹¹ per operand), f32 accumulation, several
    /// times the f32 rate. Off by default; how far traces and explanations move is measured
    /// in tests/cuda_backend.rs (`tf32_trace_stays_within_its_stated_bounds`) and stated in
    /// docs/performance.md. The spectral solver's f64 products are unaffected.
    pub fn with_tf32(mut self) -> std::result::Result<Self, CudaError> {
        let blas = self.blas.lock().unwrap_or_else(|p| p.into_inner());
        // SAFETY: a valid handle, used by no other thread while the lock is held.
        let status = unsafe {
            cudarc::cublas::sys::cublasSetMathMode(
                blas.raw(),
                cudarc::cublas::sys::cublasMath_t::CUBLAS_TF32_TENSOR_OP_MATH,
            )
        };
        drop(blas);
        if status != cudarc::cublas::sys::cublasStatus_t::CUBLAS_STATUS_SUCCESS {
            return Err(CudaError::Blas {
                during: "allowing TF32 products",
                error: format!("{status:?}"),
            });
        }
        self.description.push_str("; TF32 products");
        Ok(self)
    }

    /// Solves Fiedler graphs with `kernel` from now on (`FIEDLER_GRAPH_KERNEL` sets it when
    /// the backend opens).
    pub fn with_graph_kernel(mut self, kernel: GraphKernel) -> Self {
        self.graph_kernel = kernel;
        self
    }

    /// Runs the Fiedler solver's convergence checks `checks` from now on
    /// (`FIEDLER_GRAPH_CHECKS` sets it when the backend opens).
    pub fn with_graph_checks(mut self, checks: GraphChecks) -> Self {
        self.graph_checks = checks;
        self
    }

    /// Brings downloads to the host `downloads` from now on (`FIEDLER_CUDA_DOWNLOADS` sets it
    /// when the backend opens).
    pub fn with_downloads(self, downloads: Downloads) -> Self {
        Self {
            staging: Mutex::new(Staging::new(downloads)),
            ..self
        }
    }

    /// `copy`, profiled as a download.
    fn download_span<T>(&self, copy: impl FnOnce() -> Result<T>) -> Result<T> {
        let kind = profile::Kind::ToHost;
        self.profile
            .span(&self.ctx, &self.stream, kind, "download", copy)
    }

    /// Waits for every enqueued op (for timing).
    pub fn synchronize(&self) -> Result<()> {
        self.stream
            .synchronize()
            .map_err(|e| device_error("synchronize", "a kernel or copy", e))
    }

    fn ptr(&self, s: &CudaSlice<f32>) -> CUdeviceptr {
        // Event tracking is off: the returned guard records nothing.
        s.device_ptr(&self.stream).0
    }

    fn alloc_error(&self, op: &'static str, bytes: usize, e: DriverError) -> BackendError {
        if e.0 == CUresult::CUDA_ERROR_OUT_OF_MEMORY {
            let (free, total) = self.ctx.mem_get_info().unwrap_or((0, 0));
            BackendError::OutOfMemory {
                op,
                memory: "device",
                requested: bytes,
                free,
                total,
            }
        } else {
            device_error(op, "allocation", e)
        }
    }

    fn alloc<T: DeviceRepr + ValidAsZeroBits>(
        &self,
        op: &'static str,
        len: usize,
    ) -> Result<CudaSlice<T>> {
        if len == 0 {
            return self.empty(op);
        }
        self.profile
            .span(&self.ctx, &self.stream, profile::Kind::Zeros, op, || {
                self.stream
                    .alloc_zeros(len)
                    .map_err(|e| self.alloc_error(op, len * std::mem::size_of::<T>(), e))
            })
    }

    /// An empty buffer. cudarc's `null` asks the driver for 0 bytes, which `cuMemAlloc`, the
    /// allocator of a device without memory pools, refuses: there one element is allocated
    /// and held behind the empty slice, which frees it when dropped.
    fn empty<T: DeviceRepr>(&self, op: &'static str) -> Result<CudaSlice<T>> {
        let failed = |e| device_error(op, "allocation", e);
        if self.ctx.has_async_alloc() {
            return self.stream.null().map_err(failed);
        }
        // SAFETY: nothing reads the element (the slice has none); one element's room is
        // more than an empty slice needs, and event tracking is off, so nothing else is
        // attached to it.
        let one = unsafe { self.stream.alloc::<T>(1) }.map_err(failed)?;
        Ok(unsafe { self.stream.upgrade_device_ptr(one.leak(), 0) })
    }

    /// A device buffer left as it is, for buffers an op overwrites in full: the zero fill
    /// is a pass of writes over the buffer (about 1 GB for the f64 rows and workspaces of
    /// 512 graphs of 196 nodes; about 18 GB over a CLIP ViT-B/16 trace at batch 64).
    ///
    /// # Safety
    /// Every element must be written before anything reads it, unless any bit pattern is a
    /// valid `T` (f32, f64, i32), where reading first gives unspecified values.
    unsafe fn alloc_unwritten<T: DeviceRepr + ValidAsZeroBits>(
        &self,
        op: &'static str,
        len: usize,
    ) -> Result<CudaSlice<T>> {
        if len == 0 {
            return self.alloc(op, 0);
        }
        // SAFETY: as the caller promises.
        unsafe { self.stream.alloc::<T>(len) }
            .map_err(|e| self.alloc_error(op, len * std::mem::size_of::<T>(), e))
    }

    /// Zeroes each of `bufs` (an op's outputs that it has nothing to write into).
    fn fill_zeros<const N: usize>(
        &self,
        op: &'static str,
        bufs: [&mut CudaSlice<f32>; N],
    ) -> Result<()> {
        for buf in bufs.into_iter().filter(|b| !b.is_empty()) {
            self.stream
                .memset_zeros(buf)
                .map_err(|e| device_error(op, "memset", e))?;
        }
        Ok(())
    }

    /// A cuBLAS product of the plan `g`, for op `name`.
    fn gemm(&self, name: &'static str, g: &plan::Gemm) -> Result<()> {
        if g.shape.2 == 0 {
            let runs = g
                .termless_zeros()
                .map_err(|message| BackendError::Invalid { op: name, message })?;
            for (at, bytes) in runs {
                // SAFETY: the callers checked C's buffer against the plan's shape and
                // strides, which address only inside it.
                unsafe { memset_d8_async(at, 0, bytes, self.stream.cu_stream()) }
                    .map_err(|e| device_error(name, "memset", e))?;
            }
            return Ok(());
        }
        self.profile
            .span(&self.ctx, &self.stream, profile::Kind::Gemm, name, || {
                blas::gemm(&self.blas, name, g)
            })
            .map_err(|e| self.lost_or(name, e))
    }

    /// `e`, a cuBLAS failure, or the lost context behind it: cuBLAS reports an earlier
    /// kernel's fault as a failure of its own (CUBLAS_STATUS_EXECUTION_FAILED), which the
    /// stream then names.
    fn lost_or(&self, op: &'static str, e: BackendError) -> BackendError {
        match self.stream.synchronize() {
            Err(lost) if loses_the_context(&lost) => {
                device_error(op, "a kernel before this cuBLAS call", lost)
            }
            _ => e,
        }
    }

    fn upload_any<T: DeviceRepr + ValidAsZeroBits>(
        &self,
        op: &'static str,
        host: &[T],
    ) -> Result<CudaSlice<T>> {
        // SAFETY: the copy below overwrites every element before any kernel reads them.
        let mut buf = unsafe { self.alloc_unwritten::<T>(op, host.len()) }?;
        if host.is_empty() {
            return Ok(buf);
        }
        self.stream
            .memcpy_htod(host, &mut buf)
            .map_err(|e| device_error(op, "host-to-device copy", e))?;
        Ok(buf)
    }

    fn bind(&self, op: &'static str) -> Result<()> {
        self.ctx
            .bind_to_thread()
            .map_err(|e| device_error(op, "binding the context", e))
    }

    /// Row indices as the kernels read them.
    fn upload_rows(&self, op: &'static str, rows: &[usize]) -> Result<CudaSlice<i32>> {
        let rows: Vec<i32> = rows.iter().map(|&r| int(op, r)).collect::<Result<_>>()?;
        self.upload_any(op, &rows)
    }

    fn softmax(&self, probs: &mut CudaSlice<f32>, s: &AttentionShape) -> Result<()> {
        let rows = s.batch * s.heads * s.queries;
        let (r, h, nq, nk) = (
            int("attention", rows)?,
            int("attention", s.heads)?,
            int("attention", s.queries)?,
            int("attention", s.keys)?,
        );
        let causal = i32::from(s.causal);
        let cfg = warp_per_row(rows);
        match &s.key_mask {
            None => {
                let has_mask = 0i32;
                launch!(
                    self,
                    "softmax_fwd",
                    cfg,
                    probs,
                    &self.no_mask,
                    &r,
                    &h,
                    &nq,
                    &nk,
                    &causal,
                    &has_mask
                )
            }
            Some(mask) => {
                let mut cached = self.mask.lock().unwrap_or_else(|p| p.into_inner());
                if cached.as_ref().is_none_or(|(m, _)| m != mask) {
                    let bytes: Vec<u8> = mask.iter().map(|&v| u8::from(v)).collect();
                    *cached = Some((mask.clone(), self.upload_any("attention", &bytes)?));
                }
                let (_, dev_mask) = cached.as_ref().expect("set above");
                let has_mask = 1i32;
                launch!(
                    self,
                    "softmax_fwd",
                    cfg,
                    probs,
                    dev_mask,
                    &r,
                    &h,
                    &nq,
                    &nk,
                    &causal,
                    &has_mask
                )
            }
        }
    }
}

impl Backend for Cuda {
    type Buf = CudaSlice<f32>;

    fn name(&self) -> &'static str {
        "cuda"
    }

    fn upload(&self, host: &[f32]) -> Result<CudaSlice<f32>> {
        self.upload_any("upload", host)
    }

    fn zeros(&self, len: usize) -> Result<CudaSlice<f32>> {
        self.alloc("zeros", len)
    }

    fn uninit(&self, len: usize) -> Result<CudaSlice<f32>> {
        // SAFETY: any bit pattern is an f32; an op that read before writing would see
        // unspecified values (NaN on the CUDA emulator, which the tests would catch).
        unsafe { self.alloc_unwritten("uninit", len) }
    }

    fn download(&self, buf: &CudaSlice<f32>) -> Result<Vec<f32>> {
        if buf.is_empty() {
            return Ok(Vec::new());
        }
        let err = |e| device_error("download", "device-to-host copy", e);
        let mut staging = self.staging.lock().unwrap_or_else(|p| p.into_inner());
        let Some(pinned) = staging.fit(&self.ctx, buf.len()) else {
            let host = self.download_span(|| self.stream.clone_dtoh(buf).map_err(err))?;
            // Also where a kernel's asynchronous failure (e.g. an illegal address) surfaces.
            self.synchronize()?;
            return Ok(host);
        };
        // A copy fills its whole destination: the part this download needs. Asynchronous,
        // into page-locked memory: the synchronisation lands it.
        let landing = &mut pinned.as_mut_slice().map_err(err)?[..buf.len()];
        self.download_span(|| self.stream.memcpy_dtoh(buf, landing).map_err(err))?;
        self.synchronize()?;
        Ok(landing.to_vec())
    }

    fn move_to_host(&self, buf: CudaSlice<f32>) -> Result<Vec<f32>> {
        self.download(&buf)
    }

    fn copy(&self, buf: &CudaSlice<f32>) -> Result<CudaSlice<f32>> {
        // SAFETY: the copy below overwrites every element.
        let mut out = unsafe { self.alloc_unwritten("copy", buf.len()) }?;
        if !buf.is_empty() {
            self.stream
                .memcpy_dtod(buf, &mut out)
                .map_err(|e| device_error("copy", "device-to-device copy", e))?;
        }
        Ok(out)
    }

    /// Kept as Hugging Face stores it, `[out, in]`: cuBLAS reads either order at full speed.
    fn upload_weight(&self, w: &[f32], out: usize, input: usize) -> Result<CudaSlice<f32>> {
        check::len("upload_weight", "w", w.len(), out * input)?;
        self.upload_any("upload_weight", w)
    }

    fn len(&self, buf: &CudaSlice<f32>) -> usize {
        buf.len()
    }

    fn synchronize(&self) -> Result<()> {
        Cuda::synchronize(self)
    }

    fn profile_report(&self) -> Result<Option<String>> {
        self.profile.report()
    }

    fn profile_restart(&self) -> Result<()> {
        self.profile.restart()
    }

    fn linear(
        &self,
        out: &mut CudaSlice<f32>,
        x: &CudaSlice<f32>,
        w: &CudaSlice<f32>,
        bias: Option<&CudaSlice<f32>>,
        m: usize,
        k: usize,
        n: usize,
    ) -> Result<()> {
        check::linear(out.len(), x.len(), bias.map(|b| b.len()), m, k, n)?;
        check::len("linear", "weight", w.len(), n * k)?;
        self.bind("linear")?;
        let (xp, wp, op) = (self.ptr(x), self.ptr(w), self.ptr(out));
        self.gemm("linear", &plan::linear(xp, wp, op, m, k, n))?;
        match bias {
            // No outputs (n = 0): no bias to add, and no rows of 0 for add_row_vector.
            Some(b) if !out.is_empty() => self.add_row_vector(out, b),
            _ => Ok(()),
        }
    }

    fn linear_backward(
        &self,
        dx: &mut CudaSlice<f32>,
        dy: &CudaSlice<f32>,
        w: &CudaSlice<f32>,
        m: usize,
        k: usize,
        n: usize,
        accumulate: bool,
    ) -> Result<()> {
        check::linear_backward(dx.len(), dy.len(), m, k, n)?;
        check::len("linear_backward", "weight", w.len(), n * k)?;
        self.bind("linear_backward")?;
        let (dyp, wp, dxp) = (self.ptr(dy), self.ptr(w), self.ptr(dx));
        let g = plan::linear_backward(dyp, wp, dxp, m, k, n, accumulate);
        self.gemm("linear_backward", &g)
    }

    fn layernorm(
        &self,
        out: &mut CudaSlice<f32>,
        stats: &mut CudaSlice<f32>,
        x: &CudaSlice<f32>,
        gamma: &CudaSlice<f32>,
        beta: &CudaSlice<f32>,
        dim: usize,
        eps: f32,
    ) -> Result<()> {
        let rows = check::layernorm(
            "layernorm",
            x.len(),
            &[("out", out.len())],
            stats.len(),
            &[("gamma", gamma.len()), ("beta", beta.len())],
            dim,
        )?;
        if rows == 0 {
            return Ok(());
        }
        let (r, d) = (int("layernorm", rows)?, int("layernorm", dim)?);
        launch!(
            self,
            "layernorm_fwd",
            per_row(rows, dim),
            out,
            stats,
            x,
            gamma,
            beta,
            &r,
            &d,
            &eps
        )
    }

    fn layernorm_backward(
        &self,
        dx: &mut CudaSlice<f32>,
        dy: &CudaSlice<f32>,
        x: &CudaSlice<f32>,
        stats: &CudaSlice<f32>,
        gamma: &CudaSlice<f32>,
        dim: usize,
        accumulate: bool,
    ) -> Result<()> {
        let rows = check::layernorm(
            "layernorm_backward",
            x.len(),
            &[("dx", dx.len()), ("dy", dy.len())],
            stats.len(),
            &[("gamma", gamma.len())],
            dim,
        )?;
        if rows == 0 {
            return Ok(());
        }
        let (r, d) = (
            int("layernorm_backward", rows)?,
            int("layernorm_backward", dim)?,
        );
        let acc = i32::from(accumulate);
        launch!(
            self,
            "layernorm_bwd",
            per_row(rows, dim),
            dx,
            dy,
            x,
            stats,
            gamma,
            &r,
            &d,
            &acc
        )
    }

    fn activation(
        &self,
        out: &mut CudaSlice<f32>,
        x: &CudaSlice<f32>,
        act: Activation,
    ) -> Result<()> {
        check::len("activation", "out", out.len(), x.len())?;
        if x.is_empty() {
            return Ok(());
        }
        let (n, kind) = (int("activation", x.len())?, act as i32);
        launch!(
            self,
            "activation_fwd",
            per_element(x.len()),
            out,
            x,
            &n,
            &kind
        )
    }

    fn activation_backward(
        &self,
        dx: &mut CudaSlice<f32>,
        dy: &CudaSlice<f32>,
        x: &CudaSlice<f32>,
        act: Activation,
    ) -> Result<()> {
        check::len("activation_backward", "dx", dx.len(), x.len())?;
        check::len("activation_backward", "dy", dy.len(), x.len())?;
        if x.is_empty() {
            return Ok(());
        }
        let (n, kind) = (int("activation_backward", x.len())?, act as i32);
        launch!(
            self,
            "activation_bwd",
            per_element(x.len()),
            dx,
            dy,
            x,
            &n,
            &kind
        )
    }

    fn add(&self, out: &mut CudaSlice<f32>, a: &CudaSlice<f32>, b: &CudaSlice<f32>) -> Result<()> {
        check::len("add", "out", out.len(), a.len())?;
        check::len("add", "b", b.len(), a.len())?;
        if a.is_empty() {
            return Ok(());
        }
        let n = int("add", a.len())?;
        launch!(self, "add", per_element(a.len()), out, a, b, &n)
    }

    fn add_assign(&self, dst: &mut CudaSlice<f32>, src: &CudaSlice<f32>) -> Result<()> {
        check::len("add_assign", "src", src.len(), dst.len())?;
        if src.is_empty() {
            return Ok(());
        }
        let n = int("add_assign", src.len())?;
        launch!(self, "add_assign", per_element(src.len()), dst, src, &n)
    }

    fn attention(
        &self,
        probs: &mut CudaSlice<f32>,
        ctx: &mut CudaSlice<f32>,
        q: &CudaSlice<f32>,
        kv: &CudaSlice<f32>,
        s: &AttentionShape,
    ) -> Result<()> {
        let lens = check::AttentionBuffers {
            q: q.len(),
            kv: kv.len(),
            ctx: ctx.len(),
            probs: probs.len(),
            grads: None,
        };
        check::attention("attention", s, lens)?;
        if s.probs_len() == 0 {
            // No query–key pair: queries (if any) attend to nothing.
            return self.fill_zeros("attention", [ctx]);
        }
        self.bind("attention")?;
        let (qp, kvp, pp, cp) = (self.ptr(q), self.ptr(kv), self.ptr(probs), self.ptr(ctx));
        for g in plan::attention_scores(s, qp, kvp, pp) {
            self.gemm("attention", &g)?;
        }
        self.softmax(probs, s)?;
        for g in plan::attention_context(s, pp, kvp, cp) {
            self.gemm("attention", &g)?;
        }
        Ok(())
    }

    fn attention_backward(
        &self,
        dprobs: &mut CudaSlice<f32>,
        dq: &mut CudaSlice<f32>,
        dkv: &mut CudaSlice<f32>,
        dctx: &CudaSlice<f32>,
        q: &CudaSlice<f32>,
        kv: &CudaSlice<f32>,
        probs: &CudaSlice<f32>,
        s: &AttentionShape,
    ) -> Result<()> {
        let lens = check::AttentionBuffers {
            q: q.len(),
            kv: kv.len(),
            ctx: dctx.len(),
            probs: probs.len(),
            grads: Some((dq.len(), dkv.len(), dprobs.len())),
        };
        check::attention("attention_backward", s, lens)?;
        if s.probs_len() == 0 {
            // No query–key pair: no gradient reaches the queries, keys or values.
            return self.fill_zeros("attention_backward", [dq, dkv]);
        }
        const OP: &str = "attention_backward";
        self.bind(OP)?;
        let (qp, kvp, pp) = (self.ptr(q), self.ptr(kv), self.ptr(probs));
        let (dcp, dpp) = (self.ptr(dctx), self.ptr(dprobs));
        for g in plan::attention_dprobs(s, dcp, kvp, dpp) {
            self.gemm(OP, &g)?;
        }
        // SAFETY: `softmax_bwd` writes every row.
        let mut ds = unsafe { self.alloc_unwritten::<f32>(OP, s.probs_len()) }?;
        let rows = s.batch * s.heads * s.queries;
        let (r, nk) = (int(OP, rows)?, int(OP, s.keys)?);
        launch!(
            self,
            "softmax_bwd",
            warp_per_row(rows),
            &mut ds,
            &*dprobs,
            probs,
            &r,
            &nk
        )?;
        let addrs = plan::BackwardAddrs {
            q: qp,
            kv: kvp,
            probs: pp,
            dctx: dcp,
            ds: self.ptr(&ds),
            dq: self.ptr(dq),
            dkv: self.ptr(dkv),
        };
        for g in plan::attention_inputs(s, &addrs) {
            self.gemm(OP, &g)?;
        }
        // `ds` is freed in stream order after the products that read it.
        Ok(())
    }

    fn fiedler_rows(
        &self,
        graphs: &[(&CudaSlice<f32>, &[usize])],
        dim: usize,
        opts: &GraphOptions,
    ) -> Result<Vec<std::result::Result<Fiedler, SpectralError>>> {
        self.fiedler_of_rows(graphs, dim, opts)
    }

    fn head_mean(
        &self,
        out: &mut CudaSlice<f32>,
        kind: HeadMean,
        x: &CudaSlice<f32>,
        grad: Option<&CudaSlice<f32>>,
        heads: usize,
        entries: usize,
    ) -> Result<()> {
        const OP: &str = "head_mean";
        let g = grad.map(CudaSlice::len);
        let samples = check::head_mean(kind, out.len(), x.len(), g, heads, entries)?;
        if out.is_empty() {
            return Ok(());
        }
        // Where the kind ignores ∇A the kernel never reads `g`: any buffer will do.
        let g = grad.filter(|_| kind.reads_gradient()).unwrap_or(x);
        let (b, h, e) = (int(OP, samples)?, int(OP, heads)?, int(OP, entries)?);
        let code = kind.code();
        launch!(
            self,
            "head_mean",
            per_element(out.len()),
            out,
            x,
            g,
            &b,
            &h,
            &e,
            &code
        )
    }

    fn head_mean_matvec(
        &self,
        kind: HeadMean,
        x: &CudaSlice<f32>,
        grad: Option<&CudaSlice<f32>>,
        heads: usize,
        tokens: usize,
        graphs: &[MeanGraph<'_>],
    ) -> Result<Vec<Vec<f32>>> {
        const OP: &str = "head_mean_matvec";
        check::head_mean_matvec(
            kind,
            x.len(),
            grad.map(CudaSlice::len),
            heads,
            tokens,
            graphs,
        )?;
        let mut start = vec![0i32];
        let (mut sample, mut token, mut vector) = (Vec::new(), Vec::new(), Vec::new());
        for g in graphs {
            sample.push(int(OP, g.sample)?);
            for &t in g.tokens {
                token.push(int(OP, t)?);
            }
            vector.extend_from_slice(g.vector);
            start.push(int(OP, token.len())?);
        }
        let rows = graphs.iter().map(|g| g.tokens.len()).max().unwrap_or(0);
        if rows == 0 {
            return Ok(graphs.iter().map(|_| Vec::new()).collect());
        }
        self.bind(OP)?;
        let dev_sample = self.upload_any(OP, &sample)?;
        let dev_start = self.upload_any(OP, &start)?;
        let dev_token = self.upload_any(OP, &token)?;
        let dev_vector = self.upload_any(OP, &vector)?;
        // SAFETY: the kernel writes every graph's rows.
        let mut out = unsafe { self.alloc_unwritten::<f32>(OP, token.len()) }?;
        let cfg = LaunchConfig {
            grid_dim: (
                int(OP, graphs.len())? as u32,
                int(OP, rows.div_ceil(MATVEC_ROWS))? as u32,
                1,
            ),
            block_dim: (BLOCK, 1, 1),
            shared_mem_bytes: 0,
        };
        // Where the kind ignores ∇A the kernel never reads `g`: any buffer will do.
        let g = grad.filter(|_| kind.reads_gradient()).unwrap_or(x);
        let (h, n, code) = (int(OP, heads)?, int(OP, tokens)?, kind.code());
        launch!(
            self,
            "head_mean_matvec",
            cfg,
            &mut out,
            x,
            g,
            &dev_sample,
            &dev_start,
            &dev_token,
            &dev_vector,
            &h,
            &n,
            &code
        )?;
        let out = self.download(&out)?;
        Ok(start
            .windows(2)
            .map(|w| out[w[0] as usize..w[1] as usize].to_vec())
            .collect())
    }

    fn head_rows(
        &self,
        x: &CudaSlice<f32>,
        grad: &CudaSlice<f32>,
        heads: usize,
        tokens: usize,
        rows: &[ReadoutRow<'_>],
    ) -> Result<Vec<HeadRows>> {
        const OP: &str = "head_rows";
        check::head_rows(x.len(), grad.len(), heads, tokens, rows)?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let table = RowTable::new(OP, rows)?;
        self.bind(OP)?;
        let dev = table.upload(self, OP)?;
        // SAFETY: the kernel writes every row's means and entries.
        let mut means = unsafe { self.alloc_unwritten::<f32>(OP, rows.len() * heads) }?;
        let mut out = unsafe { self.alloc_unwritten::<f32>(OP, table.tokens.len() * heads) }?;
        let cfg = LaunchConfig {
            grid_dim: (int(OP, rows.len())? as u32, 1, 1),
            block_dim: (BLOCK, 1, 1),
            shared_mem_bytes: 0,
        };
        let (h, n) = (int(OP, heads)?, int(OP, tokens)?);
        launch!(
            self,
            "head_rows",
            cfg,
            &mut means,
            &mut out,
            x,
            grad,
            &dev.sample,
            &dev.start,
            &dev.query,
            &dev.tokens,
            &h,
            &n
        )?;
        let (means, out) = (self.download(&means)?, self.download(&out)?);
        Ok(table
            .spans(heads)
            .zip(means.chunks_exact(heads))
            .map(|(span, grad_means)| HeadRows {
                grad_means: grad_means.to_vec(),
                rows: out[span].to_vec(),
            })
            .collect())
    }

    /// Per layer from the last: `head_mean` of the whole batch, then (rollout) the row sums
    /// and one step over every row; the states stay on the device until the end.
    fn relevance_rows(
        &self,
        product: RelevanceProduct,
        layers: &[(&CudaSlice<f32>, Option<&CudaSlice<f32>>)],
        heads: usize,
        tokens: usize,
        rows: &[ReadoutRow<'_>],
    ) -> Result<Vec<Vec<f32>>> {
        const OP: &str = "relevance_rows";
        let sizes: Vec<_> = layers
            .iter()
            .map(|(x, g)| (x.len(), g.map(CudaSlice::len)))
            .collect();
        let samples = check::relevance_rows(product, &sizes, heads, tokens, rows)?;
        let table = RowTable::new(OP, rows)?;
        let longest = table.longest();
        if longest == 0 {
            return Ok(rows.iter().map(|_| Vec::new()).collect());
        }
        let state: Vec<f32> = rows
            .iter()
            .flat_map(|r| relevance::row_start(product, r.tokens.len(), r.query))
            .collect();
        self.bind(OP)?;
        let dev = table.upload(self, OP)?;
        let mut state = self.upload_any(OP, &state)?;
        // SAFETY: each step writes every row's entries before the next reads them; the row
        // sums are written before the step that reads them, and the mean by `head_mean`.
        let mut next = unsafe { self.alloc_unwritten::<f32>(OP, table.tokens.len()) }?;
        let mut sums = unsafe { self.alloc_unwritten::<f32>(OP, table.tokens.len()) }?;
        let mut mean = unsafe { self.alloc_unwritten::<f32>(OP, samples * tokens * tokens) }?;
        let cfg = LaunchConfig {
            grid_dim: (
                int(OP, rows.len())? as u32,
                int(OP, longest.div_ceil(BLOCK as usize))? as u32,
                1,
            ),
            block_dim: (BLOCK, 1, 1),
            shared_mem_bytes: 0,
        };
        let n = int(OP, tokens)?;
        let rollout = i32::from(product == RelevanceProduct::Rollout);
        for &(x, grad) in layers.iter().rev() {
            self.head_mean(&mut mean, product.mean(), x, grad, heads, tokens * tokens)?;
            if rollout == 1 {
                launch!(
                    self,
                    "product_row_sums",
                    cfg,
                    &mut sums,
                    &mean,
                    &dev.sample,
                    &dev.start,
                    &dev.tokens,
                    &n
                )?;
            }
            launch!(
                self,
                "product_row_step",
                cfg,
                &mut next,
                &state,
                &mean,
                &sums,
                &dev.sample,
                &dev.start,
                &dev.query,
                &dev.tokens,
                &n,
                &rollout
            )?;
            std::mem::swap(&mut state, &mut next);
        }
        let out = self.download(&state)?;
        Ok(table
            .spans(1)
            .zip(rows)
            .map(|(span, r)| relevance::row_finish(product, out[span].to_vec(), r.query))
            .collect())
    }

    fn patchify(
        &self,
        out: &mut CudaSlice<f32>,
        pixels: &CudaSlice<f32>,
        g: PatchGeometry,
    ) -> Result<()> {
        check::patchify(out.len(), pixels.len(), g)?;
        if out.is_empty() {
            return Ok(());
        }
        const OP: &str = "patchify";
        let (n, c, h, w, p) = (
            int(OP, out.len())?,
            int(OP, g.channels)?,
            int(OP, g.height)?,
            int(OP, g.width)?,
            int(OP, g.patch)?,
        );
        int(OP, pixels.len())?;
        launch!(
            self,
            "patchify",
            per_element(out.len()),
            out,
            pixels,
            &n,
            &c,
            &h,
            &w,
            &p
        )
    }

    fn prepend_class_add_positions(
        &self,
        out: &mut CudaSlice<f32>,
        patches: &CudaSlice<f32>,
        class: &CudaSlice<f32>,
        pos: &CudaSlice<f32>,
        batch: usize,
        tokens: usize,
        dim: usize,
    ) -> Result<()> {
        let per_sample = check::class_positions(
            out.len(),
            patches.len(),
            class.len(),
            pos.len(),
            batch,
            tokens,
            dim,
        )?;
        if out.is_empty() {
            return Ok(());
        }
        const OP: &str = "prepend_class_add_positions";
        let (n, t, d, ps) = (
            int(OP, out.len())?,
            int(OP, tokens)?,
            int(OP, dim)?,
            i32::from(per_sample),
        );
        launch!(
            self,
            "prepend_class_add_positions",
            per_element(out.len()),
            out,
            patches,
            class,
            pos,
            &n,
            &t,
            &d,
            &ps
        )
    }

    fn concat_sequences(
        &self,
        out: &mut CudaSlice<f32>,
        a: &CudaSlice<f32>,
        b: &CudaSlice<f32>,
        batch: usize,
        a_tokens: usize,
        b_tokens: usize,
        dim: usize,
    ) -> Result<()> {
        check::concat(out.len(), a.len(), b.len(), batch, a_tokens, b_tokens, dim)?;
        if out.is_empty() {
            return Ok(());
        }
        const OP: &str = "concat_sequences";
        let (n, ta, tb, d) = (
            int(OP, out.len())?,
            int(OP, a_tokens)?,
            int(OP, b_tokens)?,
            int(OP, dim)?,
        );
        launch!(
            self,
            "concat_sequences",
            per_element(out.len()),
            out,
            a,
            b,
            &n,
            &ta,
            &tb,
            &d
        )
    }

    fn add_row_vector(&self, x: &mut CudaSlice<f32>, v: &CudaSlice<f32>) -> Result<()> {
        check::rows("add_row_vector", "x", x.len(), v.len())?;
        if x.is_empty() {
            return Ok(());
        }
        let (n, d) = (
            int("add_row_vector", x.len())?,
            int("add_row_vector", v.len())?,
        );
        launch!(self, "add_row_vector", per_element(x.len()), x, v, &n, &d)
    }

    fn embed_tokens(
        &self,
        out: &mut CudaSlice<f32>,
        ids: &[u32],
        table: &CudaSlice<f32>,
        pos: &CudaSlice<f32>,
        seq: usize,
        dim: usize,
    ) -> Result<()> {
        check::embed_tokens(out.len(), ids, table.len(), pos.len(), seq, dim)?;
        if out.is_empty() {
            return Ok(());
        }
        const OP: &str = "embed_tokens";
        let dev_ids = self.upload_any(OP, ids)?;
        let (n, s, d) = (int(OP, out.len())?, int(OP, seq)?, int(OP, dim)?);
        int(OP, table.len())?;
        launch!(
            self,
            "embed_tokens",
            per_element(out.len()),
            out,
            &dev_ids,
            table,
            pos,
            &n,
            &s,
            &d
        )
    }

    fn gather_rows(
        &self,
        out: &mut CudaSlice<f32>,
        x: &CudaSlice<f32>,
        rows: &[usize],
        dim: usize,
    ) -> Result<()> {
        check::gather("gather_rows", ("x", "out"), x.len(), out.len(), rows, dim)?;
        if out.is_empty() {
            return Ok(());
        }
        let dev_rows = self.upload_rows("gather_rows", rows)?;
        let (n, d) = (int("gather_rows", out.len())?, int("gather_rows", dim)?);
        launch!(
            self,
            "gather_rows",
            per_element(out.len()),
            out,
            x,
            &dev_rows,
            &n,
            &d
        )
    }

    fn gather_rows_backward(
        &self,
        dx: &mut CudaSlice<f32>,
        dy: &CudaSlice<f32>,
        rows: &[usize],
        dim: usize,
    ) -> Result<()> {
        const OP: &str = "gather_rows_backward";
        check::gather(OP, ("dx", "dy"), dx.len(), dy.len(), rows, dim)?;
        if dx.is_empty() {
            return Ok(());
        }
        self.fill_zeros(OP, [&mut *dx])?;
        if dy.is_empty() {
            return Ok(());
        }
        let dev_rows = self.upload_rows(OP, rows)?;
        let (n, d) = (int(OP, dy.len())?, int(OP, dim)?);
        launch!(
            self,
            "gather_rows_bwd",
            per_element(dy.len()),
            dx,
            dy,
            &dev_rows,
            &n,
            &d
        )
    }

    fn cosine_scores(
        &self,
        scores: &mut CudaSlice<f32>,
        a: &CudaSlice<f32>,
        b: &CudaSlice<f32>,
        scale: f32,
        dim: usize,
    ) -> Result<()> {
        let same = [("b", b.len())];
        let rows = check::cosine(
            "cosine_scores",
            a.len(),
            &same,
            ("scores", scores.len()),
            dim,
        )?;
        if rows == 0 {
            return Ok(());
        }
        let (r, d) = (int("cosine_scores", rows)?, int("cosine_scores", dim)?);
        launch!(
            self,
            "cosine_fwd",
            per_row(rows, dim),
            scores,
            a,
            b,
            &r,
            &d,
            &scale
        )
    }

    fn cosine_scores_backward(
        &self,
        da: &mut CudaSlice<f32>,
        db: &mut CudaSlice<f32>,
        dscores: &CudaSlice<f32>,
        a: &CudaSlice<f32>,
        b: &CudaSlice<f32>,
        scale: f32,
        dim: usize,
    ) -> Result<()> {
        let same = [("b", b.len()), ("da", da.len()), ("db", db.len())];
        let scores = ("dscores", dscores.len());
        let rows = check::cosine("cosine_scores_backward", a.len(), &same, scores, dim)?;
        if rows == 0 {
            return Ok(());
        }
        let (r, d) = (
            int("cosine_scores_backward", rows)?,
            int("cosine_scores_backward", dim)?,
        );
        launch!(
            self,
            "cosine_bwd",
            per_row(rows, dim),
            da,
            db,
            dscores,
            a,
            b,
            &r,
            &d,
            &scale
        )
    }

    // The LRP rules (spec §D), as in backend/cpu/lrp.rs: the products in cuBLAS, the rest in
    // kernels/lrp.cu.

    fn abs_weight(&self, w: &CudaSlice<f32>) -> Result<CudaSlice<f32>> {
        const OP: &str = "abs_weight";
        // SAFETY: `lrp_abs` writes every element.
        let mut out = unsafe { self.alloc_unwritten::<f32>(OP, w.len()) }?;
        if !w.is_empty() {
            let n = int(OP, w.len())?;
            launch!(self, "lrp_abs", per_element(w.len()), &mut out, w, &n)?;
        }
        Ok(out)
    }

    /// Z = (x·Wᵀ + |x|·|W|ᵀ)/2, S = sdiv(r, Z), R_x = (x ⊙ (S·W) + |x| ⊙ (S·|W|))/2, with
    /// x·Wᵀ read from the forward's output − bias when given.
    fn lrp_linear(
        &self,
        rx: &mut CudaSlice<f32>,
        r: &CudaSlice<f32>,
        x: &CudaSlice<f32>,
        forward: Option<(&CudaSlice<f32>, &CudaSlice<f32>)>,
        w: &CudaSlice<f32>,
        w_abs: &CudaSlice<f32>,
        m: usize,
        k: usize,
        n: usize,
        accumulate: bool,
    ) -> Result<()> {
        const OP: &str = "lrp_linear";
        let forward_lens = forward.map(|(o, b)| (o.len(), b.len()));
        check::lrp_linear(rx.len(), r.len(), x.len(), forward_lens, m, k, n)?;
        check::len(OP, "weight", w.len(), n * k)?;
        check::len(OP, "abs weight", w_abs.len(), n * k)?;
        if rx.is_empty() {
            return Ok(());
        }
        if n == 0 {
            // No outputs: no relevance reaches x.
            if !accumulate {
                self.fill_zeros(OP, [rx])?;
            }
            return Ok(());
        }
        let (mk, mn, cols) = (int(OP, m * k)?, int(OP, m * n)?, int(OP, n)?);
        self.bind(OP)?;
        // SAFETY (here and for the buffers below): each is written in full, by a kernel or
        // a product with β = 0, before it is read.
        let mut abs_x = unsafe { self.alloc_unwritten::<f32>(OP, m * k) }?;
        launch!(self, "lrp_abs", per_element(m * k), &mut abs_x, x, &mk)?;
        // z_abs = |x|·|W|ᵀ, then S in its place.
        let mut z_abs = unsafe { self.alloc_unwritten::<f32>(OP, m * n) }?;
        let (wp, wap) = (self.ptr(w), self.ptr(w_abs));
        let g = plan::linear(self.ptr(&abs_x), wap, self.ptr(&z_abs), m, k, n);
        self.gemm(OP, &g)?;
        let ratio = |s: &mut CudaSlice<f32>, z: &CudaSlice<f32>, bias: &CudaSlice<f32>, fwd| {
            let has_forward = i32::from(fwd);
            launch!(
                self,
                "lrp_linear_ratio",
                per_element(m * n),
                s,
                r,
                z,
                bias,
                &mn,
                &cols,
                &has_forward
            )
        };
        match forward {
            Some((out, bias)) => ratio(&mut z_abs, out, bias, true)?,
            None => {
                let z = unsafe { self.alloc_unwritten::<f32>(OP, m * n) }?;
                self.gemm(OP, &plan::linear(self.ptr(x), wp, self.ptr(&z), m, k, n))?;
                // The bias argument is not read without a forward.
                ratio(&mut z_abs, &z, &z, false)?;
            }
        }
        let s = z_abs;
        // |x| is not read again: its buffer takes S·|W|.
        let (c, c_abs) = (unsafe { self.alloc_unwritten::<f32>(OP, m * k) }?, abs_x);
        let sp = self.ptr(&s);
        self.gemm(
            OP,
            &plan::linear_backward(sp, wp, self.ptr(&c), m, k, n, false),
        )?;
        let g = plan::linear_backward(sp, wap, self.ptr(&c_abs), m, k, n, false);
        self.gemm(OP, &g)?;
        let acc = i32::from(accumulate);
        launch!(
            self,
            "lrp_linear_combine",
            per_element(m * k),
            rx,
            x,
            &c,
            &c_abs,
            &mk,
            &acc
        )
    }

    /// Per head: S = sdiv(R, ctx), cam = P ⊙ (S·Vᵀ)/2, S' = sdiv(cam, Q·Kᵀ),
    /// R_Q = Q ⊙ (S'·K)/2, R_K = K ⊙ (S'ᵀ·Q)/2, R_V = V ⊙ (Pᵀ·S)/2.
    fn lrp_attention(
        &self,
        cam: &mut CudaSlice<f32>,
        rq: &mut CudaSlice<f32>,
        rkv: &mut CudaSlice<f32>,
        rctx: &CudaSlice<f32>,
        q: &CudaSlice<f32>,
        kv: &CudaSlice<f32>,
        probs: &CudaSlice<f32>,
        ctx: &CudaSlice<f32>,
        s: &AttentionShape,
    ) -> Result<()> {
        const OP: &str = "lrp_attention";
        let lens = check::AttentionBuffers {
            q: q.len(),
            kv: kv.len(),
            ctx: ctx.len(),
            probs: probs.len(),
            grads: Some((rq.len(), rkv.len(), cam.len())),
        };
        check::lrp_attention(s, lens, rctx.len())?;
        if s.probs_len() == 0 {
            // No query–key pair: no relevance reaches the queries, keys or values.
            return self.fill_zeros(OP, [rq, rkv]);
        }
        let (ql, kvl, pl) = (q.len(), kv.len(), s.probs_len());
        let (nq, nkv, np) = (int(OP, ql)?, int(OP, kvl)?, int(OP, pl)?);
        self.bind(OP)?;
        // SAFETY (here and for `scores` and `s2`): each is written in full, by a kernel or
        // a product with β = 0, before it is read.
        let mut sc = unsafe { self.alloc_unwritten::<f32>(OP, ql) }?;
        launch!(self, "lrp_sdiv", per_element(ql), &mut sc, rctx, ctx, &nq)?;
        let (qp, kvp, scp, camp) = (self.ptr(q), self.ptr(kv), self.ptr(&sc), self.ptr(cam));
        for g in plan::attention_dprobs(s, scp, kvp, camp) {
            self.gemm(OP, &g)?;
        }
        launch!(
            self,
            "lrp_half_product",
            per_element(pl),
            &mut *cam,
            probs,
            &np
        )?;
        let scores = unsafe { self.alloc_unwritten::<f32>(OP, pl) }?;
        for g in plan::lrp_scores(s, qp, kvp, self.ptr(&scores)) {
            self.gemm(OP, &g)?;
        }
        let mut s2 = unsafe { self.alloc_unwritten::<f32>(OP, pl) }?;
        launch!(
            self,
            "lrp_sdiv",
            per_element(pl),
            &mut s2,
            &*cam,
            &scores,
            &np
        )?;
        let addrs = plan::BackwardAddrs {
            q: qp,
            kv: kvp,
            probs: self.ptr(probs),
            dctx: scp,
            ds: self.ptr(&s2),
            dq: self.ptr(rq),
            dkv: self.ptr(rkv),
        };
        for g in plan::lrp_inputs(s, &addrs) {
            self.gemm(OP, &g)?;
        }
        launch!(self, "lrp_half_product", per_element(ql), rq, q, &nq)?;
        launch!(self, "lrp_half_product", per_element(kvl), rkv, kv, &nkv)
        // `sc`, `scores` and `s2` are freed in stream order after the work that reads them.
    }

    /// One block per sample: the rule and its f64 sums, then the rescale.
    fn lrp_add(
        &self,
        ra: &mut CudaSlice<f32>,
        rb: &mut CudaSlice<f32>,
        r: &CudaSlice<f32>,
        a: &CudaSlice<f32>,
        b: &CudaSlice<f32>,
        samples: usize,
    ) -> Result<()> {
        const OP: &str = "lrp_add";
        check::lrp_add(ra.len(), rb.len(), r.len(), a.len(), b.len(), samples)?;
        if r.is_empty() {
            return Ok(());
        }
        int(OP, r.len())?;
        let len = int(OP, r.len() / samples)?;
        let cfg = LaunchConfig {
            grid_dim: (samples as u32, 1, 1),
            block_dim: (BLOCK, 1, 1),
            shared_mem_bytes: 0,
        };
        launch!(self, "lrp_add", cfg, ra, rb, r, a, b, &len)
    }

    /// rx = x ⊙ Σ_i sdiv(rs[i], x), one kernel per term, summing in rx.
    fn lrp_clone(
        &self,
        rx: &mut CudaSlice<f32>,
        x: &CudaSlice<f32>,
        rs: &[&CudaSlice<f32>],
    ) -> Result<()> {
        const OP: &str = "lrp_clone";
        check::lrp_clone(rx.len(), x.len(), rs.iter().map(|r| r.len()))?;
        if x.is_empty() {
            return Ok(());
        }
        if rs.is_empty() {
            return self.fill_zeros(OP, [rx]);
        }
        let n = int(OP, x.len())?;
        for (i, &r) in rs.iter().enumerate() {
            let (first, last) = (i32::from(i == 0), i32::from(i + 1 == rs.len()));
            launch!(
                self,
                "lrp_clone_term",
                per_element(x.len()),
                &mut *rx,
                x,
                r,
                &n,
                &first,
                &last
            )?;
        }
        Ok(())
    }
}

/// Keeps freed device memory in the stream-ordered pool that every allocation comes from.
/// With the driver's default release threshold of 0, each synchronisation (every batch
/// synchronises to bring its results to the host) hands the pool's free memory back, and the
/// next batch's gigabytes are mapped afresh. The process keeps its peak until it exits, as it
/// does with host memory (`cli::memory`); `FIEDLER_CUDA_MEMORY=release` keeps the driver's
/// default, for a GPU shared with other processes.
fn keep_freed_device_memory(ctx: &CudaContext) -> std::result::Result<(), CudaError> {
    use cudarc::driver::result::{device, mem_pool};
    use cudarc::driver::sys::CUmemPool_attribute;
    let mut threshold = u64::MAX;
    // SAFETY: the device comes from a live context; the release threshold is a u64.
    unsafe {
        let pool = device::get_default_mem_pool(ctx.cu_device())
            .map_err(|e| CudaError::driver("reading the memory pool", e))?;
        mem_pool::set_attribute(
            pool,
            CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
            (&mut threshold as *mut u64).cast(),
        )
        .map_err(|e| CudaError::driver("setting the memory pool's release threshold", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernels' grid-stride loops step a 32-bit index past the last element by a
    /// grid's worth of threads: sizes stop short of wrapping it, with an error value.
    #[test]
    fn sizes_stop_short_of_wrapping_the_grid_stride_index() {
        let grid = (MAX_ELEMENT_BLOCKS * BLOCK) as usize;
        assert_eq!(
            int("add", i32::MAX as usize - grid).ok(),
            Some(i32::MAX - grid as i32)
        );
        let err = int("add", i32::MAX as usize - grid + 1)
            .unwrap_err()
            .to_string();
        assert!(err.contains("exceed the kernels' 32-bit indices"), "{err}");
        assert!(int("add", usize::MAX).is_err());
    }
}
