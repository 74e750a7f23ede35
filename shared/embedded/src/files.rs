//! The data directory and its files: the directory is 0700 and every file
//! in it 0600, whatever they were before (an existing directory or database
//! left readable by others is tightened when it is opened). Files that hold
//! secrets are created with mode 0600, never overwritten once written, and
//! refused if others can read them (the secret may have leaked: the operator
//! must look, then `chmod 600` it).

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// The mode of the data directory.
pub const DIR_MODE: u32 = 0o700;
/// The mode of every file in the data directory.
pub const FILE_MODE: u32 = 0o600;

/// Creates the directory (mode 0700) if absent, and makes an existing one
/// 0700.
pub fn ensure_private_dir(dir: &Path) -> io::Result<()> {
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir)?;
    }
    let meta = fs::metadata(dir)?;
    if !meta.is_dir() {
        return Err(io::Error::other("not a directory"));
    }
    // The builder's mode passed through the umask, and an existing directory
    // kept whatever it had: set it exactly.
    if meta.permissions().mode() & 0o7777 != DIR_MODE {
        fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE))?;
    }
    Ok(())
}

/// Creates an empty file with mode 0600 if `path` is absent, and makes it
/// 0600 whatever it was. A file created this way before SQLite opens it is
/// never readable by others, even for an instant, whatever the umask.
pub fn ensure_private_file(path: &Path) -> io::Result<()> {
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)
    {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    restrict_file(path)
}

/// Makes `path` 0600 if it exists (nothing to do if it does not).
pub fn restrict_file(path: &Path) -> io::Result<()> {
    let meta = match fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if meta.is_file() && meta.permissions().mode() & 0o7777 != FILE_MODE {
        fs::set_permissions(path, fs::Permissions::from_mode(FILE_MODE))?;
    }
    Ok(())
}

/// Writes a new secret file with mode 0600. Fails if it already exists, so a
/// second process racing on first start cannot replace the first one's secret.
pub fn write_secret_file(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents)?;
    file.sync_all()?;
    if let Some(dir) = path.parent() {
        // Make the new directory entry durable too.
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// Reads a secret file, refusing one that others can read.
pub fn read_secret_file(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(bytes) => {
            let mode = fs::metadata(path)?.permissions().mode();
            if mode & 0o077 != 0 {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!(
                        "{} is readable by other users (mode {:o}); chmod 600 it",
                        path.display(),
                        mode & 0o777
                    ),
                ));
            }
            Ok(Some(bytes))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}
