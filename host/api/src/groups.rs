//! `/v2/groups` and everything below it.

use crate::apps::{deployment_result, json_body, now, Params, ParamsExt};
use crate::cache::{accepts_gzip, json_body_response, json_response};
use crate::error::ApiError;
use crate::render::{app_info, group_info, steps_json, Embed, GroupEmbed};
use crate::ApiContext;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State as AxState};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use pacer_core::app::AppDefinition;
use pacer_core::group_patch::{parse_group_patch, GroupPatch};
use pacer_core::id::PathId;
use pacer_core::imbl::OrdMap;
use pacer_core::machine::{Command, Outcome};
use pacer_core::state::under;
use pacer_core::time::Timestamp;
use serde_json::{json, Value};
use std::sync::Arc;

type Ctx = AxState<Arc<ApiContext>>;

pub fn routes() -> Router<Arc<ApiContext>> {
    Router::new()
        .route(
            "/v2/groups",
            get(get_root)
                .post(create_root)
                .put(put_root)
                .delete(delete_root),
        )
        .route(
            "/v2/groups/",
            get(get_root)
                .post(create_root)
                .put(put_root)
                .delete(delete_root),
        )
        .route(
            "/v2/groups/{*path}",
            get(get_path)
                .post(create_path)
                .put(put_path)
                .delete(delete_path),
        )
}

/// What a path below `/v2/groups/` addresses.
#[derive(Debug, PartialEq)]
enum Target {
    Group(String),
    Apps(String),
    Versions(String),
    Version(String, String),
}

fn parse_target(path: &str) -> Target {
    let path = path.trim_matches('/');
    let (rest, last) = path.rsplit_once('/').unwrap_or(("", path));
    let (rest2, second) = rest.rsplit_once('/').unwrap_or(("", rest));
    match (second, last) {
        (_, "versions") => Target::Versions(rest.into()),
        ("versions", v) => Target::Version(rest2.into(), v.into()),
        (_, "apps") => Target::Apps(rest.into()),
        _ => Target::Group(path.into()),
    }
}

fn group_id(raw: &str) -> Result<PathId, ApiError> {
    PathId::resolve(raw, &PathId::root()).map_err(|_| {
        ApiError::not_found(format!("Group '/{}' does not exist", raw.trim_matches('/')))
    })
}

fn missing(id: &PathId) -> ApiError {
    ApiError::not_found(format!("Group '{id}' does not exist"))
}

fn patch_of(body: Result<Bytes, BytesRejection>) -> Result<GroupPatch, ApiError> {
    parse_group_patch(json_body(body)?).map_err(ApiError::JsonTypes)
}

async fn get_root(ctx: Ctx, q: Params, headers: HeaderMap) -> Result<Response, ApiError> {
    get_path(ctx, Path(String::new()), q, headers).await
}

async fn get_path(
    AxState(ctx): Ctx,
    Path(path): Path<String>,
    Query(q): Params,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let snap = ctx.versioned_snapshot();
    let now = now();
    match parse_target(&path) {
        Target::Group(raw) => {
            let id = group_id(&raw)?;
            snap.group(&id).ok_or_else(|| missing(&id))?;
            let embed = GroupEmbed::parse(q.all("embed"));
            let key = format!("group {id} {embed:?}");
            let render = move |snap: &pacer_core::state::State| {
                let info = group_info(snap, &snap.apps, &snap.groups, &id, embed, now);
                serde_json::to_vec(&info).expect("groups serialise")
            };
            if embed.app.task_stats {
                // Lifetimes depend on the clock: never shared.
                return Ok(json_response(render(&snap).into()));
            }
            // The UI polls the root group with every app's counts: rendered once per state.
            let gzip = accepts_gzip(&headers, ctx.options.compression);
            let body = ctx.renders.encoded(&snap, &key, gzip, render).await;
            Ok(json_body_response(body))
        }
        Target::Apps(raw) => {
            let id = group_id(&raw)?;
            snap.group(&id).ok_or_else(|| missing(&id))?;
            let embed = Embed::parse(q.all("embed"));
            let apps: Vec<Value> = snap
                .apps_under(&id)
                .map(|a| app_info(&snap, a, embed, now))
                .collect();
            Ok(Json(json!(apps)).into_response())
        }
        Target::Versions(raw) => {
            let id = group_id(&raw)?;
            snap.group(&id).ok_or_else(|| missing(&id))?;
            let list: Vec<Value> = snap
                .root_versions
                .iter()
                .rev()
                .filter(|(_, r)| id.is_root() || r.groups.contains_key(&id))
                .map(|(v, _)| json!(v))
                .collect();
            Ok(Json(json!(list)).into_response())
        }
        Target::Version(raw, v) => {
            let id = group_id(&raw)?;
            let not_in =
                || ApiError::not_found(format!("Group '{id}' does not exist in version {v}"));
            let ts = Timestamp::parse(&v).ok_or_else(not_in)?;
            let refs = snap.root_versions.get(&ts).ok_or_else(not_in)?;
            if !id.is_root() && !refs.groups.contains_key(&id) {
                return Err(not_in());
            }
            // The apps of that version, as stored.
            let apps: OrdMap<PathId, Arc<AppDefinition>> = under(&refs.apps, &id)
                .filter_map(|(app, ver)| {
                    let def = snap.versions.get(app)?.get(ver)?;
                    Some((app.clone(), def.clone()))
                })
                .collect();
            let embed = GroupEmbed {
                app: Embed::default(),
                ..GroupEmbed::parse(Vec::new())
            };
            Ok(Json(group_info(&snap, &apps, &refs.groups, &id, embed, now)).into_response())
        }
    }
}

