//! The item store on DynamoDB: one table, string keys `pk` / `sk`, and the TTL
//! attribute `expires_at` (a Number, epoch seconds).
//!
//! DynamoDB deletes expired items lazily (hours, sometimes days, after their
//! expiry), so every read and every condition treats an item whose
//! `expires_at <= now` as absent, exactly like the embedded adapter:
//!
//! * `get` drops it, `query` filters it out (FilterExpression plus a client
//!   check with the same `now`), `delete` returns `None` for it;
//! * every condition is rendered as "the condition, on the live item": an
//!   expired item is seen as an empty one (`NotExists` and `AttrNotExists` hold,
//!   `Exists`, `AttrExists` and comparisons do not);
//! * an update must not start from an expired item's stale attributes, so it
//!   also requires the item to be live; when that guard is what failed (the
//!   old item comes back with ReturnValuesOnConditionCheckFailure=ALL_OLD), the
//!   expired item is deleted (conditionally on its `expires_at`, so a fresh
//!   write is never lost) and the update is retried. Transactions do the same.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{
    AttributeValue, ConditionCheck, Delete, Put, ReturnValue, ReturnValuesOnConditionCheckFailure,
    TableStatus, TransactWriteItem, Update as DynamoUpdate,
};
use aws_sdk_dynamodb::Client;
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;

use super::sdk::error_text;
use lambent_core::time::now_epoch_secs as now_epoch;
use lambent_ports::store::{
    validate, Cmp, Condition, Item, ItemStore, Key, Order, Page, Query, StoreCursor, StoreError,
    StoreResult, TxOp, Update, Value, TTL_ATTRIBUTE,
};

/// Partition key attribute (String).
pub const PK: &str = "pk";
/// Sort key attribute (String).
pub const SK: &str = "sk";

/// How many times a write is retried after it found (and removed) an expired
/// item in its way. Once is enough unless writers race on the same key.
const EXPIRED_RETRIES: usize = 3;

/// The DynamoDB adapter of [`ItemStore`].
#[derive(Debug, Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
}

impl DynamoStore {
    /// An adapter on `table`, with a client built once per cold start.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoStore {
            client,
            table: table.into(),
        }
    }

    /// Builds the client from a loaded SDK configuration.
    pub fn from_conf(config: &SdkConfig, table: impl Into<String>) -> Self {
        Self::new(Client::new(config), table)
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Removes an expired item, only if it still carries the same expiry (a
    /// concurrent writer may have replaced it with a live one).
    async fn delete_expired(&self, key: &Key, expires_at: AttributeValue) -> StoreResult<()> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key_attributes(key)))
            .condition_expression("#t = :t")
            .expression_attribute_names("#t", TTL_ATTRIBUTE)
            .expression_attribute_values(":t", expires_at)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(err) => match store_error(&err) {
                // Someone rewrote it in the meantime: the retry will see that.
                StoreError::ConditionFailed => Ok(()),
                other => Err(other),
            },
        }
    }
}

// ---------------------------------------------------------------------------
// Errors

/// Maps an SDK error: a failed condition, a transaction conflict, an item or
/// a transaction too large (`TooLarge`: a ValidationException about a size),
/// another request DynamoDB refused as malformed (`Invalid`, e.g. ADD on a
/// string), or `Unavailable`. The text is the full error chain (logs only).
fn store_error<E, R>(err: &SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match err.code() {
        Some("ConditionalCheckFailedException") => StoreError::ConditionFailed,
        Some("TransactionConflictException") | Some("TransactionInProgressException") => {
            StoreError::Conflict
        }
        Some("ValidationException") => validation_error(err.message(), error_text(err)),
        _ => StoreError::Unavailable(error_text(err)),
    }
}

/// A refusal of DynamoDB's validation (a ValidationException, or a
/// transaction's ValidationError cancellation reason): `TooLarge` when its
/// message is about a size limit, else `Invalid`.
fn validation_error(message: Option<&str>, detail: String) -> StoreError {
    if message.is_some_and(is_size_refusal) {
        StoreError::TooLarge(detail)
    } else {
        StoreError::Invalid(detail)
    }
}

