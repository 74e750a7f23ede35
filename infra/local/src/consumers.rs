//! The queue consumers that Lambda's SQS event sources run in AWS: the
//! worker on the steps queue and the trigger function on the triggers queue,
//! fed here by the queue port. Each received batch is handled at once, a
//! message at a time, as in Lambda; a message is deleted only when handled.
//! A failure leaves it to reappear after its visibility timeout (a retry
//! sets that to its backoff), and to move to the dead-letter queue after
//! the queue's maximum receives.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use futures::future::join_all;
use lambent::ports::queue::{QueueName, Received, MAX_RECEIVE};
use lambent::state::State;
use lambent_fn_worker::Worker;
use tokio::sync::watch;

/// How long a received trigger stays hidden while it is handled.
const TRIGGER_VISIBILITY: Duration = Duration::from_secs(60);
/// Long-poll wait of one receive.
const WAIT: Duration = Duration::from_secs(1);
/// Pause after the queue itself failed, so an outage is not a busy loop.
const BACKOFF: Duration = Duration::from_secs(2);

/// How long a received step stays hidden: past the step's lease, so a
/// message comes back only once its worker's lease has run out.
pub fn step_visibility(state: &State) -> Duration {
    state.config.step_lease * 2
}

/// Consumes `queue` until `stop` turns true.
pub async fn consume<F, Fut, E>(
    state: State,
    queue: QueueName,
    visibility: Duration,
    mut stop: watch::Receiver<bool>,
    handle: F,
) where
    F: Fn(Received) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Display,
{
    while !*stop.borrow() {
        let received = tokio::select! {
            r = state.queue.receive(queue, MAX_RECEIVE, visibility, WAIT) => r,
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
        let handled = messages.into_iter().map(|message| {
            let outcome = handle(message.clone());
            let state = &state;
            async move {
                match outcome.await {
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
                        "message not handled; it will be retried"
                    ),
                }
            }
        });
        join_all(handled).await;
    }
}

/// Starts the worker and the trigger consumer; they stop when `stop` turns true.
pub fn spawn_all(
    state: &State,
    worker: Worker,
    stop: &watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    vec![
        tokio::spawn(consume(
            state.clone(),
            QueueName::Steps,
            step_visibility(state),
            stop.clone(),
            move |message| {
                let worker = worker.clone();
                async move { worker.handle(&message).await }
            },
        )),
        tokio::spawn(consume(
            state.clone(),
            QueueName::Triggers,
            TRIGGER_VISIBILITY,
            stop.clone(),
            {
                let state = state.clone();
                move |message| {
                    let state = state.clone();
                    async move { lambent_fn_trigger::start_run(&state, &message).await }
                }
            },
        )),
    ]
}
