//! Workflow benchmark: what the step worker costs per step, in store round
//! trips and in time of its own.
//!
//! It builds a `State` on the embedded backend (SQLite in a temporary data
//! directory) whose store, queue and key cipher are wrapped by counting
//! ports (`lambent_bench::flow`), starts the fake provider (echoing, at
//! once) in this process, and sets up a member without a monthly budget and
//! one with, each with a provider and an agent. Then, for each scenario:
//!
//! 1. it starts `--runs` runs with `runs::start`, one at a time, counting
//!    each start's port calls;
//! 2. it receives the step messages from the queue port and hands them to
//!    `Worker::handle` one at a time, so every port call between the
//!    handle's start and end is that step's; after each step of a timed
//!    scenario it makes the same model call again with the worker's own
//!    `LlmClient` (a bare `complete`, same request), which times the
//!    provider call;
//! 3. it checks every run succeeded, each step once and billed once.
//!
//! Scenarios: a 10-step chain (step k uses `{{steps.<k-1>.output}}`),
//! without and with a monthly budget (timed); the chain started with an
//! idempotency key; a diamond with a join and a second sink (counts only).
//! Each repetition is a fresh data directory. With `--aws-endpoint` it also
//! counts the same on DynamoDB, SQS and KMS in the emulator (moto).
//!
//! Prints a Markdown report on stdout, progress on stderr.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use lambent_app::config::Config;
use lambent_app::state::State;
use lambent_app::workflows::Worker;
use lambent_aws::{DynamoStore, KmsCipher, SecretsManagerSecrets, SqsQueue};
use lambent_bench::chat::{percentile, Latencies};
use lambent_bench::flow::{
    describe_histogram, micros, overheads, per_sample_means, round_trip_histogram, thousands, Call,
    CountingCipher, CountingQueue, CountingStore, CpuMark, CpuUse, Meter, Spread, StepSample,
    Tally, Traced, GOAL_OVERHEAD_US, GOAL_ROUND_TRIPS_PER_STEP,
};
use lambent_core::auth::Role;
use lambent_core::secret::SecretString;
use lambent_core::workflow::{Definition, StepSpec};
use lambent_embedded::{
    Db, EmbeddedQueue, EmbeddedStore, FileSecrets, LocalCipher, DATABASE_FILE,
    DEFAULT_MAX_RECEIVES, MASTER_KEY_FILE,
};
use lambent_fake_provider::{FakeProvider, FakeUsage, Reply};
use lambent_llm::{ChatRequest, Endpoint, Turn};
use lambent_local::resources::{ensure_all, Names};
use lambent_ports::queue::{QueueName, Received};
use lambent_ports::{ItemStore, KeyCipher, Queue, Secrets};
use lambent_store::agents::{self, AgentSpec};
use lambent_store::models::Prices;
use lambent_store::providers::{self, NewProvider, ProviderKind};
use lambent_store::runs::{self, RunStatus, StepMessage, StepStatus};
use lambent_store::users::{self, NewUser};
use lambent_store::workflows::{self, Workflow};
use rust_decimal::Decimal;

/// The model's catalog name and prices (USD per million tokens).
const MODEL: &str = "fake-flow-model";
/// Every call reports 100 input and 20 output tokens: 100 × 3 + 20 × 15
/// micro-dollars.
const STEP_COST: &str = "0.0006";
/// What the echo answers start with.
const ECHO: &str = "out:";
/// The runs' input.
const TOPIC: &str = "bees";
/// The agents' max_tokens (also sent in the bare calls).
const MAX_TOKENS: u32 = 100;
/// The budgeted member's monthly limit: never reached, so every step
/// reserves and settles.
const MONTHLY_BUDGET_USD: i64 = 1_000_000;
/// How long a received step message stays hidden.
const VISIBILITY: Duration = Duration::from_secs(300);

#[derive(Parser, Debug)]
#[command(
    name = "flowbench",
    about = "Store round trips and orchestration overhead per workflow step, on the embedded backend (and optionally DynamoDB in the emulator)"
)]
struct Options {
    /// Runs per timed scenario (each run is --steps steps).
    #[arg(long, default_value_t = 200)]
    runs: usize,
    /// Steps of the chain.
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// Repetitions on the embedded backend, each on a fresh data directory.
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Unmeasured chain runs before each repetition's scenarios.
    #[arg(long, default_value_t = 20)]
    warmup_runs: usize,
    /// Runs of the counts-only scenarios (idempotency key, diamond).
    #[arg(long, default_value_t = 20)]
    count_runs: usize,
    /// Where the temporary data directories are made [default: the system
    /// temporary directory]. On tmpfs (/dev/shm) SQLite's fsyncs cost nothing.
    #[arg(long)]
    data_root: Option<PathBuf>,
    /// An AWS emulator (moto) to count the same on DynamoDB, SQS and KMS,
    /// e.g. http://127.0.0.1:5055 (start it with scripts/emulator.py).
    #[arg(long)]
    aws_endpoint: Option<String>,
    /// Runs of each scenario on the emulator.
    #[arg(long, default_value_t = 5)]
    aws_runs: usize,
    /// Tokio worker threads (the fake provider shares them).
    #[arg(long, default_value_t = 2)]
    worker_threads: usize,
}

