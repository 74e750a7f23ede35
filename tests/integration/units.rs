//! DynamoDB capacity units of a real turn, counted through the port
//! (`lambent_testkit::units`): every item the turn writes is charged, with
//! a positive size that is the stored item's, the totals are the sum of
//! the items' units, and the settle is one transaction charged twice per
//! item. No figure of the turn is fixed here: the benchmark reports them
//! (`unitsbench`, docs/PERFORMANCE.md).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use lambent_ports::ItemStore;
use lambent_testkit::app::spawn_app_layered;
use lambent_testkit::chat::ChatWorld;
use lambent_testkit::units::{self, Ledger, Op, Outcome, Totals, UnitStore};
use serde_json::json;

#[tokio::test]
async fn a_turns_writes_and_reads_are_each_charged_by_their_items_sizes() {
    let ledger = Ledger::new();
    // The store under the ledger, to read the items back uncounted.
    let inner: Arc<std::sync::Mutex<Option<Arc<dyn ItemStore>>>> = Arc::default();
    let layer = {
        let (ledger, inner) = (ledger.clone(), inner.clone());
        units::StoreLayer::new(move |store| {
            *inner.lock().unwrap() = Some(store.clone());
            Arc::new(UnitStore::new(store, ledger.clone())) as Arc<dyn ItemStore>
        })
    };
    let app = spawn_app_layered(lambent_core::clock::system(), Some(layer), |_| {}).await;
    let w = ChatWorld::seed(app, "anthropic").await;
    let session = w.session(json!({})).await;
    let (status, _) = w.chat_whole(&session, "hello").await;
    assert_eq!(status, 200);
    ledger.settled(Duration::from_millis(200)).await;

    let mark = ledger.mark();
    let (status, reply) = w.chat_whole(&session, "and again").await;
    assert_eq!(status, 200, "{reply}");
    ledger.settled(Duration::from_millis(200)).await;
    let charges = ledger.since(mark);
    let store = inner
        .lock()
        .unwrap()
        .clone()
        .expect("the layer wrapped the store");

    let writes: Vec<_> = charges.iter().filter(|c| c.op.writes()).collect();
    let reads: Vec<_> = charges.iter().filter(|c| !c.op.writes()).collect();
    assert!(!writes.is_empty() && !reads.is_empty(), "{charges:#?}");
    // Nothing failed or was cancelled; a write whose condition failed (the
    // rate-limit bucket's, when its first form misses) is still charged.
    for c in &charges {
        assert!(
            matches!(c.outcome, Outcome::Done | Outcome::ConditionFailed),
            "{c:?}"
        );
        if c.outcome == Outcome::ConditionFailed {
            assert!(c.write_units >= 1, "{c:?}");
        }
    }
    // Every item written has a size, at least its key, and is charged a
    // whole number of 1 KB units of it, twice in a transaction.
    for c in &writes {
        let key_bytes = "pk".len() + c.key.pk.len() + "sk".len() + c.key.sk.len();
        assert!(c.bytes >= key_bytes, "{c:?}");
        let units = c.bytes.div_ceil(units::WRITE_UNIT_BYTES) as u64;
        let expected = if c.transactional() { 2 * units } else { units };
        assert_eq!(c.write_units, expected, "{c:?}");
        assert_eq!(c.read_units, 0.0, "{c:?}");
    }
    // The last write of each item recorded the size of the item as it is
    // stored now, which the port counts the same way (`Item::size`).
    let mut last = std::collections::BTreeMap::new();
    for c in writes.iter().filter(|c| c.outcome == Outcome::Done) {
        last.insert(c.key.clone(), *c);
    }
    for (key, c) in &last {
        let now = store.get(key).await.unwrap();
        match c.op {
            Op::Put | Op::Update => {
                let now = now.unwrap_or_else(|| panic!("{c:?} is gone"));
                assert_eq!(c.after, Some(units::item_size(&now)), "{c:?} vs {now:?}");
                assert_eq!(units::item_size(&now), now.size(), "{now:?}");
            }
            Op::Delete => assert!(now.is_none(), "{c:?}"),
            _ => {}
        }
    }
    // The reply: a new message in the session, written in the settle
    // (a transaction that also moves the session's and the month's totals).
    let mut message = None;
    for c in &writes {
        if c.op == Op::Put
            && c.key.pk == format!("SESSION#{session}")
            && c.key.sk.starts_with("MSG#")
            && c.before.is_none()
        {
            let stored = store.get(&c.key).await.unwrap();
            if stored.is_some_and(|m| m.get_str("role") == Some("assistant")) {
                message = Some(*c);
            }
        }
    }
    let message = message.unwrap_or_else(|| panic!("the reply was not charged: {writes:#?}"));
    assert!(message.transactional(), "{message:?}");
    let stored = store.get(&message.key).await.unwrap().unwrap();
    assert_eq!(message.bytes, units::item_size(&stored));
    let settle: BTreeSet<String> = writes
        .iter()
        .filter(|c| c.call == message.call)
        .map(|c| c.key.to_string())
        .collect();
    assert_eq!(settle.len(), message.tx_items, "{settle:#?}");
    assert!(
        settle
            .iter()
            .any(|k| k.starts_with(&format!("USER#{}/BUDGET#", w.user_id))),
        "{settle:#?}"
    );
    // Reads are charged per 4 KB of what they read, at least one unit.
    for c in &reads {
        let blocks = c.bytes.div_ceil(units::READ_UNIT_BYTES).max(1) as f64;
        assert_eq!(c.read_units, blocks, "{c:?}");
    }
    // The totals are the items' sums.
    let totals = Totals::of(&charges);
    assert_eq!(
        totals.write_units,
        writes.iter().map(|c| c.write_units).sum::<u64>()
    );
    assert_eq!(
        totals.read_units,
        reads.iter().map(|c| c.read_units).sum::<f64>()
    );
    assert_eq!(totals.writes + totals.reads, charges.len());
    let by_transaction: u64 = units::transactions(&charges)
        .iter()
        .map(|(_, _, wcu)| wcu)
        .sum();
    assert_eq!(
        by_transaction,
        writes
            .iter()
            .filter(|c| c.transactional())
            .map(|c| c.write_units)
            .sum::<u64>()
    );
}
