//! Ports that count and time every call passing through them (store, queue,
//! key cipher) around a real adapter, and the tallies they keep: the tests
//! assert on store round trips with them, the benchmarks report them.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use lambent_ports::cipher::{CipherResult, EncryptionContext};
use lambent_ports::queue::{QueueResult, Received};
use lambent_ports::store::StoreResult;
use lambent_ports::{
    Condition, Item, ItemStore, Key, KeyCipher, Page, Query, Queue, QueueName, TxOp, Update,
};

/// Which port a call goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Port {
    Store,
    Queue,
    Cipher,
}

/// One kind of port call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Call {
    Get,
    Put,
    Update,
    Delete,
    Query,
    Transact,
    StorePing,
    Send,
    Receive,
    Ack,
    ChangeVisibility,
    QueuePing,
    Encrypt,
    Decrypt,
    CipherPing,
}

/// How many kinds of call there are.
pub const CALLS: usize = 15;

impl Call {
    pub const ALL: [Call; CALLS] = [
        Call::Get,
        Call::Put,
        Call::Update,
        Call::Delete,
        Call::Query,
        Call::Transact,
        Call::StorePing,
        Call::Send,
        Call::Receive,
        Call::Ack,
        Call::ChangeVisibility,
        Call::QueuePing,
        Call::Encrypt,
        Call::Decrypt,
        Call::CipherPing,
    ];

    /// The store calls a step may make, in report order.
    pub const STORE: [Call; 6] = [
        Call::Get,
        Call::Put,
        Call::Update,
        Call::Delete,
        Call::Query,
        Call::Transact,
    ];

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn port(self) -> Port {
        match self {
            Call::Get
            | Call::Put
            | Call::Update
            | Call::Delete
            | Call::Query
            | Call::Transact
            | Call::StorePing => Port::Store,
            Call::Send | Call::Receive | Call::Ack | Call::ChangeVisibility | Call::QueuePing => {
                Port::Queue
            }
            Call::Encrypt | Call::Decrypt | Call::CipherPing => Port::Cipher,
        }
    }

    /// The port method's name.
    pub fn name(self) -> &'static str {
        match self {
            Call::Get => "get",
            Call::Put => "put",
            Call::Update => "update",
            Call::Delete => "delete",
            Call::Query => "query",
            Call::Transact => "transact",
            Call::StorePing | Call::QueuePing | Call::CipherPing => "ping",
            Call::Send => "send",
            Call::Receive => "receive",
            Call::Ack => "delete",
            Call::ChangeVisibility => "change_visibility",
            Call::Encrypt => "encrypt",
            Call::Decrypt => "decrypt",
        }
    }

    /// `store.get`, `queue.send`, `cipher.decrypt`.
    pub fn label(self) -> String {
        let port = match self.port() {
            Port::Store => "store",
            Port::Queue => "queue",
            Port::Cipher => "cipher",
        };
        format!("{port}.{}", self.name())
    }
}

/// Counts and times of port calls, cumulative since a [`Meter`] was made;
/// the difference of two snapshots is what happened between them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    pub calls: [u64; CALLS],
    /// Time spent in each kind of call, summed.
    pub time: [Duration; CALLS],
    /// Operations of the transactions, summed.
    pub tx_items: u64,
    /// Wall time with at least one call of any port in flight (the union of
    /// their intervals, so overlapping calls count once).
    pub busy: Duration,
    /// Wall time with at least one store call in flight.
    pub store_busy: Duration,
}

impl Tally {
    pub fn count(&self, call: Call) -> u64 {
        self.calls[call.index()]
    }

    pub fn time_of(&self, call: Call) -> Duration {
        self.time[call.index()]
    }

    /// Calls of `port`, pings excluded.
    pub fn port_calls(&self, port: Port) -> u64 {
        Call::ALL
            .iter()
            .filter(|c| c.port() == port && !matches!(c, Call::StorePing | Call::QueuePing))
            .map(|c| self.count(*c))
            .sum()
    }

