//! The embedded item store: one SQLite table keyed by (pk, sk). Sort keys are
//! stored as bytes so SQLite orders them exactly as DynamoDB does (UTF-8 byte
//! order) and a prefix is a byte range.

use async_trait::async_trait;
use rusqlite::{params, Connection};

use super::codec;
use super::db::{Db, DbError};
use super::eval;
use std::sync::Arc;

use lambent_core::clock::{self, Clock};
use lambent_ports::store::{
    validate, Condition, Item, ItemStore, Key, Order, Page, Query, StoreCursor, StoreError,
    StoreResult, TxOp, Update,
};

pub struct EmbeddedStore {
    db: Db,
    /// Decides what has expired.
    clock: Arc<dyn Clock>,
}

impl EmbeddedStore {
    pub fn new(db: Db) -> Self {
        EmbeddedStore::with_clock(db, clock::system())
    }

    pub fn with_clock(db: Db, clock: Arc<dyn Clock>) -> Self {
        EmbeddedStore { db, clock }
    }
}

impl From<DbError> for StoreError {
    fn from(e: DbError) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}

fn sql(e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(format!("sqlite: {e}"))
}

fn decode(key: Key, attrs: &[u8], expires_at: Option<i64>) -> StoreResult<Item> {
    Ok(Item {
        key,
        attrs: codec::decode(attrs).map_err(StoreError::Corrupt)?,
        expires_at,
    })
}

/// The bytes of the `attrs` column, whether a BLOB (the binary form) or
/// TEXT (JSON written before it).
fn attrs_bytes(value: rusqlite::types::ValueRef<'_>) -> rusqlite::Result<&[u8]> {
    match value {
        rusqlite::types::ValueRef::Blob(b) | rusqlite::types::ValueRef::Text(b) => Ok(b),
        other => Err(rusqlite::Error::InvalidColumnType(
            0,
            "attrs".into(),
            other.data_type(),
        )),
    }
}

/// The live item at `key`; expired items read as absent.
fn load(conn: &Connection, key: &Key, now: i64) -> StoreResult<Option<Item>> {
    // Cached statements: parsing the SQL again on every call was a seventh
    // of the CPU of a chat turn (docs/PERFORMANCE.md).
    let mut stmt = conn
        .prepare_cached("SELECT attrs, expires_at FROM items WHERE pk = ?1 AND sk = ?2")
        .map_err(sql)?;
    let mut rows = stmt
        .query(params![key.pk, key.sk.as_bytes()])
        .map_err(sql)?;
    let Some(row) = rows.next().map_err(sql)? else {
        return Ok(None);
    };
    let expires_at: Option<i64> = row.get(1).map_err(sql)?;
    match expires_at {
        Some(t) if t <= now => Ok(None),
        _ => {
            let attrs = attrs_bytes(row.get_ref(0).map_err(sql)?).map_err(sql)?;
            decode(key.clone(), attrs, expires_at).map(Some)
        }
    }
}

fn save(conn: &Connection, item: &Item) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT INTO items (pk, sk, attrs, expires_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (pk, sk) DO UPDATE SET attrs = excluded.attrs, expires_at = excluded.expires_at",
    )
    .map_err(sql)?
    .execute(params![item.key.pk, item.key.sk.as_bytes(), codec::encode(&item.attrs), item.expires_at])
    .map_err(sql)?;
    Ok(())
}

fn remove(conn: &Connection, key: &Key) -> StoreResult<()> {
    conn.prepare_cached("DELETE FROM items WHERE pk = ?1 AND sk = ?2")
        .map_err(sql)?
        .execute(params![key.pk, key.sk.as_bytes()])
        .map_err(sql)?;
    Ok(())
}

fn check(condition: Option<&Condition>, current: Option<&Item>) -> bool {
    condition.is_none_or(|c| eval::holds(c, current))
}

/// Applies one write in an open transaction; `Err(ConditionFailed)` if its
/// condition does not hold, `Err(TooLarge)` if an update would make the item
/// larger than DynamoDB's 400 KB (the caller then drops the transaction, so
/// nothing is written). Returns the item written (puts and updates) or
/// removed (deletes).
fn write_one(tx: &Connection, op: &TxOp, now: i64) -> StoreResult<Option<Item>> {
    let current = load(tx, op.key(), now)?;
    if !holds(op, current.as_ref()) {
        return Err(StoreError::ConditionFailed);
    }
    apply_one(tx, op, current)
}

/// Whether `op`'s condition holds over `current`, the item at its key.
fn holds(op: &TxOp, current: Option<&Item>) -> bool {
    match op {
        TxOp::Put { condition, .. }
        | TxOp::Update { condition, .. }
        | TxOp::Delete { condition, .. } => check(condition.as_ref(), current),
        TxOp::Check { condition, .. } => eval::holds(condition, current),
    }
}

