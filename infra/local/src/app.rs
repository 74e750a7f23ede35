//! One app from every route group, as API Gateway and the chat function URL
//! present them in AWS.

use axum::Router;
use lambent_app::state::{StartError, State};

/// The bare routes of every HTTP function, merged and wrapped once with the
/// shared layers.
pub fn app(state: State) -> Result<Router, StartError> {
    let chat = lambent_fn_chat::Chat::new(state.clone())?;
    let routes = Router::new()
        .merge(lambent_fn_health::routes(state.clone()))
        .merge(lambent_fn_users::routes(state.clone()))
        .merge(lambent_fn_keys::routes(state.clone()))
        .merge(lambent_fn_providers::routes(state.clone()))
        .merge(lambent_fn_models::routes(state.clone()))
        .merge(lambent_fn_agents::routes(state.clone()))
        .merge(lambent_fn_sessions::routes(state.clone()))
        .merge(lambent_fn_chat::routes(chat))
        .merge(lambent_fn_usage::routes(state.clone()))
        .merge(lambent_fn_workflows::routes(state.clone()));
    Ok(lambent_http::service(routes, &state.config))
}