fn main() -> Result<()> {
    let options = Options::parse();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(options.worker_threads.max(1))
        .enable_all()
        .build()
        .context("building the Tokio runtime")?
        .block_on(run(options))
}

async fn run(options: Options) -> Result<()> {
    if options.steps < 2 {
        bail!("--steps must be at least 2 (a chain)");
    }
    let data_root = options.data_root.clone().unwrap_or_else(std::env::temp_dir);
    let mut repetitions = Vec::new();
    for repetition in 1..=options.repeats.max(1) {
        eprintln!(
            "flowbench: repetition {repetition}: embedded backend under {}",
            data_root.display()
        );
        let world = World::embedded(&data_root).await?;
        let chain = Shape::chain(options.steps);
        let warm = world
            .measure(
                &world.plain,
                &chain,
                options.warmup_runs,
                Mode::Untimed,
                false,
            )
            .await?;
        eprintln!("flowbench: warmed up with {} runs", warm.run_ids.len());
        let mut scenarios = Vec::new();
        for (name, member, shape, runs, mode, keyed) in [
            (
                "chain",
                &world.plain,
                &chain,
                options.runs,
                Mode::Timed,
                false,
            ),
            (
                "chain, monthly budget",
                &world.budgeted,
                &chain,
                options.runs,
                Mode::Timed,
                false,
            ),
            (
                "chain, idempotency key",
                &world.plain,
                &chain,
                options.count_runs,
                Mode::Untimed,
                true,
            ),
            (
                "diamond with a join and two sinks",
                &world.plain,
                &Shape::diamond(),
                options.count_runs,
                Mode::Untimed,
                false,
            ),
        ] {
            let mut measured = world.measure(member, shape, runs, mode, keyed).await?;
            measured.name = name.to_owned();
            eprintln!(
                "flowbench: {name}: {} runs, {} steps",
                measured.run_ids.len(),
                measured.samples.len()
            );
            scenarios.push(measured);
        }
        repetitions.push(scenarios);
    }

    let mut emulator = None;
    if let Some(endpoint) = &options.aws_endpoint {
        eprintln!("flowbench: AWS emulator at {endpoint}");
        let world = World::aws(endpoint).await?;
        let chain = Shape::chain(options.steps);
        world
            .measure(&world.plain, &chain, 1, Mode::Untimed, false)
            .await?;
        let mut scenarios = Vec::new();
        for (name, member, shape, keyed) in [
            ("chain", &world.plain, &chain, false),
            ("chain, monthly budget", &world.budgeted, &chain, false),
            ("chain, idempotency key", &world.plain, &chain, true),
            (
                "diamond with a join and two sinks",
                &world.plain,
                &Shape::diamond(),
                false,
            ),
        ] {
            let mut measured = world
                .measure(member, shape, options.aws_runs, Mode::Untimed, keyed)
                .await?;
            measured.name = name.to_owned();
            eprintln!(
                "flowbench: emulator: {name}: {} steps",
                measured.samples.len()
            );
            scenarios.push(measured);
        }
        emulator = Some(scenarios);
    }

    println!(
        "{}",
        report(&options, &data_root, &repetitions, emulator.as_deref())
    );
    Ok(())
}

// ------------------------------------------------------------------ world --

/// A member with a provider (the fake) and an agent.
struct Member {
    id: String,
    agent: String,
}

/// A backend with counting ports, the fake provider, two members and the
/// worker.
struct World {
    state: State,
    meter: Arc<Meter>,
    worker: Worker,
    fake: FakeProvider,
    /// The fake, as the bare calls reach it.
    endpoint: Endpoint,
    plain: Member,
    budgeted: Member,
    _dir: Option<tempfile::TempDir>,
}

fn config() -> Config {
    Config {
        allow_private_provider_urls: true,
        ..Config::default()
    }
}

fn decimal(s: &str) -> Result<Decimal> {
    Decimal::from_str(s).with_context(|| format!("parsing {s}"))
}

