//! Lambda glue: logging, configuration and clients once per cold start, then
//! handle SQS batches with partial batch failures.
use aws_lambda_events::sqs::SqsEvent;
use lambda_runtime::{service_fn, LambdaEvent};
use lambent_app::workflows::Allowance;
use lambent_boot::Needs;
use lambent_boot::QueueName;

/// Allocation-heavy start (SDK clients, requests, JSON): mimalloc takes
/// a tenth off a cold start's instructions (docs/PERFORMANCE.md).
#[global_allocator]
static ALLOCATOR: lambent_boot::Allocator = lambent_boot::Allocator;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambent_boot::telemetry::init(lambent_boot::telemetry::format_from_env());
    let state = lambent_boot::aws_from_env(Needs {
        cipher: true,
        queues: &[QueueName::Steps, QueueName::StepsDeadLetter],
    })
    .await?;
    let worker = &lambent_app::workflows::Worker::new(state)?;
    lambda_runtime::run(service_fn(|event: LambdaEvent<SqsEvent>| async move {
        // A step's model call may use what is left of this invocation.
        let allowance = Allowance::until(event.context.deadline as i64);
        let answer = worker.handle_batch_within(event.payload, allowance).await;
        // Before the invocation ends: Lambda may freeze the process after.
        worker.state.flush_emf_to_stdout();
        Ok::<_, lambda_runtime::Error>(answer)
    }))
    .await
}
