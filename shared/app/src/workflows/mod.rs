//! Workflow orchestration: the step protocol that the worker function runs
//! on the steps queue (an SQS event source with `ReportBatchItemFailures` in
//! AWS; the queue port in `lambent serve`), each step to completion at most
//! once in effect, and the start of runs from trigger events ([`trigger`]).
//!
//! The same queue carries agent turns for the worker to run
//! (`{"turn": {...}}`, see [`crate::turns::background`]). A step message
//! `{"run_id", "step_id"}` is handled in [`step`]:
//!
//! 1. **claim**: one conditional write takes the step (`ready`, or
//!    `running` under a lease that ran out) and returns all it needs;
//! 2. the model call, with the step's budget reserved first;
//! 3. **checkpoint**: one transaction stores the output and cost on the
//!    step, counts them in the run, the month and the usage (its pending
//!    entry, folded into the aggregates later), and
//!    passes the output to the successors, guarded by the step's move to
//!    `succeeded`: a redelivery finds it done and only moves on;
//! 4. **enqueue** the successors that are ready, each once;
//! 5. the run succeeds with its last step.
//!
//! A failure is retried with backoff (the message's visibility timeout);
//! after the last attempt, or at once when retrying cannot help (a deleted
//! agent, a refused key, a budget), the step and its run fail and the
//! message moves to the dead-letter queue. So does a message that is not a
//! step message at all.

mod allowance;
pub mod approvals;
mod failure;
mod start;
mod step;
mod tool_loop;
pub mod trigger;

pub use start::{enqueue, start_run, Started};

use std::sync::Arc;

use crate::state::{StartError, State};
use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use lambent_llm::LlmClient;
use lambent_ports::queue::Received;
use tracing::Instrument;

pub use allowance::Allowance;
pub use failure::StepError;

/// The points of a step where a test may stop the worker as if its process
/// died there: nothing after it happens, and the message is not deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    /// The step is claimed; the model was not called.
    Claimed,
    /// The model answered; nothing is stored.
    Answered,
    /// Output and cost are stored; no successor is enqueued.
    Checkpointed,
    /// The successors are enqueued; the message is not deleted.
    Enqueued,
}

/// Decides, at each [`Point`] of a step, whether the worker stops there.
pub type CrashAt = Arc<dyn Fn(Point, &str) -> bool + Send + Sync>;

/// What the worker keeps across messages: the state, the provider HTTP
/// client (built once per cold start) and, in tests (the `crash-points`
/// feature, never in the shipped binary), where to crash.
#[derive(Clone)]
pub struct Worker {
    pub state: State,
    pub llm: LlmClient,
    #[cfg(feature = "crash-points")]
    crash_at: Option<CrashAt>,
}

impl Worker {
    pub fn new(state: State) -> Result<Worker, StartError> {
        let llm =
            LlmClient::new(state.config.llm_client()).map_err(|e| StartError::Dependency {
                name: "provider HTTP client",
                detail: e.to_string(),
            })?;
        Ok(Worker {
            state,
            llm,
            #[cfg(feature = "crash-points")]
            crash_at: None,
        })
    }

    /// A worker that stops where `crash_at(point, step_id)` says, to test
    /// recovery from a crash at every point of a step.
    #[cfg(feature = "crash-points")]
    pub fn crashing(mut self, crash_at: CrashAt) -> Worker {
        self.crash_at = Some(crash_at);
        self
    }

    #[cfg(feature = "crash-points")]
    fn crashes(&self, point: Point, step_id: &str) -> bool {
        self.crash_at.as_ref().is_some_and(|f| f(point, step_id))
    }

    #[cfg(not(feature = "crash-points"))]
    fn crashes(&self, _: Point, _: &str) -> bool {
        false
    }

    /// Handles one step message. `Ok` means it may be deleted; an error
    /// leaves it on the queue to come back after its visibility timeout
    /// (which a retry has set to its backoff).
    pub async fn handle(&self, message: &Received) -> Result<(), StepError> {
        self.handle_within(message, Allowance::configured()).await
    }

    /// Handles one step message within `allowance` (a Lambda invocation's
    /// deadline).
    pub async fn handle_within(
        &self,
        message: &Received,
        allowance: Allowance,
    ) -> Result<(), StepError> {
        if let Some(turn) = crate::turns::TurnMessage::parse(&message.body) {
            let span = tracing::info_span!("turn", turn_id = %turn.turn_id);
            return crate::turns::background::handle(&self.state, &self.llm, &turn)
                .instrument(span)
                .await
                .map_err(|e| StepError::Unavailable(e.to_string()));
        }
        step::handle(self, message, allowance).await
    }

    /// Handles an SQS batch, each message at once, reporting the failed
    /// ones by ID.
    pub async fn handle_batch(&self, event: SqsEvent) -> SqsBatchResponse {
        self.handle_batch_within(event, Allowance::configured())
            .await
    }

    /// Handles an SQS batch as [`Worker::handle_batch`] does, within
    /// `allowance` (the Lambda invocation's deadline).
    pub async fn handle_batch_within(
        &self,
        event: SqsEvent,
        allowance: Allowance,
    ) -> SqsBatchResponse {
        crate::batch::sqs_batch(
            event,
            |m| async move { self.handle_within(&m, allowance).await },
        )
        .await
    }
}
