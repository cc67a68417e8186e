//! `pacer-api`: Marathon's REST API v2 over axum. Reads come from a snapshot of the core's state
//! (never blocking the scheduler); changes go to the runtime as [`Request`]s and are answered
//! only after they are durable.

mod apps;
mod cache;
mod deployments;
mod error;
pub mod events;
mod groups;
mod guard;
pub mod leader;
pub mod logging;
pub mod metrics;
mod misc;
pub mod render;
mod selector;
mod stream;

pub use apps::now;
pub use error::ApiError;
pub use stream::valid_callback_url;

use axum::extract::MatchedPath;
use axum::http::{header, HeaderValue, Request as HttpRequest};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use pacer_core::machine::{Command, CommandError, Outcome};
use pacer_core::state::State;
use std::sync::{Arc, RwLock};
use tokio::sync::{mpsc, oneshot};

/// Why a submitted command did not take effect.
#[derive(Debug, Clone)]
pub enum SubmitError {
    Command(CommandError),
    /// The change could not be made durable; nothing of it was applied.
    Storage(String),
    /// The change is too large for the store (ZooKeeper's node size); nothing was applied.
    TooLarge(String),
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
#[derive(Clone, Debug, Default)]
pub struct ServerInfo {
    /// This Pacer: `host:port` and its URL (https when only HTTPS is served).
    pub me: leader::LeaderAddr,
    /// The framework id the cluster manager gave Pacer (set when it registers).
    pub framework_id: std::sync::Arc<std::sync::RwLock<Option<String>>>,
    /// The `marathon_config` object (credentials already redacted).
    pub marathon_config: serde_json::Value,
    pub zookeeper_config: serde_json::Value,
    pub http_config: serde_json::Value,
    /// `/v2/plugins` entries (`id`, `plugin`, `implementation`, `tags`, `info`).
    pub plugins: Vec<serde_json::Value>,
}

/// How the HTTP API is guarded and what it serves; from the daemon's flags.
#[derive(Clone, Debug)]
pub struct HttpOptions {
    /// `user:password` every request must present (HTTP Basic).
    pub credentials: Option<String>,
    pub realm: String,
    pub max_concurrent_requests: Option<usize>,
    /// Request bodies larger than this get a 413.
    pub max_body_bytes: usize,
    /// CORS origins (`*` for any); empty turns CORS off.
    pub cors_origins: Vec<String>,
    /// Gzip for clients that accept it (never for the event stream).
    pub compression: bool,
    pub metrics_enabled: bool,
    /// Also serve `/metrics/prometheus`.
    pub metrics_prometheus_path: bool,
    pub metrics_prefix: String,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            credentials: None,
            realm: "Mesosphere".into(),
            max_concurrent_requests: None,
            max_body_bytes: 4 * 1024 * 1024,
            cors_origins: Vec::new(),
            compression: true,
            metrics_enabled: true,
            metrics_prometheus_path: true,
            metrics_prefix: "pacer".into(),
        }
    }
}

/// What the daemon hands the API besides the command channel and the bus.
#[derive(Default)]
pub struct ApiSetup {
    pub info: ServerInfo,
    /// `--event_subscriber http_callback`: `/v2/eventSubscriptions` is served.
    pub callbacks_enabled: bool,
    pub options: HttpOptions,
    pub metric_sources: Vec<Arc<dyn metrics::MetricsSource>>,
    pub log_control: Option<Arc<dyn logging::LogControl>>,
    /// Leader election (`--zk` with HA); `None`: this Pacer always leads.
    pub ha: Option<leader::HaSetup>,
}

/// The shared, read-mostly view the handlers use.
pub struct ApiContext {
    commands: mpsc::Sender<Request>,
    /// The current snapshot and how many different ones were published before it.
    snapshot: RwLock<cache::Versioned>,
    pub info: ServerInfo,
    pub options: HttpOptions,
    pub scheduler_metrics: metrics::SchedulerMetrics,
    pub http_metrics: metrics::HttpMetrics,
    pub metric_sources: Vec<Arc<dyn metrics::MetricsSource>>,
    pub log_control: Option<Arc<dyn logging::LogControl>>,
    pub events: Arc<events::EventBus>,
    /// `--event_subscriber http_callback`: `/v2/eventSubscriptions` is served.
    pub callbacks_enabled: bool,
    /// Slots for `--http_max_concurrent_requests`.
    limiter: Option<tokio::sync::Semaphore>,
    /// Big listings rendered once per snapshot.
    pub(crate) renders: cache::RenderCache,
    pub(crate) ha: Option<leader::HaSetup>,
}

