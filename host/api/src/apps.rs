//! `/v2/apps` and everything below it.

use crate::cache::{accepts_gzip, json_body_response, json_response};
use crate::error::ApiError;
use crate::render::{self, app_info, app_view, task_json, task_view, Embed};
use crate::selector::Selector;
use crate::{ApiContext, ApiPost, ClientAddr};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{OriginalUri, Path, Query, State as AxState};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use pacer_core::id::{PathId, TaskId};
use pacer_core::machine::{Command, Outcome};
use pacer_core::normalize::{parse_app_patch, AppPatch};
use pacer_core::time::Timestamp;
use pacer_core::violation::Violation;
use serde_json::{json, Value};
use std::sync::Arc;

type Ctx = AxState<Arc<ApiContext>>;
pub type Params = Query<Vec<(String, String)>>;

pub fn routes() -> Router<Arc<ApiContext>> {
    Router::new()
        .route(
            "/v2/apps",
            get(list).post(create).put(put_many).patch(patch_many),
        )
        .route(
            "/v2/apps/",
            get(list).post(create).put(put_many).patch(patch_many),
        )
        .route(
            "/v2/apps/{*path}",
            get(get_path)
                .put(put_path)
                .patch(patch_path)
                .delete(delete_path)
                .post(post_path),
        )
}

/// The wall clock as a core timestamp (the core itself never reads the clock).
pub fn now() -> Timestamp {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    Timestamp::from_millis(ms)
}

/// Query helpers over the raw `(name, value)` pairs; names may repeat.
pub trait ParamsExt {
    fn all(&self, name: &str) -> Vec<&str>;
    fn one(&self, name: &str) -> Option<&str>;
    fn flag(&self, name: &str, default: bool) -> bool;
}

impl ParamsExt for Vec<(String, String)> {
    fn all(&self, name: &str) -> Vec<&str> {
        self.iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
    fn one(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    fn flag(&self, name: &str, default: bool) -> bool {
        match self.one(name) {
            None => default,
            Some(v) => v.is_empty() || v.eq_ignore_ascii_case("true") || v == "1",
        }
    }
}

/// Reads a JSON body: 413 over the size limit, 400 `Invalid JSON` when it does not parse.
pub fn json_body(body: Result<Bytes, BytesRejection>) -> Result<Value, ApiError> {
    let bytes = body.map_err(|e| match e {
        BytesRejection::FailedToBufferBody(_) => ApiError::Status(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Request body is larger than the limit (--http_max_request_body_bytes)".to_string(),
        ),
        other => ApiError::bad_request(other.body_text()),
    })?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::InvalidJson(e.to_string()))
}

fn patch_of(v: Value) -> Result<AppPatch, ApiError> {
    if !v.is_object() {
        return Err(ApiError::JsonTypes(vec![Violation::new(
            "/",
            "error.expected.jsobject",
        )]));
    }
    parse_app_patch(v).map_err(ApiError::JsonTypes)
}

fn resolve_id(raw: &str, path: &str) -> Result<PathId, ApiError> {
    PathId::parse_app_id(raw, &PathId::root())
        .map_err(|e| ApiError::Invalid(vec![Violation::new(path, e.to_string())]))
}

fn patches_of(v: Value) -> Result<Vec<(PathId, AppPatch)>, ApiError> {
    let Value::Array(items) = v else {
        return Err(ApiError::JsonTypes(vec![Violation::new(
            "/",
            "error.expected.jsarray",
        )]));
    };
    let mut out = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let p = patch_of(item).map_err(|e| match e {
            ApiError::JsonTypes(v) => ApiError::JsonTypes(
                v.into_iter()
                    .map(|x| {
                        Violation::new(format!("/({i}){}", x.path.trim_end_matches('/')), x.message)
                    })
                    .collect(),
            ),
            other => other,
        })?;
        let Some(raw) = p.id.clone() else {
            return Err(ApiError::Invalid(vec![Violation::new(
                format!("/({i})/id"),
                "error.path.missing",
            )]));
        };
        out.push((resolve_id(&raw, &format!("/({i})/id"))?, p));
    }
    Ok(out)
}

