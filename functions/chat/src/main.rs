//! Lambda glue: logging, configuration and clients once per cold start, then
//! serve with response streaming.
use lambent_boot::{Needs, QueueName};

/// Allocation-heavy start (SDK clients, requests, JSON): mimalloc takes
/// a tenth off a cold start's instructions (docs/PERFORMANCE.md).
#[global_allocator]
static ALLOCATOR: lambent_boot::Allocator = lambent_boot::Allocator;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    lambent_boot::telemetry::init(lambent_boot::telemetry::format_from_env());
    let state = lambent_boot::aws_from_env(Needs {
        cipher: true,
        // Background turns are handed to the worker.
        queues: &[QueueName::Steps],
    })
    .await?;
    lambent_lambda::serve_streaming(&lambent_fn_chat::GROUP, state).await
}
