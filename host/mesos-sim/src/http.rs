//! The HTTP side: the scheduler endpoint with Mesos's order of checks and status codes, the
//! event stream, `/redirect`, `/master/state`, and the `/sim/...` controls.

use crate::state::{self, error_event, validate_call, Answer, Shared};
use crate::{wire, LeaderMode};
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use base64::Engine;
use pacer_mesos_proto::{call, JSON, PROTOBUF};
use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// Larger call bodies are refused (a LAUNCH of many thousands of tasks still fits).
const BODY_LIMIT: usize = 512 << 20;
/// Queued events are written together up to about this many bytes per chunk.
const BATCH_BYTES: usize = 256 << 10;

pub(crate) struct Listener {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Listener {
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let abort = self.task.abort_handle();
        if tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
}

#[derive(Clone)]
struct Ctx {
    shared: Arc<Shared>,
    /// Which master generation this listener belongs to (older ones redirect).
    generation: usize,
}

/// Serves `listener` for master `generation` until the simulator stops.
pub(crate) fn serve(shared: &Arc<Shared>, listener: tokio::net::TcpListener, generation: usize) {
    let ctx = Ctx {
        shared: shared.clone(),
        generation,
    };
    let (stop, mut stopped) = watch::channel(false);
    let app = router(ctx);
    let task = tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.wait_for(|v| *v).await;
        };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(error = %e, "simulator listener failed");
        }
    });
    shared
        .listeners
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(Listener { stop, task });
}

fn router(ctx: Ctx) -> Router {
    Router::new()
        .route("/api/v1/scheduler", any(scheduler))
        .route("/master/api/v1/scheduler", any(scheduler))
        .route("/redirect", get(redirect))
        .route("/master/redirect", get(redirect))
        .route("/master/state", get(master_state))
        .route("/master/state.json", get(master_state))
        .route("/state", get(master_state))
        .route("/sim/agents", get(sim_agents).post(sim_add_agents))
        .route("/sim/agents/{id}/{action}", post(sim_agent_action))
        .route("/sim/tasks", get(sim_tasks))
        .route("/sim/tasks/{id}/{action}", post(sim_task_action))
        .route("/sim/framework", get(sim_framework))
        .route("/sim/stream/drop", post(sim_drop_stream))
        .route("/sim/mute", post(sim_mute))
        .route("/sim/failover", post(sim_failover))
        .route("/sim/leader", post(sim_leader))
        .route("/sim/violations", get(sim_violations))
        .route("/sim/calls", get(sim_calls))
        .with_state(ctx)
}

fn text(status: u16, body: impl Into<String>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body: String = body.into();
    if body.is_empty() {
        return status.into_response();
    }
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

/// Whether an `Accept` header admits `media` (a missing header admits everything).
fn accepts(headers: &HeaderMap, media: &str) -> bool {
    let Some(v) = headers.get(header::ACCEPT) else {
        return true;
    };
    let Ok(v) = v.to_str() else { return false };
    let kind = media.split('/').next().unwrap_or_default();
    // The most specific matching range decides (RFC 9110): `application/json;q=0,
    // application/*` refuses JSON.
    v.split(',')
        .filter_map(|item| {
            let mut parts = item.split(';');
            let range = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f64>().ok())
                .unwrap_or(1.0);
            let specificity = if range == media {
                3
            } else if range == format!("{kind}/*") {
                2
            } else if range == "*/*" {
                1
            } else {
                return None;
            };
            Some((specificity, q))
        })
        .max_by(|a, b| a.0.cmp(&b.0))
        .is_some_and(|(_, q)| q > 0.0)
}

/// Body of a SUBSCRIBE response: the records the master queues, until it drops the sender.
struct EventStream {
    rx: mpsc::UnboundedReceiver<Bytes>,
    _guard: Option<StreamGuard>,
}

/// Tells the master when hyper drops the stream (the client went away).
struct StreamGuard {
    shared: Weak<Shared>,
    fw: String,
    epoch: u64,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.upgrade() {
            shared.with(|s| s.stream_closed(&self.fw, self.epoch));
        }
    }
}

