//! Workflow benchmark: what the step worker costs per step, in store round
//! trips and in time of its own; see docs/PERFORMANCE.md.
//!
//! Each repetition opens the embedded backend as `lambent serve` does, in a
//! fresh data directory, with the store, queue and cipher wrapped in the
//! test kit's counting ports, a fake provider (echoing, at once) in this
//! process, and two members (one under a monthly budget) with a provider
//! and an agent. A scenario starts its runs one at a time, then hands the
//! step messages to `Worker::handle` one at a time, so every port call
//! during a handle is that step's; after each timed step the same model
//! call is made again, bare, to time the provider. Every run must succeed,
//! each step once and billed once. With `--aws-endpoint` the same scenarios
//! are counted on DynamoDB, SQS and KMS in the emulator.
//!
//! Markdown on stdout, progress on stderr.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Context, Result};
use clap::Parser;
use lambent_app::config::Config;
use lambent_app::state::State;
use lambent_app::workflows::{start_run, Worker};
use lambent_bench::chat::{Latencies, Stats};
use lambent_bench::flow::*;
use lambent_core::auth::Role;
use lambent_core::secret::SecretString;
use lambent_core::workflow::{Definition, StepSpec};
use lambent_fake_provider::{FakeProvider, FakeUsage, Reply};
use lambent_llm::{ChatRequest, Endpoint, Turn};
use lambent_ports::queue::{QueueName, Received};
use lambent_store::agents::{self, AgentSpec};
use lambent_store::models::Prices;
use lambent_store::providers::{self, NewProvider, ProviderKind};
use lambent_store::runs::{self, RunStatus, StepMessage, StepStatus};
use lambent_store::users::{self, NewUser};
use lambent_store::workflows;
use lambent_testkit::DIAMOND;
use rust_decimal::Decimal;

/// The model's catalog name.
const MODEL: &str = "fake-flow-model";
/// What the echo answers start with.
const ECHO: &str = "out:";
/// The runs' input.
const TOPIC: &str = "bees";
/// The agents' max_tokens (also sent in the bare calls).
const MAX_TOKENS: u32 = 100;
/// The scenarios: name, under a monthly budget, with an idempotency key.
/// The chains without a key are timed, the others only counted.
const SCENARIOS: [(&str, bool, bool); 4] = [
    ("chain", false, false),
    ("chain, monthly budget", true, false),
    ("chain, idempotency key", false, true),
    ("diamond with a join and two sinks", false, false),
];

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
    let o = Options::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    let runtime = runtime.worker_threads(o.worker_threads.max(1)).enable_all();
    runtime.build()?.block_on(run(o))
}

async fn run(o: Options) -> Result<()> {
    ensure!(o.steps >= 2, "--steps must be at least 2 (a chain)");
    let root = o.data_root.clone().unwrap_or_else(std::env::temp_dir);
    let mut repetitions = Vec::new();
    for repetition in 1..=o.repeats.max(1) {
        eprintln!(
            "flowbench: repetition {repetition} under {}",
            root.display()
        );
        let dir = tempfile::Builder::new()
            .prefix("flowbench-")
            .tempdir_in(&root)?;
        let world = World::new(lambent_boot::embedded(dir.path(), config())?, o.steps).await?;
        world
            .measure("warm-up", &world.plain, o.warmup_runs, false, false)
            .await?;
        repetitions.push(world.scenarios(o.runs, o.count_runs, true).await?);
    }
    let mut emulator = None;
    if let Some(endpoint) = &o.aws_endpoint {
        let sdk = lambent_testkit::emulator::sdk_for(endpoint).await;
        let made = lambent_testkit::emulator::provision_with(&sdk, 5).await;
        let resources = lambent_boot::AwsResources::from(made);
        let world =
            World::new(lambent_boot::aws(&sdk, config(), resources).await?, o.steps).await?;
        world
            .measure("warm-up", &world.plain, 1, false, false)
            .await?;
        emulator = Some(world.scenarios(o.aws_runs, o.aws_runs, false).await?);
    }
    println!("{}", report(&o, &root, &repetitions, emulator.as_deref()));
    Ok(())
}

