//! Agent turns benchmark (issue 14); see docs/PERFORMANCE.md, "Agent turns".
//!
//! - **writes** (in process): `lambent serve`'s store wrapped in the test
//!   kit's counting store; a streamed turn of many small deltas at a given
//!   pace; every store write of the whole turn, event-log batches
//!   (`EVT#` keys) apart from the rest; writes per delta.
//! - **counts** (in process): the store calls of a turn of R loop rounds,
//!   per round, and of one reconnect to a finished turn's events.
//! - **resume** (the release `lambent serve`, data on disk): finished turns
//!   of N events, then many reconnects (`GET …/events` with
//!   `Last-Event-ID: k`), timed from the request to the first replayed
//!   event.
//! - **live**: the same while a background turn is streaming.
//! - **rounds**: turns of R rounds (each model reply calls one server
//!   tool, answered at once by the fake tool server, then a text reply),
//!   timed through Lambent, and the same model and tool calls made
//!   directly (the bodies Lambent sent, replayed), in the same run;
//!   overhead per round = (through − direct) / R.
//!
//! Markdown on stdout, progress on stderr.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use clap::{Parser, ValueEnum};
use lambent_bench::chat::{cpu_time, us, Latencies, SseEvent, SseParser, Stats};
use lambent_bench::flow::thousands;
use lambent_bench::served::{self, ok};
use lambent_bench::turn::*;
use lambent_fake_provider::{FakeProvider, FakeToolCall, FakeUsage, Reply};
use lambent_testkit::app::{spawn_app_layered, LambentProcess, TestApp};
use lambent_testkit::chat::{ChatWorld, PROVIDER_KEY};
use lambent_testkit::counting::{self, Call, Meter, Tally, Traced};
use lambent_tool_server::{ToolReply, ToolServer};
use reqwest::{Client, Method, RequestBuilder};
use serde_json::{json, Value};

/// The user message of every turn.
const PROMPT: &str = "Look it up, then answer.";
/// One delta of the long replies: 4 characters, one token.
const TOKEN: &str = "tok ";
/// The server tool of the rounds phase, and its path on the tool server.
const TOOL: &str = "lookup";
const TOOL_PATH: &str = "/lookup";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Phase {
    /// Store writes per streamed token (in process).
    Writes,
    /// Store calls per loop round and per reconnect (in process).
    Counts,
    /// Reconnects to finished turns (lambent serve).
    Resume,
    /// Reconnects to a live background turn (lambent serve).
    Live,
    /// Overhead per loop round (lambent serve).
    Rounds,
}

#[derive(Parser, Debug, Clone)]
#[command(
    name = "turnbench",
    about = "Agent turns: store writes per streamed token, resume latency, overhead per loop round"
)]
struct Options {
    /// The release `lambent` binary [default: $CARGO_TARGET_DIR/release/lambent,
    /// else ./target/release/lambent].
    #[arg(long)]
    lambent: Option<PathBuf>,
    /// A short run (about 80 s): fewer and shorter turns, one repetition.
    /// Explicit values still win.
    #[arg(long)]
    quick: bool,
    /// Only these phases (comma-separated) [default: all].
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Phase>,
    /// The counted turns: DELTAS:PACE_MS[:followed], comma-separated
    /// (`followed`: a background turn read by a follower of its events,
    /// else a streamed turn read by its live client).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1000:0,10000:0,1000:5,10000:5,1000:20,1000:50,1000:20:followed",
        default_value_if("quick", "true", "1000:0,1000:5,1000:20,1000:20:followed")
    )]
    writes: Vec<String>,
    /// Events of the finished turns the resume phase reconnects to.
    #[arg(long, value_delimiter = ',', default_value = "200,2000")]
    resume_events: Vec<u64>,
    /// The pace of the resume phase's second kind of turn, ms per delta: its
    /// events are stored by the 100 ms flush timer, as a followed turn's are
    /// (0: only turns streamed at once, stored in 4 KiB batches).
    #[arg(long, default_value_t = 5)]
    paced_ms: u64,
    /// Reconnects to each finished turn, per repetition.
    #[arg(long, default_value_t = 500, default_value_if("quick", "true", "100"))]
    reconnects: usize,
    /// Deltas of the live background turn.
    #[arg(long, default_value_t = 2000, default_value_if("quick", "true", "400"))]
    live_deltas: u64,
    /// Its pace, ms per delta.
    #[arg(long, default_value_t = 5)]
    live_pace_ms: u64,
    /// At most this many reconnects while it runs.
    #[arg(long, default_value_t = 1000, default_value_if("quick", "true", "200"))]
    live_reconnects: usize,
    /// Loop rounds (server tool calls) per turn of the rounds phase.
    #[arg(long, value_delimiter = ',', default_value = "3,8")]
    rounds: Vec<u32>,
    /// Measured turns per round count and repetition.
    #[arg(long, default_value_t = 200, default_value_if("quick", "true", "30"))]
    round_turns: usize,
    /// Unmeasured turns before them.
    #[arg(long, default_value_t = 20, default_value_if("quick", "true", "5"))]
    warmup: usize,
    /// Counted turns per round count (counts phase).
    #[arg(long, default_value_t = 20, default_value_if("quick", "true", "5"))]
    count_turns: usize,
    /// Repetitions of the timed phases (resume, live, rounds).
    #[arg(long, default_value_t = 3, default_value_if("quick", "true", "1"))]
    repeats: usize,
    /// `"stream": false` for the rounds phase's turns (timed to the JSON
    /// answer instead of the `done` event).
    #[arg(long)]
    whole: bool,
    /// Where lambent serve's data directory is made [default: the system
    /// temporary directory]. The in-process phases use the system one.
    #[arg(long)]
    data_root: Option<PathBuf>,
    /// Keep lambent serve's data directory (lambent.log is in it).
    #[arg(long)]
    keep: bool,
}

