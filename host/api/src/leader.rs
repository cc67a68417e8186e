//! Leadership as the API sees it: who leads ([`Role`]), and the standby's proxy that forwards
//! every request to the leader (Marathon's `LeaderProxyFilter`), plus `/v2/leader` and the
//! leader-only health endpoint for load balancers.

use crate::error::ApiError;
use crate::ApiContext;
use axum::body::Body;
use axum::extract::State as AxState;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Request, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// A Pacer's address, as the election publishes it in its latch node.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LeaderAddr {
    /// `host:port`.
    pub id: String,
    /// `http://host:port` (https when the leader serves only HTTPS).
    pub url: String,
}

/// This Pacer's part in the election.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// Serving as the leader (a Pacer without election always is).
    Leader,
    /// Elected, but the ZooKeeper connection is lost: it neither changes state nor answers until
    /// the session is back (or gone, and with it the leadership).
    Suspended,
    /// Another Pacer leads, or nobody yet (`None`), or this one won and is still loading (its
    /// own address).
    Standby { leader: Option<LeaderAddr> },
}

/// What the API needs to take part in leader election.
#[derive(Clone, Debug)]
pub struct HaSetup {
    pub role: watch::Receiver<Role>,
    /// Woken by `DELETE /v2/leader` (after the answer is on its way).
    pub abdicate: Arc<tokio::sync::Notify>,
    pub proxy_connect_timeout: Duration,
    pub proxy_read_timeout: Duration,
}

/// Paths a standby answers itself: facts about this process, not about the cluster.
const LOCAL_PATHS: &[&str] = &[
    "/ping",
    "/metrics",
    "/metrics/prometheus",
    "/logging",
    HEALTH_PATH,
];
/// 200 only on the serving leader: a load balancer's health check sends traffic straight there.
pub const HEALTH_PATH: &str = "/leader/health";
/// Marathon waits up to 10 × 250 ms for an election to settle before giving up on a request.
const ELECTION_WAIT: Duration = Duration::from_millis(2500);
/// Headers that belong to one connection and are never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
];

impl ApiContext {
    /// This Pacer's role now.
    pub fn role(&self) -> Role {
        match &self.ha {
            None => Role::Leader,
            Some(ha) => ha.role.borrow().clone(),
        }
    }

    /// The leader's `host:port` and URL, when known.
    pub fn current_leader(&self) -> Option<LeaderAddr> {
        match self.role() {
            Role::Leader | Role::Suspended => Some(self.info.me.clone()),
            Role::Standby { leader } => leader,
        }
    }

    /// `X-Marathon-Via`'s value for this Pacer.
    fn via(&self) -> String {
        format!("1.1 {}", self.info.me.id)
    }
}

/// Serves the request here when this Pacer leads, otherwise forwards it to the leader.
pub(crate) async fn proxy_to_leader(
    AxState(ctx): AxState<Arc<ApiContext>>,
    req: Request<Body>,
    next: Next,
) -> Response {
    let Some(ha) = &ctx.ha else {
        return next.run(req).await;
    };
    if LOCAL_PATHS.contains(&req.uri().path()) {
        return next.run(req).await;
    }
    let leader = match settled_leader(&ctx, ha.role.clone()).await {
        Settled::Me => return next.run(req).await,
        Settled::Suspended => {
            let msg = "Leadership is suspended: this Pacer lost its ZooKeeper connection. Retry \
                       shortly.";
            return ApiError::Status(StatusCode::SERVICE_UNAVAILABLE, msg.into()).into_response();
        }
        Settled::Unknown => {
            let msg = "Could not determine the current leader";
            return ApiError::Status(StatusCode::BAD_GATEWAY, msg.into()).into_response();
        }
        Settled::Other(l) => l,
    };
    // Only a request on its way to the leader can loop (Marathon checks here too).
    let via = ctx.via();
    let looped = req
        .headers()
        .get_all("X-Marathon-Via")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| v.trim() == via);
    if looped {
        return ApiError::Status(StatusCode::BAD_GATEWAY, "Detected proxying loop.".into())
            .into_response();
    }
    if req.uri().path() == "/v2/events" {
        // Streams are not proxied (Marathon 1.7+): the client follows to the leader.
        let target = format!(
            "{}{}",
            leader.url,
            req.uri().path_and_query().map_or("/", |p| p.as_str())
        );
        return match HeaderValue::from_str(&target) {
            Ok(v) => (StatusCode::FOUND, [(header::LOCATION, v)]).into_response(),
            Err(_) => ApiError::Status(StatusCode::BAD_GATEWAY, "Bad leader address".into())
                .into_response(),
        };
    }
    match forward(&ctx, ha, &leader, &via, req).await {
        Ok(res) => res,
        Err(e) => {
            tracing::warn!(leader = %leader.url, error = %e.message(), "cannot proxy to the leader");
            e.into_response()
        }
    }
}

enum Settled {
    Me,
    Suspended,
    Unknown,
    Other(LeaderAddr),
}

