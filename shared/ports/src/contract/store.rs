//! The item-store contract (see `crate::store`).

use std::collections::{BTreeMap, BTreeSet};

use crate::store::*;
use futures::future::join_all;
use lambent_core::time::now_epoch_secs;
use rust_decimal::Decimal;

fn unique(prefix: &str) -> String {
    lambent_core::ids::new_id(prefix)
}

pub async fn round_trip_keeps_every_value_exactly(store: &dyn ItemStore) {
    let key = Key::new(unique("P"), "ITEM");
    let nested: BTreeMap<String, Value> = [(
        "inner".to_owned(),
        Value::N("-0.000000001".parse().unwrap()),
    )]
    .into();
    let item = Item::new(key.clone())
        .with("text", "héllo ✓")
        .with("empty", "")
        .with(
            "money",
            "12345678901234.123456789".parse::<Decimal>().unwrap(),
        )
        .with("int", 42i64)
        .with("flag", true)
        .with("bytes", Value::B(vec![0, 1, 2, 255]))
        .with(
            "list",
            Value::L(vec![Value::S("a".into()), Value::N(Decimal::ONE)]),
        )
        .with("map", Value::M(nested))
        .with("nothing", Value::Null)
        .expiring_at(now_epoch_secs() + 3600);
    store.put(item.clone(), None).await.unwrap();
    assert_eq!(store.get(&key).await.unwrap(), Some(item));
    assert_eq!(
        store.get(&Key::new(key.pk.clone(), "OTHER")).await.unwrap(),
        None
    );
}

pub async fn conditional_put_refuses_and_keeps_the_original(store: &dyn ItemStore) {
    let key = Key::new(unique("P"), "ITEM");
    let first = Item::new(key.clone()).with("v", "first");
    store
        .put(first.clone(), Some(Condition::NotExists))
        .await
        .unwrap();
    let second = Item::new(key.clone()).with("v", "second");
    let err = store
        .put(second.clone(), Some(Condition::NotExists))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::ConditionFailed), "{err:?}");
    assert_eq!(store.get(&key).await.unwrap(), Some(first));

    let absent = Key::new(unique("P"), "ITEM");
    let err = store
        .put(
            Item::new(absent.clone()).with("v", "x"),
            Some(Condition::Exists),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::ConditionFailed), "{err:?}");
    assert_eq!(store.get(&absent).await.unwrap(), None);

    // An attribute comparison guards a replacement.
    store
        .put(second.clone(), Some(Condition::eq("v", "first")))
        .await
        .unwrap();
    assert_eq!(store.get(&key).await.unwrap(), Some(second));
}

