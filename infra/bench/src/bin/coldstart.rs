//! Cold start benchmark of the function binaries against a hello-world
//! `lambda_runtime` binary built in the same run (see docs/PERFORMANCE.md).
//!
//! For each binary it measures, with a fake Lambda Runtime API on 127.0.0.1
//! and a moto server it starts itself (so the functions' warm-up calls cross
//! real HTTP):
//! - instructions from exec to exit under callgrind, where the process exits
//!   right after its first `GET /runtime/invocation/next` ("ready");
//! - wall time from spawn to that first `/next` (median of `--runs`), and the
//!   peak RSS (`VmHWM`) at that moment;
//! - the size of the (stripped) release binary, and of a deployment zip
//!   holding it as `bootstrap` (deflate).
//!
//! It builds nothing: build first (infra/bench/run.sh does both).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use lambent_bench::{
    elf_has_symtab, markdown_table, parse_bootstrap_output, parse_collected, FakeRuntimeApi,
    Measurement, MAX_RATIO_VS_HELLO, MAX_ZIPPED_BYTES,
};

/// The baseline binary (infra/bench/src/bin/hello-lambda.rs).
const HELLO: &str = "hello-lambda";

/// Every function binary, in template order.
const FUNCTIONS: &[&str] = &[
    "lambent-authorizer",
    "lambent-health",
    "lambent-users",
    "lambent-keys",
    "lambent-providers",
    "lambent-models",
    "lambent-agents",
    "lambent-sessions",
    "lambent-chat",
    "lambent-usage",
    "lambent-workflows",
    "lambent-worker",
    "lambent-trigger",
    "lambent-sweeper",
];

#[derive(Debug, Parser)]
#[command(
    about = "Cold start (callgrind instructions, wall time) and size of every function binary against a hello-world lambda_runtime binary"
)]
struct Options {
    /// Directory holding the release binaries [default: $CARGO_TARGET_DIR/release, else target/release]
    #[arg(long)]
    release_dir: Option<PathBuf>,
    /// The moto server executable
    #[arg(long, env = "LAMBENT_BENCH_MOTO", default_value = "moto_server")]
    moto: PathBuf,
    /// The `lambent` binary, used for `lambent bootstrap` [default: lambent in the release dir, else in ../debug]
    #[arg(long, env = "LAMBENT_BENCH_LAMBENT")]
    lambent: Option<PathBuf>,
    /// The valgrind executable
    #[arg(long, env = "LAMBENT_BENCH_VALGRIND", default_value = "valgrind")]
    valgrind: PathBuf,
    /// Wall-time runs per binary (without valgrind)
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// Callgrind runs per binary (0 skips callgrind)
    #[arg(long, default_value_t = 3)]
    callgrind_runs: usize,
    /// Keep one callgrind profile per binary here (callgrind.out.<binary>), for callgrind_annotate
    #[arg(long)]
    profile_dir: Option<PathBuf>,
    /// Keep the deployment zips here (<binary>.zip) instead of a temporary directory
    #[arg(long)]
    zip_dir: Option<PathBuf>,
    /// Measure only these binaries (comma-separated); the baseline is always measured
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Extra environment for every measured process, NAME=VALUE (repeatable), e.g. SSL_CERT_FILE=roots.pem
    #[arg(long = "env", value_name = "NAME=VALUE", value_parser = parse_assignment)]
    extra_env: Vec<(String, String)>,
    /// Port for moto [default: a free one]
    #[arg(long)]
    moto_port: Option<u16>,
}

