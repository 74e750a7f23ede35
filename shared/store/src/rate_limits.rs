//! Per-key rate limits, counted in the store so they hold across every Lambda
//! instance: one fixed window per key (`RATE#<key id>/WINDOW#<start>`), one
//! conditional `ADD` per request, expiring after the window.

use rust_decimal::Decimal;

use lambent_core::error::{Error, Result};
use lambent_ports::{Cmp, Condition, ItemStore, Key, Update};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// Requests allowed per window; 0 turns limiting off.
    pub requests: u64,
    pub window_secs: u64,
}

/// Counts one request of `key_id` at `now` (epoch seconds), or answers 429
/// with the seconds until the window ends.
pub async fn take(store: &dyn ItemStore, key_id: &str, limit: Limit, now: i64) -> Result<()> {
    if limit.requests == 0 || limit.window_secs == 0 {
        return Ok(());
    }
    let window = limit.window_secs as i64;
    let start = now - now.rem_euclid(window);
    let end = start + window;
    let key = Key::new(format!("RATE#{key_id}"), format!("WINDOW#{start}"));
    let under_limit = Condition::Or(vec![
        Condition::AttrNotExists("count".into()),
        Condition::cmp("count", Cmp::Lt, limit.requests as i64),
    ]);
    let update = Update::new()
        .add("count", Decimal::ONE)
        // Kept a window past its end, then DynamoDB's TTL removes it.
        .expire_at(Some(end + window));
    match store.update(&key, update, Some(under_limit)).await {
        Ok(_) => Ok(()),
        Err(e) if e.is_condition_failure() => Err(Error::RateLimited {
            retry_after_secs: (end - now).max(1) as u64,
        }),
        Err(e) => Err(e.into()),
    }
}
