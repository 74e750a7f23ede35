//! A call's accounting once its reply is in: the reply stored, its cost
//! counted (its pending usage entry, which a fold adds to every aggregate:
//! [`lambent_store::usage`]) and its reservation settled, exactly once
//! whatever fails.
//!
//! The settle is one transaction on the call ledger
//! ([`lambent_store::ledger`]): it stores the reply under its create-only
//! record, counts the cost and consumes the call's ledger entry. If it does
//! not land after a few tries (an outage, a timeout with the answer lost),
//! the settle intent (the call's [`Bill`] and [`Outcome`]) is written to
//! the entry before the caller is answered, and the sweeper finishes it
//! with the same code ([`finish_intent`]); a call whose process dies first
//! is closed from the entry the reservation (or the turn's message) wrote.
//! The create-only record and the consumed entry make any number of tries
//! count once. (Writing the intent only when the settle fails saves a
//! store round trip on every call: the window it leaves, a crash during the
//! settle's own round trip, is the one a crash just before the intent write
//! would leave.)

use std::time::Duration;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::{Prepared, Record};
use lambent_core::error::{Error, Result};
use lambent_llm::{StopReason, ToolCall, Usage};
use lambent_ports::{Cmp, Condition, Item, ItemStore, Key, StoreError, TxOp, Update};
use lambent_store::budgets::{self, Reservation};
use lambent_store::ledger::{self, Intent};
use lambent_store::messages::{self, MessageStatus, Reply, MAX_STORED_BYTES};
use lambent_store::models::Prices;
use lambent_store::runs;
use lambent_store::sessions;
use lambent_store::usage::{self, CallFacts};
use lambent_store::users;

/// How long a call marker is kept; retries of a settle come within seconds.
const CALL_MARKER_SECS: i64 = 35 * 86_400;
/// Tries of a settle before it is left to the sweeper.
const SETTLE_ATTEMPTS: u32 = 3;

fn call_marker_key(owner: &str, call_id: &str) -> Key {
    Key::new(users::partition(owner), format!("CALL#{call_id}"))
}

/// The reply's text as stored: everything up to [`MAX_STORED_BYTES`], the
/// rest only counted, so memory per call stays bounded however long the reply.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct ReplyText {
    pub text: String,
    pub truncated: bool,
    /// Every byte of the reply, kept or not.
    pub bytes_seen: u64,
}

impl ReplyText {
    pub fn push(&mut self, piece: &str) {
        self.bytes_seen += piece.len() as u64;
        if self.truncated {
            return;
        }
        let room = MAX_STORED_BYTES.saturating_sub(self.text.len());
        if piece.len() <= room {
            self.text.push_str(piece);
            return;
        }
        let mut cut = room;
        while !piece.is_char_boundary(cut) {
            cut -= 1;
        }
        self.text.push_str(&piece[..cut]);
        self.truncated = true;
    }
}

/// How a call ended.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Outcome {
    pub text: ReplyText,
    /// The tools the model called, in order.
    pub tool_calls: Vec<ToolCall>,
    pub status: MessageStatus,
    pub usage: Usage,
    pub stop_reason: Option<String>,
}

/// What a reply cut short by Lambent (its deadline, or a departed client's
/// drain time) is billed, since the provider's final count never came:
/// what the provider reported so far, but at least the prompt's estimate
/// (an upper bound of what it bills for the prompt) and one token per byte
/// of what it said.
pub fn usage_when_cut(
    call: &Prepared,
    reported: Usage,
    text: &ReplyText,
    calls: &[ToolCall],
) -> Usage {
    let prompt_reported =
        reported.input_tokens + reported.cache_read_tokens + reported.cache_write_tokens;
    let said = text.bytes_seen
        + calls
            .iter()
            .map(|c| (c.id.len() + c.name.len() + c.input.to_string().len()) as u64)
            .sum::<u64>();
    Usage {
        input_tokens: if prompt_reported == 0 {
            call.prompt_tokens
        } else {
            reported.input_tokens
        },
        output_tokens: reported.output_tokens.max(said),
        ..reported
    }
}

