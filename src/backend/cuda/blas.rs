//! The backend's cuBLAS handle, and a `plan::Gemm` run through it
//! (`cublasSgemmStridedBatched`). Plain SGEMM: cuBLAS's default math mode keeps full f32 (no
//! TF32).

use std::sync::{Arc, Mutex};

use cudarc::cublas::result::{
    create_handle, destroy_handle, set_stream, sgemm_strided_batched, CublasError,
};
use cudarc::cublas::sys::{cublasHandle_t, cublasOperation_t};
use cudarc::driver::CudaStream;

use super::plan::Gemm;
use crate::backend::{BackendError, Result};

/// A cuBLAS handle bound to the backend's stream. cudarc's `CudaBlas` would do, but its drop
/// unwraps `cublasDestroy`'s status: after a kernel fault has lost the context, that can fail,
/// and a panic in a drop ends the process with an abort where an error was being reported.
pub struct BlasHandle {
    raw: cublasHandle_t,
    /// Kept alive while the handle may still enqueue work on it.
    stream: Arc<CudaStream>,
}

// SAFETY: a cuBLAS handle may move between threads; the backend keeps it behind a mutex, so
// no two threads use it at once.
unsafe impl Send for BlasHandle {}
unsafe impl Sync for BlasHandle {}

impl BlasHandle {
    /// A handle on `stream`, whose context must be current on this thread (`Cuda::new` has
    /// just made the stream there).
    pub fn new(stream: Arc<CudaStream>) -> std::result::Result<Self, CublasError> {
        let raw = create_handle()?;
        let handle = Self { raw, stream };
        // SAFETY: a valid handle and the stream it is kept with.
        unsafe { set_stream(raw, handle.stream.cu_stream() as _) }?;
        Ok(handle)
    }

    pub fn raw(&self) -> cublasHandle_t {
        self.raw
    }
}

impl Drop for BlasHandle {
    fn drop(&mut self) {
        // A failure here has nothing left to tell: the lost context it comes from was
        // reported by the call that found it.
        // SAFETY: created by `new`, destroyed once.
        let _ = unsafe { destroy_handle(self.raw) };
    }
}

fn op(t: bool) -> cublasOperation_t {
    if t {
        cublasOperation_t::CUBLAS_OP_T
    } else {
        cublasOperation_t::CUBLAS_OP_N
    }
}

fn int(name: &'static str, v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| BackendError::Invalid {
        op: name,
        message: format!("dimension {v} exceeds cuBLAS's 32-bit sizes"),
    })
}

pub fn gemm(blas: &Mutex<BlasHandle>, name: &'static str, g: &Gemm) -> Result<()> {
    let s = g.column_major();
    if s.m == 0 || s.n == 0 || s.batch == 0 {
        return Ok(());
    }
    // A leading dimension is at least 1 for cuBLAS even where a size of 0 leaves nothing to
    // read: a row-major matrix with no columns has stride 0 here. (A product with no terms,
    // k = 0, does not come here: `Cuda::gemm` zeroes its C.)
    // A cuBLAS handle must not be used by two threads at once; the backend is `Sync`.
    let blas = blas.lock().unwrap_or_else(|p| p.into_inner());
    // SAFETY: the callers checked every buffer's length against the shapes and strides of
    // the plan, which addresses only inside those buffers.
    unsafe {
        sgemm_strided_batched(
            blas.raw(),
            op(s.transa),
            op(s.transb),
            int(name, s.m)?,
            int(name, s.n)?,
            int(name, s.k)?,
            &s.alpha,
            s.a.0 as *const f32,
            int(name, s.a.1.max(1))?,
            s.a.2 as i64,
            s.b.0 as *const f32,
            int(name, s.b.1.max(1))?,
            s.b.2 as i64,
            &s.beta,
            s.c.0 as *mut f32,
            int(name, s.c.1.max(1))?,
            s.c.2 as i64,
            int(name, s.batch)?,
        )
    }
    .map_err(|e| BackendError::Device {
        op: name,
        message: format!("cuBLAS SGEMM: {e:?}"),
    })
}
