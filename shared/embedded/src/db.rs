//! The SQLite database behind the embedded store and queue. One connection
//! writes, so writes are serialised and every conditional write is
//! trivially atomic; a second one reads what is read outside a write (the
//! store's gets and queries): in WAL mode it sees every committed write, and
//! a read waits for no write nor a write for a read.
//!
//! How durable a commit is, is the [`Durability`] the database is opened
//! with. By default (`Normal`) a commit is written to the WAL but not
//! fsync'd: a killed process loses nothing it committed, a power loss or an
//! operating-system crash may lose the last commits (up to the last
//! checkpoint, at most about a second of writes) and never corrupts the
//! database. A background thread checkpoints the WAL into the database, and
//! fsyncs both, every [`CHECKPOINT_EVERY`]. Calls then run on the caller's
//! thread when the connection is free: with no fsync a call takes
//! microseconds, less than a hop to a blocking thread and back. `Full`
//! fsyncs every commit, and so runs every call on a blocking thread.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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

/// What a commit survives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Durability {
    /// A process crash; a power loss may lose the last second of commits.
    #[default]
    Normal,
    /// A power loss too: every commit is fsync'd before it returns.
    Full,
}

/// How often the background thread checkpoints the WAL (and fsyncs it)
/// under [`Durability::Normal`]: the most a power loss can cost.
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// WAL pages after which a commit checkpoints on its own thread (SQLite's
/// automatic checkpoint), should the background thread fall behind: about
/// 40 MB, so it bounds the WAL's size without ever being hit in practice.
const AUTO_CHECKPOINT_PAGES: u32 = 10_000;

#[derive(Clone)]
pub struct Db {
    conn: Arc<Mutex<Connection>>,
    /// The reading connection (`query_only`).
    reader: Arc<Mutex<Connection>>,
    /// Whether a call may run on the caller's thread (no fsync per commit).
    inline: bool,
    /// Dropped with the last clone (after the connection), which stops the
    /// checkpoint thread and waits for it.
    _checkpoints: Option<Arc<Checkpoints>>,
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
    /// Opens (creating on first use) the database at `path`, with the
    /// default durability. The database and its `-wal` and `-shm` files are
    /// mode 0600, whatever they were.
    pub fn open(path: &Path) -> Result<Db, DbError> {
        Db::open_with(path, Durability::default())
    }

    /// Opens (creating on first use) the database at `path`, its commits as
    /// durable as `durability` says.
    pub fn open_with(path: &Path, durability: Durability) -> Result<Db, DbError> {
        // Created 0600 before SQLite sees it (SQLite would create it 0644
        // less the umask), and an existing one tightened. SQLite gives the
        // `-wal` and `-shm` files it creates the mode of the database file
        // (and fchmods them to it, whatever the umask), so they are born 0600
        // too; old ones are tightened here and again once the connection has
        // written (the schema below), when they surely exist.
        files::ensure_private_file(path).map_err(files_error(path))?;
        restrict_database_files(path)?;
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        restrict_database_files(path)?;
        let reader = Connection::open(path)?;
        reader.busy_timeout(Duration::from_secs(5))?;
        reader.pragma_update(None, "query_only", true)?;
        let checkpoints = match durability {
            Durability::Full => {
                conn.pragma_update(None, "synchronous", "FULL")?;
                None
            }
            Durability::Normal => {
                conn.pragma_update(None, "synchronous", "NORMAL")?;
                conn.pragma_update(None, "wal_autocheckpoint", AUTO_CHECKPOINT_PAGES)?;
                Some(Arc::new(Checkpoints::start(path)?))
            }
        };
        Ok(Db {
            conn: Arc::new(Mutex::new(conn)),
            reader: Arc::new(Mutex::new(reader)),
            inline: durability == Durability::Normal,
            _checkpoints: checkpoints,
        })
    }

