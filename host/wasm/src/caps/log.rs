//! `pacer:plugin/log`: plugin log lines into Pacer's log, capped per call and in length.

use crate::bindings::constraint::pacer::plugin::log::{Host, Level};
use crate::state::{CallState, LOG_LINES_PER_CALL, LOG_LINE_BYTES};

impl crate::bindings::constraint::pacer::plugin::types::Host for CallState {}

impl Host for CallState {
    fn log(&mut self, level: Level, message: String) {
        let mut message = message;
        if message.len() > LOG_LINE_BYTES {
            let mut end = LOG_LINE_BYTES;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
            message.push('…');
        }
        if matches!(level, Level::Error) {
            self.last_error = Some(message.clone());
        }
        self.log_lines += 1;
        if self.log_lines > LOG_LINES_PER_CALL {
            if self.log_lines == LOG_LINES_PER_CALL + 1 {
                tracing::warn!(plugin = %self.plugin, message = "Plugin log lines dropped: more than the limit per call.", limit = LOG_LINES_PER_CALL);
            }
            return;
        }
        let plugin = &*self.plugin;
        match level {
            Level::Trace => tracing::trace!(target: "pacer::plugin", plugin, "{message}"),
            Level::Debug => tracing::debug!(target: "pacer::plugin", plugin, "{message}"),
            Level::Info => tracing::info!(target: "pacer::plugin", plugin, "{message}"),
            Level::Warn => tracing::warn!(target: "pacer::plugin", plugin, "{message}"),
            Level::Error => tracing::error!(target: "pacer::plugin", plugin, "{message}"),
        }
    }
}
