//! DynamoDB capacity units, counted through the item-store port: a store
//! wrapper ([`UnitStore`]) that records, for every call, what DynamoDB
//! would charge for it, from the sizes of the items as the DynamoDB adapter
//! stores them ([`item_size`]: the adapter's own mapping,
//! `lambent_aws::dynamodb::item_to_attributes`, sized by DynamoDB's rules).
//!
//! The rules, from the DynamoDB developer guide ("DynamoDB item sizes and
//! formats", "DynamoDB read and write operations", "Capacity management for
//! transactions"):
//!
//! * an item's size is the sum of its attributes' names (UTF-8 bytes) and
//!   values: a string its UTF-8 bytes, a binary its raw bytes, a number a
//!   byte per two significant digits plus one, a boolean or a null 1 byte, a
//!   list or a map 3 bytes plus 1 byte and the size of each element;
//! * a write consumes one write unit per 1 KB of the item, rounded up (at
//!   least one): a put or an update the larger of the item before and
//!   after, a delete the deleted item; a conditional write whose condition
//!   fails still consumes (the item's size, or one unit if it does not
//!   exist);
//! * a read consumes one read unit per 4 KB, rounded up, strongly
//!   consistent; half that eventually consistent; twice that
//!   transactional; a `GetItem` of a missing item one unit (strong); a
//!   `Query` sums the sizes of the items it read, then rounds up once;
//! * a transaction's items cost twice: DynamoDB prepares and commits each.
//!   Not in the guide: a `ConditionCheck` is charged as a transactional
//!   write of the item checked (what DynamoDB reports: 2 units for a small
//!   item), and a cancelled transaction as if it had committed (an upper
//!   bound: DynamoDB returns no consumed capacity with the cancellation). A failed conditional write of an existing item is
//!   charged the larger of the item and the one it would have written.
//!
//! The adapter reads strongly consistent (`GetItem` and `Query` both set
//! `ConsistentRead`), and a query page asks DynamoDB for one item more than
//! the page holds (to know whether another follows): that item is read and
//! charged too, and counted here. The sizes before and after a write are
//! read from the wrapped store (uncounted), with the writes to one item
//! taken one at a time so that each sees its own before and after.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use lambent_ports::store::{number_size, StoreResult};
use lambent_ports::{
    Condition, Item, ItemStore, Key, Page, Query, StoreCursor, StoreError, TxOp, Update,
};

/// The bytes one write unit covers (DynamoDB's 1 KB).
pub const WRITE_UNIT_BYTES: usize = 1024;
/// The bytes one read unit covers (DynamoDB's 4 KB).
pub const READ_UNIT_BYTES: usize = 4096;

// ---------------------------------------------------------------------------
// Sizes

/// The size DynamoDB counts for an attribute value (without its name).
/// Sets, which Lambent never writes, count their elements.
pub fn value_size(value: &AttributeValue) -> usize {
    match value {
        AttributeValue::S(s) => s.len(),
        AttributeValue::B(b) => b.as_ref().len(),
        AttributeValue::N(n) => number_text_size(n),
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        AttributeValue::L(l) => 3 + l.iter().map(|v| 1 + value_size(v)).sum::<usize>(),
        AttributeValue::M(m) => {
            3 + m
                .iter()
                .map(|(k, v)| 1 + k.len() + value_size(v))
                .sum::<usize>()
        }
        AttributeValue::Ss(ss) => ss.iter().map(String::len).sum(),
        AttributeValue::Ns(ns) => ns.iter().map(|n| number_text_size(n)).sum(),
        AttributeValue::Bs(bs) => bs.iter().map(|b| b.as_ref().len()).sum(),
        // A variant added to the SDK later: not one Lambent writes.
        _ => 0,
    }
}

/// A number as DynamoDB sends it (a decimal string): its significant
/// digits, a byte per two, and one more (`lambent_ports::store::number_size`,
/// which the port's 400 KB check uses too).
fn number_text_size(text: &str) -> usize {
    match lambent_aws::dynamodb::parse_number(text) {
        Ok(n) => number_size(n),
        // Not an exact decimal (never written by the adapter): its digits.
        Err(_) => {
            let digits = text.bytes().filter(u8::is_ascii_digit).count();
            1 + digits.div_ceil(2)
        }
    }
}

/// The size of an item given as DynamoDB attributes: every attribute's
/// name and value.
pub fn attributes_size(attributes: &HashMap<String, AttributeValue>) -> usize {
    attributes
        .iter()
        .map(|(name, value)| name.len() + value_size(value))
        .sum()
}

/// The size of a port item as the DynamoDB adapter stores it: its
/// attributes as `item_to_attributes` maps them (`pk`, `sk` and
/// `expires_at` included), sized as DynamoDB sizes them.
pub fn item_size(item: &Item) -> usize {
    attributes_size(&lambent_aws::dynamodb::item_to_attributes(item))
}

