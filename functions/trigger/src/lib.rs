//! Starts workflow runs from events on the triggers queue:
//! `{"workflow_id": "...", "input": {...}, "idempotency_key": "..."}`.
//!
//! Starting runs lands with the workflows issue; until then a well-formed
//! trigger fails (and is retried, then dead-lettered) rather than being dropped.

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use lambent::state::State;
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
    #[error("malformed trigger: {0}")]
    Malformed(String),
    #[error("starting workflow runs is not implemented yet")]
    NotImplemented,
}

pub fn parse(body: &str) -> Result<Trigger, TriggerError> {
    serde_json::from_str(body).map_err(|e| TriggerError::Malformed(e.to_string()))
}

/// Handles one trigger message.
pub async fn start_run(_state: &State, body: &str) -> Result<(), TriggerError> {
    let _trigger = parse(body)?;
    Err(TriggerError::NotImplemented)
}

/// Handles an SQS batch, reporting each failed message by ID.
pub async fn handle_batch(state: &State, event: SqsEvent) -> SqsBatchResponse {
    let messages = event
        .records
        .into_iter()
        .map(|m| (m.message_id.unwrap_or_default(), m.body.unwrap_or_default()));
    let failed =
        lambent::batch::failed_messages(
            messages,
            |body| async move { start_run(state, &body).await },
        )
        .await;
    let mut response = SqsBatchResponse::default();
    response.batch_item_failures = failed
        .into_iter()
        .map(|id| {
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = id;
            failure
        })
        .collect();
    response
}
