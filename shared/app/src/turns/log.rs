//! A turn's events: numbered, shown to the live client (if one is
//! connected to this process) and stored in batches, so a client that
//! comes back later replays them (`super::follow`).
//!
//! Storing is off the turn's path: a writer task takes the events through
//! a bounded channel and stores them as one item per batch, when
//! [`Config::events_flush`](crate::config::Config) has passed since the
//! batch's first event, when it holds [`BATCH_BYTES`], or when the turn
//! ends. A stream of tokens costs a write per ~100 ms, not one
//! per token.

use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;

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
    /// The log of turn `turn_id`, numbering on from `next_id`; with a live
    /// client, the receiver of its events.
    pub fn open(
        state: &State,
        session_id: &str,
        turn_id: &str,
        next_id: u64,
        expires_at: i64,
        live: bool,
    ) -> (EventLog, Option<LiveEvents>) {
        let (writer, queue) = mpsc::channel(WRITER_QUEUE);
        let written = tokio::spawn(write_batches(
            state.clone(),
            session_id.to_owned(),
            turn_id.to_owned(),
            expires_at,
            queue,
        ));
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

/// The writer task: batches events and stores each batch in order.
async fn write_batches(
    state: State,
    session_id: String,
    turn_id: String,
    expires_at: i64,
    mut queue: mpsc::Receiver<StoredEvent>,
) {
    let flush_after = state.config.events_flush;
    let mut batch: Vec<StoredEvent> = Vec::new();
    let mut bytes = 0;
    let mut due: Option<Instant> = None;
    loop {
        let write = match due {
            Some(at) => tokio::select! {
                write = queue.recv() => write,
                _ = tokio::time::sleep_until(at) => {
                    store(&state, &session_id, &turn_id, &mut batch, expires_at).await;
                    (bytes, due) = (0, None);
                    continue;
                }
            },
            None => queue.recv().await,
        };
        match write {
            Some(event) => {
                bytes += event.data.len() + event.event.len();
                batch.push(event);
                due.get_or_insert_with(|| Instant::now() + flush_after);
                if bytes >= BATCH_BYTES {
                    store(&state, &session_id, &turn_id, &mut batch, expires_at).await;
                    (bytes, due) = (0, None);
                }
            }
            None => {
                store(&state, &session_id, &turn_id, &mut batch, expires_at).await;
                return;
            }
        }
    }
}

/// Tries of a batch's write before its events are given up (the turn's
/// messages are stored all the same; only its replay misses them).
const STORE_ATTEMPTS: u32 = 4;

async fn store(
    state: &State,
    session_id: &str,
    turn_id: &str,
    batch: &mut Vec<StoredEvent>,
    expires_at: i64,
) {
    if batch.is_empty() {
        return;
    }
    for attempt in 0..STORE_ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(25 << attempt)).await;
        }
        match turns::append_events(state.store.as_ref(), session_id, turn_id, batch, expires_at)
            .await
        {
            Ok(()) => {
                let last = batch.last().map_or(0, |e| e.id);
                batch.clear();
                state.turn_registry.stored(turn_id, last);
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
