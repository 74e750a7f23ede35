//! A turn's events: numbered, shown to the live client (if one is
//! connected to this process) and stored in batches, so a client that
//! comes back later replays them (`super::follow`).
//!
//! Storing is off the turn's path: a writer task takes the events through
//! a bounded channel and stores them as one item per batch, when it holds
//! [`BATCH_BYTES`], when the turn ends, or when its first event is old
//! enough: [`Config::events_flush`](crate::config::Config) (100 ms) once a
//! client follows the turn (`super::follow`), else
//! [`Config::events_idle_flush`](crate::config::Config) (2 s). A stream of
//! tokens costs a write per ~100 ms while someone follows it and per ~2 s
//! while nobody does, never one per token. (The live client of the request
//! that started the turn reads the events as they happen, not the store.)

use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::watch::Followed;
use crate::state::State;
use lambent_store::turns::{self, StoredEvent};

/// A batch is stored once it holds this many bytes of event data.
pub const BATCH_BYTES: usize = 4 * 1024;
/// Events on their way to the writer; past it the turn waits for the store.
const WRITER_QUEUE: usize = 256;
/// Events buffered for the live client: enough to smooth scheduling.
pub const LIVE_QUEUE: usize = 8;
/// How long the turn waits for its live client to take an event. A client
/// slower than that is left behind: it catches up from the store, and the
/// turn (and the provider read) never waits for it longer.
const LIVE_PATIENCE: Duration = Duration::from_secs(2);

/// The live client's end of a turn's events.
pub type LiveEvents = mpsc::Receiver<StoredEvent>;

/// Where a turn's events go.
pub struct EventLog {
    next_id: u64,
    live: Option<mpsc::Sender<StoredEvent>>,
    /// How long the live client may take to accept an event before it is
    /// left behind (it can replay from the store).
    patience: Duration,
    writer: mpsc::Sender<StoredEvent>,
    written: tokio::task::JoinHandle<()>,
}

impl EventLog {
    /// The log of turn `turn_id`, numbering on from `next_id`, stored at
    /// the shorter interval once `followed`; with a live client, the
    /// receiver of its events.
    pub fn open(
        state: &State,
        session_id: &str,
        turn_id: &str,
        next_id: u64,
        expires_at: i64,
        live: bool,
        followed: Followed,
    ) -> (EventLog, Option<LiveEvents>) {
        let (writer, queue) = mpsc::channel(WRITER_QUEUE);
        let batches = Batches {
            state: state.clone(),
            session_id: session_id.to_owned(),
            turn_id: turn_id.to_owned(),
            expires_at,
        };
        let written = tokio::spawn(batches.write(queue, followed));
        let (live, receiver) = if live {
            let (tx, rx) = mpsc::channel(LIVE_QUEUE);
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let log = EventLog {
            next_id,
            live,
            patience: LIVE_PATIENCE,
            writer,
            written,
        };
        (log, receiver)
    }

    /// Emits one event: shown live, stored with its batch.
    pub async fn emit(&mut self, name: &str, data: Value) {
        let event = StoredEvent {
            id: self.next_id,
            event: name.to_owned(),
            data: data.to_string(),
        };
        self.next_id += 1;
        if let Some(live) = &self.live {
            let delivered = matches!(
                tokio::time::timeout(self.patience, live.send(event.clone())).await,
                Ok(Ok(()))
            );
            if !delivered {
                // Gone, or too slow: it replays from the store if it comes back.
                self.live = None;
            }
        }
        if self.writer.send(event).await.is_err() {
            tracing::error!("a turn's event writer stopped");
        }
    }

    /// Whether a live client still reads the events.
    pub fn has_live_client(&self) -> bool {
        self.live.is_some()
    }

    /// Stores everything and closes the log; the live client's stream ends.
    pub async fn close(self) {
        drop(self.live);
        drop(self.writer);
        if let Err(e) = self.written.await {
            tracing::error!(error = %e, "a turn's event writer failed");
        }
    }
}

/// Tries of a batch's write before its events are given up (the turn's
/// messages are stored all the same; only its replay misses them).
const STORE_ATTEMPTS: u32 = 4;

/// Where the writer task stores a turn's batches.
struct Batches {
    state: State,
    session_id: String,
    turn_id: String,
    expires_at: i64,
}

impl Batches {
    /// The writer task: batches events and stores each batch in order.
    async fn write(self, mut queue: mpsc::Receiver<StoredEvent>, mut followed: Followed) {
        let config = &self.state.config;
        let (followed_flush, idle_flush) = (
            config.events_flush,
            config.events_idle_flush.max(config.events_flush),
        );
        let mut batch: Vec<StoredEvent> = Vec::new();
        let mut bytes = 0;
        // When the batch's first event came.
        let mut begun: Option<Instant> = None;
        // Until the watch ends (the turn stops being watched): then the
        // interval no longer changes.
        let mut watching = true;
        loop {
            let flush_after = if *followed.borrow() {
                followed_flush
            } else {
                idle_flush
            };
            let due = begun.map(|at| at + flush_after);
            let write = tokio::select! {
                write = queue.recv() => write,
                _ = sleep_until(due) => {
                    self.store(&mut batch).await;
                    (bytes, begun) = (0, None);
                    continue;
                }
                changed = followed.changed(), if watching => {
                    // Followed now: the batch may be due already.
                    watching = changed.is_ok();
                    continue;
                }
            };
            match write {
                Some(event) => {
                    bytes += event.data.len() + event.event.len();
                    batch.push(event);
                    begun.get_or_insert_with(Instant::now);
                    if bytes >= BATCH_BYTES {
                        self.store(&mut batch).await;
                        (bytes, begun) = (0, None);
                    }
                }
                None => {
                    self.store(&mut batch).await;
                    return;
                }
            }
        }
    }

    async fn store(&self, batch: &mut Vec<StoredEvent>) {
        if batch.is_empty() {
            return;
        }
        let (store, session_id, turn_id) = (
            self.state.store.as_ref(),
            self.session_id.as_str(),
            self.turn_id.as_str(),
        );
        for attempt in 0..STORE_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(25 << attempt)).await;
            }
            match turns::append_events(store, session_id, turn_id, batch, self.expires_at).await {
                Ok(()) => {
                    let last = batch.last().map_or(0, |e| e.id);
                    batch.clear();
                    self.state.turn_registry.stored(turn_id, last);
                    return;
                }
                Err(e) => tracing::warn!(error = %e, attempt, "storing a turn's events failed"),
            }
        }
        tracing::error!(
            events = batch.len(),
            "a batch of a turn's events could not be stored; its replay will miss them"
        );
        batch.clear();
    }
}

/// Sleeps until `at`, or forever.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