/// Whether DynamoDB refused a request for a size limit: "Item size has
/// exceeded the maximum allowed size" (a put), "Item size to update has
/// exceeded the maximum allowed size" (an update), or a transaction's
/// aggregate size over 4 MB. (Two operations on one item, "Transaction
/// request cannot include multiple operations on one item", is `Invalid`:
/// the port's validation refuses it before a request is sent.)
fn is_size_refusal(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    message.contains("size")
        && (message.contains("exceed")
            || message.contains("larger than")
            || message.contains("too large"))
}

// ---------------------------------------------------------------------------
// Values

/// A port value as a DynamoDB attribute value.
pub fn to_attribute(value: &Value) -> AttributeValue {
    match value {
        Value::S(s) => AttributeValue::S(s.clone()),
        Value::N(n) => AttributeValue::N(n.to_string()),
        Value::Bool(b) => AttributeValue::Bool(*b),
        Value::B(b) => AttributeValue::B(Blob::new(b.clone())),
        Value::L(l) => AttributeValue::L(l.iter().map(to_attribute).collect()),
        Value::M(m) => AttributeValue::M(
            m.iter()
                .map(|(k, v)| (k.clone(), to_attribute(v)))
                .collect(),
        ),
        Value::Null => AttributeValue::Null(true),
    }
}

/// A DynamoDB number as an exact decimal. DynamoDB returns plain decimal
/// strings; scientific notation (`1.5E+3`) is accepted as well.
pub fn parse_number(s: &str) -> StoreResult<Decimal> {
    let s = s.trim();
    Decimal::from_str_exact(s)
        .or_else(|_| Decimal::from_scientific(s))
        .map_err(|e| StoreError::Corrupt(format!("number {s:?} is not an exact decimal: {e}")))
}

/// A DynamoDB attribute value as a port value. Sets (never written by
/// Lambent) read back as lists.
pub fn from_attribute(value: AttributeValue) -> StoreResult<Value> {
    Ok(match value {
        AttributeValue::S(s) => Value::S(s),
        AttributeValue::N(n) => Value::N(parse_number(&n)?),
        AttributeValue::Bool(b) => Value::Bool(b),
        AttributeValue::B(b) => Value::B(b.into_inner()),
        AttributeValue::L(l) => Value::L(
            l.into_iter()
                .map(from_attribute)
                .collect::<StoreResult<_>>()?,
        ),
        AttributeValue::M(m) => Value::M(
            m.into_iter()
                .map(|(k, v)| Ok((k, from_attribute(v)?)))
                .collect::<StoreResult<BTreeMap<_, _>>>()?,
        ),
        AttributeValue::Null(_) => Value::Null,
        AttributeValue::Ss(ss) => Value::L(ss.into_iter().map(Value::S).collect()),
        AttributeValue::Ns(ns) => Value::L(
            ns.iter()
                .map(|n| parse_number(n).map(Value::N))
                .collect::<StoreResult<_>>()?,
        ),
        AttributeValue::Bs(bs) => {
            Value::L(bs.into_iter().map(|b| Value::B(b.into_inner())).collect())
        }
        other => {
            return Err(StoreError::Corrupt(format!(
                "unsupported attribute type: {other:?}"
            )))
        }
    })
}

fn key_attributes(key: &Key) -> HashMap<String, AttributeValue> {
    HashMap::from([
        (PK.to_owned(), AttributeValue::S(key.pk.clone())),
        (SK.to_owned(), AttributeValue::S(key.sk.clone())),
    ])
}

/// A whole item as DynamoDB attributes (key and expiry included).
pub fn item_to_attributes(item: &Item) -> HashMap<String, AttributeValue> {
    let mut map = key_attributes(&item.key);
    map.extend(item.attrs.iter().map(|(k, v)| (k.clone(), to_attribute(v))));
    if let Some(t) = item.expires_at {
        map.insert(TTL_ATTRIBUTE.to_owned(), AttributeValue::N(t.to_string()));
    }
    map
}

