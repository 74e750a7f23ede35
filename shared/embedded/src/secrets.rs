//! Secrets as files in the data directory, one per name (`signing_key` is
//! `<data dir>/signing-key`), mode 0600. A rotation keeps the value it
//! replaced beside it (`signing-key.previous`), which is what
//! [`Secrets::get_previous`] reads. Every read goes to the file, so a
//! rotation made by another process (`lambent rotate-secret`) is seen by the
//! next read.

use std::io;
use std::path::{Path, PathBuf};

use async_trait::async_trait;

use super::files::{read_secret_file, write_secret_file};
use lambent_core::ids;
use lambent_core::secret::{ExposeSecret, SecretString};
use lambent_ports::secrets::{Secrets, SecretsError, SecretsResult};

/// What the file of a secret's previous value ends with.
const PREVIOUS_SUFFIX: &str = ".previous";

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

    /// The file that holds the secret `name` as it was before its last rotation.
    fn previous_path_of(&self, name: &str) -> SecretsResult<PathBuf> {
        let path = self.path_of(name)?;
        let mut file = path.into_os_string();
        file.push(PREVIOUS_SUFFIX);
        Ok(PathBuf::from(file))
    }

    /// Rotates the secret `name`: its current value becomes the previous one
    /// (replacing any older previous value) and `new` the current one. Each
    /// file is replaced atomically, the previous one first, so a reader at
    /// any moment sees the old value as current or as previous. It must be
    /// set already (a first value is written, not rotated in).
    pub fn rotate(&self, name: &str, new: &SecretString) -> SecretsResult<()> {
        let (path, previous) = (self.path_of(name)?, self.previous_path_of(name)?);
        let current = read(&path)?.ok_or_else(|| SecretsError::Missing(name.to_owned()))?;
        replace_file(&previous, &current).map_err(|e| unavailable(&previous, e))?;
        replace_file(&path, new.expose_secret().as_bytes()).map_err(|e| unavailable(&path, e))
    }

    /// Sets the secret `name` to `value`, replacing the file atomically
    /// (no rotation: nothing is kept of the value it replaces).
    pub fn replace(&self, name: &str, value: &SecretString) -> SecretsResult<()> {
        let path = self.path_of(name)?;
        replace_file(&path, value.expose_secret().as_bytes()).map_err(|e| unavailable(&path, e))
    }

    /// Removes the secret `name` (nothing to do if it is not set).
    pub fn remove(&self, name: &str) -> SecretsResult<()> {
        let path = self.path_of(name)?;
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(unavailable(&path, e)),
        }
    }
}

fn unavailable(path: &Path, e: io::Error) -> SecretsError {
    SecretsError::Unavailable(format!("{}: {e}", path.display()))
}

/// The bytes of a secret file, `None` if absent.
fn read(path: &Path) -> SecretsResult<Option<Vec<u8>>> {
    read_secret_file(path).map_err(|e| unavailable(path, e))
}

/// Writes `contents` to a new 0600 file beside `path`, then renames it over
/// `path`: a reader sees the old file or the new one, never a partial one.
fn replace_file(path: &Path, contents: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(format!(
        ".{name}.{}.tmp",
        ids::base32(&ids::random_bytes::<8>())
    ));
    write_secret_file(&temp, contents)?;
    if let Err(e) = std::fs::rename(&temp, path) {
        let _ = std::fs::remove_file(&temp);
        return Err(e);
    }
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// A secret file's text, without the line end an editor may have added.
fn text_of(name: &str, bytes: Option<Vec<u8>>) -> SecretsResult<Option<SecretString>> {
    match bytes {
        None => Ok(None),
        Some(bytes) => {
            let text = String::from_utf8(bytes)
                .map_err(|_| SecretsError::Malformed(format!("{name} is not UTF-8")))?;
            Ok(Some(SecretString::from(text.trim_end().to_owned())))
        }
    }
}

#[async_trait]
impl Secrets for FileSecrets {
    async fn get(&self, name: &str) -> SecretsResult<Option<SecretString>> {
        text_of(name, read(&self.path_of(name)?)?)
    }

    async fn get_previous(&self, name: &str) -> SecretsResult<Option<SecretString>> {
        text_of(name, read(&self.previous_path_of(name)?)?)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_rotation_keeps_the_replaced_value_as_previous() {
        let dir = tempfile::tempdir().unwrap();
        let secrets = FileSecrets::new(dir.path().to_path_buf());
        let value = |s: &str| SecretString::from(s.to_owned());
        let shown = |s: Option<SecretString>| s.map(|s| s.expose_secret().to_owned());
        // Nothing to rotate before a first value.
        assert!(matches!(
            secrets.rotate("signing_key", &value("a")),
            Err(SecretsError::Missing(_))
        ));
        secrets.replace("signing_key", &value("a")).unwrap();
        assert_eq!(
            shown(secrets.get("signing_key").await.unwrap()),
            Some("a".into())
        );
        assert_eq!(
            shown(secrets.get_previous("signing_key").await.unwrap()),
            None
        );
        secrets.rotate("signing_key", &value("b")).unwrap();
        secrets.rotate("signing_key", &value("c")).unwrap();
        assert_eq!(
            shown(secrets.get("signing_key").await.unwrap()),
            Some("c".into())
        );
        assert_eq!(
            shown(secrets.get_previous("signing_key").await.unwrap()),
            Some("b".into())
        );
        // Every file is 0600 and no temporary file is left behind.
        use std::os::unix::fs::PermissionsExt;
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let entry = entry.unwrap();
            assert_eq!(
                entry.metadata().unwrap().permissions().mode() & 0o777,
                0o600
            );
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        assert_eq!(names, ["signing-key", "signing-key.previous"]);
        secrets.remove("signing_key").unwrap();
        secrets.remove("signing_key").unwrap();
        assert!(secrets.get("signing_key").await.unwrap().is_none());
    }
}
