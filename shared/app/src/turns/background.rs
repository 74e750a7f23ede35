//! Background turns, and every turn the worker takes up: a turn asked for
//! with `"background": true` is stored (the user's message with the turn)
//! and a [`TurnMessage`] put on the steps queue; the worker claims the
//! turn under a lease and runs it from its journal. The same path takes
//! up a turn whose runner died (the sweeper puts its message on the
//! queue once its lease has run out): it goes on where its journal ends.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use lambent_core::error::{Error, Result};
use lambent_llm::{LlmClient, Part};
use lambent_ports::queue::QueueName;
use lambent_store::messages::{self, MessageRole};
use lambent_store::sessions;
use lambent_store::turns::{self, Ending, NewTurn, StoredEvent, TurnStatus};
use serde_json::json;

use super::log::EventLog;
use super::{Runner, TurnMessage, TurnRef, INTERRUPTED};
use crate::state::State;

/// Stores a background turn of `session_id` with the user's message
/// `parts` and asks the worker to run it. Returns the turn's ID.
pub async fn begin(
    state: &State,
    owner: &str,
    session_id: &str,
    parts: Vec<Part>,
) -> Result<String> {
    let store = state.store.as_ref();
    // The turn's first call prepared and reserved here, then given back: an
    // unknown session (404), a deleted agent (409), a message over the agent's context budget (400)
    // or a budget it cannot fit (429) is refused now, as a turn in the
    // request would be, not answered 202 and failed later with the message
    // stored unanswered.
    let trial = crate::chat::prepare_session_turn(
        state,
        owner,
        session_id,
        crate::chat::UserInput::Content(parts.clone()),
    )
    .await?;
    crate::chat::release(state, &trial).await;
    let (input_ids, turn_id) = messages::turn_ids_for(1);
    let expires_at = sessions::expiry(state.clock.now_secs(), state.config.session_ttl);
    let mut ops = messages::user_message_ops(owner, session_id, &input_ids[0], &parts, expires_at);
    messages::tag_turn(&mut ops, &turn_id);
    ops.extend(turns::start_ops(&NewTurn {
        owner,
        session_id,
        turn_id: &turn_id,
        first_message_id: &input_ids[0],
        background: true,
        lease_until_ms: state.clock.now_millis(),
        approvals: &[],
        answers: None,
        expires_at,
    })?);
    match lambent_store::transact_retrying(store, ops).await {
        Ok(()) => {}
        Err(e) if e.is_condition_failure() => return Err(Error::NotFound("session")),
        Err(e) => return Err(e.into()),
    }
    hand_over(state, owner, session_id, &turn_id).await;
    Ok(turn_id)
}

/// Puts turn `turn_id` on the steps queue for the worker. If that fails,
/// the sweeper does it once the turn's lease has run out.
pub async fn hand_over(state: &State, owner: &str, session_id: &str, turn_id: &str) {
    let message = TurnMessage {
        turn_id: turn_id.to_owned(),
        session_id: session_id.to_owned(),
        owner: owner.to_owned(),
    };
    if let Err(e) = state
        .queue
        .send(QueueName::Steps, &message.body(), Duration::ZERO)
        .await
    {
        tracing::warn!(error = %e, turn_id, "could not hand a turn to the worker; the sweeper will");
    }
}

