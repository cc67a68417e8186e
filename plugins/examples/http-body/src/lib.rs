//! Health check over HTTP/1.0: `GET <path>` on the check's port is healthy when the status is
//! 2xx or 3xx and, if an `expect` string is given (`params.expect`, else the configuration's
//! `expect`), the body contains it.

use pacer_plugin_sdk::Error;
use pacer_plugin_sdk::health::{HealthCheck, Status, Target};
use pacer_plugin_sdk::probe;

const MAX_RESPONSE: u32 = 64 * 1024;

#[derive(Default, serde::Deserialize)]
#[serde(default)]
struct Expect {
    expect: Option<String>,
}

#[derive(Default)]
struct HttpBody {
    expect: Option<String>,
}

impl HealthCheck for HttpBody {
    fn configure(config: &str) -> Result<Self, Error> {
        let config: Expect = pacer_plugin_sdk::config::parse(config)?;
        Ok(HttpBody {
            expect: config.expect,
        })
    }

    fn check(&mut self, target: &Target) -> Result<Status, Error> {
        let params: Expect = target.params()?;
        let expect = params
            .expect
            .or_else(|| self.expect.clone())
            .filter(|e| !e.is_empty());
        let Some(port) = target.port else {
            return Ok(Status::unhealthy("the health check selects no port"));
        };
        let path = target.path.as_deref().unwrap_or("/");
        let request = format!(
            "GET {path} HTTP/1.0\r\nHost: {}\r\nConnection: close\r\n\r\n",
            target.host
        );
        let response = match probe::tcp_exchange(
            port,
            request.as_bytes(),
            b"",
            MAX_RESPONSE,
            target.timeout_ms,
        ) {
            Ok(response) => response,
            Err(e) => return Ok(Status::Unhealthy(e)),
        };
        Ok(verdict(&response, expect.as_deref()))
    }
}

/// Judges an HTTP/1.x response: the status line must be 2xx or 3xx and the body must contain
/// `expect`, if given.
fn verdict(response: &[u8], expect: Option<&str>) -> Status {
    let (head, body) = match response.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(at) => (&response[..at], &response[at + 4..]),
        None => (response, &[][..]),
    };
    // Status line: `HTTP/1.x NNN reason`.
    let status_line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let code = std::str::from_utf8(status_line)
        .ok()
        .filter(|line| line.starts_with("HTTP/"))
        .and_then(|line| line.split_whitespace().nth(1)?.parse::<u16>().ok());
    match code {
        None => Status::unhealthy("not an HTTP response"),
        Some(code) if !(200..400).contains(&code) => Status::Unhealthy(format!("HTTP {code}")),
        Some(_) => match expect {
            Some(e) if !body.windows(e.len()).any(|w| w == e.as_bytes()) => {
                Status::Unhealthy(format!("body does not contain {e:?}"))
            }
            _ => Status::Healthy,
        },
    }
}

pacer_plugin_sdk::export_health!(HttpBody);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn judges_status_and_body() {
        let ok = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok";
        assert_eq!(verdict(ok, None), Status::Healthy);
        assert_eq!(verdict(ok, Some("ok")), Status::Healthy);
        assert_eq!(
            verdict(ok, Some("fine")),
            Status::unhealthy("body does not contain \"fine\"")
        );
        assert_eq!(verdict(b"HTTP/1.1 302\r\n\r\n", None), Status::Healthy);
        assert_eq!(
            verdict(b"HTTP/1.1 503 Busy\r\n\r\nok", Some("ok")),
            Status::unhealthy("HTTP 503")
        );
        assert_eq!(
            verdict(b"SSH-2.0-OpenSSH\r\n", None),
            Status::unhealthy("not an HTTP response")
        );
    }
}