// ---------------------------------------------------------------------------
// Units

/// How a read is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consistency {
    Eventual,
    Strong,
    Transactional,
}

/// Write units for writing an item of `bytes` (0: an item that does not
/// exist, which still costs one unit); twice that in a transaction.
pub fn write_units(bytes: usize, transactional: bool) -> u64 {
    let units = bytes.div_ceil(WRITE_UNIT_BYTES).max(1) as u64;
    if transactional {
        2 * units
    } else {
        units
    }
}

/// Read units for reading `bytes` in one request (one item, or every item
/// a query read, summed): 4 KB blocks, rounded up, at least one (a missing
/// item costs as much as a small one); half eventually consistent, twice
/// transactional.
pub fn read_units(bytes: usize, consistency: Consistency) -> f64 {
    let blocks = bytes.div_ceil(READ_UNIT_BYTES).max(1) as f64;
    match consistency {
        Consistency::Eventual => blocks / 2.0,
        Consistency::Strong => blocks,
        Consistency::Transactional => 2.0 * blocks,
    }
}

// ---------------------------------------------------------------------------
// Charges

/// What a charged call did to one item (or, for a query, to a partition).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Op {
    Get,
    Query,
    Put,
    Update,
    Delete,
    /// A transaction's `ConditionCheck`.
    Check,
}

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::Get => "GetItem",
            Op::Query => "Query",
            Op::Put => "Put",
            Op::Update => "Update",
            Op::Delete => "Delete",
            Op::Check => "ConditionCheck",
        }
    }

    pub fn writes(self) -> bool {
        !matches!(self, Op::Get | Op::Query)
    }
}

/// How the call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Done,
    /// The write's condition did not hold (still charged).
    ConditionFailed,
    /// The transaction was cancelled (a condition or a conflict): charged
    /// here as if it had committed, an upper bound (DynamoDB reports no
    /// consumed capacity for a cancelled transaction).
    Cancelled,
    /// Another error: nothing was charged.
    Failed,
}

/// One item written or read (a query: every item it read), and its units.
#[derive(Debug, Clone)]
pub struct Charge {
    /// Which call of this ledger it was (a transaction's items share it).
    pub call: u64,
    pub op: Op,
    /// The key (a query: its partition and sort-key prefix).
    pub key: Key,
    /// Items in the call's transaction (0: not a transaction).
    pub tx_items: usize,
    pub conditional: bool,
    pub outcome: Outcome,
    /// The size the units were computed from: the larger of before and
    /// after for a write, what was read for a read.
    pub bytes: usize,
    /// The item's size before a write (`None`: absent).
    pub before: Option<usize>,
    /// The item's size after a write (`None`: absent or deleted).
    pub after: Option<usize>,
    /// Items a query read (1 for a get of a present item).
    pub items: usize,
    pub write_units: u64,
    pub read_units: f64,
    /// When the call was made and when it returned (a transaction's items
    /// share them).
    pub started: Instant,
    pub ended: Instant,
}

impl Charge {
    pub fn transactional(&self) -> bool {
        self.tx_items > 0
    }

    /// The key with its variable parts elided: `USER#*/USAGE#DAY#*#-`.
    pub fn pattern(&self) -> String {
        key_pattern(&self.key)
    }
}

/// A key with its IDs, numbers and dates elided: `USER#usr_01J…/BUDGET#2026-05`
/// becomes `USER#*/BUDGET#*`, `USAGE#3/…` `USAGE#*/…`. Other segments
/// (entity names, model names, `-`) stay.
pub fn key_pattern(key: &Key) -> String {
    format!("{}/{}", elide(&key.pk), elide(&key.sk))
}

fn elide(part: &str) -> String {
    if part.is_empty() {
        return String::new();
    }
    part.split('#')
        .map(|segment| if is_variable(segment) { "*" } else { segment })
        .collect::<Vec<_>>()
        .join("#")
}

/// An ID (`usr_01J…`, `aud_…`), a number, or a date (`2026-05-17`).
fn is_variable(segment: &str) -> bool {
    let id = segment.split_once('_').is_some_and(|(prefix, rest)| {
        !prefix.is_empty()
            && prefix.bytes().all(|b| b.is_ascii_lowercase())
            && !rest.is_empty()
            && rest.bytes().all(|b| b.is_ascii_alphanumeric())
    });
    let number = !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit());
    let date = segment.len() >= 7
        && segment.bytes().all(|b| b.is_ascii_digit() || b == b'-')
        && segment.contains('-');
    id || number || date
}

/// Sums of charges.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Totals {
    pub write_units: u64,
    pub read_units: f64,
    /// Items written (checks included) and read requests.
    pub writes: usize,
    pub reads: usize,
}

