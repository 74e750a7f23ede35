//! Workflow runs on both backends (`tests/integration` on the embedded store
//! and queue, `tests/aws` on DynamoDB, SQS and KMS in the emulator): the
//! real worker, fed by the real queue, calling the fake provider over HTTP.
//! A test drives the queue itself, so it can deliver a message twice, crash
//! the worker at a chosen point, and read the dead-letter queue.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::join_all;
use lambent_app::config::Config;
use lambent_app::state::State;
use lambent_app::workflows::{Allowance, Point, Worker};
use lambent_core::auth::Role;
use lambent_core::chat::{HttpToolSpec, ToolSpec};
use lambent_core::secret::SecretString;
use lambent_core::workflow::{Definition, StepSpec};
use lambent_fake_provider::{FakeProvider, FakeUsage, Reply};
use lambent_ports::queue::{QueueName, Received};
use lambent_store::agents::{self, AgentSpec};
use lambent_store::models::Prices;
use lambent_store::providers::{self, NewProvider, ProviderKind};
use lambent_store::runs::{self, RunStatus, RunView, StepStatus};
use lambent_store::usage::{self, Dimension, Scope};
use lambent_store::users::{self, NewUser};
use lambent_store::workflows::{self, Workflow};
use lambent_testkit::counting::{CountingStore, Meter};
use lambent_tool_server::{ToolReply, ToolServer};
use rust_decimal::Decimal;
use serde_json::{json, Value};

/// The test model's prices (USD per million tokens).
const MODEL: &str = "fake-flow-model";
/// Every call reports 100 input and 20 output tokens: 100 * 3 + 20 * 15
/// micro-dollars.
pub const STEP_COST: &str = "0.0006";
/// What the echo answers start with.
const ECHO: &str = "out:";

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

/// How fast leases and visibility timeouts run out: SQS counts whole
/// seconds, the embedded queue milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub lease: Duration,
    pub visibility: Duration,
}

impl Timing {
    pub const EMBEDDED: Timing = Timing {
        lease: Duration::from_millis(300),
        visibility: Duration::from_millis(700),
    };
    pub const SQS: Timing = Timing {
        lease: Duration::from_secs(1),
        visibility: Duration::from_secs(2),
    };
}

/// A member with a provider (the fake, echoing) and an agent, on one backend.
pub struct Flow {
    pub state: State,
    pub worker: Worker,
    pub fake: FakeProvider,
    pub owner: String,
    pub provider: String,
    pub agent: String,
    pub timing: Timing,
    _dir: Option<tempfile::TempDir>,
}

fn config(timing: Timing) -> Config {
    Config {
        allow_private_provider_urls: true,
        step_lease: timing.lease,
        step_backoff: Duration::from_millis(50),
        step_max_attempts: 3,
        ..Config::default()
    }
}

impl Flow {
    pub async fn embedded() -> Flow {
        let dir = tempfile::Builder::new()
            .prefix("lambent-flow-")
            .tempdir()
            .unwrap();
        let state = lambent_boot::embedded(dir.path(), config(Timing::EMBEDDED)).unwrap();
        Flow::world(state, Timing::EMBEDDED, Some(dir)).await
    }

    pub async fn emulator() -> Flow {
        let sdk = lambent_testkit::emulator::sdk().await;
        // As deployed: more receives than attempts, so the worker, not the
        // redrive, decides when a step has failed.
        let made = lambent_testkit::emulator::provision_with(&sdk, 5).await;
        let resources = lambent_boot::AwsResources::from(made);
        let state = lambent_boot::aws(&sdk, config(Timing::SQS), resources)
            .await
            .unwrap();
        Flow::world(state, Timing::SQS, None).await
    }

