//! Marathon's error bodies: `{"message": ..}` plus `details` for invalid JSON and validation.

use crate::SubmitError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use pacer_core::machine::CommandError;
use pacer_core::violation::{group_by_path, Violation};
use serde_json::json;

#[derive(Debug)]
pub enum ApiError {
    /// 400 with the parser's text.
    InvalidJson(String),
    /// 422 `Invalid JSON` with per-path type errors.
    JsonTypes(Vec<Violation>),
    /// 422 `Object is not valid`.
    Invalid(Vec<Violation>),
    Status(StatusCode, String),
    /// A status with a body that has more than a message.
    Body(StatusCode, serde_json::Value),
}

impl ApiError {
    pub fn not_found(msg: impl Into<String>) -> Self {
        ApiError::Status(StatusCode::NOT_FOUND, msg.into())
    }
    pub fn bad_request(msg: impl Into<String>) -> Self {
        ApiError::Status(StatusCode::BAD_REQUEST, msg.into())
    }
    pub fn unprocessable(msg: impl Into<String>) -> Self {
        ApiError::Status(StatusCode::UNPROCESSABLE_ENTITY, msg.into())
    }
}

impl From<SubmitError> for ApiError {
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::Command(c) => c.into(),
            // Marathon's wording for the same refusal, with what exceeded which limit.
            SubmitError::TooLarge(msg) => ApiError::Status(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "The way we persist data in ZooKeeper would exceed the maximum ZK node size \
                     (--zk_max_node_size): {msg}"
                ),
            ),
            SubmitError::Storage(msg) => ApiError::Status(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("The change could not be stored and was not applied: {msg}"),
            ),
            SubmitError::Unavailable => ApiError::Status(
                StatusCode::SERVICE_UNAVAILABLE,
                "The scheduler is shutting down".into(),
            ),
        }
    }
}

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> Self {
        match e {
            CommandError::Invalid(v) => ApiError::Invalid(v),
            CommandError::NotFound(m) => ApiError::Status(StatusCode::NOT_FOUND, m),
            CommandError::AlreadyExists(m) => ApiError::Status(StatusCode::CONFLICT, m),
            CommandError::BadRequest(m) => ApiError::Status(StatusCode::BAD_REQUEST, m),
            CommandError::Unprocessable(m) => ApiError::Status(StatusCode::UNPROCESSABLE_ENTITY, m),
            CommandError::Forbidden(m) => ApiError::Status(StatusCode::FORBIDDEN, m),
            CommandError::Locked(ids) => ApiError::Body(
                StatusCode::CONFLICT,
                json!({
                    "message": format!(
                        "App is locked by one or more deployments. Override with the option '?force=true'. View details at '/v2/deployments/{}'.",
                        ids.first().map(String::as_str).unwrap_or_default()
                    ),
                    "deployments": ids.iter().map(|id| json!({"id": id})).collect::<Vec<_>>(),
                }),
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = match self {
            ApiError::InvalidJson(details) => (
                StatusCode::BAD_REQUEST,
                json!({"message": "Invalid JSON", "details": details}),
            ),
            ApiError::JsonTypes(v) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({"message": "Invalid JSON", "details": group_by_path(&v)}),
            ),
            ApiError::Invalid(v) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({"message": "Object is not valid", "details": group_by_path(&v)}),
            ),
            ApiError::Status(s, m) => (s, json!({"message": m})),
            ApiError::Body(s, body) => (s, body),
        };
        (status, Json(body)).into_response()
    }
}