impl Totals {
    pub fn of<'a>(charges: impl IntoIterator<Item = &'a Charge>) -> Totals {
        let mut t = Totals::default();
        for c in charges {
            t.write_units += c.write_units;
            t.read_units += c.read_units;
            if c.op.writes() {
                t.writes += 1;
            } else {
                t.reads += 1;
            }
        }
        t
    }
}

#[derive(Default)]
struct Book {
    charges: Vec<Charge>,
    calls: u64,
    in_flight: usize,
    last_end: Option<Instant>,
}

/// Where [`UnitStore`]s record their charges.
#[derive(Default)]
pub struct Ledger {
    book: Mutex<Book>,
    /// One lock per item written, so that a write's before and after are
    /// its own.
    items: Mutex<HashMap<Key, Arc<tokio::sync::Mutex<()>>>>,
}

impl Ledger {
    pub fn new() -> Arc<Ledger> {
        Arc::new(Ledger::default())
    }

    fn book(&self) -> MutexGuard<'_, Book> {
        self.book
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Every charge so far, in the order the calls returned.
    pub fn charges(&self) -> Vec<Charge> {
        self.book().charges.clone()
    }

    /// How many charges there are so far (a mark for [`Ledger::since`]).
    pub fn mark(&self) -> usize {
        self.book().charges.len()
    }

    /// The charges recorded after `mark`.
    pub fn since(&self, mark: usize) -> Vec<Charge> {
        self.book().charges.get(mark..).unwrap_or_default().to_vec()
    }

    /// Store calls in flight now.
    pub fn in_flight(&self) -> usize {
        self.book().in_flight
    }

    /// When the last call returned.
    pub fn last_end(&self) -> Option<Instant> {
        self.book().last_end
    }

    /// Waits until no call is in flight and none has returned for `quiet`
    /// (the writes a request leaves behind it have landed).
    pub async fn settled(&self, quiet: std::time::Duration) {
        loop {
            let (in_flight, last) = {
                let book = self.book();
                (book.in_flight, book.last_end)
            };
            let calm = last.is_none_or(|t| t.elapsed() >= quiet);
            if in_flight == 0 && calm {
                return;
            }
            tokio::time::sleep(quiet / 4).await;
        }
    }

    fn begin(&self) -> (u64, Instant) {
        let mut book = self.book();
        book.calls += 1;
        book.in_flight += 1;
        (book.calls, Instant::now())
    }

    fn end(&self, charges: Vec<Charge>) {
        let mut book = self.book();
        book.in_flight = book.in_flight.saturating_sub(1);
        book.last_end = Some(Instant::now());
        book.charges.extend(charges);
    }

    /// Takes the items' locks, in key order (no two writers wait on each
    /// other crosswise).
    async fn hold(&self, keys: &[&Key]) -> Vec<tokio::sync::OwnedMutexGuard<()>> {
        let mut sorted: Vec<&Key> = keys.to_vec();
        sorted.sort();
        sorted.dedup();
        let locks: Vec<Arc<tokio::sync::Mutex<()>>> = {
            let mut items = self
                .items
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            sorted
                .iter()
                .map(|k| items.entry((*k).clone()).or_default().clone())
                .collect()
        };
        let mut guards = Vec::with_capacity(locks.len());
        for lock in locks {
            guards.push(lock.lock_owned().await);
        }
        guards
    }
}

/// Ends a call however it ends (a dropped future too).
struct Open<'a> {
    ledger: &'a Ledger,
    charges: Vec<Charge>,
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.ledger.end(std::mem::take(&mut self.charges));
    }
}

/// An item store that forwards to another and records, in its [`Ledger`],
/// the capacity units DynamoDB would charge for each call.
pub struct UnitStore {
    inner: Arc<dyn ItemStore>,
    ledger: Arc<Ledger>,
}

impl UnitStore {
    pub fn new(inner: Arc<dyn ItemStore>, ledger: Arc<Ledger>) -> UnitStore {
        UnitStore { inner, ledger }
    }

    /// The size of the item at `key` now (uncounted).
    async fn size_at(&self, key: &Key) -> Option<usize> {
        match self.inner.get(key).await {
            Ok(item) => item.as_ref().map(item_size),
            Err(_) => None,
        }
    }

    fn open(&self) -> (Open<'_>, u64, Instant) {
        let (call, started) = self.ledger.begin();
        (
            Open {
                ledger: &self.ledger,
                charges: Vec::new(),
            },
            call,
            started,
        )
    }
}

/// Which call a charge belongs to, and when it ran.
struct Made {
    call: u64,
    /// Items of its transaction (0: not one).
    tx_items: usize,
    started: Instant,
    ended: Instant,
}

