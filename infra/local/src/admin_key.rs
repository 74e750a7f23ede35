//! The bootstrap admin key. On a laptop: created with the deployment's root
//! secret on first start, printed once, kept in `<data dir>/admin-key` (0600)
//! and reused on every later start; `lambent rotate-secret` replaces it. In
//! AWS: derived from the stack's secret by `lambent admin-key --secret-id`.
//! It is derived from the current root only, so a rotation revokes the old
//! one; `LAMBENT_BOOTSTRAP_ADMIN=off` turns it off altogether.

use std::path::{Path, PathBuf};

use lambent_app::bootstrap::{self, SIGNING_KEY};
use lambent_app::state::State;
use lambent_core::secret::{ExposeSecret, SecretString};
use lambent_embedded::{read_secret_file, write_secret_file, FileSecrets};

pub const ADMIN_KEY_FILE: &str = "admin-key";
/// The admin key file's name as a secret of the data directory.
const ADMIN_KEY_NAME: &str = "admin_key";

/// What start-up did about the admin key.
pub enum AdminKey {
    /// Created now, or replaced (the root secret was rotated): print it once.
    Created { path: PathBuf, key: SecretString },
    /// Already saved at `path`, or switched off (no file then).
    Existing { path: PathBuf },
}

/// Creates the embedded root secret if this is the first start.
pub fn ensure_embedded_signing_key(data_dir: &Path) -> anyhow::Result<()> {
    let path = data_dir.join(SIGNING_KEY.replace('_', "-"));
    if read_secret_file(&path)?.is_none() {
        let key = bootstrap::new_signing_key();
        match write_secret_file(&path, key.expose_secret().as_bytes()) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Derives the admin key from the deployment's current root secret and
/// saves it in the data directory, the first time and after a rotation
/// (the key saved before no longer works). Switched off, no key is kept.
pub async fn ensure(state: &State, data_dir: &Path) -> anyhow::Result<AdminKey> {
    let path = data_dir.join(ADMIN_KEY_FILE);
    if !state.config.bootstrap_admin {
        forget(data_dir)?;
        tracing::info!("bootstrap admin key off (LAMBENT_BOOTSTRAP_ADMIN=off)");
        return Ok(AdminKey::Existing { path });
    }
    let root = bootstrap::signing_key(state.secrets.as_ref()).await?;
    let key = bootstrap::admin_api_key(&root);
    match read_secret_file(&path)? {
        Some(saved) if saved == key.expose_secret().as_bytes() => Ok(AdminKey::Existing { path }),
        Some(_) => {
            tracing::warn!(
                path = %path.display(),
                "the root secret was rotated: the saved bootstrap admin key is replaced"
            );
            save(data_dir, &key)?;
            Ok(AdminKey::Created { path, key })
        }
        None => {
            write_secret_file(&path, key.expose_secret().as_bytes())?;
            Ok(AdminKey::Created { path, key })
        }
    }
}

/// Saves `key` as the data directory's admin key, replacing the file
/// atomically.
pub fn save(data_dir: &Path, key: &SecretString) -> anyhow::Result<()> {
    FileSecrets::new(data_dir.to_path_buf()).replace(ADMIN_KEY_NAME, key)?;
    Ok(())
}

/// Removes the data directory's admin key file, if any.
pub fn forget(data_dir: &Path) -> anyhow::Result<()> {
    FileSecrets::new(data_dir.to_path_buf()).remove(ADMIN_KEY_NAME)?;
    Ok(())
}

/// The admin key of a deployment whose root secret is the Secrets Manager
/// secret `secret_id` (the stack output `BootstrapSecretArn`): derived from
/// its current version, so after `put-secret-value` it is the new key.
pub async fn from_aws_secret(secret_id: &str) -> anyhow::Result<SecretString> {
    let sdk = lambent_aws::load_sdk_config().await;
    let secrets = lambent_aws::SecretsManagerSecrets::from_conf(&sdk, secret_id);
    let root = bootstrap::signing_key(&secrets).await?;
    Ok(bootstrap::admin_api_key(&root))
}
