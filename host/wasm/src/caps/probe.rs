//! `pacer:plugin/probe`: TCP to the checked task's own host and ports, nothing else.

use crate::bindings::health::pacer::plugin::probe::Host;
use crate::state::{CallState, Grant};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// No single probe waits longer than this, whatever the plugin asks.
const MAX_PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// The most a `tcp-exchange` reads.
const MAX_EXCHANGE_BYTES: u32 = 64 * 1024;

impl CallState {
    /// The address a probe may reach, or why not.
    fn probe_target(&self, port: u16) -> Result<(String, u16), String> {
        match &self.grant {
            Grant::Probe { host, ports } if ports.contains(&port) => Ok((host.clone(), port)),
            Grant::Probe { ports, .. } => Err(format!(
                "port {port} is not one of the task's ports ({ports:?}); probes may only reach the checked task"
            )),
            _ => Err("this plugin is not granted network probes".into()),
        }
    }

    /// The time a probe may take: the plugin's ask, within the call's deadline and the cap.
    fn probe_timeout(&self, timeout_ms: u32) -> Duration {
        let left = self
            .deadline
            .saturating_duration_since(std::time::Instant::now());
        Duration::from_millis(timeout_ms.into())
            .min(MAX_PROBE_TIMEOUT)
            .min(left)
    }
}

async fn connect(host: &str, port: u16) -> Result<TcpStream, String> {
    TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("connect to {host}:{port}: {e}"))
}

impl Host for CallState {
    async fn tcp_connect(&mut self, port: u16, timeout_ms: u32) -> Result<(), String> {
        let (host, port) = self.probe_target(port)?;
        let limit = self.probe_timeout(timeout_ms);
        match tokio::time::timeout(limit, connect(&host, port)).await {
            Ok(r) => r.map(drop),
            Err(_) => Err(format!(
                "connect to {host}:{port}: timed out after {limit:?}"
            )),
        }
    }

    async fn tcp_exchange(
        &mut self,
        port: u16,
        request: Vec<u8>,
        until: Vec<u8>,
        max_bytes: u32,
        timeout_ms: u32,
    ) -> Result<Vec<u8>, String> {
        let (host, port) = self.probe_target(port)?;
        let limit = self.probe_timeout(timeout_ms);
        let max = max_bytes.min(MAX_EXCHANGE_BYTES) as usize;
        let exchange = async {
            let mut stream = connect(&host, port).await?;
            stream
                .write_all(&request)
                .await
                .map_err(|e| format!("write to {host}:{port}: {e}"))?;
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            while got.len() < max {
                let n = stream
                    .read(&mut buf)
                    .await
                    .map_err(|e| format!("read from {host}:{port}: {e}"))?;
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n.min(max - got.len())]);
                if !until.is_empty() && got.windows(until.len()).any(|w| w == until.as_slice()) {
                    break;
                }
            }
            Ok(got)
        };
        match tokio::time::timeout(limit, exchange).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "exchange with {host}:{port}: timed out after {limit:?}"
            )),
        }
    }
}