/// What a settled call cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled {
    pub reply_id: String,
    pub usage: Usage,
    pub cost_usd: Decimal,
    /// In Anthropic's names whatever the provider (`end_turn`,
    /// `max_tokens`, `tool_use`…): each endpoint says it its own way.
    pub stop_reason: Option<String>,
    /// The whole reply, from [`super::complete`] only (a stream has
    /// already delivered it); empty otherwise.
    pub text: String,
    /// The tools the model called, from [`super::complete`] only, like `text`.
    pub tool_calls: Vec<ToolCall>,
    /// A session turn's reply item as this settle stored it, when its
    /// transaction wrote it (not when an earlier try or the sweeper did):
    /// what reading it back would give ([`messages::message_of_item`]).
    pub stored: Option<Item>,
}

/// A settled session turn's reply as its stored message reads, built from
/// what the call has in hand: the answer when the store cannot show it yet.
pub fn reply_message(call: &Prepared, settled: &Settled) -> Result<messages::Message> {
    let Record::SessionTurn {
        session_id,
        assistant_message_id,
        ..
    } = &call.record
    else {
        return Err(Error::Internal(
            "only a session turn has a reply message".into(),
        ));
    };
    let mut text = ReplyText::default();
    text.push(&settled.text);
    let reply = Reply {
        text: text.text,
        tool_calls: settled.tool_calls.clone(),
        truncated: text.truncated,
        status: MessageStatus::Complete,
        model: call.model.clone(),
        stop_reason: settled.stop_reason.clone(),
        usage: settled.usage,
        cost_usd: settled.cost_usd,
        prices: call.prices.clone(),
    };
    messages::assistant_message(session_id, assistant_message_id, &reply)
}

/// Where a call's cost is recorded, as its bill keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Recorded {
    /// The assistant message of a session turn (and the session's totals).
    SessionTurn {
        session_id: String,
        assistant_message_id: String,
        /// The first message of the turn's input (the user's, or its first
        /// tool result): an abandoned turn is marked only if it is there.
        #[serde(default)]
        input_message_id: Option<String>,
        /// Messages the turn adds to the session, the reply included.
        stored_messages: u64,
        /// A call of an agent turn, which its runner (or the worker, when
        /// the runner died) takes up again: an abandoned call only gives
        /// its reservation back, the turn decides how it ends.
        #[serde(default)]
        resumable: bool,
        /// The agent turn its reply is stored for.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        turn_id: Option<String>,
    },
    /// A call marker `USER#<owner>/CALL#<call id>`.
    Call,
    /// A workflow step's checkpoint, written by the step protocol.
    Step { run_id: String, step_id: String },
    /// An attempt of a workflow step whose result is not the step's
    /// checkpoint (another attempt's is, or the checkpoint failed): a call
    /// marker, unless the step's checkpoint names this very call.
    StepAttempt { run_id: String, step_id: String },
}

/// Everything the accounting of a call needs, and nothing of its request
/// (no key, no prompt): what a settle intent keeps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bill {
    pub call_id: String,
    pub owner: String,
    pub agent_id: Option<String>,
    pub model: String,
    pub prices: Prices,
    pub reservation: Reservation,
    pub recorded: Recorded,
    /// `yyyy-mm-dd` the call counts in.
    pub day: String,
    /// When the call was prepared, epoch seconds.
    pub prepared_at: i64,
    /// Expiry of what the call writes into a session.
    pub expires_at: i64,
}

impl Bill {
    fn session_id(&self) -> Option<&str> {
        match &self.recorded {
            Recorded::SessionTurn { session_id, .. } => Some(session_id),
            _ => None,
        }
    }
}

impl Prepared {
    /// The call's bill.
    pub fn bill(&self) -> Bill {
        let recorded = match &self.record {
            Record::SessionTurn {
                session_id,
                turn_id,
                assistant_message_id,
                input_message_ids,
                ..
            } => Recorded::SessionTurn {
                session_id: session_id.clone(),
                assistant_message_id: assistant_message_id.clone(),
                input_message_id: input_message_ids.first().cloned(),
                stored_messages: self.stored_messages(),
                resumable: true,
                turn_id: Some(turn_id.clone()),
            },
            Record::Call { .. } => Recorded::Call,
            Record::Step { run_id, step_id } => Recorded::Step {
                run_id: run_id.clone(),
                step_id: step_id.clone(),
            },
        };
        Bill {
            call_id: self.reservation.call_id.clone(),
            owner: self.owner.clone(),
            agent_id: self.agent_id.clone(),
            model: self.model.clone(),
            prices: self.prices.clone(),
            reservation: self.reservation.clone(),
            recorded,
            day: self.day.clone(),
            prepared_at: self.prepared_at,
            expires_at: self.expires_at,
        }
    }

