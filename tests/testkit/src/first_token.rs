//! What a warm turn waits for from the store before its provider request,
//! counted through the port, on whichever backend the app runs: every write
//! is slowed (so a write the turn does not wait for ends after the provider
//! has its request), and the calls that ended before the fake provider saw
//! the request are the ones the turn waited for.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use lambent_ports::store::StoreResult;
use lambent_ports::{Condition, Item, ItemStore, Key, Page, Query, TxOp, Update};
use reqwest::Method;
use serde_json::json;

use crate::chat::ChatWorld;
use crate::counting::{Call, CountingStore, Meter, Traced};

/// How long every write takes here, but a stream slot's.
pub const SLOW_WRITE: Duration = Duration::from_millis(300);

/// A store whose writes take `delay` longer, but a stream slot's, so a
/// write a request does not wait for ends after the provider has the
/// request. A stream takes its slot before its provider call (beside its
/// history page): slowed too, it would let the writes made beside the call
/// end first. (`unitsbench` paces its writes with it too.)
pub struct SlowWrites {
    pub inner: Arc<dyn ItemStore>,
    pub delay: Duration,
}

impl SlowWrites {
    async fn slowly(&self, key: &Key) {
        if !self.delay.is_zero() && !key.pk.starts_with("STREAMS#") {
            tokio::time::sleep(self.delay).await;
        }
    }
}

#[async_trait]
impl ItemStore for SlowWrites {
    async fn get(&self, key: &Key) -> StoreResult<Option<Item>> {
        self.inner.get(key).await
    }

    async fn put(&self, item: Item, condition: Option<Condition>) -> StoreResult<()> {
        self.slowly(&item.key).await;
        self.inner.put(item, condition).await
    }

    async fn update(
        &self,
        key: &Key,
        update: Update,
        condition: Option<Condition>,
    ) -> StoreResult<Item> {
        self.slowly(key).await;
        self.inner.update(key, update, condition).await
    }

    async fn delete(&self, key: &Key, condition: Option<Condition>) -> StoreResult<Option<Item>> {
        self.slowly(key).await;
        self.inner.delete(key, condition).await
    }

    async fn query(&self, query: Query) -> StoreResult<Page> {
        self.inner.query(query).await
    }

    async fn transact(&self, ops: Vec<TxOp>) -> StoreResult<()> {
        if let Some(op) = ops.first() {
            self.slowly(op.key()).await;
        }
        self.inner.transact(ops).await
    }

    async fn ping(&self) -> StoreResult<()> {
        self.inner.ping().await
    }
}

/// `store` with writes [`SLOW_WRITE`] slow, counted by `meter`.
pub fn slow_and_counted(store: Arc<dyn ItemStore>, meter: &Arc<Meter>) -> Arc<dyn ItemStore> {
    let slow: Arc<dyn ItemStore> = Arc::new(SlowWrites {
        inner: store,
        delay: SLOW_WRITE,
    });
    Arc::new(CountingStore::new(slow, meter.clone()))
}

/// The store calls that ended before the provider saw the turn's request.
async fn before_the_provider(
    w: &ChatWorld,
    meter: &Arc<Meter>,
    session: &str,
    body: serde_json::Value,
) -> Vec<Traced> {
    let seen: Arc<Mutex<Option<Vec<Traced>>>> = Arc::default();
    {
        let (seen, meter) = (seen.clone(), meter.clone());
        w.fake.set_responder(move |_| {
            seen.lock()
                .unwrap()
                .get_or_insert_with(|| meter.take_trace());
            None
        });
    }
    meter.start_trace();
    let (status, reply) = w
        .call(
            Method::POST,
            &format!("/v1/sessions/{session}/messages"),
            Some(body),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    w.fake.clear_responder();
    let trace = seen.lock().unwrap().take();
    trace.expect("the provider was called")
}

/// Asserts that a warm turn, whole and then streamed, waits for one store
/// round trip before its provider request: its history page (and for a
/// stream, its stream slot, taken at the same time). `w` serves an app
/// whose store is [`slow_and_counted`] by `meter`, with caches that stay
/// warm through the slow writes.
pub async fn assert_one_round_trip_before_the_provider(w: &ChatWorld, meter: &Arc<Meter>) {
    w.fake
        .set_default(lambent_fake_provider::Reply::text("noted"));
    let session = w.session(json!({})).await;
    // The first turn warms the caches (the key, the agent and its
    // provider, the session, the user's limit and rate bucket).
    let (status, _) = w.chat_whole(&session, "hello").await;
    assert_eq!(status, 200);

    for stream in [false, true] {
        let body = json!({"content": "and again", "stream": stream});
        let before = before_the_provider(w, meter, &session, body).await;
        let described: Vec<String> = before
            .iter()
            .map(|t| format!("{:?} {}", t.call, t.what))
            .collect();
        let history = before
            .iter()
            .filter(|t| t.call == Call::Query && t.what.contains("MSG#"))
            .count();
        let slot = before
            .iter()
            .filter(|t| t.call == Call::Put && t.what.starts_with("STREAMS#"))
            .count();
        assert_eq!(history, 1, "stream {stream}: {described:#?}");
        assert_eq!(slot, usize::from(stream), "stream {stream}: {described:#?}");
        assert_eq!(
            before.len(),
            history + slot,
            "stream {stream}: the turn waited for more than its history page: {described:#?}"
        );
    }
}
