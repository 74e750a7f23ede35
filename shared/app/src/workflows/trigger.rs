//! Starts workflow runs from events on the triggers queue:
//! `{"workflow_id": "...", "input": {...}, "idempotency_key": "..."}`.
//!
//! A run starts as through `POST /v1/workflows/{id}/runs`, for the
//! workflow's owner, with the same idempotency: an event without a key uses
//! its SQS message ID, so a redelivered event never starts a second run. An
//! event that cannot start a run (malformed, an unknown workflow, input the
//! prompts cannot use, a deleted agent) moves to the dead-letter queue at
//! once; the rest of its batch goes on.

use crate::state::State;
use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use lambent_core::ids::{TypedId, WorkflowId};
use lambent_core::Error;
use lambent_ports::queue::{QueueName, Received};
use lambent_store::{runs, workflows};
use serde::Deserialize;

/// The trigger message of API.md.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trigger {
    pub workflow_id: String,
    #[serde(default)]
    pub input: serde_json::Map<String, serde_json::Value>,
    pub idempotency_key: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum TriggerError {
    /// The store or the queue failed: the event is retried.
    #[error("a dependency is unavailable: {0}")]
    Unavailable(String),
}

/// Why an event cannot start a run.
fn refusal(body: &str) -> Result<Trigger, String> {
    let trigger: Trigger =
        serde_json::from_str(body).map_err(|e| format!("malformed trigger: {e}"))?;
    WorkflowId::parse(&trigger.workflow_id)
        .map_err(|_| "workflow_id: not a workflow ID (`wfl_...`)".to_owned())?;
    if let Some(key) = &trigger.idempotency_key {
        runs::check_idempotency_key(key).map_err(|e| e.to_string())?;
    }
    Ok(trigger)
}

/// Handles one trigger event. `Ok` means it may be deleted.
pub async fn start_run(state: &State, message: &Received) -> Result<(), TriggerError> {
    let trigger = match refusal(&message.body) {
        Ok(trigger) => trigger,
        Err(reason) => return dead_letter(state, message, &reason).await,
    };
    let store = state.store.as_ref();
    let unavailable = |e: Error| TriggerError::Unavailable(e.to_string());
    let found = match workflows::owner_of(store, &trigger.workflow_id)
        .await
        .map_err(unavailable)?
    {
        Some(owner) => workflows::get(store, &owner, &trigger.workflow_id)
            .await
            .map_err(unavailable)?
            .map(|w| (owner, w)),
        None => None,
    };
    let Some((owner, workflow)) = found else {
        return dead_letter(state, message, "there is no such workflow").await;
    };
    let key = trigger
        .idempotency_key
        .clone()
        .unwrap_or_else(|| format!("sqs:{}", message.message_id));
    match super::start_run(
        store,
        state.queue.as_ref(),
        &owner,
        &workflow,
        trigger.input,
        Some(&key),
    )
    .await
    {
        Ok(started) => {
            tracing::info!(
                run_id = %started.run_id,
                workflow_id = %workflow.id,
                created = started.created,
                "run started from a trigger"
            );
            Ok(())
        }
        Err(e @ (Error::Unavailable(_) | Error::Internal(_))) => Err(unavailable(e)),
        Err(refused) => dead_letter(state, message, &refused.to_string()).await,
    }
}

async fn dead_letter(state: &State, message: &Received, reason: &str) -> Result<(), TriggerError> {
    let queue = state.queue.as_ref();
    crate::batch::dead_letter(queue, QueueName::TriggersDeadLetter, message, reason)
        .await
        .map_err(|e| TriggerError::Unavailable(e.to_string()))
}

/// Handles an SQS batch, reporting each failed message by ID.
pub async fn handle_batch(state: &State, event: SqsEvent) -> SqsBatchResponse {
    crate::batch::sqs_batch(event, |m| async move { start_run(state, &m).await }).await
}
