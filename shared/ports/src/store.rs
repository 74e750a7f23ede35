//! The item-store port: the DynamoDB data model, narrowed to what Lambent's
//! repositories need. Items live in partitions (`pk`) ordered by sort key (`sk`).
//!
//! The port is deliberately not a SQL database: no scans, no secondary indexes,
//! no joins. Every access is a key lookup or one partition read by sort-key
//! prefix, so it costs the same on DynamoDB and on the embedded adapter.

use std::collections::BTreeMap;
use std::fmt;

use async_trait::async_trait;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// The attribute that holds an item's expiry (epoch seconds). DynamoDB's TTL
/// is configured on it; every read ignores items whose expiry has passed.
pub const TTL_ATTRIBUTE: &str = "expires_at";

/// Names reserved by the port: the key attributes and the TTL attribute.
pub const RESERVED_ATTRIBUTES: [&str; 3] = ["pk", "sk", TTL_ATTRIBUTE];

/// Largest number of operations in one transaction (DynamoDB's limit).
pub const MAX_TRANSACTION_ITEMS: usize = 100;

/// Largest page a query may ask for.
pub const MAX_PAGE_SIZE: usize = 1000;

/// An attribute value. Numbers are exact decimals, never floats.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", content = "v")]
pub enum Value {
    S(String),
    N(Decimal),
    Bool(bool),
    B(Vec<u8>),
    L(Vec<Value>),
    M(BTreeMap<String, Value>),
    Null,
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::S(s.to_owned())
    }
}
impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::S(s)
    }
}
impl From<Decimal> for Value {
    fn from(n: Decimal) -> Self {
        Value::N(n)
    }
}
impl From<i64> for Value {
    fn from(n: i64) -> Self {
        Value::N(Decimal::from(n))
    }
}
impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

/// The primary key of an item.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Key {
    pub pk: String,
    pub sk: String,
}

impl Key {
    pub fn new(pk: impl Into<String>, sk: impl Into<String>) -> Self {
        Key {
            pk: pk.into(),
            sk: sk.into(),
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.pk, self.sk)
    }
}

/// One stored item: its key, its attributes and an optional expiry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    pub key: Key,
    pub attrs: BTreeMap<String, Value>,
    /// Epoch seconds after which the item is treated as gone.
    pub expires_at: Option<i64>,
}

impl Item {
    pub fn new(key: Key) -> Self {
        Item {
            key,
            attrs: BTreeMap::new(),
            expires_at: None,
        }
    }

    /// Builder-style attribute setter.
    pub fn with(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.attrs.insert(name.to_owned(), value.into());
        self
    }

    pub fn expiring_at(mut self, epoch_secs: i64) -> Self {
        self.expires_at = Some(epoch_secs);
        self
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        self.attrs.get(name)
    }

    pub fn get_str(&self, name: &str) -> Option<&str> {
        match self.attrs.get(name) {
            Some(Value::S(s)) => Some(s),
            _ => None,
        }
    }

    pub fn get_decimal(&self, name: &str) -> Option<Decimal> {
        match self.attrs.get(name) {
            Some(Value::N(n)) => Some(*n),
            _ => None,
        }
    }

    /// Whether the item has expired at `now` (epoch seconds).
    pub fn is_expired(&self, now: i64) -> bool {
        self.expires_at.is_some_and(|t| t <= now)
    }
}

/// Comparison operators for conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// A condition on the current state of one item, checked atomically with the
/// write it guards. An expired item counts as absent.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// The item does not exist (create-only).
    NotExists,
    /// The item exists.
    Exists,
    /// The attribute is absent (the item may or may not exist).
    AttrNotExists(String),
    /// The attribute is present.
    AttrExists(String),
    /// `attr <op> value`; false when the attribute is absent or of another type.
    Compare(String, Cmp, Value),
    And(Vec<Condition>),
    Or(Vec<Condition>),
    Not(Box<Condition>),
}

impl Condition {
    pub fn eq(attr: &str, value: impl Into<Value>) -> Self {
        Condition::Compare(attr.to_owned(), Cmp::Eq, value.into())
    }
    pub fn cmp(attr: &str, op: Cmp, value: impl Into<Value>) -> Self {
        Condition::Compare(attr.to_owned(), op, value.into())
    }
}

/// An update of some attributes of one item; creates the item if absent
/// (unless a condition forbids it), like DynamoDB's UpdateItem.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Update {
    pub set: Vec<(String, Value)>,
    /// Set only if the attribute is absent (`if_not_exists`).
    pub set_if_absent: Vec<(String, Value)>,
    pub remove: Vec<String>,
    /// Atomic numeric addition; an absent attribute counts as zero.
    pub add: Vec<(String, Decimal)>,
    /// `Some(Some(t))` sets the expiry, `Some(None)` clears it.
    pub expires_at: Option<Option<i64>>,
}