/// DynamoDB attributes as an item.
pub fn item_from_attributes(mut map: HashMap<String, AttributeValue>) -> StoreResult<Item> {
    let mut key_part = |name: &str| match map.remove(name) {
        Some(AttributeValue::S(s)) => Ok(s),
        Some(_) => Err(StoreError::Corrupt(format!("{name} is not a string"))),
        None => Err(StoreError::Corrupt(format!("item without {name}"))),
    };
    let pk = key_part(PK)?;
    let sk = key_part(SK)?;
    let expires_at = match map.remove(TTL_ATTRIBUTE) {
        None => None,
        Some(value) => Some(expiry_of(&value)?),
    };
    let attrs = map
        .into_iter()
        .map(|(k, v)| Ok((k, from_attribute(v)?)))
        .collect::<StoreResult<BTreeMap<_, _>>>()?;
    Ok(Item {
        key: Key { pk, sk },
        attrs,
        expires_at,
    })
}

/// The epoch seconds in an `expires_at` attribute.
fn expiry_of(value: &AttributeValue) -> StoreResult<i64> {
    match value {
        AttributeValue::N(n) => parse_number(n)?
            .floor()
            .to_i64()
            .ok_or_else(|| StoreError::Corrupt(format!("{TTL_ATTRIBUTE} {n} is out of range"))),
        _ => Err(StoreError::Corrupt(format!(
            "{TTL_ATTRIBUTE} is not a number"
        ))),
    }
}

/// Whether DynamoDB attributes describe an item expired at `now`.
fn attributes_expired(map: &HashMap<String, AttributeValue>, now: i64) -> bool {
    map.get(TTL_ATTRIBUTE)
        .and_then(|v| expiry_of(v).ok())
        .is_some_and(|t| t <= now)
}

fn type_code(value: &Value) -> &'static str {
    match value {
        Value::S(_) => "S",
        Value::N(_) => "N",
        Value::Bool(_) => "BOOL",
        Value::B(_) => "B",
        Value::L(_) => "L",
        Value::M(_) => "M",
        Value::Null => "NULL",
    }
}

// ---------------------------------------------------------------------------
// Expressions

/// Builds one request's expressions: every attribute name goes through a
/// `#n` placeholder and every value through a `:v` placeholder, created only
/// when used (DynamoDB rejects unused ones).
struct Expr {
    now: i64,
    names: HashMap<String, String>,
    name_of: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
    now_placeholder: Option<String>,
}

impl Expr {
    fn new(now: i64) -> Self {
        Expr {
            now,
            names: HashMap::new(),
            name_of: HashMap::new(),
            values: HashMap::new(),
            now_placeholder: None,
        }
    }

    fn name(&mut self, name: &str) -> String {
        if let Some(p) = self.name_of.get(name) {
            return p.clone();
        }
        let placeholder = format!("#n{}", self.names.len());
        self.names.insert(placeholder.clone(), name.to_owned());
        self.name_of.insert(name.to_owned(), placeholder.clone());
        placeholder
    }

    fn value(&mut self, value: AttributeValue) -> String {
        let placeholder = format!(":v{}", self.values.len());
        self.values.insert(placeholder.clone(), value);
        placeholder
    }

    fn now(&mut self) -> String {
        if let Some(p) = &self.now_placeholder {
            return p.clone();
        }
        let p = self.value(AttributeValue::N(self.now.to_string()));
        self.now_placeholder = Some(p.clone());
        p
    }

    /// True when the item is not expired (an absent item counts as live: a
    /// condition on it sees an empty item).
    fn live(&mut self) -> String {
        let t = self.name(TTL_ATTRIBUTE);
        let now = self.now();
        format!("(attribute_not_exists({t}) OR {t} > {now})")
    }

