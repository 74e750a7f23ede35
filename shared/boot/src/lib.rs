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
use lambent_aws::{load_sdk_config, DynamoStore, KmsCipher, SqsQueue};
use lambent_ports::secrets::NoSecrets;
use lambent_ports::{ItemStore, KeyCipher, Ports, Queue};

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
    let ports = lambent_aws::connect(sdk, &resources).await?;
    let state = State::from_ports(config, ports);
    // The root secret is there (the warm-up read it); deriving the keys now
    // means the first request pays nothing, and a missing `signing_key`
    // fails the start.
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

/// The state of a function that reads no secret: the store, and the key
/// cipher and queues `resources` name, warmed as [`aws`] warms them, but its
/// secrets port is [`NoSecrets`] and nothing reads the root secret or
/// derives server keys, neither here nor later (its routes need none), so
/// its role needs no permission on the secret. A cipher `resources` does not
/// name is a KMS client on no key, queues it does not name are unknown to
/// the SQS client: any use of them fails.
pub async fn aws_without_secrets(
    sdk: &aws_config::SdkConfig,
    config: Config,
    resources: AwsResources,
) -> Result<State, StartError> {
    let store: Arc<dyn ItemStore> = Arc::new(DynamoStore::from_conf(sdk, &resources.table));
    let cipher: Arc<dyn KeyCipher> = Arc::new(KmsCipher::from_conf(
        sdk,
        resources.kms_key_id.clone().unwrap_or_default(),
    ));
    let queue: Arc<dyn Queue> = Arc::new(SqsQueue::from_conf(sdk, resources.queue_urls.clone()));

    // One after the other (three small calls): this crate runs no executor
    // of its own to join them with.
    let failed = |name: &'static str| move |detail: String| StartError::Dependency { name, detail };
    store
        .ping()
        .await
        .map_err(|e| failed("store (LAMBENT_TABLE)")(e.to_string()))?;
    if resources.kms_key_id.is_some() {
        cipher
            .ping()
            .await
            .map_err(|e| failed("cipher (LAMBENT_KMS_KEY_ID)")(e.to_string()))?;
    }
    if !resources.queue_urls.is_empty() {
        queue
            .ping()
            .await
            .map_err(|e| failed("queue (LAMBENT_*_QUEUE_URL)")(e.to_string()))?;
    }
    let ports = Ports {
        store,
        cipher,
        queue,
        secrets: Arc::new(NoSecrets),
        clock: lambent_core::clock::system(),
    };
    Ok(State::from_ports(config, ports))
}