fn main() -> Result<()> {
    // The client, the fake provider and the tool server share the two
    // workers (and, in process, lambent too).
    served::on_two_workers(run(Options::parse()))
}

async fn run(o: Options) -> Result<()> {
    let runs = |phase| o.only.is_empty() || o.only.contains(&phase);
    let started = Instant::now();
    let mut report = String::new();
    if runs(Phase::Writes) {
        let specs = o
            .writes
            .iter()
            .map(|s| WriteSpec::parse(s))
            .collect::<Result<Vec<_>>>()?;
        report.push_str(&writes(&specs).await?);
    }
    if runs(Phase::Counts) {
        report.push_str(&counts(&o).await?);
    }
    if runs(Phase::Resume) || runs(Phase::Live) || runs(Phase::Rounds) {
        let mut served = Served::start(&o).await?;
        if runs(Phase::Resume) {
            report.push_str(&served.resume().await?);
        }
        if runs(Phase::Live) {
            report.push_str(&served.live().await?);
        }
        if runs(Phase::Rounds) {
            report.push_str(&served.rounds().await?);
        }
        served.lambent.stop();
        if o.keep {
            let kept = served.world.app.data_dir.keep();
            eprintln!("turnbench: kept {}", kept.display());
        }
    }
    println!("{report}");
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "Load average at the end (1, 5, 15 min): {}.",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "Goals: ≤ {GOAL_WRITES_PER_DELTA} store writes per streamed token; resume (request to \
         the first replayed event) p99 ≤ {:.0} ms; ≤ {GOAL_ROUND_OVERHEAD_P50_US:.0} µs of \
         Lambent per loop round at p50. The whole run took {:.0} s.",
        GOAL_RESUME_P99_US / 1000.0,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// Shared helpers

/// A client with no timeout (a paced turn can run for a minute), keeping a
/// connection per host alive between sequential calls.
fn client() -> Result<Client> {
    Ok(Client::builder().no_proxy().http1_only().build()?)
}

/// A client that opens a new connection for every request.
fn fresh_client() -> Result<Client> {
    Ok(Client::builder()
        .no_proxy()
        .http1_only()
        .pool_max_idle_per_host(0)
        .build()?)
}

/// What a client saw of an event stream.
#[derive(Debug, Default)]
struct Read {
    /// From the request's start to the first event, and to the end.
    first_event: Option<Duration>,
    took: Duration,
    first_id: Option<u64>,
    last_id: Option<u64>,
    events: u64,
    deltas: u64,
    /// The first `message_start`'s message id (a turn's id).
    turn_id: Option<String>,
    /// The `done` event's data.
    done: Option<Value>,
}

/// Sends `request` and reads its events until `stop` says so (after the
/// event it is given) or the stream ends. An `error` event fails.
async fn read_events(
    request: RequestBuilder,
    mut stop: impl FnMut(&SseEvent) -> bool,
) -> Result<Read> {
    let started = Instant::now();
    let mut response = ok(request).await?;
    let mut parser = SseParser::new();
    let mut read = Read::default();
    'read: while let Some(chunk) = response.chunk().await? {
        for event in parser.feed(&chunk)? {
            read.first_event.get_or_insert(started.elapsed());
            read.events += 1;
            let id = event.id.as_deref().and_then(|id| id.parse::<u64>().ok());
            if read.first_id.is_none() {
                read.first_id = id;
            }
            read.last_id = id.or(read.last_id);
            match event.event.as_deref() {
                Some("delta") => read.deltas += 1,
                Some("message_start") if read.turn_id.is_none() => {
                    let data: Value = serde_json::from_str(&event.data)?;
                    read.turn_id = data["message_id"].as_str().map(str::to_owned);
                }
                Some("done") => read.done = Some(serde_json::from_str(&event.data)?),
                Some("error") => bail!("error event: {}", event.data),
                _ => {}
            }
            if stop(&event) {
                break 'read;
            }
        }
    }
    read.took = started.elapsed();
    Ok(read)
}

fn is_done(event: &SseEvent) -> bool {
    event.event.as_deref() == Some("done")
}

/// `POST /v1/sessions/{id}/messages` with `body`.
fn post_turn(client: &Client, world: &ChatWorld, session: &str, body: &Value) -> RequestBuilder {
    let url = world.app.url(&format!("/v1/sessions/{session}/messages"));
    client.post(url).bearer_auth(&world.key).json(body)
}

/// `GET /v1/sessions/{id}/messages/{turn}/events`, after `after`.
fn get_events(
    client: &Client,
    world: &ChatWorld,
    session: &str,
    turn: &str,
    after: Option<u64>,
) -> RequestBuilder {
    let path = format!("/v1/sessions/{session}/messages/{turn}/events");
    let request = client.get(world.app.url(&path)).bearer_auth(&world.key);
    match after {
        Some(k) => request.header("last-event-id", k.to_string()),
        None => request,
    }
}

/// A streamed turn, read to its `done`.
async fn streamed_turn(client: &Client, world: &ChatWorld, session: &str) -> Result<Read> {
    let body = json!({ "content": PROMPT, "stream": true });
    let read = read_events(post_turn(client, world, session, &body), is_done).await?;
    ensure!(read.done.is_some(), "the turn ended without its done event");
    Ok(read)
}

