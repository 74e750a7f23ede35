//! Workflow runs and their steps, in the run's own partition:
//!
//! - `RUN#<id>/RUN`: the run: owner, status, input, totals, and
//!   `sinks_left`, the steps without successors still to finish;
//! - `RUN#<id>/STEP#<step>`: one step: its prompt (input filled in), its
//!   successors, `deps_done` of `deps_total`, status, attempts, lease, and
//!   once done its output, usage and cost. A finished step copies its output
//!   into each successor that uses it (`in_<step>`), so a claim returns all
//!   a step needs in one read.
//!
//! The owner's partition holds `RUN#<id>` (which owns the run's partition,
//! see [`super::cascade`]) and `RUNKEY#<workflow>#<key>`, the create-only
//! record that makes an idempotency key start one run.
//!
//! A step moves `waiting` -> `ready` -> `running` -> `succeeded`, or to
//! `failed`, or to `cancelled` when its run stops first. Every move is a
//! conditional write, so a redelivered or duplicated message can never
//! repeat one: see [`claim`] and [`complete`].

use lambent_core::ids::{RunId, TypedId};
use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::join_all;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::sessions::TokenCounts;
use super::{cascade, count, json_attr, opt_decimal, opt_text, text, users};
use lambent_core::chat::Usage;
use lambent_core::error::{Error, Result};
use lambent_core::ids;
use lambent_core::workflow::template::Template;
use lambent_ports::{Cmp, Condition, Item, ItemStore, Key, Query, StoreError, TxOp, Update, Value};

use super::workflows::Workflow;

pub const ID_PREFIX: &str = <RunId as TypedId>::PREFIX;
/// Longest idempotency key.
pub const MAX_IDEMPOTENCY_KEY: usize = 128;

pub fn partition(run_id: &str) -> String {
    format!("RUN#{run_id}")
}

pub(crate) fn header_key(run_id: &str) -> Key {
    Key::new(partition(run_id), "RUN")
}

pub fn step_key(run_id: &str, step_id: &str) -> Key {
    Key::new(partition(run_id), format!("STEP#{step_id}"))
}

fn pointer_key(owner: &str, run_id: &str) -> Key {
    Key::new(users::partition(owner), format!("RUN#{run_id}"))
}

fn idempotency_record(owner: &str, workflow_id: &str, key: &str) -> Key {
    Key::new(
        users::partition(owner),
        format!("RUNKEY#{workflow_id}#{key}"),
    )
}

/// Partitions of the index of unfinished runs.
pub const ACTIVE_SHARDS: u32 = 8;

/// A run's entry in the index of unfinished runs, `RUNS#<shard>/RUN#<id>`:
/// written with the run, read by the sweeper (which removes it once the
/// run has finished), so a stranded run is found without a scan.
fn active_key(run_id: &str) -> Key {
    let shard = run_id
        .bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)))
        % ACTIVE_SHARDS;
    Key::new(format!("RUNS#{shard}"), format!("RUN#{run_id}"))
}

/// An unfinished run as the sweeper sees it: what it found stranded at its
/// last look (`step:attempts` of each step that was ready, or running on
/// an expired lease) and since when.
#[derive(Debug, Clone)]
pub struct ActiveRun {
    pub run_id: String,
    pub stranded: Vec<String>,
    pub since_ms: i64,
}

/// A page of the index of unfinished runs, oldest first.
pub async fn active_runs(
    store: &dyn ItemStore,
    shard: u32,
    limit: usize,
    after: Option<lambent_ports::StoreCursor>,
) -> Result<(Vec<ActiveRun>, Option<lambent_ports::StoreCursor>)> {
    let page = store
        .query(
            Query::partition(format!("RUNS#{shard}"))
                .prefix("RUN#")
                .limit(limit)
                .after(after),
        )
        .await?;
    let mut runs = Vec::with_capacity(page.items.len());
    for item in &page.items {
        runs.push(ActiveRun {
            run_id: super::id_after(item, "RUN#")?.to_owned(),
            stranded: super::opt_json_attr(item, "stranded")?.unwrap_or_default(),
            since_ms: super::whole(item, "since").unwrap_or(0),
        });
    }
    Ok((runs, page.next))
}

/// Records what the sweeper found stranded in a run, and since when.
pub async fn note_stranded(
    store: &dyn ItemStore,
    run_id: &str,
    stranded: &[String],
    since_ms: i64,
) -> Result<()> {
    let listed = serde_json::to_string(stranded).unwrap_or_default();
    store
        .update(
            &active_key(run_id),
            Update::new().set("stranded", listed).set("since", since_ms),
            Some(Condition::Exists),
        )
        .await
        .map(|_| ())
        .or_else(|e| {
            if e.is_condition_failure() {
                Ok(())
            } else {
                Err(e.into())
            }
        })
}

