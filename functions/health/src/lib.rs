//! `GET /health`: checks the store, the key cipher and the queue (see
//! `lambent::health`); 200 when all pass, 503 naming the failed ones.
//! `GET /openapi.json` will serve the generated API document (issue 3).

use axum::extract::State as Extract;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use lambent::http::not_implemented;
use lambent::state::State;

/// The bare routes, for merging into the local runner's single app.
pub fn routes(state: State) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/openapi.json", get(not_implemented))
        .with_state(state)
}

/// The routes with the shared layers, as this function's Lambda serves them.
pub fn router(state: State) -> Router {
    let config = state.config.clone();
    lambent::http::service(routes(state), &config)
}

async fn health(Extract(state): Extract<State>) -> Response {
    let report = lambent::health::check(&state).await;
    let status = if report.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(report)).into_response()
}
