//! `/v2/tasks`, `/v2/deployments`, `/v2/info`, `/v2/leader`, `/ping`, `/metrics`.

use crate::apps::{json_body, kill, Params, ParamsExt};
use crate::error::ApiError;
use crate::render::task_json;
use crate::ApiContext;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Query, State as AxState};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use pacer_core::cluster::TaskState;
use pacer_core::id::TaskId;
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;

type Ctx = AxState<Arc<ApiContext>>;

pub fn routes() -> Router<Arc<ApiContext>> {
    Router::new()
        .route("/v2/tasks", get(tasks))
        .route("/v2/tasks/delete", post(delete_tasks))
        .route("/v2/info", get(info))
        .route("/v2/leader", get(leader))
        .route("/ping", get(ping))
        .route("/metrics", get(metrics))
}

pub async fn not_found() -> ApiError {
    // Marathon answers unknown routes with 500 "URI not found" (a mapper quirk); Pacer keeps the
    // message and uses the status code clients expect for a missing resource.
    ApiError::not_found("URI not found")
}

async fn tasks(AxState(ctx): Ctx, Query(q): Params) -> Response {
    let snap = ctx.snapshot();
    let wanted: Vec<TaskState> = q
        .iter()
        .filter(|(k, _)| k == "status" || k == "status[]")
        .filter_map(|(_, v)| match v.as_str() {
            "running" => Some(TaskState::Running),
            "staging" => Some(TaskState::Staging),
            _ => None,
        })
        .collect();
    let list: Vec<Value> = snap
        .instances
        .values()
        .filter(|i| wanted.is_empty() || i.state().is_some_and(|s| wanted.contains(&s)))
        .filter_map(|i| task_json(&snap, i))
        .collect();
    Json(json!({"tasks": list})).into_response()
}

async fn delete_tasks(
    AxState(ctx): Ctx,
    Query(q): Params,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let v = json_body(body)?;
    let ids = v.get("ids").and_then(|x| x.as_array()).ok_or_else(|| {
        ApiError::bad_request("Expected a body of the form {\"ids\": [\"<task id>\", ...]}")
    })?;
    let mut tasks = Vec::new();
    for id in ids {
        let s = id.as_str().unwrap_or_default();
        let t = TaskId::from_raw(s);
        if t.instance_id().is_none() {
            return Err(ApiError::bad_request(format!("Invalid task id '{s}'.")));
        }
        tasks.push(t);
    }
    let (scale, wipe) = (q.flag("scale", false), q.flag("wipe", false));
    kill(&ctx, tasks, scale, wipe, q.flag("force", false), false).await
}

async fn info(AxState(ctx): Ctx) -> Response {
    let i = &ctx.info;
    Json(json!({
        "name": "marathon",
        "version": "1.10.0",
        "buildref": concat!("pacer-", env!("CARGO_PKG_VERSION")),
        "elected": true,
        "leader": i.leader,
        "frameworkId": i.framework_id,
        "marathon_config": i.marathon_config,
        "zookeeper_config": i.zookeeper_config,
        "http_config": i.http_config,
    }))
    .into_response()
}

async fn leader(AxState(ctx): Ctx) -> Response {
    Json(json!({"leader": ctx.info.leader})).into_response()
}

/// `pong` as text, or `"pong"` for clients that only accept JSON.
async fn ping(headers: HeaderMap) -> Response {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("*/*");
    if accept.contains("text/") || accept.contains("*/*") {
        (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "pong",
        )
            .into_response()
    } else if accept.contains("application/json") {
        Json(json!("pong")).into_response()
    } else {
        StatusCode::NO_CONTENT.into_response()
    }
}

