//! Following a turn's events (`GET …/messages/{id}/events`): the stored
//! events after the one the client saw last, then the new ones as they
//! are stored, until `done`. It reads the store, so it follows a turn run
//! by any process; a turn run by this process wakes it as soon as a batch
//! is stored, others are polled every [`POLL`]. A running turn learns that
//! it is followed (at once if it runs here, else from the store within a
//! second) and stores its events every 100 ms rather than every 2 s.

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
    let store = state.store.as_ref();
    let (turn, cursor) = tokio::join!(turns::get(store, session_id, turn_id), async {
        match after {
            Some(seen) => turns::cursor_at(store, session_id, turn_id, seen + 1).await,
            None => Ok(EventsCursor::default()),
        }
    });
    let Some(turn) = turn? else {
        state.turn_registry.unwatch(turn_id, stored);
        return Err(Error::NotFound("message"));
    };
    if !turn.status.is_final() && !state.turn_registry.follow(turn_id) && !turn.followed {
        if let Err(e) = turns::mark_followed(store, session_id, turn_id).await {
            tracing::warn!(error = %e, "could not mark a turn as followed");
        }
    }
    let (tx, rx) = mpsc::channel(super::log::LIVE_QUEUE);
    let following = Following {
        state: state.clone(),
        session_id: session_id.to_owned(),
        turn_id: turn_id.to_owned(),
        after,
        // A final turn's events are all stored: no need to wait for more.
        final_at_start: turn.status.is_final(),
        until,
    };
    tokio::spawn(following.forward(cursor?, stored, tx));
    Ok(rx)
}

struct Following {
    state: State,
    session_id: String,
    turn_id: String,
    after: Option<u64>,
    final_at_start: bool,
    until: tokio::time::Instant,
}

impl Following {
    async fn forward(
        self,
        mut cursor: EventsCursor,
        mut stored: tokio::sync::watch::Receiver<u64>,
        tx: mpsc::Sender<StoredEvent>,
    ) {
        self.send_until_done(&mut cursor, &mut stored, &tx).await;
        self.state.turn_registry.unwatch(&self.turn_id, stored);
    }

    async fn send_until_done(
        &self,
        cursor: &mut EventsCursor,
        stored: &mut tokio::sync::watch::Receiver<u64>,
        tx: &mpsc::Sender<StoredEvent>,
    ) {
        let store = self.state.store.as_ref();
        let (session_id, turn_id) = (self.session_id.as_str(), self.turn_id.as_str());
        let mut last_sent = self.after;
        let mut quiet = 0;
        // Once the turn is known final, its events are all stored: one more
        // read to the end, then no waiting.
        let mut ended = self.final_at_start;
        loop {
            let (events, next, more) =
                match turns::events_page(store, session_id, turn_id, cursor).await {
                    Ok(read) => read,
                    Err(e) => {
                        tracing::warn!(error = %e, "could not read a turn's events");
                        (Vec::new(), cursor.clone(), false)
                    }
                };
            *cursor = next;
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
            if more {
                continue;
            }
            if ended {
                return;
            }
            if quiet >= QUIET_POLLS {
                quiet = 0;
                match turns::get(store, session_id, turn_id).await {
                    Ok(Some(turn)) if turn.status.is_final() => {
                        ended = true;
                        continue;
                    }
                    Ok(None) => return,
                    _ => {}
                }
            }
            tokio::select! {
                _ = stored.changed() => {}
                _ = tokio::time::sleep(POLL) => {}
                _ = tokio::time::sleep_until(self.until) => return,
            }
            if tokio::time::Instant::now() >= self.until {
                return;
            }
        }
    }
}
