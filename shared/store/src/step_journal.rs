//! The journal of a workflow step that runs the agent loop (its agent has
//! server tools): each model reply that called tools, and each tool's
//! result, in the run's partition, so an attempt of the step taken up after
//! a crash (or a redelivery) goes on where the last one stopped: a model
//! call whose reply is journaled is not made again, a tool whose result is
//! journaled is not called again. Keys, all under `RUN#<run>`:
//!
//! - `J#<step>#ROUND#<nn>`: a reply that called tools (text, calls, usage,
//!   cost); written create-only in the transaction that bills it and adds
//!   it to the step's and the run's totals, so it counts once;
//! - `J#<step>#RESULT#<tool call id>`: a tool's result, create-only;
//! - `J#<step>#APPROVAL#<tool call id>`: a person's decision on a call that
//!   waits for approval, written by `POST /v1/runs/{id}/approvals`.
//!
//! The step's last reply (no tool calls) is its checkpoint, as for any step
//! ([`super::runs::complete`]).

use std::collections::HashMap;

use lambent_core::chat::{ToolCall, ToolResult, Usage};
use lambent_core::error::{Error, Result};
use lambent_ports::{Condition, Item, ItemStore, Key, Query, StoreError, TxOp, Update};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::runs::{self, StepStatus};
use super::turns::{Approval, Pending};
use super::{json_attr, json_text};

fn prefix(step_id: &str) -> String {
    format!("J#{step_id}#")
}

fn round_key(run_id: &str, step_id: &str, n: usize) -> Key {
    Key::new(runs::partition(run_id), format!("J#{step_id}#ROUND#{n:02}"))
}

fn result_key(run_id: &str, step_id: &str, call_id: &str) -> Key {
    Key::new(
        runs::partition(run_id),
        format!("J#{step_id}#RESULT#{call_id}"),
    )
}

fn approval_key(run_id: &str, step_id: &str, call_id: &str) -> Key {
    Key::new(
        runs::partition(run_id),
        format!("J#{step_id}#APPROVAL#{call_id}"),
    )
}

/// A journaled reply that called tools.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Round {
    pub text: String,
    pub tool_calls: Vec<ToolCall>,
}

/// What a step's journal holds.
#[derive(Debug, Clone, Default)]
pub struct Journal {
    /// In order.
    pub rounds: Vec<Round>,
    pub results: HashMap<String, ToolResult>,
    pub approvals: HashMap<String, Approval>,
}

/// The step's journal: one query.
pub async fn read(store: &dyn ItemStore, run_id: &str, step_id: &str) -> Result<Journal> {
    let mut journal = Journal::default();
    let mut after = None;
    loop {
        let page = store
            .query(
                Query::partition(runs::partition(run_id))
                    .prefix(prefix(step_id))
                    .limit(lambent_ports::store::MAX_PAGE_SIZE)
                    .after(after),
            )
            .await?;
        for item in &page.items {
            let rest = &item.key.sk[prefix(step_id).len()..];
            if rest.starts_with("ROUND#") {
                journal.rounds.push(json_attr(item, "round")?);
            } else if let Some(call_id) = rest.strip_prefix("RESULT#") {
                journal
                    .results
                    .insert(call_id.to_owned(), json_attr(item, "result")?);
            } else if let Some(call_id) = rest.strip_prefix("APPROVAL#") {
                journal
                    .approvals
                    .insert(call_id.to_owned(), json_attr(item, "approval")?);
            }
        }
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(journal),
        }
    }
}

/// The writes that journal reply `n` of the step (it called tools) and
/// count it: `billing` (from the model-call pipeline), the step's and the
/// run's totals, and the step's lease extended to `lease_until_ms` (the
/// attempt goes on), only while `lease` holds the step. Create-only: the
/// first operation fails when another attempt journaled this round first.
#[allow(clippy::too_many_arguments)]
pub fn round_ops(
    step: &runs::StepRecord,
    lease: &str,
    n: usize,
    round: &Round,
    usage: &Usage,
    cost_usd: Decimal,
    lease_until_ms: i64,
    billing: Vec<TxOp>,
) -> Result<Vec<TxOp>> {
    let add = |update: Update| runs::add_spend(update, usage, cost_usd);
    let mut ops = vec![
        TxOp::Put {
            item: Item::new(round_key(&step.run_id, &step.id, n))
                .with("round", json_text(round)?)
                .with("cost_usd", cost_usd),
            condition: Some(Condition::NotExists),
        },
        TxOp::Update {
            key: runs::step_key(&step.run_id, &step.id),
            update: add(Update::new()).set("lease_until", lease_until_ms),
            condition: Some(Condition::And(vec![
                Condition::eq("status", StepStatus::Running.as_str()),
                Condition::eq("lease", lease),
            ])),
        },
        TxOp::Update {
            key: runs::header_key(&step.run_id),
            update: add(Update::new()),
            condition: None,
        },
    ];
    ops.extend(billing);
    Ok(ops)
}

/// Journals a tool's result (once).
pub async fn record_result(
    store: &dyn ItemStore,
    run_id: &str,
    step_id: &str,
    result: &ToolResult,
) -> Result<()> {
    let item = Item::new(result_key(run_id, step_id, &result.tool_call_id))
        .with("result", json_text(result)?);
    match store.put(item, Some(Condition::NotExists)).await {
        Ok(()) => Ok(()),
        Err(e) if e.is_condition_failure() => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Pauses a running step whose calls wait for approval: `awaiting_approval`
/// with what it waits for, no lease, no attempt spent; the run shows
/// `waiting`. `false` when `lease` no longer holds the step.
pub async fn pause(
    store: &dyn ItemStore,
    step: &runs::StepRecord,
    lease: &str,
    pending: &[Pending],
) -> Result<bool> {
    let result = store
        .update(
            &runs::step_key(&step.run_id, &step.id),
            Update::new()
                .set("status", StepStatus::AwaitingApproval.as_str())
                .set("pending", json_text(&pending)?)
                .add("attempts", -Decimal::ONE)
                .remove("lease")
                .remove("lease_until"),
            Some(Condition::And(vec![
                Condition::eq("status", StepStatus::Running.as_str()),
                Condition::eq("lease", lease),
            ])),
        )
        .await;
    match result {
        Ok(_) => Ok(true),
        Err(e) if e.is_condition_failure() => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Journals the decisions on the calls the step waits for and makes it
/// `ready` again (to be enqueued by the caller), only while it waits: a
/// second answer is a 409.
pub async fn approve(
    store: &dyn ItemStore,
    run_id: &str,
    step_id: &str,
    approvals: &[Approval],
) -> Result<()> {
    let mut ops = vec![TxOp::Update {
        key: runs::step_key(run_id, step_id),
        update: Update::new()
            .set("status", StepStatus::Ready.as_str())
            .remove("pending"),
        condition: Some(Condition::eq(
            "status",
            StepStatus::AwaitingApproval.as_str(),
        )),
    }];
    for approval in approvals {
        ops.push(TxOp::Put {
            item: Item::new(approval_key(run_id, step_id, &approval.tool_call_id))
                .with("approval", json_text(approval)?),
            condition: Some(Condition::NotExists),
        });
    }
    match store.transact(ops).await {
        Ok(()) => Ok(()),
        Err(StoreError::TransactionCancelled { .. }) => Err(Error::Conflict(
            "these calls were decided already, or the run moved on".into(),
        )),
        Err(e) => Err(e.into()),
    }
}