    /// Store round trips: every store call but pings.
    pub fn round_trips(&self) -> u64 {
        self.port_calls(Port::Store)
    }

    /// What happened since `earlier` (a snapshot of the same meter).
    pub fn since(&self, earlier: &Tally) -> Tally {
        let mut out = Tally::default();
        for i in 0..CALLS {
            out.calls[i] = self.calls[i].saturating_sub(earlier.calls[i]);
            out.time[i] = self.time[i].saturating_sub(earlier.time[i]);
        }
        out.tx_items = self.tx_items.saturating_sub(earlier.tx_items);
        out.busy = self.busy.saturating_sub(earlier.busy);
        out.store_busy = self.store_busy.saturating_sub(earlier.store_busy);
        out
    }

    /// The sum of two tallies.
    pub fn plus(&self, other: &Tally) -> Tally {
        let mut out = self.clone();
        for i in 0..CALLS {
            out.calls[i] += other.calls[i];
            out.time[i] += other.time[i];
        }
        out.tx_items += other.tx_items;
        out.busy += other.busy;
        out.store_busy += other.store_busy;
        out
    }
}

/// One call as a trace shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Traced {
    pub call: Call,
    /// What it touched, IDs shortened ([`describe_key`]).
    pub what: String,
    pub took: Duration,
}

#[derive(Default)]
struct Inner {
    tally: Tally,
    in_flight: u32,
    busy_since: Option<Instant>,
    store_in_flight: u32,
    store_busy_since: Option<Instant>,
    trace: Option<Vec<Traced>>,
}

/// Where the counting ports record their calls. Shared by the wrappers of
/// one world.
#[derive(Default)]
pub struct Meter {
    inner: Mutex<Inner>,
}

impl Meter {
    pub fn new() -> Arc<Meter> {
        Arc::new(Meter::default())
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock poisons nothing worth keeping.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The counts so far.
    pub fn snapshot(&self) -> Tally {
        let inner = self.lock();
        let mut tally = inner.tally.clone();
        let now = Instant::now();
        if let Some(since) = inner.busy_since {
            tally.busy += now - since;
        }
        if let Some(since) = inner.store_busy_since {
            tally.store_busy += now - since;
        }
        tally
    }

    /// Starts recording each call (replacing an unfinished trace).
    pub fn start_trace(&self) {
        self.lock().trace = Some(Vec::new());
    }

    /// Stops recording; the calls since [`Meter::start_trace`].
    pub fn take_trace(&self) -> Vec<Traced> {
        self.lock().trace.take().unwrap_or_default()
    }

    /// Times one call until the returned guard drops. `what` is only
    /// evaluated while tracing.
    pub fn begin(&self, call: Call, items: usize, what: impl FnOnce() -> String) -> Timing<'_> {
        let now = Instant::now();
        let what = {
            let mut inner = self.lock();
            inner.in_flight += 1;
            if inner.in_flight == 1 {
                inner.busy_since = Some(now);
            }
            if call.port() == Port::Store {
                inner.store_in_flight += 1;
                if inner.store_in_flight == 1 {
                    inner.store_busy_since = Some(now);
                }
            }
            inner.trace.is_some().then_some(())
        }
        .map(|()| what());
        Timing {
            meter: self,
            call,
            items,
            what,
            started: now,
        }
    }

    fn end(&self, timing: &mut Timing<'_>) {
        let now = Instant::now();
        let took = now - timing.started;
        let mut inner = self.lock();
        let i = timing.call.index();
        inner.tally.calls[i] += 1;
        inner.tally.time[i] += took;
        inner.tally.tx_items += timing.items as u64;
        inner.in_flight = inner.in_flight.saturating_sub(1);
        if inner.in_flight == 0 {
            if let Some(since) = inner.busy_since.take() {
                inner.tally.busy += now - since;
            }
        }
        if timing.call.port() == Port::Store {
            inner.store_in_flight = inner.store_in_flight.saturating_sub(1);
            if inner.store_in_flight == 0 {
                if let Some(since) = inner.store_busy_since.take() {
                    inner.tally.store_busy += now - since;
                }
            }
        }
        if let (Some(trace), Some(what)) = (inner.trace.as_mut(), timing.what.take()) {
            trace.push(Traced {
                call: timing.call,
                what,
                took,
            });
        }
    }
}