fn config() -> Config {
    Config {
        allow_private_provider_urls: true,
        ..Config::default()
    }
}

/// A member with a provider (the fake) and an agent.
struct Member {
    id: String,
    agent: String,
}

/// A state whose ports count, the fake provider, two members and the worker.
struct World {
    state: State,
    meter: Arc<Meter>,
    worker: Worker,
    fake: FakeProvider,
    /// The fake, as the bare calls reach it.
    endpoint: Endpoint,
    plain: Member,
    /// Under a monthly limit never reached, so every step reserves and settles.
    budgeted: Member,
    /// Chain steps (`s1` … `sN`, each using the output of the one before).
    steps: usize,
}

impl World {
    /// Wraps the ports of `state` in counting ones and seeds the model and
    /// the two members.
    async fn new(state: State, steps: usize) -> Result<World> {
        let meter = Meter::new();
        let state = State {
            store: Arc::new(CountingStore::new(state.store.clone(), meter.clone())),
            queue: Arc::new(CountingQueue::new(state.queue.clone(), meter.clone())),
            cipher: Arc::new(CountingCipher::new(state.cipher.clone(), meter.clone())),
            ..state
        };
        let fake = FakeProvider::start().await?;
        let usage = FakeUsage {
            input: 100,
            output: 20,
            ..FakeUsage::default()
        };
        fake.set_default(Reply::echo(ECHO).usage(usage));
        let prices = Prices {
            input_per_mtok: Decimal::new(3, 0),
            output_per_mtok: Decimal::new(15, 0),
            cache_read_per_mtok: Decimal::new(3, 1),
            cache_write_per_mtok: Decimal::new(375, 2),
        };
        let kind = ProviderKind::Anthropic;
        state
            .catalog
            .upsert(state.store.as_ref(), MODEL, kind, prices)
            .await?;
        let endpoint = Endpoint {
            kind,
            base_url: Some(fake.anthropic_base_url()),
            api_key: SecretString::from("sk-flowbench".to_owned()),
        };
        let plain = member(&state, &endpoint, None).await?;
        let budgeted = member(&state, &endpoint, Some(Decimal::from(1_000_000))).await?;
        let worker = Worker::new(state.clone()).map_err(|e| anyhow!("the worker: {e}"))?;
        Ok(World {
            state,
            meter,
            worker,
            fake,
            endpoint,
            plain,
            budgeted,
            steps,
        })
    }

    /// Each scenario's measurement: the timed ones over `runs` (timed if
    /// `timed`), the others over `count_runs`, counted only.
    async fn scenarios(
        &self,
        runs: usize,
        count_runs: usize,
        timed: bool,
    ) -> Result<Vec<Measured>> {
        let mut scenarios = Vec::new();
        for (name, budgeted, keyed) in SCENARIOS {
            let member = if budgeted {
                &self.budgeted
            } else {
                &self.plain
            };
            let counted = keyed || name.starts_with("diamond");
            let runs = if counted { count_runs } else { runs };
            let m = self
                .measure(name, member, runs, timed && !counted, keyed)
                .await?;
            eprintln!("flowbench: {name}: {} steps", m.samples.len());
            scenarios.push(m);
        }
        Ok(scenarios)
    }