/// Takes a finished (or deleted) run out of the index.
pub async fn forget_active(store: &dyn ItemStore, run_id: &str) -> Result<()> {
    store.delete(&active_key(run_id), None).await?;
    Ok(())
}

/// A run's status and its steps, read without its owner in one query (the
/// sweeper's view); `None` when the run is gone.
pub async fn status_and_steps(
    store: &dyn ItemStore,
    run_id: &str,
) -> Result<Option<(RunStatus, Vec<StepRecord>)>> {
    let items = read_all(store, run_id).await?;
    let Some(header) = items.iter().find(|i| i.key.sk == "RUN") else {
        return Ok(None);
    };
    let stored = text(header, "status")?;
    let status = RunStatus::parse(&stored).ok_or_else(|| corrupt(header, "status"))?;
    let steps = items
        .iter()
        .filter(|i| i.key.sk.starts_with("STEP#"))
        .map(step_record)
        .collect::<Result<_>>()?;
    Ok(Some((status, steps)))
}

/// The attribute of a succeeded step naming the model call its checkpoint
/// counted, so no other account of that call counts it again.
pub const CALL_ID_ATTR: &str = "call_id";

/// The attribute of a step that holds the output of its dependency `dep`.
fn input_attr(dep: &str) -> String {
    format!("in_{dep}")
}

/// A run's status as clients see it; `pending` until a step has started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Pending,
    Running,
    /// A step waits for a person's approval (shown, never stored).
    Waiting,
    Succeeded,
    Failed,
    Cancelled,
}

impl RunStatus {
    fn stored(self) -> &'static str {
        match self {
            RunStatus::Pending | RunStatus::Running | RunStatus::Waiting => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }

    fn parse(raw: &str) -> Option<RunStatus> {
        Some(match raw {
            "running" => RunStatus::Running,
            "succeeded" => RunStatus::Succeeded,
            "failed" => RunStatus::Failed,
            "cancelled" => RunStatus::Cancelled,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Some dependency has not succeeded yet.
    Waiting,
    /// Enqueued (or waiting for its retry).
    Ready,
    /// A worker holds its lease.
    Running,
    Succeeded,
    Failed,
    /// Its run stopped (cancelled, or failed elsewhere) before it started.
    Cancelled,
    /// Its agent loop waits for a person's approval of a tool call
    /// (`POST /v1/runs/{id}/approvals`); its run shows `waiting`.
    AwaitingApproval,
}

impl StepStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Waiting => "waiting",
            StepStatus::Ready => "ready",
            StepStatus::Running => "running",
            StepStatus::Succeeded => "succeeded",
            StepStatus::Failed => "failed",
            StepStatus::Cancelled => "cancelled",
            StepStatus::AwaitingApproval => "awaiting_approval",
        }
    }

    fn parse(raw: &str) -> Option<StepStatus> {
        Some(match raw {
            "waiting" => StepStatus::Waiting,
            "ready" => StepStatus::Ready,
            "running" => StepStatus::Running,
            "succeeded" => StepStatus::Succeeded,
            "failed" => StepStatus::Failed,
            "cancelled" => StepStatus::Cancelled,
            "awaiting_approval" => StepStatus::AwaitingApproval,
            _ => return None,
        })
    }
}

fn is(status: StepStatus) -> Condition {
    Condition::eq("status", status.as_str())
}

/// The body of a message on the steps queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepMessage {
    pub run_id: String,
    pub step_id: String,
}

