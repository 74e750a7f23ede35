//! A route group: the routes of one function crate and their OpenAPI
//! description. A function crate lists its routes once (a [`Routes`] made
//! with [`routes!`](crate::routes)) and declares its [`RouteGroup`]; how the
//! routes are protected, layered for their Lambda, merged by `lambent serve`
//! and documented is written here, once.
//!
//! The list is built two ways: with its OpenAPI description (the document:
//! `lambent openapi`, `docs/openapi.json`) or without it (serving). A
//! function's cold start builds only the bare router: collecting the
//! description (every operation, parameter and schema of the group) was
//! about a tenth of a function's instructions to ready
//! (docs/PERFORMANCE.md).

use axum::routing::MethodRouter;
use axum::Router;
use utoipa::openapi::OpenApi;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouter};

use lambent_app::state::{StartError, State};

#[doc(hidden)]
pub use utoipa_axum as __utoipa_axum;

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

/// The handlers of one [`routes!`](crate::routes) entry (the operations of
/// one path), either with their OpenAPI description, as
/// `utoipa_axum::routes!` gives them, or bare: each handler's path and
/// methods only.
pub struct RouteEntry<S> {
    documented: fn() -> UtoipaMethodRouter<S>,
    bare: fn() -> (Vec<String>, MethodRouter<S>),
}

impl<S> RouteEntry<S> {
    /// Made by [`routes!`](crate::routes).
    #[doc(hidden)]
    pub fn new(
        documented: fn() -> UtoipaMethodRouter<S>,
        bare: fn() -> (Vec<String>, MethodRouter<S>),
    ) -> RouteEntry<S> {
        RouteEntry { documented, bare }
    }
}

/// A function crate's routes, listed once: [`Routes::documented`] for the
/// OpenAPI document, [`Routes::router`] for serving.
pub struct Routes<S> {
    entries: Vec<RouteEntry<S>>,
}

impl<S: Clone + Send + Sync + 'static> Default for Routes<S> {
    fn default() -> Self {
        Routes::new()
    }
}

impl<S: Clone + Send + Sync + 'static> Routes<S> {
    pub fn new() -> Routes<S> {
        Routes {
            entries: Vec::new(),
        }
    }

    /// Adds the handlers of one [`routes!`](crate::routes) (as
    /// [`OpenApiRouter::routes`] does).
    pub fn routes(mut self, entry: RouteEntry<S>) -> Routes<S> {
        self.entries.push(entry);
        self
    }

    /// The routes with their OpenAPI description.
    pub fn documented(&self) -> OpenApiRouter<S> {
        self.entries
            .iter()
            .fold(OpenApiRouter::new(), |router, entry| {
                router.routes((entry.documented)())
            })
    }

    /// The same routes without their description: what
    /// [`Routes::documented`]'s router routes, built as
    /// [`OpenApiRouter::routes`] builds it (one route per path of an entry,
    /// each with the entry's methods).
    pub fn router(&self) -> Router<S> {
        self.entries.iter().fold(Router::new(), |router, entry| {
            let (paths, methods) = (entry.bare)();
            let mut distinct: Vec<&str> = Vec::with_capacity(paths.len());
            for path in &paths {
                if !distinct.contains(&path.as_str()) {
                    distinct.push(path);
                }
            }
            let at = |path: &str| if path.is_empty() { "/" } else { path }.to_owned();
            match distinct.as_slice() {
                [path] => router.route(&at(path), methods),
                paths => paths.iter().fold(router, |router, path| {
                    router.route(&at(path), methods.clone())
                }),
            }
        })
    }
}

/// The [`Routes`] entry of handlers annotated with `#[utoipa::path]`, as
/// `utoipa_axum::routes!` takes them (one path, one handler per method):
/// `.routes(routes!(list_things, create_thing))`. The calling crate needs
/// `axum` and `utoipa` (as for `utoipa_axum::routes!`).
#[macro_export]
macro_rules! routes {
    ($($handler:ident)::+ $(, $($more:ident)::+)* $(,)?) => {
        $crate::group::RouteEntry::new(
            || $crate::group::__utoipa_axum::routes!($($handler)::+ $(, $($more)::+)*),
            || {
                let mut paths = ::std::vec::Vec::<::std::string::String>::new();
                let methods = ::axum::routing::MethodRouter::new();
                let methods = $crate::__bare_route!(paths, methods, $($handler)::+);
                $( let methods = $crate::__bare_route!(paths, methods, $($more)::+); )*
                (paths, methods)
            },
        )
    };
}

/// One handler's path (pushed to `$paths`) and methods (added to
/// `$methods`), from the operation type `#[utoipa::path]` made for it,
/// without its description.
#[doc(hidden)]
#[macro_export]
macro_rules! __bare_route {
    ($paths:ident, $methods:ident, $($handler:ident)::+) => {{
        use $crate::group::__utoipa_axum::PathItemExt as _;
        $paths.push(<$crate::__operation_type!([] $($handler)::+) as ::utoipa::Path>::path());
        <$crate::__operation_type!([] $($handler)::+) as ::utoipa::Path>::methods()
            .iter()
            .fold($methods, |methods, method| {
                methods.on(method.to_method_filter(), $($handler)::+)
            })
    }};
}

/// `a::b::handler` -> `a::b::__path_handler`, the type `#[utoipa::path]`
/// made for the handler.
#[doc(hidden)]
#[macro_export]
macro_rules! __operation_type {
    ([$($module:ident)*] $handler:ident) => {
        $crate::group::__utoipa_axum::paste! { $($module ::)* [<__path_ $handler>] }
    };
    ([$($module:ident)*] $first:ident :: $($rest:ident)::+) => {
        $crate::__operation_type!([$($module)* $first] $($rest)::+)
    };
}