    /// True when the item is expired.
    fn expired(&mut self) -> String {
        let t = self.name(TTL_ATTRIBUTE);
        let now = self.now();
        format!("{t} <= {now}")
    }

    /// Always true / always false (an empty `And` / `Or`, an order comparison
    /// with a value that has no order).
    fn constant(&mut self, truth: bool) -> String {
        let pk = self.name(PK);
        if truth {
            format!("(attribute_exists({pk}) OR attribute_not_exists({pk}))")
        } else {
            format!("(attribute_exists({pk}) AND attribute_not_exists({pk}))")
        }
    }

    /// A condition evaluated on the live item: an expired item is seen as
    /// absent.
    fn condition(&mut self, condition: &Condition) -> StoreResult<String> {
        Ok(match condition {
            Condition::NotExists => {
                let pk = self.name(PK);
                let expired = self.expired();
                format!("(attribute_not_exists({pk}) OR {expired})")
            }
            Condition::Exists => {
                let pk = self.name(PK);
                let live = self.live();
                format!("(attribute_exists({pk}) AND {live})")
            }
            Condition::AttrNotExists(attr) => {
                let a = self.name(attr);
                let expired = self.expired();
                format!("(attribute_not_exists({a}) OR {expired})")
            }
            Condition::AttrExists(attr) => {
                let a = self.name(attr);
                let live = self.live();
                format!("(attribute_exists({a}) AND {live})")
            }
            Condition::Compare(attr, op, value) => {
                let operator = match op {
                    Cmp::Eq => "=",
                    Cmp::Ne => "<>",
                    Cmp::Lt => "<",
                    Cmp::Le => "<=",
                    Cmp::Gt => ">",
                    Cmp::Ge => ">=",
                };
                let ordered = matches!(value, Value::S(_) | Value::N(_) | Value::B(_));
                match op {
                    // Any two values are equal or not; values of different
                    // types are "not equal". An absent attribute fails both.
                    Cmp::Eq | Cmp::Ne => {
                        let a = self.name(attr);
                        let v = self.value(to_attribute(value));
                        let live = self.live();
                        format!("(attribute_exists({a}) AND {a} {operator} {v} AND {live})")
                    }
                    // Only strings, numbers and binaries are ordered, and
                    // only against the same type: anything else is false.
                    _ if !ordered => self.constant(false),
                    _ => {
                        let a = self.name(attr);
                        let t = self.value(AttributeValue::S(type_code(value).to_owned()));
                        let v = self.value(to_attribute(value));
                        let live = self.live();
                        format!("(attribute_type({a}, {t}) AND {a} {operator} {v} AND {live})")
                    }
                }
            }
            Condition::And(conditions) => self.join(conditions, "AND", true)?,
            Condition::Or(conditions) => self.join(conditions, "OR", false)?,
            Condition::Not(inner) => {
                let inner = self.condition(inner)?;
                format!("(NOT {inner})")
            }
        })
    }

    fn join(&mut self, conditions: &[Condition], op: &str, empty: bool) -> StoreResult<String> {
        if conditions.is_empty() {
            return Ok(self.constant(empty));
        }
        let mut parts = conditions
            .iter()
            .map(|c| self.condition(c))
            .collect::<StoreResult<Vec<_>>>()?;
        // DynamoDB refuses redundant parentheses, as around a group of one.
        if parts.len() == 1 {
            return Ok(parts.remove(0));
        }
        Ok(format!("({})", parts.join(&format!(" {op} "))))
    }