    /// Runs `f` on the connection: on this thread if commits are not
    /// fsync'd and the connection is free, else on a blocking thread (so a
    /// caller never blocks its async thread waiting for another's call).
    pub async fn with<T, E>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, E> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        self.on(&self.conn, f).await
    }

    /// Runs `f`, which only reads, on the reading connection, as
    /// [`Db::with`] runs a call on the writing one: it sees every write
    /// committed before it starts, and neither waits for the other.
    pub async fn read<T, E>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, E> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        self.on(&self.reader, f).await
    }

    async fn on<T, E>(
        &self,
        conn: &Arc<Mutex<Connection>>,
        f: impl FnOnce(&mut Connection) -> Result<T, E> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        if self.inline {
            match conn.try_lock() {
                Ok(mut guard) => return f(&mut guard),
                Err(std::sync::TryLockError::Poisoned(_)) => {
                    return Err(DbError::Worker("database lock poisoned".into()).into())
                }
                Err(std::sync::TryLockError::WouldBlock) => {}
            }
        }
        let conn = Arc::clone(conn);
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

/// The thread that checkpoints the WAL every [`CHECKPOINT_EVERY`] on a
/// connection of its own, so no caller waits for an fsync.
struct Checkpoints {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpoints {
    fn start(path: &Path) -> Result<Checkpoints, DbError> {
        let conn = Connection::open(path)?;
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("lambent-checkpoint".into())
            .spawn(move || loop {
                let last = !matches!(
                    stopped.recv_timeout(CHECKPOINT_EVERY),
                    Err(mpsc::RecvTimeoutError::Timeout)
                );
                // PASSIVE: copies what no reader needs, never waits for the
                // writer. A failure (the disk) is logged; the next pass
                // tries again.
                let done: Result<(i64, i64, i64), _> =
                    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                    });
                if let Err(e) = done {
                    tracing::warn!(error = %e, "WAL checkpoint failed");
                }
                if last {
                    return;
                }
            })
            .map_err(|e| DbError::Worker(format!("checkpoint thread: {e}")))?;
        Ok(Checkpoints {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Checkpoints {
    /// A last checkpoint, and the thread's connection closed (the last one:
    /// SQLite then removes the WAL), before the database is let go, so
    /// nothing touches its files afterwards (a test's directory is deleted
    /// right after).
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the checkpoint thread panicked");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pragma(db: &Db, name: &str) -> i64 {
        let conn = db.conn.lock().unwrap();
        conn.query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn commits_are_fsynced_only_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let normal = Db::open(&dir.path().join("normal.sqlite3")).unwrap();
        let full = Db::open_with(&dir.path().join("full.sqlite3"), Durability::Full).unwrap();
        // SQLite's numbers: 1 is NORMAL, 2 is FULL.
        assert_eq!(pragma(&normal, "synchronous"), 1);
        assert_eq!(pragma(&full, "synchronous"), 2);
        assert_eq!(pragma(&normal, "wal_autocheckpoint"), 10_000);
    }

    /// Under `Normal` no commit checkpoints (the WAL stays far below the
    /// automatic checkpoint here), so the database file grows only if the
    /// background thread copies the WAL into it.
    #[tokio::test]
    async fn the_background_thread_checkpoints_the_wal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite3");
        let db = Db::open(&path).unwrap();
        let before = std::fs::metadata(&path).unwrap().len();
        db.with(|conn| -> Result<(), DbError> {
            let blob = "x".repeat(1_000);
            for i in 0..1_000 {
                conn.execute(
                    "INSERT INTO items (pk, sk, attrs) VALUES ('P', ?1, ?2)",
                    rusqlite::params![format!("{i:05}").into_bytes(), blob],
                )?;
            }
            Ok(())
        })
        .await
        .unwrap();
        let deadline = std::time::Instant::now() + 10 * CHECKPOINT_EVERY;
        while std::fs::metadata(&path).unwrap().len() < before + 1_000_000 {
            assert!(
                std::time::Instant::now() < deadline,
                "the WAL was not checkpointed into the database"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Once the last handle is dropped, nothing is left writing: the WAL
    /// is checkpointed and SQLite's side files are gone, so a directory
    /// deleted right after stays deleted.
    #[tokio::test]
    async fn a_dropped_database_leaves_only_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite3");
        let db = Db::open(&path).unwrap();
        let copy = db.clone();
        copy.with(|conn| {
            conn.execute(
                "INSERT INTO items (pk, sk, attrs) VALUES ('P', x'00', '{}')",
                [],
            )
            .map_err(DbError::from)
        })
        .await
        .unwrap();
        // The checkpoint thread has used its connection by now.
        tokio::time::sleep(CHECKPOINT_EVERY + Duration::from_millis(300)).await;
        drop(db);
        drop(copy);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["db.sqlite3"]);
    }

    /// A read runs while a write holds the writing connection, and sees
    /// what was committed before it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_read_does_not_wait_for_a_write_in_progress() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("db.sqlite3")).unwrap();
        db.with(|conn| {
            conn.execute(
                "INSERT INTO items (pk, sk, attrs) VALUES ('P', x'01', '{}')",
                [],
            )
            .map_err(DbError::from)
        })
        .await
        .unwrap();
        let (release, held) = std::sync::mpsc::channel::<()>();
        let (started, writing) = tokio::sync::oneshot::channel::<()>();
        let writer = {
            let db = db.clone();
            tokio::spawn(async move {
                db.with(move |conn| {
                    let tx = conn.transaction()?;
                    tx.execute(
                        "INSERT INTO items (pk, sk, attrs) VALUES ('P', x'02', '{}')",
                        [],
                    )?;
                    let _ = started.send(());
                    let _ = held.recv_timeout(Duration::from_secs(10));
                    tx.commit().map_err(DbError::from)
                })
                .await
            })
        };
        writing.await.unwrap();
        let count = |db: Db| async move {
            db.read(|conn| {
                conn.query_row("SELECT count(*) FROM items WHERE pk = 'P'", [], |r| {
                    r.get::<_, i64>(0)
                })
                .map_err(DbError::from)
            })
            .await
        };
        let during = tokio::time::timeout(Duration::from_secs(2), count(db.clone())).await;
        release.send(()).unwrap();
        writer.await.unwrap().unwrap();
        assert_eq!(during.expect("the read waited for the write").unwrap(), 1);
        assert_eq!(count(db.clone()).await.unwrap(), 2);
        // The reading connection reads only.
        let refused = db
            .read(|conn| conn.execute("DELETE FROM items", []).map_err(DbError::from))
            .await;
        assert!(refused.is_err());
    }

    /// Many tasks on several threads at once: those that find the
    /// connection busy wait on a blocking thread, and no call is lost.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn calls_that_find_the_connection_busy_wait_their_turn() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("db.sqlite3")).unwrap();
        db.with(|conn| {
            conn.execute(
                "INSERT INTO items (pk, sk, attrs) VALUES ('N', x'00', '0')",
                [],
            )
            .map_err(DbError::from)
        })
        .await
        .unwrap();
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let db = db.clone();
                tokio::spawn(async move {
                    for _ in 0..50 {
                        db.with(|conn| {
                            conn.execute(
                                "UPDATE items SET attrs = CAST(attrs AS INTEGER) + 1 WHERE pk = 'N'",
                                [],
                            )
                            .map_err(DbError::from)
                        })
                        .await
                        .unwrap();
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let total: String = db
            .with(|conn| {
                conn.query_row("SELECT attrs FROM items WHERE pk = 'N'", [], |r| r.get(0))
                    .map_err(DbError::from)
            })
            .await
            .unwrap();
        assert_eq!(total, "3200");
    }
}
