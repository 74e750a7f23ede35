//! Streamed chat benchmark: the same calls made directly to a fake provider
//! and through `lambent serve`, side by side, on loopback.
//!
//! It starts the fake provider in this process and the release `lambent`
//! binary as a child on a temporary data directory (embedded SQLite), sets
//! up a member, a provider, a model and an agent, then measures:
//!
//! 1. time to first token (TTFT) of sequential streamed calls, direct and
//!    through, alternating: from sending the request to the first text
//!    delta (Anthropic `content_block_delta` direct, Lambent `delta`
//!    through);
//! 2. latency of sequential non-streamed calls (`"stream": false`);
//! 3. `VmRSS` of lambent idle, then with many streams open at once (each
//!    client has received `message_start`, the provider holds the first
//!    token back);
//! 4. `VmRSS` of lambent while a client stops reading a 200 MB reply, then
//!    reads on; what was stored; and a 200 MB reply read at full speed.
//!
//! Phases 3 and 4 each run on a freshly started lambent (same data), so
//! that memory freed by an earlier phase but kept by the allocator does not
//! hide growth. Prints a Markdown table on stdout, progress on stderr.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc as std_mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use clap::{Parser, ValueEnum};
use http::{header, Method, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use lambent_bench::chat::{
    cpu_time, hwm_kib, is_text_delta, median_u64, mib, rss_breakdown, rss_kib, threads, BigReply,
    Latencies, OpenStreams, Probe, Report, SideBySide, SseParser, GOAL_ADDED_TTFT_P99_US,
    GOAL_ADDED_WHOLE_P99_US, GOAL_KIB_PER_STREAM, GOAL_STALL_GROWTH_KIB,
};
use lambent_fake_provider::{FakeProvider, FakeUsage, Reply};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch, Semaphore};

/// The model name registered in Lambent's catalog and sent directly.
const MODEL: &str = "fake-anthropic";
/// The member's provider key (the fake accepts any).
const PROVIDER_KEY: &str = "sk-x";
/// The user message of every measured call.
const PROMPT: &str = "Say hello in one short sentence.";
/// The fake provider's reply to the latency calls: 9 deltas of up to 4 characters.
const REPLY: &str = "Hello from the benchmark, friend!";
/// Lambent's agent default, sent in the direct requests too.
const MAX_TOKENS: u32 = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Phase {
    /// Time to first token of streamed calls.
    Ttft,
    /// Latency of non-streamed calls.
    Whole,
    /// Memory with many open streams.
    Streams,
    /// Memory while a client stalls on a 200 MB reply; full-speed read.
    Big,
    /// Plain routes of lambent (read a session, make a session), for context.
    Probe,
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
    /// Measured streamed calls each way [default: 2000].
    #[arg(long)]
    ttft_calls: Option<usize>,
    /// Measured non-streamed calls each way [default: 2000].
    #[arg(long)]
    whole_calls: Option<usize>,
    /// Measured calls of each plain route of the probe phase [default: 1000].
    #[arg(long)]
    probe_calls: Option<usize>,
    /// Unmeasured calls each way before each latency phase [default: 200].
    #[arg(long)]
    warmup: Option<usize>,
    /// Turns per session before a new one is made, so the context Lambent
    /// re-sends stays small (0: a new session for every call).
    #[arg(long, default_value_t = 50)]
    turns_per_session: usize,
    /// Streams held open at once [default: 1000].
    #[arg(long)]
    streams: Option<usize>,
    /// Streams being opened at once (the rest wait; all stay open) [default: 64].
    #[arg(long)]
    open_concurrency: Option<usize>,
    /// How long the open streams are held while RSS is sampled, seconds [default: 15].
    #[arg(long)]
    hold_secs: Option<u64>,
    /// How long the client stops reading the big reply, seconds [default: 10].
    #[arg(long)]
    stall_secs: Option<u64>,
    /// Deltas of the big reply [default: 200000, i.e. 200 MB with 1 KiB deltas].
    #[arg(long)]
    big_deltas: Option<u64>,
    /// Bytes of each delta of the big reply.
    #[arg(long, default_value_t = 1024)]
    delta_bytes: usize,
    /// LAMBENT_RATE_LIMIT_REQUESTS for lambent (0: no rate limiting, so no
    /// counter write per request).
    #[arg(long, default_value_t = 0)]
    rate_limit: u64,
    /// Where the temporary data directory is made [default: the system
    /// temporary directory]. On tmpfs (/dev/shm) SQLite's fsyncs cost nothing.
    #[arg(long)]
    data_root: Option<PathBuf>,
    /// Only these phases (comma-separated) [default: all].
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Phase>,
    /// Keep the data directory and lambent's log (lambent.log) after the run.
    #[arg(long)]
    keep: bool,
}

/// The counts of this run, defaults and `--quick` applied.
#[derive(Debug, Clone)]
struct Plan {
    ttft_calls: usize,
    whole_calls: usize,
    probe_calls: usize,
    warmup: usize,
    turns_per_session: usize,
    streams: usize,
    open_concurrency: usize,
    hold: Duration,
    stall: Duration,
    big_deltas: u64,
    delta_bytes: usize,
    phases: Vec<Phase>,
}

