//! The call ledger: one item per model call whose accounting is not done
//! yet, so that no call goes unbilled and no reservation leaks, whatever
//! fails. An entry `LEDGER#<shard>/CALL#<call id>` (call IDs sort by time)
//! holds what the call's accounting needs (its *bill*: owner, prices,
//! reservation, where it is recorded), and once the reply is in, its
//! *outcome* (text, usage, stop reason): the settle intent.
//!
//! - It is written with the reservation, in the same transaction, so a
//!   reservation always has its entry; and again with the outcome before
//!   the settle (the outbox write).
//! - Whatever accounts for the call consumes the entry with a conditional
//!   delete in its own transaction: the settle, the workflow step's
//!   checkpoint, a release, or the sweeper. Only one of them can, so a
//!   reservation is settled or released exactly once.
//! - The sweeper (`lambent_app::sweeper`) reads the oldest entries of each
//!   shard: it finishes the settle of an entry with an outcome, and
//!   releases the reservation of an entry without one once it is older
//!   than any call can run.
//!
//! Entries are spread over [`SHARDS`] partitions by call ID, so concurrent
//! calls do not write one hot partition.

use lambent_ports::{Condition, Item, ItemStore, Key, Query, StoreCursor};
use rust_decimal::prelude::ToPrimitive;

use super::{json_attr, opt_text};
use lambent_core::error::Result;
use rust_decimal::Decimal;

/// Partitions the ledger is spread over.
pub const SHARDS: u32 = 8;
/// How long an entry may be forgotten in the table at worst (a safety net
/// of TTL: the sweeper removes entries long before).
const RETENTION_SECS: i64 = 35 * 86_400;

fn shard_of(call_id: &str) -> u32 {
    crate::shard_of(call_id, SHARDS)
}

fn partition(shard: u32) -> String {
    format!("LEDGER#{shard}")
}

pub fn entry_key(call_id: &str) -> Key {
    Key::new(partition(shard_of(call_id)), format!("CALL#{call_id}"))
}

/// What a call holds until it settles. A reservation that holds anything
/// has its entry in the call ledger (this ledger), written with it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Reservation {
    /// The call it is for: its ledger entry's key.
    pub call_id: String,
    pub owner: String,
    /// `yyyy-mm` the call counts in (the month it started).
    pub month: String,
    /// Reserved on the user's month.
    pub month_amount: Decimal,
    /// Reserved on the session (its ID and the amount).
    pub session: Option<(String, Decimal)>,
}

impl Reservation {
    /// Nothing reserved (no limit applies), for `owner` in `month`.
    pub fn none(call_id: &str, owner: &str, month: &str) -> Reservation {
        Reservation {
            call_id: call_id.to_owned(),
            owner: owner.to_owned(),
            month: month.to_owned(),
            month_amount: Decimal::ZERO,
            session: None,
        }
    }

    /// The session's share of the reservation, if any.
    pub fn session_amount(&self) -> Decimal {
        self.session.as_ref().map_or(Decimal::ZERO, |(_, a)| *a)
    }

    /// Whether anything is held (and so has a ledger entry).
    pub fn holds(&self) -> bool {
        !self.month_amount.is_zero() || self.session.is_some()
    }

    /// The same call with nothing held: what is left of it once its
    /// reservation was released by someone else (the sweeper).
    pub fn released(&self) -> Reservation {
        Reservation::none(&self.call_id, &self.owner, &self.month)
    }
}

/// An entry as read back by the sweeper.
#[derive(Debug, Clone)]
pub struct Entry {
    pub reservation: Reservation,
    /// The call's bill (JSON, written and read by the model-call pipeline).
    pub bill: Option<String>,
    /// Its outcome once the reply is in (JSON): with the bill, the settle
    /// intent.
    pub outcome: Option<String>,
    /// When the entry was last written, epoch milliseconds.
    pub written_at_ms: i64,
}

#[derive(Debug, Clone)]
pub struct Intent {
    pub bill: String,
    pub outcome: String,
}

/// The entry of a call, written with its reservation (or, holding none,
/// with the user's message of a session turn): what the sweeper needs to
/// give the reservation back and mark the turn if the call's process dies.
pub fn reserved_entry(reservation: &Reservation, bill: &str, now_ms: i64) -> Item {
    Item::new(entry_key(&reservation.call_id))
        .with("bill", bill)
        // Strings and decimals: serialising cannot fail.
        .with(
            "reservation",
            serde_json::to_string(reservation).unwrap_or_default(),
        )
        .with("written_at", now_ms)
        .expiring_at(now_ms / 1_000 + RETENTION_SECS)
}

/// The settle intent of a call: its entry with its bill and outcome.
fn intent_entry(reservation: &Reservation, intent: &Intent, now_ms: i64) -> Item {
    reserved_entry(reservation, &intent.bill, now_ms).with("outcome", intent.outcome.as_str())
}

/// Writes a call's settle intent, before its settle is tried (the outbox
/// write). With a reservation held, its entry must still be there: if it
/// is not, its reservation was released (or the call accounted for), and
/// `Ok(false)` says so.
pub async fn write_intent(
    store: &dyn ItemStore,
    reservation: &Reservation,
    intent: &Intent,
    now_ms: i64,
) -> Result<bool> {
    let condition = reservation.holds().then(present);
    match store
        .put(intent_entry(reservation, intent, now_ms), condition)
        .await
    {
        Ok(()) => Ok(true),
        Err(e) if e.is_condition_failure() => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// The condition under which a transaction consumes an entry: it is still
/// there (nothing else accounted for the call).
pub fn present() -> Condition {
    Condition::Exists
}

/// The condition under which the sweeper releases an entry's reservation:
/// still there, and its call never reported an outcome.
pub fn abandoned() -> Condition {
    Condition::And(vec![
        Condition::Exists,
        Condition::AttrNotExists("outcome".into()),
    ])
}

/// Removes an entry whose call was accounted for by other means.
pub async fn forget(store: &dyn ItemStore, call_id: &str) -> Result<()> {
    store.delete(&entry_key(call_id), None).await?;
    Ok(())
}

/// The oldest entries of `shard`, at most `limit`, after `after`.
pub async fn oldest(
    store: &dyn ItemStore,
    shard: u32,
    limit: usize,
    after: Option<StoreCursor>,
) -> Result<(Vec<Entry>, Option<StoreCursor>)> {
    let page = store
        .query(
            Query::partition(partition(shard))
                .prefix("CALL#")
                .limit(limit)
                .after(after),
        )
        .await?;
    let mut entries = Vec::with_capacity(page.items.len());
    for item in &page.items {
        entries.push(Entry {
            reservation: json_attr(item, "reservation")?,
            bill: opt_text(item, "bill"),
            outcome: opt_text(item, "outcome"),
            written_at_ms: item
                .get_decimal("written_at")
                .and_then(|d| d.to_i64())
                .unwrap_or(0),
        });
    }
    Ok((entries, page.next))
}
