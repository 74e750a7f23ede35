//! Process start, for each of the two worlds: AWS (each Lambda function, or
//! `lambent serve --backend aws`) and embedded (`lambent serve` by default).
//! Configuration is read once, the adapters are built and warmed, and the
//! [`State`] handed to the handlers, which never learn which world they got.

pub mod telemetry;

use std::path::Path;
use std::sync::Arc;

use lambent_core::clock::Clock;

use lambent_app::config::{Config, ConfigError, ProcessEnv};
use lambent_app::state::{StartError, State};
use lambent_aws::load_sdk_config;
pub use lambent_aws::AwsResources;
pub use lambent_ports::{Needs, QueueName};

/// Opens the embedded backend in `data_dir`, on the wall clock.
pub fn embedded(data_dir: &Path, config: Config) -> Result<State, StartError> {
    embedded_on(data_dir, config, lambent_core::clock::system())
}

/// Opens the embedded backend in `data_dir`, deciding expiry by `clock`.
pub fn embedded_on(
    data_dir: &Path,
    config: Config,
    clock: Arc<dyn Clock>,
) -> Result<State, StartError> {
    // More receives than a step's attempts: duplicates and waits for a lease
    // also use receives, and the worker, not the redrive, must decide when a
    // step has failed.
    let max_receives = lambent_embedded::DEFAULT_MAX_RECEIVES.max(config.step_max_attempts + 2);
    let ports = lambent_embedded::open(data_dir, max_receives, clock)?;
    Ok(State::from_ports(config, ports))
}

/// The state of a Lambda function: configuration and resource names from
/// the process environment, clients built and warmed once.
pub async fn aws_from_env(needs: Needs) -> Result<State, StartError> {
    let env = ProcessEnv;
    let config = Config::from_env(&env)?;
    let resources = AwsResources::from_env(&env, needs)?;
    let sdk = load_sdk_config().await;
    if sdk.region().is_none() {
        return Err(ConfigError::Missing {
            name: "AWS_REGION",
            why: "the AWS region of the deployment",
        }
        .into());
    }
    aws(&sdk, config, resources).await
}

/// The state over the AWS adapters of `resources`, each warmed with one
/// cheap call, and the server keys derived, so the first request pays for
/// nothing and a missing resource fails the start.
pub async fn aws(
    sdk: &aws_config::SdkConfig,
    config: Config,
    resources: AwsResources,
) -> Result<State, StartError> {
    let ports = lambent_aws::connect(sdk, &resources).await?;
    let state = State::from_ports(config, ports);
    // The root secret was just read by the warm-up; deriving the keys now
    // means the first request pays nothing, and a missing one fails the start.
    state
        .identity
        .keys()
        .await
        .map_err(|e| StartError::Dependency {
            name: "secrets (LAMBENT_SECRET_ID)",
            detail: e.to_string(),
        })?;
    Ok(state)
}