fn main() -> Result<()> {
    let options = Options::parse();
    let release_dir = options.release_dir.clone().unwrap_or_else(|| {
        std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("target"))
            .join("release")
    });
    let mut binaries = vec![HELLO.to_string()];
    binaries.extend(
        FUNCTIONS
            .iter()
            .filter(|name| options.only.is_empty() || options.only.iter().any(|o| o == *name))
            .map(|name| name.to_string()),
    );
    for binary in &binaries {
        let path = release_dir.join(binary);
        if !path.is_file() {
            bail!(
                "{} is missing: build it first (see infra/bench/run.sh)",
                path.display()
            );
        }
    }
    let lambent = match &options.lambent {
        Some(path) => path.clone(),
        None => [
            release_dir.join("lambent"),
            release_dir.join("../debug/lambent"),
        ]
        .into_iter()
        .find(|path| path.is_file())
        .context(
            "no `lambent` binary for `lambent bootstrap`: build lambent-local or pass --lambent",
        )?,
    };

    let scratch = std::env::temp_dir().join(format!("lambent-bench-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;

    eprintln!("starting moto ({})", options.moto.display());
    let port = match options.moto_port {
        Some(port) => port,
        None => free_port()?,
    };
    let moto = Moto::start(&options.moto, port, &scratch)?;
    let mut env = aws_env(&moto.endpoint());
    let resources = bootstrap(&lambent, &env)?;
    eprintln!(
        "bootstrapped: {}",
        resources.keys().cloned().collect::<Vec<_>>().join(", ")
    );
    env.extend(resources);

    let api = FakeRuntimeApi::start()?;
    env.insert("AWS_LAMBDA_RUNTIME_API".into(), api.address());

    let zip_dir = options
        .zip_dir
        .clone()
        .unwrap_or_else(|| scratch.join("zips"));
    std::fs::create_dir_all(&zip_dir)?;
    if let Some(dir) = &options.profile_dir {
        std::fs::create_dir_all(dir)?;
    }

    let mut rows = Vec::new();
    for binary in &binaries {
        let path = release_dir.join(binary);
        let mut row = Measurement {
            binary: binary.clone(),
            ..Measurement::default()
        };
        row.size_bytes = std::fs::metadata(&path)?.len();
        row.stripped = !elf_has_symtab(&path)?;
        row.zipped_bytes = zipped_size(&path, &zip_dir.join(format!("{binary}.zip")))?;
        let mut env = lambda_env(&env, binary);
        env.extend(options.extra_env.iter().cloned());

        // One untimed run first: page cache, moto's first-request costs.
        run_once(&api, Launch::Direct(&path), &env, Duration::from_secs(60))
            .with_context(|| format!("warm-up run of {binary}"))?;
        for run in 0..options.runs {
            let outcome = run_once(&api, Launch::Direct(&path), &env, Duration::from_secs(60))
                .with_context(|| format!("run {run} of {binary}"))?;
            row.wall_ms.push(outcome.ready_after.as_secs_f64() * 1e3);
            row.peak_rss_kib.extend(outcome.peak_rss_kib);
        }
        for run in 0..options.callgrind_runs {
            let out_file = match &options.profile_dir {
                Some(dir) if run == 0 => dir.join(format!("callgrind.out.{binary}")),
                _ => PathBuf::from("/dev/null"),
            };
            let launch = Launch::Callgrind {
                valgrind: &options.valgrind,
                binary: &path,
                out_file: &out_file,
            };
            let outcome = run_once(&api, launch, &env, Duration::from_secs(600))
                .with_context(|| format!("callgrind run {run} of {binary}"))?;
            let collected = parse_collected(&outcome.stderr).with_context(|| {
                format!(
                    "no `Collected :` line in valgrind's output for {binary}:\n{}",
                    outcome.stderr
                )
            })?;
            row.instructions.push(collected);
        }
        eprintln!(
            "{binary}: instructions {:?}, wall ms median {:.1}, {} bytes, zipped {} bytes",
            row.instructions,
            row.wall_ms_median().unwrap_or(f64::NAN),
            row.size_bytes,
            row.zipped_bytes
        );
        rows.push(row);
    }
    drop(moto);
    let _ = std::fs::remove_dir_all(scratch.join("moto"));
    if options.zip_dir.is_none() {
        let _ = std::fs::remove_dir_all(&scratch);
    }

    print!("{}", markdown_table(&rows, HELLO));
    println!();
    println!(
        "Goals: instructions ≤ {MAX_RATIO_VS_HELLO}x {HELLO}, zipped ≤ {:.0} MB (10⁶ bytes). \
         Wall time: {} runs, ±: half the callgrind min–max spread over {} runs.",
        MAX_ZIPPED_BYTES as f64 / 1e6,
        options.runs,
        options.callgrind_runs
    );
    if !options.extra_env.is_empty() {
        let extra: Vec<String> = options
            .extra_env
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        println!("Extra environment: {}.", extra.join(" "));
    }
    Ok(())
}

fn parse_assignment(raw: &str) -> Result<(String, String), String> {
    match raw.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_string(), value.to_string())),
        _ => Err(format!("{raw:?} is not NAME=VALUE")),
    }
}

