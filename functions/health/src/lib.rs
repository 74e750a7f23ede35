//! The public routes: `GET /health` checks the store, the key cipher and the
//! queue (see `lambent_app::health`), 200 when all pass, 503 naming the failed
//! ones, reusing its answer for 10 s (`health::CACHE_FOR`) so it costs no
//! AWS call per request and reads no secret; `GET /openapi.json` serves the
//! API's OpenAPI document.
//!
//! The document is generated from the route crates' annotations by
//! `lambent openapi` and committed as `docs/openapi.json`; a test fails when
//! the committed file differs from what the code generates.

use std::sync::Arc;

use axum::extract::State as Extract;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use lambent_app::health::{Cached, Report};
use lambent_app::state::State;
use lambent_http::group::{self, RouteGroup, Routes};
use lambent_http::routes;

/// The committed OpenAPI document (see the crate docs).
pub const OPENAPI_JSON: &str = include_str!("../../../docs/openapi.json");

/// The routes, listed once: with their OpenAPI description for the
/// document, bare for serving.
pub fn routes() -> Routes<State> {
    Routes::new()
        .routes(routes!(health))
        .routes(routes!(openapi))
}

/// The route group: public routes, no API key. The routes of one process
/// share one cached health report.
pub const GROUP: RouteGroup = RouteGroup {
    openapi: || group::openapi_of(routes()),
    routes: |state| Ok(group::public(routes(), state).layer(Extension(Arc::new(Cached::default())))),
};

/// Check every dependency.
#[utoipa::path(get, path = "/health", tag = "health", security(()),
    responses(
        (status = 200, description = "every check passed", body = Report),
        (status = 503, description = "a dependency failed; `checks` names it", body = Report)))]
async fn health(
    Extract(state): Extract<State>,
    Extension(cached): Extension<Arc<Cached>>,
) -> Response {
    let report = cached.check(&state).await;
    let status = if report.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(report)).into_response()
}

/// This API's OpenAPI 3.1 document.
#[utoipa::path(get, path = "/openapi.json", tag = "health", security(()),
    responses((status = 200, description = "the OpenAPI document", content_type = "application/json")))]
async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI_JSON).into_response()
}
