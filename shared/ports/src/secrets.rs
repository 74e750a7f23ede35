//! The secrets port: deployment secrets the code reads at cold start.
//! In AWS one Secrets Manager secret holds a JSON object of named values; on a
//! laptop each value is a file in the data directory (mode 0600).

use async_trait::async_trait;

use lambent_core::secret::SecretString;

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("secret {0} is not set")]
    Missing(String),
    #[error("secrets unavailable: {0}")]
    Unavailable(String),
    #[error("secret store is malformed: {0}")]
    Malformed(String),
}

pub type SecretsResult<T> = Result<T, SecretsError>;

#[async_trait]
pub trait Secrets: Send + Sync + 'static {
    /// The named secret, or `None` if it is not set.
    async fn get(&self, name: &str) -> SecretsResult<Option<SecretString>>;

    /// A cheap round trip proving the secret store is reachable.
    async fn ping(&self) -> SecretsResult<()>;
}
