//! Lambda glue: logging, configuration and clients once per cold start, then serve.
use lambent_boot::Needs;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    lambent_boot::telemetry::init(lambent_boot::telemetry::format_from_env());
    // The cipher seals server tools' header values (encrypt only).
    let state = lambent_boot::aws_from_env(Needs {
        cipher: true,
        queues: &[],
    })
    .await?;
    lambda_http::run(lambent_fn_agents::GROUP.router(state)?).await
}
