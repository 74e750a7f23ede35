//! The AWS adapters: DynamoDB ([`DynamoStore`]), KMS ([`KmsCipher`]), SQS
//! ([`SqsQueue`]) and Secrets Manager ([`SecretsManagerSecrets`]), the SDK
//! configuration they share ([`load_sdk_config`]), and [`connect`], which
//! builds and warms them for the resources a function names.
pub mod dynamodb;
pub mod kms;
pub mod sdk;
pub mod secrets_manager;
pub mod sqs;

pub use dynamodb::DynamoStore;
pub use kms::KmsCipher;
pub use sdk::load_sdk_config;
pub use secrets_manager::SecretsManagerSecrets;
pub use sqs::SqsQueue;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use lambent_core::env::{required, ConfigError, Env, StartError};
use lambent_ports::cipher::{CipherError, CipherResult, EncryptionContext, KeyCipher};
use lambent_ports::queue::{Queue, QueueError, QueueName, QueueResult, Received};
use lambent_ports::{ItemStore, Needs, Ports, Secrets};

/// The AWS resources a function uses, named by its environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsResources {
    pub table: String,
    pub secret_id: String,
    pub kms_key_id: Option<String>,
    pub queue_urls: BTreeMap<QueueName, String>,
}

impl AwsResources {
    /// Reads the resource names strictly: a variable the function needs and
    /// lacks fails the start, naming the variable.
    pub fn from_env(env: &dyn Env, needs: Needs) -> Result<AwsResources, ConfigError> {
        let mut queue_urls = BTreeMap::new();
        for queue in needs.queues {
            queue_urls.insert(
                *queue,
                required(
                    env,
                    queue.url_variable(),
                    "the URL of a queue the function uses",
                )?,
            );
        }
        Ok(AwsResources {
            table: required(env, "LAMBENT_TABLE", "the DynamoDB table name")?,
            secret_id: required(
                env,
                "LAMBENT_SECRET_ID",
                "the bootstrap secret's ARN or name",
            )?,
            kms_key_id: if needs.cipher {
                Some(required(
                    env,
                    "LAMBENT_KMS_KEY_ID",
                    "the KMS key ID or ARN",
                )?)
            } else {
                None
            },
            queue_urls,
        })
    }
}

/// Builds the AWS adapters for `resources` and warms the store, key and
/// queues with one cheap call each, so a missing one fails the start
/// (naming it), and the first request does not pay the TLS handshakes.
/// The secret is not read here: its first reader (the derivation of the
/// server keys at start) is its warm-up. Without `secrets` (the health
/// function), the secrets port refuses every read and the role needs no
/// permission on the secret.
pub async fn connect(
    sdk: &aws_config::SdkConfig,
    resources: &AwsResources,
    secrets: bool,
) -> Result<Ports, StartError> {
    let store: Arc<dyn ItemStore> = Arc::new(DynamoStore::from_conf(sdk, &resources.table));
    let secrets: Arc<dyn Secrets> = if secrets {
        Arc::new(SecretsManagerSecrets::from_conf(sdk, &resources.secret_id))
    } else {
        Arc::new(lambent_ports::secrets::NoSecrets)
    };
    let cipher: Arc<dyn KeyCipher> = match &resources.kms_key_id {
        Some(key) => Arc::new(KmsCipher::from_conf(sdk, key)),
        None => Arc::new(NotProvided("the key cipher")),
    };
    let queue: Arc<dyn Queue> = if resources.queue_urls.is_empty() {
        Arc::new(NotProvided("the queue"))
    } else {
        Arc::new(SqsQueue::from_conf(sdk, resources.queue_urls.clone()))
    };

    let dependency =
        |name: &'static str| move |detail: String| StartError::Dependency { name, detail };
    let warm_store = async {
        store
            .ping()
            .await
            .map_err(|e| dependency("store (LAMBENT_TABLE)")(e.to_string()))
    };
    let warm_cipher = async {
        match &resources.kms_key_id {
            Some(_) => cipher
                .ping()
                .await
                .map_err(|e| dependency("cipher (LAMBENT_KMS_KEY_ID)")(e.to_string())),
            None => Ok(()),
        }
    };
    let warm_queue = async {
        match resources.queue_urls.is_empty() {
            false => queue
                .ping()
                .await
                .map_err(|e| dependency("queue (LAMBENT_*_QUEUE_URL)")(e.to_string())),
            true => Ok(()),
        }
    };
    tokio::try_join!(warm_store, warm_cipher, warm_queue)?;

    Ok(Ports {
        store,
        cipher,
        queue,
        secrets,
        clock: lambent_core::clock::system(),
    })
}

