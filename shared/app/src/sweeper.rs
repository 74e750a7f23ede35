//! The sweeper: what no request finishes by itself after a fault. One pass
//! (a scheduled Lambda every minute on AWS, a periodic task in `lambent
//! serve`) reads the oldest entries of the call ledger and of the index of
//! unfinished runs, bounded per pass, and
//!
//! - finishes every settle whose intent is written but whose transaction
//!   never landed (an outage, a timeout, a crash after the outbox write);
//! - releases the reservation of a call that never reported an outcome
//!   (its process died) once it is older than any call can run
//!   (`LAMBENT_SWEEP_STALE_SECS`), and marks its session turn with a
//!   `failed` reply (`stop_reason: "interrupted"`);
//! - re-enqueues a workflow step that stayed `ready` (or `running` on an
//!   expired lease) across two looks at least that far apart: its message
//!   was lost or dead-lettered;
//! - fails a run whose stranded step has used all its attempts;
//! - forgets runs that have finished;
//! - folds the calls' pending usage entries into the aggregates
//!   ([`lambent_store::usage::fold`]; `lambent serve` also folds every
//!   `LAMBENT_FOLD_EVERY_SECS` on its own).
//!
//! Every action is a conditional write of the same protocol the requests
//! use, so a pass is idempotent and may run beside live traffic or another
//! pass.

use std::time::Duration;

use lambent_core::error::Result;
use lambent_ports::queue::QueueName;
use lambent_store::ledger::{self, Intent};
use lambent_store::runs::{self, RunStatus, StepMessage, StepStatus};
use lambent_store::turns::{self, TurnStatus};
use lambent_store::usage;

use crate::chat;
use crate::state::State;

/// Entries of one ledger shard (or runs of one index shard) a pass reads
/// at most: the work of a pass stays bounded, however much is stranded.
const MAX_PER_SHARD: usize = 200;
const PAGE: usize = 50;
/// A settle intent younger than this may be a settle in progress: left for
/// the next pass.
const INTENT_GRACE: Duration = Duration::from_secs(10);
/// How long a pass folds pending usage at most, in chunks: well within the
/// sweeper function's 60 s, whatever has piled up; what is left waits for
/// the next pass (reports read it meanwhile).
const FOLD_BUDGET: Duration = Duration::from_secs(20);
const FOLD_CHUNK: usize = 2_000;

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Swept {
    /// Settles finished from their intent.
    pub settled: u32,
    /// Reservations of abandoned calls released.
    pub released: u32,
    /// Workflow steps enqueued again.
    pub requeued: u32,
    /// Runs failed because a step used up its attempts.
    pub failed_runs: u32,
    /// Finished runs taken out of the index.
    pub forgotten_runs: u32,
    /// Agent turns whose runner died, handed to the worker.
    pub requeued_turns: u32,
    /// Calls' pending usage entries folded into the aggregates.
    pub folded: u32,
    /// Actions that failed (each is tried again by the next pass).
    pub errors: u32,
    /// The pass stopped at one of its bounds (entries per shard, the fold's
    /// time) with work left for the next pass.
    pub behind: bool,
}

/// One pass.
pub async fn sweep(state: &State) -> Swept {
    let mut swept = Swept::default();
    for shard in 0..ledger::SHARDS {
        if let Err(e) = sweep_ledger(state, shard, &mut swept).await {
            tracing::warn!(error = %e, shard, "sweeping the call ledger failed");
            swept.errors += 1;
        }
    }
    for shard in 0..runs::ACTIVE_SHARDS {
        if let Err(e) = sweep_runs(state, shard, &mut swept).await {
            tracing::warn!(error = %e, shard, "sweeping unfinished runs failed");
            swept.errors += 1;
        }
    }
    for shard in 0..turns::ACTIVE_SHARDS {
        if let Err(e) = sweep_turns(state, shard, &mut swept).await {
            tracing::warn!(error = %e, shard, "sweeping unfinished turns failed");
            swept.errors += 1;
        }
    }
    fold_usage(state, &mut swept).await;
    if swept != Swept::default() {
        tracing::info!(?swept, "sweeper pass");
    }
    state.metrics.sweep_pass(swept.behind);
    swept
}

/// Folds the pending usage entries into the aggregates, in chunks for at
/// most [`FOLD_BUDGET`], counted in `swept` (a failure is tried again by the
/// next pass; a whole chunk at the end of the time leaves it behind).
async fn fold_usage(state: &State, swept: &mut Swept) {
    let started = std::time::Instant::now();
    loop {
        match usage::fold(state.store.as_ref(), FOLD_CHUNK).await {
            Ok(n) => {
                swept.folded += n as u32;
                if n < FOLD_CHUNK {
                    return;
                }
                if started.elapsed() >= FOLD_BUDGET {
                    swept.behind = true;
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "folding pending usage failed");
                swept.errors += 1;
                return;
            }
        }
    }
}

/// Folds pending usage every `every` until `stop` turns true: `lambent
/// serve`'s folder, between its sweeper passes.
pub async fn fold_every(state: State, every: Duration, stop: tokio::sync::watch::Receiver<bool>) {
    repeat(every, stop, || async {
        fold_usage(&state, &mut Swept::default()).await;
    })
    .await
}

