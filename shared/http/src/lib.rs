//! What every route group's Router shares: the request ID, the error
//! envelope, request logging, body limits and CORS. Each function crate builds
//! its routes and wraps them once with [`service`]; the local runner merges the
//! bare routes of every group and wraps the merged app once.

use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use http::{HeaderValue, StatusCode};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tracing::Instrument;

use lambent_app::config::Config;

pub mod auth;
pub mod cursor;
pub mod error;
pub mod group;
pub mod json;
pub mod pagination;
pub mod path_id;

pub use auth::{protect, Admin, AuditSubject, Caller};
pub use json::Body;
pub use pagination::{ListPage, ListParams};
pub use path_id::{PathId, PathIds};

/// Response header carrying the request ID (also in every error body).
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Longest client-visible message copied from a framework rejection.
const MAX_REJECTION_MESSAGE: usize = 300;

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The ID of the request being served, for error bodies and logs.
pub fn current_request_id() -> String {
    REQUEST_ID
        .try_with(Clone::clone)
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// Marks a response whose body already is the error envelope.
#[derive(Clone, Copy)]
struct Enveloped;

/// `{"error": {"code", "message", "request_id"}}` with the given status.
pub fn error_response(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({
        "error": { "code": code, "message": message, "request_id": current_request_id() }
    });
    let mut response = (status, Json(body)).into_response();
    response.extensions_mut().insert(Enveloped);
    response
}

/// Wraps a route group (or all of them, merged) with the shared layers.
pub fn service(routes: Router, config: &Config) -> Router {
    let mut app = routes
        .fallback(route_not_found)
        .layer(DefaultBodyLimit::max(config.max_body_bytes));
    if let Some(cors) = cors_layer(&config.cors_origins) {
        app = app.layer(cors);
    }
    app.layer(middleware::from_fn(request_context))
}

async fn route_not_found() -> Response {
    error_response(StatusCode::NOT_FOUND, "not_found", "route not found")
}

fn cors_layer(origins: &[String]) -> Option<CorsLayer> {
    let origins: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    if origins.is_empty() {
        return None;
    }
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([
                http::Method::GET,
                http::Method::POST,
                http::Method::PATCH,
                http::Method::DELETE,
            ])
            .allow_headers([
                http::header::AUTHORIZATION,
                http::header::CONTENT_TYPE,
                http::HeaderName::from_static("x-api-key"),
                http::HeaderName::from_static("anthropic-version"),
            ])
            .expose_headers([http::HeaderName::from_static(REQUEST_ID_HEADER)]),
    )
}

/// Gives the request an ID, logs it, and turns every error response that is
/// not yet an envelope (framework rejections: 404, 405, 413, 415, 422) into one.
async fn request_context(request: Request, next: Next) -> Response {
    let request_id = lambent_core::ids::new_id("req");
    let started = Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| request.uri().path().to_owned());
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        %method,
        %route,
        user_id = tracing::field::Empty,
        key_id = tracing::field::Empty,
    );

    let response = REQUEST_ID
        .scope(request_id.clone(), async move {
            let response = next.run(request).await;
            let failed = response.status().is_client_error() || response.status().is_server_error();
            if failed && response.extensions().get::<Enveloped>().is_none() && !is_json(&response) {
                envelope(response).await
            } else {
                response
            }
        })
        .instrument(span.clone())
        .await;

    let mut response = response;
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    span.in_scope(|| {
        tracing::info!(
            status = response.status().as_u16(),
            latency_ms = started.elapsed().as_secs_f64() * 1000.0,
            "request served"
        )
    });
    response
}

/// A handler's own JSON answer (such as the health report's 503) is kept.
fn is_json(response: &Response) -> bool {
    response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

async fn envelope(response: Response) -> Response {
    let status = response.status();
    let text = match axum::body::to_bytes(response.into_body(), 16 * 1024).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(_) => String::new(),
    };
    let (status, code, message) = match status {
        StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => (
            StatusCode::BAD_REQUEST,
            "invalid_request",
            rejection_message(&text, "invalid request"),
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "expected a JSON body with Content-Type: application/json".to_owned(),
        ),
        StatusCode::NOT_FOUND => (status, "not_found", "route not found".to_owned()),
        StatusCode::METHOD_NOT_ALLOWED => (
            status,
            "method_not_allowed",
            "method not allowed on this route".to_owned(),
        ),
        StatusCode::PAYLOAD_TOO_LARGE => (
            status,
            "payload_too_large",
            "request body too large".to_owned(),
        ),
        s if s.is_client_error() => (
            s,
            "invalid_request",
            rejection_message(&text, "invalid request"),
        ),
        s => {
            tracing::error!(status = s.as_u16(), "unhandled error response");
            (s, "internal", "internal error".to_owned())
        }
    };
    error_response(status, code, &message)
}

fn rejection_message(text: &str, fallback: &str) -> String {
    let text = text.trim();
    if text.is_empty() {
        return fallback.to_owned();
    }
    text.chars().take(MAX_REJECTION_MESSAGE).collect()
}
