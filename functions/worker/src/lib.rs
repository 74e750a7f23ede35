//! The workflow worker: consumes the steps queue (an SQS event source with
//! `ReportBatchItemFailures` in AWS; the queue port in `lambent serve`).
//!
//! Running steps lands with the workflows issue; until then every step
//! message fails, so it is retried and then dead-lettered, never lost.

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use lambent::state::State;

#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// Not a step message at all: retrying cannot help.
    #[error("malformed step message: {0}")]
    Malformed(String),
    #[error("running workflow steps is not implemented yet")]
    NotImplemented,
}

/// Handles one step message.
pub async fn run_step(_state: &State, body: &str) -> Result<(), StepError> {
    let message: serde_json::Value =
        serde_json::from_str(body).map_err(|e| StepError::Malformed(e.to_string()))?;
    if !message.is_object() {
        return Err(StepError::Malformed("expected a JSON object".into()));
    }
    Err(StepError::NotImplemented)
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
            |body| async move { run_step(state, &body).await },
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