pub async fn concurrent_adds_are_exact(store: &dyn ItemStore) {
    let key = Key::new(unique("P"), "TOTALS");
    let tenth: Decimal = "0.1".parse().unwrap();
    let adds = (0..20).map(|_| {
        store.update(
            &key,
            Update::new().add("cost", tenth).add("calls", Decimal::ONE),
            None,
        )
    });
    for result in join_all(adds).await {
        result.unwrap();
    }
    let item = store.get(&key).await.unwrap().unwrap();
    assert_eq!(item.get_decimal("cost"), Some(Decimal::TWO));
    assert_eq!(item.get_decimal("calls"), Some(Decimal::from(20)));

    // set_if_absent keeps the first value; remove drops an attribute.
    let item = store
        .update(
            &key,
            Update::new()
                .set_if_absent("created", "first")
                .remove("calls"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(item.get_str("created"), Some("first"));
    assert_eq!(item.get("calls"), None);
    let item = store
        .update(&key, Update::new().set_if_absent("created", "second"), None)
        .await
        .unwrap();
    assert_eq!(item.get_str("created"), Some("first"));
    assert_eq!(item.get_decimal("cost"), Some(Decimal::TWO));
}

pub async fn conditional_update_and_delete(store: &dyn ItemStore) {
    let key = Key::new(unique("P"), "RUN");
    // A budget-style guard: spend only while the remainder covers it.
    store
        .put(
            Item::new(key.clone()).with("remaining", Decimal::from(5)),
            None,
        )
        .await
        .unwrap();
    let spend = |amount: i64| {
        store.update(
            &key,
            Update::new().add("remaining", Decimal::from(-amount)),
            Some(Condition::cmp("remaining", Cmp::Ge, Decimal::from(amount))),
        )
    };
    assert_eq!(
        spend(3).await.unwrap().get_decimal("remaining"),
        Some(Decimal::TWO)
    );
    let err = spend(3).await.unwrap_err();
    assert!(matches!(err, StoreError::ConditionFailed), "{err:?}");
    assert_eq!(
        store
            .get(&key)
            .await
            .unwrap()
            .unwrap()
            .get_decimal("remaining"),
        Some(Decimal::TWO)
    );

    // Updating an absent item with Exists fails and creates nothing.
    let absent = Key::new(unique("P"), "RUN");
    let err = store
        .update(
            &absent,
            Update::new().set("x", "y"),
            Some(Condition::Exists),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::ConditionFailed), "{err:?}");
    assert_eq!(store.get(&absent).await.unwrap(), None);

    // Conditional delete: refused, then done; it returns what it removed.
    let err = store
        .delete(
            &key,
            Some(Condition::cmp("remaining", Cmp::Gt, Decimal::TEN)),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::ConditionFailed), "{err:?}");
    let removed = store.delete(&key, Some(Condition::Exists)).await.unwrap();
    assert_eq!(
        removed.and_then(|i| i.get_decimal("remaining")),
        Some(Decimal::TWO)
    );
    assert_eq!(store.get(&key).await.unwrap(), None);
    assert_eq!(store.delete(&key, None).await.unwrap(), None);
}

pub async fn pages_by_prefix_in_both_orders_without_gaps(store: &dyn ItemStore) {
    let pk = unique("SES");
    let n = 25;
    let puts = (0..n).map(|i| {
        store.put(
            Item::new(Key::new(pk.clone(), format!("MSG#{i:04}"))).with("i", i as i64),
            None,
        )
    });
    for r in join_all(puts).await {
        r.unwrap();
    }
    // Neighbours on both sides of the prefix must not leak into pages.
    for sk in ["MSF#9999", "MSG$", "META"] {
        store
            .put(Item::new(Key::new(pk.clone(), sk)), None)
            .await
            .unwrap();
    }

    for order in [Order::Ascending, Order::Descending] {
        let mut seen = Vec::new();
        let mut cursor = None;
        let mut pages = 0;
        loop {
            let page = store
                .query(
                    Query::partition(pk.clone())
                        .prefix("MSG#")
                        .order(order)
                        .limit(10)
                        .after(cursor),
                )
                .await
                .unwrap();
            assert!(page.items.len() <= 10);
            seen.extend(page.items.iter().map(|i| i.key.sk.clone()));
            pages += 1;
            assert!(pages <= 4, "pagination does not end");
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        let mut expected: Vec<String> = (0..n).map(|i| format!("MSG#{i:04}")).collect();
        if order == Order::Descending {
            expected.reverse();
        }
        assert_eq!(seen, expected, "{order:?}");
    }

    // The whole partition, and a limit larger than it.
    let all = store
        .query(Query::partition(pk.clone()).limit(100))
        .await
        .unwrap();
    assert_eq!(all.items.len(), n + 3);
    assert_eq!(all.next, None);
    let set: BTreeSet<_> = all.items.iter().map(|i| i.key.sk.clone()).collect();
    assert_eq!(set.len(), n + 3);
}

pub async fn expired_items_read_as_absent(store: &dyn ItemStore) {
    let pk = unique("SES");
    let now = now_epoch_secs();
    let live = Item::new(Key::new(pk.clone(), "A"))
        .with("v", 1i64)
        .expiring_at(now + 3600);
    let gone = Item::new(Key::new(pk.clone(), "B"))
        .with("v", 2i64)
        .expiring_at(now - 10);
    store.put(live.clone(), None).await.unwrap();
    store.put(gone.clone(), None).await.unwrap();

    assert_eq!(store.get(&gone.key).await.unwrap(), None);
    let page = store.query(Query::partition(pk.clone())).await.unwrap();
    assert_eq!(page.items, vec![live.clone()]);

    // Conditions see the expired item as absent ...
    let err = store
        .update(
            &gone.key,
            Update::new().set("x", "y"),
            Some(Condition::Exists),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::ConditionFailed), "{err:?}");
    // ... and a create-only put replaces it.
    let fresh = Item::new(gone.key.clone()).with("v", 3i64);
    store
        .put(fresh.clone(), Some(Condition::NotExists))
        .await
        .unwrap();
    assert_eq!(store.get(&gone.key).await.unwrap(), Some(fresh));

    // An update on an expired item starts from nothing, not from stale values.
    let stale = Item::new(Key::new(pk.clone(), "C"))
        .with("count", 100i64)
        .with("old", "stale")
        .expiring_at(now - 10);
    store.put(stale.clone(), None).await.unwrap();
    let updated = store
        .update(
            &stale.key,
            Update::new()
                .add("count", Decimal::ONE)
                .expire_at(Some(now + 60)),
            None,
        )
        .await
        .unwrap();
    assert_eq!(updated.get_decimal("count"), Some(Decimal::ONE));
    assert_eq!(updated.get("old"), None);
    assert_eq!(updated.expires_at, Some(now + 60));

    // Clearing the expiry keeps the item for good.
    let kept = store
        .update(&live.key, Update::new().expire_at(None), None)
        .await
        .unwrap();
    assert_eq!(kept.expires_at, None);
    assert_eq!(
        store.get(&live.key).await.unwrap().map(|i| i.expires_at),
        Some(None)
    );
}

