//! Identifiers and random secrets, from the operating system's CSPRNG.
//!
//! IDs carry a type prefix (`ses_`, `msg_`, `run_` ...) and 128 random bits.
//! Time-ordered IDs (ULID-like: 48-bit milliseconds, then 80 random bits) sort
//! by creation time, so they serve as sort keys for history pages. Each kind
//! of ID has a type ([`SessionId`], [`AgentId`]...), parsed once at the edge.

use crate::error::Error;

/// Crockford's base32 alphabet, lower case: sortable, no ambiguous letters.
const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// `n` random bytes from the OS. The OS RNG failing is not recoverable: there
/// is no safe fallback for key material, so it aborts the request loudly.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    if let Err(e) = getrandom::fill(&mut buf) {
        // Without randomness no ID or key is safe to hand out.
        tracing::error!(error = %e, "operating system RNG failed");
        std::process::abort();
    }
    buf
}

/// Base32 (Crockford, lower case) of a big-endian bit string, most
/// significant bits first, so the text sorts like the number.
pub fn base32(bytes: &[u8]) -> String {
    let total_bits = bytes.len() * 8;
    let chars = total_bits.div_ceil(5);
    let mut out = String::with_capacity(chars);
    // Left-pad to a multiple of 5 bits so the first character carries the top bits.
    let pad = chars * 5 - total_bits;
    for i in 0..chars {
        let mut v = 0u8;
        for b in 0..5 {
            let bit = (i * 5 + b) as isize - pad as isize;
            let set = bit >= 0 && {
                let bit = bit as usize;
                bytes[bit / 8] & (0x80 >> (bit % 8)) != 0
            };
            v = (v << 1) | u8::from(set);
        }
        out.push(ALPHABET[v as usize] as char);
    }
    out
}

/// A new random ID: `prefix_` followed by 128 random bits (26 characters).
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", base32(&random_bytes::<16>()))
}

/// A new time-ordered ID: 48-bit milliseconds then 80 random bits,
/// greater than every one this process made before.
pub fn new_sortable_id(prefix: &str) -> String {
    new_sortable_ids(prefix, 1).remove(0)
}

/// `n` new time-ordered IDs, in increasing order and greater than every one
/// this process made before: within one millisecond an ID is the last
/// one's bits plus one (as monotonic ULIDs are), so IDs made one after
/// another sort in that order (a tool's result, then the next reply; two
/// audit entries) without taking the clock ahead of time.
pub fn new_sortable_ids(prefix: &str, n: usize) -> Vec<String> {
    use std::sync::Mutex;
    /// The last ID made: its millisecond and random bits (80 of 128 used).
    static LAST: Mutex<(u64, u128)> = Mutex::new((0, 0));
    const RANDOM_MAX: u128 = (1 << 80) - 1;
    let now = crate::time::now_epoch_millis().max(0) as u64;
    let mut last = LAST.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut made = Vec::with_capacity(n);
    for _ in 0..n {
        let (ms, bits) = if now > last.0 {
            (now, fresh_random_bits())
        } else if last.1 < RANDOM_MAX {
            (last.0, last.1 + 1)
        } else {
            (last.0 + 1, fresh_random_bits())
        };
        *last = (ms, bits);
        made.push(id_of(prefix, ms, bits));
    }
    made
}

/// 80 random bits, the top one clear: an increment within the millisecond
/// never runs out.
fn fresh_random_bits() -> u128 {
    let mut bits = [0u8; 16];
    bits[6..].copy_from_slice(&random_bytes::<10>());
    bits[6] &= 0x7f;
    u128::from_be_bytes(bits)
}

