//! One step message, from claim to the next steps. See the crate's docs for
//! the protocol; each store write named here is one round trip.

use lambent_core::ids::{RunId, TypedId};
use std::collections::BTreeMap;
use std::time::Duration;

use crate::chat::{self, Prepared, Target};
use lambent_ports::queue::{QueueName, Received, MAX_DELAY};
use lambent_store::runs::{self, Completed, StepMessage, StepRecord, StepResult, StepStatus};
use tracing::Instrument;

use super::failure::{domain_failure, unavailable, Failure, StepError};
use super::tool_loop::{Held, Looped};
use super::{Allowance, Point, Worker};

pub(crate) async fn handle(
    worker: &Worker,
    message: &Received,
    allowance: Allowance,
) -> Result<(), StepError> {
    let parsed = serde_json::from_str::<StepMessage>(&message.body)
        .ok()
        .filter(|m| {
            RunId::parse(&m.run_id).is_ok()
                && lambent_core::workflow::template::is_identifier(&m.step_id)
        });
    let Some(step) = parsed else {
        return dead_letter(worker, message, "not a step message").await;
    };
    let span = tracing::info_span!("step", run_id = %step.run_id, step_id = %step.step_id);
    run(worker, message, &step, allowance)
        .instrument(span)
        .await
}

async fn run(
    worker: &Worker,
    message: &Received,
    at: &StepMessage,
    allowance: Allowance,
) -> Result<(), StepError> {
    let config = &worker.state.config;
    let store = worker.state.store.as_ref();
    let now = worker.state.clock.now_millis();
    let claimed = runs::claim(
        store,
        &at.run_id,
        &at.step_id,
        allowance.lease(config, now),
        config.step_max_attempts,
        now,
    )
    .await
    .map_err(unavailable)?;
    match claimed {
        Some(step) => attempt(worker, message, step, allowance).await,
        None => not_claimed(worker, message, at).await,
    }
}

/// The claim was refused: the step is done, held by another worker, out of
/// attempts, or not a step at all.
async fn not_claimed(
    worker: &Worker,
    message: &Received,
    at: &StepMessage,
) -> Result<(), StepError> {
    let store = worker.state.store.as_ref();
    let Some(step) = runs::read_step(store, &at.run_id, &at.step_id)
        .await
        .map_err(unavailable)?
    else {
        return dead_letter(worker, message, "there is no such step").await;
    };
    let now = worker.state.clock.now_millis();
    let max = worker.state.config.step_max_attempts;
    match step.status {
        // A redelivery of a finished step only moves on.
        StepStatus::Succeeded => follow_up(worker, &step).await,
        // Its approvals re-enqueue it.
        StepStatus::Failed | StepStatus::Cancelled | StepStatus::AwaitingApproval => Ok(()),
        StepStatus::Waiting => {
            dead_letter(
                worker,
                message,
                "the step's dependencies have not succeeded",
            )
            .await
        }
        StepStatus::Running if step.lease_until_ms >= now => {
            // Another worker holds it: come back when its lease ends, to
            // take over if that worker died.
            let left = Duration::from_millis((step.lease_until_ms - now) as u64);
            retry(
                worker,
                message,
                left + Duration::from_millis(500),
                "another worker holds the step",
            )
            .await
        }
        StepStatus::Running | StepStatus::Ready if step.attempts >= max => {
            let reason = format!(
                "the step was started {} times without finishing (its worker stopped or timed out)",
                step.attempts
            );
            runs::fail(store, &step, None, &reason)
                .await
                .map_err(unavailable)?;
            dead_letter(worker, message, &reason).await
        }
        StepStatus::Running | StepStatus::Ready => {
            retry(
                worker,
                message,
                Duration::from_secs(1),
                "the step changed while it was claimed",
            )
            .await
        }
    }
}

/// One attempt of a claimed step.
async fn attempt(
    worker: &Worker,
    message: &Received,
    step: StepRecord,
    allowance: Allowance,
) -> Result<(), StepError> {
    let store = worker.state.store.as_ref();
    let lease = step.lease.clone().unwrap_or_default();
    if worker.crashes(Point::Claimed, &step.id) {
        return Err(StepError::Crashed(Point::Claimed));
    }
    let (result, call) = match call(worker, &step, &lease, allowance).await? {
        Ok(Looped::Final(done)) => *done,
        Ok(Looped::Paused) => return Ok(()),
        Err(failure) => {
            let (reason, permanent) = match failure {
                Failure::Permanent(r) => (r, true),
                Failure::Retryable(r) => (r, false),
            };
            tracing::warn!(attempt = step.attempts, permanent, error = %reason, "step attempt failed");
            if permanent || step.attempts >= worker.state.config.step_max_attempts {
                runs::fail(store, &step, Some(&lease), &reason)
                    .await
                    .map_err(unavailable)?;
                return dead_letter(worker, message, &reason).await;
            }
            runs::release(store, &step, &lease, &reason)
                .await
                .map_err(unavailable)?;
            return retry(worker, message, backoff(worker, step.attempts), &reason).await;
        }
    };

    let completed = match runs::complete(store, &step, &result).await {
        Ok(completed) => completed,
        Err(e) => {
            // The checkpoint may or may not have landed: the call is billed
            // on its own unless the step names it as counted (or its settle
            // intent is left to the sweeper), and the step is tried again.
            bill_attempt(worker, &call, &result).await;
            return Err(unavailable(e));
        }
    };
    match completed {
        Completed::Earlier => {
            // Another attempt stored its result first; this one's provider
            // cost is billed on its own.
            bill_attempt(worker, &call, &result).await;
            let Some(now) = runs::read_step(store, &step.run_id, &step.id)
                .await
                .map_err(unavailable)?
            else {
                return Ok(());
            };
            if now.status == StepStatus::Succeeded {
                return follow_up(worker, &now).await;
            }
            Ok(())
        }
        Completed::Now {
            ready,
            joins,
            run_finished,
        } => {
            tracing::info!(
                attempt = step.attempts,
                cost_usd = %result.cost_usd,
                input_tokens = result.usage.input_tokens,
                output_tokens = result.usage.output_tokens,
                run_finished,
                "step succeeded"
            );
            if worker.crashes(Point::Checkpointed, &step.id) {
                return Err(StepError::Crashed(Point::Checkpointed));
            }
            let mut next = ready;
            for join in step.successors.iter().filter(|s| joins.contains(&s.id)) {
                if runs::ready_join(store, &step.run_id, join)
                    .await
                    .map_err(unavailable)?
                {
                    next.push(join.id.clone());
                }
            }
            enqueue(worker, &step.run_id, &next).await?;
            if worker.crashes(Point::Enqueued, &step.id) {
                return Err(StepError::Crashed(Point::Enqueued));
            }
            if step.sink && !run_finished && step.run_sinks > 1 {
                runs::finish_if_done(store, &step.run_id)
                    .await
                    .map_err(unavailable)?;
            }
            Ok(())
        }
    }
}

