//! Agents: a provider, a model and their settings.
//!
//! | method | route |
//! |---|---|
//! | GET POST | `/v1/agents` |
//! | GET PATCH DELETE | `/v1/agents/{id}` |
//!
//! The routes answer 501 until their issue lands; the crate, its template
//! resource and its wiring into `lambent serve` already exist.

use axum::routing::get;
use axum::Router;
use lambent::http::not_implemented;
use lambent::state::State;

/// The bare routes, for merging into the local runner's single app.
pub fn routes(state: State) -> Router {
    Router::new()
        .route("/v1/agents", get(not_implemented).post(not_implemented))
        .route(
            "/v1/agents/{id}",
            get(not_implemented)
                .patch(not_implemented)
                .delete(not_implemented),
        )
        .with_state(state)
}

/// The routes with the shared layers, as this function's Lambda serves them.
pub fn router(state: State) -> Router {
    let config = state.config.clone();
    lambent::http::service(routes(state), &config)
}
