//! Whether a large host buffer fits in memory. An allocation larger than the machine can
//! give aborts the process (Rust's allocation failure), and one that merely exceeds what is
//! free gets it killed by the kernel's OOM killer once touched; either way the user learns
//! nothing about the batch size that caused it. Large buffers are checked first instead,
//! and refused as `BackendError::OutOfMemory`, which the callers turn into "a batch of N
//! samples does not fit".

use crate::backend::{BackendError, Result};

/// Buffers from this size on are checked: a trace's largest buffers at batches that can
/// exhaust memory, while the check (reading /proc/meminfo, the heap's free bytes) stays off
/// the thousands of small buffers of every trace.
const CHECKED_BYTES: usize = 256 << 20;

/// Refuses `bytes` for `op` where they exceed what this process can still get: the memory
/// the system has available plus what its heap holds free (the command line keeps freed
/// memory for reuse, so that is not counted as available by the system). Where the system
/// does not say (other than Linux), nothing is refused.
pub fn check_fits(op: &'static str, bytes: usize) -> Result<()> {
    if bytes < CHECKED_BYTES {
        return Ok(());
    }
    let Some((available, total)) = system_memory() else {
        return Ok(());
    };
    let free = available.saturating_add(heap_free());
    if bytes > free {
        return Err(BackendError::OutOfMemory {
            op,
            memory: "host",
            requested: bytes,
            free,
            total,
        });
    }
    Ok(())
}

/// (available, total) bytes from /proc/meminfo.
fn system_memory() -> Option<(usize, usize)> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| -> Option<usize> {
        let line = info.lines().find(|l| l.starts_with(name))?;
        let kib: usize = line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kib << 10)
    };
    Some((field("MemAvailable:")?, field("MemTotal:")?))
}

/// Bytes the heap holds free for reuse (glibc's `mallinfo2`).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn heap_free() -> usize {
    // SAFETY: reads the allocator's statistics; no arguments, no side effects.
    unsafe { libc::mallinfo2() }.fordblks
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn heap_free() -> usize {
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_buffers_pass_and_one_beyond_the_machine_is_refused() {
        check_fits("small", CHECKED_BYTES - 1).unwrap();
        let Some((_, total)) = system_memory() else {
            return;
        };
        let err = check_fits("huge", 2 * total).unwrap_err();
        assert!(
            matches!(err, BackendError::OutOfMemory { op: "huge", .. }),
            "{err}"
        );
        assert!(
            err.to_string()
                .starts_with("out of host memory: huge needs "),
            "{err}"
        );
        // The backend's buffers are checked: one of 4 × total bytes is refused, not allocated.
        use crate::backend::{Backend, Cpu};
        let err = Cpu.zeros(total).unwrap_err();
        assert!(
            matches!(
                err,
                BackendError::OutOfMemory {
                    op: "allocation",
                    ..
                }
            ),
            "{err}"
        );
    }
}