/// `{"deploymentId", "version"}` with the `Marathon-Deployment-Id` header.
pub fn deployment_result(
    outcome: &Outcome,
    status: StatusCode,
    location: Option<&PathId>,
) -> Response {
    let Outcome::Deployment { id, version, .. } = outcome else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let mut res = (
        status,
        Json(json!({"deploymentId": id, "version": version})),
    )
        .into_response();
    add_deployment_headers(&mut res, id, location);
    res
}

fn add_deployment_headers(res: &mut Response, deployment: &str, location: Option<&PathId>) {
    if let Ok(v) = HeaderValue::from_str(deployment) {
        res.headers_mut().insert("Marathon-Deployment-Id", v);
    }
    if let Some(id) = location {
        if let Ok(v) = HeaderValue::from_str(&format!("/v2/apps{id}")) {
            res.headers_mut().insert(header::LOCATION, v);
        }
    }
}

async fn list(
    AxState(ctx): Ctx,
    Query(q): Params,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let snap = ctx.versioned_snapshot();
    let gzip = accepts_gzip(&headers, ctx.options.compression);
    let mut embed = Embed::parse(q.all("embed"));
    embed.counts = true;
    embed.deployments = true;
    let cmd = q.one("cmd").map(str::to_lowercase);
    let id = q.one("id").map(str::to_lowercase);
    let selector = match q.one("label") {
        Some(s) => Some(Selector::parse(s).map_err(ApiError::unprocessable)?),
        None => None,
    };
    let now = now();
    let render = move |snap: &pacer_core::state::State| {
        let apps: Vec<_> = snap
            .apps
            .values()
            .filter(|a| {
                cmd.as_ref()
                    .is_none_or(|c| a.cmd.as_ref().is_some_and(|x| x.to_lowercase().contains(c)))
            })
            .filter(|a| {
                id.as_ref()
                    .is_none_or(|i| a.id.as_str().to_lowercase().contains(i))
            })
            .filter(|a| selector.as_ref().is_none_or(|s| s.matches(&a.labels)))
            .map(|a| app_view(snap, a, embed, now))
            .collect();
        render::to_json(&render::Apps { apps })
    };
    if embed.task_stats {
        // Lifetimes depend on the clock, not only on the state: never shared.
        return Ok(json_response(render(&snap).into()));
    }
    let key = format!(
        "apps {embed:?} {:?} {:?} {:?}",
        q.one("cmd"),
        q.one("id"),
        q.one("label")
    );
    let body = ctx.renders.encoded(&snap, &key, gzip, render).await;
    Ok(json_body_response(body))
}

/// `api_post_event` for a change of one app through the API.
fn api_post(client: &ClientAddr, uri: &OriginalUri, id: &PathId) -> Option<ApiPost> {
    Some(ApiPost {
        client_ip: client.0.clone(),
        uri: uri.0.path().to_string(),
        app_id: id.clone(),
    })
}

async fn create(
    AxState(ctx): Ctx,
    Query(q): Params,
    Extension(client): Extension<ClientAddr>,
    uri: OriginalUri,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let patch = patch_of(json_body(body)?)?;
    let Some(raw) = patch.id.clone() else {
        return Err(ApiError::Invalid(vec![Violation::new(
            "/id",
            "error.path.missing",
        )]));
    };
    let id = resolve_id(&raw, "/id")?;
    let outcome = ctx
        .submit_with(
            Command::CreateApp {
                id: id.clone(),
                patch: Box::new(patch),
                force: q.flag("force", false),
            },
            api_post(&client, &uri, &id),
        )
        .await?;
    let Outcome::Deployment { id: dep, .. } = &outcome else {
        unreachable!("create answers with a deployment")
    };
    let snap = ctx.snapshot();
    let app = snap
        .apps
        .get(&id)
        .ok_or_else(|| ApiError::not_found(format!("App '{id}' does not exist")))?;
    let mut body = app_info(
        &snap,
        app,
        Embed {
            counts: true,
            ..Embed::default()
        },
        now(),
    );
    body["deployments"] = json!([{"id": dep}]);
    let mut res = (StatusCode::CREATED, Json(body)).into_response();
    add_deployment_headers(&mut res, dep, Some(&id));
    Ok(res)
}

async fn put_many(
    AxState(ctx): Ctx,
    Query(q): Params,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let updates = patches_of(json_body(body)?)?;
    let partial = q.flag("partialUpdate", true);
    let outcome = ctx
        .submit(Command::UpdateApps {
            updates,
            partial,
            create: true,
            force: q.flag("force", false),
        })
        .await?;
    Ok(deployment_result(&outcome, StatusCode::OK, None))
}

