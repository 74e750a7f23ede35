//! `GET /metrics`: this `lambent serve` process's running totals (model
//! calls, tokens, cost, provider latency, tool calls, budget refusals) as
//! Prometheus text, for an admin key. A route of `lambent serve` only: on
//! AWS each function writes the same metrics as CloudWatch EMF lines
//! instead (`lambent_app::metrics`, docs/METRICS.md).

use axum::extract::State as Extract;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use lambent_app::metrics::prometheus;
use lambent_app::state::State;
use lambent_http::group::{self, RouteGroup, Routes};
use lambent_http::{routes, Admin};

/// The routes, listed once: with their OpenAPI description for the
/// document, bare for serving.
pub fn routes() -> Routes<State> {
    Routes::new().routes(routes!(metrics))
}

/// The route group: behind the API key check, like every admin route.
pub const GROUP: RouteGroup = RouteGroup {
    openapi: || group::openapi_of(routes()),
    routes: |state| Ok(group::protected(routes(), &state, state.clone())),
};

/// This process's metrics as Prometheus text (admins only; `lambent serve` only).
///
/// Counters since the process started, per model and provider kind: model
/// calls, provider errors, budget refusals, input, output and cache tokens,
/// cost in USD (exact decimal digits); provider latency and time to first
/// token as histograms in seconds; server tool calls by outcome; starts.
/// Not served on AWS, where the functions write the same metrics as
/// CloudWatch embedded metric format lines.
#[utoipa::path(get, path = "/metrics", tag = "metrics",
    responses((status = 200, description = "Prometheus text exposition format 0.0.4",
        content_type = "text/plain; version=0.0.4", body = String)))]
async fn metrics(_admin: Admin, Extract(state): Extract<State>) -> Response {
    let text = prometheus::render(&state.metrics.snapshot());
    ([(header::CONTENT_TYPE, prometheus::CONTENT_TYPE)], text).into_response()
}