impl Plan {
    fn of(o: &Options) -> Plan {
        let quick = o.quick;
        let pick = |explicit: Option<usize>, full: usize, short: usize| {
            explicit.unwrap_or(if quick { short } else { full })
        };
        Plan {
            ttft_calls: pick(o.ttft_calls, 2000, 200),
            whole_calls: pick(o.whole_calls, 2000, 200),
            probe_calls: pick(o.probe_calls, 1000, 200),
            warmup: pick(o.warmup, 200, 20),
            turns_per_session: o.turns_per_session,
            streams: pick(o.streams, 1000, 100),
            open_concurrency: o.open_concurrency.unwrap_or(64).max(1),
            hold: Duration::from_secs(o.hold_secs.unwrap_or(if quick { 5 } else { 15 })),
            stall: Duration::from_secs(o.stall_secs.unwrap_or(if quick { 3 } else { 10 })),
            big_deltas: o.big_deltas.unwrap_or(if quick { 20_000 } else { 200_000 }),
            delta_bytes: o.delta_bytes.max(1),
            phases: if o.only.is_empty() {
                vec![
                    Phase::Ttft,
                    Phase::Whole,
                    Phase::Probe,
                    Phase::Streams,
                    Phase::Big,
                ]
            } else {
                o.only.clone()
            },
        }
    }

    fn runs(&self, phase: Phase) -> bool {
        self.phases.contains(&phase)
    }
}

fn main() -> Result<()> {
    let options = Options::parse();
    // Two workers, as many as the cores of the machine this was written on:
    // the client and the fake provider share them.
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("building the Tokio runtime")?
        .block_on(run(options))
}

async fn run(options: Options) -> Result<()> {
    let plan = Plan::of(&options);
    let lambent_bin = options.lambent.clone().unwrap_or_else(default_lambent);
    if !lambent_bin.is_file() {
        bail!(
            "no lambent binary at {} (build it: cargo build --release -p lambent-local --bin lambent, or pass --lambent)",
            lambent_bin.display()
        );
    }
    let nofile = raise_nofile_limit(plan.streams as u64 * 4 + 1024);
    eprintln!("chatbench: {plan:?}; open files limit {nofile}");

    let fake = FakeProvider::start()
        .await
        .context("starting the fake provider")?;
    fake.set_default(latency_reply());
    let fake_addr = fake.addr();

    let data_root = options.data_root.clone().unwrap_or_else(std::env::temp_dir);
    let scratch = tempfile::Builder::new()
        .prefix("chatbench-")
        .tempdir_in(&data_root)
        .with_context(|| format!("making a data directory in {}", data_root.display()))?;
    let data_dir = scratch.path().join("data");
    let log_path = scratch.path().join("lambent.log");
    let settings = LambentSettings {
        binary: lambent_bin.clone(),
        data_dir: data_dir.clone(),
        log: log_path.clone(),
        rate_limit: options.rate_limit,
    };
    eprintln!(
        "chatbench: lambent {} on data directory {} (log {})",
        lambent_bin.display(),
        data_dir.display(),
        log_path.display()
    );

    let mut lambent = Lambent::start(&settings)?;
    let mut world = World::setup(&lambent, &data_dir, &fake.anthropic_base_url()).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_rss_kib = steady_rss(lambent.pid).await;
    eprintln!("chatbench: setup done, lambent RSS {}", mib(idle_rss_kib));

    let mut report = Report {
        idle_rss_kib,
        ..Default::default()
    };

    if plan.runs(Phase::Ttft) {
        report.ttft = latency_phase(&world, &lambent, fake_addr, &plan, true).await?;
        eprintln!("chatbench: TTFT {:?}", report.ttft);
    }
    if plan.runs(Phase::Whole) {
        report.whole = latency_phase(&world, &lambent, fake_addr, &plan, false).await?;
        eprintln!("chatbench: non-streamed {:?}", report.whole);
    }
    if plan.runs(Phase::Probe) {
        report.probes = probe_phase(&world, lambent.addr, &plan).await?;
        eprintln!("chatbench: probes {:?}", report.probes);
    }
    if plan.runs(Phase::Streams) {
        drop(lambent);
        lambent = Lambent::start(&settings)?;
        world.addr = lambent.addr;
        let streams = open_streams_phase(&world, &lambent, &fake, &plan).await?;
        fake.set_default(latency_reply());
        eprintln!("chatbench: open streams {streams:?}");
        report.streams = Some(streams);
    }
    if plan.runs(Phase::Big) {
        drop(lambent);
        lambent = Lambent::start(&settings)?;
        world.addr = lambent.addr;
        let big = big_reply_phase(&world, &lambent, &fake, &plan).await?;
        eprintln!("chatbench: big reply {big:?}");
        report.big = Some(big);
    }
    drop(lambent);

    println!("{}", report.markdown());
    println!(
        "Goals: added TTFT p99 ≤ {GOAL_ADDED_TTFT_P99_US:.0} µs; added non-streamed p99 ≤ \
         {GOAL_ADDED_WHOLE_P99_US:.0} µs; ≤ {GOAL_KIB_PER_STREAM:.0} KiB per open stream; \
         ≤ {:.0} MiB growth while a client stalls. Added = through − direct at the same percentile.",
        GOAL_STALL_GROWTH_KIB / 1024.0
    );
    println!(
        "Calls alternate direct/through on one kept-alive HTTP/1.1 connection each (hyper client); \
         {} warm-up calls each way; a new session every {} turns; rate limit {}; data directory on {}; \
         lambent {}.",
        plan.warmup,
        plan.turns_per_session,
        if options.rate_limit == 0 {
            "off".to_owned()
        } else {
            format!("{} requests/min", options.rate_limit)
        },
        data_root.display(),
        lambent_bin.display()
    );
    if options.keep {
        let kept = scratch.keep();
        eprintln!("chatbench: kept {}", kept.display());
    }
    Ok(())
}