impl StepMessage {
    pub fn body(&self) -> String {
        // Two plain strings always encode.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// A successor as its predecessor's record lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Successor {
    pub id: String,
    pub deps_total: u32,
    /// Whether its prompt uses this step's output.
    pub uses_output: bool,
}

/// A step as the worker reads it.
#[derive(Debug, Clone)]
pub struct StepRecord {
    pub run_id: String,
    pub id: String,
    pub owner: String,
    pub agent_id: String,
    pub status: StepStatus,
    pub attempts: u32,
    pub template: Template,
    /// Outputs of the dependencies its prompt uses.
    pub inputs: BTreeMap<String, String>,
    pub successors: Vec<Successor>,
    pub deps_total: u32,
    pub deps_done: u32,
    /// Whether the run succeeds when this and every other sink has.
    pub sink: bool,
    /// Sinks of the whole run.
    pub run_sinks: u32,
    /// The owner's monthly limit when the run started.
    pub monthly_budget_usd: Option<Decimal>,
    pub lease: Option<String>,
    pub lease_until_ms: i64,
    pub output: Option<String>,
}

fn corrupt(item: &Item, what: &str) -> Error {
    Error::Internal(format!("item {} has an unreadable {what}", item.key))
}

fn step_status(item: &Item) -> Result<StepStatus> {
    StepStatus::parse(&text(item, "status")?).ok_or_else(|| corrupt(item, "status"))
}

fn step_record(item: &Item) -> Result<StepRecord> {
    let inputs = item
        .attrs
        .iter()
        .filter_map(|(name, value)| match value {
            Value::S(s) => name
                .strip_prefix("in_")
                .map(|dep| (dep.to_owned(), s.clone())),
            _ => None,
        })
        .collect();
    Ok(StepRecord {
        run_id: item
            .key
            .pk
            .strip_prefix("RUN#")
            .ok_or_else(|| corrupt(item, "pk"))?
            .to_owned(),
        id: super::id_after(item, "STEP#")?.to_owned(),
        owner: text(item, "owner")?,
        agent_id: text(item, "agent_id")?,
        status: step_status(item)?,
        attempts: count(item, "attempts")? as u32,
        template: json_attr(item, "template")?,
        inputs,
        successors: json_attr(item, "successors")?,
        deps_total: count(item, "deps_total")? as u32,
        deps_done: count(item, "deps_done")? as u32,
        sink: matches!(item.get("sink"), Some(Value::Bool(true))),
        run_sinks: count(item, "run_sinks")? as u32,
        monthly_budget_usd: opt_decimal(item, "monthly_budget_usd"),
        lease: opt_text(item, "lease"),
        lease_until_ms: super::whole(item, "lease_until").unwrap_or(0),
        output: opt_text(item, "output"),
    })
}

// ---------------------------------------------------------------- views --

/// A step as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct StepView {
    pub id: String,
    pub agent_id: String,
    pub depends_on: Vec<String>,
    pub status: StepStatus,
    /// Times a worker started it.
    pub attempts: u32,
    /// The model's reply, once it succeeded (cut at 64 KiB).
    pub output: Option<String>,
    /// Whether the stored output was cut.
    pub output_truncated: bool,
    /// Why the last attempt failed.
    pub error: Option<String>,
    pub model: Option<String>,
    pub usage: TokenCounts,
    /// What the step cost, USD, once it succeeded.
    #[serde(with = "rust_decimal::serde::str_option")]
    #[schema(value_type = Option<String>, example = "0.000415")]
    pub cost_usd: Option<Decimal>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// What a step `awaiting_approval` waits for.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<super::turns::Pending>,
}

/// A run with its steps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct RunView {
    pub id: String,
    pub workflow_id: String,
    pub workflow_name: String,
    pub status: RunStatus,
    #[schema(value_type = Object)]
    pub input: serde_json::Value,
    /// What every step cost together, USD.
    #[serde(with = "rust_decimal::serde::str")]
    #[schema(value_type = String, example = "0.004215")]
    pub cost_usd: Decimal,
    pub usage: TokenCounts,
    /// Why the run failed.
    pub error: Option<String>,
    pub idempotency_key: Option<String>,
    pub created_at: String,
    pub finished_at: Option<String>,
    /// In workflow order (each after its dependencies).
    pub steps: Vec<StepView>,
    /// While the run is `waiting`: every tool call its steps wait to have
    /// approved (`POST /v1/runs/{id}/approvals`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<PendingApproval>,
}

/// A tool call a step of a run waits to have approved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PendingApproval {
    pub step_id: String,
    pub tool_call_id: String,
    pub name: String,
    #[schema(value_type = Object)]
    pub input: serde_json::Value,
}

fn tokens(item: &Item) -> Result<TokenCounts> {
    Ok(TokenCounts {
        input_tokens: count(item, "input_tokens")?,
        output_tokens: count(item, "output_tokens")?,
        cache_read_tokens: count(item, "cache_read_tokens")?,
        cache_write_tokens: count(item, "cache_write_tokens")?,
    })
}

fn step_view(item: &Item) -> Result<(i64, StepView)> {
    Ok((
        super::whole(item, "position")?,
        StepView {
            id: super::id_after(item, "STEP#")?.to_owned(),
            agent_id: text(item, "agent_id")?,
            depends_on: json_attr(item, "depends_on")?,
            status: step_status(item)?,
            attempts: count(item, "attempts")? as u32,
            output: opt_text(item, "output"),
            output_truncated: matches!(item.get("output_truncated"), Some(Value::Bool(true))),
            error: opt_text(item, "error"),
            model: opt_text(item, "model"),
            usage: tokens(item)?,
            cost_usd: opt_decimal(item, "cost_usd"),
            started_at: opt_text(item, "started_at"),
            finished_at: opt_text(item, "finished_at"),
            pending: super::opt_json_attr(item, "pending")?.unwrap_or_default(),
        },
    ))
}

