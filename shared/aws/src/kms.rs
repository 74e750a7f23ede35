//! The key cipher on KMS: symmetric Encrypt / Decrypt under one key, always
//! with an encryption context, so a ciphertext only decrypts for its owner.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::KeyState;
use aws_sdk_kms::Client;

use super::sdk::error_text;
use lambent_ports::cipher::{
    require_context, CipherError, CipherResult, EncryptionContext, KeyCipher,
};

/// Largest plaintext KMS encrypts directly.
pub const MAX_PLAINTEXT: usize = 4096;

/// The KMS adapter of [`KeyCipher`].
#[derive(Debug, Clone)]
pub struct KmsCipher {
    client: Client,
    key_id: String,
}

impl KmsCipher {
    /// An adapter on `key_id` (a key ARN, key id or `alias/...`).
    pub fn new(client: Client, key_id: impl Into<String>) -> Self {
        KmsCipher {
            client,
            key_id: key_id.into(),
        }
    }

    /// Builds the client from a loaded SDK configuration.
    pub fn from_conf(config: &SdkConfig, key_id: impl Into<String>) -> Self {
        Self::new(Client::new(config), key_id)
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }
}

fn context_map(context: &EncryptionContext) -> HashMap<String, String> {
    context
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Wrong context, wrong key or a tampered ciphertext: `Rejected`, without
/// detail. Anything else: `Unavailable` with the error chain (logs only).
fn cipher_error<E, R>(err: &SdkError<E, R>) -> CipherError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match err.code() {
        Some("InvalidCiphertextException") | Some("IncorrectKeyException") => CipherError::Rejected,
        _ => CipherError::Unavailable(error_text(err)),
    }
}

#[async_trait]
impl KeyCipher for KmsCipher {
    async fn encrypt(
        &self,
        plaintext: &[u8],
        context: &EncryptionContext,
    ) -> CipherResult<Vec<u8>> {
        require_context(context)?;
        if plaintext.is_empty() || plaintext.len() > MAX_PLAINTEXT {
            return Err(CipherError::Invalid(format!(
                "plaintext must be 1..={MAX_PLAINTEXT} bytes"
            )));
        }
        let out = self
            .client
            .encrypt()
            .key_id(&self.key_id)
            .plaintext(Blob::new(plaintext))
            .set_encryption_context(Some(context_map(context)))
            .send()
            .await
            .map_err(|e| CipherError::Unavailable(error_text(&e)))?;
        out.ciphertext_blob
            .map(Blob::into_inner)
            .ok_or_else(|| CipherError::Unavailable("KMS returned no ciphertext".into()))
    }

    async fn decrypt(
        &self,
        ciphertext: &[u8],
        context: &EncryptionContext,
    ) -> CipherResult<Vec<u8>> {
        require_context(context)?;
        if ciphertext.is_empty() {
            return Err(CipherError::Rejected);
        }
        let out = self
            .client
            .decrypt()
            // Naming the key makes KMS refuse a ciphertext made under another.
            .key_id(&self.key_id)
            .ciphertext_blob(Blob::new(ciphertext))
            .set_encryption_context(Some(context_map(context)))
            .send()
            .await
            .map_err(|e| cipher_error(&e))?;
        out.plaintext
            .map(Blob::into_inner)
            .ok_or_else(|| CipherError::Unavailable("KMS returned no plaintext".into()))
    }

    async fn ping(&self) -> CipherResult<()> {
        let out = self
            .client
            .describe_key()
            .key_id(&self.key_id)
            .send()
            .await
            .map_err(|e| CipherError::Unavailable(error_text(&e)))?;
        match out.key_metadata() {
            Some(meta) if meta.enabled() && meta.key_state() == Some(&KeyState::Enabled) => Ok(()),
            Some(meta) => Err(CipherError::Unavailable(format!(
                "KMS key {} is not enabled (state {:?})",
                self.key_id,
                meta.key_state()
            ))),
            None => Err(CipherError::Unavailable(format!(
                "KMS key {} has no metadata",
                self.key_id
            ))),
        }
    }
}
