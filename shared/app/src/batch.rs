//! Queue batches, as the SQS-triggered functions receive them: each message
//! handled on its own, failures reported one by one, so one bad message
//! never fails its batch; and the dead-letter move of a message that can
//! never succeed.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use futures::future::join_all;

use lambent_ports::queue::{Queue, QueueName, QueueResult, Received};

/// Handles an SQS event as a Lambda event source delivers it: every record,
/// as the queue port presents a message, at once. The answer names the
/// failed ones (`ReportBatchItemFailures`), which SQS delivers again.
pub async fn sqs_batch<F, Fut, E>(event: SqsEvent, handle: F) -> SqsBatchResponse
where
    F: Fn(Received) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Display,
{
    let messages = event.records.into_iter().map(|m| {
        let message = received(m);
        (message.message_id.clone(), message)
    });
    let failed = failed_messages(messages, handle).await;
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

/// An SQS record as the queue port presents a received message.
fn received(m: SqsMessage) -> Received {
    Received {
        receive_count: m
            .attributes
            .get("ApproximateReceiveCount")
            .and_then(|c| c.parse().ok())
            .unwrap_or(1),
        message_id: m.message_id.unwrap_or_default(),
        receipt: m.receipt_handle.unwrap_or_default(),
        body: m.body.unwrap_or_default(),
    }
}

/// Moves a message that can never succeed to the dead-letter queue `to`
/// (then it may be deleted), keeping its body for whoever looks into it.
pub async fn dead_letter(
    queue: &dyn Queue,
    to: QueueName,
    message: &Received,
    reason: &str,
) -> QueueResult<()> {
    tracing::warn!(message_id = %message.message_id, queue = to.as_str(), reason, "message dead-lettered");
    // SQS refuses empty bodies.
    let body = if message.body.is_empty() {
        "(empty message)"
    } else {
        &message.body
    };
    queue.send(to, body, Duration::ZERO).await?;
    Ok(())
}

/// Runs `handle` on every `(message_id, message)` concurrently and returns
/// the IDs of the messages that failed (to be retried, then dead-lettered).
pub async fn failed_messages<M, F, Fut, E>(
    messages: impl IntoIterator<Item = (String, M)>,
    handle: F,
) -> Vec<String>
where
    F: Fn(M) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Display,
{
    let runs = messages.into_iter().map(|(id, body)| {
        let outcome = handle(body);
        async move {
            match outcome.await {
                Ok(()) => None,
                Err(e) => {
                    tracing::warn!(message_id = %id, error = %e, "message failed");
                    Some(id)
                }
            }
        }
    });
    join_all(runs).await.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_the_failed_messages_are_reported() {
        let messages = [("m1", "ok"), ("m2", "bad"), ("m3", "ok"), ("m4", "bad")]
            .map(|(id, body)| (id.to_owned(), body.to_owned()));
        let failed = failed_messages(messages, |body| async move {
            if body == "ok" {
                Ok(())
            } else {
                Err("refused")
            }
        })
        .await;
        assert_eq!(failed, vec!["m2".to_owned(), "m4".to_owned()]);
    }
}
