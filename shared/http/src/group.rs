//! A route group: the routes of one function crate and their OpenAPI
//! description. A function crate says which routes it has (its
//! `documented()` router) and declares its [`RouteGroup`]; how the routes are
//! protected, layered for their Lambda, merged by `lambent serve` and
//! documented is written here, once.

use axum::Router;
use utoipa::openapi::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use lambent_app::state::{StartError, State};

/// One function crate's routes, as every entry point uses them.
pub struct RouteGroup {
    /// The routes' OpenAPI description; needs no state.
    pub openapi: fn() -> OpenApi,
    /// The bare routes over the process's state, as `lambent serve` merges
    /// them (the shared layers are added once, around the merged app).
    pub routes: fn(State) -> Result<Router, StartError>,
}

impl RouteGroup {
    /// The routes with the shared layers, as the group's own Lambda serves them.
    pub fn router(&self, state: State) -> Result<Router, StartError> {
        let config = state.config.clone();
        Ok(crate::service((self.routes)(state)?, &config))
    }
}

/// The description of a documented router.
pub fn openapi_of<S: Clone + Send + Sync + 'static>(documented: OpenApiRouter<S>) -> OpenApi {
    documented.split_for_parts().1
}

/// Routes that need an API key: each request is authenticated, rate limited
/// and, if it writes, audited ([`crate::protect`]) before its handler runs.
pub fn protected<S: Clone + Send + Sync + 'static>(
    documented: OpenApiRouter<S>,
    state: &State,
    handler_state: S,
) -> Router {
    let (routes, _) = documented.split_for_parts();
    crate::protect(routes, state).with_state(handler_state)
}

/// Routes anyone may call (`/health`, `/openapi.json`).
pub fn public<S: Clone + Send + Sync + 'static>(
    documented: OpenApiRouter<S>,
    handler_state: S,
) -> Router {
    let (routes, _) = documented.split_for_parts();
    routes.with_state(handler_state)
}
