//! One HTTP(S) exchange: a GET for a probe, or a JSON POST for an event callback. HTTPS does not verify certificates or host names (as Marathon:
//! tasks serve self-signed certificates). Informational (1xx) answers are captured, because
//! `ignoreHttp1xx` must tell them apart from failures and a server may never send more.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// Bodies kept for readiness checks are cut at this size.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HttpError {
    /// Only an informational answer came before the timeout.
    #[error("HTTP {0} (informational) and no final response within the timeout")]
    Informational(u16),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Failed(String),
}

/// GETs `path` from `host:port` within `timeout` (connect, TLS and the whole answer).
pub async fn get(
    host: &str,
    port: u32,
    path: &str,
    tls: bool,
    timeout: Duration,
    want_body: bool,
) -> Result<Reply, HttpError> {
    send(host, port, path, tls, timeout, want_body, None).await
}

/// POSTs a JSON body (event callbacks), within `timeout`.
pub async fn post_json(
    host: &str,
    port: u32,
    path: &str,
    tls: bool,
    timeout: Duration,
    json: String,
) -> Result<Reply, HttpError> {
    send(host, port, path, tls, timeout, false, Some(json)).await
}

async fn send(
    host: &str,
    port: u32,
    path: &str,
    tls: bool,
    timeout: Duration,
    want_body: bool,
    json: Option<String>,
) -> Result<Reply, HttpError> {
    let informational = Arc::new(AtomicU16::new(0));
    let work = exchange(
        host,
        port,
        path,
        tls,
        want_body,
        json,
        informational.clone(),
    );
    match tokio::time::timeout(timeout, work).await {
        Ok(r) => r,
        Err(_) => match informational.load(Ordering::Relaxed) {
            0 => Err(HttpError::Timeout(timeout)),
            code => Err(HttpError::Informational(code)),
        },
    }
}

async fn exchange(
    host: &str,
    port: u32,
    path: &str,
    tls: bool,
    want_body: bool,
    json: Option<String>,
    informational: Arc<AtomicU16>,
) -> Result<Reply, HttpError> {
    let port = u16::try_from(port).map_err(|_| HttpError::Failed(format!("bad port {port}")))?;
    let tcp = TcpStream::connect((host, port))
        .await
        .map_err(|e| HttpError::Failed(format!("connect to {host}:{port}: {e}")))?;
    let _ = tcp.set_nodelay(true);
    if tls {
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| HttpError::Failed(format!("bad host name {host}: {e}")))?;
        let stream = tokio_rustls::TlsConnector::from(tls_config())
            .connect(name, tcp)
            .await
            .map_err(|e| HttpError::Failed(format!("TLS handshake with {host}:{port}: {e}")))?;
        request(stream, host, port, path, want_body, json, informational).await
    } else {
        request(tcp, host, port, path, want_body, json, informational).await
    }
}

async fn request<S>(
    stream: S,
    host: &str,
    port: u16,
    path: &str,
    want_body: bool,
    json: Option<String>,
    informational: Arc<AtomicU16>,
) -> Result<Reply, HttpError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let failed = |e: hyper::Error| HttpError::Failed(e.to_string());
    let (mut sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(failed)?;
    // The connection future ends when this exchange does; it is dropped with the probe.
    let conn = tokio::spawn(conn);
    let path = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    let builder = match &json {
        None => hyper::Request::get(path),
        Some(_) => {
            hyper::Request::post(path).header(hyper::header::CONTENT_TYPE, "application/json")
        }
    };
    let body = match json {
        None => Full::new(Bytes::new()),
        Some(j) => Full::new(Bytes::from(j)),
    };
    let mut req = builder
        .header(hyper::header::HOST, format!("{host}:{port}"))
        .header(hyper::header::USER_AGENT, "pacer")
        .header(hyper::header::CONNECTION, "close")
        .body(body)
        .map_err(|e| HttpError::Failed(e.to_string()))?;
    hyper::ext::on_informational(&mut req, move |res| {
        informational.store(res.status().as_u16(), Ordering::Relaxed);
    });
    let result = async {
        let res = sender.send_request(req).await.map_err(failed)?;
        let status = res.status().as_u16();
        let content_type = res
            .headers()
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = if want_body {
            match Limited::new(res.into_body(), MAX_BODY_BYTES)
                .collect()
                .await
            {
                Ok(b) => String::from_utf8_lossy(&b.to_bytes()).into_owned(),
                Err(_) => String::new(),
            }
        } else {
            String::new()
        };
        Ok(Reply {
            status,
            content_type,
            body,
        })
    }
    .await;
    conn.abort();
    result
}

fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .expect("ring supports the default protocol versions")
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider)))
                .with_no_client_auth();
            Arc::new(config)
        })
        .clone()
}

/// Health checks do not verify certificates (Marathon's behaviour); signatures are still
/// checked so that the handshake itself is sound.
#[derive(Debug)]
struct AcceptAnyCert(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
