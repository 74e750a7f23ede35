//! One app from every route group, as the API Gateway REST API presents them
//! in AWS.

use axum::Router;
use lambent_app::state::{StartError, State};
use lambent_http::group::RouteGroup;

/// Every HTTP route group, listed once: the app below and the OpenAPI
/// document (`crate::openapi`) are both built from it.
pub const GROUPS: &[&RouteGroup] = &[
    &lambent_fn_health::GROUP,
    &lambent_fn_users::GROUP,
    &lambent_fn_keys::GROUP,
    &lambent_fn_providers::GROUP,
    &lambent_fn_models::GROUP,
    &lambent_fn_agents::GROUP,
    &lambent_fn_sessions::GROUP,
    &lambent_fn_usage::GROUP,
    &lambent_fn_workflows::GROUP,
    &lambent_fn_chat::GROUP,
];

/// Routes `lambent serve` has and no Lambda function does (`GET /metrics`:
/// on AWS the functions write their metrics as EMF lines). Served and
/// documented with [`GROUPS`].
pub const LOCAL_GROUPS: &[&RouteGroup] = &[&crate::metrics::GROUP];

/// The bare routes of every group, merged and wrapped once with the shared
/// layers.
pub fn app(state: State) -> Result<Router, StartError> {
    let mut routes = Router::new();
    for group in GROUPS.iter().chain(LOCAL_GROUPS) {
        routes = routes.merge((group.routes)(state.clone())?);
    }
    Ok(lambent_http::service(routes, &state.config))
}
