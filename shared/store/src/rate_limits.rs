//! Per-user rate limits, counted in the store so they hold across every
//! Lambda instance and every key of the user (keys are free to mint, so a
//! per-key limit would limit nothing).
//!
//! The limit is a token bucket, kept as GCRA (the generic cell rate
//! algorithm): one number per user, the bucket's "theoretical arrival time"
//! `tat` (`RATE#<user>/BUCKET`, microseconds). A request at `now` is allowed
//! when `tat <= now + tolerance`, and moves `tat` to `max(tat, now) +
//! interval`. So a user may burst the whole limit at once and then goes at
//! the steady rate; unlike fixed windows, there is no second burst at a
//! window's edge. DynamoDB conditions cannot compute `max`, so the two cases
//! are two conditional writes: an idle bucket is reset (one round trip, the
//! common case), a busy one is advanced with an `ADD`.

use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;

use lambent_core::error::{Error, Result};
use lambent_ports::{Cmp, Condition, ItemStore, Key, Update};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// Requests allowed per window (also the largest burst); 0 turns
    /// limiting off.
    pub requests: u64,
    pub window_secs: u64,
}

const MICROS: i64 = 1_000_000;
/// A write that raced another on the same bucket is tried again this often.
const ATTEMPTS: usize = 4;

fn bucket_key(user_id: &str) -> Key {
    Key::new(format!("RATE#{user_id}"), "BUCKET")
}

impl Limit {
    pub fn is_off(&self) -> bool {
        self.requests == 0 || self.window_secs == 0
    }

    /// The time one request takes up in the bucket, µs.
    pub fn interval_us(&self) -> i64 {
        (self.window_us() / self.requests.max(1) as i64).max(1)
    }

    /// How far ahead of now the bucket's `tat` may be for a request to
    /// pass, µs: the burst.
    pub fn tolerance_us(&self) -> i64 {
        self.window_us() - self.interval_us()
    }

    fn window_us(&self) -> i64 {
        self.window_secs as i64 * MICROS
    }
}

/// Counts one request of `user_id` at `now_millis`, or answers 429 with
/// the seconds until the next request would be allowed. Returns the
/// bucket's `tat` as written (µs; 0 with no limit). `known_tat`: the `tat`
/// the caller last saw; when it is still ahead of now, the bucket is busy,
/// and the write that counts a busy bucket is tried first (the idle
/// reset would only fail first: two writes instead of one).
pub async fn take(
    store: &dyn ItemStore,
    user_id: &str,
    limit: Limit,
    now_millis: i64,
    known_tat: Option<i64>,
) -> Result<i64> {
    if limit.is_off() {
        return Ok(0);
    }
    let interval = limit.interval_us();
    let tolerance = limit.tolerance_us();
    let now = now_millis * 1_000;
    let key = bucket_key(user_id);
    // Kept a window past the bucket's last use, then DynamoDB's TTL removes it.
    let expires = now_millis / 1_000 + 2 * limit.window_secs as i64 + 1;
    let busy_first = known_tat.is_some_and(|tat| tat >= now);
    for _ in 0..ATTEMPTS {
        for busy in [busy_first, !busy_first] {
            let written = match busy {
                false => {
                    let idle = Condition::Or(vec![
                        Condition::AttrNotExists("tat".into()),
                        Condition::cmp("tat", Cmp::Lt, now),
                    ]);
                    let reset = Update::new()
                        .set("tat", now + interval)
                        .expire_at(Some(expires));
                    store.update(&key, reset, Some(idle)).await
                }
                true => {
                    let room = Condition::And(vec![
                        Condition::cmp("tat", Cmp::Ge, now),
                        Condition::cmp("tat", Cmp::Le, now + tolerance),
                    ]);
                    let advance = Update::new()
                        .add("tat", Decimal::from(interval))
                        .expire_at(Some(expires));
                    store.update(&key, advance, Some(room)).await
                }
            };
            match written {
                Ok(item) => return Ok(tat_of(&item).unwrap_or(now + interval)),
                Err(e) if e.is_condition_failure() => {}
                Err(e) => return Err(e.into()),
            }
        }
        // Neither idle nor with room: full, unless another request moved
        // the bucket between the two writes.
        let tat = store.get(&key).await?.as_ref().and_then(tat_of);
        if let Some(tat) = tat {
            if tat > now + tolerance {
                let wait = tat - tolerance - now;
                return Err(Error::RateLimited {
                    retry_after_secs: (wait as u64).div_ceil(MICROS as u64).max(1),
                });
            }
        }
    }
    // Contended beyond reason: refuse rather than count wrongly.
    Err(Error::RateLimited {
        retry_after_secs: 1,
    })
}

fn tat_of(item: &lambent_ports::Item) -> Option<i64> {
    item.get_decimal("tat").and_then(|tat| tat.to_i64())
}
