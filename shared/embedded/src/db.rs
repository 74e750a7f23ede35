//! The SQLite database behind the embedded store and queue. One connection
//! writes, so writes are serialised and every conditional write is
//! trivially atomic; others (one per core, and one more) read what is read
//! outside a write (the store's gets and queries): in WAL mode each sees
//! every committed write, and a read waits for no write nor a write for a
//! read.
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
//!
//! Writes commit in groups ([`Db::write`]): a write that finds the writing
//! connection busy is queued, and whoever holds the connection next runs
//! every queued write in one transaction, each in a savepoint of its own
//! (so one that fails is undone alone), and commits once. Under load a
//! commit's fixed cost, and the WAL pages that concurrent writes share (a
//! user's items, the audit partition), are paid once per group instead of
//! once per write; alone, a write is its own group and pays nothing more.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::oneshot;

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

/// The reading connections: one per core, and one more (at least 2), so a
/// read on an async thread rarely finds them all busy.
fn reading_connections() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()) + 1
}

/// How often the background thread checkpoints the WAL (and fsyncs it)
/// under [`Durability::Normal`]: the most a power loss can cost.
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// WAL pages after which a commit checkpoints on its own thread (SQLite's
/// automatic checkpoint), should the background thread fall behind: about
/// 40 MB, so it bounds the WAL's size without ever being hit in practice.
const AUTO_CHECKPOINT_PAGES: u32 = 10_000;

/// How many queued writes one group commits at most: a group's first write
/// waits for the others to run, so a bound keeps that wait short.
const MAX_GROUP: usize = 64;

/// A queued write: it runs in the group's transaction and returns what to
/// tell its caller once the group's commit is known (`Err`: the commit's
/// error). `bool`: whether it succeeded (if not, its savepoint is undone).
type Job = Box<dyn FnOnce(&Connection) -> (bool, Reply) + Send>;
type Reply = Box<dyn FnOnce(Result<(), &str>) + Send>;

/// The writes waiting for the writing connection.
#[derive(Default)]
struct Writes {
    queued: Mutex<VecDeque<Job>>,
    /// A blocking thread has been asked to run the queue.
    handed_off: AtomicBool,
}

