//! The API Gateway (HTTP API) Lambda authorizer. It runs the same check as
//! every route function's middleware, `Identity::authenticate`, so a bad key
//! is refused before any route function is invoked; API Gateway caches the
//! answer per `Authorization` header for the template's
//! `AuthorizerResultTtlInSeconds` (kept at `LAMBENT_AUTH_CACHE_SECS`).
//!
//! Route functions check the key again (from their per-process cache) and
//! apply the rate limit, so they stay safe if invoked another way.

use aws_lambda_events::apigw::{
    ApiGatewayV2CustomAuthorizerSimpleResponse, ApiGatewayV2CustomAuthorizerV2Request,
};
use lambent_app::state::State;
use lambent_core::Error;
use serde_json::json;

/// Decides one request. `context` reaches the route function as
/// `requestContext.authorizer.lambda`.
pub async fn authorize(
    state: &State,
    request: &ApiGatewayV2CustomAuthorizerV2Request,
) -> Result<ApiGatewayV2CustomAuthorizerSimpleResponse, Error> {
    let header = request
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .or_else(|| {
            request
                .identity_source
                .as_ref()
                .and_then(|s| s.first())
                .map(String::as_str)
        });
    let mut response = ApiGatewayV2CustomAuthorizerSimpleResponse::default();
    match state
        .identity
        .authenticate(state.store.as_ref(), header)
        .await
    {
        Ok(principal) => {
            response.is_authorized = true;
            response.context = json!({
                "user_id": principal.user_id,
                "key_id": principal.key_id,
                "role": principal.role.as_str(),
            });
            Ok(response)
        }
        Err(Error::Unauthenticated) => {
            response.is_authorized = false;
            response.context = json!({});
            Ok(response)
        }
        // A dependency failed: API Gateway answers 500 rather than caching a
        // wrong "no".
        Err(e) => Err(e),
    }
}