/// Writes `op`, whose condition held over `current` (the item at its key,
/// read in this transaction).
fn apply_one(tx: &Connection, op: &TxOp, current: Option<Item>) -> StoreResult<Option<Item>> {
    match op {
        TxOp::Put { item, .. } => {
            save(tx, item)?;
            Ok(Some(item.clone()))
        }
        TxOp::Update { key, update, .. } => {
            let item = eval::apply(current, key, update)?;
            // As DynamoDB does, refuse an update whose result would be over
            // 400 KB; the caller's transaction is dropped, so nothing is
            // written.
            validate::item_size(&item)?;
            save(tx, &item)?;
            Ok(Some(item))
        }
        TxOp::Delete { key, .. } => {
            remove(tx, key)?;
            Ok(current)
        }
        TxOp::Check { .. } => Ok(None),
    }
}

impl EmbeddedStore {
    async fn write(&self, op: TxOp) -> StoreResult<Option<Item>> {
        let now = self.clock.now_secs();
        self.db.write(move |tx| write_one(tx, &op, now)).await
    }
}

/// The SQL of a query of one partition's sort keys from `?2` (inclusive or
/// not), below `?3` when there is an upper bound (else `?3` is unused).
/// Both bounds are plain comparisons, so SQLite reads only the range: an
/// upper bound written `(?3 IS NULL OR sk < ?3)` is no index bound, and a
/// prefix query then read the rest of the partition after the prefix (a
/// session's history scanning its turns, a follower's poll of its events
/// scanning the session's messages). No `LIMIT`: the rows come in index
/// order as they are stepped, so the caller stops after the page; a bound
/// `LIMIT ?` made SQLite prepare the statement again on every call (the
/// planner reads the limit's value), a sixth of a chat turn's store CPU.
fn range_query(lower_inclusive: bool, bounded: bool, order: Order) -> String {
    format!(
        "SELECT sk, attrs, expires_at FROM items
         WHERE pk = ?1 AND sk {} ?2 {}
           AND (expires_at IS NULL OR expires_at > ?4)
         ORDER BY sk {}",
        if lower_inclusive { ">=" } else { ">" },
        if bounded { "AND sk < ?3" } else { "" },
        match order {
            Order::Ascending => "ASC",
            Order::Descending => "DESC",
        }
    )
}

/// The smallest byte string greater than every string starting with `prefix`
/// (None if there is none).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[async_trait]
impl ItemStore for EmbeddedStore {
    async fn get(&self, key: &Key) -> StoreResult<Option<Item>> {
        validate::key(key)?;
        let key = key.clone();
        let now = self.clock.now_secs();
        self.db.read(move |conn| load(conn, &key, now)).await
    }

    async fn put(&self, item: Item, condition: Option<Condition>) -> StoreResult<()> {
        validate::put_op(&item, condition.as_ref())?;
        self.write(TxOp::Put { item, condition }).await.map(|_| ())
    }

    async fn update(
        &self,
        key: &Key,
        update: Update,
        condition: Option<Condition>,
    ) -> StoreResult<Item> {
        validate::update_op(key, &update, condition.as_ref())?;
        let written = self
            .write(TxOp::Update {
                key: key.clone(),
                update,
                condition,
            })
            .await?;
        written.ok_or_else(|| StoreError::Corrupt("update wrote nothing".into()))
    }

    async fn delete(&self, key: &Key, condition: Option<Condition>) -> StoreResult<Option<Item>> {
        validate::delete_op(key, condition.as_ref())?;
        self.write(TxOp::Delete {
            key: key.clone(),
            condition,
        })
        .await
    }