impl World {
    async fn embedded(data_root: &Path) -> Result<World> {
        let dir = tempfile::Builder::new()
            .prefix("flowbench-")
            .tempdir_in(data_root)
            .with_context(|| format!("making a data directory in {}", data_root.display()))?;
        let config = config();
        let meter = Meter::new();
        let db = Db::open(&dir.path().join(DATABASE_FILE)).context("opening SQLite")?;
        let cipher = LocalCipher::open_or_create(&dir.path().join(MASTER_KEY_FILE))
            .context("making the master key")?;
        let store: Arc<dyn ItemStore> = Arc::new(CountingStore::new(
            Arc::new(EmbeddedStore::new(db.clone())),
            Arc::clone(&meter),
        ));
        // As `lambent serve` opens it (adapters::embedded::open).
        let queue: Arc<dyn Queue> = Arc::new(CountingQueue::new(
            Arc::new(EmbeddedQueue::new(
                db,
                DEFAULT_MAX_RECEIVES.max(config.step_max_attempts + 2),
            )),
            Arc::clone(&meter),
        ));
        let cipher: Arc<dyn KeyCipher> =
            Arc::new(CountingCipher::new(Arc::new(cipher), Arc::clone(&meter)));
        let secrets: Arc<dyn Secrets> = Arc::new(FileSecrets::new(dir.path().to_path_buf()));
        let state = State::new(config, store, cipher, queue, secrets);
        World::setup(state, meter, Some(dir)).await
    }

