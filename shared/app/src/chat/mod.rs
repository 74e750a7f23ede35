//! A model call, accounted for: the one place where spending is reserved,
//! priced, settled and released. Every call (a session turn, an
//! OpenAI-compatible completion, a workflow step) goes the same way:
//!
//! 1. [`Target`]: the agent (or provider and model) is resolved and checked,
//!    with a clear 4xx for anything missing;
//! 2. [`prepare`]: the context is built within the agent's token budget, the
//!    worst case is reserved under every spending limit (429
//!    `budget_exceeded` if it does not fit), and the provider key decrypted;
//! 3. [`start`]: the user's message (and its turn, for a turn's first
//!    call) is stored while the provider call starts;
//! 4. [`settle`]: the reply, its usage and cost are stored, the aggregates
//!    counted, the reservation settled ([`charge`]) and the call's ledger
//!    entry consumed, in one transaction guarded by a create-only record, so
//!    a retried settle counts the call once; one that does not land leaves
//!    its intent for the sweeper (`settle.rs`, docs/RELIABILITY.md). A
//!    workflow step's record is its checkpoint: the step protocol
//!    (`lambent_store::runs::complete`) writes the same [`charge`] with it;
//! 5. [`release`]: a call that did not happen gives its reservation back (a
//!    call whose process died is closed by the sweeper).

mod reader;
mod settle;
mod target;
mod timed;

pub use reader::{Cut, Piece, Read, ReplyReader, Stop, CANCELLED, DEADLINE};
pub use settle::{
    abandon, charge, finish_intent, reply_message, settle, settle_detached, usage_when_cut, Bill,
    Charge, Outcome, Recorded, ReplyText, Settled,
};
pub use target::{ServerTool, Target, Targets};

use std::sync::Arc;
use std::time::Instant;

use rust_decimal::Decimal;

use lambent_core::error::{Error, Result};
use tracing::Instrument;

use crate::metrics::{Event, Metrics};
use crate::state::State;
use lambent_llm::{
    ChatRequest, ChunkStream, Completion, Endpoint, LlmClient, Part, ProviderError, Role, Turn,
};
use lambent_ports::TxOp;
use lambent_store::budgets::{self, Reservation};
use lambent_store::messages::{self, MessageStatus};
use lambent_store::models::Prices;
use lambent_store::sessions::{self, Session};
use lambent_store::turns;
use lambent_store::usage;

/// Where a call is recorded; the record is create-only and so makes the
/// call count once.
#[derive(Debug, Clone)]
pub enum Record {
    /// A model call of an agent turn in a session: the user's message
    /// first (for the turn's first call), then the assistant's.
    SessionTurn {
        session_id: String,
        /// The turn the call belongs to (see `crate::turns`).
        turn_id: String,
        /// One ID per message `input` is stored as, in order.
        input_message_ids: Vec<String>,
        assistant_message_id: String,
        input: UserInput,
    },
    /// A call outside any session: a marker `USER#<owner>/CALL#<id>`.
    Call { call_id: String },
    /// A workflow step's call: the step's checkpoint is its record, written
    /// by the step protocol with [`charge`].
    Step { run_id: String, step_id: String },
}

/// What a model call of a session turn adds to the conversation.
#[derive(Debug, Clone, PartialEq)]
pub enum UserInput {
    /// The user's message (text and images): the turn's first call, which
    /// stores it with the turn.
    Content(Vec<Part>),
    /// Nothing: a call of turn `turn_id` whose input is stored already
    /// (the results of the tools the model called, or a background turn's
    /// message). The turn's first reply takes the turn's ID (`first`).
    Continue { turn_id: String, first: bool },
}

impl UserInput {
    fn parts(&self) -> Vec<Part> {
        match self {
            UserInput::Content(parts) => parts.clone(),
            UserInput::Continue { .. } => Vec::new(),
        }
    }
}