    /// The UpdateExpression of an update (validated: each attribute at most
    /// once), `None` when it changes nothing.
    fn update(&mut self, update: &Update) -> StoreResult<Option<String>> {
        let mut set = Vec::new();
        let mut remove = Vec::new();
        let mut add = Vec::new();
        for (name, value) in &update.set {
            let n = self.name(name);
            let v = self.value(to_attribute(value));
            set.push(format!("{n} = {v}"));
        }
        for (name, value) in &update.set_if_absent {
            let n = self.name(name);
            let v = self.value(to_attribute(value));
            set.push(format!("{n} = if_not_exists({n}, {v})"));
        }
        match update.expires_at {
            Some(Some(t)) => {
                let n = self.name(TTL_ATTRIBUTE);
                let v = self.value(AttributeValue::N(t.to_string()));
                set.push(format!("{n} = {v}"));
            }
            Some(None) => remove.push(self.name(TTL_ATTRIBUTE)),
            None => {}
        }
        for name in &update.remove {
            remove.push(self.name(name));
        }
        for (name, by) in &update.add {
            let n = self.name(name);
            let v = self.value(AttributeValue::N(by.to_string()));
            add.push(format!("{n} {v}"));
        }
        let mut clauses = Vec::new();
        if !set.is_empty() {
            clauses.push(format!("SET {}", set.join(", ")));
        }
        if !remove.is_empty() {
            clauses.push(format!("REMOVE {}", remove.join(", ")));
        }
        if !add.is_empty() {
            clauses.push(format!("ADD {}", add.join(", ")));
        }
        Ok((!clauses.is_empty()).then(|| clauses.join(" ")))
    }

    fn names(&self) -> Option<HashMap<String, String>> {
        (!self.names.is_empty()).then(|| self.names.clone())
    }

    fn values(&self) -> Option<HashMap<String, AttributeValue>> {
        (!self.values.is_empty()).then(|| self.values.clone())
    }
}

/// An update's guard: the caller's condition (on the live item) and the item
/// itself live, so that an update never starts from an expired item.
fn update_condition(x: &mut Expr, condition: Option<&Condition>) -> StoreResult<String> {
    let live = x.live();
    Ok(match condition {
        Some(c) => format!("({} AND {live})", x.condition(c)?),
        None => live,
    })
}

/// An attribute no one writes: removing it is how an empty update is
/// spelled (TransactWriteItems requires an UpdateExpression, and emulators
/// mishandle UpdateItem without one). The item is created if absent, else
/// left unchanged.
const NO_OP_ATTRIBUTE: &str = "lambent:noop";

/// The UpdateExpression of an update, never empty.
fn update_expression(x: &mut Expr, update: &Update) -> StoreResult<String> {
    Ok(match x.update(update)? {
        Some(expression) => expression,
        None => format!("REMOVE {}", x.name(NO_OP_ATTRIBUTE)),
    })
}

fn build_error(err: aws_sdk_dynamodb::error::BuildError) -> StoreError {
    StoreError::Invalid(format!("malformed transaction item: {err}"))
}

/// One transaction operation as a TransactWriteItem.
fn transact_item(table: &str, op: &TxOp, now: i64) -> StoreResult<TransactWriteItem> {
    let mut x = Expr::new(now);
    let item = match op {
        TxOp::Put { item, condition } => {
            let condition = condition.as_ref().map(|c| x.condition(c)).transpose()?;
            TransactWriteItem::builder().put(
                Put::builder()
                    .table_name(table)
                    .set_item(Some(item_to_attributes(item)))
                    .set_condition_expression(condition)
                    .set_expression_attribute_names(x.names())
                    .set_expression_attribute_values(x.values())
                    .build()
                    .map_err(build_error)?,
            )
        }
        TxOp::Update {
            key,
            update,
            condition,
        } => {
            let expression = update_expression(&mut x, update)?;
            let condition = update_condition(&mut x, condition.as_ref())?;
            TransactWriteItem::builder().update(
                DynamoUpdate::builder()
                    .table_name(table)
                    .set_key(Some(key_attributes(key)))
                    .update_expression(expression)
                    .condition_expression(condition)
                    .set_expression_attribute_names(x.names())
                    .set_expression_attribute_values(x.values())
                    .return_values_on_condition_check_failure(
                        ReturnValuesOnConditionCheckFailure::AllOld,
                    )
                    .build()
                    .map_err(build_error)?,
            )
        }
        TxOp::Delete { key, condition } => {
            let condition = condition.as_ref().map(|c| x.condition(c)).transpose()?;
            TransactWriteItem::builder().delete(
                Delete::builder()
                    .table_name(table)
                    .set_key(Some(key_attributes(key)))
                    .set_condition_expression(condition)
                    .set_expression_attribute_names(x.names())
                    .set_expression_attribute_values(x.values())
                    .build()
                    .map_err(build_error)?,
            )
        }
        TxOp::Check { key, condition } => {
            let condition = x.condition(condition)?;
            TransactWriteItem::builder().condition_check(
                ConditionCheck::builder()
                    .table_name(table)
                    .set_key(Some(key_attributes(key)))
                    .condition_expression(condition)
                    .set_expression_attribute_names(x.names())
                    .set_expression_attribute_values(x.values())
                    .build()
                    .map_err(build_error)?,
            )
        }
    };
    Ok(item.build())
}

