//! Pagination cursors as clients see them: opaque and tamper-proof. The
//! store's position is encrypted and authenticated (AES-256-GCM) under a key
//! derived from the deployment's root secret, with the cursor's scope (route,
//! caller, filters) as associated data, so a cursor works only for the listing
//! that issued it. Anything else is a 400. A cursor is sealed under the
//! current root's key and opened under it or the previous root's, so one
//! rotation of the root never breaks a listing in progress.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use lambent_app::bootstrap::Derived;
use lambent_core::Error;

use lambent_core::ids;
use lambent_ports::StoreCursor;

const NONCE_LEN: usize = 12;
/// Longest cursor accepted, so a huge query string is refused before decoding.
const MAX_CURSOR_LEN: usize = 1024;

/// Seals a store position for the listing identified by `scope`, under the
/// current root's key.
pub fn seal(keys: &Derived, scope: &str, position: &StoreCursor) -> String {
    let cipher = Aes256Gcm::new((&keys.current).into());
    let nonce = ids::random_bytes::<NONCE_LEN>();
    let payload = Payload {
        msg: position.0.as_bytes(),
        aad: scope.as_bytes(),
    };
    match cipher.encrypt(Nonce::from_slice(&nonce), payload) {
        Ok(sealed) => {
            let mut bytes = nonce.to_vec();
            bytes.extend_from_slice(&sealed);
            URL_SAFE_NO_PAD.encode(bytes)
        }
        // Encryption of a short message cannot fail; an empty cursor would
        // only restart the listing.
        Err(_) => String::new(),
    }
}

/// Opens a cursor issued by [`seal`] for the same scope, under the current
/// root's key or the previous one's.
pub fn open(keys: &Derived, scope: &str, cursor: &str) -> Result<StoreCursor, Error> {
    let invalid = || Error::BadRequest("cursor: not a cursor issued for this listing".into());
    if cursor.len() > MAX_CURSOR_LEN {
        return Err(invalid());
    }
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
    if bytes.len() <= NONCE_LEN {
        return Err(invalid());
    }
    let (nonce, sealed) = bytes.split_at(NONCE_LEN);
    let plain = keys
        .iter()
        .find_map(|key| {
            Aes256Gcm::new(key.into())
                .decrypt(
                    Nonce::from_slice(nonce),
                    Payload {
                        msg: sealed,
                        aad: scope.as_bytes(),
                    },
                )
                .ok()
        })
        .ok_or_else(invalid)?;
    String::from_utf8(plain)
        .map(StoreCursor)
        .map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(current: u8, previous: Option<u8>) -> Derived {
        Derived {
            current: [current; 32],
            previous: previous.map(|p| [p; 32]),
        }
    }

    #[test]
    fn a_cursor_opens_only_in_its_scope_and_only_untouched() {
        let key = keys(3, None);
        let position = StoreCursor("USER#usr_1".into());
        let sealed = seal(&key, "users:usr_admin", &position);
        assert_eq!(open(&key, "users:usr_admin", &sealed).unwrap(), position);
        assert!(open(&key, "users:usr_other", &sealed).is_err());
        assert!(open(&keys(4, None), "users:usr_admin", &sealed).is_err());
        let mut forged = sealed.clone().into_bytes();
        let i = forged.len() / 2;
        forged[i] = if forged[i] == b'A' { b'B' } else { b'A' };
        let forged = String::from_utf8(forged).unwrap();
        assert!(open(&key, "users:usr_admin", &forged).is_err());
        assert!(open(&key, "users:usr_admin", "not a cursor!").is_err());
        assert!(!sealed.contains("USER"));
    }

    #[test]
    fn a_cursor_survives_one_rotation_of_the_root() {
        let position = StoreCursor("USER#usr_1".into());
        let before = seal(&keys(3, None), "users", &position);
        // Rotated once: the old key is the previous one, and still opens it.
        let once = keys(4, Some(3));
        assert_eq!(open(&once, "users", &before).unwrap(), position);
        // New cursors are sealed under the current key only.
        let after = seal(&once, "users", &position);
        assert!(open(&keys(3, None), "users", &after).is_err());
        assert_eq!(open(&keys(4, None), "users", &after).unwrap(), position);
        // Rotated twice: the first root is gone.
        assert!(open(&keys(5, Some(4)), "users", &before).is_err());
        assert_eq!(open(&keys(5, Some(4)), "users", &after).unwrap(), position);
    }
}