/// `$CARGO_TARGET_DIR/release/lambent`, else `./target/release/lambent`.
fn default_lambent() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"));
    target.join("release").join("lambent")
}

/// Raises the soft limit on open files to `want` (and the hard limit too,
/// if allowed); lambent inherits it. Returns the soft limit in force.
fn raise_nofile_limit(want: u64) -> String {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let current = getrlimit(Resource::Nofile);
    if current.current.is_none_or(|soft| soft >= want) {
        return describe_limit(current.current);
    }
    let wanted = Rlimit {
        current: Some(want),
        maximum: current.maximum.map(|hard| hard.max(want)),
    };
    if setrlimit(Resource::Nofile, wanted).is_err() {
        // Not allowed past the hard limit: go as far as it.
        let capped = Rlimit {
            current: current.maximum,
            maximum: current.maximum,
        };
        let _ = setrlimit(Resource::Nofile, capped);
    }
    let now = getrlimit(Resource::Nofile).current;
    if now.is_some_and(|soft| soft < want) {
        eprintln!(
            "chatbench: warning: only {} open files allowed, {want} wanted",
            describe_limit(now)
        );
    }
    describe_limit(now)
}

fn describe_limit(limit: Option<u64>) -> String {
    limit
        .map(|n| n.to_string())
        .unwrap_or_else(|| "unlimited".into())
}

/// The latency calls' reply: 8 short deltas and a usage.
fn latency_reply() -> Reply {
    Reply::text(REPLY).usage(FakeUsage {
        input: 20,
        output: 8,
        ..Default::default()
    })
}

// ------------------------------------------------------------------ lambent

#[derive(Debug, Clone)]
struct LambentSettings {
    binary: PathBuf,
    data_dir: PathBuf,
    log: PathBuf,
    rate_limit: u64,
}

/// `lambent serve` as a child process; killed (by its own handle) when dropped.
struct Lambent {
    child: Child,
    pid: u32,
    addr: SocketAddr,
    log: PathBuf,
}

