//! Whether a large host buffer fits in memory. An allocation larger than the machine can
//! give aborts the process (Rust's allocation failure), and one that merely exceeds what is
//! free gets it killed by the kernel's OOM killer once touched; either way the user learns
//! nothing about the batch size that caused it. Large buffers are checked first instead,
//! and refused as `BackendError::OutOfMemory`, which the callers turn into "a batch of N
//! samples does not fit".

use std::path::Path;

use crate::backend::{BackendError, Result};

/// Buffers from this size on are checked: a trace's largest buffers at batches that can
/// exhaust memory, while the check (reading /proc/meminfo, the heap's free bytes) stays off
/// the thousands of small buffers of every trace.
const CHECKED_BYTES: usize = 256 << 20;

/// Refuses `bytes` for `op` where they exceed what this process can still get: the memory
/// the system has available, its free swap, and what the heap holds free (the command line
/// keeps freed memory for reuse, which the system does not count as available), within the
/// limit of the process's memory cgroup (containers, batch schedulers) and of its address
/// space and data limits (`ulimit -v`, `ulimit -d`), where it has them. Where
/// the system or the allocator does not say (other than Linux with glibc 2.33 or later),
/// nothing is refused. Not seen: another allocator preloaded in place of glibc's.
pub fn check_fits(op: &'static str, bytes: usize) -> Result<()> {
    if bytes < CHECKED_BYTES {
        return Ok(());
    }
    let (Some((mut available, mut total)), Some(heap)) = (system_memory(), heap_free()) else {
        return Ok(());
    };
    let membership = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    if let Some(cgroup) = cgroup_memory(Path::new(CGROUP_MOUNT), &membership) {
        available = available.min(cgroup.available);
        total = total.min(cgroup.limit);
    }
    if let Some((room, limit)) = rlimit_room() {
        available = available.min(room);
        total = total.min(limit);
    }
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

/// Bytes the process's address-space and data limits (`ulimit -v`, `ulimit -d`, set by some
/// clusters and sandboxes) still let it map, and that limit: of the one with less room; none
/// where neither is set. Past them an allocation fails and aborts the process.
#[cfg(target_os = "linux")]
fn rlimit_room() -> Option<(usize, usize)> {
    // Pages: the whole address space, then data and stack (proc(5), /proc/pid/statm).
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: Vec<usize> = statm
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    // SAFETY: sysconf reads a constant of the system.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).ok()?;
    let used = [
        (libc::RLIMIT_AS, *pages.first()?),
        (libc::RLIMIT_DATA, *pages.get(5)?),
    ];
    used.into_iter()
        .filter_map(|(resource, pages)| {
            let mut limit = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: getrlimit fills the struct it is given.
            let set = unsafe { libc::getrlimit(resource, &mut limit) } == 0
                && limit.rlim_cur != libc::RLIM_INFINITY;
            set.then(|| usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX))
                .map(|limit| (limit.saturating_sub(pages.saturating_mul(page)), limit))
        })
        .min()
}

#[cfg(not(target_os = "linux"))]
fn rlimit_room() -> Option<(usize, usize)> {
    None
}

/// Where the cgroup hierarchies are mounted: cgroup v2 itself, cgroup v1 one folder per
/// controller (`memory/`).
const CGROUP_MOUNT: &str = "/sys/fs/cgroup";

/// What a memory cgroup lets its processes have.
#[derive(Debug, PartialEq)]
struct CgroupMemory {
    /// The least, over the cgroup and its ancestors with a limit, of the limit less the
    /// usage, the inactive file pages counted free (the kernel reclaims those before it
    /// kills a process). Swap is not counted.
    available: usize,
    /// The least of their limits.
    limit: usize,
}

/// The memory cgroup of a process, from its `/proc/<pid>/cgroup` lines (`membership`) and
/// the hierarchies under `mount`: v1's memory controller (`4:memory:/path`), or else v2
/// (`0::/path`). None where no limit applies. A cgroup folder that is not there (a
/// container that sees its own cgroup as the root) is skipped for its ancestors.
fn cgroup_memory(mount: &Path, membership: &str) -> Option<CgroupMemory> {
    let lines = membership.lines().filter_map(|l| {
        let mut parts = l.splitn(3, ':');
        Some((parts.next()?, parts.next()?, parts.next()?))
    });
    let v1 = lines
        .clone()
        .find(|(_, controllers, _)| controllers.split(',').any(|c| c == "memory"));
    let (root, path, files) = match v1 {
        Some((_, _, path)) => (mount.join("memory"), path, V1),
        None => {
            let (_, _, path) = lines.clone().find(|(id, ..)| *id == "0")?;
            (mount.to_path_buf(), path, V2)
        }
    };
    let mut dir = root.join(path.trim_start_matches('/'));
    let mut found: Option<CgroupMemory> = None;
    loop {
        if let Some(level) = files.read(&dir) {
            found = Some(match found {
                Some(f) => CgroupMemory {
                    available: f.available.min(level.available),
                    limit: f.limit.min(level.limit),
                },
                None => level,
            });
        }
        if dir == root || !dir.pop() || !dir.starts_with(&root) {
            return found;
        }
    }
}

