//! Where downloads land: a page-locked host buffer, reused and grown as needed, from which
//! each download is copied into its `Vec`. A copy into pageable memory (a fresh `Vec`) goes
//! through the driver's own staging, at a fraction of the bus's rate; on the H200 the
//! profile put 4.5% of CLIP's and 17% of LXMERT's device time in such copies.

use std::sync::Arc;

use cudarc::driver::{CudaContext, PinnedHostSlice};

/// Floats of the smallest buffer (4 MiB); it grows to the next power of two a download needs.
const STAGING_MIN: usize = 1 << 20;

/// Floats of the largest (64 MiB): a larger download goes straight into pageable memory
/// rather than pinning that much host memory for good.
const STAGING_MAX: usize = 1 << 24;

/// How downloads reach host memory (`FIEDLER_CUDA_DOWNLOADS`; tests use
/// [`super::Cuda::with_downloads`]). Both give the same bits; the choice is for timing them
/// against each other on one card (scripts/gpu-check.sh).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Downloads {
    /// Through the page-locked buffer, up to 64 MiB: the default.
    Pinned,
    /// Straight into pageable memory (`FIEDLER_CUDA_DOWNLOADS=pageable`).
    Pageable,
}

impl Downloads {
    /// From `FIEDLER_CUDA_DOWNLOADS` ("pageable"; anything else is `Pinned`).
    pub fn from_env() -> Self {
        match std::env::var("FIEDLER_CUDA_DOWNLOADS").as_deref() {
            Ok("pageable") => Self::Pageable,
            _ => Self::Pinned,
        }
    }
}

pub(super) struct Staging {
    downloads: Downloads,
    buffer: Option<PinnedHostSlice<f32>>,
}

impl Staging {
    pub fn new(downloads: Downloads) -> Self {
        Self {
            downloads,
            buffer: None,
        }
    }

    /// The buffer for a download of `len` floats, grown first if it is smaller; `None` when
    /// downloads are pageable, `len` is past [`STAGING_MAX`], or page-locked memory cannot be
    /// had (then downloads stay pageable from now on).
    pub fn fit(&mut self, ctx: &Arc<CudaContext>, len: usize) -> Option<&mut PinnedHostSlice<f32>> {
        if self.downloads == Downloads::Pageable || len > STAGING_MAX {
            return None;
        }
        if self.buffer.as_ref().is_none_or(|b| b.len() < len) {
            // The old buffer goes first: both need not be pinned at once.
            self.buffer = None;
            let size = len.next_power_of_two().clamp(STAGING_MIN, STAGING_MAX);
            // Flags 0: cached memory, which the host reads at full speed (cudarc's default,
            // write-combined, is for uploads). SAFETY: `download` reads only what a copy has
            // just written.
            self.buffer = unsafe { ctx.alloc_pinned_with_flags::<f32>(size, 0) }.ok();
            if self.buffer.is_none() {
                self.downloads = Downloads::Pageable;
            }
        }
        self.buffer.as_mut()
    }
}