async fn patch_many(
    AxState(ctx): Ctx,
    Query(q): Params,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let updates = patches_of(json_body(body)?)?;
    let outcome = ctx
        .submit(Command::UpdateApps {
            updates,
            partial: true,
            create: false,
            force: q.flag("force", false),
        })
        .await?;
    Ok(deployment_result(&outcome, StatusCode::OK, None))
}

/// What a path below `/v2/apps/` addresses. App ids cannot end in `restart`, `tasks` or
/// `versions`, so the suffixes are unambiguous.
#[derive(Debug, PartialEq)]
enum Target {
    App(String),
    GroupApps(String),
    Tasks(String),
    GroupTasks(String),
    Task(String, String),
    Versions(String),
    Version(String, String),
    Restart(String),
}

fn parse_target(path: &str) -> Target {
    let path = path.trim_end_matches('/');
    let (rest, last) = path.rsplit_once('/').unwrap_or(("", path));
    let (rest2, second) = rest.rsplit_once('/').unwrap_or(("", rest));
    match (second, last) {
        (_, "restart") => Target::Restart(rest.into()),
        ("*", "tasks") => Target::GroupTasks(rest2.into()),
        (_, "tasks") => Target::Tasks(rest.into()),
        ("tasks", task) => Target::Task(rest2.into(), task.into()),
        (_, "versions") => Target::Versions(rest.into()),
        ("versions", v) => Target::Version(rest2.into(), v.into()),
        (_, "*") => Target::GroupApps(rest.into()),
        _ => Target::App(path.into()),
    }
}

fn app_id_of(raw: &str) -> Result<PathId, ApiError> {
    PathId::resolve(raw, &PathId::root()).map_err(|_| {
        ApiError::not_found(format!(
            "App '/{}' does not exist",
            raw.trim_start_matches('/')
        ))
    })
}

fn method_not_allowed() -> ApiError {
    ApiError::Status(
        StatusCode::METHOD_NOT_ALLOWED,
        "HTTP method not allowed for this path".into(),
    )
}

async fn get_path(
    AxState(ctx): Ctx,
    Path(path): Path<String>,
    Query(q): Params,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let snap = ctx.versioned_snapshot();
    let gzip = accepts_gzip(&headers, ctx.options.compression);
    let now = now();
    let missing = |id: &PathId| ApiError::not_found(format!("App '{id}' does not exist"));
    match parse_target(&path) {
        Target::App(raw) => {
            let id = app_id_of(&raw)?;
            let app = snap.apps.get(&id).ok_or_else(|| missing(&id))?;
            let mut embed = Embed::parse(q.all("embed"));
            embed.counts = true;
            embed.tasks = true;
            embed.deployments = true;
            embed.last_task_failure = true;
            if !embed.task_stats {
                // Clients poll this during big deployments: a cached body, never a `Value` tree
                // of every task.
                let key = format!("app {id} {embed:?}");
                let body = ctx
                    .renders
                    .encoded(&snap, &key, gzip, move |snap| {
                        let app = snap.apps.get(&id).expect("checked before rendering");
                        render::to_json(&render::One {
                            app: app_view(snap, app, embed, now),
                        })
                    })
                    .await;
                return Ok(json_body_response(body));
            }
            let body = render::to_json(&render::One {
                app: app_view(&snap, app, embed, now),
            });
            Ok(json_response(body.into()))
        }
        Target::GroupApps(raw) => {
            let group = app_id_of(&raw)?;
            let mut embed = Embed::parse(q.all("embed"));
            embed.counts = true;
            embed.deployments = true;
            let apps: Vec<_> = snap
                .apps_under(&group)
                .map(|a| app_view(&snap, a, embed, now))
                .collect();
            Ok(json_response(
                render::to_json(&render::Star { apps }).into(),
            ))
        }
        Target::Tasks(raw) => {
            let id = app_id_of(&raw)?;
            if !snap.apps.contains_key(&id) {
                return Err(missing(&id));
            }
            let key = format!("app-tasks {id}");
            let body = ctx
                .renders
                .encoded(&snap, &key, gzip, move |snap| {
                    let tasks = snap
                        .instances_of(&id)
                        .filter_map(|i| task_view(snap, i))
                        .collect();
                    render::to_json(&render::Tasks { tasks })
                })
                .await;
            Ok(json_body_response(body))
        }
        Target::GroupTasks(raw) => {
            let group = app_id_of(&raw)?;
            let key = format!("group-tasks {group}");
            let body = ctx
                .renders
                .encoded(&snap, &key, gzip, move |snap| {
                    let tasks = snap
                        .apps_under(&group)
                        .flat_map(|a| snap.instances_of(&a.id))
                        .filter_map(|i| task_view(snap, i))
                        .collect();
                    render::to_json(&render::Tasks { tasks })
                })
                .await;
            Ok(json_body_response(body))
        }
        Target::Versions(raw) => {
            let id = app_id_of(&raw)?;
            let versions = snap
                .versions
                .get(&id)
                .filter(|_| snap.apps.contains_key(&id))
                .ok_or_else(|| missing(&id))?;
            let list: Vec<Value> = versions.keys().rev().map(|v| json!(v)).collect();
            Ok(Json(json!({"versions": list})).into_response())
        }
        Target::Version(raw, v) => {
            let id = app_id_of(&raw)?;
            let not_in =
                || ApiError::not_found(format!("App '{id}' does not exist in version {v}"));
            let ts = Timestamp::parse(&v).ok_or_else(not_in)?;
            let app = snap
                .versions
                .get(&id)
                .and_then(|vs| vs.get(&ts))
                .ok_or_else(not_in)?;
            Ok(Json(json!(app.as_ref())).into_response())
        }
        Target::Task(raw, task) => {
            let id = app_id_of(&raw)?;
            let t = TaskId::from_raw(&task);
            let inst = t
                .instance_id()
                .and_then(|iid| snap.instances.get(&iid))
                .filter(|i| i.app_id == id);
            let json = inst
                .and_then(|i| task_json(&snap, i))
                .ok_or_else(|| ApiError::not_found(format!("Task '{task}' does not exist")))?;
            Ok(Json(json!({"task": json})).into_response())
        }
        Target::Restart(_) => Err(method_not_allowed()),
    }
}