#[derive(Clone)]
pub struct Db {
    conn: Arc<Mutex<Connection>>,
    /// The reading connections (`query_only`): as many as reads can run
    /// at once on this machine's cores, and one more.
    readers: Arc<[Arc<Mutex<Connection>>]>,
    writes: Arc<Writes>,
    /// Which reading connection a read that finds them all busy waits for.
    next_reader: Arc<AtomicUsize>,
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
        let readers = (0..reading_connections())
            .map(|_| {
                let reader = Connection::open(path)?;
                reader.busy_timeout(Duration::from_secs(5))?;
                reader.pragma_update(None, "query_only", true)?;
                Ok(Arc::new(Mutex::new(reader)))
            })
            .collect::<Result<Vec<_>, DbError>>()?;
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
            readers: readers.into(),
            next_reader: Arc::default(),
            writes: Arc::default(),
            inline: durability == Durability::Normal,
            _checkpoints: checkpoints,
        })
    }

    /// Runs `f` on the writing connection, outside any group: on this
    /// thread if commits are not fsync'd and the connection is free, else
    /// on a blocking thread (so a caller never blocks its async thread
    /// waiting for another's call). For what manages its own transaction;
    /// a write that can share one goes through [`Db::write`].
    pub async fn with<T, E>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, E> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        let out = self.on(&self.conn, f).await;
        // Writes queued while `f` held the connection are run now.
        self.run_queued();
        out
    }

    /// Runs `f` in a transaction shared with the writes queued beside it,
    /// in a savepoint of its own: an `Err` undoes what `f` wrote, and only
    /// that. `Ok` is returned once the transaction has committed. `f` must
    /// not begin or end a transaction itself.
    pub async fn write<T, E>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, E> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        let (tell, told) = oneshot::channel::<Result<T, E>>();
        let job: Job = Box::new(move |conn: &Connection| {
            let out = f(conn);
            let ok = out.is_ok();
            let reply: Reply = Box::new(move |committed: Result<(), &str>| {
                let out = match (out, committed) {
                    (Ok(_), Err(e)) => Err(E::from(DbError::Worker(format!("commit: {e}")))),
                    (out, _) => out,
                };
                let _ = tell.send(out);
            });
            (ok, reply)
        });
        self.writes
            .queued
            .lock()
            .map_err(|_| E::from(DbError::Worker("write queue poisoned".into())))?
            .push_back(job);
        self.run_queued();
        told.await
            .map_err(|_| E::from(DbError::Worker("the write was dropped".into())))?
    }

    /// Runs the queued writes if the writing connection is free: one group
    /// here (if commits are not fsync'd), the rest on a blocking thread, so
    /// an async thread never runs other callers' writes for long. Whoever
    /// holds the connection calls this after letting it go, so a write
    /// queued meanwhile is never left behind.
    fn run_queued(&self) {
        if self.inline {
            match self.conn.try_lock() {
                Ok(conn) => {
                    let group = self.take_group();
                    if !group.is_empty() {
                        commit_group(&conn, group);
                    }
                }
                // Its holder runs the queue after it.
                Err(std::sync::TryLockError::WouldBlock) => return,
                Err(std::sync::TryLockError::Poisoned(_)) => {
                    self.fail_queued("database lock poisoned");
                    return;
                }
            }
        }
        if self.has_queued() && !self.writes.handed_off.swap(true, Ordering::AcqRel) {
            let db = self.clone();
            tokio::task::spawn_blocking(move || db.run_queue_blocking());
        }
    }

    /// On a blocking thread: groups until the queue is empty.
    fn run_queue_blocking(&self) {
        // Should a write panic, the next caller hands the queue off again.
        struct Release<'a>(&'a AtomicBool);
        impl Drop for Release<'_> {
            fn drop(&mut self) {
                if std::thread::panicking() {
                    self.0.store(false, Ordering::Release);
                }
            }
        }
        let _release = Release(&self.writes.handed_off);
        loop {
            match self.conn.lock() {
                Ok(conn) => loop {
                    let group = self.take_group();
                    if group.is_empty() {
                        break;
                    }
                    commit_group(&conn, group);
                },
                Err(_) => self.fail_queued("database lock poisoned"),
            }
            self.writes.handed_off.store(false, Ordering::Release);
            // A write queued after the last look, whose caller found the
            // connection held by this thread, is this thread's to run.
            if !self.has_queued() || self.writes.handed_off.swap(true, Ordering::AcqRel) {
                return;
            }
        }
    }

    fn take_group(&self) -> Vec<Job> {
        match self.writes.queued.lock() {
            Ok(mut queued) => {
                let n = queued.len().min(MAX_GROUP);
                queued.drain(..n).collect()
            }
            Err(_) => Vec::new(),
        }
    }

    fn has_queued(&self) -> bool {
        self.writes
            .queued
            .lock()
            .map(|q| !q.is_empty())
            .unwrap_or(false)
    }

    fn fail_queued(&self, why: &str) {
        let jobs: Vec<Job> = match self.writes.queued.lock() {
            Ok(mut queued) => queued.drain(..).collect(),
            Err(_) => return,
        };
        // Dropping a job drops its caller's sender: the caller is told.
        tracing::error!(writes = jobs.len(), "{why}: queued writes failed");
    }

    /// Runs `f`, which only reads, on a reading connection, as
    /// [`Db::with`] runs a call on the writing one: it sees every write
    /// committed before it starts, and neither waits for the other. The
    /// first free connection takes it, on this thread; if all are busy, the
    /// next in turn on a blocking thread.
    pub async fn read<T, E>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, E> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        if self.inline {
            for reader in self.readers.iter() {
                if let Ok(mut guard) = reader.try_lock() {
                    return f(&mut guard);
                }
            }
        }
        let turn = self.next_reader.fetch_add(1, Ordering::Relaxed) % self.readers.len();
        self.on(&self.readers[turn], f).await
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

