//! The secrets contract (see `crate::secrets`). The adapter under
//! test holds `signing_key` = [`SIGNING_KEY_VALUE`], never rotated.

use crate::secrets::Secrets;
use lambent_core::secret::ExposeSecret;

pub const SIGNING_KEY_VALUE: &str = "contract-test-signing-key-0123456789";

pub async fn reads_a_set_secret_and_none_for_an_unset_one(secrets: &dyn Secrets) {
    let got = secrets.get("signing_key").await.unwrap();
    assert_eq!(
        got.as_ref().map(|s| s.expose_secret()),
        Some(SIGNING_KEY_VALUE)
    );
    assert!(secrets.get("never_set").await.unwrap().is_none());
    // Never rotated: no previous value, and that is not an error.
    assert!(secrets.get_previous("signing_key").await.unwrap().is_none());
    assert!(secrets.get_previous("never_set").await.unwrap().is_none());
    secrets.ping().await.unwrap();
    // Secrets never show in Debug output.
    let debug = format!("{got:?}");
    assert!(!debug.contains(SIGNING_KEY_VALUE), "{debug}");
}
