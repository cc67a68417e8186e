//! Network access for health checks (`pacer:plugin/probe`).
//!
//! The host only lets a check reach the checked task's own host and one of its ports
//! (`Target::ports`); anything else comes back as an `Err` with the host's reason. Use these
//! from health plugins only: any other plugin kind that calls them fails to load.

use crate::__bindings::health::pacer::plugin::probe as wit;

/// Opens a TCP connection to `port` on the task's host and closes it again.
pub fn tcp_connect(port: u16, timeout_ms: u32) -> Result<(), String> {
    wit::tcp_connect(port, timeout_ms)
}

/// Connects to `port` on the task's host, writes `request`, then reads until the peer closes,
/// `until` appears in the data (when not empty) or `max_bytes` have arrived; returns what was
/// read.
pub fn tcp_exchange(
    port: u16,
    request: &[u8],
    until: &[u8],
    max_bytes: u32,
    timeout_ms: u32,
) -> Result<Vec<u8>, String> {
    wit::tcp_exchange(port, request, until, max_bytes, timeout_ms)
}