pub async fn transactions_roll_back_whole(store: &dyn ItemStore) {
    let pk = unique("USR");
    let existing = Item::new(Key::new(pk.clone(), "COUNTER")).with("n", 1i64);
    store.put(existing.clone(), None).await.unwrap();

    let new_key = Key::new(pk.clone(), "NEW");
    let err = store
        .transact(vec![
            TxOp::Put {
                item: Item::new(new_key.clone()).with("v", "x"),
                condition: Some(Condition::NotExists),
            },
            TxOp::Update {
                key: existing.key.clone(),
                update: Update::new().add("n", Decimal::ONE),
                condition: None,
            },
            TxOp::Check {
                key: Key::new(pk.clone(), "MISSING"),
                condition: Condition::Exists,
            },
            TxOp::Put {
                item: Item::new(Key::new(pk.clone(), "COUNTER2")),
                condition: Some(Condition::Exists),
            },
        ])
        .await
        .unwrap_err();
    match err {
        StoreError::TransactionCancelled { failed } => assert_eq!(failed, vec![2, 3]),
        other => panic!("expected a cancelled transaction, got {other:?}"),
    }
    assert_eq!(store.get(&new_key).await.unwrap(), None);
    assert_eq!(
        store.get(&existing.key).await.unwrap(),
        Some(existing.clone())
    );

    // The same transaction with its conditions met writes everything.
    store
        .transact(vec![
            TxOp::Put {
                item: Item::new(new_key.clone()).with("v", "x"),
                condition: Some(Condition::NotExists),
            },
            TxOp::Update {
                key: existing.key.clone(),
                update: Update::new().add("n", Decimal::ONE),
                condition: Some(Condition::eq("n", 1i64)),
            },
            TxOp::Delete {
                key: Key::new(pk.clone(), "MISSING"),
                condition: None,
            },
        ])
        .await
        .unwrap();
    assert!(store.get(&new_key).await.unwrap().is_some());
    assert_eq!(
        store
            .get(&existing.key)
            .await
            .unwrap()
            .unwrap()
            .get_decimal("n"),
        Some(Decimal::TWO)
    );
}

