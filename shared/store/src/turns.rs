//! Agent turns: what one `POST /v1/sessions/{id}/messages` sets going, from
//! the caller's input to the last model call of the agent loop, and the
//! events it emits, kept so a client can replay them hours later.
//!
//! - The turn, `SESSION#<session>/TURN#<turn id>`: its status (`running`,
//!   `waiting` for tool results or approvals, then `complete`,
//!   `incomplete`, `cancelled` or `failed`), who runs it (a lease), whether
//!   a cancel was asked for, and what it waits for. Its ID is the ID of its
//!   first reply message (the `message_id` of its first `message_start`).
//!   It is written with the turn's input, in the same transaction.
//! - While it is unfinished, an entry in the index of unfinished turns,
//!   `TURNS#<shard>/TURN#<turn id>`, so the sweeper finds a turn whose
//!   runner died without a scan, and hands it to the worker.
//! - Its events, `SESSION#<session>/EVT#<turn id>#<first event id>`: a
//!   batch of events per item, numbered from 0 in the order they happened,
//!   appended as the turn goes (a few per second, never one per token).
//!
//! The messages the turn stores (replies, tool results) are its journal: a
//! turn resumed elsewhere reads them to know which model calls and tool
//! calls are done (`lambent_app::turns`). Everything here lives in the
//! session's partition and expires with the session.

use lambent_core::error::{Error, Result};
use lambent_ports::{
    Cmp, Condition, Item, ItemStore, Key, Order, Query, StoreCursor, TxOp, Update,
};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::sessions;
use super::{opt_json_attr, opt_text, text, whole};

fn turn_key(session_id: &str, turn_id: &str) -> Key {
    Key::new(
        sessions::messages_partition(session_id),
        format!("TURN#{turn_id}"),
    )
}

/// Partitions of the index of unfinished turns.
pub const ACTIVE_SHARDS: u32 = 8;

fn active_partition(shard: u32) -> String {
    format!("TURNS#{shard}")
}

fn active_key(turn_id: &str) -> Key {
    let shard = crate::shard_of(turn_id, ACTIVE_SHARDS);
    Key::new(active_partition(shard), format!("TURN#{turn_id}"))
}

/// Where a turn stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TurnStatus {
    /// A model call or a tool call is under way (or about to be).
    Running,
    /// Stopped for the caller: tool results or approvals.
    Waiting,
    /// The model finished (or the turn reached `max_tool_rounds`).
    Complete,
    /// Cut short: the stream deadline, the provider, or a spending limit.
    Incomplete,
    /// Stopped by `POST …/cancel`.
    Cancelled,
    /// It could not go on (a provider failure, a deleted agent, its
    /// runner lost more often than it may be retried).
    Failed,
}

impl TurnStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TurnStatus::Running => "running",
            TurnStatus::Waiting => "waiting",
            TurnStatus::Complete => "complete",
            TurnStatus::Incomplete => "incomplete",
            TurnStatus::Cancelled => "cancelled",
            TurnStatus::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Option<TurnStatus> {
        Some(match s {
            "running" => TurnStatus::Running,
            "waiting" => TurnStatus::Waiting,
            "complete" => TurnStatus::Complete,
            "incomplete" => TurnStatus::Incomplete,
            "cancelled" => TurnStatus::Cancelled,
            "failed" => TurnStatus::Failed,
            _ => return None,
        })
    }

    /// Whether nothing more happens in the turn.
    pub fn is_final(self) -> bool {
        !matches!(self, TurnStatus::Running)
    }
}

/// What a waiting turn needs for one of its tool calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Needs {
    /// A client tool: the caller sends its result.
    Result,
    /// A server tool that waits for a person's approval.
    Approval,
}

/// A tool call a waiting turn cannot go on without.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Pending {
    pub tool_call_id: String,
    pub name: String,
    #[schema(value_type = Object)]
    pub input: Value,
    pub needs: Needs,
    /// The reply that made the call.
    pub message_id: String,
}

