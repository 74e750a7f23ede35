//! Lambda glue: logging, configuration and clients once per cold start, then
//! answer API Gateway's authorization requests.
use aws_lambda_events::apigw::ApiGatewayCustomAuthorizerRequestTypeRequest;
use lambda_runtime::{service_fn, LambdaEvent};
use lambent_boot::Needs;

/// Allocation-heavy start (SDK clients, requests, JSON): mimalloc takes
/// a tenth off a cold start's instructions (docs/PERFORMANCE.md).
#[global_allocator]
static ALLOCATOR: lambent_boot::Allocator = lambent_boot::Allocator;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambent_boot::telemetry::init(lambent_boot::telemetry::format_from_env());
    let state = &lambent_boot::aws_from_env(Needs::STORE_ONLY).await?;
    lambda_runtime::run(service_fn(
        |event: LambdaEvent<ApiGatewayCustomAuthorizerRequestTypeRequest>| async move {
            // The error's message is API Gateway's answer: "Unauthorized"
            // is a 401, anything else its authorizer failure.
            let decided = lambent_fn_authorizer::authorize(state, &event.payload).await;
            // Its cold start, before the invocation ends.
            state.flush_emf_to_stdout();
            decided.map_err(|e| {
                if let lambent_fn_authorizer::Refusal::Failed(cause) = &e {
                    tracing::error!(error = %cause, "authorizer failed");
                }
                lambda_runtime::Error::from(e.to_string())
            })
        },
    ))
    .await
}
