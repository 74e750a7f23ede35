//! Fault injection around a real item store: the writes a test names fail
//! the way DynamoDB's do (the service is unreachable, a transaction
//! conflicts, or a write lands and its answer is lost to a timeout), while
//! reads and every other write go to the real adapter untouched.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use lambent_ports::store::StoreResult;
use lambent_ports::{Condition, Item, ItemStore, Key, Page, Query, StoreError, TxOp, Update};

/// How an injected failure looks to the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Nothing is written; the store answers that it is unavailable.
    Unavailable,
    /// Nothing is written; a transaction conflicts with another (DynamoDB's
    /// `TransactionConflict`), which callers may retry.
    Conflict,
    /// The write lands, but its answer is lost: the caller sees a timeout.
    LostAnswer,
}

type KeyMatch = Box<dyn Fn(&Key) -> bool + Send + Sync>;

/// Which writes fail: those touching a matching key, after `skip` of them
/// have passed, `times` times.
struct Rule {
    matches: KeyMatch,
    skip: u64,
    times: u64,
    fault: Fault,
}

/// What the faulty store does, changeable while it runs.
#[derive(Default)]
pub struct Faults {
    rules: Mutex<Vec<Rule>>,
    /// Fails this many writes per 10,000, at random.
    random_per_10k: AtomicU64,
    injected: AtomicU64,
    writes: AtomicU64,
}

impl Faults {
    pub fn new() -> Arc<Faults> {
        Arc::new(Faults::default())
    }

    /// Fails the `times` writes that touch a key matching `matches`, after
    /// the first `skip` such writes have gone through.
    pub fn fail_writes(
        &self,
        matches: impl Fn(&Key) -> bool + Send + Sync + 'static,
        skip: u64,
        times: u64,
        fault: Fault,
    ) {
        self.rules.lock().unwrap().push(Rule {
            matches: Box::new(matches),
            skip,
            times,
            fault,
        });
    }

    /// Fails the `n`th write from now (1 = the next one), whatever it touches.
    pub fn fail_nth_write(&self, n: u64, fault: Fault) {
        self.fail_writes(|_| true, n.saturating_sub(1), 1, fault);
    }

    /// Fails `percent` % of all writes at random, as [`Fault::Unavailable`]
    /// or, for a third of them, [`Fault::LostAnswer`].
    pub fn fail_randomly(&self, percent: f64) {
        self.random_per_10k
            .store((percent * 100.0).round() as u64, Ordering::SeqCst);
    }

    /// No more failures.
    pub fn clear(&self) {
        self.rules.lock().unwrap().clear();
        self.random_per_10k.store(0, Ordering::SeqCst);
    }

    /// How many writes failed by injection so far.
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::SeqCst)
    }

    /// How many writes were attempted so far.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::SeqCst)
    }

    /// The fault for a write touching `keys`, if it is to fail.
    fn decide<'a>(&self, keys: impl Iterator<Item = &'a Key> + Clone) -> Option<Fault> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        let fault = self.by_rule(keys).or_else(|| self.by_chance());
        if fault.is_some() {
            self.injected.fetch_add(1, Ordering::SeqCst);
        }
        fault
    }

    fn by_rule<'a>(&self, keys: impl Iterator<Item = &'a Key> + Clone) -> Option<Fault> {
        let mut rules = self.rules.lock().unwrap();
        for rule in rules.iter_mut() {
            if rule.times == 0 || !keys.clone().any(|k| (rule.matches)(k)) {
                continue;
            }
            if rule.skip > 0 {
                rule.skip -= 1;
                continue;
            }
            rule.times -= 1;
            return Some(rule.fault);
        }
        None
    }

    fn by_chance(&self) -> Option<Fault> {
        let per_10k = self.random_per_10k.load(Ordering::SeqCst);
        if per_10k == 0 {
            return None;
        }
        let [a, b, c] = lambent_core::ids::random_bytes::<3>();
        let roll = u64::from(u16::from_le_bytes([a, b])) % 10_000;
        if roll >= per_10k {
            return None;
        }
        Some(if c % 3 == 0 {
            Fault::LostAnswer
        } else {
            Fault::Unavailable
        })
    }
}

/// An item store that fails the writes its [`Faults`] say, and forwards
/// everything else to `inner`.
pub struct FaultyStore {
    inner: Arc<dyn ItemStore>,
    faults: Arc<Faults>,
}

impl FaultyStore {
    pub fn new(inner: Arc<dyn ItemStore>, faults: Arc<Faults>) -> FaultyStore {
        FaultyStore { inner, faults }
    }

    /// Runs `write` unless a fault says otherwise.
    async fn write<T>(
        &self,
        fault: Option<Fault>,
        write: impl std::future::Future<Output = StoreResult<T>>,
    ) -> StoreResult<T> {
        match fault {
            None => write.await,
            Some(Fault::Unavailable) => Err(StoreError::Unavailable("injected fault".into())),
            Some(Fault::Conflict) => Err(StoreError::Conflict),
            Some(Fault::LostAnswer) => {
                let _ = write.await;
                Err(StoreError::Unavailable(
                    "injected fault: timed out after the write".into(),
                ))
            }
        }
    }
}

#[async_trait]
impl ItemStore for FaultyStore {
    async fn get(&self, key: &Key) -> StoreResult<Option<Item>> {
        self.inner.get(key).await
    }

    async fn put(&self, item: Item, condition: Option<Condition>) -> StoreResult<()> {
        let fault = self.faults.decide(std::iter::once(&item.key));
        self.write(fault, self.inner.put(item, condition)).await
    }

    async fn update(
        &self,
        key: &Key,
        update: Update,
        condition: Option<Condition>,
    ) -> StoreResult<Item> {
        let fault = self.faults.decide(std::iter::once(key));
        self.write(fault, self.inner.update(key, update, condition))
            .await
    }

    async fn delete(&self, key: &Key, condition: Option<Condition>) -> StoreResult<Option<Item>> {
        let fault = self.faults.decide(std::iter::once(key));
        self.write(fault, self.inner.delete(key, condition)).await
    }

    async fn query(&self, query: Query) -> StoreResult<Page> {
        self.inner.query(query).await
    }

    async fn transact(&self, ops: Vec<TxOp>) -> StoreResult<()> {
        let fault = self.faults.decide(ops.iter().map(TxOp::key));
        let fault = match fault {
            // A conflict is how a transaction fails; a lone write cannot.
            Some(Fault::Conflict) if ops.len() < 2 => Some(Fault::Unavailable),
            other => other,
        };
        self.write(fault, self.inner.transact(ops.clone())).await
    }

    async fn ping(&self) -> StoreResult<()> {
        self.inner.ping().await
    }
}

/// `lambent serve`'s store wrapped in a [`FaultyStore`] driven by `faults`.
pub fn layer(faults: Arc<Faults>) -> lambent_local::serve::StoreLayer {
    lambent_local::serve::StoreLayer::new(move |inner| {
        Arc::new(FaultyStore::new(inner, faults.clone())) as Arc<dyn ItemStore>
    })
}