/// A background turn, read to its `done` by a follower of its events from
/// its start.
async fn followed_turn(client: &Client, world: &ChatWorld, session: &str) -> Result<Read> {
    let turn = background_turn(client, world, session).await?;
    let read = read_events(get_events(client, world, session, &turn, None), is_done).await?;
    ensure!(read.done.is_some(), "the turn ended without its done event");
    Ok(read)
}

/// Starts a background turn: its ID, from the 202's `message_id`.
async fn background_turn(client: &Client, world: &ChatWorld, session: &str) -> Result<String> {
    let body = json!({ "content": PROMPT, "background": true });
    let answer = ok(post_turn(client, world, session, &body)).await?;
    ensure!(
        answer.status() == 202,
        "background turn: {}",
        answer.status()
    );
    let answer: Value = answer.json().await?;
    Ok(answer["message_id"]
        .as_str()
        .context("the 202 names no message_id")?
        .to_owned())
}

/// A reply of `deltas` one-token deltas, one every `pace`.
fn long_reply(deltas: u64, pace: Duration) -> Reply {
    let usage = FakeUsage {
        input: 20,
        output: deltas,
        ..Default::default()
    };
    Reply::repeated(TOKEN, deltas)
        .chunk_delay(pace)
        .usage(usage)
}

fn short_reply() -> Reply {
    let usage = FakeUsage {
        input: 20,
        output: 3,
        ..Default::default()
    };
    Reply::text("All done here.").usage(usage)
}

