//! Output into a closed pipe (`fiedler explain … | head`) ends the process quietly, as it
//! ends `cat` or `grep`, instead of the panic Rust's `println!` raises on a write error:
//! Rust ignores SIGPIPE by default, so the write fails rather than the signal ending the
//! process. Restoring the default action gives the usual Unix behaviour.

/// Lets SIGPIPE end the process (call first thing in main).
#[cfg(unix)]
pub fn end_quietly_on_closed_pipe() {
    // SAFETY: resets one signal's action to the default, before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// No SIGPIPE elsewhere.
#[cfg(not(unix))]
pub fn end_quietly_on_closed_pipe() {}