/// A call ready to start: checked, budgeted, with its context.
pub struct Prepared {
    pub owner: String,
    pub agent_id: Option<String>,
    pub model: String,
    pub prices: Prices,
    pub endpoint: Endpoint,
    pub request: ChatRequest,
    pub reservation: Reservation,
    pub record: Record,
    /// `yyyy-mm-dd` the call counts in.
    pub day: String,
    /// When the call was prepared, epoch seconds (by the state's clock).
    pub prepared_at: i64,
    /// Expiry of what the call writes into a session.
    pub expires_at: i64,
    /// The prompt's estimated tokens, tools included: never below what the
    /// provider can bill for it.
    pub prompt_tokens: u64,
    /// What a later call of the same agent turn reuses instead of reading
    /// again (session turns only).
    pub context: Option<TurnContext>,
    /// Where the call's tokens, cost, latency and failures are counted
    /// (its process's [`State::metrics`]), under its model and provider kind.
    pub metrics: Arc<Metrics>,
}

/// What the calls of one agent turn share: its agent resolved, the limits
/// it spends under. The turn's next call is the last one's conversation
/// plus the reply and its tools' results ([`prepare_next`]), not a new
/// read of the history.
#[derive(Clone)]
pub struct TurnContext {
    target: Target,
    session: Session,
    monthly: Option<Decimal>,
}

impl TurnContext {
    /// The turn's agent, as resolved for its call.
    pub fn target(&self) -> &Target {
        &self.target
    }
}

impl Prepared {
    /// Counts `event` under the call's model and provider kind.
    pub fn count(&self, event: Event<'_>) {
        self.metrics.record(&self.model, self.endpoint.kind, event);
    }

    /// How many messages the call's settle stores: the reply.
    /// (Its input counts itself, in the input's own write.)
    fn stored_messages(&self) -> u64 {
        match &self.record {
            Record::SessionTurn { .. } => 1,
            Record::Call { .. } | Record::Step { .. } => 0,
        }
    }

    /// The first message the call stores (the user's, for a turn's first call).
    pub fn first_input_id(&self) -> Option<&str> {
        match &self.record {
            Record::SessionTurn {
                input_message_ids, ..
            } => input_message_ids.first().map(String::as_str),
            Record::Call { .. } | Record::Step { .. } => None,
        }
    }

    /// The ID clients see for the reply: the assistant message's, or the call's.
    pub fn reply_id(&self) -> &str {
        match &self.record {
            Record::SessionTurn {
                assistant_message_id,
                ..
            } => assistant_message_id,
            Record::Call { call_id } => call_id,
            Record::Step { step_id, .. } => step_id,
        }
    }

    pub fn session_id(&self) -> Option<&str> {
        match &self.record {
            Record::SessionTurn { session_id, .. } => Some(session_id),
            Record::Call { .. } | Record::Step { .. } => None,
        }
    }
}

