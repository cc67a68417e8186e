//! `/v2/events` (Server-Sent Events) and `/v2/eventSubscriptions` (HTTP callbacks).

use crate::error::ApiError;
use crate::events::BusEvent;
use crate::{now, ApiContext, ClientAddr};
use axum::extract::{Query, State as AxState};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use pacer_core::machine::Command;
use serde_json::json;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

type Ctx = AxState<Arc<ApiContext>>;
type Params = Query<Vec<(String, String)>>;

/// Keep-alive comments keep proxies from closing an idle stream (Jetty sends them every ~10 s).
const KEEP_ALIVE: Duration = Duration::from_secs(10);

pub fn routes() -> Router<Arc<ApiContext>> {
    Router::new()
        .route("/v2/events", get(events))
        .route("/v2/events/", get(events))
        .route(
            "/v2/eventSubscriptions",
            get(list_subscribers).post(subscribe).delete(unsubscribe),
        )
}

/// Tells the bus when a stream client goes, however its stream ends.
struct Attached {
    ctx: Arc<ApiContext>,
    addr: String,
}

impl Drop for Attached {
    fn drop(&mut self) {
        self.ctx.events.sse_clients.fetch_sub(1, Ordering::Relaxed);
        self.ctx.events.publish(
            "event_stream_detached",
            json!({"remoteAddress": self.addr}),
            now(),
        );
    }
}

async fn events(
    AxState(ctx): Ctx,
    Extension(ClientAddr(addr)): Extension<ClientAddr>,
    headers: HeaderMap,
    Query(q): Params,
) -> Response {
    let accepts = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/event-stream"));
    if !accepts {
        return ApiError::Status(
            StatusCode::NOT_ACCEPTABLE,
            "This endpoint only serves 'text/event-stream'; send 'Accept: text/event-stream'."
                .into(),
        )
        .into_response();
    }
    let filter: Vec<String> = q
        .into_iter()
        .filter(|(k, _)| k == "event_type")
        .map(|(_, v)| v)
        .collect();
    // Subscribe before announcing the client, so its own `event_stream_attached` comes first.
    let rx = ctx.events.subscribe();
    ctx.events.sse_clients.fetch_add(1, Ordering::Relaxed);
    ctx.events.publish(
        "event_stream_attached",
        json!({"remoteAddress": addr}),
        now(),
    );
    let guard = Attached {
        ctx: ctx.clone(),
        addr,
    };
    let stream = futures_util::stream::unfold(
        (rx, guard, filter, false),
        |(mut rx, guard, filter, ended)| async move {
            if ended {
                return None;
            }
            loop {
                let received = tokio::select! {
                    r = rx.recv() => r,
                    // Shutdown: end the stream cleanly so the server can finish.
                    _ = guard.ctx.events.closed() => return None,
                };
                match received {
                    Ok(ev) => {
                        if !filter.is_empty() && !filter.iter().any(|f| f == ev.event_type) {
                            continue;
                        }
                        guard
                            .ctx
                            .events
                            .sse_delivered
                            .fetch_add(1, Ordering::Relaxed);
                        let item = Ok::<_, std::io::Error>(frame(&ev));
                        return Some((item, (rx, guard, filter, false)));
                    }
                    Err(RecvError::Lagged(n)) => {
                        let bus = &guard.ctx.events;
                        bus.sse_dropped.fetch_add(n, Ordering::Relaxed);
                        bus.sse_disconnected_slow.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(
                            message = "Event stream client fell behind; disconnecting it.",
                            remote_address = %guard.addr,
                            missed_events = n,
                            max_outstanding = bus.capacity(),
                        );
                        // An error, not a clean end: the server then drops the connection
                        // instead of keeping it for another request. The client must reconnect.
                        let err = std::io::Error::other("event stream client fell behind");
                        return Some((Err(err), (rx, guard, filter, true)));
                    }
                    Err(RecvError::Closed) => return None,
                }
            }
        },
    );
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text(""))
        .into_response()
}

fn frame(ev: &BusEvent) -> SseEvent {
    SseEvent::default().event(ev.event_type).data(&ev.json)
}

fn callbacks_off() -> ApiError {
    ApiError::Status(
        StatusCode::BAD_REQUEST,
        "http event callback system is not running on this Marathon instance. Please re-start this instance with \"--event_subscriber http_callback\".".into(),
    )
}

async fn list_subscribers(AxState(ctx): Ctx) -> Result<Response, ApiError> {
    if !ctx.callbacks_enabled {
        return Err(callbacks_off());
    }
    let urls: Vec<String> = ctx.snapshot().event_subscribers.iter().cloned().collect();
    Ok(Json(json!({"callbackUrls": urls})).into_response())
}

/// A callback URL must be absolute http(s) with a host.
pub fn valid_callback_url(url: &str) -> bool {
    let Ok(uri) = url.parse::<axum::http::Uri>() else {
        return false;
    };
    matches!(uri.scheme_str(), Some("http") | Some("https"))
        && uri.host().is_some_and(|h| !h.is_empty())
}

fn callback_url(q: &[(String, String)]) -> Result<String, ApiError> {
    let url = q
        .iter()
        .find(|(k, _)| k == "callbackUrl")
        .map(|(_, v)| v.clone())
        .ok_or_else(|| {
            ApiError::Status(
                StatusCode::BAD_REQUEST,
                "Query parameter 'callbackUrl' is required".into(),
            )
        })?;
    if !valid_callback_url(&url) {
        return Err(ApiError::unprocessable(format!(
            "Invalid callback URL '{url}': an absolute http or https URL is required"
        )));
    }
    Ok(url)
}

async fn change_subscription(
    ctx: Arc<ApiContext>,
    addr: String,
    q: Vec<(String, String)>,
    subscribe: bool,
) -> Result<Response, ApiError> {
    if !ctx.callbacks_enabled {
        return Err(callbacks_off());
    }
    let url = callback_url(&q)?;
    let cmd = if subscribe {
        Command::Subscribe { url: url.clone() }
    } else {
        Command::Unsubscribe { url: url.clone() }
    };
    ctx.submit(cmd).await?;
    let event_type = if subscribe {
        "subscribe_event"
    } else {
        "unsubscribe_event"
    };
    // Marathon answers with the event it published.
    let fields = json!({"clientIp": addr, "callbackUrl": url});
    let ev = ctx.events.publish(event_type, fields, now());
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        ev.json.clone(),
    )
        .into_response())
}

async fn subscribe(
    AxState(ctx): Ctx,
    Extension(ClientAddr(addr)): Extension<ClientAddr>,
    Query(q): Params,
) -> Result<Response, ApiError> {
    change_subscription(ctx, addr, q, true).await
}

async fn unsubscribe(
    AxState(ctx): Ctx,
    Extension(ClientAddr(addr)): Extension<ClientAddr>,
    Query(q): Params,
) -> Result<Response, ApiError> {
    change_subscription(ctx, addr, q, false).await
}