/// The environment common to every run: the emulator and dummy credentials.
fn aws_env(endpoint: &str) -> BTreeMap<String, String> {
    [
        ("AWS_ENDPOINT_URL", endpoint),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "bench"),
        ("AWS_SECRET_ACCESS_KEY", "bench"),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_string(), value.to_string()))
    .collect()
}

/// What Lambda sets for a function (the variables lambda_runtime and the
/// SDK read), on top of the common environment.
fn lambda_env(common: &BTreeMap<String, String>, binary: &str) -> BTreeMap<String, String> {
    let mut env = common.clone();
    for (name, value) in [
        ("AWS_LAMBDA_FUNCTION_NAME", binary),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
        ("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/bench"),
        ("AWS_LAMBDA_LOG_STREAM_NAME", "2025/01/01/[$LATEST]bench"),
        ("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand"),
        ("AWS_EXECUTION_ENV", "AWS_Lambda_provided.al2023"),
        ("LAMBDA_TASK_ROOT", "/var/task"),
        ("TZ", ":UTC"),
        ("LANG", "en_US.UTF-8"),
        // The emulator's AWS_ENDPOINT_URL would turn the machine's CA roots
        // on; a deployed function has no endpoint override, so it trusts
        // the compiled-in AWS roots only, as here (`--env
        // LAMBENT_AWS_NATIVE_ROOTS=1` measures the other case).
        ("LAMBENT_AWS_NATIVE_ROOTS", "0"),
    ] {
        env.insert(name.into(), value.into());
    }
    env
}

fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// A moto server this harness started; stopped (by its pid) when dropped.
struct Moto {
    child: Child,
    port: u16,
}

