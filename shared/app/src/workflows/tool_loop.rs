//! A workflow step's model calls. A step whose agent has server tools runs
//! the agent loop in the worker: model call, the reply's server tools
//! (concurrently), their results back to the model, up to the agent's
//! `max_tool_rounds`; the step's output is the last reply's text (a step
//! without server tools makes one call, offering no tool). Every reply that called tools
//! and every result is journaled (`lambent_store::step_journal`) as it
//! comes, the reply billed with it, so an attempt taken up after a crash
//! goes on where the journal ends. A call that waits for a person's
//! approval pauses the step (its run shows `waiting`) until
//! `POST /v1/runs/{id}/approvals` decides it.

use std::time::Duration;

use lambent_core::chat::{Role, ToolCall, ToolResult, Turn};
use lambent_core::workflow::MAX_OUTPUT_BYTES;
use lambent_llm::{ToolAnswer, Usage};
use lambent_ports::StoreError;
use lambent_store::runs::{StepRecord, StepResult};
use lambent_store::step_journal::{self, Round};
use lambent_store::turns::Pending;

use super::failure::{cut, domain_failure, provider_failure, unavailable, Failure, StepError};
use super::{Allowance, Point, Worker};
use crate::chat::{self, Prepared, Record, Target, Unanswered};
use crate::turns::tools::{decide, Decision, Next, OtherCalls, ToolRuns};

/// How the loop of an attempt ended.
pub(super) enum Looped {
    /// The last reply: the step's result, to checkpoint.
    Final(Box<(StepResult, Prepared)>),
    /// It waits for approvals; the message is done with.
    Paused,
}

/// What the attempt holds its step by: the lease's token, and how long each
/// renewal of it and each model call may run.
#[derive(Clone, Copy)]
pub(super) struct Held<'a> {
    pub token: &'a str,
    pub allowance: Allowance,
}

/// The results of `calls`, in their order.
fn results_turn(
    calls: &[ToolCall],
    results: &std::collections::HashMap<String, ToolResult>,
) -> Turn {
    Turn::results(calls.iter().filter_map(|c| results.get(&c.id).cloned()))
}

pub(super) async fn run(
    worker: &Worker,
    step: &StepRecord,
    held: Held<'_>,
    mut target: Target,
    prompt: String,
) -> Result<Result<Looped, Failure>, StepError> {
    let state = &worker.state;
    let store = state.store.as_ref();
    // Only server tools: nobody is there to answer a client tool.
    target.keep_server_tools();
    let journal = if target.server_tools.is_empty() {
        Default::default()
    } else {
        step_journal::read(store, &step.run_id, &step.id)
            .await
            .map_err(unavailable)?
    };
    let mut results = journal.results;
    let approvals = journal.approvals;
    let mut rounds = journal.rounds;
    let mut turns = vec![Turn::text(Role::User, prompt)];
    for (i, round) in rounds.iter().enumerate() {
        turns.push(Turn::reply(&round.text, &round.tool_calls));
        if i + 1 < rounds.len() {
            turns.push(results_turn(&round.tool_calls, &results));
        }
    }
    loop {
        if let Some(last) = rounds.last().cloned() {
            let open: Vec<ToolCall> = last
                .tool_calls
                .iter()
                .filter(|c| !results.contains_key(&c.id))
                .cloned()
                .collect();
            let mut run = Vec::new();
            let mut pending = Vec::new();
            for call in open {
                let approval = approvals.get(&call.id);
                match decide(call, &target.server_tools, approval, OtherCalls::Nobody) {
                    Decision::Run(job) => run.push(job),
                    Decision::Answered(call, answer) => {
                        record(worker, step, &call, answer, &mut results).await?
                    }
                    Decision::Waits(call, needs) => pending.push(Pending {
                        tool_call_id: call.id,
                        name: call.name,
                        input: call.input,
                        needs,
                        message_id: step.id.clone(),
                    }),
                }
            }
            if !pending.is_empty() {
                step_journal::pause(store, step, held.token, &pending)
                    .await
                    .map_err(unavailable)?;
                tracing::info!(waiting = pending.len(), "step waits for approvals");
                return Ok(Ok(Looped::Paused));
            }
            let mut never = tokio::sync::watch::channel(false).1;
            let mut runs = ToolRuns::start(
                &worker.llm,
                &state.metrics,
                None,
                Some(&step.run_id),
                run,
                state.config.tool_concurrency,
            );
            while let Next::Answer(call, answer) = runs.next(&mut never).await {
                record(worker, step, &call, answer, &mut results).await?;
            }
            turns.push(results_turn(&last.tool_calls, &results));
        }

        // The next model call.
        let record = Record::Step {
            run_id: step.run_id.clone(),
            step_id: step.id.clone(),
        };
        let prepared = chat::prepare_step(
            state,
            &step.owner,
            target.clone(),
            turns.clone(),
            step.monthly_budget_usd,
            record,
        )
        .await;
        let call = match prepared {
            Ok(call) => call,
            Err(e) => return Ok(Err(domain_failure(e))),
        };
        // The call must end while the lease holds (or another worker takes
        // over) and before the invocation does.
        let limit = held
            .allowance
            .model_call(&state.config, state.clock.now_millis());
        let completion = match chat::answer(state, &worker.llm, &call, limit).await {
            Ok(completion) => completion,
            Err(Unanswered::Provider(e)) => return Ok(Err(provider_failure(e))),
            Err(Unanswered::TimedOut(limit)) => {
                return Ok(Err(Failure::Retryable(format!(
                    "the model call took longer than {} ms",
                    limit.as_millis()
                ))))
            }
        };
        if worker.crashes(Point::Answered, &step.id) {
            return Err(StepError::Crashed(Point::Answered));
        }
        let tool_rounds = rounds.len() as u32;
        if completion.tool_calls.is_empty() || tool_rounds >= target.max_tool_rounds {
            let result = result(&call, completion.text, completion.usage);
            return Ok(Ok(Looped::Final(Box::new((result, call)))));
        }
        let round = Round {
            text: completion.text,
            tool_calls: completion.tool_calls,
        };
        journal_round(
            worker,
            step,
            held,
            rounds.len(),
            &round,
            &call,
            completion.usage,
        )
        .await?;
        turns.push(Turn::reply(&round.text, &round.tool_calls));
        rounds.push(round);
    }
}