/// The client's IP address, put on every request by the router's middleware.
#[derive(Clone, Debug)]
pub struct ClientAddr(pub String);

impl ApiContext {
    pub fn new(
        commands: mpsc::Sender<Request>,
        events: Arc<events::EventBus>,
        setup: ApiSetup,
    ) -> Arc<Self> {
        let limiter = setup
            .options
            .max_concurrent_requests
            .map(tokio::sync::Semaphore::new);
        Arc::new(ApiContext {
            commands,
            snapshot: RwLock::new(cache::Versioned {
                state: Arc::new(State::default()),
                generation: 0,
            }),
            info: setup.info,
            options: setup.options,
            scheduler_metrics: Default::default(),
            http_metrics: Default::default(),
            metric_sources: setup.metric_sources,
            log_control: setup.log_control,
            events,
            callbacks_enabled: setup.callbacks_enabled,
            limiter,
            renders: Default::default(),
            ha: setup.ha,
        })
    }

    /// Publishes a new snapshot; readers that already hold the old one keep it. An unchanged
    /// state keeps the published one.
    pub fn publish(&self, state: State) {
        let mut current = self.snapshot.write().expect("snapshot lock poisoned");
        if !current.state.same_as(&state) {
            current.state = Arc::new(state);
            current.generation += 1;
        }
    }

    pub fn snapshot(&self) -> Arc<State> {
        self.snapshot
            .read()
            .expect("snapshot lock poisoned")
            .state
            .clone()
    }

    /// The snapshot with its generation, for the render cache.
    pub(crate) fn versioned_snapshot(&self) -> cache::Versioned {
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

/// The whole API with its guards, outermost first: gzip, per-route metrics (so refused and shed
/// requests count too), Basic auth, the concurrency limit, CORS, Marathon's common headers, then
/// the standby's proxy to the leader.
pub fn router(ctx: Arc<ApiContext>) -> Router {
    let mut r = Router::new()
        .merge(apps::routes())
        .merge(misc::routes())
        .merge(groups::routes())
        .merge(deployments::routes())
        .merge(stream::routes())
        .merge(logging::routes())
        .fallback(misc::not_found)
        .layer(axum::extract::DefaultBodyLimit::max(
            ctx.options.max_body_bytes,
        ))
        .layer(middleware::from_fn_with_state(
            ctx.clone(),
            leader::proxy_to_leader,
        ))
        .layer(middleware::from_fn_with_state(ctx.clone(), common_headers))
        .layer(middleware::from_fn_with_state(ctx.clone(), guard::cors))
        .layer(middleware::from_fn_with_state(
            ctx.clone(),
            guard::limit_concurrency,
        ))
        .layer(middleware::from_fn_with_state(
            ctx.clone(),
            guard::basic_auth,
        ))
        .layer(middleware::from_fn_with_state(ctx.clone(), record_metrics));
    if ctx.options.compression {
        // The default predicate leaves out text/event-stream, images and tiny bodies.
        r = r.layer(tower_http::compression::CompressionLayer::new());
    }
    r.with_state(ctx)
}

/// The request's route template, status and latency for `/metrics`.
async fn record_metrics(
    axum::extract::State(ctx): axum::extract::State<Arc<ApiContext>>,
    req: HttpRequest<axum::body::Body>,
    next: Next,
) -> Response {
    let started = std::time::Instant::now();
    let method = req.method().clone();
    let route = req.extensions().get::<MatchedPath>().cloned();
    let res = next.run(req).await;
    ctx.http_metrics
        .record(&method, route.as_ref(), res.status(), started.elapsed());
    res
}

/// Marathon's filter chain: cache-disabling headers on everything, leader and hardening headers.
async fn common_headers(
    axum::extract::State(ctx): axum::extract::State<Arc<ApiContext>>,
    mut req: HttpRequest<axum::body::Body>,
    next: Next,
) -> Response {
    let addr = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_default();
    req.extensions_mut().insert(ClientAddr(addr));
    // Refuse an oversized body from its declared length, before reading any of it; bodies
    // without a length are still cut off at the limit while they are read.
    let limit = ctx.options.max_body_bytes;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut res = if declared.is_some_and(|n| n > limit as u64) {
        error::ApiError::Status(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            format!("Request body is larger than the limit of {limit} bytes"),
        )
        .into_response()
    } else {
        next.run(req).await
    };
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
    // A proxied answer already names the leader; local answers name the one this Pacer knows.
    if !h.contains_key("X-Marathon-Leader") {
        if let Some(v) = ctx
            .current_leader()
            .and_then(|l| HeaderValue::from_str(&l.url).ok())
        {
            h.insert("X-Marathon-Leader", v);
        }
    }
    res
}
