//! The caller's answer to a waiting turn: the results of its client tools
//! and the decisions on the server tools that wait for approval. The
//! answer must cover every call the turn waits for; it is stored with the
//! next turn, which goes on from there (it runs the approved tools, tells
//! the model of the denied ones, and calls the model again).

use lambent_core::error::{Error, Result};
use lambent_llm::ToolResult;
use lambent_ports::{StoreError, TxOp};
use lambent_store::messages;
use lambent_store::sessions;
use lambent_store::turns::{self, Approval, Needs, NewTurn, TurnStatus};

use super::TurnRef;
use crate::state::State;

/// What the caller sends to a waiting turn.
#[derive(Debug, Clone, Default)]
pub struct Answers {
    pub results: Vec<ToolResult>,
    pub approvals: Vec<Approval>,
}

/// Checks `answers` against the session's waiting turn and stores them
/// with the turn that goes on from it (`background`: run by the worker).
/// 409 when no turn waits (or another answer came first), 400 naming a
/// call that is unknown, answered twice, or missing.
pub async fn begin(
    state: &State,
    owner: &str,
    session_id: &str,
    answers: Answers,
    background: bool,
    request_id: &str,
) -> Result<TurnRef> {
    let store = state.store.as_ref();
    let Some(session) = sessions::get(store, owner, session_id).await? else {
        return Err(Error::NotFound("session"));
    };
    let waiting = match turns::latest(store, &session.id).await? {
        Some(turn) if turn.status == TurnStatus::Waiting && !turn.cancel_requested => turn,
        _ => {
            return Err(Error::Conflict(
                "no tool call is waiting for results or approvals in this session".into(),
            ))
        }
    };
    check(&waiting, &answers)?;
    let answered = waiting
        .waiting
        .first()
        .map(|p| p.message_id.clone())
        .unwrap_or_default();
    let (input_ids, turn_id) = messages::turn_ids_for(answers.results.len().max(1));
    let now_ms = state.clock.now_millis();
    let expires_at = sessions::expiry(state.clock.now_secs(), state.config.session_ttl);
    // The session's check first, whichever writes follow.
    let mut ops = if answers.results.is_empty() {
        vec![TxOp::Check {
            key: sessions::item_key(owner, &session.id),
            condition: sessions::live(),
        }]
    } else {
        messages::tool_result_ops(
            owner,
            &session.id,
            &answered,
            &input_ids[..answers.results.len()],
            &answers.results,
            expires_at,
        )
    };
    messages::tag_turn(&mut ops, &turn_id);
    ops.push(turns::answered_op(&session.id, &waiting.id));
    let lease_until_ms = if background {
        now_ms
    } else {
        now_ms + state.config.turn_lease.as_millis() as i64
    };
    ops.extend(turns::start_ops(&NewTurn {
        owner,
        session_id: &session.id,
        turn_id: &turn_id,
        first_message_id: &input_ids[0],
        background,
        lease_until_ms,
        approvals: &answers.approvals,
        answers: Some(&answered),
        expires_at,
    })?);
    match lambent_store::transact_retrying(store, ops).await {
        Ok(()) => {}
        Err(StoreError::TransactionCancelled { failed }) if failed.contains(&0) => {
            return Err(Error::NotFound("session"))
        }
        Err(e) if e.is_condition_failure() => {
            return Err(Error::Conflict(
                "these tool calls were answered already, or the turn was cancelled".into(),
            ))
        }
        Err(e) => return Err(e.into()),
    }
    Ok(TurnRef {
        owner: owner.to_owned(),
        session_id: session.id,
        turn_id,
        first_message_id: input_ids[0].clone(),
        approvals: answers.approvals,
        answers: Some(answered),
        expires_at,
        request_id: request_id.to_owned(),
    })
}

/// Every call the turn waits for answered once, and nothing else.
fn check(waiting: &turns::Turn, answers: &Answers) -> Result<()> {
    let bad = |m: String| Err(Error::BadRequest(m));
    for (i, result) in answers.results.iter().enumerate() {
        let id = &result.tool_call_id;
        match waiting.waiting.iter().find(|p| &p.tool_call_id == id) {
            Some(p) if p.needs == Needs::Result => {}
            Some(_) => {
                return bad(format!(
                    "tool_results[{i}].tool_call_id: {id:?} is a server tool waiting for approval; send an approval"
                ))
            }
            None => {
                return bad(format!(
                    "tool_results[{i}].tool_call_id: {id:?} is not a call waiting for its result"
                ))
            }
        }
        if answers.results[..i].iter().any(|r| &r.tool_call_id == id) {
            return bad(format!(
                "tool_results[{i}].tool_call_id: {id:?} is answered twice"
            ));
        }
    }
    for (i, approval) in answers.approvals.iter().enumerate() {
        let id = &approval.tool_call_id;
        match waiting.waiting.iter().find(|p| &p.tool_call_id == id) {
            Some(p) if p.needs == Needs::Approval => {}
            Some(_) => {
                return bad(format!(
                    "approvals[{i}].tool_call_id: {id:?} is a client tool; send its result in tool_results"
                ))
            }
            None => {
                return bad(format!(
                    "approvals[{i}].tool_call_id: {id:?} is not a call waiting for approval"
                ))
            }
        }
        if answers.approvals[..i].iter().any(|a| &a.tool_call_id == id) {
            return bad(format!(
                "approvals[{i}].tool_call_id: {id:?} is answered twice"
            ));
        }
    }
    for pending in &waiting.waiting {
        let id = &pending.tool_call_id;
        let answered = match pending.needs {
            Needs::Result => answers.results.iter().any(|r| &r.tool_call_id == id),
            Needs::Approval => answers.approvals.iter().any(|a| &a.tool_call_id == id),
        };
        if !answered {
            return match pending.needs {
                Needs::Result => bad(format!(
                    "tool_results: missing the result of tool_call_id {id:?}"
                )),
                Needs::Approval => bad(format!(
                    "approvals: missing the decision on tool_call_id {id:?}"
                )),
            };
        }
    }
    Ok(())
}