pub async fn bad_requests_are_refused(store: &dyn ItemStore) {
    let invalid = |r: Result<(), StoreError>| {
        assert!(matches!(r, Err(StoreError::Invalid(_))), "{r:?}");
    };
    invalid(store.put(Item::new(Key::new("", "x")), None).await);
    invalid(
        store
            .put(Item::new(Key::new("p", "x")).with("pk", "y"), None)
            .await,
    );
    invalid(
        store
            .update(
                &Key::new("p", "x"),
                Update::new().set("a", "1").add("a", Decimal::ONE),
                None,
            )
            .await
            .map(|_| ()),
    );
    invalid(
        store
            .query(Query::partition("p").limit(0))
            .await
            .map(|_| ()),
    );
    invalid(
        store
            .query(
                Query::partition("p")
                    .prefix("MSG#")
                    .after(Some(StoreCursor("OTHER#1".into()))),
            )
            .await
            .map(|_| ()),
    );
    let key = Key::new("p", "same");
    invalid(
        store
            .transact(vec![
                TxOp::Delete {
                    key: key.clone(),
                    condition: None,
                },
                TxOp::Delete {
                    key,
                    condition: None,
                },
            ])
            .await,
    );
    store.ping().await.unwrap();
}

// ---------------------------------------------------------------------------
// DynamoDB's size limits: an item holds at most 400 KB (409,600 bytes,
// `Item::size`), a transaction at most 4 MB, and no two operations of a
// transaction may touch one item. Both backends refuse the same requests
// with the same error, and a refused write leaves nothing behind.
//
// The emulator (moto 5) differs from DynamoDB in two ways, and the port's
// validation (`store::validate`, run by both adapters before anything is
// sent or written) is what makes both backends behave like DynamoDB:
// * moto does not enforce the 4 MB of a transaction at all;
// * moto refuses items over 405,000 bytes (its own estimate; DynamoDB takes
//   409,600), so the item "just under" the limit here is 400,000 bytes. The
//   exact boundary (409,600 stored, 409,601 refused) is checked by the
//   port's and the embedded adapter's unit tests.
// moto does enforce an update that grows an item past its limit ("Item size
// to update has exceeded the maximum allowed size") and two operations on
// one item in a transaction.

/// An item of exactly `size` bytes with `key`: one string attribute.
fn item_of_size(key: Key, size: usize) -> Item {
    let filler = size - key.size() - "v".len();
    let item = Item::new(key).with("v", "x".repeat(filler));
    assert_eq!(item.size(), size);
    item
}

fn too_large<T: std::fmt::Debug>(result: StoreResult<T>) {
    assert!(
        matches!(result, Err(StoreError::TooLarge(_))),
        "expected TooLarge, got {result:?}"
    );
}

pub async fn an_item_over_400_kb_is_refused_and_leaves_nothing(store: &dyn ItemStore) {
    let key = Key::new(unique("P"), "BIG");
    let over = item_of_size(key.clone(), MAX_ITEM_BYTES + 1);
    too_large(store.put(over.clone(), None).await);
    too_large(store.put(over.clone(), Some(Condition::NotExists)).await);
    assert_eq!(store.get(&key).await.unwrap(), None);

    // In a transaction, the other operations are not written either.
    let other = Key::new(key.pk.clone(), "OTHER");
    too_large(
        store
            .transact(vec![
                TxOp::Put {
                    item: Item::new(other.clone()).with("v", "small"),
                    condition: None,
                },
                TxOp::Put {
                    item: over,
                    condition: None,
                },
            ])
            .await,
    );
    assert_eq!(store.get(&other).await.unwrap(), None);
    assert_eq!(store.get(&key).await.unwrap(), None);

    // An update that alone sets more than an item holds creates nothing.
    let big = "x".repeat(MAX_ITEM_BYTES);
    too_large(store.update(&key, Update::new().set("v", big), None).await);
    assert_eq!(store.get(&key).await.unwrap(), None);
}

pub async fn an_item_just_under_400_kb_is_stored_and_reads_back(store: &dyn ItemStore) {
    // 400,000 bytes: under DynamoDB's 409,600 and under moto's 405,000.
    let key = Key::new(unique("P"), "BIG");
    let item = item_of_size(key.clone(), 400_000);
    store
        .put(item.clone(), Some(Condition::NotExists))
        .await
        .unwrap();
    assert_eq!(store.get(&key).await.unwrap(), Some(item));
}