impl http_body::Body for EventStream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(first)) => {
                // Records already queued go out in the same chunk (RecordIO does not care how
                // records are split into chunks); this saves a write per event under load.
                let mut more: Option<bytes::BytesMut> = None;
                while more.as_ref().map_or(first.len(), |m| m.len()) < BATCH_BYTES {
                    match self.rx.try_recv() {
                        Ok(b) => more
                            .get_or_insert_with(|| bytes::BytesMut::from(&first[..]))
                            .extend_from_slice(&b),
                        Err(_) => break,
                    }
                }
                let data = more.map(bytes::BytesMut::freeze).unwrap_or(first);
                Poll::Ready(Some(Ok(http_body::Frame::data(data))))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

fn stream_response(media: &str, stream_id: Option<&str>, body: EventStream) -> Response {
    let mut b = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, media);
    if let Some(id) = stream_id {
        b = b.header("Mesos-Stream-Id", id);
    }
    b.body(Body::new(body))
        .unwrap_or_else(|_| text(500, "cannot build the stream response"))
}

async fn scheduler(State(ctx): State<Ctx>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| parts.uri.path().to_string());
    let header_str = |name: &str| {
        parts
            .headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let content_type = header_str("content-type");
    let stream_id = header_str("mesos-stream-id");
    let body = match axum::body::to_bytes(body, BODY_LIMIT).await {
        Ok(b) => b,
        Err(e) => return text(400, format!("Failed to read the request body: {e}")),
    };
    let record = ctx.shared.cfg.record_calls;
    let (response, call_type) = answer(
        &ctx,
        &parts.method,
        &path,
        &parts.headers,
        content_type.as_deref(),
        stream_id.as_deref(),
        &body,
    );
    if record {
        let stored = crate::StoredCall {
            path: if parts.uri.path().starts_with("/master/") {
                "/master/api/v1/scheduler"
            } else {
                "/api/v1/scheduler"
            },
            content_type,
            stream_id,
            // A copy: the received bytes may share a much larger connection buffer.
            body: Bytes::copy_from_slice(&body),
            call_type,
            status: response.status().as_u16(),
        };
        ctx.shared.with(|s| s.record(stored));
    }
    response
}

