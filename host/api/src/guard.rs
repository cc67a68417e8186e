//! The HTTP guards in front of every route, in Marathon's order: Basic authentication, the
//! concurrent-request limit, then CORS. (Cache-disabling and leader headers are added by the
//! innermost layer, with the request metrics.)

use crate::ApiContext;
use axum::extract::State as AxState;
use axum::http::{header, HeaderValue, Method, Request, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use std::sync::Arc;
use subtle::ConstantTimeEq;

type Ctx = AxState<Arc<ApiContext>>;

/// HTTP Basic authentication on every path (`--http_credentials`), as Jetty's constraint on `/*`.
pub(crate) async fn basic_auth(
    AxState(ctx): Ctx,
    req: Request<axum::body::Body>,
    next: Next,
) -> Response {
    let Some(expected) = &ctx.options.credentials else {
        return next.run(req).await;
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("basic").then_some(token.trim())
        })
        .and_then(|token| base64::engine::general_purpose::STANDARD.decode(token).ok());
    // Constant time in the content; only a length mismatch returns early.
    if given.is_some_and(|g| bool::from(g.as_slice().ct_eq(expected.as_bytes()))) {
        return next.run(req).await;
    }
    let challenge = format!("Basic realm=\"{}\"", ctx.options.realm.replace('"', "'"));
    let mut res = (
        StatusCode::UNAUTHORIZED,
        axum::Json(
            serde_json::json!({"message": "Unauthorized: this API needs HTTP Basic credentials."}),
        ),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        res.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    res
}

/// `--http_max_concurrent_requests`: requests beyond the limit are shed with a 503 at once
/// instead of queueing on an overloaded leader. A stream holds its slot only until its head is
/// sent.
pub(crate) async fn limit_concurrency(
    AxState(ctx): Ctx,
    req: Request<axum::body::Body>,
    next: Next,
) -> Response {
    let Some(slots) = &ctx.limiter else {
        return next.run(req).await;
    };
    let allowed = ctx.options.max_concurrent_requests.unwrap_or_default();
    match slots.try_acquire() {
        Ok(_permit) => next.run(req).await,
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("Too many concurrent requests! Allowed: {allowed}."),
        )
            .into_response(),
    }
}

/// CORS as Marathon's filter does it (`--access_control_allow_origin`): a matching `Origin` is
/// echoed, requested headers are allowed, methods are GET, HEAD and OPTIONS. Preflight requests
/// are answered here.
pub(crate) async fn cors(
    AxState(ctx): Ctx,
    req: Request<axum::body::Body>,
    next: Next,
) -> Response {
    let origins = &ctx.options.cors_origins;
    if origins.is_empty() {
        return next.run(req).await;
    }
    let origin = req.headers().get(header::ORIGIN).cloned();
    let requested = req
        .headers()
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .cloned();
    let preflight = req.method() == Method::OPTIONS
        && origin.is_some()
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut res = if preflight {
        StatusCode::OK.into_response()
    } else {
        next.run(req).await
    };
    let h = res.headers_mut();
    if let Some(o) = origin {
        let allowed = origins
            .iter()
            .any(|a| a == "*" || o.to_str().is_ok_and(|o| o == a));
        if allowed {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o);
            h.append(header::VARY, HeaderValue::from_static("Origin"));
        }
    }
    if let Some(r) = requested {
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, r);
    }
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, HEAD, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    res
}