impl Made {
    /// A call that is not a transaction, ending now.
    fn single(call: u64, started: Instant) -> Made {
        Made {
            call,
            tx_items: 0,
            started,
            ended: Instant::now(),
        }
    }
}

/// What a read of `items` items, `bytes` in all, costs (nothing when it
/// failed).
fn read_charge<T>(
    made: &Made,
    op: Op,
    key: Key,
    result: &StoreResult<T>,
    (bytes, items): (usize, usize),
) -> Charge {
    let read_units = if result.is_ok() {
        read_units(bytes, Consistency::Strong)
    } else {
        0.0
    };
    Charge {
        call: made.call,
        op,
        key,
        tx_items: 0,
        conditional: false,
        outcome: outcome_of(result),
        bytes,
        before: None,
        after: None,
        items,
        write_units: 0,
        read_units,
        started: made.started,
        ended: made.ended,
    }
}

/// What a single write costs, from its sizes and how it ended.
fn write_charge(
    made: &Made,
    op: Op,
    key: &Key,
    conditional: bool,
    outcome: Outcome,
    (before, after): (Option<usize>, Option<usize>),
) -> Charge {
    let bytes = before.unwrap_or(0).max(after.unwrap_or(0));
    let write_units = if outcome == Outcome::Failed {
        0
    } else {
        write_units(bytes, made.tx_items > 0)
    };
    Charge {
        call: made.call,
        op,
        key: key.clone(),
        tx_items: made.tx_items,
        conditional,
        outcome,
        bytes,
        before,
        after,
        items: 1,
        write_units,
        read_units: 0.0,
        started: made.started,
        ended: made.ended,
    }
}

fn outcome_of<T>(result: &StoreResult<T>) -> Outcome {
    match result {
        Ok(_) => Outcome::Done,
        Err(StoreError::ConditionFailed) => Outcome::ConditionFailed,
        Err(StoreError::TransactionCancelled { .. }) | Err(StoreError::Conflict) => {
            Outcome::Cancelled
        }
        Err(_) => Outcome::Failed,
    }
}

#[async_trait]
impl ItemStore for UnitStore {
    async fn get(&self, key: &Key) -> StoreResult<Option<Item>> {
        let (mut open, call, started) = self.open();
        let result = self.inner.get(key).await;
        let read = match &result {
            Ok(Some(item)) => (item_size(item), 1),
            _ => (0, 0),
        };
        let made = Made::single(call, started);
        open.charges
            .push(read_charge(&made, Op::Get, key.clone(), &result, read));
        result
    }

    async fn put(&self, item: Item, condition: Option<Condition>) -> StoreResult<()> {
        let (mut open, call, started) = self.open();
        let key = item.key.clone();
        let _held = self.ledger.hold(&[&key]).await;
        let before = self.size_at(&key).await;
        let new = item_size(&item);
        let conditional = condition.is_some();
        let result = self.inner.put(item, condition).await;
        let outcome = outcome_of(&result);
        let after = match outcome {
            Outcome::Done | Outcome::ConditionFailed => Some(new),
            _ => None,
        };
        open.charges.push(write_charge(
            &Made::single(call, started),
            Op::Put,
            &key,
            conditional,
            outcome,
            (before, after),
        ));
        result
    }

    async fn update(
        &self,
        key: &Key,
        update: Update,
        condition: Option<Condition>,
    ) -> StoreResult<Item> {
        let (mut open, call, started) = self.open();
        let _held = self.ledger.hold(&[key]).await;
        let before = self.size_at(key).await;
        let conditional = condition.is_some();
        let result = self.inner.update(key, update, condition).await;
        let after = result.as_ref().ok().map(item_size);
        open.charges.push(write_charge(
            &Made::single(call, started),
            Op::Update,
            key,
            conditional,
            outcome_of(&result),
            (before, after),
        ));
        result
    }

    async fn delete(&self, key: &Key, condition: Option<Condition>) -> StoreResult<Option<Item>> {
        let (mut open, call, started) = self.open();
        let _held = self.ledger.hold(&[key]).await;
        let before = self.size_at(key).await;
        let conditional = condition.is_some();
        let result = self.inner.delete(key, condition).await;
        let deleted = match &result {
            Ok(Some(item)) => Some(item_size(item)),
            _ => before,
        };
        open.charges.push(write_charge(
            &Made::single(call, started),
            Op::Delete,
            key,
            conditional,
            outcome_of(&result),
            (deleted, None),
        ));
        result
    }