struct Caller {
    client: ClientAddr,
    uri: OriginalUri,
}

async fn put_or_patch(
    ctx: Arc<ApiContext>,
    path: String,
    q: Vec<(String, String)>,
    body: Result<Bytes, BytesRejection>,
    is_patch: bool,
    caller: Caller,
) -> Result<Response, ApiError> {
    let Target::App(raw) = parse_target(&path) else {
        return Err(method_not_allowed());
    };
    let id = resolve_id(&raw, "/id")?;
    let force = q.flag("force", false);
    let patch = patch_of(json_body(body)?)?;
    if !is_patch && patch.version.is_some() {
        if !patch.is_version_only() {
            return Err(ApiError::unprocessable(
                "The 'version' field may only be combined with the 'id' field.",
            ));
        }
        let raw_v = patch.version.as_deref().unwrap_or_default();
        let version = Timestamp::parse(raw_v).ok_or_else(|| {
            ApiError::not_found(format!("App '{id}' does not exist in version {raw_v}"))
        })?;
        let outcome = ctx
            .submit(Command::RollbackApp { id, version, force })
            .await?;
        return Ok(deployment_result(&outcome, StatusCode::OK, None));
    }
    let partial = is_patch || q.flag("partialUpdate", true);
    let outcome = ctx
        .submit_with(
            Command::UpdateApps {
                updates: vec![(id.clone(), patch)],
                partial,
                create: !is_patch,
                force,
            },
            api_post(&caller.client, &caller.uri, &id),
        )
        .await?;
    let created = matches!(outcome, Outcome::Deployment { created: true, .. });
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(deployment_result(&outcome, status, created.then_some(&id)))
}

async fn put_path(
    AxState(ctx): Ctx,
    Path(path): Path<String>,
    Query(q): Params,
    Extension(client): Extension<ClientAddr>,
    uri: OriginalUri,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    put_or_patch(ctx, path, q, body, false, Caller { client, uri }).await
}

async fn patch_path(
    AxState(ctx): Ctx,
    Path(path): Path<String>,
    Query(q): Params,
    Extension(client): Extension<ClientAddr>,
    uri: OriginalUri,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    put_or_patch(ctx, path, q, body, true, Caller { client, uri }).await
}

