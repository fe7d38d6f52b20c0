//! Where a GPU trace's time goes, op by op: with `FIEDLER_CUDA_PROFILE=1`, every kernel
//! launch, cuBLAS product, zero-filled allocation and copy to the host is bracketed by CUDA
//! events on the stream, and `Cuda::profile_report` sums their device time by op. Without
//! the variable nothing is recorded and nothing waits.
//!
//! The spans of one stream are in stream order and do not overlap, so their sum is the
//! device time of what was recorded; host time between ops (launch overhead, the host's own
//! work) shows as the difference to the wall time.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use cudarc::driver::sys::CUevent_flags;
use cudarc::driver::{CudaContext, CudaEvent, CudaStream};

use super::device_error;
use crate::backend::Result;

/// What a span timed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Kind {
    /// A kernel of kernels/, by name.
    Kernel,
    /// A cuBLAS product, by the op that made it.
    Gemm,
    /// A zero-filled allocation, by the op that asked for it.
    Zeros,
    /// A device-to-host copy.
    ToHost,
}

struct Span {
    kind: Kind,
    name: &'static str,
    start: CudaEvent,
    end: CudaEvent,
}

/// Calls and device milliseconds per (kind, name).
type Totals = BTreeMap<(Kind, &'static str), (usize, f64)>;

pub(super) struct Profile {
    /// `None`: profiling is off.
    on: Option<Mutex<Recorded>>,
}

#[derive(Default)]
struct Recorded {
    /// Spans whose events the stream may not have passed yet.
    pending: Vec<Span>,
    totals: Totals,
}

/// Spans kept before they are folded into the totals (which waits for the stream): bounds
/// the events alive at once.
const PENDING_SPANS: usize = 4096;

impl Profile {
    /// On when `FIEDLER_CUDA_PROFILE` is set to anything but 0.
    pub fn from_env() -> Self {
        let on = std::env::var("FIEDLER_CUDA_PROFILE").is_ok_and(|v| !v.is_empty() && v != "0");
        Self {
            on: on.then(|| Mutex::new(Recorded::default())),
        }
    }

    /// Runs `f`, which enqueues work on `stream`, between two events when profiling.
    pub fn span<T>(
        &self,
        ctx: &Arc<CudaContext>,
        stream: &CudaStream,
        kind: Kind,
        name: &'static str,
        f: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        let Some(on) = &self.on else { return f() };
        let event = || -> Result<CudaEvent> {
            let e = ctx
                .new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
                .map_err(|e| device_error(name, "creating a profiling event", e))?;
            e.record(stream)
                .map_err(|e| device_error(name, "recording a profiling event", e))?;
            Ok(e)
        };
        let start = event()?;
        let out = f()?;
        let end = event()?;
        let mut recorded = on.lock().unwrap_or_else(|p| p.into_inner());
        recorded.pending.push(Span {
            kind,
            name,
            start,
            end,
        });
        if recorded.pending.len() >= PENDING_SPANS {
            recorded.fold()?;
        }
        Ok(out)
    }

    /// Forgets what was recorded so far (once it has finished): a bench leaves out its warm-up
    /// this way, whose first calls of each cuBLAS product pay for loading its kernels.
    pub fn restart(&self) -> Result<()> {
        let Some(on) = &self.on else { return Ok(()) };
        let mut recorded = on.lock().unwrap_or_else(|p| p.into_inner());
        recorded.fold()?;
        recorded.totals.clear();
        Ok(())
    }

    /// The table of device time per op so far, largest first; `None` when profiling is off.
    /// Waits for the recorded work to finish.
    pub fn report(&self) -> Result<Option<String>> {
        let Some(on) = &self.on else { return Ok(None) };
        let mut recorded = on.lock().unwrap_or_else(|p| p.into_inner());
        recorded.fold()?;
        let total: f64 = recorded.totals.values().map(|&(_, ms)| ms).sum();
        let mut rows: Vec<_> = recorded.totals.iter().collect();
        rows.sort_by(|a, b| b.1 .1.total_cmp(&a.1 .1));
        let mut out = format!(
            "device time per op (FIEDLER_CUDA_PROFILE), {total:.1} ms in all\n{:<8} {:<28} {:>8} {:>11} {:>7}\n",
            "kind", "op", "calls", "ms", "share"
        );
        for ((kind, name), &(calls, ms)) in rows {
            let share = if total > 0.0 { 100.0 * ms / total } else { 0.0 };
            out.push_str(&format!(
                "{:<8} {name:<28} {calls:>8} {ms:>11.2} {share:>6.1}%\n",
                format!("{kind:?}").to_lowercase()
            ));
        }
        Ok(Some(out))
    }
}

impl Recorded {
    /// Adds every pending span to the totals, waiting for its end event.
    fn fold(&mut self) -> Result<()> {
        for span in self.pending.drain(..) {
            span.end
                .synchronize()
                .map_err(|e| device_error(span.name, "waiting for a profiling event", e))?;
            let ms = span
                .start
                .elapsed_ms(&span.end)
                .map_err(|e| device_error(span.name, "reading a profiling event", e))?;
            let entry = self
                .totals
                .entry((span.kind, span.name))
                .or_insert((0, 0.0));
            entry.0 += 1;
            entry.1 += f64::from(ms);
        }
        Ok(())
    }
}
