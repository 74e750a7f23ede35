//! Lambda glue: logging, configuration and clients once per cold start, then serve.
use lambent_boot::Needs;

/// Allocation-heavy start (SDK clients, requests, JSON): mimalloc takes
/// a tenth off a cold start's instructions (docs/PERFORMANCE.md).
#[global_allocator]
static ALLOCATOR: lambent_boot::Allocator = lambent_boot::Allocator;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    lambent_boot::telemetry::init(lambent_boot::telemetry::format_from_env());
    let state = lambent_boot::aws_from_env(Needs::STORE_ONLY).await?;
    lambent_lambda::serve(&lambent_fn_sessions::GROUP, state).await
}