    /// The call's bill as its ledger entry keeps it, with `reservation`.
    pub fn bill_json(&self, reservation: &Reservation) -> String {
        let bill = Bill {
            reservation: reservation.clone(),
            ..self.bill()
        };
        // Strings, numbers and decimals: serialising cannot fail.
        serde_json::to_string(&bill).unwrap_or_default()
    }
}

/// What a call costs and the writes that count it: the month's
/// reservation settled to the cost, the call's pending usage entry (which
/// a fold adds to the aggregates: day, agent, model, session; the user's
/// and the deployment's) and, if it holds a
/// reservation, the consumption of its ledger entry (last). Every account
/// of every kind of call writes these, in the transaction of its
/// create-only record.
pub struct Charge {
    pub cost_usd: Decimal,
    pub ops: Vec<TxOp>,
}

pub fn charge(bill: &Bill, used: &Usage) -> Charge {
    let (cost_usd, mut ops) = count_ops(bill, used);
    if bill.reservation.holds() {
        ops.push(budgets::consume_entry_op(&bill.reservation));
    }
    Charge { cost_usd, ops }
}

/// The cost, and the writes that count it (without the ledger entry).
fn count_ops(bill: &Bill, used: &Usage) -> (Decimal, Vec<TxOp>) {
    let cost_usd = usage::cost(used, &bill.prices);
    let facts = CallFacts {
        call_id: &bill.call_id,
        owner: &bill.owner,
        agent_id: bill.agent_id.as_deref(),
        session_id: bill.session_id(),
        model: &bill.model,
        day: &bill.day,
        usage: *used,
        cost_usd,
    };
    let ops = vec![
        budgets::settle_month_op(&bill.reservation, cost_usd),
        // Added to the day's, agent's, model's and session's aggregates by
        // a later fold, off the call's path.
        usage::pending_op(&facts),
    ];
    (cost_usd, ops)
}

/// Stores the reply, counts its cost in every aggregate and settles the
/// reservation, once however often it is tried. A settle that does not land
/// leaves its intent for the sweeper (and the caller is told what it cost
/// all the same).
pub async fn settle(store: &dyn ItemStore, call: &Prepared, outcome: Outcome) -> Result<Settled> {
    if let Record::Step { .. } = call.record {
        return Err(Error::Internal(
            "a workflow step is settled by its checkpoint, not here".into(),
        ));
    }
    let settled = account(store, call.bill(), outcome).await?;
    call.count(crate::metrics::Event::Billed {
        usage: &settled.usage,
        cost_usd: settled.cost_usd,
    });
    Ok(settled)
}

/// Bills a workflow step's attempt that its step's checkpoint does not
/// count: another attempt's result was stored first, or the checkpoint
/// failed (and may or may not have landed). Its provider cost is the
/// user's all the same; the step's record of which call it counted keeps
/// it from being counted twice.
pub async fn settle_detached(
    store: &dyn ItemStore,
    call: &Prepared,
    usage: Usage,
) -> Result<Decimal> {
    let mut bill = call.bill();
    if let Recorded::Step { run_id, step_id } = bill.recorded {
        bill.recorded = Recorded::StepAttempt { run_id, step_id };
    }
    let outcome = Outcome {
        text: ReplyText::default(),
        tool_calls: Vec::new(),
        status: MessageStatus::Complete,
        usage,
        stop_reason: None,
    };
    Ok(account(store, bill, outcome).await?.cost_usd)
}

