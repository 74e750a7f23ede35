//! The deployment's root secret and the bootstrap admin key derived from it.
//!
//! One random `signing_key` per deployment (Secrets Manager in AWS, generated
//! by the template; a data-directory file on a laptop) is the root of every
//! other server-side secret: each is an HMAC of the root under its own label,
//! so rotating the root rotates them all.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use lambent_core::ids;
use lambent_core::secret::{ExposeSecret, SecretString};
use lambent_ports::secrets::{Secrets, SecretsError};

/// The name of the root secret in the secrets port.
pub const SIGNING_KEY: &str = "signing_key";
/// The key ID of the bootstrap admin key (`lmb_<id>_<secret>`).
pub const ADMIN_KEY_ID: &str = "admin";

/// A fresh root secret: 256 bits from the OS CSPRNG, as text.
pub fn new_signing_key() -> SecretString {
    SecretString::from(ids::base32(&ids::random_bytes::<32>()))
}

/// A subkey for one purpose: HMAC-SHA256(root, label).
pub fn derive(root: &SecretString, label: &str) -> [u8; 32] {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(root.expose_secret().as_bytes()) {
        Ok(mac) => mac,
        Err(_) => return [0u8; 32],
    };
    mac.update(label.as_bytes());
    mac.finalize().into_bytes().into()
}

/// The bootstrap admin API key of the deployment whose root is `root`.
pub fn admin_api_key(root: &SecretString) -> SecretString {
    let secret = ids::base32(&derive(root, "lambent/v1/bootstrap-admin-key"));
    SecretString::from(format!("lmb_{ADMIN_KEY_ID}_{secret}"))
}

/// The deployment's root secret, which must exist.
pub async fn signing_key(secrets: &dyn Secrets) -> Result<SecretString, SecretsError> {
    secrets
        .get(SIGNING_KEY)
        .await?
        .ok_or_else(|| SecretsError::Missing(SIGNING_KEY.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_admin_key_is_stable_per_root_and_differs_between_roots() {
        let a = SecretString::from("root-a".to_owned());
        let b = SecretString::from("root-b".to_owned());
        let key = admin_api_key(&a);
        assert_eq!(key.expose_secret(), admin_api_key(&a).expose_secret());
        assert_ne!(key.expose_secret(), admin_api_key(&b).expose_secret());
        assert!(key.expose_secret().starts_with("lmb_admin_"));
        // 256 bits of HMAC output, base32: 52 characters.
        assert_eq!(key.expose_secret().len(), "lmb_admin_".len() + 52);
    }
}