    async fn query(&self, query: Query) -> StoreResult<Page> {
        let (mut open, call, started) = self.open();
        let partition = Key::new(query.pk.clone(), query.sk_prefix.clone());
        let ask = query.clone();
        let result = self.inner.query(query).await;
        let (mut bytes, mut items) = match &result {
            Ok(page) => (
                page.items.iter().map(item_size).sum::<usize>(),
                page.items.len(),
            ),
            Err(_) => (0, 0),
        };
        // The adapter asks for one item more than the page: DynamoDB reads
        // (and charges) it when there is one.
        if let Ok(Page {
            next: Some(cursor), ..
        }) = &result
        {
            let next = Query {
                limit: 1,
                cursor: Some(StoreCursor(cursor.0.clone())),
                ..ask
            };
            if let Ok(page) = self.inner.query(next).await {
                bytes += page.items.iter().map(item_size).sum::<usize>();
                items += page.items.len();
            }
        }
        let made = Made::single(call, started);
        open.charges.push(read_charge(
            &made,
            Op::Query,
            partition,
            &result,
            (bytes, items),
        ));
        result
    }

    async fn transact(&self, ops: Vec<TxOp>) -> StoreResult<()> {
        let (mut open, call, started) = self.open();
        let keys: Vec<&Key> = ops.iter().map(TxOp::key).collect();
        let _held = self.ledger.hold(&keys).await;
        let mut before = Vec::with_capacity(ops.len());
        for key in &keys {
            before.push(self.size_at(key).await);
        }
        // What each op is and, for a put, the item it writes.
        let described: Vec<(Op, Key, bool, Option<usize>)> = ops
            .iter()
            .map(|op| match op {
                TxOp::Put { item, condition } => (
                    Op::Put,
                    item.key.clone(),
                    condition.is_some(),
                    Some(item_size(item)),
                ),
                TxOp::Update { key, condition, .. } => {
                    (Op::Update, key.clone(), condition.is_some(), None)
                }
                TxOp::Delete { key, condition } => {
                    (Op::Delete, key.clone(), condition.is_some(), None)
                }
                TxOp::Check { key, .. } => (Op::Check, key.clone(), true, None),
            })
            .collect();
        let n = ops.len();
        let result = self.inner.transact(ops).await;
        let outcome = outcome_of(&result);
        let ended = Instant::now();
        for ((op, key, conditional, put), before) in described.into_iter().zip(before) {
            let after = match (op, outcome) {
                (Op::Put, _) => put,
                (Op::Update, Outcome::Done) => self.size_at(&key).await,
                (Op::Check, _) => before,
                _ => None,
            };
            open.charges.push(write_charge(
                &Made {
                    call,
                    tx_items: n,
                    started,
                    ended,
                },
                op,
                &key,
                conditional,
                outcome,
                (before, after),
            ));
        }
        result
    }

    async fn ping(&self) -> StoreResult<()> {
        self.inner.ping().await
    }
}

/// `lambent serve`'s store wrapped in a [`UnitStore`] recording into
/// `ledger`.
pub fn layer(ledger: Arc<Ledger>) -> lambent_local::serve::StoreLayer {
    lambent_local::serve::StoreLayer::new(move |inner| {
        Arc::new(UnitStore::new(inner, ledger.clone())) as Arc<dyn ItemStore>
    })
}

// ---------------------------------------------------------------------------
// Layers a benchmark puts around and inside a UnitStore

/// Holds a workflow step's claim (an update of `RUN#…/STEP#…`) while
/// closed: the calls of a run's start and of its step's worker are then
/// told apart by time.
#[derive(Default)]
pub struct StepGate {
    closed: AtomicBool,
    opened: tokio::sync::Notify,
}

impl StepGate {
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }

    pub fn open(&self) {
        self.closed.store(false, Ordering::SeqCst);
        self.opened.notify_waiters();
    }

    async fn pass(&self, key: &Key) {
        if !(key.pk.starts_with("RUN#") && key.sk.starts_with("STEP#")) {
            return;
        }
        loop {
            let opened = self.opened.notified();
            if !self.closed.load(Ordering::SeqCst) {
                return;
            }
            opened.await;
        }
    }
}

/// A store whose step claims wait at a [`StepGate`].
pub struct GatedStore {
    pub inner: Arc<dyn ItemStore>,
    pub gate: Arc<StepGate>,
}

#[async_trait]
impl ItemStore for GatedStore {
    async fn get(&self, key: &Key) -> StoreResult<Option<Item>> {
        self.inner.get(key).await
    }
    async fn put(&self, item: Item, condition: Option<Condition>) -> StoreResult<()> {
        self.inner.put(item, condition).await
    }
    async fn update(
        &self,
        key: &Key,
        update: Update,
        condition: Option<Condition>,
    ) -> StoreResult<Item> {
        self.gate.pass(key).await;
        self.inner.update(key, update, condition).await
    }
    async fn delete(&self, key: &Key, condition: Option<Condition>) -> StoreResult<Option<Item>> {
        self.inner.delete(key, condition).await
    }
    async fn query(&self, query: Query) -> StoreResult<Page> {
        self.inner.query(query).await
    }
    async fn transact(&self, ops: Vec<TxOp>) -> StoreResult<()> {
        self.inner.transact(ops).await
    }
    async fn ping(&self) -> StoreResult<()> {
        self.inner.ping().await
    }
}