impl Lambent {
    fn start(settings: &LambentSettings) -> Result<Lambent> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&settings.log)
            .with_context(|| format!("opening {}", settings.log.display()))?;
        let mut child = Command::new(&settings.binary)
            .arg("serve")
            .arg("--backend")
            .arg("embedded")
            .arg("--data-dir")
            .arg(&settings.data_dir)
            .arg("--addr")
            .arg("127.0.0.1:0")
            .env("LAMBENT_ALLOW_PRIVATE_PROVIDER_URLS", "1")
            .env(
                "LAMBENT_RATE_LIMIT_REQUESTS",
                settings.rate_limit.to_string(),
            )
            // The held streams stay silent for longer than the default 120 s
            // would allow if the run is slow.
            .env("LAMBENT_PROVIDER_IDLE_TIMEOUT_MS", "900000")
            .env("LAMBENT_LOG_FORMAT", "text")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", settings.binary.display()))?;
        let pid = child.id();
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("no stdout pipe"))?;
        let (tx, rx) = std_mpsc::channel();
        // Reads stdout to its end, so lambent never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            for line in lines.by_ref().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("lambent listening on http://") {
                    let _ = tx.send(rest.trim().to_owned());
                }
            }
        });
        let mut lambent = Lambent {
            child,
            pid,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log: settings.log.clone(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(addr) => {
                    lambent.addr = addr
                        .parse()
                        .with_context(|| format!("lambent printed the address {addr:?}"))?;
                    eprintln!("chatbench: lambent (pid {pid}) on {}", lambent.addr);
                    return Ok(lambent);
                }
                Err(std_mpsc::RecvTimeoutError::Timeout) => {}
                Err(std_mpsc::RecvTimeoutError::Disconnected) => {
                    bail!(
                        "lambent stopped before listening; log:\n{}",
                        lambent.log_tail()
                    )
                }
            }
            if let Ok(Some(status)) = lambent.child.try_wait() {
                bail!(
                    "lambent exited ({status}) before listening; log:\n{}",
                    lambent.log_tail()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "lambent did not listen within 60 s; log:\n{}",
                    lambent.log_tail()
                );
            }
        }
    }

    fn log_tail(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = std::fs::File::open(&self.log) {
            let _ = file.read_to_string(&mut text);
        }
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Lambent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The median of a few `VmRSS` samples over half a second.
async fn steady_rss(pid: u32) -> Option<u64> {
    let mut samples = Vec::new();
    for _ in 0..5 {
        samples.extend(rss_kib(pid));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    median_u64(&samples)
}

// ------------------------------------------------------------------ the API

/// The member, agent and keys the measured calls use.
struct World {
    http: reqwest::Client,
    addr: SocketAddr,
    key: String,
    agent_id: String,
}

impl World {
    async fn setup(lambent: &Lambent, data_dir: &Path, provider_base_url: &str) -> Result<World> {
        let admin_path = data_dir.join("admin-key");
        let admin = std::fs::read_to_string(&admin_path)
            .with_context(|| format!("reading {}", admin_path.display()))?
            .trim()
            .to_owned();
        let mut world = World {
            http: reqwest::Client::builder()
                .no_proxy()
                .build()
                .context("building the setup HTTP client")?,
            addr: lambent.addr,
            key: admin,
            agent_id: String::new(),
        };
        world
            .call(
                Method::POST,
                "/v1/models",
                Some(json!({
                    "name": MODEL,
                    "provider_kind": "anthropic",
                    "input_per_mtok": "3",
                    "output_per_mtok": "15",
                    "cache_read_per_mtok": "0.3",
                    "cache_write_per_mtok": "3.75",
                })),
            )
            .await?;
        let user = world
            .call(
                Method::POST,
                "/v1/users",
                Some(json!({"name": "chatbench", "role": "member"})),
            )
            .await?;
        let user_id = str_field(&user, "id")?;
        let key = world
            .call(
                Method::POST,
                "/v1/keys",
                Some(json!({"user_id": user_id, "name": "chatbench"})),
            )
            .await?;
        world.key = str_field(&key, "key")?;
        let provider = world
            .call(
                Method::POST,
                "/v1/providers",
                Some(json!({
                    "kind": "anthropic",
                    "name": "fake",
                    "api_key": PROVIDER_KEY,
                    "base_url": provider_base_url,
                })),
            )
            .await?;
        let provider_id = str_field(&provider, "id")?;
        let agent = world
            .call(
                Method::POST,
                "/v1/agents",
                Some(json!({"name": "bench", "provider_id": provider_id, "model": MODEL})),
            )
            .await?;
        world.agent_id = str_field(&agent, "id")?;
        Ok(world)
    }

    /// A call as the current key; fails unless the status is 2xx.
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value> {
        let url = format!("http://{}{path}", self.addr);
        let mut request = self
            .http
            .request(method.clone(), &url)
            .bearer_auth(&self.key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("{method} {path}"))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if !status.is_success() {
            bail!("{method} {path}: {status}: {text}");
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn new_session(&self) -> Result<String> {
        let session = self
            .call(
                Method::POST,
                "/v1/sessions",
                Some(json!({"agent_id": self.agent_id})),
            )
            .await?;
        str_field(&session, "id")
    }
}

fn str_field(value: &Value, name: &str) -> Result<String> {
    value[name]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("no {name:?} in {value}"))
}

/// Hands out a session per call, a new one every `per` calls (untimed).
struct Sessions {
    per: usize,
    current: Option<String>,
    used: usize,
}

impl Sessions {
    fn new(per: usize) -> Sessions {
        Sessions {
            per: per.max(1),
            current: None,
            used: 0,
        }
    }

    async fn next(&mut self, world: &World) -> Result<String> {
        match &self.current {
            Some(id) if self.used < self.per => {
                self.used += 1;
                Ok(id.clone())
            }
            _ => {
                let id = world.new_session().await?;
                self.current = Some(id.clone());
                self.used = 1;
                Ok(id)
            }
        }
    }
}

// ------------------------------------------------------------------ the measuring client

/// One HTTP/1.1 connection, kept alive across calls (reopened if the server
/// closed it). The same client code serves both paths.
struct Conn {
    addr: SocketAddr,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Conn {
    fn new(addr: SocketAddr) -> Conn {
        Conn { addr, sender: None }
    }

    async fn send(&mut self, request: Request<Full<Bytes>>) -> Result<Response<Incoming>> {
        let sender = match self.sender.take() {
            Some(sender) if !sender.is_closed() => sender,
            _ => connect(self.addr).await?,
        };
        let sender = self.sender.insert(sender);
        sender.ready().await.context("connection not ready")?;
        sender
            .send_request(request)
            .await
            .context("sending a request")
    }
}

async fn connect(addr: SocketAddr) -> Result<SendRequest<Full<Bytes>>> {
    let tcp = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    tcp.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .context("HTTP handshake")?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// The prepared requests of both paths; bodies are built once.
#[derive(Clone)]
struct Requests {
    fake_host: String,
    lambent_host: String,
    key: String,
    direct_stream: Bytes,
    direct_whole: Bytes,
    through_stream: Bytes,
    through_whole: Bytes,
}

impl Requests {
    fn new(world: &World, fake: SocketAddr) -> Requests {
        let direct = |stream: bool| {
            Bytes::from(
                json!({
                    "model": MODEL,
                    "max_tokens": MAX_TOKENS,
                    "messages": [{"role": "user", "content": PROMPT}],
                    "stream": stream,
                })
                .to_string(),
            )
        };
        Requests {
            fake_host: fake.to_string(),
            lambent_host: world.addr.to_string(),
            key: world.key.clone(),
            direct_stream: direct(true),
            direct_whole: direct(false),
            through_stream: Bytes::from(json!({ "content": PROMPT }).to_string()),
            through_whole: Bytes::from(json!({ "content": PROMPT, "stream": false }).to_string()),
        }
    }

    /// `POST /v1/messages` to the fake provider, as Lambent's client sends it.
    fn direct(&self, stream: bool) -> Result<Request<Full<Bytes>>> {
        let body = if stream {
            self.direct_stream.clone()
        } else {
            self.direct_whole.clone()
        };
        Ok(Request::builder()
            .method(Method::POST)
            .uri("/v1/messages")
            .header(header::HOST, &self.fake_host)
            .header(header::CONTENT_TYPE, "application/json")
            .header("x-api-key", PROVIDER_KEY)
            .header("anthropic-version", "2023-06-01")
            .body(Full::new(body))?)
    }

    /// `POST /v1/sessions/{id}/messages` to lambent.
    fn through(&self, session: &str, stream: bool) -> Result<Request<Full<Bytes>>> {
        let body = if stream {
            self.through_stream.clone()
        } else {
            self.through_whole.clone()
        };
        Ok(Request::builder()
            .method(Method::POST)
            .uri(format!("/v1/sessions/{session}/messages"))
            .header(header::HOST, &self.lambent_host)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::AUTHORIZATION, format!("Bearer {}", self.key))
            .body(Full::new(body))?)
    }
}

/// What one streamed call saw.
#[derive(Debug, Clone, Copy)]
struct Streamed {
    ttft: Duration,
    total: Duration,
    deltas: u64,
}

/// Sends a streamed request and reads it to its end; the first text delta
/// stops the TTFT clock. `end` names the event that ends a good stream.
async fn streamed_call(
    conn: &mut Conn,
    request: Request<Full<Bytes>>,
    end: &str,
) -> Result<Streamed> {
    let started = Instant::now();
    let response = conn.send(request).await?;
    let mut body = ok_body(response).await?;
    let mut parser = SseParser::new();
    let mut ttft = None;
    let mut deltas = 0u64;
    let mut ended = false;
    while let Some(frame) = body.frame().await {
        let frame = frame.context("reading the stream")?;
        let Some(data) = frame.data_ref() else {
            continue;
        };
        for event in parser.feed(data)? {
            if is_text_delta(&event) {
                if ttft.is_none() {
                    ttft = Some(started.elapsed());
                }
                deltas += 1;
            } else if event.event.as_deref() == Some(end) {
                ended = true;
            } else if event.event.as_deref() == Some("error") {
                bail!("error event: {}", event.data);
            }
        }
    }
    let total = started.elapsed();
    if !ended {
        bail!("the stream ended without {end}");
    }
    let ttft = ttft.ok_or_else(|| anyhow!("the stream had no text"))?;
    Ok(Streamed {
        ttft,
        total,
        deltas,
    })
}

/// Sends a non-streamed request and reads the whole answer.
async fn whole_call(conn: &mut Conn, request: Request<Full<Bytes>>) -> Result<Duration> {
    let started = Instant::now();
    let response = conn.send(request).await?;
    let body = ok_body(response).await?;
    let bytes = body.collect().await.context("reading the body")?.to_bytes();
    let elapsed = started.elapsed();
    if bytes.is_empty() {
        bail!("an empty answer");
    }
    Ok(elapsed)
}

/// Sends a request and reads the whole answer, whatever its status.
async fn any_status_call(conn: &mut Conn, request: Request<Full<Bytes>>) -> Result<Duration> {
    let started = Instant::now();
    let response = conn.send(request).await?;
    response
        .into_body()
        .collect()
        .await
        .context("reading the body")?;
    Ok(started.elapsed())
}

/// The body of a 2xx response; any other status is an error with its body.
async fn ok_body(response: Response<Incoming>) -> Result<Incoming> {
    let status = response.status();
    let body = response.into_body();
    if !status.is_success() {
        let text = body
            .collect()
            .await
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
            .unwrap_or_default();
        bail!("{status}: {text}");
    }
    Ok(body)
}

// ------------------------------------------------------------------ phases 1 and 2

/// Sequential calls, direct and through alternating (which goes first
/// alternates too), each way on its own kept-alive connection.
async fn latency_phase(
    world: &World,
    lambent: &Lambent,
    fake: SocketAddr,
    plan: &Plan,
    stream: bool,
) -> Result<SideBySide> {
    let requests = Requests::new(world, fake);
    let mut direct_conn = Conn::new(fake);
    let mut through_conn = Conn::new(lambent.addr);
    let mut cpu_at_start = None;
    let mut sessions = Sessions::new(plan.turns_per_session);
    let calls = if stream {
        plan.ttft_calls
    } else {
        plan.whole_calls
    };
    let what = if stream { "streamed" } else { "non-streamed" };
    let mut direct = Vec::with_capacity(calls);
    let mut through = Vec::with_capacity(calls);
    let started = Instant::now();
    for i in 0..plan.warmup + calls {
        if i == plan.warmup {
            cpu_at_start = cpu_time(lambent.pid);
        }
        let session = sessions.next(world).await?;
        for step in 0..2 {
            let via_lambent = (step == 0) == (i % 2 == 1);
            let took = if via_lambent {
                let request = requests.through(&session, stream)?;
                if stream {
                    streamed_call(&mut through_conn, request, "message_end")
                        .await
                        .with_context(|| format!("{what} call {i} through lambent"))?
                        .ttft
                } else {
                    whole_call(&mut through_conn, request)
                        .await
                        .with_context(|| format!("{what} call {i} through lambent"))?
                }
            } else {
                let request = requests.direct(stream)?;
                if stream {
                    streamed_call(&mut direct_conn, request, "message_stop")
                        .await
                        .with_context(|| format!("{what} call {i} direct"))?
                        .ttft
                } else {
                    whole_call(&mut direct_conn, request)
                        .await
                        .with_context(|| format!("{what} call {i} direct"))?
                }
            };
            if i >= plan.warmup {
                if via_lambent {
                    through.push(took);
                } else {
                    direct.push(took);
                }
            }
        }
        if (i + 1) % 500 == 0 {
            eprintln!(
                "chatbench: {what}: {} of {} calls each way ({:.1} s)",
                i + 1,
                plan.warmup + calls,
                started.elapsed().as_secs_f64()
            );
        }
    }
    let lambent_cpu_per_call = match (cpu_at_start, cpu_time(lambent.pid)) {
        (Some(start), Some(end)) if !through.is_empty() => {
            Some(end.saturating_sub(start) / through.len() as u32)
        }
        _ => None,
    };
    Ok(SideBySide {
        direct: Latencies::of(&direct),
        through: Latencies::of(&through),
        lambent_cpu_per_call,
    })
}

// ------------------------------------------------------------------ probes

/// Sequential calls of plain routes: an authenticated read
/// (`GET /v1/sessions/{id}`) and an authenticated write (`POST /v1/sessions`,
/// which also writes an audit entry).
async fn probe_phase(world: &World, lambent: SocketAddr, plan: &Plan) -> Result<Vec<Probe>> {
    let session = world.new_session().await?;
    let host = lambent.to_string();
    let bearer = format!("Bearer {}", world.key);
    let create = Bytes::from(json!({ "agent_id": world.agent_id }).to_string());
    let mut conn = Conn::new(lambent);
    let mut probes = Vec::new();
    for (what, method, path, body) in [
        (
            "GET /v1/no-such-route (404: HTTP, routing, logging; no auth, no storage)",
            Method::GET,
            "/v1/no-such-route".to_owned(),
            Bytes::new(),
        ),
        (
            "GET /v1/sessions/{id} (auth, 1 read)",
            Method::GET,
            format!("/v1/sessions/{session}"),
            Bytes::new(),
        ),
        (
            "POST /v1/sessions (auth, reads, 1 write, 1 audit write)",
            Method::POST,
            "/v1/sessions".to_owned(),
            create.clone(),
        ),
    ] {
        let mut samples = Vec::with_capacity(plan.probe_calls);
        for i in 0..plan.probe_calls + 50 {
            let mut request = Request::builder()
                .method(method.clone())
                .uri(&path)
                .header(header::HOST, &host)
                .header(header::AUTHORIZATION, &bearer);
            if !body.is_empty() {
                request = request.header(header::CONTENT_TYPE, "application/json");
            }
            let request = request.body(Full::new(body.clone()))?;
            let took = if path.starts_with("/v1/no-such-route") {
                any_status_call(&mut conn, request).await
            } else {
                whole_call(&mut conn, request).await
            }
            .with_context(|| format!("{what}, call {i}"))?;
            if i >= 50 {
                samples.push(took);
            }
        }
        if let Some(latencies) = Latencies::of(&samples) {
            probes.push(Probe {
                what: what.to_owned(),
                latencies,
            });
        }
    }
    Ok(probes)
}

// ------------------------------------------------------------------ phase 3

/// Streams through lambent, each of its own session, held open after
/// `message_start` while the provider holds the first token back.
async fn open_streams_phase(
    world: &World,
    lambent: &Lambent,
    fake: &FakeProvider,
    plan: &Plan,
) -> Result<OpenStreams> {
    let n = plan.streams;
    eprintln!("chatbench: streams: making {n} sessions");
    let mut sessions = Vec::with_capacity(n);
    for _ in 0..n {
        sessions.push(world.new_session().await?);
    }
    warm_up(world, lambent.addr, 20).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_rss_kib = steady_rss(lambent.pid)
        .await
        .ok_or_else(|| anyhow!("no VmRSS for lambent"))?;
    let idle_threads = threads(lambent.pid);
    eprintln!(
        "chatbench: streams: idle RSS {} ({}), opening {n} streams",
        mib(Some(idle_rss_kib)),
        rss_breakdown(lambent.pid)
    );

    // The first token comes after an hour: the streams stay open.
    fake.set_default(latency_reply().first_token_delay(Duration::from_secs(3600)));
    let requests = Requests::new(world, fake.addr());
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel::<Result<()>>();
    let (release_tx, release_rx) = watch::channel(false);
    // Opened a few at a time; all stay open.
    let opening = Arc::new(Semaphore::new(plan.open_concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    let started = Instant::now();
    for session in sessions {
        let requests = requests.clone();
        let ready_tx = ready_tx.clone();
        let mut release_rx = release_rx.clone();
        let opening = Arc::clone(&opening);
        let addr = lambent.addr;
        tasks.spawn(async move {
            let held = async {
                let _permit = opening.acquire().await?;
                let mut conn = Conn::new(addr);
                let response = conn.send(requests.through(&session, true)?).await?;
                let mut body = ok_body(response).await?;
                let mut parser = SseParser::new();
                'read: while let Some(frame) = body.frame().await {
                    if let Some(data) = frame?.data_ref() {
                        for event in parser.feed(data)? {
                            if event.event.as_deref() == Some("message_start") {
                                break 'read;
                            }
                        }
                    }
                }
                Ok::<_, anyhow::Error>((conn, body))
            }
            .await;
            match held {
                Ok(held) => {
                    let _ = ready_tx.send(Ok(()));
                    let _ = release_rx.wait_for(|release| *release).await;
                    drop(held);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            }
        });
    }
    drop(ready_tx);
    let deadline = Instant::now() + Duration::from_secs(600);
    for opened in 0..n {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, ready_rx.recv()).await {
            Ok(Some(Ok(()))) => {}
            Ok(Some(Err(e))) => return Err(e.context(format!("opening stream {opened}"))),
            Ok(None) => bail!("the stream tasks ended early"),
            Err(_) => bail!("only {opened} of {n} streams opened within 600 s"),
        }
        if (opened + 1) % 250 == 0 {
            eprintln!("chatbench: streams: {} open", opened + 1);
        }
    }
    let opening_took = started.elapsed();
    let all_open_rss_kib = rss_kib(lambent.pid).ok_or_else(|| anyhow!("no VmRSS"))?;
    let open_threads = threads(lambent.pid);
    eprintln!(
        "chatbench: streams: {n} open in {:.1} s (fake provider: {} open streams), RSS {}",
        opening_took.as_secs_f64(),
        fake.open_streams(),
        mib(Some(all_open_rss_kib))
    );
    let mut peak = all_open_rss_kib;
    let mut end = all_open_rss_kib;
    let hold_until = Instant::now() + plan.hold;
    while Instant::now() < hold_until {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if let Some(rss) = rss_kib(lambent.pid) {
            peak = peak.max(rss);
            end = rss;
        }
    }
    let end_threads = threads(lambent.pid);
    eprintln!(
        "chatbench: streams: after {:.0} s held: RSS {} ({}; peak {}), threads {}",
        plan.hold.as_secs_f64(),
        mib(Some(end)),
        rss_breakdown(lambent.pid),
        mib(Some(peak)),
        end_threads.map_or_else(|| "n/a".to_owned(), |t| t.to_string())
    );
    let _ = release_tx.send(true);
    while tasks.join_next().await.is_some() {}
    Ok(OpenStreams {
        streams: n,
        idle_rss_kib,
        idle_threads,
        all_open_rss_kib,
        peak_rss_kib: peak,
        end_rss_kib: end,
        open_threads,
        end_threads,
        open_concurrency: plan.open_concurrency,
        hold: plan.hold,
        opening: opening_took,
    })
}

/// A few streamed calls through lambent, unmeasured: lazy state is built
/// before a baseline is taken.
async fn warm_up(world: &World, lambent: SocketAddr, calls: usize) -> Result<()> {
    // Only the through requests are used: the fake's address is not needed.
    let requests = Requests::new(world, lambent);
    let session = world.new_session().await?;
    let mut conn = Conn::new(lambent);
    for _ in 0..calls {
        streamed_call(&mut conn, requests.through(&session, true)?, "message_end").await?;
    }
    Ok(())
}

// ------------------------------------------------------------------ phase 4

/// Samples `VmRSS` every 50 ms until stopped; keeps the highest.
struct Sampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    fn start(pid: u32) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(rss_kib(pid).unwrap_or(0)));
        let task = {
            let stop = Arc::clone(&stop);
            let peak = Arc::clone(&peak);
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(rss) = rss_kib(pid) {
                        peak.fetch_max(rss, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
        };
        Sampler { stop, peak, task }
    }

    async fn finish(self, pid: u32) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        if let Some(rss) = rss_kib(pid) {
            self.peak.fetch_max(rss, Ordering::Relaxed);
        }
        self.peak.load(Ordering::Relaxed)
    }
}

/// Reads events until `enough` says stop, or to the end; returns the deltas
/// seen and whether `end` was.
async fn read_events(
    body: &mut Incoming,
    parser: &mut SseParser,
    end: &str,
    mut enough: impl FnMut(u64) -> bool,
) -> Result<(u64, bool)> {
    let mut deltas = 0;
    let mut ended = false;
    while let Some(frame) = body.frame().await {
        let Some(data) = frame.context("reading the stream")?.into_data().ok() else {
            continue;
        };
        for event in parser.feed(&data)? {
            if is_text_delta(&event) {
                deltas += 1;
            } else if event.event.as_deref() == Some(end) {
                ended = true;
            } else if event.event.as_deref() == Some("error") {
                bail!("error event: {}", event.data);
            }
        }
        if enough(deltas) {
            break;
        }
    }
    Ok((deltas, ended))
}

async fn big_reply_phase(
    world: &World,
    lambent: &Lambent,
    fake: &FakeProvider,
    plan: &Plan,
) -> Result<BigReply> {
    let pid = lambent.pid;
    warm_up(world, lambent.addr, 20).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let baseline_rss_kib = steady_rss(pid)
        .await
        .ok_or_else(|| anyhow!("no VmRSS for lambent"))?;
    let baseline_hwm = hwm_kib(pid);
    let chunk: String = (0..plan.delta_bytes)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let reply = || {
        Reply::repeated(&chunk, plan.big_deltas).usage(FakeUsage {
            input: 20,
            output: plan.big_deltas,
            ..Default::default()
        })
    };
    let reply_bytes = plan.big_deltas * plan.delta_bytes as u64;
    let requests = Requests::new(world, fake.addr());
    eprintln!(
        "chatbench: big: baseline RSS {}; a {:.0} MB reply, the client stalls for {:.0} s",
        mib(Some(baseline_rss_kib)),
        reply_bytes as f64 / 1e6,
        plan.stall.as_secs_f64()
    );

    // A client that reads a little, stops, then reads on.
    let session = world.new_session().await?;
    fake.push(reply());
    let mut conn = Conn::new(lambent.addr);
    let response = conn.send(requests.through(&session, true)?).await?;
    let mut body = ok_body(response).await?;
    let mut parser = SseParser::new();
    let (first, _) = read_events(&mut body, &mut parser, "message_end", |d| d >= 3).await?;
    let mut stall_peak = rss_kib(pid).unwrap_or(0);
    let stall_until = Instant::now() + plan.stall;
    while Instant::now() < stall_until {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Some(rss) = rss_kib(pid) {
            stall_peak = stall_peak.max(rss);
        }
    }
    eprintln!(
        "chatbench: big: stalled after {first} deltas, RSS peak {}; reading on",
        mib(Some(stall_peak))
    );
    let sampler = Sampler::start(pid);
    let (rest, resumed_ended) =
        read_events(&mut body, &mut parser, "message_end", |_| false).await?;
    let resume_peak = sampler.finish(pid).await;
    drop(body);
    let stored = stored_reply(world, &session).await?;
    eprintln!(
        "chatbench: big: read on, {} deltas; stored: {stored}",
        first + rest
    );

    // A client that reads a whole reply at full speed.
    let session = world.new_session().await?;
    fake.push(reply());
    let sampler = Sampler::start(pid);
    let started = Instant::now();
    let full = streamed_call(&mut conn, requests.through(&session, true)?, "message_end").await?;
    let full_duration = started.elapsed();
    let full_peak = sampler.finish(pid).await;
    if full.deltas != plan.big_deltas {
        bail!(
            "the full-speed read got {} deltas, not {}",
            full.deltas,
            plan.big_deltas
        );
    }
    eprintln!(
        "chatbench: big: full speed through in {:.2} s (last event after {:.2} s), RSS peak {} (VmHWM {} → {})",
        full_duration.as_secs_f64(),
        full.total.as_secs_f64(),
        mib(Some(full_peak)),
        mib(baseline_hwm),
        mib(hwm_kib(pid))
    );

    // The same reply read directly.
    fake.push(reply());
    let mut direct_conn = Conn::new(fake.addr());
    let started = Instant::now();
    let direct = streamed_call(&mut direct_conn, requests.direct(true)?, "message_stop").await?;
    let direct_full_duration = started.elapsed();
    if direct.deltas != plan.big_deltas {
        bail!(
            "the direct read got {} deltas, not {}",
            direct.deltas,
            plan.big_deltas
        );
    }

    Ok(BigReply {
        reply_bytes,
        baseline_rss_kib,
        stall: plan.stall,
        stall_peak_rss_kib: stall_peak,
        resume_peak_rss_kib: resume_peak,
        resumed_deltas: first + rest,
        resumed_ended,
        stored,
        full_peak_rss_kib: full_peak,
        full_duration: Some(full_duration),
        direct_full_duration: Some(direct_full_duration),
    })
}

/// The session's assistant message as `GET /v1/sessions/{id}/messages` shows it.
async fn stored_reply(world: &World, session: &str) -> Result<String> {
    let page = world
        .call(
            Method::GET,
            &format!("/v1/sessions/{session}/messages?limit=10&order=asc"),
            None,
        )
        .await?;
    let items = page["items"]
        .as_array()
        .ok_or_else(|| anyhow!("no items in {page}"))?;
    let Some(reply) = items.iter().find(|m| m["role"] == "assistant") else {
        return Ok(format!(
            "**not stored** ({} messages, no assistant message)",
            items.len()
        ));
    };
    Ok(format!(
        "stored: status {}, {} bytes of text{}, {} output tokens, cost ${}",
        reply["status"].as_str().unwrap_or("?"),
        reply["content"].as_str().map_or(0, str::len),
        if reply["truncated"] == true {
            " (truncated)"
        } else {
            ""
        },
        reply["usage"]["output_tokens"],
        reply["cost_usd"].as_str().unwrap_or("?"),
    ))
}
