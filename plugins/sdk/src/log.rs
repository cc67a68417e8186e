//! Writing to the plugin log (`pacer:plugin/log`), the only output a plugin has.
//!
//! The host caps the number and the length of lines per call.

pub use crate::__bindings::constraint::pacer::plugin::log::Level;

use crate::__bindings::constraint::pacer::plugin::log as wit;

/// Writes one line at `level`.
pub fn log(level: Level, message: impl AsRef<str>) {
    wit::log(level, message.as_ref());
}

/// Writes one line at level trace.
pub fn trace(message: impl AsRef<str>) {
    log(Level::Trace, message);
}

/// Writes one line at level debug.
pub fn debug(message: impl AsRef<str>) {
    log(Level::Debug, message);
}

/// Writes one line at level info.
pub fn info(message: impl AsRef<str>) {
    log(Level::Info, message);
}

/// Writes one line at level warn.
pub fn warn(message: impl AsRef<str>) {
    log(Level::Warn, message);
}

/// Writes one line at level error.
pub fn error(message: impl AsRef<str>) {
    log(Level::Error, message);
}
