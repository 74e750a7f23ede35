//! Lambda glue: logging, configuration and clients once per cold start, then
//! serve with response streaming.
use lambent_boot::{Needs, QueueName};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    lambent_boot::telemetry::init(lambent_boot::telemetry::format_from_env());
    let state = lambent_boot::aws_from_env(Needs {
        cipher: true,
        // Background turns are handed to the worker.
        queues: &[QueueName::Steps],
    })
    .await?;
    lambda_http::run_with_streaming_response(lambent_fn_chat::GROUP.router(state)?).await
}