/// Every item of a run's partition: its record and its steps.
async fn read_all(store: &dyn ItemStore, run_id: &str) -> Result<Vec<Item>> {
    let mut items = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .query(Query::partition(partition(run_id)).limit(100).after(after))
            .await?;
        items.extend(page.items);
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(items),
        }
    }
}

/// The run `run_id` if `owner` owns it. One query (more only for runs whose
/// outputs pass 1 MB together).
pub async fn get(store: &dyn ItemStore, owner: &str, run_id: &str) -> Result<Option<RunView>> {
    let items = read_all(store, run_id).await?;
    let Some(header) = items.iter().find(|i| i.key.sk == "RUN") else {
        return Ok(None);
    };
    if header.get_str("owner") != Some(owner) {
        return Ok(None);
    }
    let mut steps = items
        .iter()
        .filter(|i| i.key.sk.starts_with("STEP#"))
        .map(step_view)
        .collect::<Result<Vec<_>>>()?;
    steps.sort_by_key(|(position, _)| *position);
    let steps: Vec<StepView> = steps.into_iter().map(|(_, s)| s).collect();
    let pending = steps
        .iter()
        .flat_map(|s| {
            s.pending.iter().map(|p| PendingApproval {
                step_id: s.id.clone(),
                tool_call_id: p.tool_call_id.clone(),
                name: p.name.clone(),
                input: p.input.clone(),
            })
        })
        .collect();
    let stored =
        RunStatus::parse(&text(header, "status")?).ok_or_else(|| corrupt(header, "status"))?;
    let status = if stored != RunStatus::Running {
        stored
    } else if steps
        .iter()
        .any(|s| s.status == StepStatus::AwaitingApproval)
    {
        RunStatus::Waiting
    } else if steps.iter().all(|s| s.attempts == 0) {
        RunStatus::Pending
    } else {
        stored
    };
    Ok(Some(RunView {
        id: run_id.to_owned(),
        workflow_id: text(header, "workflow_id")?,
        workflow_name: text(header, "workflow_name")?,
        status,
        input: json_attr(header, "input")?,
        cost_usd: super::decimal(header, "cost_usd")?,
        usage: tokens(header)?,
        error: opt_text(header, "error"),
        idempotency_key: opt_text(header, "idempotency_key"),
        created_at: text(header, "created_at")?,
        finished_at: opt_text(header, "finished_at"),
        steps,
        pending,
    }))
}

// ---------------------------------------------------------------- start --

/// What [`create`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// A new run; `roots` are its steps without dependencies, to enqueue.
    New { run_id: String, roots: Vec<String> },
    /// A concurrent start with the same idempotency key won: its run.
    Earlier { run_id: String },
}

/// Checks an idempotency key: 1 to 128 printable ASCII characters.
pub fn check_idempotency_key(key: &str) -> Result<()> {
    let ok = !key.is_empty()
        && key.len() <= MAX_IDEMPOTENCY_KEY
        && key.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(())
    } else {
        Err(Error::BadRequest(format!(
            "idempotency_key: must be 1 to {MAX_IDEMPOTENCY_KEY} printable ASCII characters \
             without spaces"
        )))
    }
}