/// Runs `group` in one transaction, each write in a savepoint of its own
/// (but a write alone, which the transaction's rollback undoes), commits,
/// and tells each caller. If the transaction cannot begin, a savepoint
/// cannot be undone or the commit fails, nothing of the group is written
/// and every caller is told so.
fn commit_group(conn: &Connection, group: Vec<Job>) {
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        // Dropping the jobs tells their callers the write was dropped.
        tracing::error!(error = %e, writes = group.len(), "a group of writes could not begin");
        return;
    }
    let alone = group.len() == 1;
    let mut replies = Vec::with_capacity(group.len());
    let mut failed_alone = false;
    let mut broken: Option<String> = None;
    for job in group {
        if broken.is_some() {
            // Not run: its caller is told the group's error.
            drop(job);
            continue;
        }
        if alone {
            let (ok, reply) = job(conn);
            failed_alone = !ok;
            replies.push(reply);
            continue;
        }
        if let Err(e) = savepoint(conn, "SAVEPOINT w") {
            broken = Some(e.to_string());
            drop(job);
            continue;
        }
        let (ok, reply) = job(conn);
        let end = match ok {
            true => savepoint(conn, "RELEASE w"),
            false => savepoint(conn, "ROLLBACK TO w").and_then(|()| savepoint(conn, "RELEASE w")),
        };
        if let Err(e) = end {
            broken = Some(e.to_string());
        }
        replies.push(reply);
    }
    let committed = match (broken, failed_alone) {
        (Some(e), _) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
        // A write alone that failed: nothing of it is kept.
        (None, true) => conn.execute_batch("ROLLBACK").map_err(|e| e.to_string()),
        (None, false) => conn.execute_batch("COMMIT").map_err(|e| {
            let _ = conn.execute_batch("ROLLBACK");
            e.to_string()
        }),
    };
    for reply in replies {
        reply(committed.as_ref().map(|_| ()).map_err(String::as_str));
    }
}