fn id_of(prefix: &str, ms: u64, bits: u128) -> String {
    let mut bytes = bits.to_be_bytes();
    bytes[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    format!("{prefix}_{}", base32(&bytes))
}

pub fn sortable_id_at(prefix: &str, epoch_millis: i64) -> String {
    let mut bytes = [0u8; 16];
    let ms = (epoch_millis.max(0) as u64).to_be_bytes();
    bytes[..6].copy_from_slice(&ms[2..]);
    bytes[6..].copy_from_slice(&random_bytes::<10>());
    format!("{prefix}_{}", base32(&bytes))
}

/// An ID of one kind of entity, parsed once where it enters (a path, a
/// body, a queue message): past that, it is known to be well formed.
pub trait TypedId: Sized + std::ops::Deref<Target = str> {
    /// The type prefix (`ses`, `agt`...).
    const PREFIX: &'static str;
    /// What it names, for "<what> not found".
    const WHAT: &'static str;

    /// `raw` if it is an ID of this kind; otherwise 404 `<what> not found`
    /// (an ID that cannot exist is as unknown as one that does not).
    fn parse(raw: &str) -> Result<Self, Error>;
}

/// Whether `raw` is `<prefix>_` then 1 to 64 letters and digits.
pub fn is_id(raw: &str, prefix: &str) -> bool {
    raw.strip_prefix(prefix)
        .and_then(|r| r.strip_prefix('_'))
        .is_some_and(|r| {
            !r.is_empty() && r.len() <= 64 && r.bytes().all(|b| b.is_ascii_alphanumeric())
        })
}

macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl TypedId for $name {
            const PREFIX: &'static str = $prefix;
            const WHAT: &'static str = $what;

            fn parse(raw: &str) -> Result<Self, Error> {
                if is_id(raw, $prefix) {
                    Ok($name(raw.to_owned()))
                } else {
                    Err(Error::NotFound($what))
                }
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;

            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

typed_id!(/** A user: `usr_…`. */ UserId, "usr", "user");
typed_id!(/** An API key: `key_…` (the ID part of `lmb_<key id>_<secret>`). */ KeyId, "key", "key");
typed_id!(/** A provider: `prv_…`. */ ProviderId, "prv", "provider");
typed_id!(/** An agent: `agt_…`. */ AgentId, "agt", "agent");
typed_id!(/** A session: `ses_…`. */ SessionId, "ses", "session");
typed_id!(/** A message: `msg_…`. */ MessageId, "msg", "message");
typed_id!(/** A workflow: `wfl_…`. */ WorkflowId, "wfl", "workflow");
typed_id!(/** A workflow run: `run_…`. */ RunId, "run", "run");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_ids_parse_their_own_kind_only() {
        let id = SessionId::parse("ses_01abc").unwrap();
        assert_eq!(&*id, "ses_01abc");
        for bad in ["agt_01abc", "ses_", "ses01abc", "ses_01-abc", "", "ses_ä"] {
            assert!(
                matches!(SessionId::parse(bad), Err(Error::NotFound("session"))),
                "{bad:?}"
            );
        }
        let long = format!("run_{}", "a".repeat(65));
        assert!(RunId::parse(&long).is_err());
        assert!(RunId::parse(&long[..68]).is_ok());
    }

    #[test]
    fn ids_are_prefixed_and_carry_128_bits() {
        let id = new_id("ses");
        assert!(id.starts_with("ses_"));
        assert_eq!(id.len(), 4 + 26);
        assert_ne!(new_id("ses"), new_id("ses"));
    }

    #[test]
    fn base32_sorts_like_the_number() {
        assert_eq!(base32(&[0x00]), "00");
        assert_eq!(base32(&[0xff]), "7z");
        assert_eq!(base32(&[0x00, 0x01]), "0001");
        let a = base32(&1_000u64.to_be_bytes());
        let b = base32(&1_001u64.to_be_bytes());
        let c = base32(&u64::MAX.to_be_bytes());
        assert!(a < b && b < c);
    }

    #[test]
    fn sortable_ids_order_by_time() {
        let earlier = sortable_id_at("msg", 1_700_000_000_000);
        let later = sortable_id_at("msg", 1_700_000_000_001);
        assert!(earlier < later, "{earlier} !< {later}");
    }

    /// Thousands of IDs within a few milliseconds, from several threads:
    /// each thread's sort in the order it made them, and none repeats.
    #[test]
    fn sortable_ids_made_one_after_another_sort_in_that_order() {
        let threads: Vec<_> = (0..4)
            .map(|_| std::thread::spawn(|| (0..5_000).map(|_| new_sortable_id("aud")).collect()))
            .collect();
        let mut all = std::collections::BTreeSet::new();
        for thread in threads {
            let made: Vec<String> = thread.join().unwrap();
            for pair in made.windows(2) {
                assert!(pair[0] < pair[1], "{} !< {}", pair[0], pair[1]);
            }
            all.extend(made);
        }
        assert_eq!(all.len(), 20_000);
        let batch = new_sortable_ids("msg", 3);
        assert!(batch[0] < batch[1] && batch[1] < batch[2], "{batch:?}");
    }
}
