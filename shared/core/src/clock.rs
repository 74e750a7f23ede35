//! The time Lambent decides by: when an item or a session expires, when a
//! queued message is visible again, the day a cost counts in. Injected (the
//! state and the embedded adapters hold one), so a test moves a
//! [`ManualClock`] instead of sleeping on the wall clock.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Milliseconds since the Unix epoch.
    fn now_millis(&self) -> i64;

    /// Seconds since the Unix epoch (DynamoDB's TTL unit).
    fn now_secs(&self) -> i64 {
        self.now_millis().div_euclid(1000)
    }

    /// The UTC day, `yyyy-mm-dd`.
    fn today(&self) -> String {
        crate::time::day_of_epoch_secs(self.now_secs())
    }
}

/// The operating system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_millis(&self) -> i64 {
        crate::time::now_epoch_millis()
    }
}

/// The wall clock, shared.
pub fn system() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

/// A clock that moves only when told to; it starts at the wall clock's now.
#[derive(Debug)]
pub struct ManualClock {
    millis: AtomicI64,
}

impl ManualClock {
    pub fn starting_now() -> Arc<ManualClock> {
        Arc::new(ManualClock {
            millis: AtomicI64::new(crate::time::now_epoch_millis()),
        })
    }

    pub fn advance(&self, by: Duration) {
        let by = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.millis.fetch_add(by, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_millis(&self) -> i64 {
        self.millis.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let clock = ManualClock::starting_now();
        let start = clock.now_millis();
        assert!((start - SystemClock.now_millis()).abs() < 60_000);
        clock.advance(Duration::from_millis(1_500));
        assert_eq!(clock.now_millis(), start + 1_500);
        assert_eq!(clock.now_secs(), (start + 1_500).div_euclid(1000));
        clock.advance(Duration::from_secs(86_400));
        assert_ne!(clock.today(), SystemClock.today());
    }
}