fn savepoint(conn: &Connection, sql: &str) -> Result<(), rusqlite::Error> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
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

    /// A counter item the concurrency tests bump.
    fn insert_counter(conn: &Connection) -> Result<usize, DbError> {
        Ok(conn.execute(
            "INSERT INTO items (pk, sk, attrs) VALUES ('N', x'00', '0')",
            [],
        )?)
    }

    fn bump_counter(conn: &Connection) -> Result<usize, DbError> {
        Ok(conn.execute(
            "UPDATE items SET attrs = CAST(attrs AS INTEGER) + 1 WHERE pk = 'N'",
            [],
        )?)
    }

    async fn counter(db: &Db) -> String {
        db.read(|conn| {
            conn.query_row("SELECT attrs FROM items WHERE pk = 'N'", [], |r| r.get(0))
                .map_err(DbError::from)
        })
        .await
        .unwrap()
    }

    /// Many tasks on several threads at once: those that find the
    /// connection busy wait on a blocking thread, and no call is lost.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn calls_that_find_the_connection_busy_wait_their_turn() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("db.sqlite3")).unwrap();
        db.write(insert_counter).await.unwrap();
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let db = db.clone();
                tokio::spawn(async move {
                    for _ in 0..50 {
                        db.with(|conn| bump_counter(conn)).await.unwrap();
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(counter(&db).await, "3200");
    }

    /// Holds the writing connection on a task of its own until `release`
    /// is sent, so writes made meanwhile queue up.
    async fn hold_connection(
        db: &Db,
    ) -> (std::sync::mpsc::Sender<()>, tokio::task::JoinHandle<()>) {
        let (release, held) = std::sync::mpsc::channel::<()>();
        let (started, holding) = tokio::sync::oneshot::channel::<()>();
        let holder = {
            let db = db.clone();
            tokio::spawn(async move {
                db.with(move |_conn| -> Result<(), DbError> {
                    let _ = started.send(());
                    let _ = held.recv_timeout(Duration::from_secs(10));
                    Ok(())
                })
                .await
                .unwrap()
            })
        };
        holding.await.unwrap();
        (release, holder)
    }

    async fn until_queued(db: &Db, n: usize) {
        while db.writes.queued.lock().unwrap().len() < n {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn insert(conn: &Connection, sk: &str) -> Result<(), DbError> {
        conn.execute(
            "INSERT INTO items (pk, sk, attrs) VALUES ('G', ?1, '{}')",
            rusqlite::params![sk.as_bytes()],
        )?;
        Ok(())
    }

    /// Writes queued behind a busy connection commit together: the second
    /// sees the first's row, which another connection does not see yet;
    /// a write that fails in the group is undone alone, and its caller
    /// alone gets the error.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queued_writes_commit_as_one_group_and_a_failed_one_alone_is_undone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite3");
        let db = Db::open(&path).unwrap();
        let outside = Connection::open(&path).unwrap();
        let outside = Arc::new(Mutex::new(outside));
        let (release, holder) = hold_connection(&db).await;

        let first = tokio::spawn({
            let db = db.clone();
            async move { db.write(|conn| insert(conn, "a")).await }
        });
        until_queued(&db, 1).await;
        let failing = tokio::spawn({
            let db = db.clone();
            async move {
                db.write(|conn| {
                    insert(conn, "b")?;
                    Err::<(), _>(DbError::Worker("refused".into()))
                })
                .await
            }
        });
        until_queued(&db, 2).await;
        let third = tokio::spawn({
            let db = db.clone();
            let outside = Arc::clone(&outside);
            async move {
                db.write(move |conn| {
                    let in_group: i64 =
                        conn.query_row("SELECT count(*) FROM items WHERE pk = 'G'", [], |r| {
                            r.get(0)
                        })?;
                    let committed: i64 = outside.lock().unwrap().query_row(
                        "SELECT count(*) FROM items WHERE pk = 'G'",
                        [],
                        |r| r.get(0),
                    )?;
                    insert(conn, "c")?;
                    Ok::<_, DbError>((in_group, committed))
                })
                .await
            }
        });
        until_queued(&db, 3).await;
        release.send(()).unwrap();
        holder.await.unwrap();

        first.await.unwrap().unwrap();
        let err = failing.await.unwrap().unwrap_err();
        assert!(err.to_string().contains("refused"), "{err}");
        // The third saw the first's row (the second's was undone), none of
        // it committed yet: the three ran in one transaction.
        assert_eq!(third.await.unwrap().unwrap(), (1, 0));
        let rows: Vec<Vec<u8>> = {
            let conn = outside.lock().unwrap();
            let mut stmt = conn
                .prepare("SELECT sk FROM items WHERE pk = 'G' ORDER BY sk")
                .unwrap();
            let rows = stmt.query_map([], |r| r.get(0)).unwrap();
            rows.map(Result::unwrap).collect()
        };
        assert_eq!(rows, [b"a".to_vec(), b"c".to_vec()]);
    }

    /// Many writers at once, on the default durability and on `Full` (whose
    /// groups always run on a blocking thread): every write lands once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_grouped_writes_each_land_once() {
        for durability in [Durability::Normal, Durability::Full] {
            let dir = tempfile::tempdir().unwrap();
            let db = Db::open_with(&dir.path().join("db.sqlite3"), durability).unwrap();
            db.write(insert_counter).await.unwrap();
            let tasks: Vec<_> = (0..32)
                .map(|i| {
                    let db = db.clone();
                    tokio::spawn(async move {
                        for j in 0..20 {
                            // Every fifth write fails after writing: undone.
                            let fails = (i + j) % 5 == 0;
                            let out = db
                                .write(move |conn| {
                                    bump_counter(conn)?;
                                    match fails {
                                        true => Err(DbError::Worker("no".into())),
                                        false => Ok(()),
                                    }
                                })
                                .await;
                            assert_eq!(out.is_err(), fails);
                        }
                    })
                })
                .collect();
            for task in tasks {
                task.await.unwrap();
            }
            let total = counter(&db).await;
            let expected = (0..32)
                .flat_map(|i| (0..20).map(move |j| (i + j) % 5 != 0))
                .filter(|ok| *ok)
                .count();
            assert_eq!(total, expected.to_string(), "{durability:?}");
        }
    }
}