/// One call in flight; recorded when dropped (also when its future is
/// dropped midway, e.g. by a timeout).
pub struct Timing<'a> {
    meter: &'a Meter,
    call: Call,
    items: usize,
    what: Option<String>,
    started: Instant,
}

impl Drop for Timing<'_> {
    fn drop(&mut self) {
        let meter = self.meter;
        meter.end(self);
    }
}

/// A key with its IDs shortened, for traces: `RUN#run_01JX…/STEP#s3`
/// becomes `RUN#run_…/STEP#s3`. A `#`-separated segment is an ID when it
/// is a lower-case prefix, `_`, and letters or digits.
pub fn describe_key(key: &Key) -> String {
    format!("{}/{}", shorten_ids(&key.pk), shorten_ids(&key.sk))
}

fn shorten_ids(part: &str) -> String {
    part.split('#')
        .map(|segment| match segment.split_once('_') {
            Some((prefix, rest))
                if !prefix.is_empty()
                    && prefix.bytes().all(|b| b.is_ascii_lowercase())
                    && !rest.is_empty()
                    && rest.bytes().all(|b| b.is_ascii_alphanumeric()) =>
            {
                format!("{prefix}_…")
            }
            _ => segment.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("#")
}

/// One transaction operation for a trace: `update RUN#run_…/RUN`, with
/// `(if …)` when it is conditional.
pub fn describe_op(op: &TxOp) -> String {
    let (verb, conditional) = match op {
        TxOp::Put { condition, .. } => ("put", condition.is_some()),
        TxOp::Update { condition, .. } => ("update", condition.is_some()),
        TxOp::Delete { condition, .. } => ("delete", condition.is_some()),
        TxOp::Check { .. } => ("check", true),
    };
    format!(
        "{verb} {}{}",
        describe_key(op.key()),
        if conditional { " (if)" } else { "" }
    )
}

fn conditional(condition: &Option<Condition>) -> &'static str {
    if condition.is_some() {
        " (if)"
    } else {
        ""
    }
}

/// An item store that forwards to another and records every call.
pub struct CountingStore {
    inner: Arc<dyn ItemStore>,
    meter: Arc<Meter>,
}

impl CountingStore {
    pub fn new(inner: Arc<dyn ItemStore>, meter: Arc<Meter>) -> CountingStore {
        CountingStore { inner, meter }
    }
}

#[async_trait]
impl ItemStore for CountingStore {
    async fn get(&self, key: &Key) -> StoreResult<Option<Item>> {
        let _t = self.meter.begin(Call::Get, 0, || describe_key(key));
        self.inner.get(key).await
    }

    async fn put(&self, item: Item, condition: Option<Condition>) -> StoreResult<()> {
        let _t = self.meter.begin(Call::Put, 0, || {
            format!("{}{}", describe_key(&item.key), conditional(&condition))
        });
        self.inner.put(item, condition).await
    }

    async fn update(
        &self,
        key: &Key,
        update: Update,
        condition: Option<Condition>,
    ) -> StoreResult<Item> {
        let _t = self.meter.begin(Call::Update, 0, || {
            format!("{}{}", describe_key(key), conditional(&condition))
        });
        self.inner.update(key, update, condition).await
    }

    async fn delete(&self, key: &Key, condition: Option<Condition>) -> StoreResult<Option<Item>> {
        let _t = self.meter.begin(Call::Delete, 0, || {
            format!("{}{}", describe_key(key), conditional(&condition))
        });
        self.inner.delete(key, condition).await
    }

    async fn query(&self, query: Query) -> StoreResult<Page> {
        let _t = self.meter.begin(Call::Query, 0, || {
            format!(
                "{} prefix {:?}, limit {}",
                shorten_ids(&query.pk),
                shorten_ids(&query.sk_prefix),
                query.limit
            )
        });
        self.inner.query(query).await
    }

    async fn transact(&self, ops: Vec<TxOp>) -> StoreResult<()> {
        let _t = self.meter.begin(Call::Transact, ops.len(), || {
            let listed: Vec<String> = ops.iter().map(describe_op).collect();
            format!("{} items: {}", ops.len(), listed.join("; "))
        });
        self.inner.transact(ops).await
    }

    async fn ping(&self) -> StoreResult<()> {
        let _t = self.meter.begin(Call::StorePing, 0, String::new);
        self.inner.ping().await
    }
}

/// `lambent serve`'s store wrapped in a [`CountingStore`] that records into
/// `meter` (a benchmark counts what the whole server writes).
pub fn layer(meter: Arc<Meter>) -> lambent_local::serve::StoreLayer {
    lambent_local::serve::StoreLayer::new(move |inner| {
        Arc::new(CountingStore::new(inner, meter.clone())) as Arc<dyn ItemStore>
    })
}

/// A queue that forwards to another and records every call.
pub struct CountingQueue {
    inner: Arc<dyn Queue>,
    meter: Arc<Meter>,
}

impl CountingQueue {
    pub fn new(inner: Arc<dyn Queue>, meter: Arc<Meter>) -> CountingQueue {
        CountingQueue { inner, meter }
    }
}

#[async_trait]
impl Queue for CountingQueue {
    async fn send(&self, queue: QueueName, body: &str, delay: Duration) -> QueueResult<String> {
        let _t = self.meter.begin(Call::Send, 0, || {
            format!("{queue:?}: {}", shorten_json_ids(body))
        });
        self.inner.send(queue, body, delay).await
    }

    async fn receive(
        &self,
        queue: QueueName,
        max: usize,
        visibility: Duration,
        wait: Duration,
    ) -> QueueResult<Vec<Received>> {
        let _t = self
            .meter
            .begin(Call::Receive, 0, || format!("{queue:?}, up to {max}"));
        self.inner.receive(queue, max, visibility, wait).await
    }

    async fn delete(&self, queue: QueueName, receipt: &str) -> QueueResult<()> {
        let _t = self.meter.begin(Call::Ack, 0, || format!("{queue:?}"));
        self.inner.delete(queue, receipt).await
    }

    async fn change_visibility(
        &self,
        queue: QueueName,
        receipt: &str,
        visibility: Duration,
    ) -> QueueResult<()> {
        let _t = self.meter.begin(Call::ChangeVisibility, 0, || {
            format!("{queue:?}, {visibility:?}")
        });
        self.inner
            .change_visibility(queue, receipt, visibility)
            .await
    }

    async fn ping(&self) -> QueueResult<()> {
        let _t = self.meter.begin(Call::QueuePing, 0, String::new);
        self.inner.ping().await
    }
}

/// A step message's body with its IDs shortened (string values only).
fn shorten_json_ids(body: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(fields)) => {
            let fields: serde_json::Map<String, serde_json::Value> = fields
                .into_iter()
                .map(|(name, value)| match value {
                    serde_json::Value::String(s) => (name, shorten_ids(&s).into()),
                    other => (name, other),
                })
                .collect();
            serde_json::Value::Object(fields).to_string()
        }
        _ => format!("{} bytes", body.len()),
    }
}

