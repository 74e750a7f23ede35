//! Repositories: Lambent's entities on the item-store port, one module per
//! entity. The key layout is documented in `docs/DATA_MODEL.md`; every access
//! is one key lookup, one page of one partition, or one small transaction.

pub mod agents;
pub mod audit;
pub mod budgets;
pub mod cascade;
pub mod keys;
pub mod ledger;
pub mod messages;
pub mod models;
pub mod providers;
pub mod rate_limits;
pub mod runs;
pub mod sessions;
pub mod step_journal;
pub mod stream_slots;
pub mod turns;
pub mod usage;
pub mod users;
pub mod workflows;

use rust_decimal::Decimal;

use lambent_core::error::{Error, Result};
use lambent_ports::{Item, ItemStore, Query, StoreCursor, StoreError, TxOp, Value};

/// What a listing asks of the store: a page size and where to continue.
#[derive(Debug, Clone, Default)]
pub struct PageRequest {
    pub limit: usize,
    pub after: Option<StoreCursor>,
}

/// One page of entities and, if more may follow, where the next starts.
#[derive(Debug, Clone)]
pub struct Paged<T> {
    pub items: Vec<T>,
    pub next: Option<StoreCursor>,
}

/// One page of `query` as `page` asks, each item decoded by `decode`.
pub(crate) async fn page_of<T>(
    store: &dyn ItemStore,
    query: Query,
    page: PageRequest,
    decode: impl Fn(&Item) -> Result<T>,
) -> Result<Paged<T>> {
    let found = store
        .query(query.limit(page.limit).after(page.after))
        .await?;
    let items = found.items.iter().map(decode).collect::<Result<_>>()?;
    Ok(Paged {
        items,
        next: found.next,
    })
}

fn corrupt(item: &Item, name: &str) -> Error {
    Error::Internal(format!("item {} lacks a valid {name:?}", item.key))
}

/// A required text attribute.
pub(crate) fn text(item: &Item, name: &str) -> Result<String> {
    item.get_str(name)
        .map(str::to_owned)
        .ok_or_else(|| corrupt(item, name))
}

pub(crate) fn opt_text(item: &Item, name: &str) -> Option<String> {
    item.get_str(name).map(str::to_owned)
}

/// A required number, normalised (`0.00270` reads as `0.0027`), as
/// DynamoDB stores numbers: both backends then answer the same text.
pub(crate) fn decimal(item: &Item, name: &str) -> Result<Decimal> {
    item.get_decimal(name)
        .map(|d| d.normalize())
        .ok_or_else(|| corrupt(item, name))
}

/// An attribute that holds JSON: the repositories keep lists and small
/// documents (tools, tool calls, message parts, templates) as JSON text.
pub(crate) fn json_attr<T: serde::de::DeserializeOwned>(item: &Item, name: &str) -> Result<T> {
    serde_json::from_str(&text(item, name)?)
        .map_err(|_| Error::Internal(format!("item {} has an unreadable {name}", item.key)))
}

/// Like [`json_attr`], for an attribute that may be absent.
pub(crate) fn opt_json_attr<T: serde::de::DeserializeOwned>(
    item: &Item,
    name: &str,
) -> Result<Option<T>> {
    match item.get(name) {
        None => Ok(None),
        Some(_) => json_attr(item, name).map(Some),
    }
}

/// A value as the JSON text an attribute keeps.
pub(crate) fn json_text<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| Error::Internal(format!("not serialisable: {e}")))
}

pub(crate) fn opt_decimal(item: &Item, name: &str) -> Option<Decimal> {
    item.get_decimal(name).map(|d| d.normalize())
}

pub(crate) fn bytes(item: &Item, name: &str) -> Result<Vec<u8>> {
    match item.get(name) {
        Some(Value::B(b)) => Ok(b.clone()),
        _ => Err(corrupt(item, name)),
    }
}

pub(crate) fn whole(item: &Item, name: &str) -> Result<i64> {
    use rust_decimal::prelude::ToPrimitive;
    decimal(item, name)?
        .to_i64()
        .ok_or_else(|| corrupt(item, name))
}

/// A required count (tokens, messages): a whole number, never below zero.
pub(crate) fn count(item: &Item, name: &str) -> Result<u64> {
    Ok(whole(item, name)?.max(0) as u64)
}

/// The part of a sort key after its type prefix (`AGENT#agt_1` -> `agt_1`).
pub(crate) fn id_after<'a>(item: &'a Item, prefix: &str) -> Result<&'a str> {
    item.key
        .sk
        .strip_prefix(prefix)
        .ok_or_else(|| corrupt(item, "sk"))
}

/// The shard of `id` among `shards` partitions: FNV-1a, stable across
/// processes and versions, since stored keys depend on it.
pub(crate) fn shard_of(id: &str, shards: u32) -> u32 {
    id.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    }) % shards
}

/// Attempts of a transaction that meets concurrent writers (DynamoDB
/// cancels transactions that touch an item another transaction is writing).
const TRANSACT_ATTEMPTS: u32 = 6;

/// Runs a transaction, retrying conflicts with concurrent writers with
/// growing pauses, half of each at random, so writers that met once do not
/// meet again. A failed condition is returned at once.
pub async fn transact_retrying(store: &dyn ItemStore, ops: Vec<TxOp>) -> Result<(), StoreError> {
    let mut attempt = 0;
    loop {
        match store.transact(ops.clone()).await {
            Err(StoreError::Conflict) if attempt + 1 < TRANSACT_ATTEMPTS => {
                attempt += 1;
                let ceiling_us = 10_000u64 << attempt;
                let roll = u64::from(u16::from_le_bytes(lambent_core::ids::random_bytes::<2>()));
                let pause_us = ceiling_us / 2 + roll % (ceiling_us / 2);
                tokio::time::sleep(std::time::Duration::from_micros(pause_us)).await;
            }
            other => return other,
        }
    }
}