    async fn aws(endpoint: &str) -> Result<World> {
        let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(endpoint)
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
                "testing",
                "testing",
                None,
                None,
                "flowbench",
            ))
            .timeout_config(lambent_aws::sdk::timeout_config())
            .retry_config(lambent_aws::sdk::retry_config())
            .load()
            .await;
        let prefix = lambent_core::ids::new_id("flowbench").replace('_', "-");
        let names = Names::with_prefix(&prefix);
        let made = ensure_all(&sdk, &names)
            .await
            .with_context(|| format!("provisioning {prefix} in the emulator"))?;
        let meter = Meter::new();
        let store: Arc<dyn ItemStore> = Arc::new(CountingStore::new(
            Arc::new(DynamoStore::from_conf(&sdk, &made.table)),
            Arc::clone(&meter),
        ));
        let queue: Arc<dyn Queue> = Arc::new(CountingQueue::new(
            Arc::new(SqsQueue::from_conf(&sdk, made.queue_urls)),
            Arc::clone(&meter),
        ));
        let cipher: Arc<dyn KeyCipher> = Arc::new(CountingCipher::new(
            Arc::new(KmsCipher::from_conf(&sdk, &made.kms_key_id)),
            Arc::clone(&meter),
        ));
        let secrets: Arc<dyn Secrets> =
            Arc::new(SecretsManagerSecrets::from_conf(&sdk, &made.secret_id));
        let state = State::new(config(), store, cipher, queue, secrets);
        World::setup(state, meter, None).await
    }

    async fn setup(
        state: State,
        meter: Arc<Meter>,
        dir: Option<tempfile::TempDir>,
    ) -> Result<World> {
        let fake = FakeProvider::start()
            .await
            .context("starting the fake provider")?;
        fake.set_default(Reply::echo(ECHO).usage(FakeUsage {
            input: 100,
            output: 20,
            ..FakeUsage::default()
        }));
        let store = state.store.as_ref();
        state
            .catalog
            .upsert(
                store,
                MODEL,
                ProviderKind::Anthropic,
                Prices {
                    input_per_mtok: decimal("3")?,
                    output_per_mtok: decimal("15")?,
                    cache_read_per_mtok: decimal("0.3")?,
                    cache_write_per_mtok: decimal("3.75")?,
                },
            )
            .await?;
        let plain = member(&state, &fake, "runner", None).await?;
        let budgeted = member(
            &state,
            &fake,
            "budgeted",
            Some(Decimal::from(MONTHLY_BUDGET_USD)),
        )
        .await?;
        let worker = Worker::new(state.clone()).map_err(|e| anyhow!("building the worker: {e}"))?;
        let endpoint = Endpoint {
            kind: ProviderKind::Anthropic,
            base_url: Some(fake.anthropic_base_url()),
            api_key: SecretString::from("sk-flowbench".to_owned()),
        };
        Ok(World {
            state,
            meter,
            worker,
            fake,
            endpoint,
            plain,
            budgeted,
            _dir: dir,
        })
    }

    /// Starts `runs` runs of `shape` for `member`, one at a time, then runs
    /// every step, one at a time; checks they all succeeded once.
    async fn measure(
        &self,
        member: &Member,
        shape: &Shape,
        runs: usize,
        mode: Mode,
        keyed: bool,
    ) -> Result<Measured> {
        let workflow = shape.create(&self.state, member).await?;
        let mut input = serde_json::Map::new();
        input.insert("topic".into(), serde_json::Value::from(TOPIC));
        let mut measured = Measured {
            steps_per_run: shape.steps.len(),
            ..Measured::default()
        };
        for i in 0..runs {
            let key = keyed.then(|| format!("bench-{}", lambent_core::ids::new_id("k")));
            if i == 0 {
                self.meter.start_trace();
            }
            let before = self.meter.snapshot();
            let started = Instant::now();
            let run = lambent_app::workflows::start_run(
                self.state.store.as_ref(),
                self.state.queue.as_ref(),
                &member.id,
                &workflow,
                input.clone(),
                key.as_deref(),
            )
            .await
            .context("starting a run")?;
            let took = started.elapsed();
            measured
                .starts
                .push((self.meter.snapshot().since(&before), took));
            if i == 0 {
                measured.start_trace = self.meter.take_trace();
            }
            measured.run_ids.push(run.run_id);
        }
        let traced_run = measured.run_ids.first().cloned();
        if mode == Mode::Timed {
            // The provider connection sat idle while the runs started: one
            // unmeasured call, so the first step does not pay for that.
            self.bare_call("s1").await?;
        }
        let cpu_before = CpuMark::now();
        let total = runs * shape.steps.len();
        let deadline = Instant::now() + Duration::from_secs(1800);
        while measured.samples.len() < total {
            if Instant::now() > deadline {
                bail!(
                    "only {} of {total} steps ran within 30 minutes",
                    measured.samples.len()
                );
            }
            let batch = self
                .state
                .queue
                .receive(QueueName::Steps, 10, VISIBILITY, Duration::from_millis(100))
                .await
                .context("receiving step messages")?;
            for message in batch {
                self.step(&message, mode, traced_run.as_deref(), &mut measured)
                    .await?;
            }
        }
        measured.cpu = CpuMark::now().since(&cpu_before, cores());
        self.check(member, &measured.run_ids, shape.steps.len())
            .await?;
        self.fake.clear_requests();
        Ok(measured)
    }

    /// Hands one message to the worker, counting its port calls.
    async fn step(
        &self,
        message: &Received,
        mode: Mode,
        traced_run: Option<&str>,
        measured: &mut Measured,
    ) -> Result<()> {
        let at: StepMessage = serde_json::from_str(&message.body)
            .with_context(|| format!("not a step message: {}", message.body))?;
        let tracing = traced_run == Some(at.run_id.as_str());
        if tracing {
            self.meter.start_trace();
        }
        let before = self.meter.snapshot();
        let started = Instant::now();
        let outcome = self.worker.handle(message).await;
        let handle = started.elapsed();
        let tally = self.meter.snapshot().since(&before);
        if tracing {
            measured
                .traces
                .insert(at.step_id.clone(), self.meter.take_trace());
        }
        outcome.map_err(|e| anyhow!("step {} of {}: {e}", at.step_id, at.run_id))?;
        if mode == Mode::Timed {
            // The same model call again, bare: what the provider call costs.
            measured.bare.push(self.bare_call(&at.step_id).await?);
        }
        measured.samples.push(StepSample {
            step: at.step_id,
            tally,
            handle,
        });
        self.state
            .queue
            .delete(QueueName::Steps, &message.receipt)
            .await
            .context("deleting a step message")?;
        Ok(())
    }

    /// The model call of chain step `step_id`, made directly with the
    /// worker's own client; how long it took.
    async fn bare_call(&self, step_id: &str) -> Result<Duration> {
        let request = ChatRequest {
            model: MODEL.into(),
            system: None,
            turns: vec![Turn {
                role: lambent_core::chat::Role::User,
                content: chain_prompt(step_id)?,
            }],
            max_tokens: MAX_TOKENS,
            temperature: None,
        };
        let started = Instant::now();
        self.worker
            .llm
            .complete(&self.endpoint, &request)
            .await
            .map_err(|e| anyhow!("bare provider call: {e}"))?;
        Ok(started.elapsed())
    }

    /// Every run succeeded, each step once, billed once.
    async fn check(&self, member: &Member, run_ids: &[String], steps: usize) -> Result<()> {
        let step_cost = decimal(STEP_COST)?;
        for run_id in run_ids {
            let run = runs::get(self.state.store.as_ref(), &member.id, run_id)
                .await?
                .ok_or_else(|| anyhow!("run {run_id} is missing"))?;
            let once = run
                .steps
                .iter()
                .all(|s| s.status == StepStatus::Succeeded && s.attempts == 1);
            if run.status != RunStatus::Succeeded
                || !once
                || run.steps.len() != steps
                || run.cost_usd != step_cost * Decimal::from(steps as u64)
            {
                bail!("run {run_id} did not succeed once per step: {run:#?}");
            }
        }
        Ok(())
    }
}

