//! DynamoDB capacity units per text turn and per workflow step (issue 15):
//! what DynamoDB would charge, counted through the item-store port from the
//! sizes of the items as the DynamoDB adapter stores them
//! (`lambent_testkit::units`).
//!
//! `lambent serve` runs in process with default settings (the rate limit
//! on; the caches kept warm for the whole run, and the sweeper's schedule
//! out of the way), its store wrapped, from the outside in, by:
//!
//! 1. a gate that holds a workflow step's claim while the request that
//!    started its run is in flight, so the run's start and the worker's step
//!    are told apart;
//! 2. the units ledger ([`UnitStore`]), which times each call and charges it;
//! 3. a pace ([`SlowWrites`], as the first-token tests use it) that makes
//!    every write but a stream slot's take `--pace-ms` longer, so a write
//!    the request does not wait for ends after the fake provider has the
//!    request: each charge is then *before* the provider request (ended
//!    before it: the request waited for it), *beside* it (began before,
//!    ended after) or *after* it.
//!
//! Scenarios, each after warm-up calls of the same kind: (a) a text turn
//! with `"stream": false`, (b) a streamed text turn, (c) a workflow run of
//! one step through the worker (`lambent serve`'s queue consumer): the
//! run's start (`POST /v1/workflows/{id}/runs`) and the step. With
//! `--aws-endpoint` (or `LAMBENT_TEST_AWS_ENDPOINT`) the same on DynamoDB,
//! SQS and KMS in the emulator (`lambent serve --backend aws`, in process).
//!
//! Markdown on stdout, progress on stderr.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use clap::Parser;
use lambent_fake_provider::{FakeUsage, Reply};
use lambent_ports::ItemStore;
use lambent_testkit::app::{spawn_app_layered, TestApp};
use lambent_testkit::chat::ChatWorld;
use lambent_testkit::first_token::SlowWrites;
use lambent_testkit::units::{
    self, Charge, GatedStore, Ledger, Op, Outcome, StepGate, StoreLayer, Totals, UnitStore,
};
use reqwest::Method;
use serde_json::json;

/// Goal (issue 15): write units per text turn.
const GOAL_WCU_PER_TURN: u64 = 12;

#[derive(Parser, Debug)]
#[command(
    name = "unitsbench",
    about = "DynamoDB write and read units per text turn and per workflow step, counted through the store port"
)]
struct Options {
    /// How much longer every write but a stream slot's takes, so that a
    /// write the request does not wait for ends after the provider has it
    /// (0: no pacing; every write may then look "before").
    #[arg(long, default_value_t = 300)]
    pace_ms: u64,
    /// Warm-up calls of each kind before the measured one.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// An AWS emulator (moto, `scripts/emulator.py`) to count the same on
    /// DynamoDB, e.g. http://127.0.0.1:5055.
    #[arg(long, env = "LAMBENT_TEST_AWS_ENDPOINT")]
    aws_endpoint: Option<String>,
}

fn main() -> Result<()> {
    let o = Options::parse();
    if let Some(endpoint) = &o.aws_endpoint {
        // `lambent serve --backend aws` configures the SDK from the
        // environment; set before any thread starts.
        std::env::set_var("AWS_ENDPOINT_URL", endpoint);
        std::env::set_var("AWS_REGION", lambent_testkit::emulator::REGION);
        std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
    }
    lambent_bench::served::on_two_workers(run(o))
}

async fn run(o: Options) -> Result<()> {
    let mut backends = vec![("embedded (SQLite)", measure(&o, None).await?)];
    if let Some(endpoint) = &o.aws_endpoint {
        let prefix = lambent_core::ids::new_id("units").replace('_', "-");
        eprintln!("unitsbench: DynamoDB in the emulator at {endpoint}, prefix {prefix}");
        backends.push(("DynamoDB (emulator)", measure(&o, Some(&prefix)).await?));
    }
    println!("{}", report(&o, &backends));
    Ok(())
}

// ---------------------------------------------------------------------------
// Measuring

/// One measured scenario: its charges and when the provider had the
/// request (none: no provider call).
struct Measured {
    name: &'static str,
    charges: Vec<Charge>,
    provider_at: Option<Instant>,
    /// Whether the goal of ≤ 12 write units applies (a turn or a step).
    goal: bool,
}

/// When the fake provider last received a request.
#[derive(Clone, Default)]
struct ProviderClock(Arc<Mutex<Option<Instant>>>);

