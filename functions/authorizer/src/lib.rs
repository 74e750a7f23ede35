//! The API Gateway (REST API) Lambda authorizer, of the `REQUEST` type. It
//! runs the same check as every route function's middleware,
//! `Identity::authenticate_headers`, so a bad key is refused before any route
//! function is invoked.
//!
//! Its answer is an IAM policy. API Gateway caches it per `Authorization`
//! header for the template's `ReauthorizeEvery` (kept at
//! `LAMBENT_AUTH_CACHE_SECS`) and applies the cached policy to whatever route
//! the same key calls next, so the policy allows every route of the stage,
//! not only the one asked about. Route functions check the key again (from
//! their per-process cache) and apply the rate limit and the roles, so they
//! stay safe if invoked another way.

use aws_lambda_events::apigw::{
    ApiGatewayCustomAuthorizerPolicy, ApiGatewayCustomAuthorizerRequestTypeRequest,
    ApiGatewayCustomAuthorizerResponse,
};
use aws_lambda_events::iam::{IamPolicyEffect, IamPolicyStatement};
use lambent_app::state::State;
use lambent_core::Error;
use serde_json::json;

/// Why a request is not let through.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// No key, or not a valid one. API Gateway answers 401 for exactly this
    /// error message, and nothing else.
    #[error("Unauthorized")]
    Unauthorized,
    /// A dependency failed: API Gateway answers its authorizer failure (the
    /// template maps it to a 503) rather than caching a wrong "no".
    #[error("authorizer failed: {0}")]
    Failed(Error),
}

/// Decides one request. `context` reaches the route function as
/// `requestContext.authorizer` (and the access log as `user_id`).
pub async fn authorize(
    state: &State,
    request: &ApiGatewayCustomAuthorizerRequestTypeRequest,
) -> Result<ApiGatewayCustomAuthorizerResponse, Refusal> {
    let principal = match state
        .identity
        .authenticate_headers(state.store.as_ref(), &request.headers)
        .await
    {
        Ok(principal) => principal,
        Err(Error::Unauthenticated) => return Err(Refusal::Unauthorized),
        Err(e) => return Err(Refusal::Failed(e)),
    };
    let stage = request
        .method_arn
        .as_deref()
        .and_then(stage_arn)
        .ok_or_else(|| {
            Refusal::Failed(Error::Internal(
                "authorizer request without a method ARN".into(),
            ))
        })?;

    let mut statement = IamPolicyStatement::default();
    statement.action = vec!["execute-api:Invoke".into()];
    statement.effect = IamPolicyEffect::Allow;
    statement.resource = vec![format!("{stage}/*")];
    let mut policy = ApiGatewayCustomAuthorizerPolicy::default();
    policy.version = Some("2012-10-17".into());
    policy.statement = vec![statement];

    let mut response = ApiGatewayCustomAuthorizerResponse::default();
    response.principal_id = Some(principal.user_id.to_string());
    response.policy_document = policy;
    response.context = json!({
        "user_id": principal.user_id,
        "key_id": principal.key_id,
        "role": principal.role.as_str(),
    });
    Ok(response)
}

/// `arn:aws:execute-api:<region>:<account>:<api>/<stage>` of a method ARN
/// (`…/<stage>/<METHOD>/<path>`).
fn stage_arn(method_arn: &str) -> Option<&str> {
    let (api, rest) = method_arn.split_once('/')?;
    let stage = rest.split('/').next().filter(|s| !s.is_empty())?;
    Some(&method_arn[..api.len() + 1 + stage.len()])
}

#[cfg(test)]
mod tests {
    use super::stage_arn;

    #[test]
    fn a_policy_covers_the_whole_stage() {
        let arn = "arn:aws:execute-api:us-east-1:123456789012:a1b2c3/api/GET/v1/keys";
        assert_eq!(
            stage_arn(arn),
            Some("arn:aws:execute-api:us-east-1:123456789012:a1b2c3/api")
        );
        assert_eq!(stage_arn("arn:aws:execute-api:us-east-1:1:a1b2c3"), None);
        assert_eq!(stage_arn("arn:aws:execute-api:us-east-1:1:a1b2c3/"), None);
    }
}