/// The leader to use, waiting a little while an election is under way.
async fn settled_leader(ctx: &ApiContext, mut role: watch::Receiver<Role>) -> Settled {
    let me = &ctx.info.me;
    let settled = |r: &Role| match r {
        Role::Leader => Some(Settled::Me),
        Role::Suspended => Some(Settled::Suspended),
        Role::Standby { leader: Some(l) } if l != me => Some(Settled::Other(l.clone())),
        Role::Standby { .. } => None,
    };
    let waited = tokio::time::timeout(ELECTION_WAIT, async {
        loop {
            if let Some(s) = settled(&role.borrow_and_update()) {
                return s;
            }
            if role.changed().await.is_err() {
                return Settled::Unknown;
            }
        }
    })
    .await;
    waited.unwrap_or(Settled::Unknown)
}

enum ProxyError {
    Refused(String),
    Timeout,
    Other(String),
}

impl ProxyError {
    fn message(&self) -> String {
        match self {
            ProxyError::Refused(why) => format!("Connection to leader refused. ({why})"),
            ProxyError::Timeout => "The leader did not answer in time.".into(),
            ProxyError::Other(why) => format!("Proxying to the leader failed: {why}"),
        }
    }
}

impl IntoResponse for ProxyError {
    fn into_response(self) -> Response {
        let status = match self {
            ProxyError::Timeout => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::BAD_GATEWAY,
        };
        ApiError::Status(status, self.message()).into_response()
    }
}

async fn forward(
    ctx: &ApiContext,
    ha: &HaSetup,
    leader: &LeaderAddr,
    via: &str,
    req: Request<Body>,
) -> Result<Response, ProxyError> {
    let base: Uri = leader
        .url
        .parse()
        .map_err(|_| ProxyError::Other(format!("bad leader URL {}", leader.url)))?;
    if base.scheme_str() != Some("http") {
        return Err(ProxyError::Other(format!(
            "the leader serves only HTTPS ({}); standbys forward over HTTP, so keep HTTP enabled \
             on every Pacer of an HA cluster",
            leader.url
        )));
    }
    let authority = base
        .authority()
        .ok_or_else(|| ProxyError::Other(format!("bad leader URL {}", leader.url)))?
        .clone();
    let client_ip = req
        .extensions()
        .get::<crate::ClientAddr>()
        .map(|a| a.0.clone())
        .unwrap_or_default();
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, ctx.options.max_body_bytes)
        .await
        .map_err(|e| ProxyError::Other(format!("cannot read the request body: {e}")))?;

    let mut headers = HeaderMap::new();
    for (name, value) in &parts.headers {
        if !HOP_BY_HOP.contains(&name.as_str()) {
            headers.append(name.clone(), value.clone());
        }
    }
    append(&mut headers, "x-marathon-via", via);
    if !client_ip.is_empty() {
        append(&mut headers, "x-forwarded-for", &client_ip);
    }
    if let Ok(v) = HeaderValue::from_str(authority.as_str()) {
        headers.insert(header::HOST, v);
    }
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut out = Request::builder()
        .method(parts.method.clone())
        .uri(path)
        .body(http_body_util::Full::new(body))
        .map_err(|e| ProxyError::Other(e.to_string()))?;
    *out.headers_mut() = headers;

    let addr = authority.as_str().to_string();
    let stream = tokio::time::timeout(
        ha.proxy_connect_timeout,
        tokio::net::TcpStream::connect(addr),
    )
    .await
    .map_err(|_| ProxyError::Refused("connection timed out".into()))?
    .map_err(|e| ProxyError::Refused(e.to_string()))?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| ProxyError::Other(e.to_string()))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let res = tokio::time::timeout(ha.proxy_read_timeout, sender.send_request(out))
        .await
        .map_err(|_| ProxyError::Timeout)?
        .map_err(|e| ProxyError::Other(e.to_string()))?;
    let (mut parts, body) = res.into_parts();
    for name in HOP_BY_HOP {
        parts.headers.remove(*name);
    }
    append(&mut parts.headers, "x-marathon-via", via);
    Ok(Response::from_parts(parts, Body::new(body)))
}

fn append(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.append(HeaderName::from_static(name), v);
    }
}

/// `GET /v2/leader`.
pub(crate) async fn get_leader(AxState(ctx): AxState<Arc<ApiContext>>) -> Response {
    match ctx.current_leader() {
        Some(l) => Json(json!({"leader": l.id})).into_response(),
        None => ApiError::not_found("There is no leader").into_response(),
    }
}

/// `DELETE /v2/leader`: the leader gives up leadership once the answer is sent.
pub(crate) async fn delete_leader(AxState(ctx): AxState<Arc<ApiContext>>) -> Response {
    let Some(ha) = &ctx.ha else {
        return ApiError::not_found(
            "There is no leader election to abdicate from: this Pacer runs without --zk or with \
             --disable_ha",
        )
        .into_response();
    };
    if ctx.role() != Role::Leader {
        return ApiError::not_found("There is no leader").into_response();
    }
    let abdicate = ha.abdicate.clone();
    tokio::spawn(async move {
        // Let the answer reach the client first, as Marathon does.
        tokio::time::sleep(Duration::from_millis(500)).await;
        abdicate.notify_one();
    });
    Json(json!({"message": "Leadership abdicated"})).into_response()
}

/// `GET /leader/health`: 200 on the serving leader, 503 elsewhere; never proxied.
pub(crate) async fn leader_health(AxState(ctx): AxState<Arc<ApiContext>>) -> Response {
    let leader = ctx.current_leader().map(|l| l.id);
    let body = json!({"leader": leader, "self": ctx.info.me.id});
    if ctx.role() == Role::Leader {
        (StatusCode::OK, Json(body)).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    }
}
