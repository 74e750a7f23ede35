//! What this process knows of the agent turns (`crate::turns`) it runs: a cancel reaches a turn
//! run here at once (others see it in the store within a second), a
//! follower of a turn run here makes it store its events at the shorter
//! interval at once, and wakes as soon as a batch of them is stored instead
//! of at its next poll.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

/// The signals of a turn running here.
pub struct Signals {
    /// Set when the turn is cancelled.
    pub stop: watch::Sender<bool>,
    /// Set when a client follows its events.
    pub followed: watch::Sender<bool>,
}

#[derive(Default)]
pub struct Registry {
    running: Mutex<HashMap<String, Signals>>,
    stored: Mutex<HashMap<String, watch::Sender<u64>>>,
}

/// A turn registered as running here, until dropped.
pub struct Running {
    registry: Arc<Registry>,
    turn_id: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(mut running) = self.registry.running.lock() {
            running.remove(&self.turn_id);
        }
    }
}

impl Registry {
    /// Registers turn `turn_id` as running here, with its signals.
    pub fn running(self: &Arc<Self>, turn_id: &str, signals: Signals) -> Running {
        if let Ok(mut running) = self.running.lock() {
            running.insert(turn_id.to_owned(), signals);
        }
        Running {
            registry: self.clone(),
            turn_id: turn_id.to_owned(),
        }
    }

    /// Stops turn `turn_id` if it runs here.
    pub fn cancel(&self, turn_id: &str) {
        if let Ok(running) = self.running.lock() {
            if let Some(signals) = running.get(turn_id) {
                signals.stop.send_replace(true);
            }
        }
    }

    /// Tells turn `turn_id` that a client follows it; `false` if it does
    /// not run here.
    pub fn follow(&self, turn_id: &str) -> bool {
        match self.running.lock() {
            Ok(running) => running.get(turn_id).is_some_and(|signals| {
                signals.followed.send_replace(true);
                true
            }),
            Err(_) => false,
        }
    }

    /// Tells followers of `turn_id` that its events up to `last_id` are stored.
    pub fn stored(&self, turn_id: &str, last_id: u64) {
        if let Ok(mut stored) = self.stored.lock() {
            if let Some(tx) = stored.get(turn_id) {
                if tx.receiver_count() == 0 {
                    stored.remove(turn_id);
                } else {
                    tx.send_replace(last_id);
                }
            }
        }
    }

    /// A follower of `turn_id` is done: its watch goes, and the turn's
    /// entry with the last one.
    pub fn unwatch(&self, turn_id: &str, watch: watch::Receiver<u64>) {
        drop(watch);
        if let Ok(mut stored) = self.stored.lock() {
            if stored
                .get(turn_id)
                .is_some_and(|tx| tx.receiver_count() == 0)
            {
                stored.remove(turn_id);
            }
        }
    }

    /// Wakes when a batch of `turn_id`'s events is stored (by this process).
    pub fn watch_stored(&self, turn_id: &str) -> watch::Receiver<u64> {
        match self.stored.lock() {
            Ok(mut stored) => stored
                .entry(turn_id.to_owned())
                .or_insert_with(|| watch::channel(0).0)
                .subscribe(),
            Err(_) => watch::channel(0).1,
        }
    }
}
