//! The key-cipher port: encrypts small secrets (provider API keys) under an
//! encryption context that binds the ciphertext to its owner. Decrypting with
//! any other context fails, so a ciphertext copied onto another record is useless.

use std::collections::BTreeMap;

use async_trait::async_trait;

/// Authenticated, non-secret data bound to a ciphertext (KMS "encryption context").
pub type EncryptionContext = BTreeMap<String, String>;

#[derive(Debug, thiserror::Error)]
pub enum CipherError {
    /// Wrong context, wrong key or tampered ciphertext. Deliberately vague.
    #[error("ciphertext could not be decrypted")]
    Rejected,
    #[error("key cipher unavailable: {0}")]
    Unavailable(String),
    #[error("invalid cipher request: {0}")]
    Invalid(String),
}

pub type CipherResult<T> = Result<T, CipherError>;

#[async_trait]
pub trait KeyCipher: Send + Sync + 'static {
    async fn encrypt(&self, plaintext: &[u8], context: &EncryptionContext)
        -> CipherResult<Vec<u8>>;

    async fn decrypt(
        &self,
        ciphertext: &[u8],
        context: &EncryptionContext,
    ) -> CipherResult<Vec<u8>>;

    /// A cheap round trip proving the key is usable (health checks).
    async fn ping(&self) -> CipherResult<()>;
}

/// Refuses an empty context: every Lambent ciphertext is bound to an owner.
pub fn require_context(context: &EncryptionContext) -> CipherResult<()> {
    if context.is_empty() {
        return Err(CipherError::Invalid(
            "an encryption context is required".into(),
        ));
    }
    Ok(())
}
