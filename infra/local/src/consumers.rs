//! The queue consumers that Lambda's SQS event sources run in AWS: the
//! worker on the steps queue and the trigger function on the triggers queue,
//! fed here by the queue port. Messages are handled concurrently, up to
//! [`MAX_IN_FLIGHT`] per queue, so one slow model call never holds up the
//! others; a message is deleted only when handled. A failure leaves it to
//! reappear after its visibility timeout (a retry sets that to its backoff),
//! and to move to the dead-letter queue after the queue's maximum receives.

use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use lambent_app::state::State;
use lambent_app::workflows::Worker;
use lambent_ports::queue::{QueueName, Received, MAX_RECEIVE};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

/// Messages of one queue handled at once.
pub const MAX_IN_FLIGHT: usize = 32;
/// How long a received trigger stays hidden while it is handled.
const TRIGGER_VISIBILITY: Duration = Duration::from_secs(60);
/// Long-poll wait of one receive.
const WAIT: Duration = Duration::from_secs(1);
/// Pause after the queue itself failed, so an outage is not a busy loop.
const BACKOFF: Duration = Duration::from_secs(2);
/// How long a stopping consumer waits for the messages it is handling.
/// Those still running then are dropped; their messages come back after
/// their visibility timeout, and a step's lease lets another worker take it.
const DRAIN: Duration = Duration::from_secs(10);

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
    F: Fn(Received) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: Display + Send + 'static,
{
    let handle = Arc::new(handle);
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut in_flight = JoinSet::new();
    while !*stop.borrow() {
        // Receive only what there is room for, waiting for room if need be.
        let first = tokio::select! {
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            _ = stop.changed() => break,
        };
        let room = 1 + slots.available_permits().min(MAX_RECEIVE - 1);
        let received = tokio::select! {
            r = state.queue.receive(queue, room, visibility, WAIT) => r,
            _ = stop.changed() => break,
        };
        let messages = match received {
            Ok(messages) => messages,
            Err(e) => {
                tracing::warn!(queue = queue.as_str(), error = %e, "receive failed");
                drop(first);
                tokio::time::sleep(BACKOFF).await;
                continue;
            }
        };
        let mut first = Some(first);
        for message in messages {
            let permit = match first.take() {
                Some(permit) => permit,
                None => match slots.clone().try_acquire_owned() {
                    Ok(permit) => permit,
                    // Not reached: `room` counted the free slots.
                    Err(_) => continue,
                },
            };
            let (state, handle) = (state.clone(), handle.clone());
            in_flight.spawn(async move {
                let _slot = permit;
                match handle(message.clone()).await {
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
            });
        }
        // Reap what has finished, so the set does not grow.
        while in_flight.try_join_next().is_some() {}
    }
    let drained = tokio::time::timeout(DRAIN, async {
        while in_flight.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            queue = queue.as_str(),
            left = in_flight.len(),
            "stopping with messages still in hand; they will be retried"
        );
        in_flight.abort_all();
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
            move |message: Received| {
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
                move |message: Received| {
                    let state = state.clone();
                    async move { lambent_app::workflows::trigger::start_run(&state, &message).await }
                }
            },
        )),
    ]
}
