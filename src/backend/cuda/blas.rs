//! Row-major products through cuBLAS (column-major): C = A·B in row-major is Cᵀ = Bᵀ·Aᵀ in
//! column-major, so every call swaps the operands. Plain SGEMM: cuBLAS's default math mode
//! keeps full f32 (no TF32).

use cudarc::cublas::result::sgemm_strided_batched;
use cudarc::cublas::sys::cublasOperation_t;
use std::sync::Mutex;

use cudarc::cublas::CudaBlas;
use cudarc::driver::sys::CUdeviceptr;

use crate::backend::{BackendError, Result};

/// One row-major operand: `ptr` (+ element offset), leading dimension, whether the product
/// reads it transposed, and the element stride between batch entries.
#[derive(Clone, Copy)]
pub struct Operand {
    pub ptr: CUdeviceptr,
    pub ld: usize,
    pub transposed: bool,
    pub batch_stride: usize,
}

impl Operand {
    pub fn rows(ptr: CUdeviceptr, offset: usize, ld: usize) -> Self {
        Self {
            ptr: ptr + 4 * offset as u64,
            ld,
            transposed: false,
            batch_stride: 0,
        }
    }

    pub fn t(self) -> Self {
        Self {
            transposed: true,
            ..self
        }
    }

    pub fn stride(self, batch_stride: usize) -> Self {
        Self {
            batch_stride,
            ..self
        }
    }
}

fn op(t: bool) -> cublasOperation_t {
    if t {
        cublasOperation_t::CUBLAS_OP_T
    } else {
        cublasOperation_t::CUBLAS_OP_N
    }
}

fn int(op_name: &'static str, v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| BackendError::Invalid {
        op: op_name,
        message: format!("dimension {v} exceeds cuBLAS's 32-bit sizes"),
    })
}

/// c[m, n] (row-major, `c` an Operand without transpose) = alpha·op(a)[m, k]·op(b)[k, n] +
/// beta·c, for `batch` products at the operands' batch strides.
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    blas: &Mutex<CudaBlas>,
    name: &'static str,
    (m, n, k): (usize, usize, usize),
    alpha: f32,
    a: Operand,
    b: Operand,
    beta: f32,
    c: Operand,
    batch: usize,
) -> Result<()> {
    if m == 0 || n == 0 || batch == 0 {
        return Ok(());
    }
    // A cuBLAS handle must not be used by two threads at once; the backend is `Sync`.
    let blas = blas.lock().unwrap_or_else(|p| p.into_inner());
    // SAFETY: the callers checked every buffer's length against these shapes and strides.
    unsafe {
        sgemm_strided_batched(
            *blas.handle(),
            op(b.transposed),
            op(a.transposed),
            int(name, n)?,
            int(name, m)?,
            int(name, k)?,
            &alpha,
            b.ptr as *const f32,
            int(name, b.ld)?,
            b.batch_stride as i64,
            a.ptr as *const f32,
            int(name, a.ld)?,
            a.batch_stride as i64,
            &beta,
            c.ptr as *mut f32,
            int(name, c.ld)?,
            c.batch_stride as i64,
            int(name, batch)?,
        )
    }
    .map_err(|e| BackendError::Device {
        op: name,
        message: format!("cuBLAS SGEMM: {e:?}"),
    })
}