/// A turn as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Turn {
    pub id: String,
    pub session_id: String,
    pub owner: String,
    pub status: TurnStatus,
    /// Whether it runs in the worker (`"background": true`).
    pub background: bool,
    /// Its stop reason once final (`end_turn`, `tool_use`,
    /// `approval_required`, `max_tool_rounds`, `budget_exceeded`,
    /// `cancelled`…).
    pub stop_reason: Option<String>,
    /// Model calls made, once final.
    pub model_calls: u64,
    pub cost_usd: Decimal,
    /// The tool calls a waiting turn waits for.
    pub waiting: Vec<Pending>,
    pub cancel_requested: bool,
    /// Whether a client has followed its events (`GET …/events`) while it
    /// ran: its runner then stores them at the shorter interval.
    pub followed: bool,
    /// Until when its runner holds it (epoch ms; 0: nobody).
    pub lease_until_ms: i64,
    /// Times a runner took it.
    pub attempts: u32,
    /// The first message the turn stored (its input).
    pub first_message_id: String,
    /// Approvals the turn was started with (`[{tool_call_id, approved, reason?}]`).
    pub approvals: Vec<Approval>,
    /// The reply whose tool calls it answers, if it goes on from a waiting turn.
    pub answers: Option<String>,
    pub created_at: String,
    pub expires_at: i64,
}

/// A person's decision on a server tool call that waits for approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    pub tool_call_id: String,
    pub approved: bool,
    /// Why, for a denial: the model is told.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

fn from_item(session_id: &str, item: &Item) -> Result<Turn> {
    let status = text(item, "status")?;
    Ok(Turn {
        id: super::id_after(item, "TURN#")?.to_owned(),
        session_id: session_id.to_owned(),
        owner: text(item, "owner")?,
        status: TurnStatus::parse(&status)
            .ok_or_else(|| Error::Internal(format!("turn status {status:?}")))?,
        background: item.get("background").is_some(),
        stop_reason: opt_text(item, "stop_reason"),
        model_calls: whole(item, "model_calls").unwrap_or(0).max(0) as u64,
        cost_usd: super::opt_decimal(item, "cost_usd").unwrap_or_default(),
        waiting: opt_json_attr(item, "waiting")?.unwrap_or_default(),
        cancel_requested: item.get("cancel").is_some(),
        followed: item.get("followed").is_some(),
        lease_until_ms: whole(item, "lease_until").unwrap_or(0),
        attempts: whole(item, "attempts").unwrap_or(0).max(0) as u32,
        first_message_id: text(item, "first_message")?,
        approvals: opt_json_attr(item, "approvals")?.unwrap_or_default(),
        answers: opt_text(item, "answers"),
        created_at: text(item, "created_at")?,
        expires_at: whole(item, "expires").unwrap_or(0),
    })
}

/// A turn about to start. A turn run where it is asked holds a lease from
/// the start; a background turn is free for the first worker that claims
/// it.
pub struct NewTurn<'a> {
    pub owner: &'a str,
    pub session_id: &'a str,
    pub turn_id: &'a str,
    /// The first message of its input.
    pub first_message_id: &'a str,
    /// Run by the worker (`"background": true`).
    pub background: bool,
    /// Its runner's lease (a background turn: now; the first worker claims
    /// it whatever its lease, and the sweeper hands it over a lease later if
    /// nobody has).
    pub lease_until_ms: i64,
    /// Decisions on the calls its predecessor waited for.
    pub approvals: &'a [Approval],
    /// The reply whose tool calls it answers (a turn that goes on from a
    /// waiting one).
    pub answers: Option<&'a str>,
    pub expires_at: i64,
}

