//! Deleting an owner and everything it owns, without orphans. An item in an
//! owner's partition may point at what belongs to it elsewhere:
//! `cascade_partition` names a whole partition (a session's messages, a run's
//! steps), `cascade_pk` + `cascade_sk` one item (an API key's lookup record).
//! Those go before the item that points at them, so a crash midway leaves
//! nothing unreachable, and a rerun resumes.

use lambent_core::error::Result;
use lambent_ports::{Item, ItemStore, Key, Query, StoreCursor, TxOp};

pub const PARTITION_ATTR: &str = "cascade_partition";
pub const ITEM_PK_ATTR: &str = "cascade_pk";
pub const ITEM_SK_ATTR: &str = "cascade_sk";

/// Items deleted per transaction.
const DELETE_BATCH: usize = 25;
/// Sort key of the owner's own record, deleted last by its repository.
const OWNER_RECORD: &str = "PROFILE";

/// Marks `item` as owning the partition `pk`.
pub fn owns_partition(item: Item, pk: &str) -> Item {
    item.with(PARTITION_ATTR, pk)
}

/// Marks `item` as owning the item at `key`.
pub fn owns_item(item: Item, key: &Key) -> Item {
    item.with(ITEM_PK_ATTR, key.pk.as_str())
        .with(ITEM_SK_ATTR, key.sk.as_str())
}

/// Deletes every item of `partition` (but its owner record) and what each
/// points to, walking the sort-key prefixes in the given order.
pub async fn delete_owned(store: &dyn ItemStore, partition: &str, prefixes: &[&str]) -> Result<()> {
    for prefix in prefixes {
        let mut after: Option<StoreCursor> = None;
        loop {
            let page = store
                .query(
                    Query::partition(partition)
                        .prefix(*prefix)
                        .limit(DELETE_BATCH)
                        .after(after.take()),
                )
                .await?;
            let mut doomed = Vec::new();
            for item in &page.items {
                if item.key.sk == OWNER_RECORD {
                    continue;
                }
                if let Some(child) = item.get_str(PARTITION_ATTR) {
                    delete_partition(store, child).await?;
                }
                if let (Some(pk), Some(sk)) =
                    (item.get_str(ITEM_PK_ATTR), item.get_str(ITEM_SK_ATTR))
                {
                    doomed.push(Key::new(pk, sk));
                }
                doomed.push(item.key.clone());
            }
            delete_keys(store, doomed).await?;
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
    }
    Ok(())
}

/// Deletes a whole partition, page by page.
pub async fn delete_partition(store: &dyn ItemStore, partition: &str) -> Result<()> {
    loop {
        let page = store
            .query(Query::partition(partition).limit(DELETE_BATCH))
            .await?;
        let keys: Vec<Key> = page.items.into_iter().map(|i| i.key).collect();
        if keys.is_empty() {
            return Ok(());
        }
        delete_keys(store, keys).await?;
    }
}

async fn delete_keys(store: &dyn ItemStore, mut keys: Vec<Key>) -> Result<()> {
    keys.sort();
    keys.dedup();
    for chunk in keys.chunks(DELETE_BATCH) {
        let ops = chunk
            .iter()
            .map(|key| TxOp::Delete {
                key: key.clone(),
                condition: None,
            })
            .collect();
        store.transact(ops).await?;
    }
    Ok(())
}