/// A model call of an agent turn in `session`: the newest history that
/// fits the agent's `context_token_budget`, then `input`. A message starts
/// a new turn, whose ID is its first reply's ([`Prepared::reply_id`]); it
/// is stored with the turn when the call starts.
pub async fn prepare_session_turn(
    state: &State,
    owner: &str,
    session_id: &str,
    input: UserInput,
) -> Result<Prepared> {
    let store = state.store.as_ref();
    // Warm, these three are in this process's caches (`Callers`, `Targets`).
    let session = state.callers.session(store, owner, session_id).await?;
    let (target, monthly) = tokio::join!(
        Target::of_agent(state, owner, &session.agent_id, "the session's agent"),
        state.callers.monthly_limit(store, owner),
    );
    let (target, monthly) = (target?, monthly?);
    let budget = target.context_token_budget;
    let said = input.parts();
    let fixed = system_tokens(&target) + messages::estimate_parts_tokens(&said);
    if fixed > budget {
        return Err(Error::BadRequest(format!(
            "content: the message and the agent's system prompt need about {fixed} tokens, \
             more than the agent's context_token_budget of {budget}"
        )));
    }
    let (mut turns, history_tokens) =
        messages::recent_turns(store, &session.id, budget - fixed).await?;
    let (input_message_ids, assistant_message_id, turn_id) = match &input {
        // The turn's first reply gives the turn its ID.
        UserInput::Content(_) => {
            turns.push(Turn {
                role: Role::User,
                parts: said,
            });
            let (input, reply) = messages::turn_ids_for(1);
            (input, reply.clone(), reply)
        }
        UserInput::Continue { turn_id, first } => {
            let (input, mut reply) = messages::turn_ids_for(0);
            if *first {
                reply = turn_id.clone();
            }
            (input, reply, turn_id.clone())
        }
    };
    let record = Record::SessionTurn {
        session_id: session.id.clone(),
        turn_id,
        input_message_ids,
        assistant_message_id,
        input,
    };
    let prompt_tokens = fixed + history_tokens;
    let context = TurnContext {
        target: target.clone(),
        session: session.clone(),
        monthly,
    };
    let limits = Limits {
        monthly,
        session: Some(&session),
    };
    let mut call = prepare(state, owner, target, turns, prompt_tokens, limits, record).await?;
    call.context = Some(context);
    Ok(call)
}

/// The next model call of the agent turn `previous` belongs to: its
/// conversation, then `added` (the reply and its tools' results, as the
/// turn stored them), under the same agent and limits, without reading
/// them again. `None` when the conversation no longer fits the agent's
/// `context_token_budget`: the caller prepares from the stored history
/// (which drops the oldest turns).
pub async fn prepare_next(
    state: &State,
    previous: &Prepared,
    added: Vec<Turn>,
) -> Option<Result<Prepared>> {
    let (
        context,
        Record::SessionTurn {
            session_id,
            turn_id,
            ..
        },
    ) = (previous.context.as_ref()?, &previous.record)
    else {
        return None;
    };
    let target = context.target.clone();
    let mut turns = previous.request.turns.clone();
    turns.extend(added);
    let prompt_tokens = prompt_estimate(&target, &turns);
    if prompt_tokens > target.context_token_budget {
        return None;
    }
    let (input_message_ids, assistant_message_id) = messages::turn_ids_for(0);
    let record = Record::SessionTurn {
        session_id: session_id.clone(),
        turn_id: turn_id.clone(),
        input_message_ids,
        assistant_message_id,
        input: UserInput::Continue {
            turn_id: turn_id.clone(),
            first: false,
        },
    };
    let limits = Limits {
        monthly: context.monthly,
        session: Some(&context.session),
    };
    let prepared = prepare(
        state,
        &previous.owner,
        target,
        turns,
        prompt_tokens,
        limits,
        record,
    )
    .await;
    Some(prepared.map(|mut call| {
        call.context = Some(context.clone());
        call
    }))
}

/// A call outside any session (OpenAI-compatible completions): `turns` as
/// given, with the target's system prompt first if it has one.
pub async fn prepare_call(
    state: &State,
    owner: &str,
    target: Target,
    turns: Vec<Turn>,
) -> Result<Prepared> {
    let prompt_tokens = prompt_estimate(&target, &turns);
    let record = Record::Call {
        call_id: new_call_id(state),
    };
    let limits = Limits {
        monthly: state
            .callers
            .monthly_limit(state.store.as_ref(), owner)
            .await?,
        session: None,
    };
    prepare(state, owner, target, turns, prompt_tokens, limits, record).await
}