    async fn world(state: State, timing: Timing, dir: Option<tempfile::TempDir>) -> Flow {
        let store = state.store.as_ref();
        let fake = FakeProvider::start().await.unwrap();
        fake.set_default(Reply::echo(ECHO).usage(FakeUsage {
            input: 100,
            output: 20,
            ..FakeUsage::default()
        }));
        state
            .catalog
            .upsert(
                store,
                MODEL,
                ProviderKind::Anthropic,
                Prices {
                    input_per_mtok: d("3"),
                    output_per_mtok: d("15"),
                    cache_read_per_mtok: d("0.3"),
                    cache_write_per_mtok: d("3.75"),
                },
            )
            .await
            .unwrap();
        let owner = users::create(
            store,
            NewUser {
                name: "runner".into(),
                role: Role::Member,
                monthly_budget_usd: None,
            },
        )
        .await
        .unwrap()
        .id;
        let provider = providers::create(
            store,
            state.cipher.as_ref(),
            &owner,
            NewProvider {
                kind: ProviderKind::Anthropic,
                name: "fake".into(),
                api_key: SecretString::from("sk-flow-test".to_owned()),
                base_url: Some(fake.anthropic_base_url()),
            },
        )
        .await
        .unwrap();
        let agent = agents::create(
            store,
            &state.catalog,
            &owner,
            &agents::new_id(),
            AgentSpec {
                name: "stepper".into(),
                provider_id: provider.id.clone(),
                model: MODEL.into(),
                system_prompt: None,
                temperature: None,
                max_tokens: 100,
                context_token_budget: 100_000,
                tools: Default::default(),
                tool_choice: Default::default(),
                max_tool_rounds: agents::DEFAULT_MAX_TOOL_ROUNDS,
            },
        )
        .await
        .unwrap();
        let worker = Worker::new(state.clone()).unwrap();
        Flow {
            state,
            worker,
            fake,
            owner,
            provider: provider.id,
            agent: agent.id,
            timing,
            _dir: dir,
        }
    }

    /// Creates a workflow of `steps` (`[(id, prompt, depends_on)]`) with the
    /// world's agent.
    pub async fn workflow(&self, steps: &[(&str, &str, &[&str])]) -> Workflow {
        let steps = steps
            .iter()
            .map(|(id, prompt, deps)| StepSpec {
                id: (*id).into(),
                agent_id: self.agent.clone(),
                prompt: (*prompt).into(),
                depends_on: deps.iter().map(|d| (*d).to_owned()).collect(),
            })
            .collect();
        let definition = Definition::validate("flow", steps).unwrap();
        workflows::create(self.state.store.as_ref(), &self.owner, definition)
            .await
            .unwrap()
    }

    pub async fn start(&self, workflow: &Workflow, input: Value, key: Option<&str>) -> String {
        let input = input.as_object().cloned().unwrap_or_default();
        lambent_app::workflows::start_run(
            self.state.store.as_ref(),
            self.state.queue.as_ref(),
            &self.owner,
            workflow,
            input,
            key,
        )
        .await
        .unwrap()
        .run_id
    }

    /// Up to `max` messages of the steps queue, as a worker receives them
    /// (waiting up to 200 ms for the first).
    async fn receive_steps(&self, max: usize) -> Vec<Received> {
        self.state
            .queue
            .receive(
                QueueName::Steps,
                max,
                self.timing.visibility,
                Duration::from_millis(200),
            )
            .await
            .unwrap()
    }

