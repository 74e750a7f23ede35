//! The cap on a user's concurrent streams. A user has `max` slots
//! (`STREAMS#<user>/SLOT#<n>`); a stream holds one as a lease that its
//! process renews while it runs and deletes when it ends. A process that
//! dies leaves its lease to run out, so a crash costs a user a slot for at
//! most one lease, never for good. Taking a slot is one conditional put
//! (empty, or its lease ran out), starting from a random slot so concurrent
//! streams rarely try the same one.

use lambent_core::error::{Error, Result};
use lambent_ports::{Cmp, Condition, Item, ItemStore, Key};

fn slot_key(user_id: &str, index: u32) -> Key {
    Key::new(format!("STREAMS#{user_id}"), format!("SLOT#{index}"))
}

/// A slot held by one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    key: Key,
    holder: String,
}

fn lease(slot: &Slot, until_millis: i64) -> Item {
    Item::new(slot.key.clone())
        .with("holder", slot.holder.as_str())
        .with("until", until_millis)
        // Gone from the table a minute after its lease ran out.
        .expiring_at(until_millis / 1_000 + 60)
}

/// Takes one of `user_id`'s `max` slots until `until_millis`, or answers
/// 429 `too_many_streams`.
pub async fn acquire(
    store: &dyn ItemStore,
    user_id: &str,
    max: u32,
    now_millis: i64,
    until_millis: i64,
) -> Result<Slot> {
    let holder = lambent_core::ids::new_id("strm");
    let first = u32::from_le_bytes(lambent_core::ids::random_bytes::<4>()) % max.max(1);
    for n in 0..max {
        let slot = Slot {
            key: slot_key(user_id, (first + n) % max),
            holder: holder.clone(),
        };
        let free = Condition::Or(vec![
            Condition::NotExists,
            Condition::cmp("until", Cmp::Lt, now_millis),
        ]);
        match store.put(lease(&slot, until_millis), Some(free)).await {
            Ok(()) => return Ok(slot),
            Err(e) if e.is_condition_failure() => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::TooManyStreams { max })
}

/// Extends the lease of a slot this stream still holds.
pub async fn renew(store: &dyn ItemStore, slot: &Slot, until_millis: i64) -> Result<()> {
    let mine = Condition::eq("holder", slot.holder.as_str());
    match store.put(lease(slot, until_millis), Some(mine)).await {
        Ok(()) => Ok(()),
        // Its lease ran out and another stream took it: the cap is kept by
        // that stream's lease; this one runs to its end.
        Err(e) if e.is_condition_failure() => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Gives the slot back, unless another stream took it meanwhile.
pub async fn release(store: &dyn ItemStore, slot: &Slot) -> Result<()> {
    let mine = Condition::eq("holder", slot.holder.as_str());
    match store.delete(&slot.key, Some(mine)).await {
        Ok(_) => Ok(()),
        Err(e) if e.is_condition_failure() => Ok(()),
        Err(e) => Err(e.into()),
    }
}
