//! Following a turn's events (`GET …/messages/{id}/events`): the stored
//! events after the one the client saw last, then the new ones as they
//! are stored, until `done`. It reads the store, so it follows a turn run
//! by any process; a turn run by this process wakes it as soon as a batch
//! is stored, others are polled every [`POLL`].

use std::time::Duration;

use tokio::sync::mpsc;

use crate::state::State;
use lambent_core::error::{Error, Result};
use lambent_store::turns::{self, EventsCursor, StoredEvent};

/// How often the store is read for new events of a turn run elsewhere.
pub const POLL: Duration = Duration::from_millis(200);
/// Polls without a new event after which the turn itself is read: a turn
/// that ended without its `done` stored (its runner died at the end) ends
/// the follow all the same.
const QUIET_POLLS: u32 = 10;

/// The events of turn `turn_id` after event `after` (all without it), as
/// they come; the receiver ends after `done`, or at `until`. 404 when the
/// turn is unknown (the caller has checked the session is its own).
pub async fn follow(
    state: &State,
    session_id: &str,
    turn_id: &str,
    after: Option<u64>,
    until: tokio::time::Instant,
) -> Result<mpsc::Receiver<StoredEvent>> {
    // Subscribed first, so no batch stored meanwhile goes unnoticed.
    let stored = state.turn_registry.watch_stored(turn_id);
    if turns::get(state.store.as_ref(), session_id, turn_id)
        .await?
        .is_none()
    {
        return Err(Error::NotFound("message"));
    }
    let (tx, rx) = mpsc::channel(super::log::LIVE_QUEUE);
    tokio::spawn(forward(
        state.clone(),
        session_id.to_owned(),
        turn_id.to_owned(),
        after,
        until,
        stored,
        tx,
    ));
    Ok(rx)
}

async fn forward(
    state: State,
    session_id: String,
    turn_id: String,
    after: Option<u64>,
    until: tokio::time::Instant,
    mut stored: tokio::sync::watch::Receiver<u64>,
    tx: mpsc::Sender<StoredEvent>,
) {
    let store = state.store.as_ref();
    let mut cursor = EventsCursor::default();
    let mut last_sent = after;
    let mut quiet = 0;
    loop {
        let (events, next) = match turns::events_after(store, &session_id, &turn_id, &cursor).await
        {
            Ok(read) => read,
            Err(e) => {
                tracing::warn!(error = %e, "could not read a turn's events");
                (Vec::new(), cursor.clone())
            }
        };
        cursor = next;
        quiet = if events.is_empty() { quiet + 1 } else { 0 };
        for event in events {
            if last_sent.is_some_and(|seen| event.id <= seen) {
                continue;
            }
            last_sent = Some(event.id);
            let done = event.event == "done";
            if tx.send(event).await.is_err() || done {
                return;
            }
        }
        if quiet >= QUIET_POLLS {
            quiet = 0;
            match turns::get(store, &session_id, &turn_id).await {
                Ok(Some(turn)) if turn.status.is_final() => {
                    // Its events are all stored by now: one last read.
                    if let Ok((events, _)) =
                        turns::events_after(store, &session_id, &turn_id, &cursor).await
                    {
                        for event in events {
                            if last_sent.is_none_or(|seen| event.id > seen) {
                                let _ = tx.send(event).await;
                            }
                        }
                    }
                    return;
                }
                Ok(None) => return,
                _ => {}
            }
        }
        tokio::select! {
            _ = stored.changed() => {}
            _ = tokio::time::sleep(POLL) => {}
            _ = tokio::time::sleep_until(until) => return,
        }
        if tokio::time::Instant::now() >= until {
            return;
        }
    }
}
