//! `pacer-api`: Marathon's REST API v2 over axum. Reads come from a snapshot of the core's state
//! (never blocking the scheduler); changes go to the runtime as [`Request`]s and are answered
//! only after they are durable.

mod apps;
mod deployments;
mod error;
pub mod events;
mod groups;
mod misc;
pub mod render;
mod selector;
mod stream;

pub use apps::now;
pub use error::ApiError;
pub use stream::valid_callback_url;

use axum::http::{header, HeaderValue, Request as HttpRequest};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use pacer_core::machine::{Command, CommandError, Outcome};
use pacer_core::state::State;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use tokio::sync::{mpsc, oneshot};

/// Why a submitted command did not take effect.
#[derive(Debug, Clone)]
pub enum SubmitError {
    Command(CommandError),
    /// The change could not be made durable; nothing of it was applied.
    Storage(String),
    /// The scheduler loop is gone (shutting down).
    Unavailable,
}

/// A command on its way to the runtime, with the channel for its answer.
pub struct Request {
    pub cmd: Command,
    pub reply: oneshot::Sender<Result<Outcome, SubmitError>>,
    /// Announce the change as an `api_post_event` once it is durable, before what it triggers.
    pub api_post: Option<ApiPost>,
}

/// Who changed which app through the API (`api_post_event`).
#[derive(Clone, Debug)]
pub struct ApiPost {
    pub client_ip: String,
    pub uri: String,
    pub app_id: pacer_core::id::PathId,
}

/// Static facts for `/v2/info` and `/v2/leader`, assembled by the daemon.
#[derive(Clone, Debug)]
pub struct ServerInfo {
    /// `host:port` this server is reachable at.
    pub leader: String,
    pub framework_id: Option<String>,
    /// The `marathon_config` object (credentials already redacted).
    pub marathon_config: serde_json::Value,
    pub zookeeper_config: serde_json::Value,
    pub http_config: serde_json::Value,
}

/// The shared, read-mostly view the handlers use.
pub struct ApiContext {
    commands: mpsc::Sender<Request>,
    snapshot: RwLock<Arc<State>>,
    pub info: ServerInfo,
    pub metrics: ApiMetrics,
    pub events: Arc<events::EventBus>,
    /// `--event_subscriber http_callback`: `/v2/eventSubscriptions` is served.
    pub callbacks_enabled: bool,
}

/// The client's IP address, put on every request by the router's middleware.
#[derive(Clone, Debug)]
pub struct ClientAddr(pub String);

#[derive(Default)]
pub struct ApiMetrics {
    /// Offers the scheduler used to launch tasks / declined; counted by the runtime.
    pub offers_used: AtomicU64,
    pub offers_declined: AtomicU64,
    pub requests: AtomicU64,
    pub errors_4xx: AtomicU64,
    pub errors_5xx: AtomicU64,
}

impl ApiContext {
    pub fn new(
        commands: mpsc::Sender<Request>,
        info: ServerInfo,
        events: Arc<events::EventBus>,
        callbacks_enabled: bool,
    ) -> Arc<Self> {
        Arc::new(ApiContext {
            commands,
            snapshot: RwLock::new(Arc::new(State::default())),
            info,
            metrics: ApiMetrics::default(),
            events,
            callbacks_enabled,
        })
    }

    /// Publishes a new snapshot; readers that already hold the old one keep it.
    pub fn publish(&self, state: State) {
        *self.snapshot.write().expect("snapshot lock poisoned") = Arc::new(state);
    }

    pub fn snapshot(&self) -> Arc<State> {
        self.snapshot
            .read()
            .expect("snapshot lock poisoned")
            .clone()
    }

    pub async fn submit(&self, cmd: Command) -> Result<Outcome, SubmitError> {
        self.submit_with(cmd, None).await
    }

    pub async fn submit_with(
        &self,
        cmd: Command,
        api_post: Option<ApiPost>,
    ) -> Result<Outcome, SubmitError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Request {
                cmd,
                reply,
                api_post,
            })
            .await
            .map_err(|_| SubmitError::Unavailable)?;
        rx.await.map_err(|_| SubmitError::Unavailable)?
    }
}

/// Request bodies larger than this get a 413.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

pub fn router(ctx: Arc<ApiContext>) -> Router {
    Router::new()
        .merge(apps::routes())
        .merge(misc::routes())
        .merge(groups::routes())
        .merge(deployments::routes())
        .merge(stream::routes())
        .fallback(misc::not_found)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(ctx.clone(), common_headers))
        .with_state(ctx)
}

/// Marathon's filter chain: cache-disabling headers on everything, leader and hardening headers.
async fn common_headers(
    axum::extract::State(ctx): axum::extract::State<Arc<ApiContext>>,
    mut req: HttpRequest<axum::body::Body>,
    next: Next,
) -> Response {
    ctx.metrics.requests.fetch_add(1, Ordering::Relaxed);
    let addr = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_default();
    req.extensions_mut().insert(ClientAddr(addr));
    // Refuse an oversized body from its declared length, before reading any of it; bodies
    // without a length are still cut off at the limit while they are read.
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut res = if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        error::ApiError::Status(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            format!("Request body is larger than the limit of {MAX_BODY_BYTES} bytes"),
        )
        .into_response()
    } else {
        next.run(req).await
    };
    let status = res.status();
    if status.is_client_error() {
        ctx.metrics.errors_4xx.fetch_add(1, Ordering::Relaxed);
    } else if status.is_server_error() {
        ctx.metrics.errors_5xx.fetch_add(1, Ordering::Relaxed);
    }
    let h = res.headers_mut();
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store, must-revalidate"),
    );
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    h.insert(header::EXPIRES, HeaderValue::from_static("0"));
    h.insert("X-Frame-Options", HeaderValue::from_static("DENY"));
    h.insert(
        "X-XSS-Protection",
        HeaderValue::from_static("1; mode=block"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("http://{}", ctx.info.leader)) {
        h.insert("X-Marathon-Leader", v);
    }
    res
}
