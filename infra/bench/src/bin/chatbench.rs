//! Streamed chat benchmark: the same calls made directly to a fake provider
//! and through `lambent serve` (the release binary, a child on embedded
//! storage), side by side, on loopback; the test kit's chat world seeds the
//! member, provider, model and agent. It measures time to first token and
//! whole-reply latency, plain routes for context, lambent's RSS idle and per
//! open stream, while a client stalls on a big reply, and a full-speed read;
//! and, side by side, a streamed text turn against a turn that is one tool
//! call, and non-streamed calls per second at several concurrencies; see
//! docs/PERFORMANCE.md. Markdown on stdout, progress on stderr.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use clap::{Parser, ValueEnum};
use lambent_bench::chat::*;
use lambent_bench::served::{self, ok};
use lambent_core::chat::{Role, ToolChoice, ToolSpec};
use lambent_fake_provider::{FakeToolCall, FakeUsage, Reply};
use lambent_llm::{ChatRequest, Turn};
use lambent_testkit::app::{LambentProcess, TestApp};
use lambent_testkit::chat::{ChatWorld, PROVIDER_KEY};
use reqwest::{Client, Method, RequestBuilder, Response};
use serde_json::json;
use tokio::sync::{oneshot, Semaphore};
use tokio::task::JoinHandle;

/// The user message of every measured call.
const PROMPT: &str = "Say hello in one short sentence.";
/// The fake provider's reply to the latency calls: 9 deltas of up to 4 characters.
const REPLY: &str = "Hello from the benchmark, friend!";
/// The client tool the agent offers in the tool phase, and the one call of
/// the tool turn's reply (no text; its arguments stream in pieces of 5
/// characters, the fake provider's default).
const TOOL: &str = "get_weather";
const TOOL_ARGUMENTS: &str = r#"{"city":"Zürich"}"#;
/// Plain routes of lambent (method, path, what it does) and their status.
const PROBES: [(&str, u16); 3] = [
    (
        "GET /v1/no-such-route (404: HTTP, routing, logging; no auth, no storage)",
        404,
    ),
    ("GET /v1/sessions/{id} (auth, 1 read)", 200),
    (
        "POST /v1/sessions (auth, reads, 1 write, 1 audit write)",
        201,
    ),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Phase {
    /// Time to first token of streamed calls.
    Ttft,
    /// Latency of non-streamed calls.
    Whole,
    /// A streamed turn that is one tool call against a text turn, side by side.
    Tools,
    /// Plain routes of lambent, for context.
    Probe,
    /// Memory with many open streams.
    Streams,
    /// Memory while a client stalls on a big reply; full-speed read.
    Big,
    /// Non-streamed calls per second at each `--concurrency`.
    Throughput,
}

#[derive(Parser, Debug)]
#[command(
    name = "chatbench",
    about = "Streamed chat through `lambent serve` against the same calls made directly to a fake provider"
)]
struct Options {
    /// The release `lambent` binary [default: $CARGO_TARGET_DIR/release/lambent,
    /// else ./target/release/lambent].
    #[arg(long)]
    lambent: Option<PathBuf>,
    /// A short run: 200 calls each way (20 warm-up), 100 streams held 5 s, a
    /// 20 MB reply, a 3 s stall. Explicit counts still win.
    #[arg(long)]
    quick: bool,
    /// Measured streamed calls each way.
    #[arg(long, default_value_t = 2000, default_value_if("quick", "true", "200"))]
    ttft_calls: usize,
    /// Measured calls each way of each kind of turn (text, tool call) of the
    /// tool phase.
    #[arg(long, default_value_t = 2000, default_value_if("quick", "true", "200"))]
    tool_calls: usize,
    /// Measured non-streamed calls each way.
    #[arg(long, default_value_t = 2000, default_value_if("quick", "true", "200"))]
    whole_calls: usize,
    /// Measured calls of each plain route of the probe phase.
    #[arg(long, default_value_t = 1000, default_value_if("quick", "true", "200"))]
    probe_calls: usize,
    /// Unmeasured calls each way before each latency phase.
    #[arg(long, default_value_t = 200, default_value_if("quick", "true", "20"))]
    warmup: usize,
    /// Turns per session before a new one is made, so the context Lambent
    /// re-sends stays small (0 or 1: a new session for every call).
    #[arg(long, default_value_t = 50)]
    turns_per_session: usize,
    /// Streams held open at once.
    #[arg(long, default_value_t = 1000, default_value_if("quick", "true", "100"))]
    streams: usize,
    /// Streams being opened at once (the rest wait; all stay open).
    #[arg(long, default_value_t = 64)]
    open_concurrency: usize,
    /// How long the open streams are held while RSS is sampled, seconds.
    #[arg(long, default_value_t = 15, default_value_if("quick", "true", "5"))]
    hold_secs: u64,
    /// How long the client stops reading the big reply, seconds.
    #[arg(long, default_value_t = 10, default_value_if("quick", "true", "3"))]
    stall_secs: u64,
    /// Deltas of the big reply (200 MB with 1 KiB deltas).
    #[arg(
        long,
        default_value_t = 200_000,
        default_value_if("quick", "true", "20000")
    )]
    big_deltas: u64,
    /// Bytes of each delta of the big reply.
    #[arg(long, default_value_t = 1024)]
    delta_bytes: usize,
    /// LAMBENT_RATE_LIMIT_REQUESTS for lambent, per minute (0: no rate
    /// limiting, so no counter write per request). The default keeps the
    /// limiter on, as a deployment has it, with a limit the bench's one user
    /// never reaches (lambent's own default, 600, would refuse it).
    #[arg(long, default_value_t = 1_000_000)]
    rate_limit: u64,
    /// How many calls are made at once in the throughput phase, each
    /// (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [1, 16, 64])]
    concurrency: Vec<usize>,
    /// Measured non-streamed calls each way at each concurrency.
    #[arg(long, default_value_t = 6000, default_value_if("quick", "true", "600"))]
    throughput_calls: usize,
    /// Where the temporary data directory is made [default: the system
    /// temporary directory]. On tmpfs (/dev/shm) SQLite's fsyncs cost nothing.
    #[arg(long)]
    data_root: Option<PathBuf>,
    /// Only these phases (comma-separated) [default: all].
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Phase>,
    /// Keep the data directory and lambent's log in it (lambent.log).
    #[arg(long)]
    keep: bool,
}

