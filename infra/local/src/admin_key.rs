//! The bootstrap admin key. On a laptop: created with the deployment's root
//! secret on first start, printed once, kept in `<data dir>/admin-key` (0600)
//! and reused on every later start. In AWS: derived from the stack's secret
//! by `lambent admin-key --secret-id`.

use std::path::{Path, PathBuf};

use lambent_app::bootstrap::{self, SIGNING_KEY};
use lambent_app::state::State;
use lambent_core::secret::{ExposeSecret, SecretString};
use lambent_embedded::{read_secret_file, write_secret_file};

pub const ADMIN_KEY_FILE: &str = "admin-key";

/// What start-up did about the admin key.
pub enum AdminKey {
    /// Created now: print it once.
    Created { path: PathBuf, key: SecretString },
    /// Already saved at `path`.
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

/// Derives the admin key from the deployment's root secret and saves it in
/// the data directory the first time.
pub async fn ensure(state: &State, data_dir: &Path) -> anyhow::Result<AdminKey> {
    let root = bootstrap::signing_key(state.secrets.as_ref()).await?;
    let key = bootstrap::admin_api_key(&root);
    let path = data_dir.join(ADMIN_KEY_FILE);
    if let Some(saved) = read_secret_file(&path)? {
        if saved != key.expose_secret().as_bytes() {
            anyhow::bail!(
                "{} holds a different admin key than this deployment's root secret gives; \
                 remove it to save the current one",
                path.display()
            );
        }
        return Ok(AdminKey::Existing { path });
    }
    write_secret_file(&path, key.expose_secret().as_bytes())?;
    Ok(AdminKey::Created { path, key })
}

/// The admin key of a deployment whose root secret is the Secrets Manager
/// secret `secret_id` (the stack output `BootstrapSecretArn`).
pub async fn from_aws_secret(secret_id: &str) -> anyhow::Result<SecretString> {
    let sdk = lambent_aws::load_sdk_config().await;
    let secrets = lambent_aws::SecretsManagerSecrets::from_conf(&sdk, secret_id);
    let root = bootstrap::signing_key(&secrets).await?;
    Ok(bootstrap::admin_api_key(&root))
}