impl ProviderClock {
    fn reset(&self) {
        *self.lock() = None;
    }
    fn saw(&self) {
        self.lock().get_or_insert_with(Instant::now);
    }
    fn at(&self) -> Option<Instant> {
        *self.lock()
    }
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

async fn measure(o: &Options, aws_prefix: Option<&str>) -> Result<Vec<Measured>> {
    let ledger = Ledger::new();
    let gate = Arc::new(StepGate::default());
    let pace = Duration::from_millis(o.pace_ms);
    // The counted store, kept to fold the calls' pending usage at the end.
    let counted_store: Arc<std::sync::OnceLock<Arc<dyn ItemStore>>> = Arc::default();
    let layer = {
        let (ledger, gate, kept) = (ledger.clone(), gate.clone(), counted_store.clone());
        StoreLayer::new(move |inner| {
            let paced: Arc<dyn ItemStore> = Arc::new(SlowWrites { inner, delay: pace });
            let counted: Arc<dyn ItemStore> = Arc::new(UnitStore::new(paced, ledger.clone()));
            let _ = kept.set(counted.clone());
            Arc::new(GatedStore {
                inner: counted,
                gate: gate.clone(),
            }) as Arc<dyn ItemStore>
        })
    };
    // Default settings (the rate limit on), but caches that stay warm
    // through the paced writes, and no sweeper pass or usage fold in the
    // middle: (d) folds at the end.
    let configure = |c: &mut lambent_app::config::Config| {
        c.auth_cache = Duration::from_secs(3_600);
        c.sweep_every = Duration::from_secs(24 * 3_600);
        c.fold_every = Duration::from_secs(3_600);
    };
    let app: TestApp = match aws_prefix {
        None => spawn_app_layered(lambent_core::clock::system(), Some(layer), configure).await,
        Some(prefix) => units::spawn_app_on_aws(prefix, layer, configure).await?,
    };
    let w = ChatWorld::seed(app, "anthropic").await;
    w.fake.set_default(
        Reply::text("Noted, and here is a short answer.").usage(FakeUsage {
            input: 100,
            output: 20,
            cache_read: 0,
            cache_write_5m: 0,
            cache_write_1h: 0,
        }),
    );
    let provider = ProviderClock::default();
    {
        let provider = provider.clone();
        w.fake.set_responder(move |_| {
            provider.saw();
            None
        });
    }
    // Longer than a paced write: a request's last write has landed.
    let quiet = pace + Duration::from_millis(400);
    let session = w.session(json!({})).await;

    let mut out = Vec::new();
    // (a) A text turn, not streamed.
    for _ in 0..o.warmup {
        let (status, body) = w.chat_whole(&session, "Hello there").await;
        ensure!(status == 200, "warm-up turn: {status} {body}");
    }
    ledger.settled(quiet).await;
    eprintln!("unitsbench: a text turn, not streamed");
    let mark = ledger.mark();
    provider.reset();
    let (status, body) = w.chat_whole(&session, "And one more question").await;
    ensure!(status == 200, "turn: {status} {body}");
    ledger.settled(quiet).await;
    out.push(Measured {
        name: "(a) text turn, `stream: false`",
        charges: ledger.since(mark),
        provider_at: provider.at(),
        goal: true,
    });

    // (b) A streamed text turn.
    for _ in 0..o.warmup {
        let stream = w.chat(&session, "Hello again").await;
        ensure!(stream.status == 200, "warm-up stream: {}", stream.raw);
    }
    ledger.settled(quiet).await;
    eprintln!("unitsbench: a streamed text turn");
    let mark = ledger.mark();
    provider.reset();
    let stream = w.chat(&session, "And a streamed one").await;
    ensure!(
        stream.status == 200 && !stream.named("message_end").is_empty(),
        "stream: {}",
        stream.raw
    );
    ledger.settled(quiet).await;
    out.push(Measured {
        name: "(b) text turn, streamed",
        charges: ledger.since(mark),
        provider_at: provider.at(),
        goal: true,
    });

    // (c) A workflow run of one step, through the worker.
    let (status, workflow) = w
        .call(
            Method::POST,
            "/v1/workflows",
            Some(json!({"name": "one step", "steps": [
                {"id": "only", "agent_id": w.agent_id, "prompt": "Summarise {{input.topic}}", "depends_on": []}
            ]})),
        )
        .await;
    ensure!(status == 201, "workflow: {status} {workflow}");
    let runs = format!(
        "/v1/workflows/{}/runs",
        workflow["id"].as_str().context("workflow id")?
    );
    for _ in 0..o.warmup {
        let (start, step) = one_run(&w, &ledger, &gate, &provider, &runs, quiet).await?;
        drop((start, step));
    }
    eprintln!("unitsbench: a workflow run of one step");
    let (start, (step, provider_at)) = one_run(&w, &ledger, &gate, &provider, &runs, quiet).await?;
    out.push(Measured {
        name: "(c) workflow run of one step: the run's start (`POST …/runs`)",
        charges: start,
        provider_at: None,
        goal: false,
    });
    out.push(Measured {
        name: "(c) workflow run of one step: the step (worker)",
        charges: step,
        provider_at,
        goal: true,
    });

    // (d) The fold of every call above (warm-ups too) into the aggregates,
    // off the calls' path, as the sweeper or `lambent serve`'s folder does.
    ledger.settled(quiet).await;
    eprintln!("unitsbench: the fold of the calls' pending usage");
    let store = counted_store.get().context("the store was never layered")?;
    let mark = ledger.mark();
    let folded = lambent_store::usage::fold(store.as_ref(), usize::MAX).await?;
    ledger.settled(quiet).await;
    let calls = 3 * (o.warmup + 1);
    ensure!(folded == calls, "folded {folded} calls, made {calls}");
    out.push(Measured {
        name: if calls == 9 {
            "(d) the fold of the 9 calls above (off the path)"
        } else {
            "(d) the fold of the calls above (off the path)"
        },
        charges: ledger.since(mark),
        provider_at: None,
        goal: false,
    });
    Ok(out)
}

/// Starts a run and lets the worker take its step once the start has
/// landed; returns the start's charges and the step's (with when the
/// provider had its request). The run must succeed.
async fn one_run(
    w: &ChatWorld,
    ledger: &Ledger,
    gate: &StepGate,
    provider: &ProviderClock,
    runs: &str,
    quiet: Duration,
) -> Result<(Vec<Charge>, (Vec<Charge>, Option<Instant>))> {
    ledger.settled(quiet).await;
    gate.close();
    let mark = ledger.mark();
    let (status, started) = w
        .call(
            Method::POST,
            runs,
            Some(json!({"input": {"topic": "bees"}})),
        )
        .await;
    if status != 202 {
        gate.open();
        anyhow::bail!("run: {status} {started}");
    }
    ledger.settled(quiet).await;
    let start = ledger.since(mark);
    let mark = ledger.mark();
    provider.reset();
    gate.open();
    // The step: its provider call, then its checkpoint.
    let deadline = Instant::now() + Duration::from_secs(60);
    while provider.at().is_none() {
        ensure!(
            Instant::now() < deadline,
            "the step never called the provider"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ledger.settled(quiet).await;
    let step = ledger.since(mark);
    let provider_at = provider.at();
    // Read back after the counts: the run succeeded.
    let run_id = started["run_id"].as_str().context("run id")?;
    let (status, run) = w
        .call(Method::GET, &format!("/v1/runs/{run_id}"), None)
        .await;
    ensure!(
        status == 200 && run["status"] == "succeeded",
        "run {run_id}: {status} {run}"
    );
    ledger.settled(quiet).await;
    Ok((start, (step, provider_at)))
}

// ---------------------------------------------------------------------------
// The report

/// Where a charge falls against the provider request.
fn when(c: &Charge, provider_at: Option<Instant>) -> &'static str {
    match provider_at {
        None => "—",
        Some(t) if c.ended <= t => "before",
        Some(t) if c.started <= t => "beside",
        Some(_) => "after",
    }
}

fn rcu(units: f64) -> String {
    if units.fract() == 0.0 {
        format!("{units:.0}")
    } else {
        format!("{units:.1}")
    }
}

fn operation(c: &Charge) -> String {
    let mut s = c.op.name().to_owned();
    if c.conditional && c.op != Op::Check {
        s.push_str(" (if)");
    }
    match c.outcome {
        Outcome::Done => {}
        Outcome::ConditionFailed => s.push_str(", condition failed"),
        Outcome::Cancelled => s.push_str(", cancelled"),
        Outcome::Failed => s.push_str(", error"),
    }
    s
}

fn size(c: &Charge) -> String {
    match c.op {
        Op::Query => format!("{} ({} items)", c.bytes, c.items),
        Op::Get if c.items == 0 => "0 (absent)".to_owned(),
        Op::Get => c.bytes.to_string(),
        _ => {
            let side = |s: Option<usize>| s.map_or("—".to_owned(), |b| b.to_string());
            format!("{} ({} → {})", c.bytes, side(c.before), side(c.after))
        }
    }
}

fn transaction(c: &Charge, numbers: &[(u64, usize)]) -> String {
    if !c.transactional() {
        return "no".to_owned();
    }
    let n = numbers
        .iter()
        .position(|(call, _)| *call == c.call)
        .map_or(0, |i| i + 1);
    format!("T{n} ({} items)", c.tx_items)
}

/// The settle: the transaction (after the provider request) with the most
/// write units.
fn settle(m: &Measured) -> Option<(usize, u64)> {
    let after: Vec<Charge> = m
        .charges
        .iter()
        .filter(|c| when(c, m.provider_at) != "before")
        .cloned()
        .collect();
    units::transactions(&after)
        .into_iter()
        .max_by_key(|(_, _, wcu)| *wcu)
        .map(|(_, items, wcu)| (items, wcu))
}

fn report(o: &Options, backends: &[(&str, Vec<Measured>)]) -> String {
    let mut md = String::new();
    md.push_str("## DynamoDB capacity units per text turn and per workflow step\n\n");
    md.push_str(&format!(
        "Counted through the item-store port (`lambent_testkit::units`), each item sized as \
         the DynamoDB adapter stores it; writes paced by {} ms so that *before* means the \
         request waited for it. Units: WCU = write capacity units, RCU = read capacity units \
         (strongly consistent, as the adapter reads). Goal: ≤ {GOAL_WCU_PER_TURN} WCU per turn.\n\n",
        o.pace_ms
    ));
    md.push_str("### Summary\n\n");
    md.push_str(
        "| backend | scenario | WCU | WCU before / beside / after the provider request | RCU | RCU before | items written | transactions (items) | settle (items, WCU) | ≤ 12 WCU? |\n\
         |---|---|---:|---|---:|---:|---:|---|---|---|\n",
    );
    for (backend, measured) in backends {
        for m in measured {
            let total = Totals::of(&m.charges);
            let part =
                |w: &str| Totals::of(m.charges.iter().filter(|c| when(c, m.provider_at) == w));
            let (before, beside, after) = (part("before"), part("beside"), part("after"));
            let txs: Vec<String> = units::transactions(&m.charges)
                .iter()
                .map(|(_, items, _)| items.to_string())
                .collect();
            let split = if m.provider_at.is_some() {
                format!(
                    "{} / {} / {}",
                    before.write_units, beside.write_units, after.write_units
                )
            } else {
                "(no provider call)".to_owned()
            };
            let settled = settle(m).map_or("—".to_owned(), |(items, wcu)| {
                format!("{items} items, {wcu} WCU")
            });
            let goal = if m.goal {
                if total.write_units <= GOAL_WCU_PER_TURN {
                    "**met**".to_owned()
                } else {
                    format!("**not met** (+{})", total.write_units - GOAL_WCU_PER_TURN)
                }
            } else {
                "(per run)".to_owned()
            };
            md.push_str(&format!(
                "| {backend} | {} | **{}** | {split} | {} | {} | {} | {} | {settled} | {goal} |\n",
                m.name,
                total.write_units,
                rcu(total.read_units),
                rcu(before.read_units),
                total.writes,
                if txs.is_empty() {
                    "—".to_owned()
                } else {
                    format!("{} ({})", txs.len(), txs.join(", "))
                },
            ));
        }
    }
    for (backend, measured) in backends {
        for m in measured {
            md.push_str(&format!("\n### {backend}: {}\n\n", m.name));
            md.push_str(
                "| # | when | item (key, IDs elided) | operation | transaction | size, bytes (before → after) | WCU | RCU |\n\
                 |---:|---|---|---|---|---|---:|---:|\n",
            );
            let numbers: Vec<(u64, usize)> = units::transactions(&m.charges)
                .iter()
                .map(|(call, items, _)| (*call, *items))
                .collect();
            let mut charges = m.charges.clone();
            charges.sort_by_key(|c| (c.started, c.call));
            for (i, c) in charges.iter().enumerate() {
                let item = if c.op == Op::Query {
                    format!("`{}` (prefix)", c.pattern())
                } else {
                    format!("`{}`", c.pattern())
                };
                md.push_str(&format!(
                    "| {} | {} | {item} | {} | {} | {} | {} | {} |\n",
                    i + 1,
                    when(c, m.provider_at),
                    operation(c),
                    transaction(c, &numbers),
                    size(c),
                    c.write_units,
                    rcu(c.read_units),
                ));
            }
            let total = Totals::of(&m.charges);
            md.push_str(&format!(
                "| | | **total** ({} items written, {} reads) | | | | **{}** | **{}** |\n",
                total.writes,
                total.reads,
                total.write_units,
                rcu(total.read_units)
            ));
        }
    }
    md.push_str(&format!(
        "\nReproduce: `cargo build -p lambent-bench --bin unitsbench && \
         $CARGO_TARGET_DIR/debug/unitsbench --pace-ms {}` (add `--aws-endpoint \
         http://127.0.0.1:<port>` with `scripts/emulator.py` running for DynamoDB in the emulator).\n",
        o.pace_ms
    ));
    md
}