/// Round `round`'s reply: one call of the server tool.
fn tool_reply(round: u32) -> Reply {
    let usage = FakeUsage {
        input: 20,
        output: 8,
        ..Default::default()
    };
    let arguments = format!(r#"{{"q":"item {round}"}}"#);
    let call = FakeToolCall::new(format!("toolu_r{round}"), TOOL, &arguments);
    Reply::tool_calls([call]).usage(usage)
}

/// The replies of a turn of `rounds` rounds: a tool call each, then text.
fn push_round_replies(fake: &FakeProvider, rounds: u32) {
    for round in 0..rounds {
        fake.push(tool_reply(round));
    }
    fake.push(short_reply());
}

/// The world's agent gets the server tool (at `url`) and room for 32 rounds.
async fn give_tool(world: &ChatWorld, url: &str) -> Result<()> {
    let tool = json!({
        "name": TOOL,
        "description": "Looks an item up.",
        "input_schema": { "type": "object", "properties": { "q": { "type": "string" } } },
        "http": { "url": url, "timeout_ms": 5000 },
    });
    let body = json!({ "tools": [tool], "max_tool_rounds": 32 });
    let path = format!("/v1/agents/{}", world.agent_id);
    let (status, agent) = world.call(Method::PATCH, &path, Some(body)).await;
    ensure!(
        status == 200,
        "giving the agent a server tool: {status} {agent}"
    );
    Ok(())
}

/// Waits until the store has been left alone for `quiet` (what a turn
/// writes after its `done`: the last batch, the stream slot).
async fn quiesce(meter: &Meter, quiet: Duration) {
    let mut last = meter.snapshot().round_trips();
    loop {
        tokio::time::sleep(quiet).await;
        let now = meter.snapshot().round_trips();
        if now == last {
            return;
        }
        last = now;
    }
}

/// `lambent serve` in this process on a fresh data directory, its store
/// counted into `meter`; rate limiting and the sweeper off, as in the
/// served phases; otherwise the default settings.
async fn counted_world(meter: &Arc<Meter>) -> ChatWorld {
    let app = spawn_app_layered(
        lambent_core::clock::system(),
        Some(counting::layer(meter.clone())),
        |config| {
            config.rate_limit.requests = 0;
            config.sweep_every = Duration::from_secs(3600);
            config.provider_idle_timeout = Duration::from_secs(900);
        },
    )
    .await;
    ChatWorld::seed(app, "anthropic").await
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// p50 / p99 / max of some latencies, in ms.
fn ms3(l: &Latencies) -> String {
    format!("{} / {} / {}", ms(l.p50), ms(l.p99), ms(l.max))
}

// ---------------------------------------------------------------------------
// Writes per streamed token (in process)

async fn writes(specs: &[WriteSpec]) -> Result<String> {
    let mut out = String::from(
        "\n## Store writes per streamed token (in process, counting store)\n\n\
         | deltas | pace | read by | turn (to done) | events | event-log writes (events per write) \
         | other writes | writes per delta: all (event log) | goal | met? |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---|---|\n",
    );
    let mut others = String::new();
    for spec in specs {
        let reader = if spec.followed {
            "a follower (background turn)"
        } else {
            "its live client"
        };
        eprintln!(
            "turnbench: writes: {} deltas every {} ms, read by {reader}",
            spec.deltas, spec.pace_ms
        );
        let meter = Meter::new();
        let world = counted_world(&meter).await;
        let client = client()?;
        // Warm: the agent, the catalog and the connections.
        let warm = world.session(json!({})).await;
        world.fake.push(short_reply());
        streamed_turn(&client, &world, &warm).await?;
        let session = world.session(json!({})).await;
        quiesce(&meter, Duration::from_millis(300)).await;
        world
            .fake
            .push(long_reply(spec.deltas, Duration::from_millis(spec.pace_ms)));
        meter.start_trace();
        let read = if spec.followed {
            followed_turn(&client, &world, &session).await?
        } else {
            streamed_turn(&client, &world, &session).await?
        };
        quiesce(&meter, Duration::from_millis(500)).await;
        let trace = meter.take_trace();
        ensure!(
            read.deltas == spec.deltas,
            "{} deltas of {}",
            read.deltas,
            spec.deltas
        );
        let events = read.last_id.map_or(0, |id| id + 1);
        let split = WriteSplit::of(&trace);
        let per_delta = split.writes() as f64 / spec.deltas as f64;
        let event_per_delta = split.event_writes as f64 / spec.deltas as f64;
        let per_write = events as f64 / split.event_writes.max(1) as f64;
        let met = if per_delta <= GOAL_WRITES_PER_DELTA {
            "yes"
        } else {
            "**no**"
        };
        out.push_str(&format!(
            "| {} | {} ms | {reader} | {} | {} | {} ({per_write:.1}) | {} | {per_delta:.4} ({event_per_delta:.4}) | ≤ {GOAL_WRITES_PER_DELTA} | {met} |\n",
            thousands(spec.deltas),
            spec.pace_ms,
            ms(read.took),
            thousands(events),
            split.event_writes,
            split.other_writes,
        ));
        let listed: Vec<String> = split
            .others
            .iter()
            .map(|(what, n)| format!("{n} × `{what}`"))
            .collect();
        others.push_str(&format!(
            "- {} deltas, {} ms: {} reads; event-log writes {:.0} µs mean; other writes: {}\n",
            thousands(spec.deltas),
            spec.pace_ms,
            split.reads,
            micros(split.event_time) / split.event_writes.max(1) as f64,
            listed.join("; ")
        ));
        world.app.stop().await;
    }
    out.push_str("\nThe other writes of each turn, and its reads:\n\n");
    out.push_str(&others);
    Ok(out)
}

// ---------------------------------------------------------------------------
// Store calls per loop round and per reconnect (in process)

fn calls_cell(tally: &Tally, turns: usize) -> String {
    let per = |call: Call| tally.count(call) as f64 / turns.max(1) as f64;
    let cells: Vec<String> = Call::STORE
        .iter()
        .filter(|c| tally.count(**c) > 0)
        .map(|c| format!("{} {:.2}", c.name(), per(*c)))
        .collect();
    cells.join(", ")
}

async fn counts(o: &Options) -> Result<String> {
    let mut out = String::from(
        "\n## Store calls of a turn of R loop rounds (in process, counting store)\n\n\
         | R | turns | store calls per turn (by kind) | round trips per turn | writes per turn \
         | store busy per turn | turn wall time p50 (in process) |\n\
         |---:|---:|---|---:|---:|---:|---:|\n",
    );
    let meter = Meter::new();
    let world = counted_world(&meter).await;
    let tools = ToolServer::start().await?;
    tools.set_default(TOOL_PATH, ToolReply::json(json!({ "answer": 42 })));
    give_tool(&world, &tools.url(TOOL_PATH)).await?;
    let client = client()?;
    let mut traced_turn = String::new();
    let mut per_round_writes = Vec::new();
    for &rounds in &o.rounds {
        eprintln!("turnbench: counts: {rounds} rounds");
        let mut sum = Tally::default();
        let mut walls = Vec::new();
        for i in 0..2 + o.count_turns {
            let session = world.session(json!({})).await;
            quiesce(&meter, Duration::from_millis(150)).await;
            push_round_replies(&world.fake, rounds);
            let trace = i == 2 && traced_turn.is_empty();
            if trace {
                meter.start_trace();
            }
            let before = meter.snapshot();
            let read = streamed_turn(&client, &world, &session).await?;
            quiesce(&meter, Duration::from_millis(150)).await;
            let done = read.done.unwrap_or_default();
            ensure!(
                done["model_calls"] == u64::from(rounds) + 1,
                "the turn ended early: {done}"
            );
            if i >= 2 {
                sum = sum.plus(&meter.snapshot().since(&before));
                walls.push(read.took);
            }
            if trace {
                traced_turn = describe_trace(rounds, &meter.take_trace());
            }
        }
        let n = o.count_turns.max(1);
        let writes: u64 = Call::STORE
            .iter()
            .filter(|c| is_write(**c))
            .map(|c| sum.count(*c))
            .sum();
        per_round_writes.push((rounds, writes as f64 / n as f64));
        let wall = Latencies::of(&walls).map_or_else(|| "n/a".into(), |l| ms(l.p50));
        out.push_str(&format!(
            "| {rounds} | {n} | {} | {:.2} | {:.2} | {} | {wall} |\n",
            calls_cell(&sum, n),
            sum.round_trips() as f64 / n as f64,
            writes as f64 / n as f64,
            ms(sum.store_busy / n as u32),
        ));
    }
    if let [(r1, w1), .., (r2, w2)] = per_round_writes[..] {
        if r2 > r1 {
            out.push_str(&format!(
                "\nEach further round: {:.2} writes.\n",
                (w2 - w1) / f64::from(r2 - r1)
            ));
        }
    }
    out.push_str(&traced_turn);

    // One reconnect to a finished turn, counted.
    out.push_str(
        "\nOne reconnect to a finished turn (`GET …/events`, `Last-Event-ID` half-way), \
         counted:\n\n| events | stored as | store calls | store busy | events replayed |\n\
         |---:|---|---|---:|---:|\n",
    );
    for &events in &o.resume_events {
        for pace in paces(o) {
            let session = world.session(json!({})).await;
            world.fake.push(long_reply(events.saturating_sub(3), pace));
            let turn = streamed_turn(&client, &world, &session).await?;
            let turn_id = turn.turn_id.context("no message_start")?;
            quiesce(&meter, Duration::from_millis(300)).await;
            let before = meter.snapshot();
            let k = events / 2;
            let read = read_events(
                get_events(&client, &world, &session, &turn_id, Some(k)),
                is_done,
            )
            .await?;
            let tally = meter.snapshot().since(&before);
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} |\n",
                thousands(events),
                layout(pace),
                calls_cell(&tally, 1),
                us(tally.store_busy),
                read.events
            ));
        }
    }
    world.app.stop().await;
    Ok(out)
}

