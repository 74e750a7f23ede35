//! `POST …/messages/{id}/cancel`: stops a turn, whichever process runs it.
//! A running turn is told (at once in this process, within a second
//! elsewhere) and ends itself: the provider stream is closed, what was
//! used is billed, tools under way are dropped and answered as cancelled,
//! and its last event is `done` with `stop_reason: "cancelled"`. A waiting
//! turn has no runner: it is closed here. A final turn stays as it is.

use std::time::Duration;

use lambent_core::error::{Error, Result};
use lambent_llm::ToolResult;
use lambent_store::messages;
use lambent_store::sessions;
use lambent_store::turns::{self, Ending, Turn, TurnStatus};

use crate::chat::CANCELLED;
use crate::state::State;

/// How long the answer waits for a running turn to end.
const SETTLE_WAIT: Duration = Duration::from_secs(3);

/// Cancels turn `turn_id` of `owner`'s session; returns the turn as it is
/// afterwards (usually `cancelled`; still `running` if its runner is slow
/// to notice). Idempotent.
pub async fn cancel(state: &State, owner: &str, session_id: &str, turn_id: &str) -> Result<Turn> {
    let store = state.store.as_ref();
    if sessions::get(store, owner, session_id).await?.is_none() {
        return Err(Error::NotFound("session"));
    }
    let Some(turn) = turns::request_cancel(store, session_id, turn_id).await? else {
        return Err(Error::NotFound("message"));
    };
    match turn.status {
        TurnStatus::Running => {
            state.turn_registry.cancel(turn_id);
            let until = tokio::time::Instant::now() + SETTLE_WAIT;
            let mut latest = turn;
            while latest.status == TurnStatus::Running && tokio::time::Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(25)).await;
                match turns::get(store, session_id, turn_id).await? {
                    Some(now) => latest = now,
                    None => break,
                }
            }
            Ok(latest)
        }
        TurnStatus::Waiting => close_waiting(state, turn).await,
        _ => Ok(turn),
    }
}

/// Answers the calls a waiting turn waits for as cancelled (so the
/// conversation stays whole) and ends it.
async fn close_waiting(state: &State, turn: Turn) -> Result<Turn> {
    let store = state.store.as_ref();
    if let Some(first) = turn.waiting.first() {
        let results: Vec<ToolResult> = turn
            .waiting
            .iter()
            .map(|p| ToolResult {
                tool_call_id: p.tool_call_id.clone(),
                content: "cancelled".into(),
                is_error: true,
            })
            .collect();
        let (ids, _) = messages::turn_ids_for(results.len());
        let mut ops = messages::tool_result_ops(
            &turn.owner,
            &turn.session_id,
            &first.message_id,
            &ids,
            &results,
            turn.expires_at,
        );
        messages::tag_turn(&mut ops, &turn.id);
        match lambent_store::transact_retrying(store, ops).await {
            Ok(()) => {}
            // Answered already (a cancel retried), or the session is gone.
            Err(e) if e.is_condition_failure() => {}
            Err(e) => return Err(e.into()),
        }
    }
    let ending = Ending {
        status: TurnStatus::Cancelled,
        stop_reason: Some(CANCELLED.to_owned()),
        model_calls: turn.model_calls,
        cost_usd: turn.cost_usd,
        waiting: Vec::new(),
    };
    turns::finish(store, &turn.session_id, &turn.id, &ending).await?;
    Ok(turns::get(store, &turn.session_id, &turn.id)
        .await?
        .unwrap_or(turn))
}