/// A new turn's writes: the turn, `running`, and its entry in the index
/// of unfinished turns. They go into the transaction of the turn's input.
pub fn start_ops(new: &NewTurn<'_>) -> Result<Vec<TxOp>> {
    let mut turn = Item::new(turn_key(new.session_id, new.turn_id))
        .with("owner", new.owner)
        .with("first_message", new.first_message_id)
        .with("status", TurnStatus::Running.as_str())
        .with("lease_until", new.lease_until_ms)
        .with("attempts", i64::from(!new.background))
        .with("created_at", lambent_core::time::now_rfc3339())
        .with("expires", new.expires_at)
        .expiring_at(new.expires_at);
    if new.background {
        turn = turn.with("background", true);
    }
    if !new.approvals.is_empty() {
        turn = turn.with("approvals", super::json_text(&new.approvals)?);
    }
    if let Some(answers) = new.answers {
        turn = turn.with("answers", answers);
    }
    let active = Item::new(active_key(new.turn_id))
        .with("session_id", new.session_id)
        .with("owner", new.owner)
        .expiring_at(new.expires_at);
    Ok(vec![
        TxOp::Put {
            item: turn,
            condition: Some(Condition::NotExists),
        },
        TxOp::Put {
            item: active,
            condition: None,
        },
    ])
}

pub async fn get(store: &dyn ItemStore, session_id: &str, turn_id: &str) -> Result<Option<Turn>> {
    match store.get(&turn_key(session_id, turn_id)).await? {
        Some(item) => Ok(Some(from_item(session_id, &item)?)),
        None => Ok(None),
    }
}

/// The session's newest turn.
pub async fn latest(store: &dyn ItemStore, session_id: &str) -> Result<Option<Turn>> {
    let page = store
        .query(
            Query::partition(sessions::messages_partition(session_id))
                .prefix("TURN#")
                .order(Order::Descending)
                .limit(1),
        )
        .await?;
    page.items
        .first()
        .map(|item| from_item(session_id, item))
        .transpose()
}

