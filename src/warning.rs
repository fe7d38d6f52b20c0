//! Warnings from the library: things a caller should know that do not stop the work (a text
//! cut to the model's positions, defaults used for a missing preprocessor config, …). They go
//! to stderr as "warning: …" unless the program installs its own handler, e.g. to log them or
//! show them beside its results.

use std::sync::{Arc, RwLock};

type Handler = Arc<dyn Fn(&str) + Send + Sync>;

static HANDLER: RwLock<Option<Handler>> = RwLock::new(None);

/// Sends every later warning to `handler` (the message, without a "warning: " prefix)
/// instead of stderr. The handler may itself set or reset the handler (to warn once, say).
pub fn set_handler(handler: impl Fn(&str) + Send + Sync + 'static) {
    *HANDLER.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(handler));
}

/// Back to the default: stderr.
pub fn reset_handler() {
    *HANDLER.write().unwrap_or_else(|p| p.into_inner()) = None;
}

pub(crate) fn warn(message: &str) {
    // Called outside the lock: a handler that sets or resets the handler would otherwise
    // wait for itself.
    let handler = HANDLER.read().unwrap_or_else(|p| p.into_inner()).clone();
    match handler {
        Some(handler) => handler(message),
        None => eprintln!("warning: {message}"),
    }
}