impl Update {
    pub fn new() -> Self {
        Update::default()
    }
    pub fn set(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.set.push((name.to_owned(), value.into()));
        self
    }
    pub fn set_if_absent(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.set_if_absent.push((name.to_owned(), value.into()));
        self
    }
    pub fn remove(mut self, name: &str) -> Self {
        self.remove.push(name.to_owned());
        self
    }
    pub fn add(mut self, name: &str, by: Decimal) -> Self {
        self.add.push((name.to_owned(), by));
        self
    }
    pub fn expire_at(mut self, epoch_secs: Option<i64>) -> Self {
        self.expires_at = Some(epoch_secs);
        self
    }

    /// Every attribute name the update touches, for validation.
    pub fn attribute_names(&self) -> impl Iterator<Item = &str> {
        self.set
            .iter()
            .map(|(n, _)| n.as_str())
            .chain(self.set_if_absent.iter().map(|(n, _)| n.as_str()))
            .chain(self.remove.iter().map(String::as_str))
            .chain(self.add.iter().map(|(n, _)| n.as_str()))
    }
}

/// Read order of a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    #[default]
    Ascending,
    Descending,
}

/// One read of a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub pk: String,
    /// Only sort keys starting with this prefix (empty: all).
    pub sk_prefix: String,
    pub order: Order,
    /// At most this many items (1..=MAX_PAGE_SIZE).
    pub limit: usize,
    /// Continue after the page that returned this cursor.
    pub cursor: Option<StoreCursor>,
}

impl Query {
    pub fn partition(pk: impl Into<String>) -> Self {
        Query {
            pk: pk.into(),
            sk_prefix: String::new(),
            order: Order::Ascending,
            limit: 100,
            cursor: None,
        }
    }
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.sk_prefix = prefix.into();
        self
    }
    pub fn order(mut self, order: Order) -> Self {
        self.order = order;
        self
    }
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }
    pub fn after(mut self, cursor: Option<StoreCursor>) -> Self {
        self.cursor = cursor;
        self
    }
}

/// Where a page ended: the sort key of its last item. It is an internal value;
/// the HTTP layer seals it (HMAC, bound to the caller) before a client sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreCursor(pub String);

/// A page of a partition. `next` is set when more items may follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub items: Vec<Item>,
    pub next: Option<StoreCursor>,
}

/// One operation of a transaction.
#[derive(Debug, Clone, PartialEq)]
pub enum TxOp {
    Put {
        item: Item,
        condition: Option<Condition>,
    },
    Update {
        key: Key,
        update: Update,
        condition: Option<Condition>,
    },
    Delete {
        key: Key,
        condition: Option<Condition>,
    },
    /// Only checks a condition, writes nothing.
    Check { key: Key, condition: Condition },
}