/// A workflow step's call: `turns` (its prompt, then the rounds of its
/// agent loop), under the owner's monthly limit as it was when the run
/// started. The caller decides which tools the target offers.
pub async fn prepare_step(
    state: &State,
    owner: &str,
    target: Target,
    turns: Vec<Turn>,
    monthly_limit: Option<Decimal>,
    step: Record,
) -> Result<Prepared> {
    let prompt_tokens = prompt_estimate(&target, &turns);
    if prompt_tokens > target.context_token_budget {
        return Err(Error::BadRequest(format!(
            "the prompt needs about {prompt_tokens} tokens, more than the agent's \
             context_token_budget of {}",
            target.context_token_budget
        )));
    }
    let limits = Limits {
        monthly: monthly_limit,
        session: None,
    };
    prepare(state, owner, target, turns, prompt_tokens, limits, step).await
}

/// The estimate of the agent's system prompt.
fn system_tokens(target: &Target) -> u64 {
    target
        .system
        .as_deref()
        .map_or(0, messages::estimate_tokens)
}

/// The estimate of a prompt: the system prompt, then `turns` (tools are
/// added by [`prepare`]).
fn prompt_estimate(target: &Target, turns: &[Turn]) -> u64 {
    system_tokens(target)
        + turns
            .iter()
            .map(|t| messages::estimate_parts_tokens(&t.parts))
            .sum::<u64>()
}

/// A new call's ID: it sorts by time, so the sweeper reads the ledger
/// oldest first.
fn new_call_id(state: &State) -> String {
    lambent_core::ids::sortable_id_at("call", state.clock.now_millis())
}

/// The spending limits a call must fit.
struct Limits<'a> {
    monthly: Option<Decimal>,
    session: Option<&'a Session>,
}

async fn prepare(
    state: &State,
    owner: &str,
    target: Target,
    turns: Vec<Turn>,
    prompt_tokens: u64,
    limits: Limits<'_>,
    record: Record,
) -> Result<Prepared> {
    let store = state.store.as_ref();
    let now = state.clock.now_secs();
    let day = lambent_core::time::day_of_epoch_secs(now);
    let prompt_tokens = prompt_tokens + target.tools_tokens;
    let worst = usage::worst_case(prompt_tokens, target.max_tokens as u64, &target.prices);
    let call_id = match &record {
        Record::Call { call_id } => call_id.clone(),
        _ => new_call_id(state),
    };
    let month = lambent_core::time::month_of(&day).to_owned();
    let mut call = Prepared {
        owner: owner.to_owned(),
        agent_id: target.agent_id,
        model: target.model.clone(),
        prices: target.prices,
        endpoint: target.endpoint,
        request: ChatRequest {
            model: target.model,
            system: target.system,
            turns,
            max_tokens: target.max_tokens,
            temperature: target.temperature,
            tools: target.tools,
            tool_choice: target.tool_choice,
            parallel_tool_calls: target.parallel_tool_calls,
            stop_sequences: target.stop_sequences,
        },
        reservation: budgets::Reservation::none(&call_id, owner, &month),
        record,
        day,
        prepared_at: now,
        expires_at: sessions::expiry(now, state.config.session_ttl),
        prompt_tokens,
        context: None,
        metrics: state.metrics.clone(),
    };
    let reserved = budgets::reserve(
        store,
        &call_id,
        owner,
        &month,
        limits.monthly,
        limits.session,
        worst,
        state.clock.now_millis(),
        |reservation| call.bill_json(reservation),
    )
    .await;
    call.reservation = match reserved {
        Ok(reservation) => reservation,
        Err(e) => {
            if matches!(e, Error::BudgetExceeded(_)) {
                call.count(Event::BudgetRefused);
            }
            return Err(e);
        }
    };
    Ok(call)
}

/// A reply on its way: the provider's stream, and the write of the user's
/// message, which the settle waits for (so the two are stored in order).
pub struct Started {
    pub stream: ChunkStream,
    pub user_message: tokio::task::JoinHandle<Result<()>>,
}