/// Takes up every turn left running by a process that is gone: for a
/// process that owns its store alone (`lambent serve` on its embedded
/// store, restarted after a crash), so they go on at once rather than a
/// lease later. Returns how many were handed to the worker.
pub async fn take_up_orphans(state: &State) -> Result<u32> {
    let store = state.store.as_ref();
    let mut handed = 0;
    for shard in 0..turns::ACTIVE_SHARDS {
        let mut after = None;
        loop {
            let (active, next) = turns::active_turns(store, shard, 100, after).await?;
            for entry in active {
                let running = turns::get(store, &entry.session_id, &entry.turn_id)
                    .await?
                    .is_some_and(|t| t.status == TurnStatus::Running);
                if running {
                    turns::expire_lease(store, &entry.session_id, &entry.turn_id).await?;
                    hand_over(state, &entry.owner, &entry.session_id, &entry.turn_id).await;
                    handed += 1;
                }
            }
            match next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
    }
    Ok(handed)
}

/// Claims turn `message` and runs it (from its journal) to its end. `Ok`
/// when the message is done with: the turn ran, is final or gone, was
/// given up, or is held by a live runner.
pub async fn handle(state: &State, llm: &LlmClient, message: &TurnMessage) -> Result<()> {
    let store = state.store.as_ref();
    let now = state.clock.now_millis();
    let lease = state.config.turn_lease;
    let claimed = turns::claim(
        store,
        &message.session_id,
        &message.turn_id,
        now + lease.as_millis() as i64,
        state.config.turn_max_attempts,
        now,
    )
    .await?;
    let Some(turn) = claimed else {
        return not_claimed(state, message, now).await;
    };
    if turn.owner != message.owner {
        return Err(Error::Internal("a turn message names another owner".into()));
    }
    let turn_ref = TurnRef::of(&turn);
    let (stop, followed, watching) = super::watch::start(state, &turn.session_id, &turn.id);
    let mut log = reopen_log(state, &turn, followed).await?;
    let deadline = tokio::time::Instant::now() + state.config.stream_deadline;
    if turn.attempts > 1 {
        tracing::info!(turn_id = %turn.id, attempt = turn.attempts, "taking up a turn");
    }
    catch_up(state, &turn, &mut log).await?;
    let ending = Runner::new(state.clone(), llm.clone(), turn_ref, log, stop, deadline)
        .handing_back_at_deadline()
        .run(None)
        .await;
    drop(watching);
    if ending.status == TurnStatus::Running {
        // The invocation's time is up, not the turn's: it goes on in the
        // next, from its journal.
        tracing::info!(turn_id = %turn.id, "handing a long turn on");
        if turns::release(store, &turn.session_id, &turn.id).await? {
            hand_over(state, &turn.owner, &turn.session_id, &turn.id).await;
        }
        return Ok(());
    }
    tracing::info!(turn_id = %turn.id, status = ending.status.as_str(), "turn ended");
    Ok(())
}

/// The claim was refused: the turn is final, gone, held, or out of tries.
async fn not_claimed(state: &State, message: &TurnMessage, now: i64) -> Result<()> {
    let store = state.store.as_ref();
    let Some(turn) = turns::get(store, &message.session_id, &message.turn_id).await? else {
        return Ok(());
    };
    if turn.status.is_final() {
        return Ok(());
    }
    if turn.lease_until_ms >= now {
        // A live runner has it (this message is a copy: a redelivery, or
        // the sweeper's). If that runner dies, the sweeper hands the turn
        // over again.
        return Ok(());
    }
    // Taken up as often as a turn may be: it ends here.
    tracing::warn!(turn_id = %turn.id, attempts = turn.attempts, "giving up a turn");
    let ending = Ending {
        status: TurnStatus::Failed,
        stop_reason: Some(INTERRUPTED.to_owned()),
        model_calls: turn.model_calls,
        cost_usd: turn.cost_usd,
        waiting: Vec::new(),
    };
    if turns::finish(store, &turn.session_id, &turn.id, &ending).await? {
        // The user's message gets a reply all the same (unless the turn
        // stored one under its ID).
        let ops = messages::gave_up_ops(
            &turn.owner,
            &turn.session_id,
            &turn.id,
            INTERRUPTED,
            turn.expires_at,
        );
        match lambent_store::transact_retrying(store, ops).await {
            Ok(()) => {}
            Err(e) if e.is_condition_failure() => {}
            Err(e) => return Err(e.into()),
        }
        // Closed right after: the interval does not matter.
        let followed = tokio::sync::watch::channel(true).1;
        let mut log = reopen_log(state, &turn, followed).await?;
        catch_up(state, &turn, &mut log).await?;
        log.emit(
            "done",
            json!({
                "stop_reason": INTERRUPTED,
                "status": TurnStatus::Failed,
                "model_calls": turn.model_calls,
                "cost_usd": turn.cost_usd.to_string(),
            }),
        )
        .await;
        log.close().await;
    }
    Ok(())
}

/// The turn's event log, numbering on from its last stored event.
async fn reopen_log(
    state: &State,
    turn: &turns::Turn,
    followed: super::watch::Followed,
) -> Result<EventLog> {
    let next = turns::next_event_id(state.store.as_ref(), &turn.session_id, &turn.id).await?;
    let (log, _) = EventLog::open(
        state,
        &turn.session_id,
        &turn.id,
        next,
        turn.expires_at,
        false,
        followed,
    );
    Ok(log)
}

/// Shows what a dead runner did but did not get to show: events are
/// stored in batches, so the last batch before a crash may be lost while
/// the replies and results it showed are stored. From the journal, each
/// stored reply whose `message_end` is missing is shown (its start, the
/// rest of its text, its calls, its end) and each stored result without
/// its `tool_result`; a reply begun and never stored is closed as
/// interrupted. A follower then sees everything the turn stored, once.
async fn catch_up(state: &State, turn: &turns::Turn, log: &mut EventLog) -> Result<()> {
    let store = state.store.as_ref();
    let (events, _) =
        turns::events_after(store, &turn.session_id, &turn.id, &Default::default()).await?;
    let journal = messages::of_turn(
        store,
        &turn.session_id,
        &turn.id,
        turn.answers.as_deref().unwrap_or(&turn.first_message_id),
    )
    .await?;
    let shown = Shown::of(&events);
    let stored = |id: &str| journal.iter().any(|m| m.id == id);
    if let Some(open) = open_message(&events).filter(|open| !stored(open)) {
        log.emit(
            "message_end",
            json!({ "message_id": open, "stop_reason": INTERRUPTED }),
        )
        .await;
    }
    let ours = journal
        .iter()
        .filter(|m| m.turn_id.as_deref() == Some(turn.id.as_str()));
    for message in ours {
        match message.role {
            MessageRole::Assistant if !shown.ended.contains(&message.id) => {
                if !shown.started.contains(&message.id) {
                    log.emit(
                        "message_start",
                        json!({
                            "message_id": message.id,
                            "session_id": turn.session_id,
                            "model": message.model,
                        }),
                    )
                    .await;
                }
                let said = shown.text.get(&message.id).map_or("", String::as_str);
                if let Some(rest) = message.content.strip_prefix(said).filter(|r| !r.is_empty()) {
                    log.emit("delta", json!({ "text": rest })).await;
                }
                for (index, call) in message.tool_calls.iter().enumerate() {
                    if !shown.calls.contains(&call.id) {
                        log.emit(
                            "tool_call",
                            json!({ "index": index, "id": call.id, "name": call.name, "input": call.input }),
                        )
                        .await;
                    }
                }
                log.emit(
                    "message_end",
                    json!({
                        "message_id": message.id,
                        "stop_reason": message.stop_reason,
                        "usage": message.usage,
                        "cost_usd": message.cost_usd.unwrap_or_default().to_string(),
                    }),
                )
                .await;
            }
            MessageRole::Tool => {
                let Some(call_id) = &message.tool_call_id else {
                    continue;
                };
                if shown.results.contains(call_id) {
                    continue;
                }
                let name = journal
                    .iter()
                    .flat_map(|m| m.tool_calls.iter())
                    .find(|c| &c.id == call_id)
                    .map(|c| c.name.clone());
                log.emit(
                    "tool_result",
                    json!({
                        "tool_call_id": call_id,
                        "name": name,
                        "content": message.content,
                        "is_error": message.is_error.unwrap_or(false),
                    }),
                )
                .await;
            }
            _ => {}
        }
    }
    Ok(())
}

/// What a turn's stored events show.
#[derive(Default)]
struct Shown {
    started: HashSet<String>,
    ended: HashSet<String>,
    /// The text shown of each reply.
    text: HashMap<String, String>,
    calls: HashSet<String>,
    results: HashSet<String>,
}

impl Shown {
    fn of(events: &[StoredEvent]) -> Shown {
        let mut shown = Shown::default();
        let mut current: Option<String> = None;
        for event in events {
            let Ok(data) = serde_json::from_str::<serde_json::Value>(&event.data) else {
                continue;
            };
            let text = |key: &str| data.get(key).and_then(|v| v.as_str()).map(str::to_owned);
            match event.event.as_str() {
                "message_start" => {
                    current = text("message_id");
                    if let Some(id) = &current {
                        shown.started.insert(id.clone());
                    }
                }
                "delta" => {
                    if let (Some(id), Some(piece)) = (&current, text("text")) {
                        shown.text.entry(id.clone()).or_default().push_str(&piece);
                    }
                }
                "tool_call" => {
                    shown.calls.extend(text("id"));
                }
                "message_end" => {
                    shown.ended.extend(text("message_id"));
                }
                "tool_result" => {
                    shown.results.extend(text("tool_call_id"));
                }
                _ => {}
            }
        }
        shown
    }
}

/// The message a stream of events started and did not end.
fn open_message(events: &[StoredEvent]) -> Option<String> {
    let last = events
        .iter()
        .rev()
        .find(|e| e.event == "message_start" || e.event == "message_end")?;
    if last.event != "message_start" {
        return None;
    }
    let data: serde_json::Value = serde_json::from_str(&last.data).ok()?;
    data.get("message_id")?.as_str().map(str::to_owned)
}