    /// Starts `runs` runs of the scenario's workflow for `member`, one at a
    /// time, then runs every step, one at a time; checks that each run
    /// succeeded, each step once and billed once.
    async fn measure(
        &self,
        name: &str,
        member: &Member,
        runs: usize,
        timed: bool,
        keyed: bool,
    ) -> Result<Measured> {
        let (store, queue) = (self.state.store.as_ref(), self.state.queue.as_ref());
        let steps: Vec<StepSpec> = match name.starts_with("diamond") {
            true => DIAMOND
                .iter()
                .map(|(id, prompt, deps)| step(member, id, prompt, deps))
                .collect(),
            false => (1..=self.steps).map(|k| chain_step(member, k)).collect(),
        };
        let steps_per_run = steps.len();
        let workflow =
            workflows::create(store, &member.id, Definition::validate("flowbench", steps)?).await?;
        let input = serde_json::Map::from_iter([("topic".into(), TOPIC.into())]);
        let mut m = Measured {
            name: name.into(),
            steps_per_run,
            ..Measured::default()
        };
        let mut run_ids = Vec::new();
        for i in 0..runs {
            let key = keyed.then(|| lambent_core::ids::new_id("k"));
            if i == 0 {
                self.meter.start_trace();
            }
            let (before, started) = (self.meter.snapshot(), Instant::now());
            let run = start_run(
                store,
                queue,
                &member.id,
                &workflow,
                input.clone(),
                key.as_deref(),
            );
            run_ids.push(run.await?.run_id);
            m.starts
                .push((self.meter.snapshot().since(&before), started.elapsed()));
            if i == 0 {
                m.start_trace = self.meter.take_trace();
            }
        }
        if timed {
            // The provider connection sat idle while the runs started: one
            // unmeasured call, so the first step does not pay for that.
            self.bare_call("s1").await?;
        }
        let deadline = Instant::now() + Duration::from_secs(1800);
        while m.samples.len() < runs * steps_per_run {
            ensure!(
                Instant::now() < deadline,
                "the steps did not run within 30 minutes"
            );
            let (visibility, wait) = (Duration::from_secs(300), Duration::from_millis(100));
            for message in queue
                .receive(QueueName::Steps, 10, visibility, wait)
                .await?
            {
                self.step(&message, timed, run_ids.first(), &mut m).await?;
            }
        }
        // Each call costs 100 × 3 + 20 × 15 micro-dollars.
        let cost = Decimal::new(6, 4) * Decimal::from(steps_per_run as u64);
        for run_id in &run_ids {
            let run = runs::get(store, &member.id, run_id)
                .await?
                .context("a run is gone")?;
            let once = |s: &runs::StepView| s.status == StepStatus::Succeeded && s.attempts == 1;
            let good = run.status == RunStatus::Succeeded && run.steps.iter().all(once);
            ensure!(
                good && run.steps.len() == steps_per_run && run.cost_usd == cost,
                "{run:#?}"
            );
        }
        self.fake.clear_requests();
        Ok(m)
    }

    /// Hands one message to the worker, counting its port calls (and
    /// tracing them, for `traced_run`).
    async fn step(
        &self,
        message: &Received,
        timed: bool,
        traced: Option<&String>,
        m: &mut Measured,
    ) -> Result<()> {
        let at: StepMessage = serde_json::from_str(&message.body)?;
        let tracing = traced == Some(&at.run_id);
        if tracing {
            self.meter.start_trace();
        }
        let (before, started) = (self.meter.snapshot(), Instant::now());
        let outcome = self.worker.handle(message).await;
        let handle = started.elapsed();
        let tally = self.meter.snapshot().since(&before);
        if tracing {
            m.traces.insert(at.step_id.clone(), self.meter.take_trace());
        }
        outcome.map_err(|e| anyhow!("step {} of {}: {e}", at.step_id, at.run_id))?;
        if timed {
            m.bare.push(self.bare_call(&at.step_id).await?);
        }
        let step = at.step_id;
        m.samples.push(StepSample {
            step,
            tally,
            handle,
        });
        self.state
            .queue
            .delete(QueueName::Steps, &message.receipt)
            .await?;
        Ok(())
    }

    /// The model call of chain step `s<k>`, made directly with the worker's
    /// own client (its connection pool); how long it took. By the echo rule
    /// `s1` asks `Write about bees`, each later step `Continue: ` and the
    /// answer before it, which is `out:` and that step's prompt.
    async fn bare_call(&self, step_id: &str) -> Result<Duration> {
        let k: usize = step_id.trim_start_matches('s').parse()?;
        let mut content = format!("Write about {TOPIC}");
        for _ in 1..k {
            content = format!("Continue: {ECHO}{content}");
        }
        let request = ChatRequest {
            model: MODEL.into(),
            system: None,
            turns: vec![Turn::text(lambent_core::chat::Role::User, content)],
            max_tokens: MAX_TOKENS,
            temperature: None,
            ..ChatRequest::default()
        };
        let started = Instant::now();
        let reply = self.worker.llm.complete(&self.endpoint, &request).await;
        reply.map_err(|e| anyhow!("bare provider call: {e}"))?;
        Ok(started.elapsed())
    }
}