async fn post_path(
    AxState(ctx): Ctx,
    Path(path): Path<String>,
    Query(q): Params,
) -> Result<Response, ApiError> {
    let Target::Restart(raw) = parse_target(&path) else {
        return Err(method_not_allowed());
    };
    let id = app_id_of(&raw)?;
    let force = q.flag("force", false);
    let outcome = ctx.submit(Command::RestartApp { id, force }).await?;
    Ok(deployment_result(&outcome, StatusCode::OK, None))
}

/// Kills tasks and answers as Marathon does: the tasks (`scale=false`) or a deployment.
pub async fn kill(
    ctx: &ApiContext,
    tasks: Vec<TaskId>,
    scale: bool,
    wipe: bool,
    force: bool,
    single: bool,
) -> Result<Response, ApiError> {
    let snap_before = ctx.snapshot();
    let outcome = ctx
        .submit(Command::KillTasks {
            tasks,
            scale,
            wipe,
            force,
        })
        .await?;
    match &outcome {
        Outcome::Killed(instances) => {
            let list: Vec<Value> = instances
                .iter()
                .filter_map(|i| task_json(&snap_before, i))
                .collect();
            if single {
                Ok(Json(json!({"task": list.into_iter().next()})).into_response())
            } else {
                Ok(Json(json!({"tasks": list})).into_response())
            }
        }
        _ => Ok(deployment_result(&outcome, StatusCode::OK, None)),
    }
}

async fn delete_path(
    AxState(ctx): Ctx,
    Path(path): Path<String>,
    Query(q): Params,
) -> Result<Response, ApiError> {
    let (scale, wipe) = (q.flag("scale", false), q.flag("wipe", false));
    let force = q.flag("force", false);
    if scale && wipe {
        return Err(ApiError::bad_request(
            "You cannot use scale and wipe at the same time.",
        ));
    }
    match parse_target(&path) {
        Target::App(raw) => {
            let id = app_id_of(&raw)?;
            // Deleting an app overrides deployment locks unless told otherwise (Marathon's default).
            let force = q.flag("force", true);
            let outcome = ctx.submit(Command::DeleteApp { id, force }).await?;
            Ok(deployment_result(&outcome, StatusCode::OK, None))
        }
        Target::Tasks(raw) => {
            let id = app_id_of(&raw)?;
            let snap = ctx.snapshot();
            if !snap.apps.contains_key(&id) {
                return Err(ApiError::not_found(format!("App '{id}' does not exist")));
            }
            let host = q.one("host").filter(|h| *h != "*");
            let tasks: Vec<TaskId> = snap
                .instances_of(&id)
                .filter(|i| i.is_active())
                .filter(|i| host.is_none_or(|h| i.agent.as_ref().is_some_and(|a| a.host == h)))
                .filter_map(|i| i.task.as_ref().map(|t| t.task_id.clone()))
                .collect();
            kill(&ctx, tasks, scale, wipe, force, false).await
        }
        Target::Task(raw, task) => {
            let id = app_id_of(&raw)?;
            let t = TaskId::from_raw(&task);
            let snap = ctx.snapshot();
            let known = t
                .instance_id()
                .and_then(|iid| snap.instances.get(&iid).cloned())
                .filter(|i| i.app_id == id && i.is_active());
            if known.is_none() {
                return Err(ApiError::not_found(format!("Task '{task}' does not exist")));
            }
            kill(&ctx, vec![t], scale, wipe, force, true).await
        }
        _ => Err(method_not_allowed()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(parse_target("a/b"), Target::App("a/b".into()));
        assert_eq!(parse_target("a/b/"), Target::App("a/b".into()));
        assert_eq!(parse_target("a/b/tasks"), Target::Tasks("a/b".into()));
        assert_eq!(
            parse_target("a/tasks/a.instance-x._app.1"),
            Target::Task("a".into(), "a.instance-x._app.1".into())
        );
        assert_eq!(parse_target("a/versions"), Target::Versions("a".into()));
        assert_eq!(
            parse_target("a/versions/2015-01-01T00:00:00.000Z"),
            Target::Version("a".into(), "2015-01-01T00:00:00.000Z".into())
        );
        assert_eq!(parse_target("a/restart"), Target::Restart("a".into()));
        assert_eq!(parse_target("g/*"), Target::GroupApps("g".into()));
        assert_eq!(parse_target("g/*/tasks"), Target::GroupTasks("g".into()));
    }
}