/// Writes a new run of `workflow` for `owner`, checked by the caller: the
/// run, all its steps (each prompt `templates[i]` with the input filled
/// in) and the create-only idempotency record, in one transaction.
#[allow(clippy::too_many_arguments)]
pub async fn create(
    store: &dyn ItemStore,
    owner: &str,
    workflow: &Workflow,
    input_json: String,
    templates: Vec<Template>,
    monthly_budget_usd: Option<Decimal>,
    idempotency_key: Option<&str>,
) -> Result<Created> {
    let run_id = ids::new_sortable_id(ID_PREFIX);
    let now = lambent_core::time::now_rfc3339();
    let successors = successors_of(workflow);
    let sinks = workflow
        .steps
        .iter()
        .filter(|s| successors.get(s.id.as_str()).is_none_or(Vec::is_empty))
        .count() as i64;

    let mut ops = Vec::with_capacity(workflow.steps.len() + 3);
    if let Some(key) = idempotency_key {
        ops.push(TxOp::Put {
            item: Item::new(idempotency_record(owner, &workflow.id, key))
                .with("run_id", run_id.as_str()),
            condition: Some(Condition::NotExists),
        });
    }
    ops.push(TxOp::Put {
        item: cascade::owns_partition(Item::new(pointer_key(owner, &run_id)), &partition(&run_id))
            .with("workflow_id", workflow.id.as_str())
            .with("created_at", now.as_str()),
        condition: Some(Condition::NotExists),
    });
    let mut header = Item::new(header_key(&run_id))
        .with("owner", owner)
        .with("workflow_id", workflow.id.as_str())
        .with("workflow_name", workflow.name.as_str())
        .with("status", RunStatus::Running.stored())
        .with("input", input_json)
        .with("sinks_left", sinks)
        .with("cost_usd", Decimal::ZERO)
        .with("input_tokens", 0)
        .with("output_tokens", 0)
        .with("cache_read_tokens", 0)
        .with("cache_write_tokens", 0)
        .with("created_at", now.as_str());
    if let Some(key) = idempotency_key {
        header = header.with("idempotency_key", key);
    }
    ops.push(TxOp::Put {
        item: header,
        condition: Some(Condition::NotExists),
    });
    ops.push(TxOp::Put {
        item: Item::new(active_key(&run_id)),
        condition: Some(Condition::NotExists),
    });
    let mut roots = Vec::new();
    for (position, (step, template)) in workflow.steps.iter().zip(templates).enumerate() {
        let next = successors
            .get(step.id.as_str())
            .cloned()
            .unwrap_or_default();
        let status = if step.depends_on.is_empty() {
            roots.push(step.id.clone());
            StepStatus::Ready
        } else {
            StepStatus::Waiting
        };
        let encode = |what: &str, v: Result<String, serde_json::Error>| {
            v.map_err(|e| Error::Internal(format!("encoding {what}: {e}")))
        };
        let mut item = Item::new(step_key(&run_id, &step.id))
            .with("owner", owner)
            .with("position", position as i64)
            .with("agent_id", step.agent_id.as_str())
            .with(
                "template",
                encode("template", serde_json::to_string(&template))?,
            )
            .with(
                "depends_on",
                encode("depends_on", serde_json::to_string(&step.depends_on))?,
            )
            .with(
                "successors",
                encode("successors", serde_json::to_string(&next))?,
            )
            .with("sink", next.is_empty())
            .with("run_sinks", sinks)
            .with("deps_total", step.depends_on.len() as i64)
            .with("deps_done", 0)
            .with("status", status.as_str())
            .with("attempts", 0)
            .with("cost_usd", Decimal::ZERO)
            .with("input_tokens", 0)
            .with("output_tokens", 0)
            .with("cache_read_tokens", 0)
            .with("cache_write_tokens", 0);
        if let Some(limit) = monthly_budget_usd {
            item = item.with("monthly_budget_usd", limit);
        }
        ops.push(TxOp::Put {
            item,
            condition: Some(Condition::NotExists),
        });
    }
    match store.transact(ops).await {
        Ok(()) => {}
        Err(StoreError::TransactionCancelled { failed })
            if idempotency_key.is_some() && failed.contains(&0) =>
        {
            // A concurrent start with the same key won.
            let key = idempotency_key.unwrap_or_default();
            let Some(run_id) = existing_run(store, owner, &workflow.id, key).await? else {
                return Err(Error::Conflict(
                    "a run with this idempotency_key is starting; retry".into(),
                ));
            };
            return Ok(Created::Earlier { run_id });
        }
        Err(e) => return Err(e.into()),
    }
    Ok(Created::New { run_id, roots })
}

/// The run an idempotency key of `owner` started on `workflow_id`, if any.
pub async fn existing_run(
    store: &dyn ItemStore,
    owner: &str,
    workflow_id: &str,
    key: &str,
) -> Result<Option<String>> {
    Ok(store
        .get(&idempotency_record(owner, workflow_id, key))
        .await?
        .and_then(|i| i.get_str("run_id").map(str::to_owned)))
}

/// Each step's successors, with what the worker needs to know of them.
fn successors_of(workflow: &Workflow) -> BTreeMap<&str, Vec<Successor>> {
    let mut next: BTreeMap<&str, Vec<Successor>> = BTreeMap::new();
    for step in &workflow.steps {
        let used: Vec<String> = Template::parse(&step.prompt)
            .map(|t| t.step_refs().map(str::to_owned).collect())
            .unwrap_or_default();
        for dep in &step.depends_on {
            next.entry(dep.as_str()).or_default().push(Successor {
                id: step.id.clone(),
                deps_total: step.depends_on.len() as u32,
                uses_output: used.iter().any(|u| u == dep),
            });
        }
    }
    next
}

/// The steps of a run that are ready but not started.
pub async fn ready_steps(store: &dyn ItemStore, run_id: &str) -> Result<Vec<String>> {
    let items = read_all(store, run_id).await?;
    Ok(items
        .iter()
        .filter(|i| i.key.sk.starts_with("STEP#"))
        .filter(|i| i.get_str("status") == Some(StepStatus::Ready.as_str()))
        .filter_map(|i| i.key.sk.strip_prefix("STEP#").map(str::to_owned))
        .collect())
}