/// A key cipher that forwards to another and records every call.
pub struct CountingCipher {
    inner: Arc<dyn KeyCipher>,
    meter: Arc<Meter>,
}

impl CountingCipher {
    pub fn new(inner: Arc<dyn KeyCipher>, meter: Arc<Meter>) -> CountingCipher {
        CountingCipher { inner, meter }
    }
}

#[async_trait]
impl KeyCipher for CountingCipher {
    async fn encrypt(
        &self,
        plaintext: &[u8],
        context: &EncryptionContext,
    ) -> CipherResult<Vec<u8>> {
        let _t = self
            .meter
            .begin(Call::Encrypt, 0, || describe_context(context));
        self.inner.encrypt(plaintext, context).await
    }

    async fn decrypt(
        &self,
        ciphertext: &[u8],
        context: &EncryptionContext,
    ) -> CipherResult<Vec<u8>> {
        let _t = self
            .meter
            .begin(Call::Decrypt, 0, || describe_context(context));
        self.inner.decrypt(ciphertext, context).await
    }

    async fn ping(&self) -> CipherResult<()> {
        let _t = self.meter.begin(Call::CipherPing, 0, String::new);
        self.inner.ping().await
    }
}

fn describe_context(context: &EncryptionContext) -> String {
    let names: Vec<&str> = context.keys().map(String::as_str).collect();
    format!("a provider key (context: {})", names.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_shortened_and_names_kept() {
        let key = Key::new("RUN#run_01JX9ABC", "STEP#s3");
        assert_eq!(describe_key(&key), "RUN#run_…/STEP#s3");
        let key = Key::new("USER#usr_abc123", "BUDGET#2026-11");
        assert_eq!(describe_key(&key), "USER#usr_…/BUDGET#2026-11");
        // Not IDs: no lower-case prefix, or other characters after `_`.
        let key = Key::new("USAGE#X_1", "DAY#a_b-c");
        assert_eq!(describe_key(&key), "USAGE#X_1/DAY#a_b-c");
        assert_eq!(
            shorten_json_ids(r#"{"run_id":"run_01JX","step_id":"s2"}"#),
            r#"{"run_id":"run_…","step_id":"s2"}"#
        );
    }

    #[test]
    fn tallies_subtract_and_add() {
        let mut a = Tally::default();
        a.calls[Call::Get.index()] = 5;
        a.time[Call::Get.index()] = Duration::from_micros(50);
        a.tx_items = 7;
        let mut b = a.clone();
        b.calls[Call::Get.index()] = 8;
        b.calls[Call::Transact.index()] = 1;
        b.calls[Call::Send.index()] = 2;
        b.calls[Call::StorePing.index()] = 1;
        let d = b.since(&a);
        assert_eq!(d.count(Call::Get), 3);
        assert_eq!(d.round_trips(), 4, "pings are not round trips of a step");
        assert_eq!(d.port_calls(Port::Queue), 2);
        assert_eq!(a.plus(&d), b);
    }

    #[tokio::test]
    async fn overlapping_calls_are_busy_once() {
        let meter = Meter::new();
        let before = meter.snapshot();
        {
            let _a = meter.begin(Call::Get, 0, String::new);
            std::thread::sleep(Duration::from_millis(20));
            let _b = meter.begin(Call::Send, 0, String::new);
            std::thread::sleep(Duration::from_millis(20));
        }
        let d = meter.snapshot().since(&before);
        assert_eq!(d.count(Call::Get), 1);
        assert_eq!(d.count(Call::Send), 1);
        let summed = d.time_of(Call::Get) + d.time_of(Call::Send);
        assert!(d.busy >= Duration::from_millis(40));
        assert!(d.busy < summed, "{d:?}");
        assert!(d.store_busy >= Duration::from_millis(40));
    }

    #[test]
    fn traces_record_only_while_on() {
        let meter = Meter::new();
        drop(meter.begin(Call::Get, 0, || "not traced".into()));
        meter.start_trace();
        drop(meter.begin(Call::Transact, 3, || "traced".into()));
        let trace = meter.take_trace();
        assert_eq!(trace.len(), 1);
        assert_eq!(trace[0].call, Call::Transact);
        assert_eq!(trace[0].what, "traced");
        assert_eq!(meter.snapshot().tx_items, 3);
        assert!(meter.take_trace().is_empty());
    }
}