/// Hands to the worker each unfinished turn whose runner's lease ran out a
/// lease ago (its runner died, or its queue message was lost); forgets
/// turns that ended or are gone.
async fn sweep_turns(state: &State, shard: u32, swept: &mut Swept) -> Result<()> {
    let store = state.store.as_ref();
    let now = state.clock.now_millis();
    let lease = state.config.turn_lease.as_millis() as i64;
    let mut after = None;
    let mut read = 0;
    while read < MAX_PER_SHARD {
        let (active, next) = turns::active_turns(store, shard, PAGE, after).await?;
        read += active.len();
        for entry in active {
            match turns::get(store, &entry.session_id, &entry.turn_id).await? {
                Some(turn) if turn.status == TurnStatus::Running => {
                    if turn.lease_until_ms + lease < now {
                        crate::turns::background::hand_over(
                            state,
                            &entry.owner,
                            &entry.session_id,
                            &entry.turn_id,
                        )
                        .await;
                        swept.requeued_turns += 1;
                    }
                }
                _ => turns::forget_active(store, &entry.turn_id).await?,
            }
        }
        match next {
            Some(next) => after = Some(next),
            None => return Ok(()),
        }
    }
    // Stopped at the bound with pages left.
    swept.behind = true;
    Ok(())
}

async fn sweep_ledger(state: &State, shard: u32, swept: &mut Swept) -> Result<()> {
    let store = state.store.as_ref();
    let now = state.clock.now_millis();
    let stale = state.config.sweep_stale.as_millis() as i64;
    let mut after = None;
    let mut read = 0;
    while read < MAX_PER_SHARD {
        let (entries, next) = ledger::oldest(store, shard, PAGE, after).await?;
        read += entries.len();
        for entry in entries {
            let age = now - entry.written_at_ms;
            let call_id = entry.reservation.call_id.clone();
            let done = match (entry.bill, entry.outcome) {
                (Some(bill), Some(outcome)) if age >= INTENT_GRACE.as_millis() as i64 => {
                    chat::finish_intent(store, &Intent { bill, outcome })
                        .await
                        .map(|_| &mut swept.settled)
                }
                (bill, None) if age >= stale => {
                    chat::abandon(store, &entry.reservation, bill.as_deref())
                        .await
                        .map(|_| &mut swept.released)
                }
                _ => continue,
            };
            match done {
                Ok(counter) => *counter += 1,
                Err(e) => {
                    tracing::warn!(error = %e, %call_id, "could not sweep a ledger entry");
                    swept.errors += 1;
                }
            }
        }
        match next {
            Some(next) => after = Some(next),
            None => return Ok(()),
        }
    }
    // Stopped at the bound with pages left.
    swept.behind = true;
    Ok(())
}

async fn sweep_runs(state: &State, shard: u32, swept: &mut Swept) -> Result<()> {
    let store = state.store.as_ref();
    let mut after = None;
    let mut read = 0;
    while read < MAX_PER_SHARD {
        let (active, next) = runs::active_runs(store, shard, PAGE, after).await?;
        read += active.len();
        for run in active {
            if let Err(e) = sweep_run(state, &run, swept).await {
                tracing::warn!(error = %e, run_id = %run.run_id, "could not sweep a run");
                swept.errors += 1;
            }
        }
        match next {
            Some(next) => after = Some(next),
            None => return Ok(()),
        }
    }
    // Stopped at the bound with pages left.
    swept.behind = true;
    Ok(())
}

async fn sweep_run(state: &State, run: &runs::ActiveRun, swept: &mut Swept) -> Result<()> {
    let store = state.store.as_ref();
    let steps = match runs::status_and_steps(store, &run.run_id).await? {
        Some((RunStatus::Pending | RunStatus::Running, steps)) => steps,
        // Finished or gone.
        _ => {
            runs::forget_active(store, &run.run_id).await?;
            swept.forgotten_runs += 1;
            return Ok(());
        }
    };
    let now = state.clock.now_millis();
    let stranded: Vec<_> = steps
        .iter()
        .filter(|s| {
            s.status == StepStatus::Ready
                || (s.status == StepStatus::Running && s.lease_until_ms < now)
        })
        .collect();
    let seen: Vec<String> = stranded
        .iter()
        .map(|s| format!("{}:{}", s.id, s.attempts))
        .collect();
    if seen != run.stranded {
        // First look at this state: come back once it has lasted.
        return runs::note_stranded(store, &run.run_id, &seen, now).await;
    }
    if seen.is_empty() || now - run.since_ms < state.config.sweep_stale.as_millis() as i64 {
        return Ok(());
    }
    for step in stranded {
        if step.attempts >= state.config.step_max_attempts {
            let reason = format!(
                "the step was started {} times without finishing",
                step.attempts
            );
            if runs::fail(store, step, None, &reason).await? {
                swept.failed_runs += 1;
            }
            continue;
        }
        let message = StepMessage {
            run_id: step.run_id.clone(),
            step_id: step.id.clone(),
        };
        state
            .queue
            .send(QueueName::Steps, &message.body(), Duration::ZERO)
            .await?;
        swept.requeued += 1;
    }
    // Looked at again only after another stale period.
    runs::note_stranded(store, &run.run_id, &seen, now).await
}

/// Sweeps every `every` until `stop` turns true: `lambent serve`'s sweeper.
pub async fn run_every(state: State, every: Duration, stop: tokio::sync::watch::Receiver<bool>) {
    repeat(every, stop, || async {
        sweep(&state).await;
    })
    .await
}

/// Runs `pass` every `every` until `stop` turns true.
async fn repeat<F, Fut>(every: Duration, mut stop: tokio::sync::watch::Receiver<bool>, mut pass: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        pass().await;
    }
}
