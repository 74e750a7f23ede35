//! API keys: `lmb_<key id>_<secret>`. The secret is 256 bits from the OS
//! CSPRNG; only a hash of it is stored, and checks compare hashes in
//! constant time.
//!
//! The stored hash is an unkeyed SHA-256 of the key ID and the secret
//! ([`stored_hash`], tagged with a version byte): a 256-bit random secret
//! needs no server-side key to be safe at rest, so rotating the deployment's
//! root secret never touches a key. Keys made before that were stored as an
//! HMAC under a subkey of the root ([`legacy_hash`], 32 bytes, untagged);
//! they verify under the current or the previous root's subkey and are
//! re-hashed to the stored form on their first successful use.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::ids;
use crate::secret::{ExposeSecret, SecretString};

/// Every API key starts with this.
pub const KEY_PREFIX: &str = "lmb_";
/// Prefix of the IDs of API keys (`key_...`).
pub const KEY_ID_PREFIX: &str = <crate::ids::KeyId as crate::ids::TypedId>::PREFIX;

/// The first byte of a hash in the stored form (a legacy hash has none).
const STORED_V2: u8 = 2;
/// Bytes of a legacy keyed hash: an HMAC-SHA256, untagged.
const LEGACY_LEN: usize = 32;

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
    /// What is stored: [`stored_hash`].
    pub hash: Vec<u8>,
    pub last4: String,
}

/// Mints a key; its hash is in the stored form, which depends on no
/// server-side secret.
pub fn mint() -> NewKey {
    let key_id = ids::new_id(KEY_ID_PREFIX);
    let secret = ids::base32(&ids::random_bytes::<32>());
    let hash = stored_hash(&key_id, &secret);
    let last4 = secret[secret.len() - 4..].to_owned();
    let full = SecretString::from(format!("{KEY_PREFIX}{key_id}_{secret}"));
    NewKey {
        key_id,
        full,
        hash,
        last4,
    }
}

/// The stored form of a key: a version byte, then SHA-256 over a fixed
/// label, the key ID and the secret. The ID is bound in, so a hash cannot be
/// moved to another key. Unkeyed: the secret's 256 random bits are what an
/// attacker holding the table would have to guess.
pub fn stored_hash(key_id: &str, secret: &str) -> Vec<u8> {
    let mut digest = Sha256::new();
    digest.update(b"lambent/v2/api-key\n");
    digest.update(key_id.as_bytes());
    digest.update(b"\n");
    digest.update(secret.as_bytes());
    let mut stored = Vec::with_capacity(33);
    stored.push(STORED_V2);
    stored.extend_from_slice(&digest.finalize());
    stored
}

/// The legacy stored form: HMAC-SHA256 under a subkey of the deployment's
/// root secret, over the key ID and the secret. Only verified, never written.
pub fn legacy_hash(hash_key: &[u8; 32], key_id: &str, secret: &str) -> [u8; 32] {
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(hash_key) else {
        // A 32-byte key is always accepted by HMAC.
        return [0u8; 32];
    };
    mac.update(key_id.as_bytes());
    mac.update(b"\n");
    mac.update(secret.as_bytes());
    mac.finalize().into_bytes().into()
}

/// How a presented key matched its stored hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verified {
    /// Against the stored form: nothing more to do.
    Stored,
    /// Against a legacy keyed hash: re-hash it to [`stored_hash`].
    Legacy,
}

/// Checks a presented key against its stored hash, in constant time. A
/// legacy hash is tried under each of `legacy_keys` (the subkey of the
/// current root, then of the previous one).
pub fn verify<'a>(
    presented: &PresentedKey<'_>,
    stored: &[u8],
    legacy_keys: impl IntoIterator<Item = &'a [u8; 32]>,
) -> Option<Verified> {
    if stored.first() == Some(&STORED_V2) && stored.len() == 33 {
        let computed = stored_hash(presented.key_id, presented.secret);
        return bool::from(computed.as_slice().ct_eq(stored)).then_some(Verified::Stored);
    }
    if stored.len() != LEGACY_LEN {
        return None;
    }
    // Every key is tried, whichever matches: the time taken says nothing.
    let matched = legacy_keys.into_iter().fold(false, |matched, key| {
        let computed = legacy_hash(key, presented.key_id, presented.secret);
        matched | bool::from(computed.as_slice().ct_eq(stored))
    });
    matched.then_some(Verified::Legacy)
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
        let key = mint();
        let full = key.full.expose_secret().to_owned();
        let parsed = parse(&full).unwrap();
        assert_eq!(parsed.key_id, key.key_id);
        // The stored form needs no server-side key, under any root.
        assert_eq!(verify(&parsed, &key.hash, &[]), Some(Verified::Stored));
        assert_eq!(
            verify(&parsed, &key.hash, &[[8u8; 32]]),
            Some(Verified::Stored)
        );
        // One changed character of the secret fails.
        let mut wrong = full.clone();
        let last = wrong.pop().unwrap();
        wrong.push(if last == 'a' { 'b' } else { 'a' });
        assert_eq!(verify(&parse(&wrong).unwrap(), &key.hash, &[]), None);
        // The hash is bound to its key ID.
        let moved = PresentedKey {
            key_id: "key_other",
            secret: parsed.secret,
        };
        assert_eq!(verify(&moved, &key.hash, &[]), None);
        // 256-bit secret in base32.
        assert_eq!(parsed.secret.len(), 52);
        assert!(full.ends_with(&key.last4));
        // A truncated or foreign hash never verifies.
        assert_eq!(verify(&parsed, &key.hash[..32], &[]), None);
        assert_eq!(verify(&parsed, &[], &[[8u8; 32]]), None);
    }

    #[test]
    fn a_legacy_keyed_hash_verifies_under_any_kept_root_key_only() {
        let key = mint();
        let parsed = parse(key.full.expose_secret()).unwrap();
        let (old_root, new_root, gone) = ([7u8; 32], [8u8; 32], [9u8; 32]);
        let legacy = legacy_hash(&old_root, parsed.key_id, parsed.secret);
        // Current root first, or previous: either verifies, as legacy.
        assert_eq!(
            verify(&parsed, &legacy, &[old_root]),
            Some(Verified::Legacy)
        );
        assert_eq!(
            verify(&parsed, &legacy, &[new_root, old_root]),
            Some(Verified::Legacy)
        );
        // Its root no longer kept: refused.
        assert_eq!(verify(&parsed, &legacy, &[new_root, gone]), None);
        assert_eq!(verify(&parsed, &legacy, &[]), None);
        // The wrong secret under the right root: refused.
        let wrong = PresentedKey {
            key_id: parsed.key_id,
            secret: "AAAA",
        };
        assert_eq!(verify(&wrong, &legacy, &[old_root]), None);
        // The upgrade target differs from the legacy form and verifies as stored.
        let upgraded = stored_hash(parsed.key_id, parsed.secret);
        assert_eq!(upgraded, key.hash);
        assert_ne!(upgraded.as_slice(), legacy.as_slice());
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
