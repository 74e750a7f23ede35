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

/// Largest item, in bytes as DynamoDB counts them ([`Item::size`]):
/// DynamoDB's 400 KB.
pub const MAX_ITEM_BYTES: usize = 400 * 1024;

/// Largest aggregate size of the items of one transaction (DynamoDB's 4 MB),
/// counted as [`validate::transaction_size`] does.
pub const MAX_TRANSACTION_BYTES: usize = 4 * 1024 * 1024;

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

/// The size of a value as DynamoDB counts it toward the 400 KB of an item
/// (the developer guide's "Item sizes and formats"): a string its UTF-8
/// bytes, a binary its raw bytes, a number [`number_size`], a boolean or a
/// null 1 byte, a list or a map 3 bytes plus, for each element, 1 byte and
/// its size (and, in a map, the UTF-8 bytes of its name).
pub fn value_size(value: &Value) -> usize {
    match value {
        Value::S(s) => s.len(),
        Value::B(b) => b.len(),
        Value::N(n) => number_size(*n),
        Value::Bool(_) | Value::Null => 1,
        Value::L(l) => 3 + l.iter().map(|v| 1 + value_size(v)).sum::<usize>(),
        Value::M(m) => {
            3 + m
                .iter()
                .map(|(k, v)| 1 + k.len() + value_size(v))
                .sum::<usize>()
        }
    }
}

/// The size of a number as DynamoDB stores it: its significant digits in
/// pairs (base-100 digits, aligned on the decimal point), one byte each, plus
/// one byte of exponent and one more for a negative number. The guide's
/// "1 byte per two significant digits + 1 byte" is this without the
/// alignment; this is never below what DynamoDB counts, and at most 21 bytes.
pub fn number_size(n: Decimal) -> usize {
    let n = n.normalize();
    if n.is_zero() {
        return 1;
    }
    let mantissa = n.mantissa().unsigned_abs();
    // n = mantissa * 10^-scale, and normalize() left no trailing zero in a
    // fraction; an integer's trailing zeros are not significant either.
    let mut digits = mantissa.to_string();
    let mut low = -(n.scale() as i64);
    while digits.len() > 1 && digits.ends_with('0') {
        digits.pop();
        low += 1;
    }
    let high = low + digits.len() as i64 - 1;
    let pairs = (high.div_euclid(2) - low.div_euclid(2) + 1) as usize;
    (1 + pairs + usize::from(n.is_sign_negative())).min(21)
}