/// Stands in for a port a function does not need (and has no IAM
/// permission for). Any use is a wiring bug, reported as unavailable.
struct NotProvided(&'static str);

impl NotProvided {
    fn detail(&self) -> String {
        format!("{} is not provided to this function", self.0)
    }
}

#[async_trait]
impl KeyCipher for NotProvided {
    async fn encrypt(&self, _: &[u8], _: &EncryptionContext) -> CipherResult<Vec<u8>> {
        Err(CipherError::Unavailable(self.detail()))
    }
    async fn decrypt(&self, _: &[u8], _: &EncryptionContext) -> CipherResult<Vec<u8>> {
        Err(CipherError::Unavailable(self.detail()))
    }
    async fn ping(&self) -> CipherResult<()> {
        Err(CipherError::Unavailable(self.detail()))
    }
}

#[async_trait]
impl Queue for NotProvided {
    async fn send(&self, _: QueueName, _: &str, _: Duration) -> QueueResult<String> {
        Err(QueueError::Unavailable(self.detail()))
    }
    async fn receive(
        &self,
        _: QueueName,
        _: usize,
        _: Duration,
        _: Duration,
    ) -> QueueResult<Vec<Received>> {
        Err(QueueError::Unavailable(self.detail()))
    }
    async fn delete(&self, _: QueueName, _: &str) -> QueueResult<()> {
        Err(QueueError::Unavailable(self.detail()))
    }
    async fn change_visibility(&self, _: QueueName, _: &str, _: Duration) -> QueueResult<()> {
        Err(QueueError::Unavailable(self.detail()))
    }
    async fn ping(&self) -> QueueResult<()> {
        Err(QueueError::Unavailable(self.detail()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lambent_core::env::fixed as env;

    #[test]
    fn a_missing_resource_names_its_variable() {
        let base = [("LAMBENT_TABLE", "t"), ("LAMBENT_SECRET_ID", "s")];
        assert!(AwsResources::from_env(&env(&base), Needs::STORE_ONLY).is_ok());
        let all = Needs {
            cipher: true,
            queues: &[QueueName::Steps, QueueName::StepsDeadLetter],
        };
        let err = AwsResources::from_env(&env(&base), all);
        assert!(
            matches!(
                err,
                Err(ConfigError::Missing {
                    name: "LAMBENT_STEPS_QUEUE_URL",
                    ..
                })
            ),
            "{err:?}"
        );
        let err = AwsResources::from_env(&env(&base[..1]), Needs::STORE_ONLY);
        assert!(
            matches!(
                err,
                Err(ConfigError::Missing {
                    name: "LAMBENT_SECRET_ID",
                    ..
                })
            ),
            "{err:?}"
        );
        let with_queue = [base[0], base[1], ("LAMBENT_STEPS_QUEUE_URL", "q")];
        let err = AwsResources::from_env(&env(&with_queue), all);
        assert!(
            matches!(
                err,
                Err(ConfigError::Missing {
                    name: "LAMBENT_STEPS_DLQ_URL",
                    ..
                })
            ),
            "{err:?}"
        );
        let with_queues = [
            base[0],
            base[1],
            ("LAMBENT_STEPS_QUEUE_URL", "q"),
            ("LAMBENT_STEPS_DLQ_URL", "d"),
        ];
        let err = AwsResources::from_env(&env(&with_queues), all);
        assert!(
            matches!(
                err,
                Err(ConfigError::Missing {
                    name: "LAMBENT_KMS_KEY_ID",
                    ..
                })
            ),
            "{err:?}"
        );
    }
}