fn main() -> Result<()> {
    served::on_two_workers(run(Options::parse()))
}

async fn run(o: Options) -> Result<()> {
    let bin = served::lambent_binary(o.lambent.as_deref())?;
    let nofile = raise_nofile_limit(o.streams as u64 * 4 + 1024);
    let data_root = o.data_root.clone().unwrap_or_else(std::env::temp_dir);
    let data = tempfile::Builder::new()
        .prefix("chatbench-")
        .tempdir_in(&data_root)?;
    eprintln!("chatbench: {}; {nofile} files", data.path().display());
    let (dir, rate_limit) = (data.path().to_path_buf(), o.rate_limit.to_string());
    // The open-streams phase holds all its streams for the world's one
    // user: the per-user cap (8 by default) is raised to let it, and then
    // some, as the phase after it restarts lambent while the killed one's
    // slots are still leased (for a minute).
    let max_streams = (2 * o.streams + 8).to_string();
    let bin_path = bin.clone();
    let serve = move || serve(&bin_path, &dir, &rate_limit, &max_streams);
    let lambent = serve()?;
    let world = ChatWorld::seed(TestApp::attached(lambent.addr, data), "anthropic").await;
    world.fake.set_default(latency_reply());
    let mut bench = Bench::new(o, lambent, Box::new(serve), world).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_kib = steady_rss(bench.pid()).await;
    let idle = idle_kib.map_or_else(|| "n/a".into(), mib);
    let only = bench.o.only.clone();
    let runs = |phase| only.is_empty() || only.contains(&phase);
    if runs(Phase::Ttft) {
        bench.latency(true).await?;
    }
    if runs(Phase::Whole) {
        bench.latency(false).await?;
    }
    if runs(Phase::Tools) {
        bench.tool_turns().await?;
    }
    if runs(Phase::Throughput) {
        bench.throughput().await?;
    }
    let idle_goal = idle_kib.map(|kib| {
        (
            format!("≤ {}", mib(GOAL_IDLE_RSS_KIB)),
            kib <= GOAL_IDLE_RSS_KIB,
        )
    });
    bench
        .table
        .row("RSS of lambent, idle after setup", "", &idle, "", idle_goal);
    let probes = if runs(Phase::Probe) {
        bench.probes().await?
    } else {
        String::new()
    };
    if runs(Phase::Streams) {
        bench.open_streams().await?;
    }
    if runs(Phase::Big) {
        bench.big_reply().await?;
    }
    bench.lambent.stop();
    println!("{}{probes}", bench.table.markdown());
    let (t, w) = (GOAL_ADDED_TTFT, GOAL_ADDED_WHOLE);
    println!(
        "Goals: added TTFT p50 ≤ {:.0} µs, p99 ≤ {:.0} µs; added non-streamed p50 ≤ {:.0} µs, \
         p99 ≤ {:.0} µs; idle RSS ≤ {}; ≤ {GOAL_KIB_PER_STREAM:.0} KiB per open stream; \
         ≤ {} MiB growth while a client stalls; a tool-call turn adds ≤ \
         {GOAL_TOOL_MINUS_TEXT_P50_US:.0} µs more than a text turn at p50; ≥ \
         {GOAL_CALLS_PER_SEC:.0} non-streamed calls/s at {GOAL_CONCURRENCY} at once. Added = \
         through − direct at the same percentile.",
        t.p50_us,
        t.p99_us,
        w.p50_us,
        w.p99_us,
        mib(GOAL_IDLE_RSS_KIB),
        GOAL_STALL_GROWTH_KIB / 1024
    );
    let o = &bench.o;
    let rate_limit = match o.rate_limit {
        0 => "off".to_owned(),
        n => format!("{n} requests/min"),
    };
    println!(
        "Calls alternate direct/through on one kept-alive HTTP/1.1 connection each (reqwest); \
         {} warm-up calls each way; a new session every {} turns; rate limit {rate_limit}; \
         data directory on {}; lambent {}.",
        o.warmup,
        o.turns_per_session.max(1),
        data_root.display(),
        bin.display()
    );
    if o.keep {
        eprintln!(
            "chatbench: kept {}",
            bench.world.app.data_dir.keep().display()
        );
    }
    Ok(())
}