impl Moto {
    fn start(program: &Path, port: u16, scratch: &Path) -> Result<Moto> {
        let log = std::fs::File::create(scratch.join("moto.log"))?;
        let child = Command::new(program)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .current_dir(scratch)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| {
                format!(
                    "starting {} (set LAMBENT_BENCH_MOTO or --moto)",
                    program.display()
                )
            })?;
        let moto = Moto { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if http_get_ok(port, "/moto-api/") {
                return Ok(moto);
            }
            thread::sleep(Duration::from_millis(50));
        }
        bail!("moto did not answer on port {port} within 30 s")
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http_get_ok(port: u16, path: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut status = [0u8; 12];
    stream.read_exact(&mut status).is_ok()
        && status.starts_with(b"HTTP/1.")
        && &status[9..] == b"200"
}

/// Runs `lambent bootstrap` against the emulator and returns the variables it prints.
fn bootstrap(lambent: &Path, env: &BTreeMap<String, String>) -> Result<BTreeMap<String, String>> {
    let output = Command::new(lambent)
        .args(["bootstrap", "--prefix", "bench"])
        .envs(env)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {} bootstrap", lambent.display()))?;
    if !output.status.success() {
        bail!(
            "lambent bootstrap failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let mut vars = parse_bootstrap_output(&stdout);
    // The dead-letter queues the worker and the trigger move failed messages
    // to are printed as comments (`# steps-dlq queue: URL`).
    for (comment, name) in [
        ("# steps-dlq queue:", "LAMBENT_STEPS_DLQ_URL"),
        ("# triggers-dlq queue:", "LAMBENT_TRIGGERS_DLQ_URL"),
    ] {
        if let Some(url) = stdout
            .lines()
            .find_map(|line| line.trim().strip_prefix(comment))
        {
            vars.insert(name.to_string(), url.trim().to_string());
        }
    }
    for needed in [
        "LAMBENT_TABLE",
        "LAMBENT_SECRET_ID",
        "LAMBENT_KMS_KEY_ID",
        "LAMBENT_STEPS_QUEUE_URL",
        "LAMBENT_STEPS_DLQ_URL",
        "LAMBENT_TRIGGERS_DLQ_URL",
    ] {
        if !vars.contains_key(needed) {
            bail!("lambent bootstrap did not print {needed}");
        }
    }
    Ok(vars)
}

/// The size of a deployment zip holding `binary` as `bootstrap` (deflate,
/// zlib's default level, as Python's zipfile writes it).
fn zipped_size(binary: &Path, zip: &Path) -> Result<u64> {
    let script = "import sys, zipfile\n\
                  with zipfile.ZipFile(sys.argv[1], 'w', zipfile.ZIP_DEFLATED) as z:\n\
                  \x20   z.write(sys.argv[2], 'bootstrap')\n";
    let status = Command::new("python3")
        .args(["-c", script])
        .arg(zip)
        .arg(binary)
        .stdin(Stdio::null())
        .status()
        .context("running python3 to zip the binary")?;
    if !status.success() {
        bail!("zipping {} failed ({status})", binary.display());
    }
    Ok(std::fs::metadata(zip)?.len())
}

enum Launch<'a> {
    Direct(&'a Path),
    Callgrind {
        valgrind: &'a Path,
        binary: &'a Path,
        out_file: &'a Path,
    },
}

struct Outcome {
    ready_after: Duration,
    peak_rss_kib: Option<u64>,
    stderr: String,
}

/// Starts one process with exactly `env`, waits for its first `/next` and
/// for its exit. Fails if it exits without reaching `/next`.
fn run_once(
    api: &FakeRuntimeApi,
    launch: Launch<'_>,
    env: &BTreeMap<String, String>,
    timeout: Duration,
) -> Result<Outcome> {
    let mut command = match launch {
        Launch::Direct(binary) => Command::new(binary),
        Launch::Callgrind {
            valgrind,
            binary,
            out_file,
        } => {
            let mut command = Command::new(valgrind);
            command
                .arg("--tool=callgrind")
                .arg(format!("--callgrind-out-file={}", out_file.display()))
                .arg(binary);
            command
        }
    };
    command
        .env_clear()
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = command.spawn().context("spawning the binary")?;
    let pid = child.id();
    api.measure(pid);
    let stderr_reader = child.stderr.take().map(|mut pipe| {
        thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    });
    // Wait for the /next, but stop early if the process exits without one.
    let mut ready = None;
    let mut exited = None;
    while started.elapsed() < timeout {
        ready = api.wait_ready(pid, Duration::from_millis(20));
        if ready.is_some() {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            exited = Some(status);
            ready = api.wait_ready(pid, Duration::from_millis(100));
            break;
        }
    }
    let status = match exited {
        Some(status) => Some(status),
        None => wait_exit(
            &mut child,
            Duration::from_secs(if ready.is_some() { 120 } else { 1 }),
        ),
    };
    api.measure(0);
    let stderr = stderr_reader
        .and_then(|reader| reader.join().ok())
        .unwrap_or_default();
    let Some(ready) = ready else {
        bail!(
            "no /next within {timeout:?} (exit: {}); stderr:\n{stderr}",
            describe(status)
        );
    };
    if status.is_none() {
        bail!("still running 120 s after its /next; stderr:\n{stderr}");
    }
    Ok(Outcome {
        ready_after: ready.at.saturating_duration_since(started),
        peak_rss_kib: ready.peak_rss_kib,
        stderr,
    })
}

/// Waits for the child to exit; kills it (by its own handle) past `limit`.
fn wait_exit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(2)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

fn describe(status: Option<ExitStatus>) -> String {
    status
        .map(|s| s.to_string())
        .unwrap_or_else(|| "killed by the harness".into())
}
