//! The AWS adapters: DynamoDB ([`DynamoStore`]), KMS ([`KmsCipher`]), SQS
//! ([`SqsQueue`]) and Secrets Manager ([`SecretsManagerSecrets`]), the SDK
//! configuration they share ([`load_sdk_config`]), and the provisioning of
//! their resources ([`ensure_all`], [`resolve`]).
//!
//! Build the SDK configuration and the adapters once per cold start:
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use lambent::adapters::aws::{load_sdk_config, resolve, AwsAdapters, Names};
//! let config = load_sdk_config().await;
//! let provisioned = resolve(&config, &Names::with_prefix("lambent")).await?;
//! let adapters = AwsAdapters::new(&config, &provisioned);
//! # let _ = adapters;
//! # Ok(())
//! # }
//! ```

pub mod dynamodb;
pub mod kms;
pub mod provision;
pub mod sdk;
pub mod secrets_manager;
pub mod sqs;

pub use dynamodb::DynamoStore;
pub use kms::KmsCipher;
pub use provision::{ensure_all, resolve, Names, ProvisionError, Provisioned};
pub use sdk::load_sdk_config;
pub use secrets_manager::SecretsManagerSecrets;
pub use sqs::SqsQueue;

use aws_config::SdkConfig;

/// The four AWS adapters, built from one SDK configuration.
#[derive(Debug)]
pub struct AwsAdapters {
    pub store: DynamoStore,
    pub cipher: KmsCipher,
    pub queue: SqsQueue,
    pub secrets: SecretsManagerSecrets,
}

impl AwsAdapters {
    pub fn new(config: &SdkConfig, provisioned: &Provisioned) -> Self {
        AwsAdapters {
            store: DynamoStore::from_conf(config, &provisioned.table),
            cipher: KmsCipher::from_conf(config, &provisioned.kms_key_id),
            queue: SqsQueue::from_conf(config, provisioned.queue_urls.clone()),
            secrets: SecretsManagerSecrets::from_conf(config, &provisioned.secret_id),
        }
    }
}
