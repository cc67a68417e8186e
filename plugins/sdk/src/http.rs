//! Outbound HTTP for event sinks (`pacer:plugin/outbound-http`).
//!
//! The host only lets a sink reach the hosts in its `allowedHosts`. Use this from event sinks
//! only: any other plugin kind that calls it fails to load.

use crate::__bindings::sink::pacer::plugin::outbound_http as wit;

/// An HTTP response: the status and the first 4 KiB of the body.
pub use wit::Response;

/// POSTs `body` to `url` (`http://host:port/path`) with `headers` (name, value); redirects are
/// not followed. `Err` is the host's reason (refused host, connection error, timeout).
pub fn post(
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout_ms: u32,
) -> Result<Response, String> {
    let headers: Vec<wit::Header> = headers
        .iter()
        .map(|&(name, value)| wit::Header {
            name: name.to_owned(),
            value: value.to_owned(),
        })
        .collect();
    wit::post(url, &headers, body, timeout_ms)
}

impl Response {
    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}