/// The step's result from its last reply.
fn result(call: &Prepared, text: String, usage: Usage) -> StepResult {
    let (output, truncated) = cut(text, MAX_OUTPUT_BYTES);
    let bill = call.bill();
    let charge = chat::charge(&bill, &usage);
    let released = chat::Bill {
        reservation: bill.reservation.released(),
        ..bill.clone()
    };
    StepResult {
        output,
        truncated,
        model: call.model.clone(),
        usage,
        cost_usd: charge.cost_usd,
        billing: charge.ops,
        billing_released: chat::charge(&released, &usage).ops,
        call_id: bill.call_id,
    }
}

/// Journals a tool's answer.
async fn record(
    worker: &Worker,
    step: &StepRecord,
    call: &ToolCall,
    answer: ToolAnswer,
    results: &mut std::collections::HashMap<String, ToolResult>,
) -> Result<(), StepError> {
    let result = ToolResult {
        tool_call_id: call.id.clone(),
        content: answer.content,
        is_error: answer.is_error,
    };
    step_journal::record_result(worker.state.store.as_ref(), &step.run_id, &step.id, &result)
        .await
        .map_err(unavailable)?;
    results.insert(call.id.clone(), result);
    Ok(())
}

/// Journals a reply that called tools, billed in the same transaction.
async fn journal_round(
    worker: &Worker,
    step: &StepRecord,
    held: Held<'_>,
    n: usize,
    round: &Round,
    call: &Prepared,
    usage: Usage,
) -> Result<(), StepError> {
    let state = &worker.state;
    let bill = call.bill();
    let now = state.clock.now_millis();
    let lease_until = now + held.allowance.lease(&state.config, now).as_millis() as i64;
    let mut bill_now = bill.clone();
    for _ in 0..2 {
        let charge = chat::charge(&bill_now, &usage);
        let ops = step_journal::round_ops(
            step,
            held.token,
            n,
            round,
            &usage,
            charge.cost_usd,
            lease_until,
            charge.ops,
        )
        .map_err(unavailable)?;
        let last = ops.len() - 1;
        match lambent_store::transact_retrying(state.store.as_ref(), ops).await {
            Ok(()) => return Ok(()),
            Err(StoreError::TransactionCancelled { failed })
                if failed == [last] && bill_now.reservation.holds() =>
            {
                // The reservation was released meanwhile: counted without.
                bill_now.reservation = bill_now.reservation.released();
            }
            Err(StoreError::TransactionCancelled { .. }) => {
                // Another attempt journaled this round, or took the step
                // over: this call's cost is billed on its own.
                if let Err(e) = chat::settle_detached(state.store.as_ref(), call, usage).await {
                    tracing::error!(error = %e, "could not bill a step round");
                }
                return Err(StepError::Retry {
                    reason: "another attempt of the step went on".into(),
                    after: Duration::from_secs(1),
                });
            }
            Err(e) => return Err(unavailable(e)),
        }
    }
    Err(unavailable("a step round could not be journaled"))
}