/// A member with a provider (the fake) and an agent.
async fn member(
    state: &State,
    endpoint: &Endpoint,
    monthly_budget_usd: Option<Decimal>,
) -> Result<Member> {
    let (store, name, role) = (state.store.as_ref(), "runner".into(), Role::Member);
    let id = users::create(
        store,
        NewUser {
            name,
            role,
            monthly_budget_usd,
        },
    )
    .await?
    .id;
    let provider = NewProvider {
        kind: endpoint.kind,
        name: "fake".into(),
        api_key: endpoint.api_key.clone(),
        base_url: endpoint.base_url.clone(),
    };
    let provider_id = providers::create(store, state.cipher.as_ref(), &id, provider)
        .await?
        .id;
    let agent = AgentSpec {
        name: "stepper".into(),
        provider_id,
        model: MODEL.into(),
        system_prompt: None,
        temperature: None,
        max_tokens: i64::from(MAX_TOKENS),
        context_token_budget: 100_000,
        tools: Default::default(),
        tool_choice: Default::default(),
        max_tool_rounds: agents::DEFAULT_MAX_TOOL_ROUNDS,
    };
    let agent = agents::create(store, &state.catalog, &id, &agents::new_id(), agent)
        .await?
        .id;
    Ok(Member { id, agent })
}

/// A step of `member`'s agent.
fn step(member: &Member, id: &str, prompt: &str, depends_on: &[&str]) -> StepSpec {
    StepSpec {
        id: id.into(),
        agent_id: member.agent.clone(),
        prompt: prompt.into(),
        depends_on: depends_on.iter().map(|d| d.to_string()).collect(),
    }
}

/// Chain step `s<k>`, using the output of the one before.
fn chain_step(member: &Member, k: usize) -> StepSpec {
    if k == 1 {
        return step(member, "s1", "Write about {{input.topic}}", &[]);
    }
    let before = format!("s{}", k - 1);
    let prompt = format!("Continue: {{{{steps.{before}.output}}}}");
    step(member, &format!("s{k}"), &prompt, &[&before])
}

/// One scenario of one repetition.
#[derive(Default)]
struct Measured {
    name: String,
    steps_per_run: usize,
    /// Port calls and wall time of each `runs::start`.
    starts: Vec<(Tally, Duration)>,
    start_trace: Vec<Traced>,
    samples: Vec<StepSample>,
    /// The bare provider call after each sample (timed scenarios), in order.
    bare: Vec<Duration>,
    /// The calls of each step of the first run.
    traces: BTreeMap<String, Vec<Traced>>,
}

// ----------------------------------------------------------------- report --

/// `total / n` with two decimals.
fn per(total: u64, n: usize) -> String {
    format!("{:.2}", total as f64 / n.max(1) as f64)
}

fn us(d: Duration) -> String {
    format!("{:.1}", micros(d))
}

/// Each scenario's name once, in the order first seen, with all its
/// repetitions.
fn by_scenario<'a>(scenarios: &[&'a Measured]) -> Vec<(&'a str, Vec<&'a Measured>)> {
    let mut out: Vec<(&str, Vec<&Measured>)> = Vec::new();
    for m in scenarios {
        match out.iter_mut().find(|(name, _)| *name == m.name) {
            Some((_, all)) => all.push(m),
            None => out.push((&m.name, vec![m])),
        }
    }
    out
}

/// The port calls of every step of some measurements.
fn step_tallies<'a>(all: &[&'a Measured]) -> Vec<&'a Tally> {
    all.iter()
        .flat_map(|m| &m.samples)
        .map(|s| &s.tally)
        .collect()
}