async fn member(
    state: &State,
    fake: &FakeProvider,
    name: &str,
    monthly_budget_usd: Option<Decimal>,
) -> Result<Member> {
    let store = state.store.as_ref();
    let id = users::create(
        store,
        NewUser {
            name: name.into(),
            role: Role::Member,
            monthly_budget_usd,
        },
    )
    .await?
    .id;
    let provider = providers::create(
        store,
        state.cipher.as_ref(),
        &id,
        NewProvider {
            kind: ProviderKind::Anthropic,
            name: "fake".into(),
            api_key: SecretString::from("sk-flowbench".to_owned()),
            base_url: Some(fake.anthropic_base_url()),
        },
    )
    .await?;
    let agent = agents::create(
        store,
        &state.catalog,
        &id,
        AgentSpec {
            name: "stepper".into(),
            provider_id: provider.id,
            model: MODEL.into(),
            system_prompt: None,
            temperature: None,
            max_tokens: i64::from(MAX_TOKENS),
            context_token_budget: 100_000,
        },
    )
    .await?;
    Ok(Member {
        id,
        agent: agent.id,
    })
}

/// A workflow's steps: `(id, prompt, depends_on)`.
struct Shape {
    steps: Vec<(String, String, Vec<String>)>,
}

impl Shape {
    /// `s1` … `sN`, each using the output of the one before.
    fn chain(n: usize) -> Shape {
        let steps = (1..=n)
            .map(|k| {
                if k == 1 {
                    (
                        "s1".to_owned(),
                        "Write about {{input.topic}}".to_owned(),
                        vec![],
                    )
                } else {
                    let before = format!("s{}", k - 1);
                    (
                        format!("s{k}"),
                        format!("Continue: {{{{steps.{before}.output}}}}"),
                        vec![before],
                    )
                }
            })
            .collect();
        Shape { steps }
    }

    /// The integration tests' diamond: a join, and an independent second sink.
    fn diamond() -> Shape {
        let step = |id: &str, prompt: &str, deps: &[&str]| {
            (
                id.to_owned(),
                prompt.to_owned(),
                deps.iter().map(|d| (*d).to_owned()).collect(),
            )
        };
        Shape {
            steps: vec![
                step("research", "Research {{input.topic}}", &[]),
                step(
                    "summary",
                    "Summarise: {{steps.research.output}}",
                    &["research"],
                ),
                step(
                    "critique",
                    "Critique: {{steps.research.output}}",
                    &["research"],
                ),
                step(
                    "merge",
                    "Merge [{{steps.summary.output}}] with [{{steps.critique.output}}]",
                    &["summary", "critique"],
                ),
                step("title", "Title for {{input.topic}}", &[]),
            ],
        }
    }

    async fn create(&self, state: &State, member: &Member) -> Result<Workflow> {
        let steps = self
            .steps
            .iter()
            .map(|(id, prompt, deps)| StepSpec {
                id: id.clone(),
                agent_id: member.agent.clone(),
                prompt: prompt.clone(),
                depends_on: deps.clone(),
            })
            .collect();
        let definition = Definition::validate("flowbench", steps)?;
        Ok(workflows::create(state.store.as_ref(), &member.id, definition).await?)
    }
}

/// The prompt the worker sends for chain step `s<k>`, by the echo rule:
/// `s1` asks `Write about bees`, and each later step `Continue: ` and the
/// answer before it, which is `out:` and that step's prompt.
fn chain_prompt(step_id: &str) -> Result<String> {
    let k: usize = step_id
        .strip_prefix('s')
        .and_then(|k| k.parse().ok())
        .ok_or_else(|| anyhow!("not a chain step: {step_id}"))?;
    let mut prompt = format!("Write about {TOPIC}");
    for _ in 1..k {
        prompt = format!("Continue: {ECHO}{prompt}");
    }
    Ok(prompt)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Each step is followed by a bare provider call of the same request.
    Timed,
    /// Counts only.
    Untimed,
}

/// One scenario of one repetition.
#[derive(Default)]
struct Measured {
    name: String,
    steps_per_run: usize,
    run_ids: Vec<String>,
    /// Port calls and wall time of each `runs::start`.
    starts: Vec<(Tally, Duration)>,
    start_trace: Vec<Traced>,
    samples: Vec<StepSample>,
    /// The bare provider call after each sample (timed scenarios), in order.
    bare: Vec<Duration>,
    /// The calls of each step of the first run.
    traces: BTreeMap<String, Vec<Traced>>,
    /// CPU while the steps ran (bare calls included).
    cpu: Option<CpuUse>,
}

impl Measured {
    fn timed(&self) -> bool {
        !self.bare.is_empty()
    }

