//! `lambent rotate-secret`: rotates the embedded backend's root secret. A new
//! random root becomes current and the old one is kept as the previous one
//! (`signing-key.previous`), so API keys and cursors made before keep
//! working; the bootstrap admin key, derived from the current root only,
//! changes: the new one is saved to `admin-key` and printed, and the old one
//! stops working in every running `lambent serve` within its secret cache
//! time (`LAMBENT_SECRET_CACHE_SECS`). A second rotation drops the root kept
//! from the first. On AWS, `aws secretsmanager put-secret-value` does the same
//! (see docs/SECRETS.md).

use std::path::Path;

use anyhow::Context;
use lambent_app::bootstrap::{self, SIGNING_KEY};
use lambent_app::config::Config;
use lambent_core::secret::{ExposeSecret, SecretString};
use lambent_embedded::FileSecrets;

use crate::admin_key::{self, ADMIN_KEY_FILE};

/// Rotates the root secret of the data directory `data_dir`; returns the
/// new bootstrap admin key (`None` when `config` turns it off).
pub fn rotate(data_dir: &Path, config: &Config) -> anyhow::Result<Option<SecretString>> {
    let secrets = FileSecrets::new(data_dir.to_path_buf());
    let new = bootstrap::new_signing_key();
    secrets.rotate(SIGNING_KEY, &new).with_context(|| {
        format!(
            "rotating the root secret in {} (has `lambent serve` run there?)",
            data_dir.display()
        )
    })?;
    if !config.bootstrap_admin {
        admin_key::forget(data_dir)?;
        return Ok(None);
    }
    let key = bootstrap::admin_api_key(&new);
    admin_key::save(data_dir, &key)?;
    Ok(Some(key))
}

/// `lambent rotate-secret`: rotates, then says what changed.
pub fn run(data_dir: &Path, config: &Config) -> anyhow::Result<()> {
    let admin = rotate(data_dir, config)?;
    println!(
        "Root secret rotated in {}; the previous one is kept for API-key hashes and cursors. \
         Running servers use the new one within {} s (LAMBENT_SECRET_CACHE_SECS).",
        data_dir.display(),
        config.secret_cache.as_secs()
    );
    match admin {
        Some(key) => println!(
            "New bootstrap admin API key (the old one is revoked; saved to {}):\n{}",
            data_dir.join(ADMIN_KEY_FILE).display(),
            key.expose_secret()
        ),
        None => println!("The bootstrap admin key is off (LAMBENT_BOOTSTRAP_ADMIN=off)."),
    }
    Ok(())
}