    /// The next message on the steps queue, waiting for it (at most 30 s).
    pub async fn next_step_message(&self) -> Received {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            assert!(Instant::now() < deadline, "no step message came");
            if let Some(message) = self.receive_steps(1).await.pop() {
                return message;
            }
        }
    }

    pub async fn run(&self, run_id: &str) -> RunView {
        runs::get(self.state.store.as_ref(), &self.owner, run_id)
            .await
            .unwrap()
            .unwrap()
    }

    /// Receives step messages and hands them to `worker` (each one
    /// `copies` times at once, as duplicate deliveries) until the queue
    /// stays empty and every run in `runs` has finished, or 60 s pass.
    /// Returns every message body handled.
    pub async fn drive(&self, worker: &Worker, runs_: &[&str], copies: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut seen = Vec::new();
        loop {
            assert!(
                Instant::now() < deadline,
                "runs did not finish: {:?}",
                self.statuses(runs_).await
            );
            let batch = self.receive_steps(10).await;
            if batch.is_empty() {
                let statuses = self.statuses(runs_).await;
                if statuses.iter().all(|s| {
                    matches!(
                        s,
                        RunStatus::Succeeded | RunStatus::Failed | RunStatus::Cancelled
                    )
                }) {
                    return seen;
                }
                continue;
            }
            seen.extend(batch.iter().map(|m| m.body.clone()));
            join_all(batch.iter().map(|m| self.deliver(worker, m, copies))).await;
        }
    }

    async fn deliver(&self, worker: &Worker, message: &Received, copies: usize) {
        let outcomes = join_all((0..copies).map(|_| worker.handle(message))).await;
        if outcomes.iter().any(Result::is_ok) {
            // The queue may refuse a receipt that a retry changed; then the
            // message simply comes back, as in SQS.
            let _ = self
                .state
                .queue
                .delete(QueueName::Steps, &message.receipt)
                .await;
        }
    }

    async fn statuses(&self, runs_: &[&str]) -> Vec<RunStatus> {
        let mut out = Vec::new();
        for run in runs_ {
            out.push(self.run(run).await.status);
        }
        out
    }

    /// The bodies on a dead-letter queue, drained.
    pub async fn dead_letters(&self, queue: QueueName) -> Vec<String> {
        let mut bodies = Vec::new();
        loop {
            let got = self
                .state
                .queue
                .receive(
                    queue,
                    10,
                    Duration::from_secs(30),
                    Duration::from_millis(300),
                )
                .await
                .unwrap();
            if got.is_empty() {
                return bodies;
            }
            for m in got {
                bodies.push(m.body.clone());
                self.state.queue.delete(queue, &m.receipt).await.unwrap();
            }
        }
    }

    /// Today's cost and calls in the owner's usage.
    pub async fn billed_today(&self) -> (Decimal, u64) {
        let today = lambent_core::time::today();
        let (_, totals) = usage::report(
            self.state.store.as_ref(),
            &Scope::User(self.owner.clone()),
            Dimension::Day,
            &today,
            &today,
        )
        .await
        .unwrap();
        (totals.cost_usd, totals.calls)
    }

    /// The prompt of every call the fake provider answered.
    pub fn prompts_asked(&self) -> BTreeSet<String> {
        self.fake
            .requests()
            .iter()
            .map(|r| {
                r.body["messages"][0]["content"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect()
    }

    /// How many calls the fake provider answered.
    pub fn provider_calls(&self) -> usize {
        self.fake
            .requests()
            .iter()
            .filter(|r| r.path.ends_with("/messages"))
            .count()
    }
}

use lambent_testkit::DIAMOND as DAG;

/// What each step of [`DAG`] answers for `topic`, by the echo rule.
fn expected_outputs(topic: &str) -> BTreeMap<String, String> {
    let research = format!("{ECHO}Research {topic}");
    let summary = format!("{ECHO}Summarise: {research}");
    let critique = format!("{ECHO}Critique: {research}");
    let merge = format!("{ECHO}Merge [{summary}] with [{critique}]");
    let title = format!("{ECHO}Title for {topic}");
    [
        ("research", research),
        ("summary", summary),
        ("critique", critique),
        ("merge", merge),
        ("title", title),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

fn outputs(run: &RunView) -> BTreeMap<String, String> {
    run.steps
        .iter()
        .map(|s| (s.id.clone(), s.output.clone().unwrap_or_default()))
        .collect()
}

/// A succeeded run of [`DAG`]: every output as expected, each step billed
/// once, the run's cost their sum.
fn assert_succeeded_once(run: &RunView, topic: &str) {
    assert_eq!(run.status, RunStatus::Succeeded, "{run:#?}");
    assert_eq!(outputs(run), expected_outputs(topic));
    for step in &run.steps {
        assert_eq!(step.status, StepStatus::Succeeded, "{step:#?}");
        assert_eq!(step.cost_usd, Some(d(STEP_COST)), "{step:#?}");
        assert_eq!(step.usage.input_tokens, 100);
        assert_eq!(step.usage.output_tokens, 20);
    }
    assert_eq!(run.cost_usd, d(STEP_COST) * Decimal::from(5));
    assert_eq!(run.usage.input_tokens, 500);
    assert!(run.finished_at.is_some());
}

pub async fn data_flows_between_steps(flow: &Flow) {
    let workflow = flow.workflow(DAG).await;
    // The definition is stored with each step after its dependencies.
    let order: Vec<&str> = workflow.steps.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(order, ["research", "title", "summary", "critique", "merge"]);

    let run_id = flow.start(&workflow, json!({"topic": "bees"}), None).await;
    let before = flow.run(&run_id).await;
    assert_eq!(before.status, RunStatus::Pending);
    let waiting: BTreeSet<&str> = before
        .steps
        .iter()
        .filter(|s| s.status == StepStatus::Waiting)
        .map(|s| s.id.as_str())
        .collect();
    assert_eq!(waiting, BTreeSet::from(["summary", "critique", "merge"]));

    flow.drive(&flow.worker, &[&run_id], 1).await;
    let run = flow.run(&run_id).await;
    assert_succeeded_once(&run, "bees");
    assert!(run.steps.iter().all(|s| s.attempts == 1));
    // Each model call was asked the prompt built from the outputs before it.
    let asked = flow.prompts_asked();
    let expected_prompts: BTreeSet<String> = expected_outputs("bees")
        .values()
        .map(|o| o.trim_start_matches(ECHO).to_owned())
        .collect();
    assert_eq!(asked, expected_prompts);
    assert_eq!(flow.provider_calls(), 5);
    assert_eq!(
        flow.billed_today().await,
        (d(STEP_COST) * Decimal::from(5), 5)
    );
    assert!(flow
        .dead_letters(QueueName::StepsDeadLetter)
        .await
        .is_empty());
}

pub async fn every_message_delivered_twice_changes_nothing(flow: &Flow) {
    let workflow = flow.workflow(DAG).await;
    let once = flow.start(&workflow, json!({"topic": "ants"}), None).await;
    flow.drive(&flow.worker, &[&once], 1).await;
    let calls_once = flow.provider_calls();

    let twice = flow.start(&workflow, json!({"topic": "ants"}), None).await;
    let bodies = flow.drive(&flow.worker, &[&twice], 2).await;
    let after_twice = flow.run(&twice).await;
    assert_succeeded_once(&after_twice, "ants");
    assert_eq!(outputs(&after_twice), outputs(&flow.run(&once).await));
    assert_eq!(
        flow.provider_calls(),
        calls_once * 2,
        "a duplicate called the provider"
    );

    // Every message once more, after the run finished: nothing changes.
    for body in &bodies {
        flow.state
            .queue
            .send(QueueName::Steps, body, Duration::ZERO)
            .await
            .unwrap();
    }
    flow.drive(&flow.worker, &[&twice], 1).await;
    assert_eq!(flow.run(&twice).await, after_twice);
    assert_eq!(flow.provider_calls(), calls_once * 2);
    assert_eq!(
        flow.billed_today().await,
        (d(STEP_COST) * Decimal::from(10), 10)
    );
}

/// A worker that stops at `point` the first time each step reaches it.
fn crashing_once_at(worker: &Worker, point: Point) -> Worker {
    let crashed: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
    worker.clone().crashing(Arc::new(move |at, step| {
        at == point && crashed.lock().unwrap().insert(step.to_owned())
    }))
}

pub async fn a_crash_at_each_point_of_a_step_bills_it_once(flow: &Flow) {
    let workflow = flow.workflow(DAG).await;
    let mut billed = Decimal::ZERO;
    for point in [
        Point::Claimed,
        Point::Answered,
        Point::Checkpointed,
        Point::Enqueued,
    ] {
        let calls_before = flow.provider_calls();
        let run_id = flow.start(&workflow, json!({"topic": "moths"}), None).await;
        let worker = crashing_once_at(&flow.worker, point);
        flow.drive(&worker, &[&run_id], 1).await;
        let run = flow.run(&run_id).await;
        assert_succeeded_once(&run, "moths");
        // A crash before the checkpoint costs a second attempt; after it, none.
        let attempts: Vec<u32> = run.steps.iter().map(|s| s.attempts).collect();
        let expected_attempts = match point {
            Point::Claimed | Point::Answered => 2,
            Point::Checkpointed | Point::Enqueued => 1,
        };
        assert!(
            attempts.iter().all(|a| *a == expected_attempts),
            "{point:?}: {attempts:?}"
        );
        // Only a crash between the answer and the checkpoint asks again.
        let calls = flow.provider_calls() - calls_before;
        let expected_calls = if point == Point::Answered { 10 } else { 5 };
        assert_eq!(calls, expected_calls, "{point:?}");
        billed += d(STEP_COST) * Decimal::from(5);
        assert_eq!(flow.billed_today().await.0, billed, "{point:?}");
    }
    assert!(flow
        .dead_letters(QueueName::StepsDeadLetter)
        .await
        .is_empty());
}

/// A step whose agent has a server tool, crashed after its first round was
/// journaled (the tool's result too) and its second reply was in: the
/// next attempt goes on from the journal, so the first round's model call
/// and the tool call are not made again; the reply the crash lost is asked
/// again (its reservation is left to the sweeper: what the provider billed
/// for it was never learnt).
pub async fn a_step_running_the_agent_loop_goes_on_from_its_journal_after_a_crash(flow: &Flow) {
    let store = flow.state.store.as_ref();
    let tools = ToolServer::start().await.unwrap();
    tools.set_default("/lookup", ToolReply::json(json!({"found": true})));
    let agent_id = agents::new_id();
    let lookup = ToolSpec {
        name: "lookup".into(),
        description: None,
        input_schema: json!({"type": "object"}),
        http: Some(HttpToolSpec {
            url: tools.url("/lookup"),
            headers: Default::default(),
            timeout_ms: None,
        }),
        requires_approval: false,
    };
    let sealed = agents::seal_tools(
        flow.state.cipher.as_ref(),
        &flow.owner,
        &agent_id,
        vec![lookup],
        &Default::default(),
    )
    .await
    .unwrap();
    agents::create(
        store,
        &flow.state.catalog,
        &flow.owner,
        &agent_id,
        AgentSpec {
            name: "looper".into(),
            provider_id: flow.provider.clone(),
            model: MODEL.into(),
            system_prompt: None,
            temperature: None,
            max_tokens: 100,
            context_token_budget: 100_000,
            tools: sealed,
            tool_choice: Default::default(),
            max_tool_rounds: agents::DEFAULT_MAX_TOOL_ROUNDS,
        },
    )
    .await
    .unwrap();
    let steps = vec![StepSpec {
        id: "look".into(),
        agent_id: agent_id.clone(),
        prompt: "Look up {{input.topic}}".into(),
        depends_on: Vec::new(),
    }];
    let definition = Definition::validate("loop", steps).unwrap();
    let workflow = workflows::create(store, &flow.owner, definition)
        .await
        .unwrap();
    let usage = FakeUsage {
        input: 100,
        output: 20,
        ..FakeUsage::default()
    };
    flow.fake.push(
        Reply::tool_calls([])
            .with_tool_call("call_j1", "lookup", r#"{"q":"moths"}"#)
            .usage(usage),
    );
    flow.fake
        .push(Reply::text("lost in the crash").usage(usage));
    flow.fake.push(Reply::text("moths found").usage(usage));
    let calls_before = flow.provider_calls();
    let (billed_before, _) = flow.billed_today().await;
    let run_id = flow.start(&workflow, json!({"topic": "moths"}), None).await;
    // Crash at the second answer only.
    let answers = Arc::new(Mutex::new(0));
    let worker = flow.worker.clone().crashing(Arc::new(move |at, _| {
        if at != Point::Answered {
            return false;
        }
        let mut n = answers.lock().unwrap();
        *n += 1;
        *n == 2
    }));
    flow.drive(&worker, &[&run_id], 1).await;
    let run = flow.run(&run_id).await;
    assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
    assert_eq!(run.steps[0].output.as_deref(), Some("moths found"));
    assert_eq!(run.steps[0].attempts, 2);
    assert_eq!(
        tools.count_with_key("call_j1"),
        1,
        "the journaled result is not asked again"
    );
    assert_eq!(
        flow.provider_calls() - calls_before,
        3,
        "round 1 once, round 2 twice"
    );
    // Round 1 was billed with its journal entry, the last reply by the
    // checkpoint: 2 x (100 x 3 + 20 x 15) micro-dollars.
    let (billed, _) = flow.billed_today().await;
    assert_eq!(billed - billed_before, d("0.0012"));
    assert_eq!(run.cost_usd, d("0.0012"));
    // The model saw the journaled result in the call after the crash.
    let last = flow.fake.requests().pop().unwrap().body.to_string();
    assert!(last.contains("call_j1") && last.contains("found"), "{last}");
}

pub async fn poison_messages_go_to_the_dead_letter_queue(flow: &Flow) {
    let poison = [
        "not json at all",
        r#"{"run_id": "run_nosuchrun", "step_id": "a"}"#,
        r#"{"run": "missing fields"}"#,
    ];
    for body in poison {
        flow.state
            .queue
            .send(QueueName::Steps, body, Duration::ZERO)
            .await
            .unwrap();
    }
    // A good run in the same batches goes on.
    let workflow = flow
        .workflow(&[("only", "Hello {{input.name}}", &[])])
        .await;
    let run_id = flow.start(&workflow, json!({"name": "x"}), None).await;
    flow.drive(&flow.worker, &[&run_id], 1).await;
    assert_eq!(flow.run(&run_id).await.status, RunStatus::Succeeded);
    let dead: BTreeSet<String> = flow
        .dead_letters(QueueName::StepsDeadLetter)
        .await
        .into_iter()
        .collect();
    assert_eq!(dead, poison.iter().map(|p| (*p).to_owned()).collect());
}

pub async fn a_step_that_keeps_failing_fails_the_run_after_n_attempts(flow: &Flow) {
    let workflow = flow
        .workflow(&[
            ("first", "Fail {{input.x}}", &[]),
            ("second", "After {{steps.first.output}}", &["first"]),
        ])
        .await;
    flow.fake
        .set_default(Reply::http_error(500, "api_error", "Internal server error"));
    let run_id = flow.start(&workflow, json!({"x": "1"}), None).await;
    flow.drive(&flow.worker, &[&run_id], 1).await;
    let run = flow.run(&run_id).await;
    assert_eq!(run.status, RunStatus::Failed, "{run:#?}");
    let first = &run.steps[0];
    assert_eq!(first.status, StepStatus::Failed);
    assert_eq!(first.attempts, flow.state.config.step_max_attempts);
    let error = first.error.as_deref().unwrap_or_default();
    assert!(error.contains("HTTP 500"), "{error}");
    assert!(run
        .error
        .as_deref()
        .unwrap_or_default()
        .starts_with("step first:"));
    assert_eq!(run.steps[1].status, StepStatus::Cancelled);
    assert_eq!(run.cost_usd, Decimal::ZERO);
    assert_eq!(flow.provider_calls(), 3);
    let dead = flow.dead_letters(QueueName::StepsDeadLetter).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(dead[0].contains(&run_id));
}

/// On Lambda a step's model call may use what is left of the invocation
/// (`Allowance::until`), not a fixed share of the configured lease: a reply
/// slower than 80 % of the lease fails an attempt bounded by the lease, and
/// the same reply succeeds in an invocation with time left.
pub async fn a_step_may_use_what_is_left_of_its_invocation(flow: &Flow) {
    let workflow = flow.workflow(&[("slow", "Think {{input.x}}", &[])]).await;
    let slow = flow.timing.lease.mul_f64(0.8) + Duration::from_millis(700);
    flow.fake
        .set_default(Reply::echo(ECHO).first_byte_delay(slow).usage(FakeUsage {
            input: 100,
            output: 20,
            ..FakeUsage::default()
        }));
    let run_id = flow.start(&workflow, json!({"x": "1"}), None).await;

    let first = flow.next_step_message().await;
    flow.worker
        .handle(&first)
        .await
        .expect_err("bounded by the lease, the slow call fails the attempt");
    let run = flow.run(&run_id).await;
    let error = run.steps[0].error.as_deref().unwrap_or_default();
    assert!(error.contains("took longer than"), "{run:#?}");
    assert_eq!(run.steps[0].attempts, 1);

    // The retry comes back after its backoff, in an invocation with 20 s left.
    let again = flow.next_step_message().await;
    let invocation_ends = flow.state.clock.now_millis() + 20_000;
    flow.worker
        .handle_within(&again, Allowance::until(invocation_ends))
        .await
        .unwrap();
    let run = flow.run(&run_id).await;
    assert_eq!(run.status, RunStatus::Succeeded, "{run:#?}");
    assert_eq!(run.steps[0].attempts, 2);
    assert_eq!(run.steps[0].output.as_deref(), Some("out:Think 1"));
}

pub async fn a_deleted_agent_fails_its_step_clearly(flow: &Flow) {
    let workflow = flow
        .workflow(&[("a", "One", &[]), ("b", "Two {{steps.a.output}}", &["a"])])
        .await;
    let run_id = flow.start(&workflow, json!({}), None).await;
    agents::delete(flow.state.store.as_ref(), &flow.owner, &flow.agent)
        .await
        .unwrap();
    flow.state.targets.evict_owner(&flow.owner);
    flow.drive(&flow.worker, &[&run_id], 1).await;
    let run = flow.run(&run_id).await;
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(run.steps[0].attempts, 1, "a deleted agent is not retried");
    let error = run.steps[0].error.clone().unwrap_or_default();
    assert!(error.contains("no longer exists"), "{error}");
    assert_eq!(flow.provider_calls(), 0);
    // A new run is refused before it starts.
    let refused = lambent_app::workflows::start_run(
        flow.state.store.as_ref(),
        flow.state.queue.as_ref(),
        &flow.owner,
        &workflow,
        Default::default(),
        None,
    )
    .await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.to_string().contains("no longer exists")),
        "{refused:?}"
    );
}

pub async fn a_cancelled_run_starts_no_further_step(flow: &Flow) {
    let workflow = flow
        .workflow(&[
            ("a", "One", &[]),
            ("b", "Two {{steps.a.output}}", &["a"]),
            ("c", "Three {{steps.b.output}}", &["b"]),
        ])
        .await;
    let run_id = flow.start(&workflow, json!({}), None).await;
    // Run only the first step, then cancel.
    let batch = flow
        .state
        .queue
        .receive(
            QueueName::Steps,
            10,
            flow.timing.visibility,
            Duration::from_secs(2),
        )
        .await
        .unwrap();
    assert_eq!(batch.len(), 1);
    flow.worker.handle(&batch[0]).await.unwrap();
    flow.state
        .queue
        .delete(QueueName::Steps, &batch[0].receipt)
        .await
        .unwrap();
    let cancelled = runs::cancel(flow.state.store.as_ref(), &flow.owner, &run_id)
        .await
        .unwrap();
    assert_eq!(cancelled.status, RunStatus::Cancelled);
    flow.drive(&flow.worker, &[&run_id], 1).await;
    let run = flow.run(&run_id).await;
    let statuses: Vec<StepStatus> = run.steps.iter().map(|s| s.status).collect();
    assert_eq!(
        statuses,
        [
            StepStatus::Succeeded,
            StepStatus::Cancelled,
            StepStatus::Cancelled
        ]
    );
    assert_eq!(run.status, RunStatus::Cancelled);
    assert_eq!(run.cost_usd, d(STEP_COST));
    assert_eq!(flow.provider_calls(), 1);
    // Cancelling again is a conflict.
    assert!(
        runs::cancel(flow.state.store.as_ref(), &flow.owner, &run_id)
            .await
            .is_err()
    );
}

pub async fn triggers_start_runs_once_and_dead_letter_the_malformed(flow: &Flow) {
    let workflow = flow.workflow(&[("only", "Hi {{input.who}}", &[])]).await;
    let good =
        json!({"workflow_id": workflow.id, "input": {"who": "A"}, "idempotency_key": "evt-1"})
            .to_string();
    let bodies = [
        good.clone(),
        "{oops".to_owned(),
        json!({"workflow_id": "wfl_doesnotexist", "input": {}}).to_string(),
        json!({"workflow_id": workflow.id, "input": {}}).to_string(), // input.who missing
        good.clone(),                                                 // the same event again
        json!({"workflow_id": workflow.id, "input": {"who": "B"}}).to_string(),
    ];
    for body in &bodies {
        flow.state
            .queue
            .send(QueueName::Triggers, body, Duration::ZERO)
            .await
            .unwrap();
    }
    let mut handled = 0;
    while handled < bodies.len() {
        let batch = flow
            .state
            .queue
            .receive(
                QueueName::Triggers,
                10,
                Duration::from_secs(30),
                Duration::from_secs(2),
            )
            .await
            .unwrap();
        assert!(!batch.is_empty(), "triggers went missing");
        for m in batch {
            lambent_app::workflows::trigger::start_run(&flow.state, &m)
                .await
                .unwrap();
            flow.state
                .queue
                .delete(QueueName::Triggers, &m.receipt)
                .await
                .unwrap();
            handled += 1;
        }
    }
    let dead: BTreeSet<String> = flow
        .dead_letters(QueueName::TriggersDeadLetter)
        .await
        .into_iter()
        .collect();
    assert_eq!(
        dead,
        BTreeSet::from([bodies[1].clone(), bodies[2].clone(), bodies[3].clone()])
    );
    // Two runs: evt-1 (once) and the one without a key.
    flow.drive(&flow.worker, &[], 1).await;
    assert_eq!(flow.provider_calls(), 2);
    let asked = flow.prompts_asked();
    assert_eq!(
        asked,
        BTreeSet::from(["Hi A".to_owned(), "Hi B".to_owned()])
    );
}

pub async fn an_idempotency_key_starts_one_run(flow: &Flow) {
    let workflow = flow.workflow(&[("only", "Hi", &[])]).await;
    let starts = join_all((0..6).map(|_| {
        lambent_app::workflows::start_run(
            flow.state.store.as_ref(),
            flow.state.queue.as_ref(),
            &flow.owner,
            &workflow,
            Default::default(),
            Some("same-key"),
        )
    }))
    .await;
    let ids: BTreeSet<String> = starts.into_iter().map(|s| s.unwrap().run_id).collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    let other = flow.start(&workflow, json!({}), Some("another-key")).await;
    assert!(!ids.contains(&other));
    let run_id = ids.into_iter().next().unwrap();
    flow.drive(&flow.worker, &[&run_id, &other], 1).await;
    assert_eq!(flow.provider_calls(), 2);
    let run = flow.run(&run_id).await;
    assert_eq!(run.idempotency_key.as_deref(), Some("same-key"));
    assert_eq!(run.status, RunStatus::Succeeded);
}

pub async fn run_costs_count_against_the_monthly_budget(flow: &Flow) {
    // Each step reserves its worst case (the prompt at the dearest input
    // rate plus 100 output tokens, about 0.0016 USD) and costs 0.0006: the
    // first step fits 0.002, the second no longer does.
    users::update(
        flow.state.store.as_ref(),
        &flow.owner,
        users::UserChange {
            monthly_budget_usd: Some(Some(d("0.002"))),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let workflow = flow
        .workflow(&[
            ("first", "One", &[]),
            ("second", "Two {{steps.first.output}}", &["first"]),
        ])
        .await;
    let run_id = flow.start(&workflow, json!({}), None).await;
    flow.drive(&flow.worker, &[&run_id], 1).await;
    let run = flow.run(&run_id).await;
    assert_eq!(run.status, RunStatus::Failed, "{run:#?}");
    assert_eq!(run.steps[0].status, StepStatus::Succeeded);
    assert_eq!(run.steps[1].status, StepStatus::Failed);
    assert_eq!(run.steps[1].attempts, 1, "a budget refusal is not retried");
    let error = run.steps[1].error.clone().unwrap_or_default();
    assert!(
        error.starts_with("budget_exceeded: the monthly budget of 0.002 USD"),
        "{error}"
    );
    assert_eq!(run.cost_usd, d(STEP_COST));
    assert_eq!(flow.provider_calls(), 1);
    assert_eq!(flow.billed_today().await, (d(STEP_COST), 1));
    // The month counts what was spent, and nothing stays reserved.
    let month = flow
        .state
        .store
        .get(&lambent_store::budgets::month_key(
            &flow.owner,
            lambent_core::time::month_of(&lambent_core::time::today()),
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(month.get_decimal("spent_usd"), Some(d(STEP_COST)));
    assert_eq!(month.get_decimal("committed_usd"), Some(d(STEP_COST)));
}

/// The store round trips of the step protocol, as `flowbench` reports them
/// (docs/PERFORMANCE.md), counted here through the port so CI guards them:
/// a run starts in 3 (4 with an idempotency key); a step of a warm worker
/// costs 2 (the claim, the checkpoint), 3 under a monthly limit (and the
/// reservation).
pub async fn store_round_trips_stay_as_designed(flow: &Flow) {
    let meter = Meter::new();
    let counted = State {
        store: Arc::new(CountingStore::new(flow.state.store.clone(), meter.clone())),
        ..flow.state.clone()
    };
    let worker = Worker::new(counted.clone()).unwrap();
    let workflow = flow
        .workflow(&[
            ("a", "A", &[]),
            ("b", "B {{steps.a.output}}", &["a"]),
            ("c", "C {{steps.b.output}}", &["b"]),
        ])
        .await;
    let start = |key: Option<&'static str>| {
        let (counted, workflow, owner) = (counted.clone(), workflow.clone(), flow.owner.clone());
        let meter = meter.clone();
        async move {
            let before = meter.snapshot();
            let started = lambent_app::workflows::start_run(
                counted.store.as_ref(),
                counted.queue.as_ref(),
                &owner,
                &workflow,
                Default::default(),
                key,
            )
            .await
            .unwrap();
            (
                started.run_id,
                meter.snapshot().since(&before).round_trips(),
            )
        }
    };

    // A first run warms the worker's agent cache.
    let (warm, _) = start(None).await;
    flow.drive(&worker, &[&warm], 1).await;

    let (run, trips) = start(None).await;
    assert_eq!(trips, 3, "a run's start");
    assert_eq!(flow.step_trips(&worker, &meter, &run).await, [2, 2, 2]);

    users::update(
        flow.state.store.as_ref(),
        &flow.owner,
        users::UserChange {
            monthly_budget_usd: Some(Some(d("100"))),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let (run, trips) = start(Some("round-trips")).await;
    assert_eq!(trips, 4, "a run's start with an idempotency key");
    assert_eq!(flow.step_trips(&worker, &meter, &run).await, [3, 3, 3]);
}

impl Flow {
    /// Hands `run`'s step messages to `worker` one at a time until the run
    /// finishes; the store round trips of each.
    async fn step_trips(&self, worker: &Worker, meter: &Meter, run: &str) -> Vec<u64> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut trips = Vec::new();
        while self.run(run).await.status != RunStatus::Succeeded {
            assert!(Instant::now() < deadline, "run {run} did not finish");
            let got = self.receive_steps(1).await;
            for message in got {
                let before = meter.snapshot();
                worker.handle(&message).await.unwrap();
                trips.push(meter.snapshot().since(&before).round_trips());
                self.state
                    .queue
                    .delete(QueueName::Steps, &message.receipt)
                    .await
                    .unwrap();
            }
        }
        trips
    }
}