    /// The median bare call of each step.
    fn provider_medians(&self) -> BTreeMap<String, Duration> {
        let mut by_step: BTreeMap<String, Vec<Duration>> = BTreeMap::new();
        for (sample, bare) in self.samples.iter().zip(&self.bare) {
            by_step.entry(sample.step.clone()).or_default().push(*bare);
        }
        by_step
            .into_iter()
            .filter_map(|(step, mut d)| {
                d.sort_unstable();
                percentile(&d, 50.0).map(|m| (step, m))
            })
            .collect()
    }
}

// ----------------------------------------------------------------- report --

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn machine() -> String {
    let cores = cores();
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU", |(_, m)| m.trim())
        .to_owned();
    let mhz = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("cpu MHz"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| format!(", {} MHz", m.trim()))
        .unwrap_or_default();
    format!("{cores} cores, {model}{mhz}")
}

fn per(total: u64, n: usize) -> String {
    if n == 0 {
        return "n/a".into();
    }
    format!("{:.2}", total as f64 / n as f64)
}

fn us(v: f64) -> String {
    format!("{v:.1}")
}

fn verdict(met: bool) -> &'static str {
    if met {
        "**yes**"
    } else {
        "**no**"
    }
}

/// Each scenario's name once, in the order first seen.
fn scenario_names<'a>(scenarios: impl Iterator<Item = &'a Measured>) -> Vec<&'a str> {
    let mut names: Vec<&str> = Vec::new();
    for m in scenarios {
        if !names.contains(&m.name.as_str()) {
            names.push(m.name.as_str());
        }
    }
    names
}

/// Per-step store calls by kind, for every scenario (all repetitions
/// together: the counts do not depend on timing, except a catalog recheck).
fn counts_table(out: &mut String, backend: &str, scenarios: &[&Measured]) {
    out.push_str(&format!("\n### Store round trips per step: {backend}\n\n"));
    out.push_str("| scenario | steps | get | update | transact (items) | query | put/delete | **store round trips / step** | steps × round trips | queue.send / step | cipher.decrypt / step | goal ≤ 3 met? |\n");
    out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---|\n");
    for name in scenario_names(scenarios.iter().copied()) {
        let tallies: Vec<&Tally> = scenarios
            .iter()
            .filter(|m| m.name == name)
            .flat_map(|m| m.samples.iter().map(|s| &s.tally))
            .collect();
        let n = tallies.len();
        let total = tallies.iter().fold(Tally::default(), |sum, t| sum.plus(t));
        let trips = total.round_trips();
        let mean = trips as f64 / n.max(1) as f64;
        out.push_str(&format!(
            "| {name} | {} | {} | {} | {} ({}) | {} | {} | **{}** | {} | {} | {} | {} |\n",
            thousands(n as u64),
            per(total.count(Call::Get), n),
            per(total.count(Call::Update), n),
            per(total.count(Call::Transact), n),
            per(total.tx_items, total.count(Call::Transact) as usize),
            per(total.count(Call::Query), n),
            per(total.count(Call::Put) + total.count(Call::Delete), n),
            per(trips, n),
            describe_histogram(&round_trip_histogram(&tallies)),
            per(total.count(Call::Send), n),
            per(total.count(Call::Decrypt), n),
            verdict(mean <= GOAL_ROUND_TRIPS_PER_STEP),
        ));
    }
    out.push_str("\nTransaction items: operations per transaction, averaged.\n");

    out.push_str(&format!("\n#### Run start (`runs::start`): {backend}\n\n"));
    out.push_str("| scenario | runs | get | transact (items) | other store calls | **store round trips / start** | queue.send / start |\n");
    out.push_str("|---|---:|---:|---:|---:|---:|---:|\n");
    for name in scenario_names(scenarios.iter().copied()) {
        let Some(m) = scenarios.iter().find(|m| m.name == name) else {
            continue;
        };
        let starts: Vec<&Tally> = scenarios
            .iter()
            .filter(|s| s.name == m.name)
            .flat_map(|s| s.starts.iter().map(|(t, _)| t))
            .collect();
        let n = starts.len();
        let total = starts.iter().fold(Tally::default(), |sum, t| sum.plus(t));
        let other = total.round_trips() - total.count(Call::Get) - total.count(Call::Transact);
        out.push_str(&format!(
            "| {} ({} steps) | {} | {} | {} ({}) | {} | **{}** | {} |\n",
            m.name,
            m.steps_per_run,
            thousands(n as u64),
            per(total.count(Call::Get), n),
            per(total.count(Call::Transact), n),
            per(total.tx_items, total.count(Call::Transact) as usize),
            per(other, n),
            per(total.round_trips(), n),
            per(total.count(Call::Send), n),
        ));
    }

    out.push_str(&format!("\n#### Round trips by step: {backend}\n\n"));
    for name in ["chain", "chain, monthly budget"] {
        let mut by_step: BTreeMap<&str, Vec<&Tally>> = BTreeMap::new();
        for s in scenarios
            .iter()
            .filter(|m| m.name == name)
            .flat_map(|m| &m.samples)
        {
            by_step.entry(s.step.as_str()).or_default().push(&s.tally);
        }
        if by_step.is_empty() {
            continue;
        }
        let mut order: Vec<&str> = by_step.keys().copied().collect();
        order.sort_by_key(|s| s.trim_start_matches('s').parse::<usize>().unwrap_or(0));
        let cells: Vec<String> = order
            .iter()
            .map(|step| {
                let tallies = &by_step[step];
                let trips: u64 = tallies.iter().map(|t| t.round_trips()).sum();
                format!("{step} {}", per(trips, tallies.len()))
            })
            .collect();
        out.push_str(&format!("- {name}: {}\n", cells.join(", ")));
    }
}

