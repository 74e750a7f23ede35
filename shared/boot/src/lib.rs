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

/// The allocator of the Lambda functions (each names it as its
/// `#[global_allocator]`): mimalloc.
pub use mimalloc::MiMalloc as Allocator;

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
    let durability = if config.fsync_each_commit {
        lambent_embedded::Durability::Full
    } else {
        lambent_embedded::Durability::Normal
    };
    let ports = lambent_embedded::open(data_dir, max_receives, durability, clock)?;
    Ok(State::from_ports(config, ports))
}

/// The state of a Lambda function: configuration and resource names from
/// the process environment, clients built and warmed once.
pub async fn aws_from_env(needs: Needs) -> Result<State, StartError> {
    let (sdk, config, resources) = aws_env(needs).await?;
    aws(&sdk, config, resources).await
}

/// The state of a function that reads no secret (the health function):
/// like [`aws_from_env`], but see [`aws_without_secrets`].
pub async fn aws_without_secrets_from_env(needs: Needs) -> Result<State, StartError> {
    let (sdk, config, resources) = aws_env(needs).await?;
    aws_without_secrets(&sdk, config, resources).await
}

/// Configuration, resource names and the SDK configuration from the
/// process environment.
async fn aws_env(
    needs: Needs,
) -> Result<(aws_config::SdkConfig, Config, AwsResources), StartError> {
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
    Ok((sdk, config, resources))
}

/// The state over the AWS adapters of `resources`, each warmed with one
/// cheap call, and the server keys derived, so the first request pays for
/// nothing and a missing resource fails the start.
pub async fn aws(
    sdk: &aws_config::SdkConfig,
    config: Config,
    resources: AwsResources,
) -> Result<State, StartError> {
    let ports = lambent_aws::connect(sdk, &resources, true).await?;
    let state = State::from_ports(config, ports);
    // Deriving the keys reads the root secret (its current value; the
    // previous one when first needed): the secret's warm-up, so the first
    // request pays nothing, and a missing secret or `signing_key` fails the
    // start.
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

/// The state of a function that reads no secret: like [`aws`], but its
/// secrets port refuses every read ([`lambent_ports::secrets::NoSecrets`])
/// and no server key is derived, neither here nor later (its routes need
/// none), so its role needs no permission on the secret.
pub async fn aws_without_secrets(
    sdk: &aws_config::SdkConfig,
    config: Config,
    resources: AwsResources,
) -> Result<State, StartError> {
    let ports = lambent_aws::connect(sdk, &resources, false).await?;
    Ok(State::from_ports(config, ports))
}