/// The size of one attribute: its name's UTF-8 bytes and its value's size.
pub fn attribute_size(name: &str, value: &Value) -> usize {
    name.len() + value_size(value)
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

    /// What the key attributes `pk` and `sk` add to an item's size, names
    /// included.
    pub fn size(&self) -> usize {
        "pk".len() + self.pk.len() + "sk".len() + self.sk.len()
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

    /// The item's size as DynamoDB counts it against [`MAX_ITEM_BYTES`]: the
    /// key attributes, every attribute (name and value) and the expiry
    /// attribute, as stored.
    pub fn size(&self) -> usize {
        self.key.size()
            + self
                .attrs
                .iter()
                .map(|(name, value)| attribute_size(name, value))
                .sum::<usize>()
            + self.expires_at.map_or(0, expiry_size)
    }
}

/// What an expiry adds to an item: the attribute `expires_at`, a number.
fn expiry_size(epoch_secs: i64) -> usize {
    TTL_ATTRIBUTE.len() + number_size(Decimal::from(epoch_secs))
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
    /// An item over [`MAX_ITEM_BYTES`] (a put, or an update whose result
    /// would be), or a transaction over [`MAX_TRANSACTION_BYTES`]: DynamoDB's
    /// ValidationException "Item size has exceeded the maximum allowed size".
    /// Nothing was written. The detail is for the logs.
    #[error("too large to store: {0}")]
    TooLarge(String),
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
        item.attrs.keys().try_for_each(|n| attr_name(n))?;
        item_size(item)
    }

    /// An item of at most [`MAX_ITEM_BYTES`]. The embedded adapter also
    /// checks what an update would write with it.
    pub fn item_size(item: &Item) -> StoreResult<()> {
        let size = item.size();
        if size > MAX_ITEM_BYTES {
            return Err(StoreError::TooLarge(format!(
                "item {} is {size} bytes, more than the {MAX_ITEM_BYTES} an item can hold",
                item.key
            )));
        }
        Ok(())
    }

    /// The least size of the item an update writes, whatever the item held
    /// before: its key, the attributes it sets and its expiry. (What it adds
    /// to, and what `set_if_absent` keeps, depend on the stored item.)
    pub fn update_size(key: &Key, update: &Update) -> usize {
        key.size()
            + update
                .set
                .iter()
                .map(|(name, value)| attribute_size(name, value))
                .sum::<usize>()
            + update.expires_at.flatten().map_or(0, expiry_size)
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
        let least = update_size(key, update);
        if least > MAX_ITEM_BYTES {
            return Err(StoreError::TooLarge(format!(
                "an update of {key} writes at least {least} bytes, more than the \
                 {MAX_ITEM_BYTES} an item can hold"
            )));
        }
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

    /// The aggregate size of a transaction's items, as far as the request
    /// shows it: a put's whole item, an update's key and what it sets (see
    /// [`update_size`]), a delete's or a check's key.
    pub fn transaction_size(ops: &[TxOp]) -> usize {
        ops.iter()
            .map(|op| match op {
                TxOp::Put { item, .. } => item.size(),
                TxOp::Update { key, update, .. } => update_size(key, update),
                TxOp::Delete { key, .. } | TxOp::Check { key, .. } => key.size(),
            })
            .sum()
    }

    /// At most [`MAX_TRANSACTION_ITEMS`] operations, each on its own item,
    /// each valid, and at most [`MAX_TRANSACTION_BYTES`] in all. Every
    /// adapter refuses these before anything is sent or written.
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
        let size = transaction_size(ops);
        if size > MAX_TRANSACTION_BYTES {
            return Err(StoreError::TooLarge(format!(
                "a transaction of {} operations is {size} bytes, more than the \
                 {MAX_TRANSACTION_BYTES} a transaction can hold",
                ops.len()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    #[test]
    fn numbers_count_a_byte_per_pair_of_digits_and_one_more() {
        for (raw, size) in [
            ("0", 1),
            ("1", 2),
            ("99", 2),
            ("100", 2),
            ("1000", 2),
            ("12345", 4),
            ("0.5", 2),
            ("1.5", 3),
            ("-1", 3),
            ("12345678901234.123456789", 13),
            ("1.0000000000000000000000000001", 16),
        ] {
            assert_eq!(number_size(n(raw)), size, "{raw}");
        }
        assert!(number_size(Decimal::MAX) <= 21);
        assert!(number_size(Decimal::MIN) <= 21);
    }

    #[test]
    fn an_item_counts_its_key_names_values_and_expiry() {
        let key = Key::new("P", "S");
        assert_eq!(Item::new(key.clone()).size(), 2 + 1 + 2 + 1);
        let item = Item::new(key.clone())
            .with("text", "héllo")
            .with("flag", true)
            .with("none", Value::Null)
            .with("bytes", Value::B(vec![0; 10]))
            .with(
                "list",
                Value::L(vec![Value::S("ab".into()), Value::Bool(false)]),
            )
            .with(
                "map",
                Value::M([("k".to_owned(), Value::S("v".into()))].into()),
            );
        let expected = 6 // the key
            + 4 + 6 // text: "héllo" is 6 bytes of UTF-8
            + 4 + 1 // flag
            + 4 + 1 // none
            + 5 + 10 // bytes
            + 4 + 3 + (1 + 2) + (1 + 1) // list
            + 3 + 3 + (1 + 1 + 1); // map
        assert_eq!(item.size(), expected);
        let expiring = item.clone().expiring_at(1_700_000_000);
        assert_eq!(expiring.size(), expected + "expires_at".len() + 1 + 1);
    }

    /// An item of exactly `size` bytes: the key and one string attribute.
    fn item_of(size: usize) -> Item {
        let key = Key::new("P", "S");
        let filler = size - key.size() - "v".len();
        Item::new(key).with("v", "x".repeat(filler))
    }

    #[test]
    fn an_item_may_be_400_kb_and_not_a_byte_more() {
        assert_eq!(MAX_ITEM_BYTES, 409_600);
        let full = item_of(MAX_ITEM_BYTES);
        assert_eq!(full.size(), MAX_ITEM_BYTES);
        assert!(validate::put_op(&full, None).is_ok());
        let over = item_of(MAX_ITEM_BYTES + 1);
        assert!(matches!(
            validate::put_op(&over, None),
            Err(StoreError::TooLarge(_))
        ));
        // A multi-byte name counts its UTF-8 bytes.
        let named = Item::new(Key::new("P", "S")).with("é", "x".repeat(MAX_ITEM_BYTES - 6 - 2));
        assert_eq!(named.size(), MAX_ITEM_BYTES);
        assert!(validate::item(&named).is_ok());
    }

    #[test]
    fn an_update_that_sets_more_than_an_item_holds_is_refused_before_it_is_sent() {
        let key = Key::new("P", "S");
        let fits = Update::new().set("v", "x".repeat(MAX_ITEM_BYTES - 6 - 1));
        assert!(validate::update_op(&key, &fits, None).is_ok());
        let over = Update::new().set("v", "x".repeat(MAX_ITEM_BYTES - 6));
        assert!(matches!(
            validate::update_op(&key, &over, None),
            Err(StoreError::TooLarge(_))
        ));
    }

    #[test]
    fn a_transaction_may_hold_4_mb() {
        assert_eq!(MAX_TRANSACTION_BYTES, 4_194_304);
        let put = |i: usize, size: usize| {
            let mut item = item_of(size);
            item.key.sk = i.to_string();
            TxOp::Put {
                item,
                condition: None,
            }
        };
        // Ten full items (4,096,000 bytes) and one of the 98,304 bytes left,
        // whose sort key "10" is a byte longer than "S": a byte over.
        let mut ops: Vec<TxOp> = (0..10).map(|i| put(i, MAX_ITEM_BYTES)).collect();
        ops.push(put(10, 98_304));
        assert_eq!(validate::transaction_size(&ops), MAX_TRANSACTION_BYTES + 1);
        assert!(matches!(
            validate::transaction(&ops),
            Err(StoreError::TooLarge(_))
        ));
        ops.pop();
        ops.push(put(10, 98_303));
        assert_eq!(validate::transaction_size(&ops), MAX_TRANSACTION_BYTES);
        assert!(validate::transaction(&ops).is_ok());
    }

    #[test]
    fn two_operations_on_one_item_are_invalid() {
        let key = Key::new("P", "S");
        let ops = vec![
            TxOp::Put {
                item: Item::new(key.clone()),
                condition: None,
            },
            TxOp::Check {
                key,
                condition: Condition::Exists,
            },
        ];
        assert!(matches!(
            validate::transaction(&ops),
            Err(StoreError::Invalid(_))
        ));
    }
}