fn trace_table(out: &mut String, title: &str, trace: &[Traced], timed: bool) {
    out.push_str(&format!("\n{title}\n\n"));
    if timed {
        out.push_str("| # | call | what | took |\n|---:|---|---|---:|\n");
    } else {
        out.push_str("| # | call | what |\n|---:|---|---|\n");
    }
    for (i, t) in trace.iter().enumerate() {
        let what = t.what.replace('|', "\\|");
        if timed {
            out.push_str(&format!(
                "| {} | `{}` | {what} | {} µs |\n",
                i + 1,
                t.call.label(),
                us(micros(t.took))
            ));
        } else {
            out.push_str(&format!("| {} | `{}` | {what} |\n", i + 1, t.call.label()));
        }
    }
}

fn traces(out: &mut String, backend: &str, first: &[Measured], timed: bool) {
    out.push_str(&format!("\n### One run, call by call: {backend}\n"));
    for m in first
        .iter()
        .filter(|m| m.name.starts_with("chain") && !m.name.contains("key"))
    {
        trace_table(
            out,
            &format!("**{}: `runs::start`**", m.name),
            &m.start_trace,
            timed,
        );
        let last = format!("s{}", m.steps_per_run);
        for step in ["s2", last.as_str()] {
            if let Some(trace) = m.traces.get(step) {
                trace_table(out, &format!("**{}: step `{step}`**", m.name), trace, timed);
            }
        }
    }
    if let Some(diamond) = first.iter().find(|m| m.name.starts_with("diamond")) {
        for step in ["merge", "summary", "critique", "title"] {
            if let Some(trace) = diamond.traces.get(step) {
                trace_table(
                    out,
                    &format!("**{}: step `{step}`**", diamond.name),
                    trace,
                    false,
                );
            }
        }
    }
}