/// Store calls per step and per run start, by kind, for every scenario, all
/// repetitions together (the counts do not depend on timing, but for a
/// catalog recheck).
fn counts(out: &mut String, backend: &str, scenarios: &[&Measured]) {
    out.push_str(&format!("\n### Store round trips per step: {backend}\n\n| scenario | steps | get | update | transact (items) | **store round trips / step** | steps × round trips | queue.send / step | cipher.decrypt / step |\n|---|---:|---:|---:|---:|---:|---|---:|---:|\n"));
    let grouped = by_scenario(scenarios);
    for (name, all) in &grouped {
        let steps = step_tallies(all);
        let (n, t) = (steps.len(), total(steps.iter().copied()));
        let c = |call| per(t.count(call), n);
        let items = per(t.tx_items, t.count(Call::Transact) as usize);
        let cells = [
            c(Call::Get),
            c(Call::Update),
            format!("{} ({items})", c(Call::Transact)),
        ];
        let trips = format!(
            "**{}** | {}",
            per(t.round_trips(), n),
            round_trip_histogram(&steps)
        );
        let sent = [c(Call::Send), c(Call::Decrypt)].join(" | ");
        let row = format!(
            "| {name} | {} | {} | {trips} | {sent} |\n",
            thousands(n as u64),
            cells.join(" | ")
        );
        out.push_str(&row);
    }
    out.push_str(&format!("\nTransaction items: operations per transaction, averaged.\n\n#### Run start (`runs::start`): {backend}\n\n| scenario | runs | get | transact (items) | **store round trips / start** | queue.send / start |\n|---|---:|---:|---:|---:|---:|\n"));
    for (name, all) in &grouped {
        let starts: Vec<&Tally> = all.iter().flat_map(|m| &m.starts).map(|(t, _)| t).collect();
        let (n, t, steps) = (starts.len(), total(starts), all[0].steps_per_run);
        let c = |call| per(t.count(call), n);
        let items = per(t.tx_items, t.count(Call::Transact) as usize);
        let cells = [c(Call::Get), format!("{} ({items})", c(Call::Transact))].join(" | ");
        let trips = per(t.round_trips(), n);
        let row = format!(
            "| {name} ({steps} steps) | {n} | {cells} | **{trips}** | {} |\n",
            c(Call::Send)
        );
        out.push_str(&row);
    }
}

/// The calls of one run's start and of some of its steps, one by one.
fn traces(out: &mut String, first: &[Measured]) {
    out.push_str("\n### One run, call by call: embedded\n");
    let mut table = |title: String, trace: &[Traced]| {
        out.push_str(&format!(
            "\n**{title}**\n\n| # | call | what | took |\n|---:|---|---|---:|\n"
        ));
        for (i, t) in trace.iter().enumerate() {
            let (call, what, took) = (t.call.label(), t.what.replace('|', "\\|"), us(t.took));
            out.push_str(&format!("| {} | `{call}` | {what} | {took} µs |\n", i + 1));
        }
    };
    for m in first.iter().filter(|m| !m.name.contains("key")) {
        let steps = if m.name.starts_with("diamond") {
            DIAMOND
                .iter()
                .skip(1)
                .map(|(id, _, _)| id.to_string())
                .collect()
        } else {
            table(format!("{}: `runs::start`", m.name), &m.start_trace);
            vec!["s2".into(), format!("s{}", m.steps_per_run)]
        };
        for step in steps {
            if let Some(trace) = m.traces.get(&step) {
                table(format!("{}: step `{step}`", m.name), trace);
            }
        }
    }
}

