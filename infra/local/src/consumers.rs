//! The queue consumers that Lambda's SQS event sources run in AWS: the
//! worker on the steps queue and the trigger function on the triggers queue,
//! fed here by the queue port. A message is deleted only when handled; a
//! failure leaves it to reappear after its visibility timeout, and to move to
//! the dead-letter queue after the queue's maximum receives.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use lambent::ports::queue::{QueueName, MAX_RECEIVE};
use lambent::state::State;
use tokio::sync::watch;

/// How long a received message stays hidden while it is handled.
const VISIBILITY: Duration = Duration::from_secs(60);
/// Long-poll wait of one receive.
const WAIT: Duration = Duration::from_secs(1);
/// Pause after the queue itself failed, so an outage is not a busy loop.
const BACKOFF: Duration = Duration::from_secs(2);

/// Consumes `queue` until `stop` turns true.
pub async fn consume<F, Fut, E>(
    state: State,
    queue: QueueName,
    mut stop: watch::Receiver<bool>,
    handle: F,
) where
    F: Fn(State, String) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Display,
{
    while !*stop.borrow() {
        let received = tokio::select! {
            r = state.queue.receive(queue, MAX_RECEIVE, VISIBILITY, WAIT) => r,
            _ = stop.changed() => break,
        };
        let messages = match received {
            Ok(messages) => messages,
            Err(e) => {
                tracing::warn!(queue = queue.as_str(), error = %e, "receive failed");
                tokio::time::sleep(BACKOFF).await;
                continue;
            }
        };
        for message in messages {
            match handle(state.clone(), message.body).await {
                Ok(()) => {
                    if let Err(e) = state.queue.delete(queue, &message.receipt).await {
                        tracing::warn!(queue = queue.as_str(), error = %e, "delete failed");
                    }
                }
                Err(e) => tracing::warn!(
                    queue = queue.as_str(),
                    message_id = %message.message_id,
                    receive_count = message.receive_count,
                    error = %e,
                    "message failed; it will be retried"
                ),
            }
        }
    }
}

/// Starts the worker and the trigger consumer; they stop when `stop` turns true.
pub fn spawn_all(state: &State, stop: &watch::Receiver<bool>) -> Vec<tokio::task::JoinHandle<()>> {
    vec![
        tokio::spawn(consume(
            state.clone(),
            QueueName::Steps,
            stop.clone(),
            |state, body| async move { lambent_fn_worker::run_step(&state, &body).await },
        )),
        tokio::spawn(consume(
            state.clone(),
            QueueName::Triggers,
            stop.clone(),
            |state, body| async move { lambent_fn_trigger::start_run(&state, &body).await },
        )),
    ]
}