    async fn query(&self, query: Query) -> StoreResult<Page> {
        validate::query(&query)?;
        let now = self.clock.now_secs();
        self.db
            .read(move |conn| {
                let prefix = query.sk_prefix.as_bytes().to_vec();
                let end = prefix_end(&prefix);
                // Bounds: [lower, upper) from the prefix, narrowed by the cursor.
                let (mut lower, mut lower_inclusive) = (prefix, true);
                let mut upper = end;
                if let Some(StoreCursor(after)) = &query.cursor {
                    match query.order {
                        Order::Ascending => {
                            lower = after.as_bytes().to_vec();
                            lower_inclusive = false;
                        }
                        Order::Descending => upper = Some(after.as_bytes().to_vec()),
                    }
                }
                let sql_text = range_query(lower_inclusive, upper.is_some(), query.order);
                let mut stmt = conn.prepare_cached(&sql_text).map_err(sql)?;
                // One extra row tells whether another page follows.
                let mut rows = stmt
                    .query(params![query.pk, lower, upper.unwrap_or_default(), now])
                    .map_err(sql)?;
                let mut items = Vec::with_capacity(query.limit);
                let mut more = false;
                while let Some(row) = rows.next().map_err(sql)? {
                    if items.len() == query.limit {
                        more = true;
                        break;
                    }
                    let sk = match row.get_ref(0).map_err(sql)? {
                        rusqlite::types::ValueRef::Blob(b) | rusqlite::types::ValueRef::Text(b) => {
                            std::str::from_utf8(b)
                                .map_err(|_| StoreError::Corrupt("sort key is not UTF-8".into()))?
                                .to_owned()
                        }
                        _ => return Err(StoreError::Corrupt("sort key is not bytes".into())),
                    };
                    let expires_at: Option<i64> = row.get(2).map_err(sql)?;
                    let attrs = attrs_bytes(row.get_ref(1).map_err(sql)?).map_err(sql)?;
                    items.push(decode(Key::new(query.pk.clone(), sk), attrs, expires_at)?);
                }
                let next = match (more, items.last()) {
                    (true, Some(last)) => Some(StoreCursor(last.key.sk.clone())),
                    _ => None,
                };
                Ok(Page { items, next })
            })
            .await
    }

    async fn transact(&self, ops: Vec<TxOp>) -> StoreResult<()> {
        validate::transaction(&ops)?;
        let now = self.clock.now_secs();
        self.db
            .write(move |tx| {
                // Check every condition first, as DynamoDB does, so the error
                // lists all the operations that failed; then write, from the
                // items read for the check (no two operations share a key).
                let mut failed = Vec::new();
                let mut currents = Vec::with_capacity(ops.len());
                for (i, op) in ops.iter().enumerate() {
                    let current = load(tx, op.key(), now)?;
                    if !holds(op, current.as_ref()) {
                        failed.push(i);
                    }
                    currents.push(current);
                }
                if !failed.is_empty() {
                    return Err(StoreError::TransactionCancelled { failed });
                }
                // An error part way (an update over 400 KB) undoes the
                // writes before it: the group runs each write in a savepoint.
                for (op, current) in ops.iter().zip(currents) {
                    apply_one(tx, op, current)?;
                }
                Ok(())
            })
            .await
    }

    async fn ping(&self) -> StoreResult<()> {
        self.db
            .with(|conn| {
                conn.query_row("SELECT count(*) FROM items WHERE pk = ''", [], |r| {
                    r.get::<_, i64>(0)
                })
                .map_err(sql)
                .map(|_| ())
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_end;
    use super::{Db, EmbeddedStore};
    use lambent_ports::store::{
        Item, ItemStore, Key, StoreError, TxOp, Update, Value, MAX_ITEM_BYTES,
    };

    fn store() -> (tempfile::TempDir, EmbeddedStore) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("test.sqlite3")).unwrap();
        (dir, EmbeddedStore::new(db))
    }

    /// The filler that makes an item with key `key` and attributes `a` and
    /// `b` exactly `size` bytes, given `a`.
    fn filler(key: &Key, a: &str, size: usize) -> String {
        "y".repeat(size - key.size() - "a".len() - a.len() - "b".len())
    }

    #[tokio::test]
    async fn the_whole_400_kb_is_usable_and_not_a_byte_more() {
        let (_dir, store) = store();
        let key = Key::new("P", "S");
        let exact = Item::new(key.clone()).with("v", "x".repeat(MAX_ITEM_BYTES - 7));
        assert_eq!(exact.size(), MAX_ITEM_BYTES);
        store.put(exact.clone(), None).await.unwrap();
        assert_eq!(store.get(&key).await.unwrap(), Some(exact.clone()));

        // An update to exactly 400 KB passes; one byte more is refused and
        // leaves the item as it was.
        let a = "a".repeat(100_000);
        store
            .put(Item::new(key.clone()).with("a", a.as_str()), None)
            .await
            .unwrap();
        let full = filler(&key, &a, MAX_ITEM_BYTES);
        let written = store
            .update(&key, Update::new().set("b", full.as_str()), None)
            .await
            .unwrap();
        assert_eq!(written.size(), MAX_ITEM_BYTES);
        let over = format!("{full}y");
        let err = store
            .update(
                &key,
                Update::new().set("b", over.as_str()).add("n", 1.into()),
                None,
            )
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::TooLarge(_)), "{err:?}");
        assert_eq!(store.get(&key).await.unwrap(), Some(written.clone()));