/// Per-step percentiles of each timed scenario, and the mean time per port call.
fn timing(out: &mut String, repetitions: &[Vec<Measured>]) {
    out.push_str("\n### Time per step (embedded backend, release build)\n\nAll in µs per step. `handle`: wall time of `Worker::handle`. `ports`: wall time with a store, queue or cipher call in flight. `provider`: the bare `LlmClient::complete` of the same request after each step. `overhead` = handle − ports − the median bare call of that step (signed; per step, then percentiles); `paired`: minus the bare call right after it instead.\n\n| rep | scenario | handle p50 | handle p99 | ports p50 | provider p50 | provider p99 | **overhead p50** | overhead p90 | **overhead p99** | paired p50 |\n|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    let mut timed = Vec::new();
    for (rep, all) in repetitions.iter().enumerate() {
        for m in all.iter().filter(|m| !m.bare.is_empty()) {
            let mut bare_by_step: BTreeMap<&str, Vec<Duration>> = BTreeMap::new();
            for (s, bare) in m.samples.iter().zip(&m.bare) {
                bare_by_step.entry(&s.step).or_default().push(*bare);
            }
            let median =
                |s: &StepSample| Latencies::of(&bare_by_step[s.step.as_str()]).map(|l| l.p50);
            let overheads: Vec<f64> = m
                .samples
                .iter()
                .map(|s| overhead(s, median(s).unwrap_or_default()))
                .collect();
            let paired: Vec<f64> = m
                .samples
                .iter()
                .zip(&m.bare)
                .map(|(s, b)| overhead(s, *b))
                .collect();
            let handles: Vec<Duration> = m.samples.iter().map(|s| s.handle).collect();
            let ports: Vec<Duration> = m.samples.iter().map(|s| s.tally.busy).collect();
            let (h, p, b) = (
                Latencies::of(&handles),
                Latencies::of(&ports),
                Latencies::of(&m.bare),
            );
            let (Some(h), Some(p), Some(b)) = (h, p, b) else {
                continue;
            };
            let (Some(o), Some(paired)) = (Stats::of(&overheads), Stats::of(&paired)) else {
                continue;
            };
            let cells = [h.p50, h.p99, p.p50, b.p50, b.p99].map(us).join(" | ");
            let (o50, o90, o99, paired, rep) = (o.p50, o.p90, o.p99, paired.p50, rep + 1);
            let row = format!(
                "| {rep} | {} | {cells} | **{o50:.1}** | {o90:.1} | **{o99:.1}** | {paired:.1} |\n",
                m.name
            );
            out.push_str(&row);
            timed.push(m);
        }
    }
    out.push_str("\n#### Where the port time goes (mean per call, all repetitions)\n\n| scenario | call | calls / step | mean time per call |\n|---|---|---:|---:|\n");
    for (name, all) in by_scenario(&timed) {
        for (call, per_step, mean) in per_sample_means(&step_tallies(&all)) {
            let (call, mean) = (call.label(), us(mean));
            out.push_str(&format!(
                "| {name} | `{call}` | {per_step:.2} | {mean} µs |\n"
            ));
        }
        let starts: Vec<Duration> = all
            .iter()
            .flat_map(|m| &m.starts)
            .map(|(_, d)| *d)
            .collect();
        if let Some(s) = Latencies::of(&starts) {
            let (p50, p99) = (us(s.p50), us(s.p99));
            out.push_str(&format!(
                "| {name} | whole `runs::start` | – | p50 {p50} µs, p99 {p99} µs |\n"
            ));
        }
    }
}

fn report(
    o: &Options,
    root: &Path,
    repetitions: &[Vec<Measured>],
    emulator: Option<&[Measured]>,
) -> String {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (reps, root, threads) = (repetitions.len(), root.display(), o.worker_threads);
    let mut out = format!("## flowbench\n\n{cores} cores. Embedded backend (SQLite, WAL, synchronous=FULL) under {root}; {reps} repetitions of {} runs per timed scenario ({}-step chain), {} runs per counts-only scenario; {} warm-up runs each; fake provider on loopback, answering at once; {threads} Tokio worker threads.\n", o.runs, o.steps, o.count_runs, o.warmup_runs);
    counts(
        &mut out,
        "embedded",
        &repetitions.iter().flatten().collect::<Vec<_>>(),
    );
    timing(&mut out, repetitions);
    if let Some(first) = repetitions.first() {
        traces(&mut out, first);
    }
    if let Some(scenarios) = emulator {
        let backend = format!(
            "DynamoDB, SQS, KMS in the emulator ({} runs each)",
            o.aws_runs
        );
        counts(&mut out, &backend, &scenarios.iter().collect::<Vec<_>>());
    }
    out.push_str(&format!("\nGoals: ≤ {GOAL_ROUND_TRIPS_PER_STEP:.0} store round trips per step; ≤ {GOAL_OVERHEAD_US:.0} µs of the worker's own time per step. Store round trips: every store call but health pings; queue and cipher calls are counted beside them, not in them. A transaction is one round trip whatever its items.\n"));
    out
}