// ---------------------------------------------------------------------------
// The port

#[async_trait]
impl ItemStore for DynamoStore {
    async fn get(&self, key: &Key) -> StoreResult<Option<Item>> {
        validate::key(key)?;
        let now = now_epoch();
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key_attributes(key)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| store_error(&e))?;
        match out.item {
            Some(map) if !map.is_empty() => {
                let item = item_from_attributes(map)?;
                Ok((!item.is_expired(now)).then_some(item))
            }
            _ => Ok(None),
        }
    }

    async fn put(&self, item: Item, condition: Option<Condition>) -> StoreResult<()> {
        validate::put_op(&item, condition.as_ref())?;
        let mut x = Expr::new(now_epoch());
        let condition = condition.as_ref().map(|c| x.condition(c)).transpose()?;
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item_to_attributes(&item)))
            .set_condition_expression(condition)
            .set_expression_attribute_names(x.names())
            .set_expression_attribute_values(x.values())
            .send()
            .await
            .map_err(|e| store_error(&e))?;
        Ok(())
    }

    async fn update(
        &self,
        key: &Key,
        update: Update,
        condition: Option<Condition>,
    ) -> StoreResult<Item> {
        validate::update_op(key, &update, condition.as_ref())?;
        for _ in 0..EXPIRED_RETRIES {
            let now = now_epoch();
            let mut x = Expr::new(now);
            let expression = update_expression(&mut x, &update)?;
            let guard = update_condition(&mut x, condition.as_ref())?;
            let result = self
                .client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(key_attributes(key)))
                .update_expression(expression)
                .condition_expression(guard)
                .set_expression_attribute_names(x.names())
                .set_expression_attribute_values(x.values())
                .return_values(ReturnValue::AllNew)
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                )
                .send()
                .await;
            let err = match result {
                Ok(out) => {
                    let map = match out.attributes {
                        Some(map) if !map.is_empty() => map,
                        _ => key_attributes(key),
                    };
                    return item_from_attributes(map);
                }
                Err(err) => err,
            };
            if let Some(UpdateItemError::ConditionalCheckFailedException(failed)) =
                err.as_service_error()
            {
                match failed.item() {
                    Some(old) if attributes_expired(old, now) => {
                        if let Some(t) = old.get(TTL_ATTRIBUTE) {
                            self.delete_expired(key, t.clone()).await?;
                        }
                        continue;
                    }
                    _ => return Err(StoreError::ConditionFailed),
                }
            }
            return Err(store_error(&err));
        }
        Err(StoreError::Conflict)
    }

    async fn delete(&self, key: &Key, condition: Option<Condition>) -> StoreResult<Option<Item>> {
        validate::delete_op(key, condition.as_ref())?;
        let now = now_epoch();
        let mut x = Expr::new(now);
        let condition = condition.as_ref().map(|c| x.condition(c)).transpose()?;
        let out = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key_attributes(key)))
            .set_condition_expression(condition)
            .set_expression_attribute_names(x.names())
            .set_expression_attribute_values(x.values())
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(|e| store_error(&e))?;
        match out.attributes {
            Some(map) if !map.is_empty() => {
                let item = item_from_attributes(map)?;
                Ok((!item.is_expired(now)).then_some(item))
            }
            _ => Ok(None),
        }
    }

    async fn query(&self, query: Query) -> StoreResult<Page> {
        validate::query(&query)?;
        let now = now_epoch();
        // One item more than asked for tells whether another page follows.
        let wanted = query.limit + 1;
        let mut items: Vec<Item> = Vec::with_capacity(wanted.min(128));
        let mut start = query.cursor.as_ref().map(|c| {
            key_attributes(&Key {
                pk: query.pk.clone(),
                sk: c.0.clone(),
            })
        });
        loop {
            let mut x = Expr::new(now);
            let pk = x.name(PK);
            let pk_value = x.value(AttributeValue::S(query.pk.clone()));
            let key_condition = if query.sk_prefix.is_empty() {
                format!("{pk} = {pk_value}")
            } else {
                let sk = x.name(SK);
                let prefix = x.value(AttributeValue::S(query.sk_prefix.clone()));
                format!("{pk} = {pk_value} AND begins_with({sk}, {prefix})")
            };
            let filter = x.live();
            let page_limit = i32::try_from(wanted - items.len()).unwrap_or(i32::MAX);
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression(key_condition)
                .filter_expression(filter)
                .set_expression_attribute_names(x.names())
                .set_expression_attribute_values(x.values())
                .scan_index_forward(query.order == Order::Ascending)
                .consistent_read(true)
                .limit(page_limit)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| store_error(&e))?;
            for map in out.items.unwrap_or_default() {
                let item = item_from_attributes(map)?;
                if !item.is_expired(now) {
                    items.push(item);
                }
            }
            if items.len() >= wanted {
                break;
            }
            match out.last_evaluated_key {
                Some(last) if !last.is_empty() => start = Some(last),
                _ => break,
            }
        }
        let next = if items.len() > query.limit {
            items.truncate(query.limit);
            items.last().map(|i| StoreCursor(i.key.sk.clone()))
        } else {
            None
        };
        Ok(Page { items, next })
    }

    async fn transact(&self, ops: Vec<TxOp>) -> StoreResult<()> {
        validate::transaction(&ops)?;
        for _ in 0..EXPIRED_RETRIES {
            let now = now_epoch();
            let items = ops
                .iter()
                .map(|op| transact_item(&self.table, op, now))
                .collect::<StoreResult<Vec<_>>>()?;
            let err = match self
                .client
                .transact_write_items()
                .set_transact_items(Some(items))
                .send()
                .await
            {
                Ok(_) => return Ok(()),
                Err(err) => err,
            };
            let Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) =
                err.as_service_error()
            else {
                return Err(store_error(&err));
            };
            let mut failed = Vec::new();
            let mut expired = Vec::new();
            let mut conflict = false;
            let mut refused = None;
            for (index, reason) in cancelled.cancellation_reasons().iter().enumerate() {
                match reason.code() {
                    // DynamoDB cancels a transaction whose update would make
                    // an item over 400 KB with this reason (moto answers a
                    // plain ValidationException instead, mapped above).
                    Some("ValidationError") => {
                        let detail = format!(
                            "operation {index}: {}",
                            reason.message().unwrap_or("validation error")
                        );
                        refused.get_or_insert(validation_error(reason.message(), detail));
                    }
                    Some("ConditionalCheckFailed") => {
                        let old = reason.item().filter(|old| attributes_expired(old, now));
                        match (ops.get(index), old) {
                            (Some(TxOp::Update { key, .. }), Some(old)) => {
                                if let Some(t) = old.get(TTL_ATTRIBUTE) {
                                    expired.push((key, t.clone()));
                                }
                            }
                            _ => failed.push(index),
                        }
                    }
                    Some("TransactionConflict") => conflict = true,
                    _ => {}
                }
            }
            if !expired.is_empty() {
                // An update met an expired item: remove it and run the whole
                // transaction again, so it starts from an absent item.
                for (key, t) in expired {
                    self.delete_expired(key, t).await?;
                }
                continue;
            }
            if let Some(refused) = refused {
                return Err(refused);
            }
            if !failed.is_empty() {
                return Err(StoreError::TransactionCancelled { failed });
            }
            if conflict {
                return Err(StoreError::Conflict);
            }
            return Err(StoreError::Unavailable(error_text(&err)));
        }
        Err(StoreError::Conflict)
    }

    async fn ping(&self) -> StoreResult<()> {
        let out = self
            .client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
            .map_err(|e| StoreError::Unavailable(error_text(&e)))?;
        match out.table().and_then(|t| t.table_status()) {
            Some(TableStatus::Active) => Ok(()),
            status => Err(StoreError::Unavailable(format!(
                "table {} is not active (status {status:?})",
                self.table
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn numbers_round_trip_exactly() -> TestResult {
        for s in ["0", "-1.5", "12345678901234567890.12345678", "0.000000001"] {
            let d = parse_number(s)?;
            assert_eq!(parse_number(&d.to_string())?, d);
        }
        assert_eq!(parse_number("1.5E+3")?, Decimal::from(1500));
        assert_eq!(parse_number("25e-1")?, Decimal::new(25, 1));
        assert!(parse_number("abc").is_err());
        Ok(())
    }

    #[test]
    fn items_round_trip() -> TestResult {
        let mut item = Item::new(Key::new("p", "s"))
            .with("n", Decimal::new(-1234, 2))
            .with("b", true)
            .with("s", "x")
            .expiring_at(42);
        item.attrs.insert("bin".into(), Value::B(vec![0, 1, 255]));
        item.attrs.insert("null".into(), Value::Null);
        item.attrs.insert(
            "m".into(),
            Value::M(BTreeMap::from([(
                "l".into(),
                Value::L(vec![Value::Null, 1.into()]),
            )])),
        );
        let back = item_from_attributes(item_to_attributes(&item))?;
        assert_eq!(back, item);
        Ok(())
    }

    #[test]
    fn size_refusals_are_too_large_and_other_validation_errors_invalid() {
        for message in [
            "Item size has exceeded the maximum allowed size",
            "Item size to update has exceeded the maximum allowed size",
            "Transaction request size cannot be larger than 4 MB",
        ] {
            assert!(
                matches!(
                    validation_error(Some(message), message.into()),
                    StoreError::TooLarge(_)
                ),
                "{message}"
            );
        }
        for message in [
            "Transaction request cannot include multiple operations on one item",
            "An operand in the update expression has an incorrect data type",
        ] {
            assert!(
                matches!(
                    validation_error(Some(message), message.into()),
                    StoreError::Invalid(_)
                ),
                "{message}"
            );
        }
        assert!(matches!(
            validation_error(None, String::new()),
            StoreError::Invalid(_)
        ));
    }

    #[test]
    fn conditions_use_placeholders_only() -> TestResult {
        // A group of one is its member: DynamoDB refuses the redundant
        // parentheses around it.
        let either = Condition::Or(vec![
            Condition::AttrNotExists("lease".into()),
            Condition::AttrNotExists("owner".into()),
        ]);
        let alone = Expr::new(100).condition(&either)?;
        let grouped = Expr::new(100).condition(&Condition::And(vec![either]))?;
        assert_eq!(grouped, alone);
        let mut x = Expr::new(100);
        let c = Condition::And(vec![
            Condition::NotExists,
            Condition::Not(Box::new(Condition::eq("status", "done"))),
        ]);
        let s = x.condition(&c)?;
        assert!(!s.contains("status"), "{s}");
        assert!(x
            .names()
            .is_some_and(|names| names.values().any(|n| n == "status")));
        let never = x.condition(&Condition::cmp("a", Cmp::Lt, true))?;
        assert!(never.contains("attribute_not_exists"), "{never}");
        Ok(())
    }
}
