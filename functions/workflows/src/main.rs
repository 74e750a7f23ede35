//! Lambda glue: logging, configuration and clients once per cold start, then serve.
use lambent::ports::QueueName;
use lambent::state::Needs;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    lambent::telemetry::init(lambent::telemetry::format_from_env());
    let state = lambent::backend::aws_from_env(Needs {
        cipher: false,
        queues: &[QueueName::Steps],
    })
    .await?;
    lambda_http::run(lambent_fn_workflows::router(state)).await
}