/// `lambent serve` on embedded storage in `data_dir`, logging to
/// `lambent.log` there; killed when dropped.
fn serve(
    bin: &Path,
    data_dir: &Path,
    rate_limit: &str,
    max_streams: &str,
) -> Result<LambentProcess> {
    served::serve(
        "chatbench",
        bin,
        data_dir,
        &[
            ("LAMBENT_RATE_LIMIT_REQUESTS", rate_limit),
            ("LAMBENT_MAX_STREAMS_PER_USER", max_streams),
        ],
    )
}

/// Raises the soft limit on open files to `want` (and the hard one, if
/// allowed; else to the hard one); lambent inherits it. The limit in force.
fn raise_nofile_limit(want: u64) -> String {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let now = getrlimit(Resource::Nofile);
    if now.current.is_some_and(|soft| soft < want) {
        let maximum = now.maximum.map(|hard| hard.max(want));
        let capped = Rlimit {
            current: now.maximum,
            ..now
        };
        if setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(want),
                maximum,
            },
        )
        .is_err()
        {
            let _ = setrlimit(Resource::Nofile, capped);
        }
    }
    let limit = getrlimit(Resource::Nofile).current;
    limit.map_or_else(|| "unlimited".into(), |n| n.to_string())
}

/// The latency calls' reply: short deltas and a usage.
fn latency_reply() -> Reply {
    let usage = FakeUsage {
        input: 20,
        output: 8,
        ..Default::default()
    };
    Reply::text(REPLY).usage(usage)
}

/// The tool turn's reply: one call, no text, the same usage.
fn tool_reply() -> Reply {
    let usage = FakeUsage {
        input: 20,
        output: 8,
        ..Default::default()
    };
    let call = FakeToolCall::new("call_1", TOOL, TOOL_ARGUMENTS);
    Reply::tool_calls([call]).usage(usage)
}