/// The store layer type, for a benchmark that puts other wrappers around
/// or inside a [`UnitStore`].
pub use lambent_local::serve::StoreLayer;

/// `lambent serve --backend aws` in process, its store wrapped by `layer`,
/// on the resources named by `prefix` (made here if missing, as `lambent
/// bootstrap` makes them), with the SDK configured from the environment
/// (`AWS_ENDPOINT_URL` pointing at the emulator, its region and dummy
/// credentials, set before the runtime started). The server runs until the
/// process ends.
pub async fn spawn_app_on_aws(
    prefix: &str,
    layer: StoreLayer,
    configure: impl FnOnce(&mut lambent_app::config::Config),
) -> anyhow::Result<crate::app::TestApp> {
    use lambent_local::resources::{ensure_all, Names};
    use lambent_local::serve::{self, Backend, Options};
    let sdk = lambent_aws::load_sdk_config().await;
    ensure_all(&sdk, &Names::with_prefix(prefix)).await?;
    let mut config = lambent_app::config::Config {
        allow_private_provider_urls: true,
        ..lambent_app::config::Config::default()
    };
    configure(&mut config);
    let data_dir = tempfile::Builder::new()
        .prefix("lambent-aws-app-")
        .tempdir()?;
    let options = Options {
        addr: "127.0.0.1:0".parse()?,
        data_dir: data_dir.path().to_path_buf(),
        backend: Backend::Aws,
        prefix: prefix.to_owned(),
        config,
        clock: lambent_core::clock::system(),
        store_layer: Some(layer),
    };
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let served = serve::run(options, std::future::pending::<()>(), move |addr| {
            let _ = ready_tx.send(addr);
        })
        .await;
        if let Err(e) = served {
            eprintln!("lambent serve (aws) stopped: {e:#}");
        }
    });
    let addr = ready_rx
        .await
        .map_err(|_| anyhow::anyhow!("lambent serve --backend aws did not start"))?;
    Ok(crate::app::TestApp::attached(addr, data_dir))
}