/// The kinds of turn the resume phases make: streamed at once, and paced.
fn paces(o: &Options) -> Vec<Duration> {
    let mut paces = vec![Duration::ZERO];
    if o.paced_ms > 0 {
        paces.push(Duration::from_millis(o.paced_ms));
    }
    paces
}

fn layout(pace: Duration) -> String {
    if pace.is_zero() {
        "at once (4 KiB batches)".into()
    } else {
        format!("a delta every {} ms (100 ms batches)", pace.as_millis())
    }
}

/// One turn's store calls in order, as a Markdown list.
fn describe_trace(rounds: u32, trace: &[Traced]) -> String {
    let mut out =
        format!("\nEvery store call of one turn of {rounds} rounds, in order (µs each):\n\n```\n");
    for traced in trace {
        let what: String = traced.what.chars().take(160).collect();
        out.push_str(&format!(
            "{:>7.0}  {:<15} {what}\n",
            micros(traced.took),
            traced.call.label()
        ));
    }
    out.push_str("```\n");
    out
}

// ---------------------------------------------------------------------------
// The served phases

/// `lambent serve` (the release binary) on embedded storage, the chat
/// world seeded through its API, and the measuring client.
struct Served {
    o: Options,
    lambent: LambentProcess,
    world: ChatWorld,
    client: Client,
}

impl Served {
    async fn start(o: &Options) -> Result<Served> {
        let bin = served::lambent_binary(o.lambent.as_deref())?;
        let root = o.data_root.clone().unwrap_or_else(std::env::temp_dir);
        let data = tempfile::Builder::new()
            .prefix("turnbench-")
            .tempdir_in(&root)?;
        let lambent = serve(&bin, data.path())?;
        let world = ChatWorld::seed(TestApp::attached(lambent.addr, data), "anthropic").await;
        let served = Served {
            o: o.clone(),
            lambent,
            world,
            client: client()?,
        };
        // Warm: the agent cache, the catalog, the connections.
        let session = served.world.session(json!({})).await;
        for _ in 0..5 {
            served.world.fake.push(short_reply());
            streamed_turn(&served.client, &served.world, &session).await?;
        }
        Ok(served)
    }

    fn pid(&self) -> u32 {
        self.lambent.child.id()
    }

    /// Finished turns of N events; reconnects to each, timed to the first
    /// replayed event, the rest of the replay read on the same connection;
    /// then fewer, each on a new connection and dropped after the first
    /// event (as the live phase does).
    async fn resume(&mut self) -> Result<String> {
        let (o, world, client) = (&self.o, &self.world, &self.client);
        let mut out = format!(
            "\n## Resume latency: reconnects to a finished turn (lambent serve)\n\n\
             Request to the first replayed event (p50 / p99 / max), {} reconnects per row, \
             `Last-Event-ID` spread over the whole turn; the replay read to `done` on a kept \
             connection; \"new connection\": {} reconnects, each on a new TCP connection, \
             closed after the first event.\n\n\
             | events | stored as | rep | first event p50 / p99 / max | whole replay p50 | \
             new connection: first event p50 / p99 / max | goal p99 | met? |\n\
             |---:|---|---:|---:|---:|---:|---|---|\n",
            o.reconnects,
            (o.reconnects / 4).max(1)
        );
        let fresh = fresh_client()?;
        let mut after_done = None;
        let mut after_done_of = 0;
        for &events in &o.resume_events {
            ensure!(events >= 4, "--resume-events: at least 4");
            for pace in paces(o) {
                let session = world.session(json!({})).await;
                world.fake.push(long_reply(events - 3, pace));
                let turn = streamed_turn(client, world, &session).await?;
                ensure!(
                    turn.last_id == Some(events - 1),
                    "the turn has {:?} as its last event id, not {}",
                    turn.last_id,
                    events - 1
                );
                let turn_id = turn.turn_id.context("no message_start")?;
                let all = read_events(get_events(client, world, &session, &turn_id, None), is_done)
                    .await?;
                ensure!(all.events == events, "replayed {} of {events}", all.events);
                eprintln!("turnbench: resume: {events} events, {}", layout(pace));
                for rep in 1..=o.repeats.max(1) {
                    let mut first = Vec::new();
                    let mut whole = Vec::new();
                    for k in resume_points(events, o.reconnects, rep as u64 * 1000) {
                        let request = get_events(client, world, &session, &turn_id, Some(k));
                        let read = read_events(request, is_done).await?;
                        ensure!(
                            read.first_id == Some(k + 1) && read.done.is_some(),
                            "after {k}: first {:?}, done {}",
                            read.first_id,
                            read.done.is_some()
                        );
                        first.push(read.first_event.context("no event")?);
                        whole.push(read.took);
                    }
                    let mut new_conn = Vec::new();
                    for k in resume_points(events, (o.reconnects / 4).max(1), rep as u64 * 77) {
                        let request = get_events(&fresh, world, &session, &turn_id, Some(k));
                        let read = read_events(request, |_| true).await?;
                        ensure!(
                            read.first_id == Some(k + 1),
                            "after {k}: {:?}",
                            read.first_id
                        );
                        new_conn.push(read.first_event.context("no event")?);
                    }
                    let (f, w, n) = (
                        Latencies::of(&first).context("no reconnects")?,
                        Latencies::of(&whole).context("no reconnects")?,
                        Latencies::of(&new_conn).context("no reconnects")?,
                    );
                    let met = micros(f.p99) <= GOAL_RESUME_P99_US;
                    out.push_str(&format!(
                        "| {} | {} | {rep} | {} | {} | {} | ≤ {:.0} ms | {} |\n",
                        thousands(events),
                        layout(pace),
                        ms3(&f),
                        ms(w.p50),
                        ms3(&n),
                        GOAL_RESUME_P99_US / 1000.0,
                        if met { "yes" } else { "**no**" }
                    ));
                }
                if after_done.is_none() {
                    // A client that saw `done` and reconnects all the same.
                    let request = get_events(client, world, &session, &turn_id, Some(events - 1));
                    let limit = Duration::from_secs(10);
                    let read = tokio::time::timeout(limit, read_events(request, |_| false)).await;
                    after_done = Some(match read {
                        Ok(read) => {
                            let read = read?;
                            format!(
                                "{} events, the stream ends after {}",
                                read.events,
                                ms(read.took)
                            )
                        }
                        Err(_) => "the stream had not ended after 10 s".to_owned(),
                    });
                    after_done_of = events;
                }
            }
        }
        if let Some(what) = after_done {
            out.push_str(&format!(
                "\nA reconnect after `done` (`Last-Event-ID: {}` of a finished turn of \
                 {after_done_of} events): {what}.\n",
                after_done_of - 1,
            ));
        }
        Ok(out)
    }

