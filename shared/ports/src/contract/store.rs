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