fn answer(
    ctx: &Ctx,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    content_type: Option<&str>,
    stream_id: Option<&str>,
    body: &[u8],
) -> (Response, Option<call::Type>) {
    // 1. Only the leader serves the API.
    if let Some((code, location, msg)) = ctx.shared.with(|s| s.leader_answer(ctx.generation, path))
    {
        let mut r = text(code, msg);
        if let Some(loc) = location {
            if let Ok(v) = loc.parse() {
                r.headers_mut().insert(header::LOCATION, v);
            }
        }
        let ty = wire::decode_any(content_type, body)
            .and_then(|c| c.r#type)
            .and_then(|t| call::Type::try_from(t).ok());
        return (r, ty);
    }
    // 3. POST only.
    if method != Method::POST {
        let mut r = text(405, "Expecting 'POST'");
        r.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("POST"));
        return (r, None);
    }
    // 4. Content-Type, by string equality.
    let json = match content_type {
        None => return (text(400, "Expecting 'Content-Type' to be present"), None),
        Some(JSON) => true,
        Some(PROTOBUF) => false,
        Some(other) => {
            return (
                text(
                    415,
                    format!("Expecting 'Content-Type' of {JSON} or {PROTOBUF}, not '{other}'"),
                ),
                None,
            )
        }
    };
    // 5. Parse.
    let mut notes = Vec::new();
    let decoded = if json {
        wire::decode_json(body, &mut notes)
    } else {
        wire::decode_protobuf(body)
    };
    let call = match decoded {
        Ok(c) => c,
        Err(msg) => return (text(400, msg), None),
    };
    let recorded = call.r#type.and_then(|t| call::Type::try_from(t).ok());
    let type_name = call
        .r#type
        .and_then(|t| call::Type::try_from(t).ok())
        .map(|t| t.as_str_name())
        .unwrap_or("(untyped)");
    if !notes.is_empty() {
        ctx.shared.with(|s| {
            for n in notes {
                s.violation(format!("JSON {type_name} call: {n}"));
            }
        });
    }
    // 6. Validate.
    let ty = match validate_call(&call) {
        Ok(t) => t,
        Err(reason) => {
            if reason.contains("'framework_id' to be present") {
                ctx.shared
                    .with(|s| s.violation(format!("{type_name} call without framework_id")));
            }
            if reason.contains("'acknowledge.uuid'") {
                let len = call.acknowledge.as_ref().map_or(0, |a| a.uuid.len());
                ctx.shared.with(|s| {
                    s.violation(format!(
                        "ACKNOWLEDGE with a {len}-byte uuid (only updates with a 16-byte uuid are acknowledged; master-generated ones have none)"
                    ))
                });
            }
            return (
                text(400, format!("Failed to validate scheduler::Call: {reason}")),
                recorded,
            );
        }
    };
    // 7. Accept (SUBSCRIBE and RECONCILE_OPERATIONS only).
    let mut accept_json = true;
    if matches!(ty, call::Type::Subscribe | call::Type::ReconcileOperations) {
        if accepts(headers, JSON) {
            accept_json = true;
        } else if accepts(headers, PROTOBUF) {
            accept_json = false;
        } else {
            return (
                text(
                    406,
                    format!("Expecting 'Accept' to allow '{JSON}' or '{PROTOBUF}'"),
                ),
                recorded,
            );
        }
    }
    if ty == call::Type::Subscribe {
        // 8. A new subscription has no stream yet.
        if stream_id.is_some() {
            return (
                text(
                    400,
                    "Expecting 'Mesos-Stream-Id' to be absent for SUBSCRIBE",
                ),
                recorded,
            );
        }
        let media = if accept_json { JSON } else { PROTOBUF };
        let answer = ctx.shared.with(|s| s.subscribe(call, accept_json));
        let response = match answer {
            Answer::Stream {
                stream_id,
                rx,
                fw,
                epoch,
            } => stream_response(
                media,
                Some(&stream_id),
                EventStream {
                    rx,
                    _guard: Some(StreamGuard {
                        shared: Arc::downgrade(&ctx.shared),
                        fw,
                        epoch,
                    }),
                },
            ),
            Answer::ErrorStream { json, message } => {
                let (tx, rx) = mpsc::unbounded_channel();
                let _ = tx.send(state::encode_event(&error_event(&message), json));
                drop(tx);
                stream_response(media, None, EventStream { rx, _guard: None })
            }
            Answer::Status(code, msg) => text(code, msg),
        };
        return (response, recorded);
    }
    // 9 and 10: framework, stream id, the call itself.
    let answer = ctx.shared.with(|s| s.handle_call(call, ty, stream_id));
    let response = match answer {
        Answer::Status(code, msg) => text(code, msg),
        _ => text(500, "unexpected answer"),
    };
    (response, recorded)
}