/// Bills an attempt whose result its step's checkpoint does not count.
async fn bill_attempt(worker: &Worker, call: &Prepared, result: &StepResult) {
    if let Err(e) = chat::settle_detached(worker.state.store.as_ref(), call, result.usage).await {
        tracing::error!(error = %e, "could not bill a step attempt");
    }
}

/// The model calls of a claimed step (`super::tool_loop`), through the
/// model-call pipeline: its agent, its prompt, its budget reserved, the
/// answer priced. The outer error is a crash or an outage; the inner one
/// the attempt's failure.
async fn call(
    worker: &Worker,
    step: &StepRecord,
    lease: &str,
    allowance: Allowance,
) -> Result<Result<Looped, Failure>, StepError> {
    let state = &worker.state;
    let target =
        match Target::of_agent(state, &step.owner, &step.agent_id, "the step's agent").await {
            Ok(target) => target,
            Err(e) => return Ok(Err(domain_failure(e))),
        };
    let prompt = match step
        .template
        .render(|id| step.inputs.get(id).map(String::as_str))
    {
        Ok(prompt) => prompt,
        Err(e) => return Ok(Err(Failure::Permanent(e.to_string()))),
    };
    let held = Held {
        token: lease,
        allowance,
    };
    super::tool_loop::run(worker, step, held, target, prompt).await
}

/// After a redelivery found the step succeeded: enqueue what its first
/// delivery may not have (a successor still `ready`, or a join whose
/// dependencies are all done), and finish the run if it was the last.
/// Duplicates are harmless: only one claim of a step can win.
async fn follow_up(worker: &Worker, step: &StepRecord) -> Result<(), StepError> {
    let store = worker.state.store.as_ref();
    if !step.successors.is_empty() {
        let steps = runs::read_steps(store, &step.run_id)
            .await
            .map_err(unavailable)?;
        let by_id: BTreeMap<&str, &StepRecord> = steps.iter().map(|s| (s.id.as_str(), s)).collect();
        let mut next = Vec::new();
        for successor in &step.successors {
            let Some(found) = by_id.get(successor.id.as_str()) else {
                continue;
            };
            let join_complete = found.status == StepStatus::Waiting
                && found.deps_done >= successor.deps_total
                && runs::ready_join(store, &step.run_id, successor)
                    .await
                    .map_err(unavailable)?;
            if found.status == StepStatus::Ready || join_complete {
                next.push(successor.id.clone());
            }
        }
        enqueue(worker, &step.run_id, &next).await?;
    }
    if step.sink {
        runs::finish_if_done(store, &step.run_id)
            .await
            .map_err(unavailable)?;
    }
    Ok(())
}

async fn enqueue(worker: &Worker, run_id: &str, steps: &[String]) -> Result<(), StepError> {
    super::enqueue(
        worker.state.queue.as_ref(),
        run_id,
        steps.iter().map(String::as_str),
    )
    .await
    .map_err(unavailable)
}

/// The pause before the retry after attempt `attempts`: the configured
/// backoff, doubled per attempt, at most SQS's longest delay.
fn backoff(worker: &Worker, attempts: u32) -> Duration {
    let base = worker.state.config.step_backoff;
    base.saturating_mul(1 << attempts.saturating_sub(1).min(16))
        .min(MAX_DELAY)
}

/// Leaves the message to come back after `after`.
async fn retry(
    worker: &Worker,
    message: &Received,
    after: Duration,
    reason: &str,
) -> Result<(), StepError> {
    if let Err(e) = worker
        .state
        .queue
        .change_visibility(QueueName::Steps, &message.receipt, after)
        .await
    {
        // It still comes back, after the queue's own visibility timeout.
        tracing::warn!(error = %e, "could not set the retry delay");
    }
    Err(StepError::Retry {
        reason: reason.to_owned(),
        after,
    })
}

/// Moves the message to the dead-letter queue (then it may be deleted).
async fn dead_letter(worker: &Worker, message: &Received, reason: &str) -> Result<(), StepError> {
    let queue = worker.state.queue.as_ref();
    crate::batch::dead_letter(queue, QueueName::StepsDeadLetter, message, reason)
        .await
        .map_err(unavailable)
}
