//! The SQLite database behind the embedded store and queue. One connection,
//! used from blocking threads, so writes are serialised and every conditional
//! write is trivially atomic.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::Connection;

use super::files;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("database worker failed: {0}")]
    Worker(String),
    /// The database's files could not be created or made private.
    #[error("{path}: {source}")]
    Files {
        path: String,
        source: std::io::Error,
    },
}

/// The files SQLite keeps beside the database (`-wal` and `-shm` in WAL
/// mode, `-journal` before it switches to WAL).
const SIDECARS: [&str; 3] = ["-wal", "-shm", "-journal"];

/// The database file and its sidecar files.
fn database_files(path: &Path) -> Vec<PathBuf> {
    let mut all = vec![path.to_path_buf()];
    all.extend(SIDECARS.iter().map(|suffix| {
        let mut name = OsString::from(path.as_os_str());
        name.push(suffix);
        PathBuf::from(name)
    }));
    all
}

fn files_error(path: &Path) -> impl FnOnce(std::io::Error) -> DbError + '_ {
    move |source| DbError::Files {
        path: path.display().to_string(),
        source,
    }
}

/// Makes the database and each sidecar that exists 0600.
fn restrict_database_files(path: &Path) -> Result<(), DbError> {
    for file in database_files(path) {
        files::restrict_file(&file).map_err(files_error(&file))?;
    }
    Ok(())
}

#[derive(Clone)]
pub struct Db {
    conn: Arc<Mutex<Connection>>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS items (
    pk TEXT NOT NULL,
    sk BLOB NOT NULL,
    attrs TEXT NOT NULL,
    expires_at INTEGER,
    PRIMARY KEY (pk, sk)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS queue_messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    queue TEXT NOT NULL,
    body TEXT NOT NULL,
    visible_at_ms INTEGER NOT NULL,
    receive_count INTEGER NOT NULL DEFAULT 0,
    receipt TEXT UNIQUE
);
CREATE INDEX IF NOT EXISTS queue_messages_visible ON queue_messages (queue, visible_at_ms, seq);
";

impl Db {
    /// Opens (creating on first use) the database at `path`. The database
    /// and its `-wal` and `-shm` files are mode 0600, whatever they were.
    pub fn open(path: &Path) -> Result<Db, DbError> {
        // Created 0600 before SQLite sees it (SQLite would create it 0644
        // less the umask), and an existing one tightened. SQLite gives the
        // `-wal` and `-shm` files it creates the mode of the database file
        // (and fchmods them to it, whatever the umask), so they are born 0600
        // too; old ones are tightened here and again once the connection has
        // written (the schema below), when they surely exist.
        files::ensure_private_file(path).map_err(files_error(path))?;
        restrict_database_files(path)?;
        let conn = Connection::open(path)?;
        // WAL with synchronous=FULL: a committed write survives a crash or power loss.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        restrict_database_files(path)?;
        Ok(Db {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs `f` on the connection in a blocking thread.
    pub async fn with<T, E>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, E> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            let mut guard = conn
                .lock()
                .map_err(|_| DbError::Worker("database lock poisoned".into()))?;
            f(&mut guard)
        })
        .await
        .map_err(|e| E::from(DbError::Worker(e.to_string())))?
    }
}