impl TxOp {
    pub fn key(&self) -> &Key {
        match self {
            TxOp::Put { item, .. } => &item.key,
            TxOp::Update { key, .. } | TxOp::Delete { key, .. } | TxOp::Check { key, .. } => key,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A write's condition did not hold; nothing was written.
    #[error("condition failed")]
    ConditionFailed,
    /// A transaction was cancelled; nothing was written. `failed` lists the
    /// indexes of the operations whose conditions did not hold.
    #[error("transaction cancelled (failed operations: {failed:?})")]
    TransactionCancelled { failed: Vec<usize> },
    /// Two writers raced on the same items; retrying may succeed.
    #[error("conflict with a concurrent write")]
    Conflict,
    /// The request was malformed (a bug in the caller, not in the data).
    #[error("invalid store request: {0}")]
    Invalid(String),
    /// The backend could not be reached or failed.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Stored data could not be decoded.
    #[error("corrupt item: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// Whether a failed condition (plain or in a transaction) caused the error.
    pub fn is_condition_failure(&self) -> bool {
        matches!(
            self,
            StoreError::ConditionFailed | StoreError::TransactionCancelled { .. }
        )
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The item store. Every adapter passes the same contract suite
/// (`tests/aws` and `tests/integration`, `contract::store`).
#[async_trait]
pub trait ItemStore: Send + Sync + 'static {
    /// The item, or `None` if absent or expired.
    async fn get(&self, key: &Key) -> StoreResult<Option<Item>>;

    /// Writes the whole item if the condition holds.
    async fn put(&self, item: Item, condition: Option<Condition>) -> StoreResult<()>;

    /// Applies the update if the condition holds; returns the item as written.
    async fn update(
        &self,
        key: &Key,
        update: Update,
        condition: Option<Condition>,
    ) -> StoreResult<Item>;

    /// Deletes the item if the condition holds; returns what was deleted.
    async fn delete(&self, key: &Key, condition: Option<Condition>) -> StoreResult<Option<Item>>;

    /// One page of a partition, unexpired items only.
    async fn query(&self, query: Query) -> StoreResult<Page>;

    /// All operations or none. At most `MAX_TRANSACTION_ITEMS`, each on a distinct key.
    async fn transact(&self, ops: Vec<TxOp>) -> StoreResult<()>;

    /// A cheap round trip proving the store is reachable (health checks).
    async fn ping(&self) -> StoreResult<()>;
}

/// Checks shared by every adapter, so they reject the same requests.
pub mod validate {
    use super::*;

    pub fn key(key: &Key) -> StoreResult<()> {
        if key.pk.is_empty() || key.sk.is_empty() {
            return Err(StoreError::Invalid("pk and sk must not be empty".into()));
        }
        if key.pk.contains('\0') || key.sk.contains('\0') {
            return Err(StoreError::Invalid("keys must not contain NUL".into()));
        }
        Ok(())
    }

    pub fn attr_name(name: &str) -> StoreResult<()> {
        if name.is_empty() || RESERVED_ATTRIBUTES.contains(&name) {
            return Err(StoreError::Invalid(format!(
                "attribute name {name:?} is empty or reserved"
            )));
        }
        Ok(())
    }

    pub fn item(item: &Item) -> StoreResult<()> {
        key(&item.key)?;
        item.attrs.keys().try_for_each(|n| attr_name(n))
    }

    /// Each attribute at most once per update (DynamoDB refuses overlapping paths).
    pub fn update(update: &Update) -> StoreResult<()> {
        let mut seen = std::collections::BTreeSet::new();
        for name in update.attribute_names() {
            attr_name(name)?;
            if !seen.insert(name) {
                return Err(StoreError::Invalid(format!(
                    "attribute {name:?} appears twice in one update"
                )));
            }
        }
        Ok(())
    }

    /// Conditions may only name ordinary attributes.
    pub fn condition(condition: &Condition) -> StoreResult<()> {
        match condition {
            Condition::NotExists | Condition::Exists => Ok(()),
            Condition::AttrNotExists(n)
            | Condition::AttrExists(n)
            | Condition::Compare(n, _, _) => attr_name(n),
            Condition::And(cs) | Condition::Or(cs) => {
                if cs.is_empty() {
                    return Err(StoreError::Invalid("empty And/Or condition".into()));
                }
                cs.iter().try_for_each(self::condition)
            }
            Condition::Not(c) => self::condition(c),
        }
    }

    /// An optional condition.
    pub fn maybe_condition(c: Option<&Condition>) -> StoreResult<()> {
        c.map_or(Ok(()), condition)
    }

    /// The arguments of a put, as every adapter refuses them.
    pub fn put_op(item: &Item, condition: Option<&Condition>) -> StoreResult<()> {
        self::item(item)?;
        maybe_condition(condition)
    }

    /// The arguments of an update, as every adapter refuses them.
    pub fn update_op(key: &Key, update: &Update, condition: Option<&Condition>) -> StoreResult<()> {
        self::key(key)?;
        self::update(update)?;
        maybe_condition(condition)
    }

    /// The arguments of a delete, as every adapter refuses them.
    pub fn delete_op(key: &Key, condition: Option<&Condition>) -> StoreResult<()> {
        self::key(key)?;
        maybe_condition(condition)
    }

    pub fn query(query: &Query) -> StoreResult<()> {
        if query.pk.is_empty() {
            return Err(StoreError::Invalid("query needs a pk".into()));
        }
        if query.limit == 0 || query.limit > MAX_PAGE_SIZE {
            return Err(StoreError::Invalid(format!(
                "limit must be 1..={MAX_PAGE_SIZE}"
            )));
        }
        if let Some(cursor) = &query.cursor {
            if !cursor.0.starts_with(&query.sk_prefix) {
                return Err(StoreError::Invalid(
                    "cursor is outside the queried prefix".into(),
                ));
            }
        }
        Ok(())
    }

    pub fn transaction(ops: &[TxOp]) -> StoreResult<()> {
        if ops.is_empty() || ops.len() > MAX_TRANSACTION_ITEMS {
            return Err(StoreError::Invalid(format!(
                "a transaction has 1..={MAX_TRANSACTION_ITEMS} operations"
            )));
        }
        let mut seen = std::collections::BTreeSet::new();
        for op in ops {
            key(op.key())?;
            if !seen.insert(op.key()) {
                return Err(StoreError::Invalid(format!(
                    "key {} appears twice in one transaction",
                    op.key()
                )));
            }
            match op {
                TxOp::Put { item, condition } => put_op(item, condition.as_ref())?,
                TxOp::Update {
                    key,
                    update,
                    condition,
                } => update_op(key, update, condition.as_ref())?,
                TxOp::Delete { key, condition } => delete_op(key, condition.as_ref())?,
                TxOp::Check { condition: c, .. } => self::condition(c)?,
            }
        }
        Ok(())
    }
}
