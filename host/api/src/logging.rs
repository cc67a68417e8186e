//! `GET /logging` and `POST /logging`: log levels changed at run time, as Marathon's JSON API.

use crate::error::ApiError;
use crate::ApiContext;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State as AxState;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// The logger that `ROOT` (Marathon's name for it) addresses.
pub const ROOT: &str = "ROOT";

/// Changes the process's log filter; implemented by the daemon over `tracing-subscriber`.
pub trait LogControl: Send + Sync {
    /// Logger name → level in upper case (`ROOT` is the default for everything).
    fn levels(&self) -> BTreeMap<String, String>;
    /// Sets `logger` to `level` (already validated), reverting after `duration` if given.
    fn set_level(
        &self,
        logger: &str,
        level: &str,
        duration: Option<Duration>,
    ) -> Result<(), String>;
}

pub fn routes() -> Router<Arc<ApiContext>> {
    Router::new().route("/logging", get(levels).post(change))
}

fn control(ctx: &ApiContext) -> Result<&Arc<dyn LogControl>, ApiError> {
    ctx.log_control
        .as_ref()
        .ok_or_else(|| ApiError::not_found("URI not found"))
}

async fn levels(AxState(ctx): AxState<Arc<ApiContext>>) -> Result<Response, ApiError> {
    Ok(Json(control(&ctx)?.levels()).into_response())
}

/// Logback's levels as Marathon accepts them, mapped to `tracing`'s.
fn level(name: &str) -> Option<&'static str> {
    Some(match name.to_ascii_lowercase().as_str() {
        "all" | "trace" => "trace",
        "debug" => "debug",
        "info" => "info",
        "warn" | "warning" => "warn",
        "error" => "error",
        "off" => "off",
        _ => return None,
    })
}

fn invalid(path: &str, msg: &str) -> ApiError {
    ApiError::Invalid(vec![pacer_core::violation::Violation::new(path, msg)])
}

async fn change(
    AxState(ctx): AxState<Arc<ApiContext>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let control = control(&ctx)?;
    let v = crate::apps::json_body(body)?;
    let field = |name: &str| v.get(name).and_then(|x| x.as_str()).map(str::to_string);
    let logger = field("logger").unwrap_or_else(|| ROOT.to_string());
    let valid_logger = logger.eq_ignore_ascii_case(ROOT)
        || (!logger.is_empty()
            && logger
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | ':' | '-')));
    if !valid_logger {
        return Err(invalid(
            "/logger",
            "must be ROOT or a log target such as pacer_core or pacer_core::deploy",
        ));
    }
    let Some(lvl) = field("level").as_deref().and_then(level) else {
        return Err(invalid(
            "/level",
            "must be one of trace, debug, info, warn, error, off, all",
        ));
    };
    let duration = match v.get("durationSeconds") {
        None | Some(serde_json::Value::Null) => None,
        Some(d) => match d.as_f64() {
            Some(s) if s > 0.0 && s.is_finite() => Some(Duration::from_secs_f64(s)),
            _ => {
                return Err(invalid(
                    "/durationSeconds",
                    "must be a positive number of seconds",
                ))
            }
        },
    };
    let logger = if logger.eq_ignore_ascii_case(ROOT) {
        ROOT.to_string()
    } else {
        logger
    };
    control
        .set_level(&logger, lvl, duration)
        .map_err(ApiError::bad_request)?;
    tracing::info!(message = "Log level changed.", logger = %logger, level = lvl, duration_s = duration.map(|d| d.as_secs_f64()));
    Ok(Json(control.levels()).into_response())
}
