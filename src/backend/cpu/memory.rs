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
/// the system has available, its free swap, and what the heap holds free (the command line
/// keeps freed memory for reuse, which the system does not count as available). Where the
/// system or the allocator does not say (other than Linux with glibc 2.33 or later), nothing
/// is refused. Not seen: a cgroup's limit (containers, batch schedulers), whose usage counts
/// reclaimable file pages, and another allocator preloaded in place of glibc's.
pub fn check_fits(op: &'static str, bytes: usize) -> Result<()> {
    if bytes < CHECKED_BYTES {
        return Ok(());
    }
    let (Some((available, total)), Some(heap)) = (system_memory(), heap_free()) else {
        return Ok(());
    };
    let free = available.saturating_add(heap);
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

/// (available, total) bytes from /proc/meminfo: the memory available plus the free swap,
/// and the physical memory.
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
    let available = field("MemAvailable:")?.saturating_add(field("SwapFree:").unwrap_or(0));
    Some((available, field("MemTotal:")?))
}

/// Bytes the heap holds free for reuse (glibc's `mallinfo2`), where the C library has it. It
/// is looked up when running: glibc before 2.33 (older enterprise systems) lacks it, and a
/// binary linked against it would not start there.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn heap_free() -> Option<usize> {
    use std::sync::OnceLock;
    type Mallinfo2 = unsafe extern "C" fn() -> libc::mallinfo2;
    static MALLINFO2: OnceLock<Option<Mallinfo2>> = OnceLock::new();
    let mallinfo2 = MALLINFO2.get_or_init(|| {
        // SAFETY: looks a symbol up by its NUL-terminated name.
        let symbol = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"mallinfo2".as_ptr()) };
        // SAFETY: glibc's mallinfo2 takes nothing and returns `struct mallinfo2` by value.
        (!symbol.is_null())
            .then(|| unsafe { std::mem::transmute::<*mut libc::c_void, Mallinfo2>(symbol) })
    });
    // SAFETY: reads the allocator's statistics; no side effects.
    mallinfo2.map(|f| unsafe { f() }.fordblks)
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn heap_free() -> Option<usize> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The runtime lookup reads glibc's free bytes: with freed memory kept (as the command
    /// line keeps it), memory allocated and freed is counted, as the older `mallinfo` (in
    /// every glibc, in `int`s) counts it, give or take what other tests' threads allocate
    /// meanwhile. (A thread's arena keeps one heap of the 200 MiB: about 64 MiB.)
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn the_heap_free_bytes_are_glibcs() {
        // SAFETY: allocator parameters only.
        unsafe {
            libc::mallopt(libc::M_MMAP_MAX, 0);
            libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        }
        drop((0..200).map(|_| vec![1u8; 1 << 20]).collect::<Vec<_>>());
        let looked_up = heap_free().expect("glibc 2.33 or later");
        // SAFETY: reads the allocator's statistics.
        #[allow(deprecated)]
        let old = unsafe { libc::mallinfo() }.fordblks as usize;
        assert!(looked_up >= 32 << 20, "{looked_up}");
        assert!(looked_up.abs_diff(old) < 16 << 20, "{looked_up} vs {old}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn small_buffers_pass_and_one_beyond_the_machine_is_refused() {
        check_fits("small", CHECKED_BYTES - 1).unwrap();
        let Some((_, total)) = system_memory().filter(|_| heap_free().is_some()) else {
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