    /// A background turn streaming at a pace; meanwhile reconnects with a
    /// `Last-Event-ID` well inside what is stored, each on a new
    /// connection, timed to the first replayed event.
    async fn live(&mut self) -> Result<String> {
        let (o, world) = (&self.o, &self.world);
        let pace = Duration::from_millis(o.live_pace_ms);
        let mut out = format!(
            "\n## Resume latency: reconnects to a live background turn (lambent serve)\n\n\
             A background turn of {} deltas, one every {} ms; while it runs, reconnects \
             one after the other, each on a new connection with `Last-Event-ID` at least 60 \
             events behind the newest event a follower has seen, closed after the first \
             event.\n\n\
             | rep | reconnects | first event p50 / p99 / max | over 50 ms | goal p99 | met? |\n\
             |---:|---:|---:|---:|---|---|\n",
            thousands(o.live_deltas),
            o.live_pace_ms
        );
        let fresh = fresh_client()?;
        for rep in 1..=o.repeats.max(1) {
            eprintln!("turnbench: live: repetition {rep}");
            let session = world.session(json!({})).await;
            world.fake.push(long_reply(o.live_deltas, pace));
            let turn_id = background_turn(&self.client, world, &session).await?;
            // A follower from the start: the newest id seen, and the end.
            let seen = Arc::new(AtomicU64::new(0));
            let ended = Arc::new(AtomicBool::new(false));
            let follower = {
                let (seen, ended) = (seen.clone(), ended.clone());
                let request = get_events(&client()?, world, &session, &turn_id, None);
                tokio::spawn(async move {
                    let read = read_events(request, |event| {
                        let id = event.id.as_deref().and_then(|id| id.parse().ok());
                        seen.fetch_max(id.unwrap_or(0), Ordering::SeqCst);
                        is_done(event)
                    })
                    .await;
                    ended.store(true, Ordering::SeqCst);
                    read
                })
            };
            let mut first = Vec::new();
            let mut i = 0u64;
            while !ended.load(Ordering::SeqCst) && first.len() < o.live_reconnects {
                let newest = seen.load(Ordering::SeqCst);
                if newest < 100 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
                let k = i.wrapping_mul(7_919) % (newest - 60);
                i += 1;
                let request = get_events(&fresh, world, &session, &turn_id, Some(k));
                let read = read_events(request, |_| true).await?;
                ensure!(
                    read.first_id == Some(k + 1),
                    "after {k}: {:?}",
                    read.first_id
                );
                first.push(read.first_event.context("no event")?);
            }
            let followed = follower.await??;
            ensure!(
                followed.deltas == o.live_deltas && followed.done.is_some(),
                "the follower saw {} deltas",
                followed.deltas
            );
            let l = Latencies::of(&first).context("no reconnect while the turn ran")?;
            let slow = first
                .iter()
                .filter(|d| **d > Duration::from_millis(50))
                .count();
            let met = micros(l.p99) <= GOAL_RESUME_P99_US;
            out.push_str(&format!(
                "| {rep} | {} | {} | {slow} | ≤ {:.0} ms | {} |\n",
                first.len(),
                ms3(&l),
                GOAL_RESUME_P99_US / 1000.0,
                if met { "yes" } else { "**no**" }
            ));
        }
        Ok(out)
    }

