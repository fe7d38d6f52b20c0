//! Ctrl-C during a long `fiedler eval` or `explain`: the first stops the work once the batch
//! in hand is done, so the report or the outputs cover every sample done; a second ends the
//! process at once (an eval's results file can be resumed either way).

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set by the first SIGINT while a [`StopOnInterrupt`] is installed.
static REQUESTED: AtomicBool = AtomicBool::new(false);

/// Catches Ctrl-C (SIGINT) until dropped, then restores its default action.
pub struct StopOnInterrupt(());

impl StopOnInterrupt {
    #[cfg(unix)]
    pub fn install() -> Self {
        REQUESTED.store(false, Ordering::SeqCst);
        // SAFETY: the handler only touches an atomic and calls async-signal-safe functions.
        unsafe {
            let handler: extern "C" fn(libc::c_int) = on_interrupt;
            libc::signal(libc::SIGINT, handler as libc::sighandler_t);
        }
        Self(())
    }

    /// No signals elsewhere: Ctrl-C ends the process as before.
    #[cfg(not(unix))]
    pub fn install() -> Self {
        Self(())
    }

    /// Whether Ctrl-C asked the run to stop.
    pub fn requested(&self) -> bool {
        REQUESTED.load(Ordering::SeqCst)
    }

    /// Forgets a Ctrl-C already answered, for the next stage of a run: the next one stops
    /// that stage, and one more ends the process.
    pub fn rearm(&self) {
        REQUESTED.store(false, Ordering::SeqCst);
    }
}

impl Drop for StopOnInterrupt {
    fn drop(&mut self) {
        #[cfg(unix)]
        // SAFETY: resets one signal's action to the default.
        unsafe {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
        }
    }
}

#[cfg(unix)]
extern "C" fn on_interrupt(_: libc::c_int) {
    let say = |text: &[u8]| {
        // SAFETY: write(2) is async-signal-safe; the bytes are a static string.
        unsafe { libc::write(libc::STDERR_FILENO, text.as_ptr().cast(), text.len()) };
    };
    if REQUESTED.swap(true, Ordering::SeqCst) {
        say(b"\nstopped at once\n");
        // SAFETY: _exit is async-signal-safe; 130 is the shell's status for SIGINT.
        unsafe { libc::_exit(130) };
    }
    say(b"\nstopping once the batch in hand is done (Ctrl-C again to stop at once)\n");
}

/// The run stopped at the user's request, its work so far saved: the process exits with
/// 130, as after SIGINT, saying this instead of an error.
#[derive(Debug)]
pub struct Interrupted(pub String);

impl fmt::Display for Interrupted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Interrupted {}