/// Starts the provider call while the user's message (for a session turn)
/// is stored, and returns as soon as the provider has answered: the first
/// token does not wait for the write. If the provider fails, the
/// reservation is given back.
pub async fn start(state: &State, llm: &LlmClient, call: &Prepared) -> Result<Started> {
    let user_message = tokio::spawn(store_user_message(state, call).in_current_span());
    let asked = Instant::now();
    match llm.stream(&call.endpoint, &call.request).await {
        Ok(stream) => Ok(Started {
            stream: timed::timed(
                stream,
                call.metrics.clone(),
                call.model.clone(),
                call.endpoint.kind,
                asked,
            ),
            user_message,
        }),
        Err(e) => {
            call.count(Event::ProviderFailed);
            if let Ok(Err(stored)) = user_message.await {
                tracing::warn!(error = %stored, "the user's message was not stored");
            }
            release(state, call).await;
            Err(provider_error(e))
        }
    }
}

/// The whole reply at once (`"stream": false`), stored and settled.
pub async fn complete(state: &State, llm: &LlmClient, call: &Prepared) -> Result<Settled> {
    // The provider's request first: it is on its way before the store
    // (which may run its transaction on this thread) takes its turn.
    let (reply, stored) = tokio::join!(
        timed_reply(call, llm.complete(&call.endpoint, &call.request)),
        store_user_message(state, call)
    );
    if let Err(e) = stored {
        release_unless_ambiguous(state, call, &e).await;
        return Err(e);
    }
    match reply {
        Ok(completion) => {
            let mut text = ReplyText::default();
            text.push(&completion.text);
            let mut settled = settle(
                state.store.as_ref(),
                call,
                Outcome {
                    text,
                    tool_calls: completion.tool_calls.clone(),
                    status: MessageStatus::Complete,
                    usage: completion.usage,
                    stop_reason: completion.stop_reason,
                },
            )
            .await?;
            // The caller gets the whole reply, even past what is stored.
            settled.text = completion.text;
            settled.tool_calls = completion.tool_calls;
            Ok(settled)
        }
        Err(e) => {
            release(state, call).await;
            Err(provider_error(e))
        }
    }
}

/// Why [`answer`] has no reply. The reservation is already given back.
#[derive(Debug)]
pub enum Unanswered {
    Provider(ProviderError),
    /// No reply within the limit.
    TimedOut(std::time::Duration),
}

/// The whole reply of a call whose record is written by its caller (a
/// workflow step), made within `limit`. Without a reply, the reservation is
/// given back.
pub async fn answer(
    state: &State,
    llm: &LlmClient,
    call: &Prepared,
    limit: std::time::Duration,
) -> std::result::Result<Completion, Unanswered> {
    let reply = timed_reply(call, llm.complete(&call.endpoint, &call.request));
    let failure = match tokio::time::timeout(limit, reply).await {
        Ok(Ok(completion)) => {
            // The step's checkpoint (or its detached settle) bills this
            // usage at these prices, whichever attempt it counts.
            let cost_usd = usage::cost(&completion.usage, &call.prices);
            call.count(Event::Billed {
                usage: &completion.usage,
                cost_usd,
            });
            return Ok(completion);
        }
        Ok(Err(e)) => Unanswered::Provider(e),
        Err(_) => {
            call.count(Event::ProviderFailed);
            Unanswered::TimedOut(limit)
        }
    };
    release(state, call).await;
    Err(failure)
}

/// A whole reply (`"stream": false`), its latency or its failure counted.
async fn timed_reply(
    call: &Prepared,
    reply: impl std::future::Future<Output = std::result::Result<Completion, ProviderError>>,
) -> std::result::Result<Completion, ProviderError> {
    let asked = Instant::now();
    let reply = reply.await;
    call.count(match &reply {
        Ok(_) => Event::Latency(asked.elapsed()),
        Err(_) => Event::ProviderFailed,
    });
    reply
}

