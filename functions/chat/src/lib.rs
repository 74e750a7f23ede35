//! Streamed chat and the OpenAI-compatible endpoint.
//!
//! | method | route |
//! |---|---|
//! | POST | `/v1/sessions/{id}/messages` |
//! | POST | `/v1/chat/completions` |
//!
//! The routes need an API key, then answer 501 until their issue lands; the crate, its template
//! resource and its wiring into `lambent serve` already exist.

use axum::routing::post;
use axum::Router;
use lambent::http::not_implemented;
use lambent::state::State;

/// The bare routes, for merging into the local runner's single app.
pub fn routes(state: State) -> Router {
    let routes = Router::new()
        .route("/v1/sessions/{id}/messages", post(not_implemented))
        .route("/v1/chat/completions", post(not_implemented));
    lambent::http::protect(routes, &state).with_state(state)
}

/// The routes with the shared layers, as this function's Lambda serves them.
pub fn router(state: State) -> Router {
    let config = state.config.clone();
    lambent::http::service(routes(state), &config)
}
