//! Workflow definitions and runs.
//!
//! | method | route |
//! |---|---|
//! | GET POST | `/v1/workflows` |
//! | GET DELETE | `/v1/workflows/{id}` |
//! | POST | `/v1/workflows/{id}/runs` |
//! | GET | `/v1/runs/{id}` |
//! | POST | `/v1/runs/{id}/cancel` |
//!
//! The routes need an API key, then answer 501 until their issue lands; the crate, its template
//! resource and its wiring into `lambent serve` already exist.

use axum::routing::{get, post};
use axum::Router;
use lambent::http::not_implemented;
use lambent::state::State;

/// The bare routes, for merging into the local runner's single app.
pub fn routes(state: State) -> Router {
    let routes = Router::new()
        .route("/v1/workflows", get(not_implemented).post(not_implemented))
        .route(
            "/v1/workflows/{id}",
            get(not_implemented).delete(not_implemented),
        )
        .route("/v1/workflows/{id}/runs", post(not_implemented))
        .route("/v1/runs/{id}", get(not_implemented))
        .route("/v1/runs/{id}/cancel", post(not_implemented));
    lambent::http::protect(routes, &state).with_state(state)
}

/// The routes with the shared layers, as this function's Lambda serves them.
pub fn router(state: State) -> Router {
    let config = state.config.clone();
    lambent::http::service(routes(state), &config)
}