/// Takes a running turn whose runner's lease ran out, or a background turn
/// nobody took yet (0 attempts, whatever its lease says: it is started with
/// a lease of "now" only so that the sweeper hands it over a lease later if
/// its queue message is lost, and a worker claiming it in that millisecond,
/// or on a clock behind the starter's, must not take it for held). One
/// conditional write. `None` when it is final, held by a live runner, or
/// out of attempts.
pub async fn claim(
    store: &dyn ItemStore,
    session_id: &str,
    turn_id: &str,
    lease_until_ms: i64,
    max_attempts: u32,
    now_ms: i64,
) -> Result<Option<Turn>> {
    let condition = Condition::And(vec![
        Condition::eq("status", TurnStatus::Running.as_str()),
        Condition::Or(vec![
            Condition::cmp("lease_until", Cmp::Lt, now_ms),
            Condition::eq("attempts", 0i64),
        ]),
        Condition::cmp("attempts", Cmp::Lt, i64::from(max_attempts)),
    ]);
    let update = Update::new()
        .set("lease_until", lease_until_ms)
        .add("attempts", Decimal::ONE);
    match store
        .update(&turn_key(session_id, turn_id), update, Some(condition))
        .await
    {
        Ok(item) => Ok(Some(from_item(session_id, &item)?)),
        Err(e) if e.is_condition_failure() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Renews a running turn's lease. Returns the turn as stored (a cancel
/// asked for shows there), or `None` when it is no longer running.
pub async fn renew(
    store: &dyn ItemStore,
    session_id: &str,
    turn_id: &str,
    lease_until_ms: i64,
) -> Result<Option<Turn>> {
    match store
        .update(
            &turn_key(session_id, turn_id),
            Update::new().set("lease_until", lease_until_ms),
            Some(Condition::eq("status", TurnStatus::Running.as_str())),
        )
        .await
    {
        Ok(item) => Ok(Some(from_item(session_id, &item)?)),
        Err(e) if e.is_condition_failure() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Marks a running turn as followed, for a runner in another process (it
/// reads the turn every second). A turn no longer running needs nothing.
pub async fn mark_followed(store: &dyn ItemStore, session_id: &str, turn_id: &str) -> Result<()> {
    match store
        .update(
            &turn_key(session_id, turn_id),
            Update::new().set("followed", true),
            Some(Condition::eq("status", TurnStatus::Running.as_str())),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.is_condition_failure() => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Gives a running turn back without ending it (its runner reached the
/// end of its invocation): free for the next claim at once, and the claim
/// it was taken with not counted as an attempt. `false` when it is no
/// longer running.
pub async fn release(store: &dyn ItemStore, session_id: &str, turn_id: &str) -> Result<bool> {
    match store
        .update(
            &turn_key(session_id, turn_id),
            Update::new()
                .set("lease_until", 0i64)
                .add("attempts", -Decimal::ONE),
            Some(Condition::eq("status", TurnStatus::Running.as_str())),
        )
        .await
    {
        Ok(_) => Ok(true),
        Err(e) if e.is_condition_failure() => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Ends the lease of a running turn whose runner is known to be gone (the
/// process that ran it was restarted), so the next claim takes it at
/// once; the lost attempt still counts.
pub async fn expire_lease(store: &dyn ItemStore, session_id: &str, turn_id: &str) -> Result<()> {
    match store
        .update(
            &turn_key(session_id, turn_id),
            Update::new().set("lease_until", 0i64),
            Some(Condition::eq("status", TurnStatus::Running.as_str())),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.is_condition_failure() => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Asks a running or waiting turn to stop; idempotent. Returns the turn as
/// it is afterwards (`None`: there is no such turn).
pub async fn request_cancel(
    store: &dyn ItemStore,
    session_id: &str,
    turn_id: &str,
) -> Result<Option<Turn>> {
    let condition = Condition::Or(vec![
        Condition::eq("status", TurnStatus::Running.as_str()),
        Condition::eq("status", TurnStatus::Waiting.as_str()),
    ]);
    match store
        .update(
            &turn_key(session_id, turn_id),
            Update::new().set("cancel", true),
            Some(condition),
        )
        .await
    {
        Ok(item) => Ok(Some(from_item(session_id, &item)?)),
        Err(e) if e.is_condition_failure() => get(store, session_id, turn_id).await,
        Err(e) => Err(e.into()),
    }
}

/// How a turn ended (or stopped to wait).
#[derive(Debug, Clone)]
pub struct Ending {
    pub status: TurnStatus,
    pub stop_reason: Option<String>,
    pub model_calls: u64,
    pub cost_usd: Decimal,
    pub waiting: Vec<Pending>,
}

/// Records how a turn ended (or that it waits) and takes it out of the
/// index of unfinished turns, unless it ended already (a cancelled waiting
/// turn, another runner): `false` then.
pub async fn finish(
    store: &dyn ItemStore,
    session_id: &str,
    turn_id: &str,
    ending: &Ending,
) -> Result<bool> {
    let mut update = Update::new()
        .set("status", ending.status.as_str())
        .set("model_calls", ending.model_calls as i64)
        .set("cost_usd", ending.cost_usd)
        .set("lease_until", 0i64)
        .set("updated_at", lambent_core::time::now_rfc3339());
    update = match &ending.stop_reason {
        Some(reason) => update.set("stop_reason", reason.as_str()),
        None => update.remove("stop_reason"),
    };
    update = if ending.waiting.is_empty() {
        update.remove("waiting")
    } else {
        update.set("waiting", super::json_text(&ending.waiting)?)
    };
    let live = Condition::Or(vec![
        Condition::eq("status", TurnStatus::Running.as_str()),
        Condition::eq("status", TurnStatus::Waiting.as_str()),
    ]);
    let ops = vec![
        TxOp::Update {
            key: turn_key(session_id, turn_id),
            update,
            condition: Some(live),
        },
        TxOp::Delete {
            key: active_key(turn_id),
            condition: None,
        },
    ];
    match super::transact_retrying(store, ops).await {
        Ok(()) => Ok(true),
        Err(e) if e.is_condition_failure() => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// A waiting turn answered by the caller (tool results, approvals): it is
/// `complete`, and the answer starts the next turn. Written with the
/// answer, so that only one answer is taken.
pub fn answered_op(session_id: &str, turn_id: &str) -> TxOp {
    TxOp::Update {
        key: turn_key(session_id, turn_id),
        update: Update::new()
            .set("status", TurnStatus::Complete.as_str())
            .set("updated_at", lambent_core::time::now_rfc3339()),
        condition: Some(Condition::And(vec![
            Condition::eq("status", TurnStatus::Waiting.as_str()),
            Condition::AttrNotExists("cancel".into()),
        ])),
    }
}

/// An unfinished turn as the sweeper finds it.
#[derive(Debug, Clone)]
pub struct ActiveTurn {
    pub turn_id: String,
    pub session_id: String,
    pub owner: String,
}

/// A page of the index of unfinished turns, oldest first.
pub async fn active_turns(
    store: &dyn ItemStore,
    shard: u32,
    limit: usize,
    after: Option<StoreCursor>,
) -> Result<(Vec<ActiveTurn>, Option<StoreCursor>)> {
    let page = store
        .query(
            Query::partition(active_partition(shard))
                .prefix("TURN#")
                .limit(limit)
                .after(after),
        )
        .await?;
    let mut turns = Vec::with_capacity(page.items.len());
    for item in &page.items {
        turns.push(ActiveTurn {
            turn_id: super::id_after(item, "TURN#")?.to_owned(),
            session_id: text(item, "session_id")?,
            owner: text(item, "owner")?,
        });
    }
    Ok((turns, page.next))
}

/// Takes a turn that is gone (its session deleted) out of the index.
pub async fn forget_active(store: &dyn ItemStore, turn_id: &str) -> Result<()> {
    store.delete(&active_key(turn_id), None).await?;
    Ok(())
}

/// One event of a turn, as stored and replayed: `data` is its JSON text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredEvent {
    pub id: u64,
    pub event: String,
    pub data: String,
}

fn events_prefix(turn_id: &str) -> String {
    format!("EVT#{turn_id}#")
}

/// Appends a batch of a turn's events (numbered on from the last batch).
/// Create-only: a batch written twice (a retried write) stays one.
pub async fn append_events(
    store: &dyn ItemStore,
    session_id: &str,
    turn_id: &str,
    events: &[StoredEvent],
    expires_at: i64,
) -> Result<()> {
    let Some(first) = events.first() else {
        return Ok(());
    };
    let item = Item::new(Key::new(
        sessions::messages_partition(session_id),
        format!("{}{:010}", events_prefix(turn_id), first.id),
    ))
    .with("events", super::json_text(&events)?)
    .expiring_at(expires_at);
    match store.put(item, Some(Condition::NotExists)).await {
        Ok(()) => Ok(()),
        // Landed on an earlier try whose answer was lost.
        Err(e) if e.is_condition_failure() => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Where a reader of a turn's events has got to: the stored batch it read
/// last, so the next read only fetches newer ones.
#[derive(Debug, Clone, Default)]
pub struct EventsCursor(Option<StoreCursor>);

/// Batches read per page of [`events_page`]: a reader gets the first
/// events after one small read, however long the turn.
const EVENT_PAGE: usize = 25;

/// Where to read from to get event `id` first: just before the batch that
/// holds it (found with one query, newest first from `id`'s own key), so
/// a reconnect reads what it replays, not the whole log.
pub async fn cursor_at(
    store: &dyn ItemStore,
    session_id: &str,
    turn_id: &str,
    id: u64,
) -> Result<EventsCursor> {
    let prefix = events_prefix(turn_id);
    let page = store
        .query(
            Query::partition(sessions::messages_partition(session_id))
                .prefix(prefix.as_str())
                .order(Order::Descending)
                .limit(1)
                .after(Some(StoreCursor(format!("{prefix}{:010}", id + 1)))),
        )
        .await?;
    let first = match page.items.first() {
        Some(item) => item.key.sk[prefix.len()..]
            .parse::<u64>()
            .map_err(|_| Error::Internal(format!("item {} has a bad event id", item.key)))?,
        None => 0,
    };
    Ok(EventsCursor(first.checked_sub(1).map(|before| {
        StoreCursor(format!("{prefix}{before:010}"))
    })))
}

/// One page of the turn's stored events after `cursor`, oldest first, the
/// cursor to read on from, and whether more are stored already.
pub async fn events_page(
    store: &dyn ItemStore,
    session_id: &str,
    turn_id: &str,
    cursor: &EventsCursor,
) -> Result<(Vec<StoredEvent>, EventsCursor, bool)> {
    let page = store
        .query(
            Query::partition(sessions::messages_partition(session_id))
                .prefix(events_prefix(turn_id))
                .limit(EVENT_PAGE)
                .after(cursor.0.clone()),
        )
        .await?;
    let mut events = Vec::new();
    let mut after = cursor.0.clone();
    for item in &page.items {
        let batch: Vec<StoredEvent> = super::json_attr(item, "events")?;
        events.extend(batch);
        after = Some(StoreCursor(item.key.sk.clone()));
    }
    Ok((events, EventsCursor(after), page.next.is_some()))
}

/// The turn's stored events after `cursor`, oldest first, and the cursor
/// to read on from.
pub async fn events_after(
    store: &dyn ItemStore,
    session_id: &str,
    turn_id: &str,
    cursor: &EventsCursor,
) -> Result<(Vec<StoredEvent>, EventsCursor)> {
    let mut events = Vec::new();
    let mut cursor = cursor.clone();
    loop {
        let (page, next, more) = events_page(store, session_id, turn_id, &cursor).await?;
        events.extend(page);
        cursor = next;
        if !more {
            return Ok((events, cursor));
        }
    }
}

/// The id the next event of a turn takes: one past the last stored.
pub async fn next_event_id(store: &dyn ItemStore, session_id: &str, turn_id: &str) -> Result<u64> {
    let page = store
        .query(
            Query::partition(sessions::messages_partition(session_id))
                .prefix(events_prefix(turn_id))
                .order(Order::Descending)
                .limit(1),
        )
        .await?;
    let Some(item) = page.items.first() else {
        return Ok(0);
    };
    let batch: Vec<StoredEvent> = super::json_attr(item, "events")?;
    Ok(batch.last().map_or(0, |e| e.id + 1))
}

/// A turn as clients see it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct TurnView {
    /// The turn's ID: its first reply's message ID.
    pub id: String,
    pub status: TurnStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<String>,
    /// Model calls made (once the turn is final or waiting).
    pub model_calls: u64,
    #[serde(with = "rust_decimal::serde::str")]
    #[schema(value_type = String, example = "0.000321")]
    pub cost_usd: Decimal,
    /// What a waiting turn waits for.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub waiting: Vec<Pending>,
    pub background: bool,
    /// A cancel was asked for.
    pub cancel_requested: bool,
    pub created_at: String,
}

impl From<&Turn> for TurnView {
    fn from(turn: &Turn) -> TurnView {
        TurnView {
            id: turn.id.clone(),
            status: turn.status,
            stop_reason: turn.stop_reason.clone(),
            model_calls: turn.model_calls,
            cost_usd: turn.cost_usd,
            waiting: turn.waiting.clone(),
            background: turn.background,
            cancel_requested: turn.cancel_requested,
            created_at: turn.created_at.clone(),
        }
    }
}