/// The files of a cgroup version's memory controller.
struct CgroupFiles {
    limit: &'static str,
    usage: &'static str,
    /// The inactive file pages, in `memory.stat`.
    inactive: &'static str,
}

const V1: CgroupFiles = CgroupFiles {
    limit: "memory.limit_in_bytes",
    usage: "memory.usage_in_bytes",
    inactive: "total_inactive_file",
};

const V2: CgroupFiles = CgroupFiles {
    limit: "memory.max",
    usage: "memory.current",
    inactive: "inactive_file",
};

impl CgroupFiles {
    /// One cgroup's memory, where it has a limit. v2 writes "max" for none, v1 a number near
    /// 2⁶³.
    fn read(&self, dir: &Path) -> Option<CgroupMemory> {
        let number = |file: &str| -> Option<usize> {
            std::fs::read_to_string(dir.join(file))
                .ok()?
                .trim()
                .parse()
                .ok()
        };
        let limit = number(self.limit).filter(|&l| l < 1 << 62)?;
        let usage = number(self.usage)?;
        let stat = std::fs::read_to_string(dir.join("memory.stat")).unwrap_or_default();
        let inactive = stat
            .lines()
            .find_map(|l| l.strip_prefix(self.inactive)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        Some(CgroupMemory {
            available: limit.saturating_sub(usage.saturating_sub(inactive)),
            limit,
        })
    }
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

    /// Writes `files` (path → contents) under a fresh folder.
    fn tree(name: &str, files: &[(&str, &str)]) -> std::path::PathBuf {
        let root =
            std::env::temp_dir().join(format!("fiedler-cgroup-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for (path, contents) in files {
            let path = root.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, contents).unwrap();
        }
        root
    }

    const MIB: usize = 1 << 20;

    #[test]
    fn a_v2_cgroup_is_limited_by_its_tightest_ancestor() {
        let mount = tree(
            "v2",
            &[
                ("memory.max", "max\n"),
                ("memory.current", "999999999999\n"),
                ("jobs/memory.max", "1073741824\n"),
                ("jobs/memory.current", "629145600\n"),
                (
                    "jobs/memory.stat",
                    "anon 1\nactive_file 5\ninactive_file 104857600\n",
                ),
                ("jobs/42/memory.max", "2147483648\n"),
                ("jobs/42/memory.current", "104857600\n"),
            ],
        );
        let membership = "0::/jobs/42\n";
        // jobs: 1024 MiB − (600 − 100) MiB; jobs/42 alone would allow 1948 MiB.
        assert_eq!(
            cgroup_memory(&mount, membership),
            Some(CgroupMemory {
                available: 524 * MIB,
                limit: 1024 * MIB,
            })
        );
        // A container that sees its cgroup as the root: the folder is not there.
        assert_eq!(
            cgroup_memory(&mount, "0::/elsewhere/7\n").map(|c| c.limit),
            None,
            "the mount root has no limit"
        );
        std::fs::write(mount.join("memory.max"), "3221225472").unwrap();
        assert_eq!(
            cgroup_memory(&mount, "0::/elsewhere/7\n").map(|c| c.limit),
            Some(3072 * MIB)
        );
        std::fs::remove_dir_all(&mount).unwrap();
    }

    #[test]
    fn a_v1_memory_controller_is_read_and_no_limit_is_none() {
        let mount = tree(
            "v1",
            &[
                ("memory/memory.limit_in_bytes", "9223372036854771712\n"),
                ("memory/memory.usage_in_bytes", "7189045248\n"),
                ("memory/slurm/job_5/memory.limit_in_bytes", "4294967296\n"),
                ("memory/slurm/job_5/memory.usage_in_bytes", "3221225472\n"),
                (
                    "memory/slurm/job_5/memory.stat",
                    "inactive_file 1\ntotal_inactive_file 536870912\n",
                ),
            ],
        );
        let membership = "9:name=systemd:/\n4:cpu,memory:/slurm/job_5\n0::/\n";
        assert_eq!(
            cgroup_memory(&mount, membership),
            Some(CgroupMemory {
                available: 1536 * MIB,
                limit: 4096 * MIB,
            })
        );
        // The unlimited value v1 writes, and usage past the limit.
        assert_eq!(cgroup_memory(&mount, "4:memory:/\n"), None);
        std::fs::write(
            mount.join("memory/slurm/job_5/memory.usage_in_bytes"),
            "8589934592",
        )
        .unwrap();
        assert_eq!(
            cgroup_memory(&mount, membership).map(|c| c.available),
            Some(0)
        );
        assert_eq!(cgroup_memory(&mount, "garbage"), None);
        std::fs::remove_dir_all(&mount).unwrap();
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
