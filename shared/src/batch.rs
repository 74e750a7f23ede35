//! Queue batches, as the SQS-triggered functions and the local runner's
//! worker loop receive them: each message handled on its own, failures
//! reported one by one, so one bad message never fails its batch.

use std::fmt::Display;
use std::future::Future;

use futures::future::join_all;

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
