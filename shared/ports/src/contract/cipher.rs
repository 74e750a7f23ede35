//! The key-cipher contract (see `crate::cipher`).

use crate::cipher::*;

fn context(pairs: &[(&str, &str)]) -> EncryptionContext {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub async fn round_trip_with_its_context(cipher: &dyn KeyCipher) {
    let secret = b"sk-ant-api03-a-provider-key-that-must-never-leak";
    let ctx = context(&[("owner", "usr_1"), ("provider", "prv_1")]);
    let sealed = cipher.encrypt(secret, &ctx).await.unwrap();
    assert!(
        !sealed.windows(secret.len()).any(|w| w == secret),
        "ciphertext contains the plaintext"
    );
    assert_eq!(cipher.decrypt(&sealed, &ctx).await.unwrap(), secret);
    // Two encryptions of the same key differ (random nonce / IV).
    assert_ne!(cipher.encrypt(secret, &ctx).await.unwrap(), sealed);
}

pub async fn another_context_is_refused(cipher: &dyn KeyCipher) {
    let ctx = context(&[("owner", "usr_1"), ("provider", "prv_1")]);
    let sealed = cipher.encrypt(b"secret", &ctx).await.unwrap();
    for wrong in [
        context(&[("owner", "usr_2"), ("provider", "prv_1")]),
        context(&[("owner", "usr_1"), ("provider", "prv_2")]),
        context(&[("owner", "usr_1")]),
        context(&[("owner", "usr_1"), ("provider", "prv_1"), ("extra", "x")]),
    ] {
        let err = cipher.decrypt(&sealed, &wrong).await.unwrap_err();
        assert!(matches!(err, CipherError::Rejected), "{wrong:?}: {err:?}");
    }
}

pub async fn tampered_or_foreign_ciphertext_is_refused(cipher: &dyn KeyCipher) {
    let ctx = context(&[("owner", "usr_1")]);
    let mut sealed = cipher.encrypt(b"secret", &ctx).await.unwrap();
    let last = sealed.len() - 1;
    sealed[last] ^= 0x01;
    let err = cipher.decrypt(&sealed, &ctx).await.unwrap_err();
    assert!(matches!(err, CipherError::Rejected), "{err:?}");
    let err = cipher
        .decrypt(b"not a ciphertext at all", &ctx)
        .await
        .unwrap_err();
    assert!(matches!(err, CipherError::Rejected), "{err:?}");
}

pub async fn an_empty_context_is_refused(cipher: &dyn KeyCipher) {
    let err = cipher
        .encrypt(b"secret", &EncryptionContext::new())
        .await
        .unwrap_err();
    assert!(matches!(err, CipherError::Invalid(_)), "{err:?}");
    cipher.ping().await.unwrap();
}
