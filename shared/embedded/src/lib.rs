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
/// a queued message moves to its dead-letter queue after `max_receives`.
/// The store decides expiry by `clock`; the queue's visibility timeouts are
/// transport time, on the wall clock as SQS's are.
pub fn open(
    data_dir: &Path,
    max_receives: u32,
    clock: Arc<dyn Clock>,
) -> Result<Ports, StartError> {
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
    Ok(Ports {
        store: Arc::new(EmbeddedStore::with_clock(db.clone(), clock.clone())),
        cipher: Arc::new(cipher),
        queue: Arc::new(EmbeddedQueue::new(db, max_receives)),
        secrets: Arc::new(FileSecrets::new(PathBuf::from(data_dir))),
        clock,
    })
}
