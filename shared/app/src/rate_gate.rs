//! A user's rate limit without a store round trip in front of each request.
//! The bucket lives in the store (`lambent_store::rate_limits`), shared by
//! every process; this process remembers the bucket's `tat` as its last write
//! returned it, plus the requests it let through since. While that estimate
//! shows the bucket at most half full, a request passes at once and its
//! count is written beside it; nearer the limit (or for a user this process
//! has not seen), the request waits for the store's answer, as before.
//!
//! So the limit can be passed only by what other processes let through
//! between two of this one's writes, each of them within half a burst; a
//! sustained flood is refused as before, since each write it makes moves the
//! bucket.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use lambent_core::error::{Error, Result};
use lambent_ports::ItemStore;
use lambent_store::rate_limits::{self, Limit};
use tracing::Instrument;

/// Users remembered at most; past that the memory starts over.
const MAX_USERS: usize = 100_000;

#[derive(Default)]
pub struct RateGate {
    known: Mutex<HashMap<String, Bucket>>,
}

/// What this process knows of a user's bucket.
#[derive(Clone, Copy)]
struct Bucket {
    /// `tat` as the store last wrote it, µs.
    tat_us: i64,
    /// Requests let through whose counts are still being written.
    unwritten: i64,
}

impl RateGate {
    /// Lets one request of `user_id` through at `now_millis`, or answers 429.
    pub async fn take(
        self: &Arc<Self>,
        store: &Arc<dyn ItemStore>,
        user_id: &str,
        limit: Limit,
        now_millis: i64,
    ) -> Result<()> {
        if limit.is_off() {
            return Ok(());
        }
        let known_tat = self.known_tat(user_id);
        if self.pass_at_once(user_id, limit, now_millis * 1_000) {
            let (gate, store, user) = (self.clone(), store.clone(), user_id.to_owned());
            tokio::spawn(
                async move {
                    let written =
                        rate_limits::take(store.as_ref(), &user, limit, now_millis, known_tat)
                            .await;
                    gate.written(&user, limit, now_millis * 1_000, true, &written);
                }
                .in_current_span(),
            );
            return Ok(());
        }
        let written =
            rate_limits::take(store.as_ref(), user_id, limit, now_millis, known_tat).await;
        self.written(user_id, limit, now_millis * 1_000, false, &written);
        written.map(|_| ())
    }

    /// The bucket's `tat` as this process last saw it written, if it has.
    fn known_tat(&self, user_id: &str) -> Option<i64> {
        let known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        known.get(user_id).map(|bucket| bucket.tat_us)
    }

    /// Whether the bucket, as this process knows it, is at most half full
    /// with this request; if so the request is counted as unwritten.
    fn pass_at_once(&self, user_id: &str, limit: Limit, now_us: i64) -> bool {
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        let Some(bucket) = known.get_mut(user_id) else {
            return false;
        };
        let ahead =
            bucket.tat_us.max(now_us) + limit.interval_us() * (bucket.unwritten + 1) - now_us;
        if ahead > limit.tolerance_us() / 2 {
            return false;
        }
        bucket.unwritten += 1;
        true
    }

    /// Remembers what a write of the bucket answered.
    fn written(
        &self,
        user_id: &str,
        limit: Limit,
        now_us: i64,
        passed: bool,
        written: &Result<i64>,
    ) {
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        if known.len() >= MAX_USERS && !known.contains_key(user_id) {
            known.clear();
        }
        let bucket = known.entry(user_id.to_owned()).or_insert(Bucket {
            tat_us: 0,
            unwritten: 0,
        });
        if passed {
            bucket.unwritten = (bucket.unwritten - 1).max(0);
        }
        match written {
            Ok(tat_us) => bucket.tat_us = bucket.tat_us.max(*tat_us),
            // Full: the next requests wait for the store until a write
            // shows room again.
            Err(Error::RateLimited { .. }) => {
                bucket.tat_us = bucket
                    .tat_us
                    .max(now_us + limit.tolerance_us() + limit.interval_us())
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Limit = Limit {
        requests: 10,
        window_secs: 10,
    };

    #[test]
    fn a_user_not_seen_yet_waits_for_the_store_and_one_seen_passes_until_half_the_burst() {
        let gate = RateGate::default();
        let now = 1_000_000_000_000;
        assert!(!gate.pass_at_once("u", LIMIT, now));
        // The store's first write: one interval taken.
        gate.written("u", LIMIT, now, false, &Ok(now + LIMIT.interval_us()));
        // The burst is 9 intervals (10 requests); half of it is 4.5, so
        // three more pass at once (4 in all), the fifth waits.
        for _ in 0..3 {
            assert!(gate.pass_at_once("u", LIMIT, now));
        }
        assert!(!gate.pass_at_once("u", LIMIT, now));
        // Their counts land: the bucket shows 4 taken.
        for n in 2..=4 {
            gate.written("u", LIMIT, now, true, &Ok(now + n * LIMIT.interval_us()));
        }
        assert!(!gate.pass_at_once("u", LIMIT, now));
        // Time drains the bucket.
        assert!(gate.pass_at_once("u", LIMIT, now + 10 * LIMIT.interval_us()));
    }

    #[test]
    fn a_refusal_makes_the_next_requests_wait_for_the_store() {
        let gate = RateGate::default();
        let now = 1_000_000_000_000;
        gate.written("u", LIMIT, now, false, &Ok(now + LIMIT.interval_us()));
        assert!(gate.pass_at_once("u", LIMIT, now));
        gate.written(
            "u",
            LIMIT,
            now,
            true,
            &Err(Error::RateLimited {
                retry_after_secs: 1,
            }),
        );
        assert!(!gate.pass_at_once("u", LIMIT, now + LIMIT.interval_us()));
    }
}
