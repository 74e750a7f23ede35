//! Lambda glue: logging, configuration and clients once per cold start, then
//! handle SQS batches with partial batch failures.
use aws_lambda_events::sqs::SqsEvent;
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
    let state = &lambent_boot::aws_from_env(Needs {
        cipher: false,
        queues: &[QueueName::Steps, QueueName::TriggersDeadLetter],
    })
    .await?;
    lambda_runtime::run(service_fn(|event: LambdaEvent<SqsEvent>| async move {
        let answer = lambent_app::workflows::trigger::handle_batch(state, event.payload).await;
        // Before the invocation ends: Lambda may freeze the process after.
        state.flush_emf_to_stdout();
        Ok::<_, lambda_runtime::Error>(answer)
    }))
    .await
}
