//! The Lambda glue every HTTP function's `main.rs` shares, and the only
//! shared crate that knows the Lambda runtime: a route group served by
//! `lambda_http` (buffered, or streamed for the chat routes), with each
//! invocation's IDs on every log line it writes.
//!
//! Lambda's runtime already opens a span per invocation with its request ID
//! (`requestId`) and the X-Ray trace ID (`xrayTraceId`); the span added here
//! carries API Gateway's request ID (`apigw_request_id`, the `request_id` of
//! API Gateway's error bodies and access log), and Lambent's own request
//! span (`request_id`, `lambent_http`) sits inside both. The JSON log
//! format writes the fields of every enclosing span on each line
//! (`lambent_boot::telemetry`), so a line joins the access log, Lambda's
//! own lines and the trace. Each response also flushes the metrics as EMF
//! lines once its body has been sent ([`emf`]).

mod emf;

use axum::Router;
use lambda_http::request::RequestContext;
use lambent_app::state::{StartError, State};
use lambent_http::group::RouteGroup;
use tower_http::trace::TraceLayer;

/// `group` as its Lambda function serves it: the group's router with the
/// invocation's span around each request, flushing the metrics after each
/// response.
pub fn app(group: &RouteGroup, state: State) -> Result<Router, StartError> {
    let router = emf::flush_after_responses(group.router(state.clone())?, &state);
    Ok(router.layer(
        TraceLayer::new_for_http()
            .make_span_with(invocation_span)
            // The request's own span (lambent_http) logs the request.
            .on_request(())
            .on_response(())
            .on_body_chunk(())
            .on_eos(())
            .on_failure(()),
    ))
}

/// Serves `group` until the runtime stops, each answer whole.
pub async fn serve(group: &RouteGroup, state: State) -> Result<(), lambda_http::Error> {
    lambda_http::run(app(group, state)?).await
}

/// Serves `group` until the runtime stops, each answer streamed as it is
/// written (`InvokeWithResponseStream`: API Gateway's response streaming).
pub async fn serve_streaming(group: &RouteGroup, state: State) -> Result<(), lambda_http::Error> {
    lambda_http::run_with_streaming_response(app(group, state)?).await
}

fn invocation_span<B>(request: &http::Request<B>) -> tracing::Span {
    let apigw_request_id = match request.extensions().get::<RequestContext>() {
        Some(RequestContext::ApiGatewayV1(context)) => context.request_id.as_deref(),
        Some(RequestContext::ApiGatewayV2(context)) => context.request_id.as_deref(),
        _ => None,
    };
    match apigw_request_id {
        Some(id) => tracing::info_span!("invocation", apigw_request_id = id),
        None => tracing::info_span!("invocation"),
    }
}
