//! Host memory policy of the command line: freed memory stays with the process for reuse.
//!
//! Every batch allocates large buffers (a trace brought from the GPU, the CPU backend's
//! activations) and frees them. glibc hands allocations above 32 MiB straight back to the
//! kernel, so the next batch's buffers are fresh pages, and touching a fresh page costs a
//! fault: about 1.8 GB/s on the 2-core CI VM, where reused pages fill at 23 GB/s. On an H100
//! host the same faults made copying a trace to host memory the largest cost of a CUDA
//! explanation; with reuse, CLIP ViT-B/16 dsmi-grad at batch 64 went from 86 to 191
//! explanations/s and LXMERT from 273 to 826 (docs/performance.md). The process keeps its
//! peak heap until it exits, which suits a command that runs one job.

/// Serves every allocation from the heap (no per-allocation mmap) and never trims it.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn reuse_freed_memory() {
    // SAFETY: mallopt only sets allocator parameters; called first thing in main, before
    // any other thread exists. A refused setting (return 0) leaves glibc's default.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

/// Other allocators keep their own policy.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn reuse_freed_memory() {}