async fn account(store: &dyn ItemStore, mut bill: Bill, mut outcome: Outcome) -> Result<Settled> {
    outcome.stop_reason = outcome
        .stop_reason
        .map(|raw| StopReason::from_provider(&raw).anthropic().to_owned());
    // The call's ledger entry: with its reservation, or (holding none) with
    // the user's message of a turn's first call; other calls have none yet.
    let entry = if bill.reservation.holds() {
        EntryIs::Held
    } else if matches!(
        bill.recorded,
        Recorded::SessionTurn {
            input_message_id: Some(_),
            ..
        }
    ) {
        EntryIs::Intent
    } else {
        EntryIs::Gone
    };
    let mut failure = None;
    for attempt in 0..SETTLE_ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(25 << attempt)).await;
        }
        match settle_bill(store, &bill, &outcome, entry).await {
            Ok((cost_usd, stored)) => {
                let mut settled = settled(&bill, outcome, cost_usd);
                settled.stored = stored;
                return Ok(settled);
            }
            // Contention outlasted the store's own retries: nothing was
            // written, and the next try (or the sweeper) may well land.
            Err(e) if super::is_ambiguous(&e) || matches!(e, Error::Conflict(_)) => {
                failure = Some(e)
            }
            Err(e) => return Err(e),
        }
    }
    // The settle did not land, or cannot be told to have: its intent is
    // made durable before the caller is answered, and the sweeper finishes
    // it (counting it once, whichever landed).
    match leave_to_sweeper(store, &mut bill, &outcome).await {
        Ok(()) => {
            tracing::warn!(call_id = %bill.call_id, "settle failed; the sweeper will finish it");
            let cost_usd = usage::cost(&outcome.usage, &bill.prices);
            Ok(settled(&bill, outcome, cost_usd))
        }
        Err(e) => {
            tracing::error!(error = %e, call_id = %bill.call_id, "settle and its intent failed");
            Err(failure.unwrap_or(e))
        }
    }
}

/// Writes the settle intent of a call whose settle did not land.
async fn leave_to_sweeper(store: &dyn ItemStore, bill: &mut Bill, outcome: &Outcome) -> Result<()> {
    let now_ms = lambent_core::time::now_epoch_millis();
    let mut failure = Error::Unavailable("the settle intent was not written".into());
    for attempt in 0..SETTLE_ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(25 << attempt)).await;
        }
        match write_intent(store, bill, outcome, now_ms).await {
            Ok(true) => return Ok(()),
            // Its entry is gone: consumed by the settle after all, or its
            // reservation released by the sweeper. Either way the intent
            // goes without it (a landed settle makes it count nothing).
            Ok(false) => bill.reservation = bill.reservation.released(),
            Err(e) => failure = e,
        }
    }
    Err(failure)
}

fn settled(bill: &Bill, outcome: Outcome, cost_usd: Decimal) -> Settled {
    let reply_id = match &bill.recorded {
        Recorded::SessionTurn {
            assistant_message_id,
            ..
        } => assistant_message_id.clone(),
        _ => bill.call_id.clone(),
    };
    Settled {
        reply_id,
        usage: outcome.usage,
        cost_usd,
        stop_reason: outcome.stop_reason,
        text: String::new(),
        tool_calls: Vec::new(),
        stored: None,
    }
}

async fn write_intent(
    store: &dyn ItemStore,
    bill: &Bill,
    outcome: &Outcome,
    now_ms: i64,
) -> Result<bool> {
    let intent = Intent {
        bill: serde_json::to_string(bill).map_err(|e| Error::Internal(e.to_string()))?,
        outcome: serde_json::to_string(outcome).map_err(|e| Error::Internal(e.to_string()))?,
    };
    ledger::write_intent(store, &bill.reservation, &intent, now_ms).await
}

/// Finishes the settle of a ledger entry's intent: the sweeper's half of
/// the outbox. Returns the call's cost.
pub async fn finish_intent(store: &dyn ItemStore, intent: &Intent) -> Result<Decimal> {
    let bill: Bill = serde_json::from_str(&intent.bill)
        .map_err(|e| Error::Internal(format!("unreadable settle intent: {e}")))?;
    let outcome: Outcome = serde_json::from_str(&intent.outcome)
        .map_err(|e| Error::Internal(format!("unreadable settle intent: {e}")))?;
    Ok(settle_bill(store, &bill, &outcome, EntryIs::Intent)
        .await?
        .0)
}

/// The stop reason of a turn whose process died before its reply was in.
pub const INTERRUPTED: &str = "interrupted";