/// The description of a group's routes.
pub fn openapi_of<S: Clone + Send + Sync + 'static>(routes: Routes<S>) -> OpenApi {
    routes.documented().split_for_parts().1
}

/// Routes that need an API key: each request is authenticated, rate limited
/// and, if it writes, audited ([`crate::protect`]) before its handler runs.
pub fn protected<S: Clone + Send + Sync + 'static>(
    routes: Routes<S>,
    state: &State,
    handler_state: S,
) -> Router {
    crate::protect(routes.router(), state).with_state(handler_state)
}

/// Routes anyone may call (`/health`, `/openapi.json`).
pub fn public<S: Clone + Send + Sync + 'static>(routes: Routes<S>, handler_state: S) -> Router {
    routes.router().with_state(handler_state)
}

#[cfg(test)]
mod tests {
    use super::*;

    use axum::body::Body;
    use axum::extract::{Path, State as Extract};
    use http::{Method, Request};
    use tower::ServiceExt;

    mod things {
        use super::*;

        /// One thing.
        #[utoipa::path(get, path = "/things/{id}", tag = "things",
            params(("id" = String, Path, description = "the thing")),
            responses((status = 200, description = "the thing", body = String)))]
        pub async fn get_thing(Path(id): Path<String>) -> String {
            format!("get {id}")
        }

        /// Delete one thing.
        #[utoipa::path(delete, path = "/things/{id}", tag = "things",
            params(("id" = String, Path, description = "the thing")),
            responses((status = 200, description = "deleted", body = String)))]
        pub async fn delete_thing(Path(id): Path<String>, Extract(n): Extract<u32>) -> String {
            format!("delete {id} {n}")
        }
    }

    /// Every thing.
    #[utoipa::path(get, path = "/things", tag = "things",
        responses((status = 200, description = "the things", body = String)))]
    async fn list_things() -> &'static str {
        "list"
    }

    /// A new thing.
    #[utoipa::path(post, path = "/things", tag = "things", request_body = String,
        responses((status = 201, description = "made", body = String)))]
    async fn create_thing(body: String) -> String {
        format!("create {body}")
    }

    /// Something else, on the root path.
    #[utoipa::path(get, path = "", responses((status = 200, description = "root", body = String)))]
    async fn root(Extract(n): Extract<u32>) -> String {
        format!("root {n}")
    }

    fn listed() -> Routes<u32> {
        Routes::new()
            .routes(crate::routes!(list_things, create_thing))
            .routes(crate::routes!(things::get_thing, things::delete_thing,))
            .routes(crate::routes!(root))
    }

    fn direct() -> OpenApiRouter<u32> {
        OpenApiRouter::new()
            .routes(utoipa_axum::routes!(list_things, create_thing))
            .routes(utoipa_axum::routes!(
                things::get_thing,
                things::delete_thing
            ))
            .routes(utoipa_axum::routes!(root))
    }

    /// An entry whose handlers have different paths: utoipa-axum routes
    /// every method of the entry on each path.
    fn mixed() -> Routes<u32> {
        Routes::new().routes(crate::routes!(list_things, things::delete_thing))
    }

    fn mixed_direct() -> OpenApiRouter<u32> {
        OpenApiRouter::new().routes(utoipa_axum::routes!(list_things, things::delete_thing))
    }

    #[test]
    fn the_document_is_utoipa_axums() {
        let json = |api: OpenApi| api.to_pretty_json().unwrap();
        let ours = json(openapi_of(listed()));
        assert_eq!(ours, json(direct().split_for_parts().1));
        assert!(ours.contains("/things/{id}") && ours.contains("Delete one thing"));
        assert_eq!(
            json(openapi_of(mixed())),
            json(mixed_direct().split_for_parts().1)
        );
    }

    async fn answer(router: &Router<u32>, method: &Method, uri: &str) -> (u16, String) {
        let request = Request::builder()
            .method(method.clone())
            .uri(uri)
            .body(Body::from("body"))
            .unwrap();
        let response = router.clone().with_state(7).oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn the_bare_router_answers_as_the_documented_one() {
        let methods = [
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::HEAD,
        ];
        let uris = ["/", "/things", "/things/a1", "/things/a1/more", "/nothing"];
        for (ours, theirs) in [(listed(), direct()), (mixed(), mixed_direct())] {
            let bare = ours.router();
            let documented = theirs.split_for_parts().0;
            let mut routed = 0;
            for uri in uris {
                for method in &methods {
                    let got = answer(&bare, method, uri).await;
                    assert_eq!(
                        got,
                        answer(&documented, method, uri).await,
                        "{method} {uri}"
                    );
                    routed += usize::from(got.0 < 400);
                }
            }
            assert!(routed >= 4, "{routed}");
        }
        let bare = listed().router();
        assert_eq!(
            answer(&bare, &Method::GET, "/").await,
            (200, "root 7".into())
        );
        assert_eq!(
            answer(&bare, &Method::DELETE, "/things/a1").await,
            (200, "delete a1 7".into())
        );
        assert_eq!(
            answer(&bare, &Method::POST, "/things").await,
            (200, "create body".into())
        );
        assert_eq!(answer(&bare, &Method::PUT, "/things").await.0, 405);
        // Mixed paths: each gets every method of the entry.
        let mixed = mixed().router();
        assert_eq!(answer(&mixed, &Method::GET, "/things/a1").await.0, 200);
        // (Routed: the handler's path parameter is missing there.)
        let status = answer(&mixed, &Method::DELETE, "/things").await.0;
        assert!(![404, 405].contains(&status), "{status}");
    }
}