/// Writes the user's message of a turn's first call, with the turn
/// (nothing for other calls).
fn store_user_message(
    state: &State,
    call: &Prepared,
) -> impl std::future::Future<Output = Result<()>> + Send + 'static {
    let ops = match &call.record {
        Record::SessionTurn {
            session_id,
            turn_id,
            input_message_ids,
            input: UserInput::Content(parts),
            ..
        } => {
            let mut ops = messages::user_message_ops(
                &call.owner,
                session_id,
                &input_message_ids[0],
                parts,
                call.expires_at,
            );
            let lease = state.clock.now_millis() + state.config.turn_lease.as_millis() as i64;
            let turn = turns::NewTurn {
                owner: &call.owner,
                session_id,
                turn_id,
                first_message_id: &input_message_ids[0],
                background: false,
                lease_until_ms: lease,
                approvals: &[],
                answers: None,
                expires_at: call.expires_at,
            };
            match turns::start_ops(&turn) {
                Ok(turn_ops) => ops.extend(turn_ops),
                Err(e) => return futures::future::Either::Left(async move { Err(e) }),
            }
            messages::tag_turn(&mut ops, turn_id);
            Some(ops)
        }
        Record::SessionTurn {
            input: UserInput::Continue { .. },
            ..
        }
        | Record::Call { .. }
        | Record::Step { .. } => None,
    };
    // A turn's ledger entry comes with its reservation; holding none, it
    // comes with the user's message, so a call whose process dies is
    // always found by the sweeper.
    let ops = ops.map(|mut ops| {
        if !call.reservation.holds() {
            ops.push(TxOp::Put {
                item: lambent_store::ledger::reserved_entry(
                    &call.reservation,
                    &call.bill_json(&call.reservation),
                    state.clock.now_millis(),
                ),
                condition: None,
            });
        }
        ops
    });
    let first_input = match &call.record {
        Record::SessionTurn {
            session_id,
            input_message_ids,
            ..
        } => input_message_ids
            .first()
            .map(|id| messages::item_key(session_id, id)),
        _ => None,
    };
    let store = state.store.clone();
    futures::future::Either::Right(async move {
        let Some(ops) = ops else { return Ok(()) };
        let mut attempt = 0;
        loop {
            match store.transact(ops.clone()).await {
                Ok(()) => return Ok(()),
                // The session check is first.
                Err(e) if e.is_condition_failure() => return Err(Error::NotFound("session")),
                Err(e) if attempt + 1 < INPUT_ATTEMPTS => {
                    // It may have landed (a lost answer): read it back
                    // before writing it again.
                    if let Some(key) = &first_input {
                        if matches!(store.get(key).await, Ok(Some(_))) {
                            return Ok(());
                        }
                    }
                    tracing::warn!(error = %e, "storing the turn's input failed; trying again");
                    attempt += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(20 << attempt)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    })
}

/// Tries of the write of a turn's input before the turn is refused.
const INPUT_ATTEMPTS: u32 = 3;

/// Whether a failed write may have landed all the same (a timeout, an
/// outage), so that trying again may help and only a read (or the sweeper)
/// can tell what happened.
fn is_ambiguous(e: &Error) -> bool {
    matches!(e, Error::Unavailable(_))
}

/// Gives the reservation back after the input's write failed, unless that
/// write may have landed: then the sweeper closes the call (and marks the
/// turn if its input is there) once it is stale.
async fn release_unless_ambiguous(state: &State, call: &Prepared, e: &Error) {
    if !is_ambiguous(e) {
        release(state, call).await;
    }
}

/// Gives a call's reservation back: the call made no reply, or another
/// attempt of it was counted first.
pub async fn release(state: &State, call: &Prepared) {
    if let Err(e) = budgets::release(state.store.as_ref(), &call.reservation).await {
        tracing::error!(error = %e, "could not release a budget reservation");
    }
}

/// A provider failure as the HTTP answer of a call that has not streamed yet.
pub fn provider_error(e: ProviderError) -> Error {
    tracing::warn!(error = ?e, "provider call failed");
    match e {
        ProviderError::Timeout => Error::ProviderTimeout,
        other => Error::ProviderFailed(other.to_string()),
    }
}
