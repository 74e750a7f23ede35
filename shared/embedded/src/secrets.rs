//! Secrets as files in the data directory, one per name (`signing_key` is
//! `<data dir>/signing-key`), mode 0600.

use std::path::PathBuf;

use async_trait::async_trait;

use super::files::read_secret_file;
use lambent_core::secret::SecretString;
use lambent_ports::secrets::{Secrets, SecretsError, SecretsResult};

pub struct FileSecrets {
    dir: PathBuf,
}

impl FileSecrets {
    pub fn new(dir: PathBuf) -> Self {
        FileSecrets { dir }
    }

    /// The file that holds the secret `name`.
    pub fn path_of(&self, name: &str) -> SecretsResult<PathBuf> {
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
            return Err(SecretsError::Malformed(format!("bad secret name {name:?}")));
        }
        Ok(self.dir.join(name.replace('_', "-")))
    }
}

#[async_trait]
impl Secrets for FileSecrets {
    async fn get(&self, name: &str) -> SecretsResult<Option<SecretString>> {
        let path = self.path_of(name)?;
        let bytes = read_secret_file(&path)
            .map_err(|e| SecretsError::Unavailable(format!("{}: {e}", path.display())))?;
        match bytes {
            None => Ok(None),
            Some(bytes) => {
                let text = String::from_utf8(bytes)
                    .map_err(|_| SecretsError::Malformed(format!("{name} is not UTF-8")))?;
                Ok(Some(SecretString::from(text.trim_end().to_owned())))
            }
        }
    }

    async fn ping(&self) -> SecretsResult<()> {
        if self.dir.is_dir() {
            Ok(())
        } else {
            Err(SecretsError::Unavailable(format!(
                "{} is not a directory",
                self.dir.display()
            )))
        }
    }
}
