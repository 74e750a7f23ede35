//! API keys: `lmb_<key id>_<secret>`. The secret is 256 bits from the OS
//! CSPRNG; only a keyed hash of it is stored, and checks compare hashes in
//! constant time.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::ids;
use crate::secret::{ExposeSecret, SecretString};

/// Every API key starts with this.
pub const KEY_PREFIX: &str = "lmb_";
/// Prefix of the IDs of API keys (`key_...`).
pub const KEY_ID_PREFIX: &str = <crate::ids::KeyId as crate::ids::TypedId>::PREFIX;

/// A key as presented by a client, split into its ID and its secret.
pub struct PresentedKey<'a> {
    pub key_id: &'a str,
    pub secret: &'a str,
}

/// Splits `lmb_<key id>_<secret>`. Key IDs may contain `_`; secrets never do.
pub fn parse(raw: &str) -> Option<PresentedKey<'_>> {
    let rest = raw.strip_prefix(KEY_PREFIX)?;
    let (key_id, secret) = rest.rsplit_once('_')?;
    let plausible = |s: &str| {
        !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    };
    (plausible(key_id) && plausible(secret) && !secret.contains('_'))
        .then_some(PresentedKey { key_id, secret })
}

/// A freshly minted key: shown to its owner once, then only its hash exists.
pub struct NewKey {
    pub key_id: String,
    pub full: SecretString,
    pub hash: [u8; 32],
    pub last4: String,
}

/// Mints a key under `hash_key`.
pub fn mint(hash_key: &[u8; 32]) -> NewKey {
    let key_id = ids::new_id(KEY_ID_PREFIX);
    let secret = ids::base32(&ids::random_bytes::<32>());
    let hash = hash(hash_key, &key_id, &secret);
    let last4 = secret[secret.len() - 4..].to_owned();
    let full = SecretString::from(format!("{KEY_PREFIX}{key_id}_{secret}"));
    NewKey {
        key_id,
        full,
        hash,
        last4,
    }
}

/// The stored form of a key: HMAC-SHA256 under a deployment subkey, binding
/// the secret to its key ID so a hash cannot be moved to another key.
pub fn hash(hash_key: &[u8; 32], key_id: &str, secret: &str) -> [u8; 32] {
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(hash_key) else {
        // A 32-byte key is always accepted by HMAC.
        return [0u8; 32];
    };
    mac.update(key_id.as_bytes());
    mac.update(b"\n");
    mac.update(secret.as_bytes());
    mac.finalize().into_bytes().into()
}

/// Constant-time comparison of a presented secret's hash with the stored one.
pub fn verify(hash_key: &[u8; 32], presented: &PresentedKey<'_>, stored: &[u8]) -> bool {
    let computed = hash(hash_key, presented.key_id, presented.secret);
    bool::from(computed.as_slice().ct_eq(stored))
}

/// Constant-time comparison of two whole keys (the bootstrap admin key).
pub fn same_key(presented: &str, expected: &SecretString) -> bool {
    bool::from(
        presented
            .as_bytes()
            .ct_eq(expected.expose_secret().as_bytes()),
    )
}

/// The public start of a key: `lmb_<key id>`.
pub fn prefix(key_id: &str) -> String {
    format!("{KEY_PREFIX}{key_id}")
}

/// What a listing shows of a key: enough to recognise it, never enough to use it.
pub fn masked(key_id: &str, last4: &str) -> String {
    format!("{KEY_PREFIX}{key_id}_…{last4}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minted_key_parses_and_verifies_and_nothing_else_does() {
        let hash_key = [7u8; 32];
        let key = mint(&hash_key);
        let full = key.full.expose_secret().to_owned();
        let parsed = parse(&full).unwrap();
        assert_eq!(parsed.key_id, key.key_id);
        assert!(verify(&hash_key, &parsed, &key.hash));
        assert!(!verify(&[8u8; 32], &parsed, &key.hash));
        // One changed character of the secret fails.
        let mut wrong = full.clone();
        let last = wrong.pop().unwrap();
        wrong.push(if last == 'a' { 'b' } else { 'a' });
        assert!(!verify(&hash_key, &parse(&wrong).unwrap(), &key.hash));
        // The hash is bound to its key ID.
        let moved = PresentedKey {
            key_id: "key_other",
            secret: parsed.secret,
        };
        assert!(!verify(&hash_key, &moved, &key.hash));
        // 256-bit secret in base32.
        assert_eq!(parsed.secret.len(), 52);
        assert!(full.ends_with(&key.last4));
    }

    #[test]
    fn malformed_keys_do_not_parse() {
        for raw in [
            "",
            "lmb_",
            "lmb_key",
            "sk-abc",
            "lmb__secret",
            "lmb_key_1_",
            "lmb_key 1_abc",
        ] {
            assert!(parse(raw).is_none(), "{raw:?}");
        }
        assert!(parse("lmb_admin_abc").is_some());
    }
}