    /// Turns of R rounds through Lambent against the same calls made
    /// directly, alternating which goes first.
    async fn rounds(&mut self) -> Result<String> {
        let tools = ToolServer::start().await?;
        tools.set_default(TOOL_PATH, ToolReply::json(json!({ "answer": 42 })));
        give_tool(&self.world, &tools.url(TOOL_PATH)).await?;
        let (o, world, client) = (&self.o, &self.world, &self.client);
        // Only the calls of each turn are replayed.
        world.fake.clear_requests();
        let stream = !o.whole;
        let mut out = format!(
            "\n## Orchestration overhead per loop round (lambent serve)\n\n\
             Each turn: R model replies that each call the server tool (answered at once), then \
             a text reply; {}; a new session per turn (made untimed). Direct: the same R + 1 \
             model calls (streamed, the bodies Lambent sent) and R tool calls (the bodies \
             Lambent sent), one after the other. Overhead per round = (through − direct) / R, \
             per turn. *The loop's own*: the same against the turn's model calls made through \
             Lambent one at a time (`POST /v1/messages`, `model: \"fake/<model>\"`, each \
             prepared, reserved, made and settled like any call) and its tool calls directly: \
             what the loop adds beyond its calls. {} turns per row after {} warm-up turns.\n\n\
             | rep | R | through p50 / p99 | direct p50 / p99 | overhead per round p50 / p90 / p99 | \
             the loop's own per round p50 / p90 / p99 | lambent CPU per round | goal p50 | met? |\n\
             |---:|---:|---:|---:|---:|---:|---:|---|---|\n",
            if stream {
                "streamed (`\"stream\": true`), timed from the request to the `done` event"
            } else {
                "`\"stream\": false`, timed to the whole JSON answer"
            },
            o.round_turns,
            o.warmup
        );
        let mut medians: Vec<(usize, u32, f64)> = Vec::new();
        for rep in 1..=o.repeats.max(1) {
            for &rounds in &o.rounds {
                ensure!((1..=32).contains(&rounds), "--rounds: 1 to 32");
                eprintln!("turnbench: rounds: repetition {rep}, R = {rounds}");
                let mut through_times = Vec::new();
                let mut direct_times = Vec::new();
                let mut overheads = Vec::new();
                let mut loop_overheads = Vec::new();
                let mut cpu = Some(Duration::ZERO);
                let mut previous: Option<Calls> = None;
                for i in 0..o.warmup + o.round_turns {
                    let session = world.session(json!({})).await;
                    // Lambent's CPU from here to just before the calls made
                    // through it one by one: the turn and what it does
                    // after its `done` (the direct calls cost it nothing).
                    let cpu_at_start = cpu_time(self.pid());
                    let direct_first = i % 2 == 1 && previous.is_some();
                    let mut direct = None;
                    if let (true, Some(calls)) = (direct_first, &previous) {
                        direct = Some(
                            calls
                                .replay(client, world, &tools, rounds, Via::Provider)
                                .await?,
                        );
                    }
                    push_round_replies(&world.fake, rounds);
                    let through = through_turn(client, world, &session, rounds, stream).await?;
                    ensure!(world.fake.queued() == 0, "replies left over");
                    let calls = Calls::take(world, &tools, rounds)?;
                    if direct.is_none() {
                        direct = Some(
                            calls
                                .replay(client, world, &tools, rounds, Via::Provider)
                                .await?,
                        );
                    }
                    // Lambent's CPU for the turn: up to here (the calls
                    // made through it one by one are its CPU too).
                    let cpu_at_end = cpu_time(self.pid());
                    let one_by_one = calls
                        .replay(client, world, &tools, rounds, Via::Lambent)
                        .await?;
                    previous = Some(calls);
                    let direct = direct.context("no direct time")?;
                    if i >= o.warmup {
                        loop_overheads.push(overhead_per_round(through, one_by_one, rounds));
                        let used = cpu_at_start.zip(cpu_at_end);
                        cpu = cpu.zip(used).map(|(sum, (a, b))| sum + (b - a));
                        through_times.push(through);
                        direct_times.push(direct);
                        overheads.push(overhead_per_round(through, direct, rounds));
                    }
                }
                let cpu = cpu.map(|sum| sum / (o.round_turns.max(1) as u32 * rounds.max(1)));
                let (t, d) = (
                    Latencies::of(&through_times).context("no turns")?,
                    Latencies::of(&direct_times).context("no turns")?,
                );
                let ov = Stats::of(&overheads).context("no turns")?;
                let lo = Stats::of(&loop_overheads).context("no turns")?;
                medians.push((rep, rounds, ov.p50 * f64::from(rounds)));
                let met = ov.p50 <= GOAL_ROUND_OVERHEAD_P50_US;
                out.push_str(&format!(
                    "| {rep} | {rounds} | {} / {} | {} / {} | {:.0} / {:.0} / {:.0} µs | {:.0} / {:.0} / {:.0} µs | {} | ≤ {GOAL_ROUND_OVERHEAD_P50_US:.0} µs | {} |\n",
                    ms(t.p50),
                    ms(t.p99),
                    ms(d.p50),
                    ms(d.p99),
                    ov.p50,
                    ov.p90,
                    ov.p99,
                    lo.p50,
                    lo.p90,
                    lo.p99,
                    cpu.map_or_else(|| "n/a".into(), us),
                    if met { "yes" } else { "**no**" }
                ));
            }
        }
        // What one more round costs, per turn's median: the fixed cost of a
        // turn (its request, first call, end) cancels out.
        let mut slopes = Vec::new();
        for rep in 1..=o.repeats.max(1) {
            let of_rep: Vec<&(usize, u32, f64)> =
                medians.iter().filter(|(r, _, _)| *r == rep).collect();
            if let (Some(low), Some(high)) = (of_rep.first(), of_rep.last()) {
                if high.1 > low.1 {
                    let slope = (high.2 - low.2) / f64::from(high.1 - low.1);
                    slopes.push(format!("{slope:.0} µs (repetition {rep})"));
                }
            }
        }
        if !slopes.is_empty() {
            out.push_str(&format!(
                "\nEach further round (difference of the turns' median through − direct, R = {} \
                 against R = {}, divided by the extra rounds): {}.\n",
                o.rounds.last().copied().unwrap_or_default(),
                o.rounds.first().copied().unwrap_or_default(),
                slopes.join("; ")
            ));
        }
        Ok(out)
    }
}