async fn redirect(State(ctx): State<Ctx>) -> Response {
    let (leader, port) = ctx.shared.with(|s| (s.leader.clone(), s.port));
    let to = match leader {
        LeaderMode::Leader => format!("127.0.0.1:{port}"),
        LeaderMode::Redirect(to) => to,
        LeaderMode::NoLeader => return text(503, "No leader elected"),
    };
    let mut r = StatusCode::TEMPORARY_REDIRECT.into_response();
    if let Ok(v) = format!("//{to}").parse() {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

async fn master_state(State(ctx): State<Ctx>) -> Response {
    let body = ctx.shared.with(|s| s.state_json());
    ([(header::CONTENT_TYPE, JSON)], body).into_response()
}

async fn sim_agents(State(ctx): State<Ctx>) -> Response {
    Json(ctx.shared.with(|s| s.sim_agents())).into_response()
}

async fn sim_add_agents(
    State(ctx): State<Ctx>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let n = match q.get("count").map(|c| c.parse::<usize>()) {
        None => 1,
        Some(Ok(n)) => n,
        Some(Err(_)) => return text(400, "count must be a number"),
    };
    Json(ctx.shared.with(|s| {
        s.add_agents(n);
        s.sim_agents()
    }))
    .into_response()
}

async fn sim_agent_action(
    State(ctx): State<Ctx>,
    Path((id, action)): Path<(String, String)>,
) -> Response {
    ctx.shared.with(|s| match action.as_str() {
        "lose" => {
            s.lose_agent(&id);
            text(200, "")
        }
        "reregister" => {
            s.reregister_agent(&id);
            text(200, "")
        }
        "remove" => {
            s.remove_agent(&id);
            text(200, "")
        }
        other => text(404, format!("unknown agent action '{other}'")),
    })
}

async fn sim_tasks(State(ctx): State<Ctx>) -> Response {
    Json(ctx.shared.with(|s| s.sim_tasks())).into_response()
}

async fn sim_task_action(
    State(ctx): State<Ctx>,
    Path((id, action)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    ctx.shared.with(|s| match action.as_str() {
        "fail" => {
            let msg = q
                .get("message")
                .map(String::as_str)
                .unwrap_or("Failed by the simulator");
            s.fail_task(&id, msg);
            text(200, "")
        }
        "finish" => {
            s.finish_task(&id);
            text(200, "")
        }
        "health" => {
            let healthy = q.get("healthy").is_none_or(|v| v != "false");
            s.set_task_health(&id, healthy);
            text(200, "")
        }
        other => text(404, format!("unknown task action '{other}'")),
    })
}

async fn sim_framework(State(ctx): State<Ctx>) -> Response {
    Json(ctx.shared.with(|s| s.sim_frameworks())).into_response()
}

async fn sim_drop_stream(State(ctx): State<Ctx>) -> Response {
    ctx.shared.with(|s| s.drop_streams());
    text(200, "")
}

async fn sim_mute(State(ctx): State<Ctx>, Query(q): Query<HashMap<String, String>>) -> Response {
    let on = q.get("on").is_none_or(|v| v != "false");
    ctx.shared.with(|s| s.set_muted(on));
    text(200, "")
}

async fn sim_failover(State(ctx): State<Ctx>) -> Response {
    match state::failover(&ctx.shared).await {
        Ok(()) => {
            let (port, id) = ctx.shared.with(|s| (s.port, s.master_id.clone()));
            Json(serde_json::json!({
                "url": format!("http://127.0.0.1:{port}"),
                "master_id": id,
            }))
            .into_response()
        }
        Err(e) => text(500, format!("failover failed: {e}")),
    }
}

async fn sim_leader(State(ctx): State<Ctx>, Query(q): Query<HashMap<String, String>>) -> Response {
    let mode = match q.get("mode").map(String::as_str) {
        Some("leader") | None => LeaderMode::Leader,
        Some("noleader") | Some("none") => LeaderMode::NoLeader,
        Some("redirect") => match q.get("to") {
            Some(to) => LeaderMode::Redirect(to.clone()),
            None => return text(400, "mode=redirect needs to=host:port"),
        },
        Some(other) => return text(400, format!("unknown leader mode '{other}'")),
    };
    ctx.shared.with(|s| s.leader = mode);
    text(200, "")
}

async fn sim_violations(State(ctx): State<Ctx>) -> Response {
    Json(ctx.shared.with(|s| s.violations.clone())).into_response()
}

async fn sim_calls(State(ctx): State<Ctx>, Query(q): Query<HashMap<String, String>>) -> Response {
    let want = q.get("type").cloned();
    let calls = ctx.shared.with(|s| {
        s.calls
            .iter()
            .filter(|c| {
                want.as_deref()
                    .is_none_or(|w| c.call_type.map(|t| t.as_str_name()) == Some(w))
            })
            .cloned()
            .collect::<Vec<_>>()
    });
    let b64 = base64::engine::general_purpose::STANDARD;
    let list: Vec<serde_json::Value> = calls
        .iter()
        .map(|c| {
            let decoded = c.decoded();
            serde_json::json!({
                "path": c.path,
                "content_type": c.content_type,
                "stream_id": c.stream_id,
                "status": c.status,
                "type": c.call_type.map(|t| t.as_str_name()),
                "body_base64": b64.encode(&c.body),
                "call": decoded.call.as_ref().and_then(|x| serde_json::to_value(x).ok()),
            })
        })
        .collect();
    Json(list).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_header_matching() {
        let mut h = HeaderMap::new();
        assert!(accepts(&h, JSON));
        h.insert(header::ACCEPT, PROTOBUF.parse().unwrap());
        assert!(!accepts(&h, JSON));
        assert!(accepts(&h, PROTOBUF));
        h.insert(header::ACCEPT, "*/*".parse().unwrap());
        assert!(accepts(&h, JSON));
        h.insert(
            header::ACCEPT,
            "application/json;q=0, application/*".parse().unwrap(),
        );
        assert!(!accepts(&h, JSON) && accepts(&h, PROTOBUF));
        h.insert(header::ACCEPT, "text/html".parse().unwrap());
        assert!(!accepts(&h, JSON) && !accepts(&h, PROTOBUF));
    }
}
