//! The embedded backend of `lambent serve`: one SQLite database file (WAL;
//! a crash loses nothing committed, a power loss at most the last second by
//! default, see [`Durability`]) holding the items
//! and the queues, an AES-256-GCM master key file, and secret files, all in
//! one data directory. No AWS, no setup.

mod cipher;
mod codec;
mod db;
mod eval;
mod files;
mod queue;
mod secrets;
mod store;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use cipher::LocalCipher;
pub use db::{Db, Durability};
pub use files::{ensure_private_dir as ensure_data_dir, read_secret_file, write_secret_file};
pub use queue::EmbeddedQueue;
pub use secrets::FileSecrets;
pub use store::EmbeddedStore;

use lambent_core::clock::Clock;
use lambent_core::env::StartError;
use lambent_ports::Ports;

/// The database file inside the data directory.
pub const DATABASE_FILE: &str = "lambent.sqlite3";
/// The master key file inside the data directory.
pub const MASTER_KEY_FILE: &str = "master.key";
/// How many receives a queued message gets before it moves to its dead-letter queue.
pub const DEFAULT_MAX_RECEIVES: u32 = 5;

/// Opens (creating on first use) every embedded adapter in `data_dir`;
/// a queued message moves to its dead-letter queue after `max_receives`,
/// and commits are as durable as `durability` says.
/// The store decides expiry by `clock`; the queue's visibility timeouts are
/// transport time, on the wall clock as SQS's are.
pub fn open(
    data_dir: &Path,
    max_receives: u32,
    durability: Durability,
    clock: Arc<dyn Clock>,
) -> Result<Ports, StartError> {
    files::ensure_private_dir(data_dir)
        .map_err(|e| StartError::DataDir(format!("{}: {e}", data_dir.display())))?;
    let db = Db::open_with(&data_dir.join(DATABASE_FILE), durability).map_err(|e| {
        StartError::Dependency {
            name: "store",
            detail: e.to_string(),
        }
    })?;
    let cipher = LocalCipher::open_or_create(&data_dir.join(MASTER_KEY_FILE)).map_err(|e| {
        StartError::Dependency {
            name: "cipher",
            detail: e.to_string(),
        }
    })?;
    Ok(Ports {
        store: Arc::new(EmbeddedStore::with_clock(db.clone(), clock.clone())),
        cipher: Arc::new(cipher),
        queue: Arc::new(EmbeddedQueue::new(db, max_receives)),
        secrets: Arc::new(FileSecrets::new(PathBuf::from(data_dir))),
        clock,
    })
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    use lambent_ports::{Item, Key};

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    fn chmod(path: &Path, mode: u32) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    /// Every file in `dir` with its mode, by name.
    fn modes(dir: &Path) -> Vec<(String, u32)> {
        let mut all: Vec<(String, u32)> = fs::read_dir(dir)
            .unwrap()
            .map(|entry| {
                let entry = entry.unwrap();
                (
                    entry.file_name().to_string_lossy().into_owned(),
                    mode(&entry.path()),
                )
            })
            .collect();
        all.sort();
        all
    }

    #[tokio::test]
    async fn an_existing_data_directory_and_its_files_are_made_private() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        fs::create_dir(&data).unwrap();
        // A database written before, then left readable by others, with
        // stale sidecar files as loose as it.
        let db_path = data.join(super::DATABASE_FILE);
        {
            let db = super::Db::open(&db_path).unwrap();
            let store = super::EmbeddedStore::new(db);
            lambent_ports::ItemStore::put(&store, Item::new(Key::new("p", "s")), None)
                .await
                .unwrap();
        }
        chmod(&data, 0o755);
        chmod(&db_path, 0o644);
        for sidecar in ["-wal", "-shm"] {
            let path = data.join(format!("{}{sidecar}", super::DATABASE_FILE));
            if !path.exists() {
                fs::write(&path, b"").unwrap();
            }
            chmod(&path, 0o644);
        }
        assert_eq!(mode(&data), 0o755);

        let ports = super::open(
            &data,
            5,
            super::Durability::default(),
            lambent_core::clock::system(),
        )
        .unwrap();
        // A write, so SQLite has certainly made its WAL files.
        ports
            .store
            .put(Item::new(Key::new("p", "t")), None)
            .await
            .unwrap();
        assert!(ports
            .store
            .get(&Key::new("p", "s"))
            .await
            .unwrap()
            .is_some());

        assert_eq!(mode(&data), 0o700);
        let files = modes(&data);
        let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
        for expected in [
            "lambent.sqlite3",
            "lambent.sqlite3-wal",
            "lambent.sqlite3-shm",
            "master.key",
        ] {
            assert!(names.contains(&expected), "{expected} missing: {files:?}");
        }
        for (name, mode) in &files {
            assert_eq!(*mode, 0o600, "{name}: {mode:o}");
        }
    }

    #[tokio::test]
    async fn a_new_data_directory_is_private_from_the_start() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("new").join("data");
        let ports = super::open(
            &data,
            5,
            super::Durability::default(),
            lambent_core::clock::system(),
        )
        .unwrap();
        ports
            .store
            .put(Item::new(Key::new("p", "s")), None)
            .await
            .unwrap();
        assert_eq!(mode(&data), 0o700);
        let files = modes(&data);
        assert!(files.len() >= 4, "{files:?}");
        for (name, mode) in &files {
            assert_eq!(*mode, 0o600, "{name}: {mode:o}");
        }
    }

    #[test]
    fn a_key_file_others_can_read_is_still_refused() {
        // Tightening it would hide that the key may have leaked.
        let tmp = tempfile::tempdir().unwrap();
        let key = tmp.path().join("master.key");
        super::write_secret_file(&key, &[7; 32]).unwrap();
        assert_eq!(mode(&key), 0o600);
        chmod(&key, 0o644);
        let err = super::read_secret_file(&key).unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }
}