        // Within a transaction, the other operations are not written either.
        let other = Key::new("P", "OTHER");
        let err = store
            .transact(vec![
                TxOp::Put {
                    item: Item::new(other.clone()),
                    condition: None,
                },
                TxOp::Update {
                    key: key.clone(),
                    update: Update::new().set("c", Value::Bool(true)),
                    condition: None,
                },
            ])
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::TooLarge(_)), "{err:?}");
        assert_eq!(store.get(&other).await.unwrap(), None);
        assert_eq!(store.get(&key).await.unwrap(), Some(written));
    }

    /// A prefix query reads only its prefix's range of the partition.
    #[tokio::test]
    async fn a_prefix_query_is_an_index_range_both_ways() {
        let (_dir, store) = store();
        for order in [
            lambent_ports::Order::Ascending,
            lambent_ports::Order::Descending,
        ] {
            let sql_text = super::range_query(true, true, order);
            let plan: Vec<String> = store
                .db
                .with(move |conn| {
                    let mut stmt = conn
                        .prepare(&format!("EXPLAIN QUERY PLAN {sql_text}"))
                        .map_err(super::sql)?;
                    let bounds = rusqlite::params!["P", b"MSG#".to_vec(), b"MSG$".to_vec(), 0];
                    let rows = stmt
                        .query_map(bounds, |r| r.get::<_, String>(3))
                        .map_err(super::sql)?;
                    rows.collect::<Result<Vec<_>, _>>().map_err(super::sql)
                })
                .await
                .unwrap();
            assert!(
                plan.iter().any(|step| step.contains("sk>? AND sk<?")),
                "{plan:?}"
            );
        }
    }

    /// A query's statement is prepared once: SQLite prepares a statement
    /// again when a value bound to it changes its plan (a bound `LIMIT`
    /// did, on every call with another page size).
    #[tokio::test]
    async fn queries_reuse_their_prepared_statement() {
        let (_dir, store) = store();
        for i in 0..12 {
            let item = Item::new(Key::new(format!("P{}", i % 3), format!("MSG#{i:02}")));
            store.put(item, None).await.unwrap();
        }
        for (pk, limit) in [("P0", 1), ("P1", 2), ("P2", 50), ("P0", 3)] {
            let page = store
                .query(
                    lambent_ports::Query::partition(pk)
                        .prefix("MSG#")
                        .limit(limit),
                )
                .await
                .unwrap();
            assert_eq!(page.items.len(), limit.min(4), "{pk} {limit}");
            assert_eq!(page.next.is_some(), limit < 4, "{pk} {limit}");
        }
        let sql_text = super::range_query(true, true, lambent_ports::Order::Ascending);
        let reprepared = store
            .db
            .read(move |conn| {
                let stmt = conn.prepare_cached(&sql_text).map_err(super::sql)?;
                Ok::<_, StoreError>(stmt.get_status(rusqlite::StatementStatus::RePrepare))
            })
            .await
            .unwrap();
        assert_eq!(reprepared, 0);
    }

    /// An item written as JSON text (before the binary form) is read as it
    /// was, and the next write of it stores the binary form.
    #[tokio::test]
    async fn an_item_stored_as_json_is_read_and_rewritten_in_binary() {
        let (_dir, store) = store();
        let key = Key::new("P", "OLD");
        let old = Item::new(key.clone())
            .with("name", "kept")
            .with("n", rust_decimal::Decimal::new(25, 2));
        let json = serde_json::to_string(&old.attrs).unwrap();
        store
            .db
            .write(move |conn| {
                conn.execute(
                    "INSERT INTO items (pk, sk, attrs) VALUES ('P', CAST('OLD' AS BLOB), ?1)",
                    [json],
                )
                .map_err(super::sql)
            })
            .await
            .unwrap();
        assert_eq!(store.get(&key).await.unwrap(), Some(old.clone()));
        let updated = store
            .update(&key, Update::new().add("n", 1.into()), None)
            .await
            .unwrap();
        assert_eq!(
            updated.get_decimal("n"),
            Some(rust_decimal::Decimal::new(125, 2))
        );
        assert_eq!(updated.get_str("name"), Some("kept"));
        let kind: String = store
            .db
            .read(|conn| {
                conn.query_row("SELECT typeof(attrs) FROM items WHERE pk = 'P'", [], |r| {
                    r.get(0)
                })
                .map_err(super::sql)
            })
            .await
            .unwrap();
        assert_eq!(kind, "blob");
        let page = store
            .query(lambent_ports::Query::partition("P"))
            .await
            .unwrap();
        assert_eq!(page.items, vec![updated]);
    }

    #[test]
    fn prefix_end_is_the_next_byte_string() {
        assert_eq!(prefix_end(b"MSG#"), Some(b"MSG$".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b""), None);
    }
}
