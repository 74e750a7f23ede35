//! `POST /v1/runs/{id}/approvals`: a person's decisions on the tool calls a
//! paused step waits for. The decisions are journaled with the step made
//! `ready` again, and the step is enqueued: its agent loop goes on, running
//! the approved tools and telling the model of the denied ones.

use lambent_core::error::{Error, Result};
use lambent_store::runs::{self, RunView, StepStatus};
use lambent_store::step_journal;
use lambent_store::turns::Approval;

use crate::state::State;

/// Decides calls of `owner`'s run `run_id`. 404 for an unknown run, 409 when
/// no step waits, 400 naming a call that is not waiting, decided twice, or
/// left undecided in a step the answer is for.
pub async fn decide(
    state: &State,
    owner: &str,
    run_id: &str,
    approvals: Vec<Approval>,
) -> Result<RunView> {
    let store = state.store.as_ref();
    let Some(run) = runs::get(store, owner, run_id).await? else {
        return Err(Error::NotFound("run"));
    };
    let paused: Vec<_> = run
        .steps
        .iter()
        .filter(|s| s.status == StepStatus::AwaitingApproval)
        .collect();
    if paused.is_empty() {
        return Err(Error::Conflict(
            "no step of this run waits for an approval".into(),
        ));
    }
    if approvals.is_empty() {
        return Err(Error::BadRequest("approvals: must not be empty".into()));
    }
    let mut by_step: Vec<(&str, Vec<Approval>)> = Vec::new();
    for (i, approval) in approvals.iter().enumerate() {
        let id = &approval.tool_call_id;
        let Some(step) = paused
            .iter()
            .find(|s| s.pending.iter().any(|p| &p.tool_call_id == id))
        else {
            return Err(Error::BadRequest(format!(
                "approvals[{i}].tool_call_id: {id:?} is not a call waiting for approval"
            )));
        };
        if approvals[..i].iter().any(|a| &a.tool_call_id == id) {
            return Err(Error::BadRequest(format!(
                "approvals[{i}].tool_call_id: {id:?} is answered twice"
            )));
        }
        match by_step.iter_mut().find(|(s, _)| *s == step.id) {
            Some((_, decided)) => decided.push(approval.clone()),
            None => by_step.push((&step.id, vec![approval.clone()])),
        }
    }
    for (step_id, decided) in &by_step {
        let step = paused
            .iter()
            .find(|s| s.id == *step_id)
            .ok_or_else(|| Error::Internal("a paused step went missing".into()))?;
        if let Some(missing) = step
            .pending
            .iter()
            .find(|p| !decided.iter().any(|a| a.tool_call_id == p.tool_call_id))
        {
            return Err(Error::BadRequest(format!(
                "approvals: missing the decision on tool_call_id {:?}",
                missing.tool_call_id
            )));
        }
    }
    for (step_id, decided) in &by_step {
        step_journal::approve(store, run_id, step_id, decided).await?;
        super::enqueue(state.queue.as_ref(), run_id, [*step_id]).await?;
    }
    runs::get(store, owner, run_id)
        .await?
        .ok_or(Error::NotFound("run"))
}
