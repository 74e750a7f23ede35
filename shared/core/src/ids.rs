//! Identifiers and random secrets, from the operating system's CSPRNG.
//!
//! IDs carry a type prefix (`ses_`, `msg_`, `run_` ...) and 128 random bits.
//! Time-ordered IDs (ULID-like: 48-bit milliseconds, then 80 random bits) sort
//! by creation time, so they serve as sort keys for history pages.

/// The prefix of agent IDs (`agt_…`), which workflow definitions name.
pub const AGENT_PREFIX: &str = "agt";

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

/// A new time-ordered ID: 48-bit milliseconds then 80 random bits.
pub fn new_sortable_id(prefix: &str) -> String {
    sortable_id_at(prefix, crate::time::now_epoch_millis())
}

pub fn sortable_id_at(prefix: &str, epoch_millis: i64) -> String {
    let mut bytes = [0u8; 16];
    let ms = (epoch_millis.max(0) as u64).to_be_bytes();
    bytes[..6].copy_from_slice(&ms[2..]);
    bytes[6..].copy_from_slice(&random_bytes::<10>());
    format!("{prefix}_{}", base32(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
