//! Starting a run: every check first (idempotency key, input, agents), then
//! the run and all its steps in one write (`lambent_store::runs::create`),
//! then the steps without dependencies on the steps queue.

use std::time::Duration;

use futures::future::join_all;

use lambent_core::error::{Error, Result};
use lambent_core::workflow::template::Template;
use lambent_core::workflow::{MAX_INPUT_BYTES, MAX_PROMPT_WITH_INPUT_BYTES};
use lambent_ports::{ItemStore, Queue, QueueName};
use lambent_store::runs::{self, Created, StepMessage};
use lambent_store::users;
use lambent_store::workflows::{self, Workflow};

/// A started (or, for a repeated idempotency key, an earlier) run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    pub run_id: String,
    /// False when the idempotency key named an existing run.
    pub created: bool,
}

/// Starts a run of `workflow` for its owner. The same idempotency key
/// returns the first run, and enqueues again any of its first steps still
/// waiting for a worker, so a start cut short between its write and its
/// messages completes when repeated.
pub async fn start_run(
    store: &dyn ItemStore,
    queue: &dyn Queue,
    owner: &str,
    workflow: &Workflow,
    input: serde_json::Map<String, serde_json::Value>,
    idempotency_key: Option<&str>,
) -> Result<Started> {
    if let Some(key) = idempotency_key {
        runs::check_idempotency_key(key)?;
        if let Some(run_id) = runs::existing_run(store, owner, &workflow.id, key).await? {
            return earlier(store, queue, run_id).await;
        }
    }
    let input_json = serde_json::Value::Object(input.clone()).to_string();
    if input_json.len() > MAX_INPUT_BYTES {
        return Err(Error::BadRequest(format!(
            "input: must be at most {MAX_INPUT_BYTES} bytes of JSON"
        )));
    }
    let mut templates = Vec::with_capacity(workflow.steps.len());
    for step in &workflow.steps {
        let template = Template::parse(&step.prompt)
            .and_then(|t| t.with_input(&input))
            .map_err(|e| Error::BadRequest(format!("input: step {}: {e}", step.id)))?;
        if template.text_len() > MAX_PROMPT_WITH_INPUT_BYTES {
            return Err(Error::BadRequest(format!(
                "input: step {}'s prompt with this input is over {MAX_PROMPT_WITH_INPUT_BYTES} bytes",
                step.id
            )));
        }
        templates.push(template);
    }
    // A run must not start with an agent that is gone (requirement 19): it
    // would fail halfway, after spending on the steps before.
    let (missing, user) = tokio::join!(
        workflows::step_without_agent(store, owner, &workflow.steps),
        users::get(store, owner)
    );
    if let Some(i) = missing? {
        let step = &workflow.steps[i];
        return Err(Error::Conflict(format!(
            "step {}: its agent {} no longer exists; update the workflow",
            step.id, step.agent_id
        )));
    }
    let Some(user) = user? else {
        return Err(Error::NotFound("user"));
    };
    let created = runs::create(
        store,
        owner,
        workflow,
        input_json,
        templates,
        user.monthly_budget_usd,
        idempotency_key,
    )
    .await?;
    match created {
        Created::New { run_id, roots } => {
            enqueue(queue, &run_id, roots.iter().map(String::as_str)).await?;
            Ok(Started {
                run_id,
                created: true,
            })
        }
        Created::Earlier { run_id } => earlier(store, queue, run_id).await,
    }
}

/// An earlier run of the same idempotency key: its steps that are ready but
/// not started are enqueued again (a duplicate message is harmless: only one
/// claim can win).
async fn earlier(store: &dyn ItemStore, queue: &dyn Queue, run_id: String) -> Result<Started> {
    let ready = runs::ready_steps(store, &run_id).await?;
    enqueue(queue, &run_id, ready.iter().map(String::as_str)).await?;
    Ok(Started {
        run_id,
        created: false,
    })
}

/// Puts a message for each step on the steps queue.
pub async fn enqueue<'a>(
    queue: &dyn Queue,
    run_id: &str,
    steps: impl IntoIterator<Item = &'a str>,
) -> Result<()> {
    let sends = steps.into_iter().map(|step_id| {
        let body = StepMessage {
            run_id: run_id.to_owned(),
            step_id: step_id.to_owned(),
        }
        .body();
        async move { queue.send(QueueName::Steps, &body, Duration::ZERO).await }
    });
    for sent in join_all(sends).await {
        sent?;
    }
    Ok(())
}
