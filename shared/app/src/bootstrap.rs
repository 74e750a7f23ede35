//! The deployment's root secret, what is derived from it, and the bootstrap
//! admin key.
//!
//! One random `signing_key` per deployment (Secrets Manager in AWS, generated
//! by the template; a data-directory file on a laptop) is the root of every
//! other server-side secret: each is an HMAC of the root under its own label.
//! A rotation keeps the value it replaced (`AWSPREVIOUS`; a `.previous`
//! file), so what must outlive one rotation (sealed cursors, legacy API-key
//! hashes) is checked under both roots, and what must not (the bootstrap
//! admin key) under the current one only. See `docs/SECRETS.md`.

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

/// The root secret as it stands: the current value, which must exist, and
/// the one the last rotation replaced, if kept.
pub struct Roots {
    pub current: SecretString,
    pub previous: Option<SecretString>,
}

/// Reads both roots (two reads, at once).
pub async fn roots(secrets: &dyn Secrets) -> Result<Roots, SecretsError> {
    let (current, previous) =
        futures::join!(signing_key(secrets), secrets.get_previous(SIGNING_KEY));
    let current = current?;
    // A previous value equal to the current one adds nothing.
    let previous = previous?.filter(|p| p.expose_secret() != current.expose_secret());
    Ok(Roots { current, previous })
}

/// One subkey under the current root and, if it is kept, the previous one:
/// what the current key made is checked under either.
#[derive(Clone, Copy)]
pub struct Derived {
    pub current: [u8; 32],
    pub previous: Option<[u8; 32]>,
}

impl Derived {
    /// The subkey `label` under each of `roots`.
    pub fn of(roots: &Roots, label: &str) -> Derived {
        Derived {
            current: derive(&roots.current, label),
            previous: roots.previous.as_ref().map(|p| derive(p, label)),
        }
    }

    /// The current subkey, then the previous one if kept.
    pub fn iter(&self) -> impl Iterator<Item = &[u8; 32]> {
        std::iter::once(&self.current).chain(self.previous.as_ref())
    }
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

    #[test]
    fn a_derived_key_has_a_previous_form_only_after_a_rotation() {
        let root = |s: &str| SecretString::from(s.to_owned());
        let fresh = Roots {
            current: root("a"),
            previous: None,
        };
        let rotated = Roots {
            current: root("b"),
            previous: Some(root("a")),
        };
        let before = Derived::of(&fresh, "label");
        let after = Derived::of(&rotated, "label");
        assert_eq!(
            before.iter().collect::<Vec<_>>(),
            [&derive(&root("a"), "label")]
        );
        assert_eq!(after.previous, Some(before.current));
        assert_eq!(
            after.iter().collect::<Vec<_>>(),
            [&after.current, &before.current]
        );
        assert_ne!(Derived::of(&rotated, "other").current, after.current);
    }
}
