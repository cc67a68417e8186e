//! `pacer:plugin/outbound-http`: POSTs to the plugin's allowed hosts over plain HTTP/1.1; no
//! redirects are followed, and only the first 4 KiB of an answer are returned.

use crate::bindings::sink::pacer::plugin::outbound_http::{Header, Host, Response};
use crate::state::{CallState, Grant};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use std::time::Duration;

const MAX_POST_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_RESPONSE_BYTES: usize = 4096;

/// `http://host[:port]/path` split; other schemes and user info are refused.
fn parse_url(url: &str) -> Result<(String, u16, String), String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        format!("{url:?}: only http:// URLs are supported (https is not built yet)")
    })?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.contains('@') {
        return Err(format!("{url:?}: user info in URLs is not allowed"));
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => match p.parse() {
            Ok(p) => (h, p),
            Err(_) => (authority, 80),
        },
        _ => (authority, 80),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("{url:?}: no host"));
    }
    Ok((host.to_ascii_lowercase(), port, path.to_string()))
}

impl CallState {
    fn http_target(&self, url: &str) -> Result<(String, u16, String), String> {
        let (host, port, path) = parse_url(url)?;
        match &self.grant {
            Grant::Http { allowed } if allowed.iter().any(|(h, p)| *h == host && *p == port) => {
                Ok((host, port, path))
            }
            Grant::Http { .. } => Err(format!(
                "outbound HTTP to {host}:{port} denied: not in the plugin's allowedHosts"
            )),
            _ => Err("this plugin is not granted outbound HTTP".into()),
        }
    }
}

async fn post(
    host: &str,
    port: u16,
    path: &str,
    headers: Vec<Header>,
    body: Vec<u8>,
) -> Result<Response, String> {
    let stream = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("connect to {host}:{port}: {e}"))?;
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, conn) = hyper::client::conn::http1::handshake::<_, Full<Bytes>>(io)
        .await
        .map_err(|e| format!("HTTP handshake with {host}:{port}: {e}"))?;
    let driver = tokio::spawn(conn);
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let mut req = hyper::Request::post(path).header(hyper::header::HOST, authority);
    for h in headers {
        req = req.header(h.name.as_str(), h.value.as_str());
    }
    let req = req
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| format!("invalid request: {e}"))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("POST to {host}:{port}: {e}"))?;
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    let mut got = Vec::new();
    while got.len() < MAX_RESPONSE_BYTES {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    let n = data.len().min(MAX_RESPONSE_BYTES - got.len());
                    got.extend_from_slice(&data[..n]);
                }
            }
            Some(Err(e)) => return Err(format!("reading the answer of {host}:{port}: {e}")),
            None => break,
        }
    }
    driver.abort();
    Ok(Response { status, body: got })
}

impl Host for CallState {
    async fn post(
        &mut self,
        url: String,
        headers: Vec<Header>,
        body: Vec<u8>,
        timeout_ms: u32,
    ) -> Result<Response, String> {
        let (host, port, path) = self.http_target(&url)?;
        let left = self
            .deadline
            .saturating_duration_since(std::time::Instant::now());
        let limit = Duration::from_millis(timeout_ms.into())
            .min(MAX_POST_TIMEOUT)
            .min(left);
        match tokio::time::timeout(limit, post(&host, port, &path, headers, body)).await {
            Ok(r) => r,
            Err(_) => Err(format!("POST to {host}:{port}: timed out after {limit:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_plain_http_without_user_info() {
        assert_eq!(
            parse_url("http://Hooks.Example:8080/a?b").unwrap(),
            ("hooks.example".into(), 8080, "/a?b".into())
        );
        assert_eq!(parse_url("http://h").unwrap(), ("h".into(), 80, "/".into()));
        assert_eq!(
            parse_url("http://[::1]:9/x").unwrap(),
            ("::1".into(), 9, "/x".into())
        );
        assert!(parse_url("https://h/")
            .unwrap_err()
            .contains("only http://"));
        assert!(parse_url("http://u:p@h/")
            .unwrap_err()
            .contains("user info"));
    }
}