fn timing_tables(out: &mut String, repetitions: &[Vec<Measured>]) {
    out.push_str("\n### Time per step (embedded backend, release build)\n\n");
    out.push_str("All in µs per step. `handle`: wall time of `Worker::handle`. `ports`: wall time with a store, queue or cipher call in flight. `provider`: the bare `LlmClient::complete` of the same request after each step. `overhead` = handle − ports − the median bare call of that step (signed; per step, then percentiles); `paired`: minus the bare call right after it instead. CPU: this process (worker, fake provider, SQLite, bare calls) per step, and other processes' share of the machine while the scenario ran.\n\n");
    out.push_str("| rep | scenario | steps | handle p50 | handle p99 | ports p50 | ports p99 | provider p50 | provider p99 | **overhead p50** | overhead p90 | **overhead p99** | overhead max | paired p50 | goal ≤ 100 µs met? (p50 / p99) | this process's CPU / step | other processes' CPU |\n");
    out.push_str(
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|\n",
    );
    for (r, scenarios) in repetitions.iter().enumerate() {
        for m in scenarios.iter().filter(|m| m.timed()) {
            let handles: Vec<Duration> = m.samples.iter().map(|s| s.handle).collect();
            let ports: Vec<Duration> = m.samples.iter().map(|s| s.tally.busy).collect();
            let (Some(h), Some(p), Some(b)) = (
                Latencies::of(&handles),
                Latencies::of(&ports),
                Latencies::of(&m.bare),
            ) else {
                continue;
            };
            let medians = m.provider_medians();
            let samples: Vec<&StepSample> = m.samples.iter().collect();
            let overhead = overheads(&samples, |step| {
                medians.get(step).copied().unwrap_or_default()
            });
            let paired: Vec<f64> = m
                .samples
                .iter()
                .zip(&m.bare)
                .map(|(s, bare)| micros(s.handle) - micros(s.tally.busy) - micros(*bare))
                .collect();
            let (Some(o), Some(paired)) = (Spread::of(&overhead), Spread::of(&paired)) else {
                continue;
            };
            // The largest, for the progress log: where in the scenario, and
            // what else that step did.
            let mut largest: Vec<(usize, f64)> = overhead.iter().copied().enumerate().collect();
            largest.sort_by(|a, b| b.1.total_cmp(&a.1));
            for (i, v) in largest.iter().take(3) {
                let s = &m.samples[*i];
                eprintln!(
                    "flowbench: rep {} {}: overhead {v:.0} µs at step {i} ({}), handle {:.0} µs, ports {:.0} µs, bare call after it {:.0} µs",
                    r + 1,
                    m.name,
                    s.step,
                    micros(s.handle),
                    micros(s.tally.busy),
                    micros(m.bare[*i]),
                );
            }
            let (own_per_step, others) = match m.cpu {
                Some(cpu) => (
                    us(micros(cpu.own) / m.samples.len().max(1) as f64),
                    format!("{:.0} %", cpu.others_share * 100.0),
                ),
                None => ("n/a".to_owned(), "n/a".to_owned()),
            };
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | **{}** | {} | **{}** | {} | {} | {} / {} | {own_per_step} | {others} |\n",
                r + 1,
                m.name,
                thousands(m.samples.len() as u64),
                us(micros(h.p50)),
                us(micros(h.p99)),
                us(micros(p.p50)),
                us(micros(p.p99)),
                us(micros(b.p50)),
                us(micros(b.p99)),
                us(o.p50),
                us(o.p90),
                us(o.p99),
                us(o.max),
                us(paired.p50),
                verdict(o.p50 <= GOAL_OVERHEAD_US),
                verdict(o.p99 <= GOAL_OVERHEAD_US),
            ));
        }
    }

    out.push_str("\n#### Where the port time goes (mean per call, all repetitions)\n\n");
    out.push_str("| scenario | call | calls / step | mean time per call |\n|---|---|---:|---:|\n");
    for name in scenario_names(repetitions.iter().flatten().filter(|m| m.timed())) {
        let tallies: Vec<&Tally> = repetitions
            .iter()
            .flatten()
            .filter(|m| m.name == name)
            .flat_map(|m| m.samples.iter().map(|s| &s.tally))
            .collect();
        for (call, per_step, mean) in per_sample_means(&tallies) {
            out.push_str(&format!(
                "| {name} | `{}` | {per_step:.2} | {} µs |\n",
                call.label(),
                us(micros(mean))
            ));
        }
        let starts: Vec<Duration> = repetitions
            .iter()
            .flatten()
            .filter(|m| m.name == name)
            .flat_map(|m| m.starts.iter().map(|(_, d)| *d))
            .collect();
        if let Some(s) = Latencies::of(&starts) {
            out.push_str(&format!(
                "| {name} | whole `runs::start` | – | p50 {} µs, p99 {} µs |\n",
                us(micros(s.p50)),
                us(micros(s.p99))
            ));
        }
    }
}

fn report(
    options: &Options,
    data_root: &Path,
    repetitions: &[Vec<Measured>],
    emulator: Option<&[Measured]>,
) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "## flowbench\n\nMachine: {}. Embedded backend (SQLite, WAL, synchronous=FULL) under {}; {} repetitions of {} runs per timed scenario ({}-step chain), {} runs per counts-only scenario; {} warm-up runs each; fake provider on loopback, answering at once; {} Tokio worker threads.\n",
        machine(),
        data_root.display(),
        repetitions.len(),
        options.runs,
        options.steps,
        options.count_runs,
        options.warmup_runs,
        options.worker_threads,
    ));
    let all: Vec<&Measured> = repetitions.iter().flatten().collect();
    counts_table(&mut out, "embedded", &all);
    timing_tables(&mut out, repetitions);
    if let Some(first) = repetitions.first() {
        traces(&mut out, "embedded", first, true);
    }
    if let Some(scenarios) = emulator {
        let all: Vec<&Measured> = scenarios.iter().collect();
        counts_table(
            &mut out,
            &format!(
                "DynamoDB, SQS, KMS in the emulator ({} runs each)",
                options.aws_runs
            ),
            &all,
        );
        traces(&mut out, "emulator", scenarios, false);
    }
    out.push_str(&format!(
        "\nGoals: ≤ {GOAL_ROUND_TRIPS_PER_STEP:.0} store round trips per step; ≤ {GOAL_OVERHEAD_US:.0} µs of the worker's own time per step. Store round trips: every store call but health pings; queue and cipher calls are counted beside them, not in them. A transaction is one round trip whatever its items.\n"
    ));
    out
}
