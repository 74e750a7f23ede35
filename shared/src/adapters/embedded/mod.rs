//! The embedded backend of `lambent serve`: one SQLite database file (WAL,
//! synchronous writes, so a crash loses nothing committed) holding the items
//! and the queues, an AES-256-GCM master key file, and secret files, all in
//! one data directory. No AWS, no setup.

mod cipher;
mod db;
mod eval;
mod files;
mod queue;
mod secrets;
mod store;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use cipher::LocalCipher;
pub use db::Db;
pub use files::{ensure_private_dir as ensure_data_dir, read_secret_file, write_secret_file};
pub use queue::EmbeddedQueue;
pub use secrets::FileSecrets;
pub use store::EmbeddedStore;

use crate::config::Config;
use crate::state::{StartError, State};

/// The database file inside the data directory.
pub const DATABASE_FILE: &str = "lambent.sqlite3";
/// The master key file inside the data directory.
pub const MASTER_KEY_FILE: &str = "master.key";
/// How many receives a queued message gets before it moves to its dead-letter queue.
pub const DEFAULT_MAX_RECEIVES: u32 = 5;

/// Opens (creating on first use) every embedded adapter in `data_dir`.
pub fn open(data_dir: &Path, config: Config) -> Result<State, StartError> {
    files::ensure_private_dir(data_dir)
        .map_err(|e| StartError::DataDir(format!("{}: {e}", data_dir.display())))?;
    let db = Db::open(&data_dir.join(DATABASE_FILE)).map_err(|e| StartError::Dependency {
        name: "store",
        detail: e.to_string(),
    })?;
    let cipher = LocalCipher::open_or_create(&data_dir.join(MASTER_KEY_FILE)).map_err(|e| {
        StartError::Dependency {
            name: "cipher",
            detail: e.to_string(),
        }
    })?;
    let max_attempts = config.step_max_attempts;
    Ok(State::new(
        config,
        Arc::new(EmbeddedStore::new(db.clone())),
        Arc::new(cipher),
        // More receives than a step's attempts: duplicates and waits for a
        // lease also use receives, and the worker, not the redrive, must
        // decide when a step has failed.
        Arc::new(EmbeddedQueue::new(
            db,
            DEFAULT_MAX_RECEIVES.max(max_attempts + 2),
        )),
        Arc::new(FileSecrets::new(PathBuf::from(data_dir))),
    ))
}