// --------------------------------------------------------------- cancel --

/// Cancels a running run of `owner`: no step starts after this (a step
/// already running finishes and is billed).
pub async fn cancel(store: &dyn ItemStore, owner: &str, run_id: &str) -> Result<RunView> {
    let result = store
        .update(
            &header_key(run_id),
            Update::new()
                .set("status", RunStatus::Cancelled.stored())
                .set("finished_at", lambent_core::time::now_rfc3339()),
            Some(Condition::And(vec![
                Condition::eq("owner", owner),
                Condition::eq("status", RunStatus::Running.stored()),
            ])),
        )
        .await;
    match result {
        Ok(_) => stop_pending(store, run_id).await?,
        Err(e) if e.is_condition_failure() => {
            let Some(run) = get(store, owner, run_id).await? else {
                return Err(Error::NotFound("run"));
            };
            return Err(Error::Conflict(format!(
                "the run has already finished ({})",
                RunStatus::stored(run.status)
            )));
        }
        Err(e) => return Err(e.into()),
    }
    get(store, owner, run_id)
        .await?
        .ok_or(Error::NotFound("run"))
}

/// Marks every step of the run that has not started `cancelled`. Each is
/// its own conditional write, so a step a worker claims meanwhile simply
/// runs on; its successors are cancelled here, so nothing follows it.
pub async fn stop_pending(store: &dyn ItemStore, run_id: &str) -> Result<()> {
    let items = read_all(store, run_id).await?;
    let pending = items.iter().filter(|i| {
        matches!(
            i.get_str("status"),
            Some("waiting") | Some("ready") | Some("awaiting_approval")
        ) && i.key.sk.starts_with("STEP#")
    });
    let writes = pending.map(|item| {
        store.update(
            &item.key,
            Update::new().set("status", StepStatus::Cancelled.as_str()),
            Some(Condition::Or(vec![
                is(StepStatus::Waiting),
                is(StepStatus::Ready),
                is(StepStatus::AwaitingApproval),
            ])),
        )
    });
    for written in join_all(writes).await {
        match written {
            Ok(_) => {}
            Err(e) if e.is_condition_failure() => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

// ----------------------------------------------------------- the worker --

/// The step, if it exists.
pub async fn read_step(
    store: &dyn ItemStore,
    run_id: &str,
    step_id: &str,
) -> Result<Option<StepRecord>> {
    match store.get(&step_key(run_id, step_id)).await? {
        Some(item) => Ok(Some(step_record(&item)?)),
        None => Ok(None),
    }
}

/// The steps of a run (for a redelivered message that finds its step done).
pub async fn read_steps(store: &dyn ItemStore, run_id: &str) -> Result<Vec<StepRecord>> {
    read_all(store, run_id)
        .await?
        .iter()
        .filter(|i| i.key.sk.starts_with("STEP#"))
        .map(step_record)
        .collect()
}

/// Takes the step for one attempt: it must be `ready`, or `running` under a
/// lease that has run out (its worker died), and have attempts left. One
/// conditional write, which returns everything the attempt needs. `None`
/// when another worker holds it, it is finished, or out of attempts.
pub async fn claim(
    store: &dyn ItemStore,
    run_id: &str,
    step_id: &str,
    lease: Duration,
    max_attempts: u32,
    now: i64,
) -> Result<Option<StepRecord>> {
    let token = ids::new_id("lease");
    let result = store
        .update(
            &step_key(run_id, step_id),
            Update::new()
                .set("status", StepStatus::Running.as_str())
                .set("lease", token)
                .set("lease_until", now + lease.as_millis() as i64)
                .add("attempts", Decimal::ONE)
                .set_if_absent("started_at", lambent_core::time::now_rfc3339()),
            Some(Condition::And(vec![
                Condition::Exists,
                Condition::cmp("attempts", Cmp::Lt, i64::from(max_attempts)),
                Condition::Or(vec![
                    is(StepStatus::Ready),
                    Condition::And(vec![
                        is(StepStatus::Running),
                        Condition::cmp("lease_until", Cmp::Lt, now),
                    ]),
                ]),
            ])),
        )
        .await;
    match result {
        Ok(item) => Ok(Some(step_record(&item)?)),
        Err(e) if e.is_condition_failure() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// What a step's model call produced.
#[derive(Debug, Clone)]
pub struct StepResult {
    pub output: String,
    pub truncated: bool,
    pub model: String,
    pub usage: Usage,
    pub cost_usd: Decimal,
    /// The writes that count the call's cost (its budget and usage
    /// aggregates, and the consumption of its ledger entry, last), from
    /// the model-call pipeline (`lambent_app::chat::charge`): they land in
    /// the checkpoint's transaction, so they count once.
    pub billing: Vec<TxOp>,
    /// The same, for when the call's reservation was released meanwhile
    /// (its ledger entry is gone): used if `billing`'s last write fails.
    pub billing_released: Vec<TxOp>,
    /// The model call, recorded on the step ([`CALL_ID_ATTR`]).
    pub call_id: String,
}

/// What [`complete`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completed {
    /// Stored and counted now. `ready` successors were made ready in the
    /// same write and must be enqueued; `joins` have other dependencies
    /// and may be ready now ([`ready_join`]).
    Now {
        ready: Vec<String>,
        joins: Vec<String>,
        run_finished: bool,
    },
    /// Another attempt stored its result first (or the step was failed):
    /// nothing was written.
    Earlier,
}

/// Checkpoints the step's result and counts it, in one transaction guarded
/// by the step's move from `running` to `succeeded`: the output, usage and
/// cost on the step; the totals on the run (and, for the run's only sink,
/// its success); the user's month; the usage aggregates; and each
/// successor's count of finished dependencies (with this output, if it uses
/// it). A retried or duplicated attempt finds the step succeeded and counts
/// nothing.
pub async fn complete(
    store: &dyn ItemStore,
    step: &StepRecord,
    result: &StepResult,
) -> Result<Completed> {
    let mut shared_ops = &result.billing;
    let mut counted_without_reservation = false;

    let mut finish_run = step.sink && step.run_sinks == 1;
    let mut skipped: Vec<String> = Vec::new();
    for _ in 0..=step.successors.len() + 1 {
        let successors: Vec<&Successor> = step
            .successors
            .iter()
            .filter(|s| !skipped.contains(&s.id))
            .collect();
        let mut ops = vec![
            TxOp::Update {
                key: step_key(&step.run_id, &step.id),
                update: add_usage(
                    Update::new()
                        .set("status", StepStatus::Succeeded.as_str())
                        .set("output", result.output.as_str())
                        .set("output_truncated", result.truncated)
                        .set("model", result.model.as_str())
                        .set(CALL_ID_ATTR, result.call_id.as_str())
                        .set("finished_at", lambent_core::time::now_rfc3339())
                        .remove("lease")
                        .remove("lease_until")
                        .remove("error"),
                    result,
                ),
                condition: Some(is(StepStatus::Running)),
            },
            run_totals(step, result, finish_run),
        ];
        for next in &successors {
            let mut update = Update::new().add("deps_done", Decimal::ONE);
            if next.uses_output {
                update = update.set(&input_attr(&step.id), result.output.as_str());
            }
            if next.deps_total == 1 {
                update = update.set("status", StepStatus::Ready.as_str());
            }
            ops.push(TxOp::Update {
                key: step_key(&step.run_id, &next.id),
                update,
                condition: Some(is(StepStatus::Waiting)),
            });
        }
        let first_successor = ops.len() - successors.len();
        ops.extend(shared_ops.iter().cloned());
        let last = ops.len() - 1;
        match super::transact_retrying(store, ops).await {
            Ok(()) => {
                let (ready, joins) = successors
                    .iter()
                    .partition::<Vec<&&Successor>, _>(|s| s.deps_total == 1);
                return Ok(Completed::Now {
                    ready: ready.iter().map(|s| s.id.clone()).collect(),
                    joins: joins.iter().map(|s| s.id.clone()).collect(),
                    run_finished: finish_run,
                });
            }
            Err(StoreError::TransactionCancelled { failed }) => {
                if failed.contains(&0) {
                    return Ok(Completed::Earlier);
                }
                if failed.contains(&1) {
                    // The run was cancelled or failed: count, but leave its status.
                    finish_run = false;
                }
                if failed.contains(&last) && !counted_without_reservation {
                    // The call's reservation was released (its ledger
                    // entry is gone): count it without.
                    shared_ops = &result.billing_released;
                    counted_without_reservation = true;
                }
                for index in failed {
                    if let Some(next) = index
                        .checked_sub(first_successor)
                        .and_then(|i| successors.get(i))
                    {
                        // Cancelled with its run: nothing is passed on to it.
                        skipped.push(next.id.clone());
                    }
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::Internal(format!(
        "step {} of run {} could not be completed",
        step.id, step.run_id
    )))
}

fn add_usage(update: Update, result: &StepResult) -> Update {
    add_spend(update, &result.usage, result.cost_usd)
}

/// `update` adding `usage` and `cost_usd` to a step's or a run's totals.
pub(crate) fn add_spend(update: Update, usage: &Usage, cost_usd: Decimal) -> Update {
    update
        .add("input_tokens", Decimal::from(usage.input_tokens))
        .add("output_tokens", Decimal::from(usage.output_tokens))
        .add("cache_read_tokens", Decimal::from(usage.cache_read_tokens))
        .add(
            "cache_write_tokens",
            Decimal::from(usage.cache_write_tokens),
        )
        .add("cost_usd", cost_usd)
}

fn run_totals(step: &StepRecord, result: &StepResult, finish_run: bool) -> TxOp {
    let mut update = add_usage(Update::new(), result);
    if step.sink {
        update = update.add("sinks_left", -Decimal::ONE);
    }
    let mut condition = None;
    if finish_run {
        update = update
            .set("status", RunStatus::Succeeded.stored())
            .set("finished_at", lambent_core::time::now_rfc3339());
        condition = Some(Condition::eq("status", RunStatus::Running.stored()));
    }
    TxOp::Update {
        key: header_key(&step.run_id),
        update,
        condition,
    }
}

/// Makes a successor with several dependencies ready once all have
/// succeeded. Only one caller can win, so it is enqueued once.
pub async fn ready_join(
    store: &dyn ItemStore,
    run_id: &str,
    successor: &Successor,
) -> Result<bool> {
    let result = store
        .update(
            &step_key(run_id, &successor.id),
            Update::new().set("status", StepStatus::Ready.as_str()),
            Some(Condition::And(vec![
                is(StepStatus::Waiting),
                Condition::eq("deps_done", i64::from(successor.deps_total)),
            ])),
        )
        .await;
    match result {
        Ok(_) => Ok(true),
        Err(e) if e.is_condition_failure() => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Marks the run succeeded if every sink has finished (runs with several).
pub async fn finish_if_done(store: &dyn ItemStore, run_id: &str) -> Result<bool> {
    let result = store
        .update(
            &header_key(run_id),
            Update::new()
                .set("status", RunStatus::Succeeded.stored())
                .set("finished_at", lambent_core::time::now_rfc3339()),
            Some(Condition::And(vec![
                Condition::eq("status", RunStatus::Running.stored()),
                Condition::eq("sinks_left", 0),
            ])),
        )
        .await;
    match result {
        Ok(_) => Ok(true),
        Err(e) if e.is_condition_failure() => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Gives the step back after a failed attempt that may be retried: `ready`
/// again, with the error, if `lease` still holds it.
pub async fn release(
    store: &dyn ItemStore,
    step: &StepRecord,
    lease: &str,
    error: &str,
) -> Result<()> {
    let result = store
        .update(
            &step_key(&step.run_id, &step.id),
            Update::new()
                .set("status", StepStatus::Ready.as_str())
                .set("error", error)
                .remove("lease")
                .remove("lease_until"),
            Some(Condition::And(vec![
                is(StepStatus::Running),
                Condition::eq("lease", lease),
            ])),
        )
        .await;
    match result {
        Ok(_) => Ok(()),
        Err(e) if e.is_condition_failure() => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Fails the step and its run with `error`, and stops the run's other
/// pending steps. `lease`, when given, must still hold the step. Returns
/// false when the step had moved on (another worker finished it).
pub async fn fail(
    store: &dyn ItemStore,
    step: &StepRecord,
    lease: Option<&str>,
    error: &str,
) -> Result<bool> {
    let now = lambent_core::time::now_rfc3339();
    let mut step_condition = vec![Condition::Or(vec![
        is(StepStatus::Running),
        is(StepStatus::Ready),
    ])];
    if let Some(lease) = lease {
        step_condition.push(Condition::eq("lease", lease));
    }
    let step_op = TxOp::Update {
        key: step_key(&step.run_id, &step.id),
        update: Update::new()
            .set("status", StepStatus::Failed.as_str())
            .set("error", error)
            .set("finished_at", now.as_str())
            .remove("lease")
            .remove("lease_until"),
        condition: Some(Condition::And(step_condition)),
    };
    let run_op = TxOp::Update {
        key: header_key(&step.run_id),
        update: Update::new()
            .set("status", RunStatus::Failed.stored())
            .set("error", format!("step {}: {error}", step.id))
            .set("finished_at", now.as_str()),
        condition: Some(Condition::eq("status", RunStatus::Running.stored())),
    };
    match store.transact(vec![step_op.clone(), run_op]).await {
        Ok(()) => {}
        Err(StoreError::TransactionCancelled { failed }) if failed.contains(&0) => {
            return Ok(false)
        }
        Err(StoreError::TransactionCancelled { .. }) => {
            // The run had already stopped; the step still records why it failed.
            match store.transact(vec![step_op]).await {
                Ok(()) => {}
                Err(e) if e.is_condition_failure() => return Ok(false),
                Err(e) => return Err(e.into()),
            }
        }
        Err(e) => return Err(e.into()),
    }
    stop_pending(store, &step.run_id).await?;
    Ok(true)
}