pub async fn an_update_past_400_kb_is_refused_and_keeps_the_old_item(store: &dyn ItemStore) {
    let key = Key::new(unique("P"), "GROWING");
    let old = Item::new(key.clone())
        .with("a", "a".repeat(300_000))
        .with("n", 1i64);
    store.put(old.clone(), None).await.unwrap();

    // 150,000 bytes more: the update alone is small enough to be sent, its
    // result (about 450,000 bytes) is not.
    let more = "b".repeat(150_000);
    too_large(
        store
            .update(&key, Update::new().set("b", more.as_str()), None)
            .await,
    );
    assert_eq!(store.get(&key).await.unwrap(), Some(old.clone()));
    too_large(
        store
            .update(
                &key,
                Update::new().set("b", more.as_str()),
                Some(Condition::eq("n", 1i64)),
            )
            .await,
    );
    assert_eq!(store.get(&key).await.unwrap(), Some(old.clone()));

    // The same update in a transaction: nothing of it is written.
    let other = Key::new(key.pk.clone(), "OTHER");
    too_large(
        store
            .transact(vec![
                TxOp::Put {
                    item: Item::new(other.clone()).with("v", "small"),
                    condition: None,
                },
                TxOp::Update {
                    key: key.clone(),
                    update: Update::new().set("b", more.as_str()),
                    condition: None,
                },
            ])
            .await,
    );
    assert_eq!(store.get(&other).await.unwrap(), None);
    assert_eq!(store.get(&key).await.unwrap(), Some(old));

    // What still fits is written.
    let written = store
        .update(&key, Update::new().set("b", "b".repeat(50_000)), None)
        .await
        .unwrap();
    assert_eq!(written.get_str("b").map(str::len), Some(50_000));
}

pub async fn a_transaction_with_two_operations_on_one_item_is_refused(store: &dyn ItemStore) {
    let pk = unique("P");
    let key = Key::new(pk.clone(), "ONE");
    let other = Key::new(pk.clone(), "TWO");
    let err = store
        .transact(vec![
            TxOp::Put {
                item: Item::new(other.clone()).with("v", "x"),
                condition: None,
            },
            TxOp::Put {
                item: Item::new(key.clone()).with("v", "x"),
                condition: Some(Condition::NotExists),
            },
            TxOp::Update {
                key: key.clone(),
                update: Update::new().set("w", "y"),
                condition: None,
            },
        ])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
    assert_eq!(store.get(&key).await.unwrap(), None);
    assert_eq!(store.get(&other).await.unwrap(), None);

    // A check and a write of one item are two operations on it too.
    let err = store
        .transact(vec![
            TxOp::Check {
                key: key.clone(),
                condition: Condition::NotExists,
            },
            TxOp::Put {
                item: Item::new(key.clone()),
                condition: None,
            },
        ])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
    assert_eq!(store.get(&key).await.unwrap(), None);
}

pub async fn a_transaction_over_4_mb_is_refused_and_writes_nothing(store: &dyn ItemStore) {
    // Eleven items of 390,000 bytes: each fits, together they are 4,290,000
    // bytes, over the 4,194,304 of a transaction. (moto would take it: the
    // port's validation refuses it before it is sent.)
    let pk = unique("P");
    let keys: Vec<Key> = (0..11)
        .map(|i| Key::new(pk.clone(), format!("ITEM#{i:02}")))
        .collect();
    let ops: Vec<TxOp> = keys
        .iter()
        .map(|key| TxOp::Put {
            item: item_of_size(key.clone(), 390_000),
            condition: Some(Condition::NotExists),
        })
        .collect();
    assert!(validate::transaction_size(&ops) > MAX_TRANSACTION_BYTES);
    too_large(store.transact(ops).await);
    let page = store.query(Query::partition(pk.clone())).await.unwrap();
    assert_eq!(page.items, Vec::new());

    // Ten of them (3,900,000 bytes) fit in one transaction.
    let ops: Vec<TxOp> = keys[..10]
        .iter()
        .map(|key| TxOp::Put {
            item: item_of_size(key.clone(), 390_000),
            condition: Some(Condition::NotExists),
        })
        .collect();
    store.transact(ops).await.unwrap();
    let page = store.query(Query::partition(pk)).await.unwrap();
    assert_eq!(page.items.len(), 10);
}