/// Closes the account of a call that never reported an outcome (its
/// process died): its reservation is given back. A call of an agent turn
/// is left at that: the turn is taken up again (`crate::turns`). For a
/// session turn of before agent turns,
/// the turn is marked with a `failed` reply (`stop_reason: "interrupted"`,
/// no cost: what the provider did is unknown), so no user message is left
/// unanswered. Only while the entry still has no outcome: a call whose
/// outcome came first settles as usual. (A call still running after the
/// stale time, whose turn was marked, is not counted; the stale time is
/// chosen above any call's length.)
pub async fn abandon(
    store: &dyn ItemStore,
    reservation: &Reservation,
    bill: Option<&str>,
) -> Result<()> {
    let bill = bill.and_then(|b| serde_json::from_str::<Bill>(b).ok());
    match bill {
        Some(bill)
            if matches!(
                bill.recorded,
                Recorded::SessionTurn {
                    resumable: false,
                    ..
                }
            ) =>
        {
            let outcome = Outcome {
                text: ReplyText::default(),
                tool_calls: Vec::new(),
                status: MessageStatus::Failed,
                usage: Usage::default(),
                stop_reason: Some(INTERRUPTED.into()),
            };
            settle_bill(store, &bill, &outcome, EntryIs::Abandoned).await?;
            Ok(())
        }
        _ => budgets::release_abandoned(store, reservation).await,
    }
}

/// What a settle must do with the call's ledger entry.
#[derive(Clone, Copy, PartialEq, Eq)]
enum EntryIs {
    /// It holds the reservation: consume it, or learn that someone else
    /// did (and released the reservation).
    Held,
    /// It may exist but holds no reservation: remove it.
    Intent,
    /// The sweeper closes an abandoned call: consume the entry only while
    /// it has no outcome, else leave everything to the live call.
    Abandoned,
    /// There is none.
    Gone,
}

