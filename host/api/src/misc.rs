//! `/v2/tasks`, `/v2/deployments`, `/v2/info`, `/v2/leader`, `/ping`, `/metrics`.

use crate::apps::{json_body, kill, Params, ParamsExt};
use crate::error::ApiError;
use crate::render::task_view;
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
use serde_json::json;
use std::sync::Arc;

type Ctx = AxState<Arc<ApiContext>>;

pub fn routes() -> Router<Arc<ApiContext>> {
    Router::new()
        .route("/v2/tasks", get(tasks))
        .route("/v2/tasks/delete", post(delete_tasks))
        .route("/v2/info", get(info))
        .route("/v2/plugins", get(plugins))
        .route("/v2/plugins/{id}/{*path}", axum::routing::any(plugin_path))
        .route(
            "/v2/leader",
            get(crate::leader::get_leader).delete(crate::leader::delete_leader),
        )
        .route(
            crate::leader::HEALTH_PATH,
            get(crate::leader::leader_health),
        )
        .route("/ping", get(ping))
        .route("/metrics", get(crate::metrics::metrics))
        .route("/metrics/prometheus", get(crate::metrics::prometheus_path))
}

pub async fn not_found() -> ApiError {
    // Marathon answers unknown routes with 500 "URI not found" (a mapper quirk); Pacer keeps the
    // message and uses the status code clients expect for a missing resource.
    ApiError::not_found("URI not found")
}

async fn tasks(AxState(ctx): Ctx, Query(q): Params, headers: HeaderMap) -> Response {
    let snap = ctx.versioned_snapshot();
    let gzip = crate::cache::accepts_gzip(&headers, ctx.options.compression);
    let wanted: Vec<TaskState> = q
        .iter()
        .filter(|(k, _)| k == "status" || k == "status[]")
        .filter_map(|(_, v)| match v.as_str() {
            "running" => Some(TaskState::Running),
            "staging" => Some(TaskState::Staging),
            _ => None,
        })
        .collect();
    let key = format!("tasks {wanted:?}");
    let body = ctx
        .renders
        .encoded(&snap, &key, gzip, move |snap| {
            let tasks = snap
                .instances
                .values()
                .filter(|i| wanted.is_empty() || i.state().is_some_and(|s| wanted.contains(&s)))
                .filter_map(|i| task_view(snap, i))
                .collect();
            crate::render::to_json(&crate::render::Tasks { tasks })
        })
        .await;
    crate::cache::json_body_response(body)
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

async fn plugins(AxState(ctx): Ctx) -> Response {
    Json(json!({"plugins": ctx.info.plugins})).into_response()
}

/// Marathon hands these to HTTP-handler plugins; Pacer has no such plugin kind.
async fn plugin_path(
    axum::extract::Path((id, _)): axum::extract::Path<(String, String)>,
) -> ApiError {
    ApiError::not_found(format!("Plugin '{id}' does not serve HTTP requests."))
}

async fn info(AxState(ctx): Ctx) -> Response {
    let i = &ctx.info;
    Json(json!({
        "name": "marathon",
        "version": "1.10.0",
        "buildref": concat!("pacer-", env!("CARGO_PKG_VERSION")),
        "elected": ctx.role() == crate::leader::Role::Leader,
        "leader": ctx.current_leader().map(|l| l.id),
        "frameworkId": *i.framework_id.read().expect("framework id lock"),
        "marathon_config": i.marathon_config,
        "zookeeper_config": i.zookeeper_config,
        "http_config": i.http_config,
    }))
    .into_response()
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
