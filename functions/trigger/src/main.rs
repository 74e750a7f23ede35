//! Lambda glue: logging, configuration and clients once per cold start, then
//! handle SQS batches with partial batch failures.
use aws_lambda_events::sqs::SqsEvent;
use lambda_runtime::{service_fn, LambdaEvent};
use lambent::ports::QueueName;
use lambent::state::Needs;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambent::telemetry::init(lambent::telemetry::format_from_env());
    let state = &lambent::backend::aws_from_env(Needs {
        cipher: false,
        queues: &[QueueName::Steps, QueueName::TriggersDeadLetter],
    })
    .await?;
    lambda_runtime::run(service_fn(|event: LambdaEvent<SqsEvent>| async move {
        Ok::<_, lambda_runtime::Error>(lambent_fn_trigger::handle_batch(state, event.payload).await)
    }))
    .await
}