/// The median of a few `VmRSS` samples over half a second.
async fn steady_rss(pid: u32) -> Option<u64> {
    let mut samples = Vec::new();
    for _ in 0..5 {
        samples.extend(rss_kib(pid));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    samples.sort_unstable();
    percentile(&samples, 50.0)
}

/// Samples `VmRSS` every `every` until told to stop; the highest sample.
fn sample_peak(pid: u32, every: Duration) -> (oneshot::Sender<()>, JoinHandle<u64>) {
    let (stop, mut stopped) = oneshot::channel();
    let task = tokio::spawn(async move {
        let mut peak = 0;
        loop {
            peak = peak.max(rss_kib(pid).unwrap_or(0));
            if tokio::time::timeout(every, &mut stopped).await.is_ok() {
                return peak.max(rss_kib(pid).unwrap_or(0));
            }
        }
    });
    (stop, task)
}

async fn peak_of((stop, task): (oneshot::Sender<()>, JoinHandle<u64>)) -> u64 {
    let _ = stop.send(());
    task.await.unwrap_or(0)
}

/// What a client saw of one event stream so far.
struct Seen {
    started: Instant,
    first_text: Option<Duration>,
    /// The first sign of a tool call (direct: its `tool_use` block opens;
    /// through: its `tool_call` event), and the first whole call (direct:
    /// the block closes; through: the same `tool_call` event).
    first_tool_start: Option<Duration>,
    first_tool_call: Option<Duration>,
    tools: ToolCalls,
    deltas: u64,
    /// `message_start` and the end (`message_stop` direct, `message_end` through).
    opened: bool,
    ended: bool,
    parser: SseParser,
}

impl Seen {
    fn new() -> Seen {
        let (started, parser) = (Instant::now(), SseParser::new());
        let (first_text, deltas, opened, ended) = (None, 0, false, false);
        Seen {
            started,
            first_text,
            first_tool_start: None,
            first_tool_call: None,
            tools: ToolCalls::default(),
            deltas,
            opened,
            ended,
            parser,
        }
    }

    /// Reads events until `enough` holds or the stream ends.
    async fn read(
        &mut self,
        response: &mut Response,
        enough: impl Fn(&Seen) -> bool,
    ) -> Result<()> {
        while !enough(self) {
            let Some(chunk) = response.chunk().await? else {
                return Ok(());
            };
            for event in self.parser.feed(&chunk)? {
                let (opened, whole) = self.tools.see(&event);
                if opened {
                    self.first_tool_start.get_or_insert(self.started.elapsed());
                }
                if whole {
                    self.first_tool_call.get_or_insert(self.started.elapsed());
                }
                match event.event.as_deref() {
                    _ if is_text_delta(&event) => {
                        self.first_text.get_or_insert(self.started.elapsed());
                        self.deltas += 1;
                    }
                    Some("message_start") => self.opened = true,
                    Some("message_stop" | "message_end") => self.ended = true,
                    Some("error") => bail!("error event: {}", event.data),
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Sends `request` and reads its whole event stream.
    async fn whole(request: RequestBuilder) -> Result<Seen> {
        let mut seen = Seen::new();
        seen.read(&mut ok(request).await?, |_| false).await?;
        ensure!(seen.ended, "the stream ended without its end event");
        Ok(seen)
    }
}

/// Each list of requests on a task of its own, its requests one after the
/// other, all the tasks at once; how long each request took to its whole
/// answer.
async fn run_at_once(tasks: Vec<Vec<RequestBuilder>>) -> Result<Vec<Duration>> {
    let tasks: Vec<JoinHandle<Result<Vec<Duration>>>> = tasks
        .into_iter()
        .map(|requests| {
            tokio::spawn(async move {
                let mut took = Vec::with_capacity(requests.len());
                for request in requests {
                    let started = Instant::now();
                    ensure!(
                        !ok(request).await?.bytes().await?.is_empty(),
                        "an empty answer"
                    );
                    took.push(started.elapsed());
                }
                Ok(took)
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await??);
    }
    Ok(all)
}

type Restart = Box<dyn Fn() -> Result<LambentProcess>>;

/// The run: options, lambent, the chat world, the measuring client with
/// the two paths' requests, and the table the figures go to.
struct Bench {
    o: Options,
    lambent: LambentProcess,
    /// Starts lambent on its data.
    serve: Restart,
    world: ChatWorld,
    /// One client: it keeps a connection per host alive across sequential
    /// calls (TCP_NODELAY by default), and opens more for concurrent ones.
    client: Client,
    fake_url: String,
    /// What Lambent's client sends the provider for a first turn with the
    /// world's agent, and what a client sends lambent: whole, then streamed.
    /// Built once, so neither path's timing includes encoding them.
    direct: [Vec<u8>; 2],
    through: [Vec<u8>; 2],
    table: Table,
}

impl Bench {
    async fn new(
        o: Options,
        lambent: LambentProcess,
        serve: Restart,
        world: ChatWorld,
    ) -> Result<Bench> {
        let path = format!("/v1/agents/{}", world.agent_id);
        let (status, agent) = world.call(Method::GET, &path, None).await;
        ensure!(status == 200, "reading the agent: {status} {agent}");
        let turns = vec![Turn::text(Role::User, PROMPT)];
        let request = ChatRequest {
            model: agent["model"].as_str().unwrap_or_default().into(),
            system: agent["system_prompt"].as_str().map(str::to_owned),
            turns,
            max_tokens: agent["max_tokens"].as_u64().unwrap_or(1024) as u32,
            temperature: None,
            ..ChatRequest::default()
        };
        let direct = |stream| lambent_llm::anthropic::request_body(&request, stream);
        let through = |stream: bool| json!({ "content": PROMPT, "stream": stream }).to_string();
        Ok(Bench {
            client: Client::builder().no_proxy().http1_only().build()?,
            fake_url: format!("{}/v1/messages", world.fake.anthropic_base_url()),
            direct: [direct(false)?, direct(true)?],
            through: [through(false).into(), through(true).into()],
            table: Table::default(),
            o,
            lambent,
            serve,
            world,
        })
    }

    fn pid(&self) -> u32 {
        self.lambent.child.id()
    }

    async fn session(&self) -> String {
        self.world.session(json!({})).await
    }

    /// A JSON `POST` of one of two prepared bodies (whole, streamed).
    fn post(&self, url: &str, bodies: &[Vec<u8>; 2], stream: bool) -> RequestBuilder {
        let body = bodies[usize::from(stream)].clone();
        let request = self.client.post(url).body(body);
        request.header("content-type", "application/json")
    }

    /// `POST /v1/messages` to the fake provider.
    fn direct(&self, stream: bool) -> RequestBuilder {
        self.direct_with(&self.direct, stream)
    }

    /// `POST /v1/messages` of one of these bodies to the fake provider.
    fn direct_with(&self, bodies: &[Vec<u8>; 2], stream: bool) -> RequestBuilder {
        let request = self.post(&self.fake_url, bodies, stream);
        let request = request.header("x-api-key", PROVIDER_KEY);
        request.header("anthropic-version", "2023-06-01")
    }

    /// `POST /v1/sessions/{id}/messages` to lambent.
    fn through(&self, session: &str, stream: bool) -> RequestBuilder {
        let url = self
            .world
            .app
            .url(&format!("/v1/sessions/{session}/messages"));
        self.post(&url, &self.through, stream)
            .bearer_auth(&self.world.key)
    }

    /// Sequential calls, direct and through alternating (which goes first
    /// alternates too), and lambent's CPU time over the measured ones.
    async fn latency(&mut self, stream: bool) -> Result<()> {
        let (o, pid) = (&self.o, self.pid());
        let calls = if stream { o.ttft_calls } else { o.whole_calls };
        let (mut samples, mut cpu_at_start) = ([Vec::new(), Vec::new()], None);
        let mut session = String::new();
        for i in 0..o.warmup + calls {
            if i == o.warmup {
                cpu_at_start = cpu_time(pid);
            }
            // Each turn re-sends the session's history: a new one now and then, untimed.
            if i % o.turns_per_session.max(1) == 0 {
                session = self.session().await;
            }
            for via_lambent in [i % 2 == 1, i % 2 == 0] {
                let request = if via_lambent {
                    self.through(&session, stream)
                } else {
                    self.direct(stream)
                };
                let started = Instant::now();
                let took = if stream {
                    Seen::whole(request).await?.first_text.context("no text")?
                } else {
                    ensure!(
                        !ok(request).await?.bytes().await?.is_empty(),
                        "an empty answer"
                    );
                    started.elapsed()
                };
                if i >= o.warmup {
                    samples[usize::from(via_lambent)].push(took);
                }
            }
        }
        let per_call = |(start, end): (Duration, Duration)| (end - start) / calls.max(1) as u32;
        let cpu = cpu_at_start.zip(cpu_time(pid)).map(per_call);
        let (name, goal) = match stream {
            true => ("TTFT, streamed", GOAL_ADDED_TTFT),
            false => ("latency, non-streamed", GOAL_ADDED_WHOLE),
        };
        self.table
            .latencies(name, &samples[0], &samples[1], cpu, goal);
        Ok(())
    }

    /// The agent offers a client tool; then streamed turns, each in a new
    /// session (made untimed: a session whose last reply is a tool call
    /// waits for its results), a text turn and a tool-call turn in turn,
    /// each direct and through alternating as in [`Bench::latency`]. The
    /// text turn is timed to its first text, the tool turn to its whole call
    /// (Lambent sends a call only once its arguments are whole): direct to
    /// the `content_block_stop` of the `tool_use` block, through to the
    /// `tool_call` event. The direct requests carry the tool too, as
    /// Lambent's do. The agent loses its tool again at the end.
    async fn tool_turns(&mut self) -> Result<()> {
        let agent = format!("/v1/agents/{}", self.world.agent_id);
        let schema = json!({ "type": "object", "properties": { "city": { "type": "string" } } });
        let tools = json!([{ "name": TOOL, "input_schema": schema }]);
        let body = json!({ "tools": tools });
        let (status, agent_now) = self.world.call(Method::PATCH, &agent, Some(body)).await;
        ensure!(
            status == 200,
            "giving the agent a tool: {status} {agent_now}"
        );
        let request = ChatRequest {
            model: agent_now["model"].as_str().unwrap_or_default().into(),
            system: agent_now["system_prompt"].as_str().map(str::to_owned),
            turns: vec![Turn::text(Role::User, PROMPT)],
            max_tokens: agent_now["max_tokens"].as_u64().unwrap_or(1024) as u32,
            tools: serde_json::from_value::<Vec<ToolSpec>>(agent_now["tools"].clone())?,
            tool_choice: serde_json::from_value::<ToolChoice>(agent_now["tool_choice"].clone())
                .unwrap_or_default(),
            ..ChatRequest::default()
        };
        let body = |stream| lambent_llm::anthropic::request_body(&request, stream);
        let bodies = [body(false)?, body(true)?];
        let (warmup, calls) = (self.o.warmup, self.o.tool_calls);
        // [text, tool] × [direct, through]
        let mut samples: [[Vec<Duration>; 2]; 2] = Default::default();
        let mut first_sign = Vec::new();
        for i in 0..warmup + calls {
            for tool_turn in [false, true] {
                let session = self.session().await;
                for via_lambent in [i % 2 == 1, i % 2 == 0] {
                    if tool_turn {
                        self.world.fake.push(tool_reply());
                    }
                    let request = if via_lambent {
                        self.through(&session, true)
                    } else {
                        self.direct_with(&bodies, true)
                    };
                    let seen = Seen::whole(request).await?;
                    let took = match tool_turn {
                        false => seen.first_text.context("no text")?,
                        true => {
                            ensure!(seen.first_text.is_none(), "text in the tool turn");
                            if !via_lambent && i >= warmup {
                                first_sign.extend(seen.first_tool_start);
                            }
                            seen.first_tool_call.context("no whole tool call")?
                        }
                    };
                    if i >= warmup {
                        samples[usize::from(tool_turn)][usize::from(via_lambent)].push(took);
                    }
                }
            }
            if i == 0 {
                // Lambent offered the tool to the provider, as the direct calls do.
                let sent = self.world.fake.requests();
                let names = sent.last().map(|r| r.tool_names()).unwrap_or_default();
                ensure!(names == [TOOL], "lambent offered the tools {names:?}");
            }
        }
        let (text, tool) = (&samples[0], &samples[1]);
        self.table.tool_turn(
            [&text[0], &text[1]],
            [&tool[0], &tool[1]],
            "tool phase: text turn, TTFT (first text)",
            "tool phase: tool-call turn, time to the whole call",
        );
        if let Some(l) = Latencies::of(&first_sign) {
            let measure =
                "… tool-call turn direct: the `tool_use` block opens (content_block_start), p50";
            self.table.row(measure, &us(l.p50), "", "", None);
        }
        let body = json!({ "tools": [] });
        let (status, answer) = self.world.call(Method::PATCH, &agent, Some(body)).await;
        ensure!(status == 200, "taking the tool back: {status} {answer}");
        Ok(())
    }

    /// Non-streamed calls at each concurrency, direct then through (or the
    /// other way round, alternating by level): `n` tasks each make their
    /// share of the calls one after another, each through call in a
    /// session of its task's own (made beforehand, a new one every
    /// `--turns-per-session` turns). Every call is billed: the user's
    /// `/v1/usage` must count each through call once.
    async fn throughput(&mut self) -> Result<()> {
        let levels = self.o.concurrency.clone();
        for (level, &n) in levels.iter().enumerate() {
            let n = n.max(1);
            let per_task = self.o.throughput_calls.div_ceil(n);
            let per_session = self.o.turns_per_session.max(1);
            let mut sessions = Vec::with_capacity(n);
            for _ in 0..n {
                let mut own = Vec::new();
                for _ in 0..per_task.div_ceil(per_session) {
                    own.push(self.session().await);
                }
                sessions.push(own);
            }
            let calls_before = self.calls_billed().await?;
            let mut rates = [Rate::default(), Rate::default()];
            for via_lambent in [level % 2 == 1, level % 2 == 0] {
                // A short warm-up at this concurrency opens the connections.
                let warm: Vec<Vec<RequestBuilder>> = (0..n)
                    .map(|_| (0..2).map(|_| self.direct(false)).collect())
                    .collect();
                run_at_once(warm).await?;
                let tasks: Vec<Vec<RequestBuilder>> = sessions
                    .iter()
                    .map(|own| {
                        (0..per_task)
                            .map(|i| match via_lambent {
                                true => self.through(&own[i / per_session], false),
                                false => self.direct(false),
                            })
                            .collect()
                    })
                    .collect();
                let cpu_at_start = cpu_time(self.pid());
                let started = Instant::now();
                let latencies = run_at_once(tasks).await?;
                let elapsed = started.elapsed();
                let cpu = cpu_at_start
                    .zip(cpu_time(self.pid()))
                    .map(|(start, end)| end - start);
                rates[usize::from(via_lambent)] = Rate {
                    latencies,
                    elapsed,
                    cpu: cpu.filter(|_| via_lambent),
                };
            }
            let billed = self.calls_billed().await? - calls_before;
            let made = rates[1].latencies.len() as u64;
            ensure!(
                billed == made,
                "{made} calls through lambent at {n} at once, {billed} billed"
            );
            eprintln!(
                "chatbench: throughput at {n} at once: direct {:.0}/s, through {:.0}/s",
                rates[0].per_second(),
                rates[1].per_second()
            );
            self.table.throughput(n, &rates[0], &rates[1]);
        }
        Ok(())
    }

    /// The calls `/v1/usage` counts for the world's user (all of today's).
    async fn calls_billed(&self) -> Result<u64> {
        let (status, usage) = self.world.call(Method::GET, "/v1/usage", None).await;
        ensure!(status == 200, "reading the usage: {status} {usage}");
        usage["total"]["calls"]
            .as_u64()
            .context("no total.calls in the usage")
    }

    /// Sequential calls of each probe, timed to the end of the answer; their table.
    async fn probes(&self) -> Result<String> {
        let (session, calls) = (self.session().await, self.o.probe_calls);
        let mut out = String::from("\nFor context, plain routes of lambent on the same connection and client:\n\n| request | calls | p50 | p90 | p99 | max |\n|---|---:|---:|---:|---:|---:|\n");
        for (what, expect) in PROBES {
            let mut words = what.split(' ');
            let (method, path) = (
                words.next().unwrap_or_default(),
                words.next().unwrap_or_default(),
            );
            let url = self.world.app.url(&path.replace("{id}", &session));
            let mut samples = Vec::with_capacity(calls);
            for i in 0..calls + 50 {
                let request = self.client.request(method.parse()?, &url);
                let request = request.bearer_auth(&self.world.key);
                let request = match method {
                    "POST" => request.json(&json!({ "agent_id": self.world.agent_id })),
                    _ => request,
                };
                let started = Instant::now();
                let response = request.send().await?;
                let status = response.status();
                response.bytes().await?;
                ensure!(status == expect, "{what}, call {i}: {status}");
                if i >= 50 {
                    samples.push(started.elapsed());
                }
            }
            let l = Latencies::of(&samples).context("no calls")?;
            let (p50, p90, p99, max) = (us(l.p50), us(l.p90), us(l.p99), us(l.max));
            out.push_str(&format!(
                "| {what} | {calls} | {p50} | {p90} | {p99} | {max} |\n"
            ));
        }
        Ok(out)
    }

    /// Lambent restarted on the same data, so memory the allocator kept
    /// from an earlier phase cannot hide growth.
    fn restart(&mut self) -> Result<()> {
        self.lambent.stop();
        self.lambent = (self.serve)()?;
        self.world.app.addr = self.lambent.addr;
        Ok(())
    }

    /// A few streamed calls, unmeasured, so lazy state is built; after a
    /// rest, lambent's RSS.
    async fn baseline(&self) -> Result<u64> {
        let session = self.session().await;
        for _ in 0..20 {
            Seen::whole(self.through(&session, true)).await?;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        steady_rss(self.pid()).await.context("no VmRSS for lambent")
    }

    /// Streams through lambent, each of its own session, held open after
    /// `message_start` while the provider holds the first token back.
    async fn open_streams(&mut self) -> Result<()> {
        let (n, opening) = (self.o.streams, self.o.open_concurrency.max(1));
        self.restart()?;
        let mut requests = Vec::with_capacity(n);
        for _ in 0..n {
            requests.push(self.through(&self.session().await, true));
        }
        let idle = self.baseline().await?;
        let (pid, mut threads) = (self.pid(), vec![status(self.pid(), "Threads")]);
        eprintln!("chatbench: idle RSS {}; opening {n} streams", mib(idle));
        let never = Duration::from_secs(3600);
        self.world
            .fake
            .set_default(latency_reply().first_token_delay(never));
        // A few opened at a time; each stays open when its task returns it.
        let permits = Arc::new(Semaphore::new(opening));
        let mut opens = tokio::task::JoinSet::new();
        for request in requests {
            let permits = permits.clone();
            opens.spawn(async move {
                let _permit = permits.acquire().await?;
                let mut response = ok(request).await?;
                Seen::new().read(&mut response, |seen| seen.opened).await?;
                Ok::<_, anyhow::Error>(response)
            });
        }
        let opened = tokio::time::timeout(Duration::from_secs(600), opens.join_all()).await;
        let held = opened.context("the streams did not open within 600 s")?;
        let held = held.into_iter().collect::<Result<Vec<_>>>()?;
        let all_open = rss_kib(pid).context("no VmRSS")?;
        threads.push(status(pid, "Threads"));
        eprintln!(
            "chatbench: {} open at the fake",
            self.world.fake.open_streams()
        );
        let sampler = sample_peak(pid, Duration::from_millis(250));
        tokio::time::sleep(Duration::from_secs(self.o.hold_secs)).await;
        let peak = peak_of(sampler).await.max(all_open);
        let end = rss_kib(pid).unwrap_or(peak);
        threads.push(status(pid, "Threads"));
        drop(held);
        self.world.fake.set_default(latency_reply());

        let t: Vec<String> = threads
            .iter()
            .map(|t| t.map_or("n/a".into(), |t| t.to_string()))
            .collect();
        let measure = format!(
            "RSS of lambent, idle before opening the streams (threads: {})",
            t[0]
        );
        self.table.through(&measure, &mib(idle));
        let hold = self.o.hold_secs;
        let measure = format!("RSS with {n} open streams ({opening} opened at a time): peak over {hold} s held (at all open / at the end; threads at all open / at the end: {} / {})", t[1], t[2]);
        let rss = format!("{} ({} / {})", mib(peak), mib(all_open), mib(end));
        self.table.through(&measure, &rss);
        let (per_stream, at_end) = (kib_per_stream(idle, peak, n), kib_per_stream(idle, end, n));
        let goal = (
            format!("≤ {GOAL_KIB_PER_STREAM:.0} KiB"),
            per_stream <= GOAL_KIB_PER_STREAM,
        );
        let measure = "RSS per open stream: (peak − idle) / streams (with the last sample instead of the peak)";
        let figure = format!("{per_stream:.1} KiB ({at_end:.1} KiB)");
        self.table.row(measure, "", "", &figure, Some(goal));
        Ok(())
    }

    /// A client that reads a little of a big reply, stops, then reads on;
    /// then one that reads a whole one at full speed, through and direct.
    async fn big_reply(&mut self) -> Result<()> {
        self.restart()?;
        let baseline = self.baseline().await?;
        let (o, pid) = (&self.o, self.pid());
        let chunk: String = (0..o.delta_bytes.max(1))
            .map(|i| (b'a' + (i % 26) as u8) as char)
            .collect();
        let usage = FakeUsage {
            input: 20,
            output: o.big_deltas,
            ..Default::default()
        };
        let reply = || Reply::repeated(&chunk, o.big_deltas).usage(usage);
        let bytes = o.big_deltas * chunk.len() as u64;
        eprintln!("chatbench: baseline RSS {}; {bytes} bytes", mib(baseline));

        let session = self.session().await;
        self.world.fake.push(reply());
        let mut response = ok(self.through(&session, true)).await?;
        let mut seen = Seen::new();
        seen.read(&mut response, |seen| seen.deltas >= 3).await?;
        let sampler = sample_peak(pid, Duration::from_millis(100));
        tokio::time::sleep(Duration::from_secs(o.stall_secs)).await;
        let stalled = peak_of(sampler).await;
        let sampler = sample_peak(pid, Duration::from_millis(50));
        seen.read(&mut response, |_| false).await?;
        let resumed = peak_of(sampler).await;
        drop(response);
        let stored = stored_reply(&self.world.history(&session, 10, "asc").await);

        let session = self.session().await;
        self.world.fake.push(reply());
        let sampler = sample_peak(pid, Duration::from_millis(50));
        let through = Seen::whole(self.through(&session, true)).await?;
        let through_time = through.started.elapsed();
        let full_speed = peak_of(sampler).await;
        self.world.fake.push(reply());
        let direct = Seen::whole(self.direct(true)).await?;
        let direct_time = direct.started.elapsed();
        let got = (through.deltas, direct.deltas);
        ensure!(
            got == (o.big_deltas, o.big_deltas),
            "full-speed reads got {got:?} deltas"
        );

        let (mb, stall_secs) = (format!("{:.0}", bytes as f64 / 1e6), o.stall_secs);
        let growth = stalled as i64 - baseline as i64;
        let measure = format!("RSS growth while a client stops reading a {mb} MB stream for {stall_secs} s (peak − baseline {})", mib(baseline));
        let goal = (
            format!("≤ {} MiB", GOAL_STALL_GROWTH_KIB / 1024),
            growth <= GOAL_STALL_GROWTH_KIB,
        );
        self.table
            .row(&measure, "", "", &format!("{growth:+} KiB"), Some(goal));
        let ended = if seen.ended {
            "message_end seen"
        } else {
            "**no message_end**"
        };
        let measure =
            format!("… then reading on to the end: peak growth; deltas received, {ended}");
        let growth = |peak: u64| format!("{:+} KiB", peak as i64 - baseline as i64);
        self.table.lambent(
            &measure,
            &format!("{} ({} deltas)", growth(resumed), seen.deltas),
        );
        self.table
            .lambent("… the stalled reply as stored (GET history)", &stored);
        let measure =
            format!("reading a {mb} MB stream at full speed: time (throughput); RSS peak growth");
        let (direct, through) = (
            throughput(bytes, direct_time),
            throughput(bytes, through_time),
        );
        self.table
            .row(&measure, &direct, &through, &growth(full_speed), None);
        Ok(())
    }
}