/// One transaction that records the call and counts it, redone if the
/// session went away (counted under a call marker) or the reservation was
/// released by someone else (counted without it). The cost, and the reply
/// item it stored (a session turn's, when this transaction wrote it).
async fn settle_bill(
    store: &dyn ItemStore,
    bill: &Bill,
    outcome: &Outcome,
    entry: EntryIs,
) -> Result<(Decimal, Option<Item>)> {
    let mut bill = bill.clone();
    let mut entry = match entry {
        EntryIs::Intent if bill.reservation.holds() => EntryIs::Held,
        other => other,
    };
    for _ in 0..3 {
        let (mut ops, recorded_ops) = record_ops(&bill, outcome)?;
        let (cost_usd, counted) = count_ops(&bill, &outcome.usage);
        ops.extend(counted);
        let consumes = ops.len();
        match entry {
            EntryIs::Held => ops.push(budgets::consume_entry_op(&bill.reservation)),
            EntryIs::Intent => ops.push(budgets::consume_entry_op(&bill.reservation.released())),
            EntryIs::Abandoned => ops.push(TxOp::Delete {
                key: ledger::entry_key(&bill.call_id),
                condition: Some(ledger::abandoned()),
            }),
            EntryIs::Gone => {}
        }
        // An abandoned turn is marked only after its input.
        let input_checked = match (&entry, &bill.recorded) {
            (
                EntryIs::Abandoned,
                Recorded::SessionTurn {
                    session_id,
                    input_message_id: Some(input),
                    ..
                },
            ) => {
                ops.push(TxOp::Check {
                    key: messages::item_key(session_id, input),
                    condition: Condition::Exists,
                });
                Some(ops.len() - 1)
            }
            _ => None,
        };
        // The reply message, if this transaction writes one (its first op).
        let reply = match (&bill.recorded, ops.first()) {
            (Recorded::SessionTurn { .. }, Some(TxOp::Put { item, .. })) => Some(item.clone()),
            _ => None,
        };
        match lambent_store::transact_retrying(store, ops).await {
            Ok(()) => return Ok((cost_usd, reply)),
            Err(StoreError::TransactionCancelled { failed }) => {
                if entry == EntryIs::Abandoned && failed.contains(&consumes) {
                    // The call reported its outcome meanwhile: it is alive.
                    return Ok((Decimal::ZERO, None));
                }
                if input_checked.is_some_and(|i| failed.contains(&i)) {
                    // Its input was never stored: nothing to mark.
                    budgets::release_abandoned(store, &bill.reservation).await?;
                    return Ok((Decimal::ZERO, None));
                }
                let checkpointed = is_attempt(&bill) && failed.contains(&1);
                if failed.contains(&0) || checkpointed {
                    // Recorded and counted already (by an earlier try, or
                    // by the step's checkpoint): only the intent is left.
                    if entry != EntryIs::Gone && !failed.contains(&consumes) {
                        ledger::forget(store, &bill.call_id).await?;
                    }
                    return Ok((cost_usd, None));
                }
                if recorded_ops == 2 && failed.contains(&1) {
                    // The session was deleted during the call: the cost is
                    // still the user's, so it is counted under a call
                    // marker; the session's share of the reservation went
                    // with the session.
                    tracing::info!("session deleted during a call; counting it without it");
                    bill.recorded = Recorded::Call;
                    bill.reservation.session = None;
                    continue;
                }
                if entry == EntryIs::Held && failed.contains(&consumes) {
                    // Released by the sweeper: counted without it.
                    bill.reservation = bill.reservation.released();
                    entry = EntryIs::Gone;
                    continue;
                }
                return Err(Error::Internal(format!(
                    "a settle was refused (operations {failed:?})"
                )));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::Internal("a settle could not be written".into()))
}

fn is_attempt(bill: &Bill) -> bool {
    matches!(bill.recorded, Recorded::StepAttempt { .. })
}

/// The writes that record the call (create-only first), and their number.
fn record_ops(bill: &Bill, outcome: &Outcome) -> Result<(Vec<TxOp>, usize)> {
    let marker = || TxOp::Put {
        item: Item::new(call_marker_key(&bill.owner, &bill.call_id))
            .with("cost_usd", usage::cost(&outcome.usage, &bill.prices))
            .with("model", bill.model.as_str())
            .expiring_at(bill.prepared_at + CALL_MARKER_SECS),
        condition: Some(Condition::NotExists),
    };
    Ok(match &bill.recorded {
        Recorded::SessionTurn {
            session_id,
            assistant_message_id,
            stored_messages,
            turn_id,
            ..
        } => {
            let cost_usd = usage::cost(&outcome.usage, &bill.prices);
            let reply = Reply {
                text: outcome.text.text.clone(),
                tool_calls: outcome.tool_calls.clone(),
                truncated: outcome.text.truncated,
                status: outcome.status,
                model: bill.model.clone(),
                stop_reason: outcome.stop_reason.clone(),
                usage: outcome.usage,
                cost_usd,
                prices: bill.prices.clone(),
            };
            let mut ops = vec![
                messages::assistant_message_op(
                    session_id,
                    assistant_message_id,
                    &reply,
                    bill.expires_at,
                ),
                TxOp::Update {
                    key: sessions::item_key(&bill.owner, session_id),
                    update: session_totals(bill, *stored_messages, &outcome.usage, cost_usd),
                    condition: Some(sessions::live()),
                },
            ];
            if let Some(turn_id) = turn_id {
                messages::tag_turn(&mut ops, turn_id);
            }
            (ops, 2)
        }
        Recorded::Call => (vec![marker()], 1),
        Recorded::StepAttempt { run_id, step_id } => {
            // Unless the step's checkpoint counted this very call.
            let not_this_call = Condition::Or(vec![
                Condition::AttrNotExists(runs::CALL_ID_ATTR.into()),
                Condition::cmp(runs::CALL_ID_ATTR, Cmp::Ne, bill.call_id.as_str()),
            ]);
            let ops = vec![
                marker(),
                TxOp::Check {
                    key: runs::step_key(run_id, step_id),
                    condition: not_this_call,
                },
            ];
            (ops, 2)
        }
        Recorded::Step { .. } => {
            return Err(Error::Internal(
                "a workflow step is settled by its checkpoint, not here".into(),
            ))
        }
    })
}

fn session_totals(bill: &Bill, stored_messages: u64, u: &Usage, cost_usd: Decimal) -> Update {
    Update::new()
        .add("input_tokens", Decimal::from(u.input_tokens))
        .add("output_tokens", Decimal::from(u.output_tokens))
        .add("cache_read_tokens", Decimal::from(u.cache_read_tokens))
        .add("cache_write_tokens", Decimal::from(u.cache_write_tokens))
        .add("cost_usd", cost_usd)
        .add(
            "committed_usd",
            cost_usd - bill.reservation.session_amount(),
        )
        .add("message_count", Decimal::from(stored_messages))
        .set("updated_at", lambent_core::time::now_rfc3339())
        .expire_at(Some(bill.expires_at))
}