/// Charges grouped by transaction: `(call, items, write units)` of each
/// transaction among `charges`, in order.
pub fn transactions(charges: &[Charge]) -> Vec<(u64, usize, u64)> {
    let mut by_call: BTreeMap<u64, (usize, u64)> = BTreeMap::new();
    for c in charges.iter().filter(|c| c.transactional()) {
        let entry = by_call.entry(c.call).or_insert((c.tx_items, 0));
        entry.1 += c.write_units;
    }
    by_call
        .into_iter()
        .map(|(call, (items, units))| (call, items, units))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::primitives::Blob;
    use lambent_aws::dynamodb::parse_number;
    use lambent_ports::Value;

    const KB: usize = 1024;

    /// The read examples of the developer guide ("DynamoDB read and write
    /// operations", "Capacity management for transactions").
    #[test]
    fn reads_match_the_guides_examples() {
        // "reading a 3,500-byte item consumes the same throughput as
        // reading a 4 KB item"
        assert_eq!(read_units(3_500, Consistency::Strong), 1.0);
        assert_eq!(read_units(4 * KB, Consistency::Strong), 1.0);
        // "if your item size is 8 KB, you require 2 read units to sustain
        // one strongly consistent read, 1 read unit if you choose
        // eventually consistent reads, or 4 read units for a transactional
        // read request"
        assert_eq!(read_units(8 * KB, Consistency::Strong), 2.0);
        assert_eq!(read_units(8 * KB, Consistency::Eventual), 1.0);
        assert_eq!(read_units(8 * KB, Consistency::Transactional), 4.0);
        // GetItem: "If you read an item of 10 KB, DynamoDB rounds the item
        // size to 12 KB."
        assert_eq!(read_units(10 * KB, Consistency::Strong), 3.0);
        // Query: "your query returns 10 items whose combined size is 40.8
        // KB. DynamoDB rounds the item size for the operation to 44 KB."
        assert_eq!(read_units(40 * KB + 819, Consistency::Strong), 11.0);
        // "If a query returns 1500 items of 64 bytes each, the cumulative
        // size is 96 KB."
        assert_eq!(read_units(1_500 * 64, Consistency::Strong), 24.0);
        // "For an eventually consistent read, if the total item size is 80
        // KB, the operation consumes only 10 capacity units."
        assert_eq!(read_units(80 * KB, Consistency::Eventual), 10.0);
        // A read of a missing item: one unit strong, 0.5 eventual.
        assert_eq!(read_units(0, Consistency::Strong), 1.0);
        assert_eq!(read_units(0, Consistency::Eventual), 0.5);
        // A transaction reading three 500-byte items: six read units.
        assert_eq!(3.0 * read_units(500, Consistency::Transactional), 6.0);
    }

    /// The write examples of the developer guide.
    #[test]
    fn writes_match_the_guides_examples() {
        // "writing a 500-byte item consumes the same throughput as writing
        // a 1 KB item"
        assert_eq!(write_units(500, false), 1);
        assert_eq!(write_units(KB, false), 1);
        assert_eq!(write_units(KB + 1, false), 2);
        // "if you put or delete an item of 1.6 KB, DynamoDB rounds the item
        // size up to 2 KB"
        assert_eq!(write_units(1_638, false), 2);
        // A failed conditional write of a missing item: one unit.
        assert_eq!(write_units(0, false), 1);
        // "each transaction writes three 500-byte items ... you would need
        // to provision six WCUs"
        assert_eq!(3 * write_units(500, true), 6);
    }

    fn n(s: &str) -> AttributeValue {
        AttributeValue::N(s.to_owned())
    }

    /// The guide's size rules, attribute by attribute.
    #[test]
    fn sizes_follow_the_guides_rules() {
        // A string: its UTF-8 bytes (é is two).
        assert_eq!(value_size(&AttributeValue::S("héllo".into())), 6);
        // A binary: its raw bytes, not its base64.
        assert_eq!(value_size(&AttributeValue::B(Blob::new(vec![0; 10]))), 10);
        // Booleans and nulls: one byte.
        assert_eq!(value_size(&AttributeValue::Bool(true)), 1);
        assert_eq!(value_size(&AttributeValue::Null(true)), 1);
        // Numbers: a byte per two significant digits, plus one; leading and
        // trailing zeros trimmed.
        assert_eq!(value_size(&n("1")), 2);
        assert_eq!(value_size(&n("12")), 2);
        assert_eq!(value_size(&n("1000")), 2);
        assert_eq!(value_size(&n("0.0012")), 2);
        assert_eq!(value_size(&n("1234")), 3);
        assert_eq!(value_size(&n("123456")), 4);
        assert_eq!(value_size(&n("-1")), 3);
        // 1.7 × 10^9: two significant digits, as every `expires_at` now.
        assert_eq!(value_size(&n("1700000000")), 2);
        // Lists and maps: 3 bytes, plus 1 byte and the size of each element
        // (a map's element its name too); empty ones 3 bytes.
        assert_eq!(value_size(&AttributeValue::L(vec![])), 3);
        assert_eq!(value_size(&AttributeValue::M(HashMap::new())), 3);
        let list = AttributeValue::L(vec![
            AttributeValue::S("ab".into()),
            AttributeValue::Bool(false),
        ]);
        assert_eq!(value_size(&list), 3 + (1 + 2) + (1 + 1));
        let map = AttributeValue::M(HashMap::from([(
            "k".to_owned(),
            AttributeValue::S("v".into()),
        )]));
        assert_eq!(value_size(&map), 3 + (1 + 1 + 1));
        // An item: names and values.
        let item = HashMap::from([
            ("pk".to_owned(), AttributeValue::S("USER#1".into())),
            ("sk".to_owned(), AttributeValue::S("PROFILE".into())),
            ("n".to_owned(), n("42")),
        ]);
        assert_eq!(attributes_size(&item), (2 + 6) + (2 + 7) + (1 + 2));
    }

    /// A port item is sized as the adapter stores it: the key attributes
    /// and `expires_at` are attributes too, and the total agrees with the
    /// port's own count (`Item::size`, its 400 KB check).
    #[test]
    fn items_are_sized_as_the_adapter_maps_them() {
        let item = Item::new(Key::new("SESSION#ses_1", "MSG#msg_1"))
            .with("role", "assistant")
            .with("content", "Hello, wörld")
            .with("cost_usd", Value::N(parse_number("0.0006").unwrap()))
            .with("tokens", 120)
            .with("flag", true)
            .with(
                "usage",
                Value::M(BTreeMap::from([
                    ("input".to_owned(), Value::from(100)),
                    ("output".to_owned(), Value::from(20)),
                ])),
            )
            .expiring_at(1_800_000_000);
        let expected = (2 + 13) + (2 + 9) // pk, sk
            + (4 + 9) // role
            + (7 + 13) // content: ö is two bytes
            + (8 + 2) // cost_usd 0.0006: one pair of digits
            + (6 + 3) // tokens 120
            + (4 + 1) // flag
            + (5 + 3 + (1 + 5 + 2) + (1 + 6 + 2)) // usage
            + (10 + 2); // expires_at 1800000000: two significant digits
        assert_eq!(item_size(&item), expected);
        assert_eq!(item_size(&item), item.size());
    }

    #[test]
    fn keys_are_elided_to_patterns() {
        let key = Key::new("USER#usr_01JABC", "USAGE#DAY#2026-05-17#agt_9x");
        assert_eq!(key_pattern(&key), "USER#*/USAGE#DAY#*#*");
        let key = Key::new("USAGE#3", "USAGE#MODEL#2026-05-17#fake-anthropic");
        assert_eq!(key_pattern(&key), "USAGE#*/USAGE#MODEL#*#fake-anthropic");
        let key = Key::new("USER#usr_1", "BUDGET#2026-05");
        assert_eq!(key_pattern(&key), "USER#*/BUDGET#*");
        assert_eq!(
            key_pattern(&Key::new("RATE#usr_1", "BUCKET")),
            "RATE#*/BUCKET"
        );
    }

    /// The wrapper on a real store: a put, an update that grows the item
    /// past 1 KB, a failed conditional write, a delete, a query and a
    /// transaction, each charged by the rules above.
    #[tokio::test]
    async fn the_wrapper_charges_each_call_by_the_rules() {
        let held = crate::embedded::store().await;
        let inner: Arc<dyn ItemStore> = Arc::new(Forward(held));
        let ledger = Ledger::new();
        let store = UnitStore::new(inner, ledger.clone());
        let key = Key::new("P#1", "S#1");
        let small = Item::new(key.clone()).with("v", "x".repeat(100));
        store.put(small.clone(), None).await.unwrap();
        store
            .update(&key, Update::new().set("v", "x".repeat(2_000)), None)
            .await
            .unwrap();
        let failed = store.put(small.clone(), Some(Condition::NotExists)).await;
        assert!(failed.is_err());
        store.get(&key).await.unwrap();
        store.get(&Key::new("P#1", "missing")).await.unwrap();
        store
            .transact(vec![
                TxOp::Put {
                    item: Item::new(Key::new("P#1", "S#2")).with("v", "y"),
                    condition: None,
                },
                TxOp::Delete {
                    key: key.clone(),
                    condition: Some(Condition::Exists),
                },
            ])
            .await
            .unwrap();
        store.query(Query::partition("P#1").limit(1)).await.unwrap();
        let charges = ledger.charges();
        // The key attributes: "pk" "P#1", "sk" "S#1": 10 bytes.
        let big = 10 + 1 + 2_000;
        let summary: Vec<(Op, usize, u64, f64)> = charges
            .iter()
            .map(|c| (c.op, c.bytes, c.write_units, c.read_units))
            .collect();
        assert_eq!(
            summary,
            vec![
                (Op::Put, 10 + 1 + 100, 1, 0.0),
                // The larger of before and after.
                (Op::Update, big, 2, 0.0),
                // Failed, still charged: the item there is the larger.
                (Op::Put, big, 2, 0.0),
                (Op::Get, big, 0, 1.0),
                (Op::Get, 0, 0, 1.0),
                (Op::Put, 10 + 1 + 1, 2, 0.0),
                (Op::Delete, big, 4, 0.0),
                // One item on the page and none after it.
                (Op::Query, 12, 0, 1.0),
            ]
        );
        assert_eq!(charges[2].outcome, Outcome::ConditionFailed);
        assert_eq!(transactions(&charges).len(), 1);
        assert_eq!(Totals::of(&charges).write_units, 1 + 2 + 2 + 2 + 4);
        assert_eq!(ledger.in_flight(), 0);
    }

    /// A store held by the test kit, as an `Arc<dyn ItemStore>`.
    struct Forward(crate::Held<dyn ItemStore>);

    #[async_trait]
    impl ItemStore for Forward {
        async fn get(&self, key: &Key) -> StoreResult<Option<Item>> {
            self.0.get(key).await
        }
        async fn put(&self, item: Item, condition: Option<Condition>) -> StoreResult<()> {
            self.0.put(item, condition).await
        }
        async fn update(
            &self,
            key: &Key,
            update: Update,
            condition: Option<Condition>,
        ) -> StoreResult<Item> {
            self.0.update(key, update, condition).await
        }
        async fn delete(
            &self,
            key: &Key,
            condition: Option<Condition>,
        ) -> StoreResult<Option<Item>> {
            self.0.delete(key, condition).await
        }
        async fn query(&self, query: Query) -> StoreResult<Page> {
            self.0.query(query).await
        }
        async fn transact(&self, ops: Vec<TxOp>) -> StoreResult<()> {
            self.0.transact(ops).await
        }
        async fn ping(&self) -> StoreResult<()> {
            self.0.ping().await
        }
    }
}
