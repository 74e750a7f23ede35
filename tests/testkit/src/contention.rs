//! An item store that conflicts on contention as DynamoDB does, around a
//! real adapter: a transaction that touches an item another write in flight
//! touches is cancelled (`TransactionConflict`), and so is a single write
//! to an item an in-flight transaction touches. Each transaction stays in
//! flight at least `hold` (DynamoDB's transactions take milliseconds; the
//! embedded store's take microseconds, which would hide every overlap).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use lambent_ports::store::StoreResult;
use lambent_ports::{Condition, Item, ItemStore, Key, Page, Query, StoreError, TxOp, Update};

/// Writes in flight per item, and whether a transaction is among them.
#[derive(Default)]
struct InFlight {
    writes: u32,
    transactions: u32,
}

/// The contended store's state, shared with the test that reads its counts.
#[derive(Default)]
pub struct Contention {
    hold: Duration,
    in_flight: Mutex<HashMap<Key, InFlight>>,
    cancelled: AtomicU64,
    transactions: AtomicU64,
}

impl Contention {
    /// Transactions stay in flight at least `hold`.
    pub fn new(hold: Duration) -> Arc<Contention> {
        Arc::new(Contention {
            hold,
            ..Contention::default()
        })
    }

    /// Writes cancelled for touching an item another write had in flight.
    pub fn cancelled(&self) -> u64 {
        self.cancelled.load(Ordering::SeqCst)
    }

    /// Transactions attempted.
    pub fn transactions(&self) -> u64 {
        self.transactions.load(Ordering::SeqCst)
    }

    /// Marks `keys` in flight, unless one of them conflicts: a transaction
    /// conflicts with any write in flight on its items, a single write
    /// with an in-flight transaction.
    fn enter(&self, keys: &[Key], transaction: bool) -> Result<(), StoreError> {
        let mut in_flight = self.in_flight.lock().unwrap();
        let conflicts = keys.iter().any(|key| {
            in_flight
                .get(key)
                .is_some_and(|f| f.transactions > 0 || (transaction && f.writes > 0))
        });
        if conflicts {
            self.cancelled.fetch_add(1, Ordering::SeqCst);
            return Err(StoreError::Conflict);
        }
        for key in keys {
            let f = in_flight.entry(key.clone()).or_default();
            f.writes += 1;
            f.transactions += u32::from(transaction);
        }
        Ok(())
    }

    fn leave(&self, keys: &[Key], transaction: bool) {
        let mut in_flight = self.in_flight.lock().unwrap();
        for key in keys {
            if let Some(f) = in_flight.get_mut(key) {
                f.writes -= 1;
                f.transactions -= u32::from(transaction);
                if f.writes == 0 {
                    in_flight.remove(key);
                }
            }
        }
    }
}

/// Leaves the in-flight set however the write ends (a cancelled future too).
struct Flight<'a> {
    contention: &'a Contention,
    keys: Vec<Key>,
    transaction: bool,
}

impl Drop for Flight<'_> {
    fn drop(&mut self) {
        self.contention.leave(&self.keys, self.transaction);
    }
}

/// A store whose writes conflict as [`Contention`] says, forwarded to `inner`.
pub struct ContendedStore {
    inner: Arc<dyn ItemStore>,
    contention: Arc<Contention>,
}

impl ContendedStore {
    pub fn new(inner: Arc<dyn ItemStore>, contention: Arc<Contention>) -> ContendedStore {
        ContendedStore { inner, contention }
    }

    fn fly(&self, keys: Vec<Key>, transaction: bool) -> StoreResult<Flight<'_>> {
        self.contention.enter(&keys, transaction)?;
        Ok(Flight {
            contention: &self.contention,
            keys,
            transaction,
        })
    }
}

#[async_trait]
impl ItemStore for ContendedStore {
    async fn get(&self, key: &Key) -> StoreResult<Option<Item>> {
        self.inner.get(key).await
    }

    async fn put(&self, item: Item, condition: Option<Condition>) -> StoreResult<()> {
        let _flight = self.fly(vec![item.key.clone()], false)?;
        self.inner.put(item, condition).await
    }

    async fn update(
        &self,
        key: &Key,
        update: Update,
        condition: Option<Condition>,
    ) -> StoreResult<Item> {
        let _flight = self.fly(vec![key.clone()], false)?;
        self.inner.update(key, update, condition).await
    }

    async fn delete(&self, key: &Key, condition: Option<Condition>) -> StoreResult<Option<Item>> {
        let _flight = self.fly(vec![key.clone()], false)?;
        self.inner.delete(key, condition).await
    }

    async fn query(&self, query: Query) -> StoreResult<Page> {
        self.inner.query(query).await
    }

    async fn transact(&self, ops: Vec<TxOp>) -> StoreResult<()> {
        self.contention.transactions.fetch_add(1, Ordering::SeqCst);
        let keys = ops.iter().map(|op| op.key().clone()).collect();
        let _flight = self.fly(keys, true)?;
        let (written, ()) = tokio::join!(
            self.inner.transact(ops),
            tokio::time::sleep(self.contention.hold)
        );
        written
    }

    async fn ping(&self) -> StoreResult<()> {
        self.inner.ping().await
    }
}

/// `lambent serve`'s store wrapped in a [`ContendedStore`].
pub fn layer(contention: Arc<Contention>) -> lambent_local::serve::StoreLayer {
    lambent_local::serve::StoreLayer::new(move |inner| {
        Arc::new(ContendedStore::new(inner, contention.clone())) as Arc<dyn ItemStore>
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(sk: &str) -> Key {
        Key::new("P", sk)
    }

    #[test]
    fn a_transaction_meeting_any_write_in_flight_is_cancelled_and_a_lone_write_only_by_a_transaction(
    ) {
        let c = Contention::new(Duration::ZERO);
        c.enter(&[key("a"), key("b")], true).unwrap();
        assert!(matches!(
            c.enter(&[key("b"), key("c")], true),
            Err(StoreError::Conflict)
        ));
        assert!(matches!(
            c.enter(&[key("a")], false),
            Err(StoreError::Conflict)
        ));
        // Items nobody holds are free.
        c.enter(&[key("c")], true).unwrap();
        c.leave(&[key("a"), key("b")], true);
        c.leave(&[key("c")], true);
        // Two lone writes to one item go one after the other, as DynamoDB's do;
        // a transaction among them is cancelled.
        c.enter(&[key("a")], false).unwrap();
        c.enter(&[key("a")], false).unwrap();
        assert!(matches!(
            c.enter(&[key("a")], true),
            Err(StoreError::Conflict)
        ));
        c.leave(&[key("a")], false);
        c.leave(&[key("a")], false);
        c.enter(&[key("a")], true).unwrap();
        assert_eq!(c.cancelled(), 3);
        assert!(c.in_flight.lock().unwrap().len() == 1);
    }
}
