//! The authentication layer of every protected route: checks the API key
//! ([`Identity::authenticate`], the same code the API Gateway authorizer
//! runs), counts the request against its user's rate limit, hands the
//! [`Principal`] to the handler, and records each successful write in the
//! audit log.

use axum::extract::{FromRequestParts, MatchedPath, Request, State as Extract};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use http::request::Parts;
use http::Method;
use lambent_core::Error;
use tracing::Instrument;

use crate::error::ApiError;
use lambent_app::state::State;
use lambent_core::auth::Principal;
use lambent_store::audit;

/// Puts every route of `routes` behind the authentication layer. Routes
/// added to the router afterwards stay public.
pub fn protect<S: Clone + Send + Sync + 'static>(routes: Router<S>, state: &State) -> Router<S> {
    routes.route_layer(middleware::from_fn_with_state(state.clone(), guard))
}

async fn guard(Extract(state): Extract<State>, mut request: Request, next: Next) -> Response {
    let principal = match state
        .identity
        .authenticate_headers(state.store.as_ref(), request.headers())
        .await
    {
        Ok(p) => p,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let span = tracing::Span::current();
    span.record("user_id", principal.user_id.as_str());
    span.record("key_id", principal.key_id.as_str());

    if let Err(e) = state
        .rates
        .take(
            &state.store,
            &principal.user_id,
            state.config.rate_limit,
            state.clock.now_millis(),
        )
        .await
    {
        return ApiError::from(e).into_response();
    }

    let asked = Asked {
        method: request.method().clone(),
        route: request
            .extensions()
            .get::<MatchedPath>()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_default(),
        path: request.uri().path().to_owned(),
    };
    request.extensions_mut().insert(principal.clone());
    let mut response = next.run(request).await;
    let subject = response.extensions_mut().remove::<AuditSubject>();

    let writes = !matches!(asked.method, Method::GET | Method::HEAD | Method::OPTIONS);
    if writes && response.status().is_success() {
        let record = record_audit(
            state,
            principal,
            asked,
            response.status().as_u16(),
            super::current_request_id(),
            subject,
        );
        if is_stream(&response) {
            // A stream's first bytes do not wait for the entry: the
            // request is still running (in Lambda too, until its body ends),
            // and the entry is written meanwhile.
            tokio::spawn(record.in_current_span());
        } else {
            record.await;
        }
    }
    response
}

fn is_stream(response: &Response) -> bool {
    response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"))
}

/// What a request asked for, as its audit entry names it.
struct Asked {
    method: Method,
    route: String,
    path: String,
}

/// Writes the audit entry of a successful write.
async fn record_audit(
    state: State,
    principal: Principal,
    asked: Asked,
    status: u16,
    request_id: String,
    subject: Option<AuditSubject>,
) {
    let route = asked.route;
    let entry = audit::NewEntry {
        user_id: &principal.user_id,
        key_id: &principal.key_id,
        method: asked.method.as_str(),
        route: &route,
        path: &asked.path,
        status,
        request_id: &request_id,
        subject_user_id: subject.as_ref().map(|s| s.user_id.as_str()),
        resource_id: subject.as_ref().map(|s| s.resource_id.as_str()),
    };
    // The write itself has happened; a lost audit entry is an operator
    // alarm, not a reason to tell the client it failed.
    if let Err(e) = audit::record(state.store.as_ref(), entry, state.config.audit_ttl_days).await {
        tracing::error!(error = %e, %route, "audit entry not recorded");
    }
}

/// The authenticated caller of an admin-only route: anyone else gets 403
/// before the rest of the request (its body above all) is read, so a
/// member learns nothing of what the route would accept.
#[derive(Debug, Clone)]
pub struct Admin(pub Principal);

impl std::ops::Deref for Admin {
    type Target = Principal;

    fn deref(&self) -> &Principal {
        &self.0
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Caller(principal) = Caller::from_request_parts(parts, state).await?;
        principal.require_admin()?;
        Ok(Admin(principal))
    }
}

/// What a write was about, for its audit entry: a handler adds it to its
/// response's extensions when the path does not say (a created API key's
/// ID and the user it is for). It never reaches the client.
#[derive(Debug, Clone)]
pub struct AuditSubject {
    pub user_id: String,
    pub resource_id: String,
}

/// The authenticated caller, as a handler argument. [`protect`] has checked
/// the key before any handler runs, so a route behind it always has one.
#[derive(Debug, Clone)]
pub struct Caller(pub Principal);

impl std::ops::Deref for Caller {
    type Target = Principal;

    fn deref(&self) -> &Principal {
        &self.0
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .map(Caller)
            .ok_or(Error::Unauthenticated.into())
    }
}
