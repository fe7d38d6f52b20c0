//! Why the CUDA backend cannot start, or what failed in it, as values: cudarc panics when a
//! library is missing, so every entry point probes first and catches what slips through.

use cudarc::driver::DriverError;
use thiserror::Error;

use crate::backend::BackendError;

/// The libraries' folder hint shared by the messages.
const HINT: &str = "install the NVIDIA driver and the CUDA 13 libraries, or add their folder to \
                    LD_LIBRARY_PATH";

#[derive(Debug, Error)]
pub enum CudaError {
    #[error("CUDA is not available: {library} cannot be loaded, needed to {needed}; {HINT}")]
    MissingLibrary {
        library: &'static str,
        needed: &'static str,
    },
    #[error("CUDA is not available: no CUDA device ({0})")]
    NoDevice(String),
    #[error("CUDA driver call failed while {during}: {error}")]
    Driver { during: String, error: String },
    #[error("cuBLAS failed while {during}: {error}")]
    Blas { during: &'static str, error: String },
    #[error("kernels/{file}.cu does not compile for {arch} with NVRTC:\n{log}")]
    Compile {
        file: &'static str,
        arch: &'static str,
        log: String,
    },
    #[error("kernel {kernel} of kernels/{file}.cu is missing from the loaded module")]
    MissingKernel {
        file: &'static str,
        kernel: &'static str,
    },
    #[error("the CUDA library layer panicked in {0} (a missing library or symbol); {HINT}")]
    Panic(String),
}

impl CudaError {
    pub(crate) fn driver(during: &str, e: DriverError) -> Self {
        Self::Driver {
            during: during.to_owned(),
            error: e.to_string(),
        }
    }
}

impl From<CudaError> for BackendError {
    fn from(e: CudaError) -> Self {
        BackendError::Device {
            op: "cuda",
            message: e.to_string(),
        }
    }
}
