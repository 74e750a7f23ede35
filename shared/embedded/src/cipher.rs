//! The embedded key cipher: AES-256-GCM under a master key kept in a file of
//! the data directory (created on first start, mode 0600). The encryption
//! context is the associated data, so a ciphertext only decrypts with the
//! context it was made with, as with KMS.

use std::io;
use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use async_trait::async_trait;

use super::files::{read_secret_file, write_secret_file};
use lambent_core::ids::random_bytes;
use lambent_ports::cipher::{
    require_context, CipherError, CipherResult, EncryptionContext, KeyCipher,
};

/// Format tag, so the layout can change without misreading old data.
const VERSION: &[u8; 4] = b"LMB1";
const NONCE_LEN: usize = 12;

pub struct LocalCipher {
    aead: Aes256Gcm,
}

impl LocalCipher {
    pub fn from_key(key: &[u8; 32]) -> Self {
        LocalCipher {
            aead: Aes256Gcm::new(key.into()),
        }
    }

    /// Loads the master key file, creating it with a fresh random key if absent.
    pub fn open_or_create(path: &Path) -> io::Result<Self> {
        let key = match read_secret_file(path)? {
            Some(bytes) => bytes,
            None => {
                let key = random_bytes::<32>().to_vec();
                match write_secret_file(path, &key) {
                    Ok(()) => key,
                    // Another process created it first: use theirs.
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        read_secret_file(path)?.unwrap_or_default()
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        let key: [u8; 32] = key.as_slice().try_into().map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} does not hold a 32-byte key", path.display()),
            )
        })?;
        Ok(LocalCipher::from_key(&key))
    }
}

/// The associated data: the context's pairs, length-prefixed so that no two
/// different contexts encode alike.
fn aad(context: &EncryptionContext) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in context {
        for part in [k, v] {
            out.extend_from_slice(&(part.len() as u32).to_be_bytes());
            out.extend_from_slice(part.as_bytes());
        }
    }
    out
}

#[async_trait]
impl KeyCipher for LocalCipher {
    async fn encrypt(
        &self,
        plaintext: &[u8],
        context: &EncryptionContext,
    ) -> CipherResult<Vec<u8>> {
        require_context(context)?;
        let nonce = random_bytes::<NONCE_LEN>();
        let sealed = self
            .aead
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: &aad(context),
                },
            )
            .map_err(|_| CipherError::Invalid("encryption failed".into()))?;
        let mut out = Vec::with_capacity(VERSION.len() + NONCE_LEN + sealed.len());
        out.extend_from_slice(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    async fn decrypt(
        &self,
        ciphertext: &[u8],
        context: &EncryptionContext,
    ) -> CipherResult<Vec<u8>> {
        require_context(context)?;
        let body = ciphertext
            .strip_prefix(VERSION.as_slice())
            .filter(|b| b.len() > NONCE_LEN)
            .ok_or(CipherError::Rejected)?;
        let (nonce, sealed) = body.split_at(NONCE_LEN);
        self.aead
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: &aad(context),
                },
            )
            .map_err(|_| CipherError::Rejected)
    }

    async fn ping(&self) -> CipherResult<()> {
        let context = EncryptionContext::from([("purpose".to_owned(), "health".to_owned())]);
        let sealed = self.encrypt(b"ping", &context).await?;
        match self.decrypt(&sealed, &context).await?.as_slice() {
            b"ping" => Ok(()),
            _ => Err(CipherError::Unavailable(
                "master key round trip failed".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contexts_encode_unambiguously() {
        let a = EncryptionContext::from([("ab".into(), "c".into())]);
        let b = EncryptionContext::from([("a".into(), "bc".into())]);
        assert_ne!(aad(&a), aad(&b));
    }
}