/// A turn of `rounds` rounds through Lambent, timed to its `done` (or its
/// JSON answer).
async fn through_turn(
    client: &Client,
    world: &ChatWorld,
    session: &str,
    rounds: u32,
    stream: bool,
) -> Result<Duration> {
    let body = json!({ "content": PROMPT, "stream": stream });
    let request = post_turn(client, world, session, &body);
    if stream {
        let read = read_events(request, is_done).await?;
        let done = read.done.context("no done event")?;
        ensure!(
            done["model_calls"] == u64::from(rounds) + 1 && done["status"] == "complete",
            "the turn ended early: {done}"
        );
        return Ok(read.took);
    }
    let started = Instant::now();
    let answer: Value = ok(request).await?.json().await?;
    let took = started.elapsed();
    ensure!(answer["role"] == "assistant", "not a reply: {answer}");
    Ok(took)
}

/// Where a replay sends the model calls.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Via {
    /// The provider itself: its own time.
    Provider,
    /// Lambent, one call at a time (its Anthropic-compatible endpoint,
    /// `model: "fake/<model>"`: prepared, reserved, made and settled like
    /// any call): what the turn's calls cost without the loop around them.
    Lambent,
}

/// The model and tool calls a turn made, as Lambent sent them.
struct Calls {
    model: Vec<String>,
    tools: Vec<(String, String)>,
}

impl Calls {
    /// What the fake provider and the tool server received (then forgotten).
    fn take(world: &ChatWorld, tools: &ToolServer, rounds: u32) -> Result<Calls> {
        let model: Vec<String> = world
            .fake
            .requests()
            .iter()
            .map(|r| r.body.to_string())
            .collect();
        world.fake.clear_requests();
        let calls: Vec<(String, String)> = tools
            .requests()
            .iter()
            .map(|r| {
                let key = r.idempotency_key.clone().unwrap_or_default();
                (key, r.body.to_string())
            })
            .collect();
        tools.clear();
        ensure!(
            model.len() == rounds as usize + 1 && calls.len() == rounds as usize,
            "{} model calls and {} tool calls for {rounds} rounds",
            model.len(),
            calls.len()
        );
        Ok(Calls {
            model,
            tools: calls,
        })
    }

    /// The same calls made again, one after the other: model call, tool
    /// call, …, the last model call, the model calls `via` the provider or
    /// Lambent, the tool calls directly. Each model call is streamed and
    /// read to `message_stop`. Their wall time together.
    async fn replay(
        &self,
        client: &Client,
        world: &ChatWorld,
        tools: &ToolServer,
        rounds: u32,
        via: Via,
    ) -> Result<Duration> {
        let through_lambent = via == Via::Lambent;
        push_round_replies(&world.fake, rounds);
        let (model_url, key) = if through_lambent {
            (world.app.url("/v1/messages"), world.key.clone())
        } else {
            (
                format!("{}/v1/messages", world.fake.anthropic_base_url()),
                PROVIDER_KEY.to_owned(),
            )
        };
        let bodies: Vec<String> = if through_lambent {
            self.model
                .iter()
                .map(|body| {
                    let mut body: Value = serde_json::from_str(body)?;
                    let model = format!("fake/{}", body["model"].as_str().unwrap_or_default());
                    body["model"] = json!(model);
                    Ok(body.to_string())
                })
                .collect::<Result<_>>()?
        } else {
            self.model.clone()
        };
        let tool_url = tools.url(TOOL_PATH);
        let started = Instant::now();
        for (i, body) in bodies.iter().enumerate() {
            let request = client
                .post(&model_url)
                .header("content-type", "application/json")
                .header("x-api-key", &key)
                .header("anthropic-version", "2023-06-01")
                .body(body.clone());
            let mut response = ok(request).await?;
            let mut parser = SseParser::new();
            let mut ended = false;
            'read: while let Some(chunk) = response.chunk().await? {
                for event in parser.feed(&chunk)? {
                    if event.event.as_deref() == Some("message_stop") {
                        ended = true;
                        break 'read;
                    }
                }
            }
            ensure!(ended, "a direct model call ended without message_stop");
            if let Some((key, body)) = self.tools.get(i) {
                let request = client
                    .post(&tool_url)
                    .header("content-type", "application/json")
                    .header("idempotency-key", key)
                    .body(body.clone());
                ok(request).await?.bytes().await?;
            }
        }
        let took = started.elapsed();
        world.fake.clear_requests();
        tools.clear();
        Ok(took)
    }
}

/// `lambent serve` (see [`served::serve`]) with rate limiting and the
/// sweeper's passes out of the way.
fn serve(bin: &Path, data_dir: &Path) -> Result<LambentProcess> {
    let envs = [
        // No counter write per request, and no limit on the reconnects.
        ("LAMBENT_RATE_LIMIT_REQUESTS", "0"),
        ("LAMBENT_SWEEP_EVERY_SECS", "3600"),
        // Every turn's events stored as a followed turn's are, every 100 ms
        // (not every 2 s while nobody follows): the paced turns the resume
        // phase reconnects to are then many small batches, the harder case.
        // A loop round's turn is shorter than either.
        ("LAMBENT_EVENTS_IDLE_FLUSH_MS", "100"),
    ];
    served::serve("turnbench", bin, data_dir, &envs)
}