fn with_location(mut res: Response, id: &PathId) -> Response {
    if let Ok(v) = HeaderValue::from_str(&format!("/v2/groups{id}")) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    res
}

async fn create_root(
    ctx: Ctx,
    q: Params,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    create_path(ctx, Path(String::new()), q, body).await
}

async fn create_path(
    AxState(ctx): Ctx,
    Path(path): Path<String>,
    Query(q): Params,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let Target::Group(raw) = parse_target(&path) else {
        return Err(ApiError::not_found("URI not found"));
    };
    let base = group_id(&raw)?;
    let patch = patch_of(body)?;
    // An id that does not resolve is refused by the command below, before this is used.
    let target = patch.target_id(&base).unwrap_or_else(|_| base.clone());
    let outcome = ctx
        .submit(Command::CreateGroup {
            id: base,
            patch: Box::new(patch),
            force: q.flag("force", false),
        })
        .await?;
    Ok(with_location(
        deployment_result(&outcome, StatusCode::CREATED, None),
        &target,
    ))
}

async fn put_root(
    ctx: Ctx,
    q: Params,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    put_path(ctx, Path(String::new()), q, body).await
}

async fn put_path(
    AxState(ctx): Ctx,
    Path(path): Path<String>,
    Query(q): Params,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let Target::Group(raw) = parse_target(&path) else {
        return Err(ApiError::not_found("URI not found"));
    };
    let id = group_id(&raw)?;
    let patch = patch_of(body)?;
    let outcome = ctx
        .submit(Command::UpdateGroup {
            id,
            patch: Box::new(patch),
            force: q.flag("force", false),
            dry_run: q.flag("dryRun", false),
        })
        .await?;
    match outcome {
        Outcome::Plan(steps) => Ok(Json(json!({"steps": steps_json(&steps)})).into_response()),
        other => Ok(deployment_result(&other, StatusCode::OK, None)),
    }
}

async fn delete_root(ctx: Ctx, q: Params) -> Result<Response, ApiError> {
    delete_path(ctx, Path(String::new()), q).await
}

async fn delete_path(
    AxState(ctx): Ctx,
    Path(path): Path<String>,
    Query(q): Params,
) -> Result<Response, ApiError> {
    let Target::Group(raw) = parse_target(&path) else {
        return Err(ApiError::not_found("URI not found"));
    };
    let id = group_id(&raw)?;
    let outcome = ctx
        .submit(Command::DeleteGroup {
            id,
            force: q.flag("force", false),
        })
        .await?;
    Ok(deployment_result(&outcome, StatusCode::OK, None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(parse_target(""), Target::Group("".into()));
        assert_eq!(parse_target("a/b/"), Target::Group("a/b".into()));
        assert_eq!(parse_target("versions"), Target::Versions("".into()));
        assert_eq!(parse_target("a/versions"), Target::Versions("a".into()));
        assert_eq!(
            parse_target("a/versions/2015-01-01T00:00:00.000Z"),
            Target::Version("a".into(), "2015-01-01T00:00:00.000Z".into())
        );
        assert_eq!(parse_target("a/apps"), Target::Apps("a".into()));
        assert_eq!(parse_target("apps"), Target::Apps("".into()));
    }
}
