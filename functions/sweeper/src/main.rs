//! Lambda glue: logging, configuration and clients once per cold start,
//! then one sweeper pass per scheduled event (every minute). See
//! `lambent_app::sweeper` for what a pass does.
use lambda_runtime::{service_fn, LambdaEvent};
use lambent_boot::Needs;
use lambent_boot::QueueName;

/// Allocation-heavy start (SDK clients, requests, JSON): mimalloc takes
/// a tenth off a cold start's instructions (docs/PERFORMANCE.md).
#[global_allocator]
static ALLOCATOR: lambent_boot::Allocator = lambent_boot::Allocator;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambent_boot::telemetry::init(lambent_boot::telemetry::format_from_env());
    // The sweeper reads no secret: its role has no permission on it.
    let state = &lambent_boot::aws_without_secrets_from_env(Needs {
        cipher: false,
        queues: &[QueueName::Steps],
    })
    .await?;
    lambda_runtime::run(service_fn(
        |_scheduled: LambdaEvent<serde_json::Value>| async move {
            let swept = lambent_app::sweeper::sweep(state).await;
            // Before the invocation ends: Lambda may freeze the process after.
            state.flush_emf_to_stdout();
            Ok::<_, lambda_runtime::Error>(serde_json::to_value(swept)?)
        },
    ))
    .await
}
