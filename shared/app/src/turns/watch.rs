//! A running turn's watch: it keeps the runner's lease on the turn and
//! notices a cancel asked for anywhere, and a client that follows the
//! turn's events from anywhere (at once in this process, within [`POLL`]
//! otherwise).

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

/// Set once a client follows a turn's events (it stays set).
pub type Followed = watch::Receiver<bool>;

/// Watches turn `turn_id`: the returned stop is set when it is cancelled
/// (or another runner took it over), the returned followed when a client
/// follows it.
pub fn start(state: &State, session_id: &str, turn_id: &str) -> (Stop, Followed, Watching) {
    let (stop, stopped) = watch::channel(false);
    let (followed, following) = watch::channel(false);
    let signals = crate::turn_registry::Signals {
        stop: stop.clone(),
        followed: followed.clone(),
    };
    let running = state.turn_registry.running(turn_id, signals);
    let task = tokio::spawn(keep(
        state.clone(),
        session_id.to_owned(),
        turn_id.to_owned(),
        stop,
        followed,
    ));
    (
        stopped,
        following,
        Watching {
            task,
            _running: running,
        },
    )
}

async fn keep(
    state: State,
    session_id: String,
    turn_id: String,
    stop: watch::Sender<bool>,
    followed: watch::Sender<bool>,
) {
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
            renewal
        } else {
            turns::get(store, &session_id, &turn_id).await
        };
        match seen {
            Ok(Some(turn)) if !turn.cancel_requested => {
                if turn.followed && !*followed.borrow() {
                    followed.send_replace(true);
                }
            }
            // Cancelled, ended, or taken over by another runner.
            Ok(_) => {
                stop.send_replace(true);
                return;
            }
            Err(e) => tracing::warn!(error = %e, "could not watch a running turn"),
        }
    }
}
