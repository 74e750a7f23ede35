//! The secrets port: deployment secrets the code reads. In AWS one Secrets
//! Manager secret holds a JSON object of named values, and its version
//! stages keep the value before the last rotation (`AWSPREVIOUS`); on a
//! laptop each value is a file in the data directory (mode 0600), the value
//! before the last `lambent rotate-secret` a `.previous` file beside it.
//!
//! Adapters read through on every call: what caches a derived value, and
//! for how long, is the caller's choice (see `docs/SECRETS.md`).

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
    /// The named secret's current value, or `None` if it is not set.
    async fn get(&self, name: &str) -> SecretsResult<Option<SecretString>>;

    /// The named secret's value before its last rotation, or `None` if it
    /// was never rotated (or had no such field then).
    async fn get_previous(&self, name: &str) -> SecretsResult<Option<SecretString>>;

    /// A cheap round trip proving the secret store is reachable.
    async fn ping(&self) -> SecretsResult<()>;
}

/// The secrets port of a process that is given no secret (the health
/// function, which has no permission to read one): every call fails, so a
/// use of it is a loud wiring bug, never a silent read.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoSecrets;

impl NoSecrets {
    fn refused() -> SecretsError {
        SecretsError::Unavailable("this process reads no secret".into())
    }
}

#[async_trait]
impl Secrets for NoSecrets {
    async fn get(&self, _: &str) -> SecretsResult<Option<SecretString>> {
        Err(Self::refused())
    }

    async fn get_previous(&self, _: &str) -> SecretsResult<Option<SecretString>> {
        Err(Self::refused())
    }

    async fn ping(&self) -> SecretsResult<()> {
        Err(Self::refused())
    }
}
