//! The cold start baseline: a hello-world `lambda_runtime` function that
//! echoes its JSON payload, nothing else (no logging, no configuration, no
//! clients). Built with the workspace release profile, like the functions.
use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::Value;

async fn echo(event: LambdaEvent<Value>) -> Result<Value, Error> {
    Ok(event.payload)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(echo)).await
}
