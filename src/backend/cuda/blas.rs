//! Runs a `plan::Gemm` through cuBLAS (`cublasSgemmStridedBatched`). Plain SGEMM: cuBLAS's
//! default math mode keeps full f32 (no TF32).

use std::sync::Mutex;

use cudarc::cublas::result::sgemm_strided_batched;
use cudarc::cublas::sys::cublasOperation_t;
use cudarc::cublas::CudaBlas;

use super::plan::Gemm;
use crate::backend::{BackendError, Result};

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

pub fn gemm(blas: &Mutex<CudaBlas>, name: &'static str, g: &Gemm) -> Result<()> {
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
            *blas.handle(),
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
