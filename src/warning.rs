//! Warnings from the library: things a caller should know that do not stop the work (a text
//! cut to the model's positions, defaults used for a missing preprocessor config, …). They go
//! to stderr as "warning: …" unless the program installs its own handler, e.g. to log them or
//! show them beside its results.

use std::sync::RwLock;

type Handler = Box<dyn Fn(&str) + Send + Sync>;

static HANDLER: RwLock<Option<Handler>> = RwLock::new(None);

/// Sends every later warning to `handler` (the message, without a "warning: " prefix)
/// instead of stderr.
pub fn set_handler(handler: impl Fn(&str) + Send + Sync + 'static) {
    *HANDLER.write().unwrap_or_else(|p| p.into_inner()) = Some(Box::new(handler));
}

/// Back to the default: stderr.
pub fn reset_handler() {
    *HANDLER.write().unwrap_or_else(|p| p.into_inner()) = None;
}

pub(crate) fn warn(message: &str) {
    match &*HANDLER.read().unwrap_or_else(|p| p.into_inner()) {
        Some(handler) => handler(message),
        None => eprintln!("warning: {message}"),
    }
}