/// A first Prometheus text exposition: state gauges and API counters.
async fn metrics(AxState(ctx): Ctx) -> Response {
    let snap = ctx.snapshot();
    let mut by_state: std::collections::BTreeMap<&'static str, usize> = Default::default();
    for i in snap.instances.values() {
        if let Some(s) = i.state() {
            *by_state.entry(s.mesos_name()).or_default() += 1;
        }
    }
    let mut out = String::new();
    let m = &ctx.metrics;
    let _ = writeln!(
        out,
        "# HELP pacer_apps Number of apps.\n# TYPE pacer_apps gauge\npacer_apps {}",
        snap.apps.len()
    );
    let _ = writeln!(out, "# HELP pacer_instances Number of instances.\n# TYPE pacer_instances gauge\npacer_instances {}", snap.instances.len());
    let _ = writeln!(
        out,
        "# HELP pacer_tasks Tasks by Mesos state.\n# TYPE pacer_tasks gauge"
    );
    for (state, n) in by_state {
        let _ = writeln!(out, "pacer_tasks{{state=\"{state}\"}} {n}");
    }
    let _ = writeln!(out, "# HELP pacer_deployments Running deployments.\n# TYPE pacer_deployments gauge\npacer_deployments {}", snap.deployments.len());
    let _ = writeln!(out, "# HELP pacer_http_requests_total HTTP requests served.\n# TYPE pacer_http_requests_total counter\npacer_http_requests_total {}", m.requests.load(Ordering::Relaxed));
    let _ = writeln!(
        out,
        "# HELP pacer_offers_total Offers handled, by outcome.\n# TYPE pacer_offers_total counter"
    );
    let _ = writeln!(
        out,
        "pacer_offers_total{{outcome=\"used\"}} {}",
        m.offers_used.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "pacer_offers_total{{outcome=\"declined\"}} {}",
        m.offers_declined.load(Ordering::Relaxed)
    );
    let _ = writeln!(out, "# HELP pacer_http_errors_total HTTP error responses by class.\n# TYPE pacer_http_errors_total counter");
    let _ = writeln!(
        out,
        "pacer_http_errors_total{{class=\"4xx\"}} {}",
        m.errors_4xx.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "pacer_http_errors_total{{class=\"5xx\"}} {}",
        m.errors_5xx.load(Ordering::Relaxed)
    );
    event_metrics(&mut out, &ctx.events, snap.event_subscribers.len());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

/// The event bus: published events, consumers, and what each consumer got or missed.
fn event_metrics(out: &mut String, bus: &crate::events::EventBus, callbacks: usize) {
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let _ = writeln!(out, "# HELP pacer_events_published_total Events published on the event bus.\n# TYPE pacer_events_published_total counter\npacer_events_published_total {}", load(&bus.published));
    let _ = writeln!(out, "# HELP pacer_event_consumers Current event consumers by kind.\n# TYPE pacer_event_consumers gauge");
    let _ = writeln!(
        out,
        "pacer_event_consumers{{kind=\"sse\"}} {}",
        load(&bus.sse_clients)
    );
    let _ = writeln!(
        out,
        "pacer_event_consumers{{kind=\"callback\"}} {callbacks}"
    );
    let stats = bus.consumer_stats();
    let escape = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    for (metric, help, sse, pick) in [
        (
            "pacer_events_delivered_total",
            "Events delivered, by consumer (all SSE clients together, or a callback URL).",
            load(&bus.sse_delivered),
            (|s: &crate::events::ConsumerStats| s.delivered) as fn(&_) -> u64,
        ),
        (
            "pacer_events_dropped_total",
            "Events a consumer missed (fell behind, or was backed off).",
            load(&bus.sse_dropped),
            |s: &crate::events::ConsumerStats| s.dropped,
        ),
    ] {
        let _ = writeln!(out, "# HELP {metric} {help}\n# TYPE {metric} counter");
        let _ = writeln!(out, "{metric}{{consumer=\"sse\"}} {sse}");
        for (url, s) in &stats {
            let _ = writeln!(out, "{metric}{{consumer=\"{}\"}} {}", escape(url), pick(s));
        }
    }
    let _ = writeln!(out, "# HELP pacer_event_stream_disconnects_total Event stream clients disconnected for falling behind.\n# TYPE pacer_event_stream_disconnects_total counter\npacer_event_stream_disconnects_total {}", load(&bus.sse_disconnected_slow));
}
