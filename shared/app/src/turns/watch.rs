//! A running turn's watch: it keeps the runner's lease on the turn and
//! notices a cancel asked for anywhere (at once when asked in this
//! process, within [`POLL`] otherwise).

use std::time::Duration;

use tokio::sync::watch;

use crate::chat::Stop;
use crate::state::State;
use lambent_store::turns;

/// How often the store is asked whether the turn was cancelled.
const POLL: Duration = Duration::from_secs(1);

/// Stops the watch when dropped.
pub struct Watching {
    task: tokio::task::JoinHandle<()>,
    _running: crate::turn_registry::Running,
}

impl Drop for Watching {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Watches turn `turn_id`: the returned signal is set when it is cancelled
/// (or another runner took it over).
pub fn start(state: &State, session_id: &str, turn_id: &str) -> (Stop, Watching) {
    let (tx, rx) = watch::channel(false);
    let running = state.turn_registry.running(turn_id, tx.clone());
    let task = tokio::spawn(keep(
        state.clone(),
        session_id.to_owned(),
        turn_id.to_owned(),
        tx,
    ));
    (
        rx,
        Watching {
            task,
            _running: running,
        },
    )
}

async fn keep(state: State, session_id: String, turn_id: String, stop: watch::Sender<bool>) {
    let lease = state.config.turn_lease;
    let renew_every = (lease / 3).max(Duration::from_millis(100));
    let poll = POLL.min(renew_every);
    let mut renewed = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(poll).await;
        let store = state.store.as_ref();
        let seen = if renewed.elapsed() >= renew_every {
            let until = state.clock.now_millis() + lease.as_millis() as i64;
            let renewal = turns::renew(store, &session_id, &turn_id, until).await;
            if renewal.is_ok() {
                renewed = tokio::time::Instant::now();
            }
            renewal.map(|turn| turn.map(|t| t.cancel_requested).unwrap_or(true))
        } else {
            turns::get(store, &session_id, &turn_id)
                .await
                .map(|turn| turn.is_none_or(|t| t.cancel_requested))
        };
        match seen {
            Ok(true) => {
                stop.send_replace(true);
                return;
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "could not watch a running turn"),
        }
    }
}
