//! `lambent`: run Lambent on a laptop, or set up its AWS resources.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// `lambent serve` allocates and frees small buffers on every request
/// (events, JSON, store items) across its threads: mimalloc keeps that off
/// glibc malloc's arena locks and consolidations (docs/PERFORMANCE.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use lambent_local::provision::Names;
use lambent_local::serve::{self, Backend, Options};

#[derive(Parser)]
#[command(
    name = "lambent",
    version,
    about = "Lambent: a serverless backend for LLM agents"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve every route and run the queue consumers in one process.
    Serve {
        #[arg(long, default_value = "127.0.0.1:3000", env = "LAMBENT_ADDR")]
        addr: SocketAddr,
        #[arg(long, default_value = "./.lambent", env = "LAMBENT_DATA_DIR")]
        data_dir: PathBuf,
        #[arg(long, value_enum, default_value = "embedded", env = "LAMBENT_BACKEND")]
        backend: Backend,
        /// Name prefix of the AWS resources (as given to `lambent bootstrap`).
        #[arg(long, default_value = "lambent", env = "LAMBENT_PREFIX")]
        prefix: String,
    },
    /// Run one sweeper pass (finish stranded settles, release abandoned
    /// reservations, re-enqueue stranded workflow steps) and print what it did.
    Sweep {
        #[arg(long, default_value = "./.lambent", env = "LAMBENT_DATA_DIR")]
        data_dir: PathBuf,
        #[arg(long, value_enum, default_value = "embedded", env = "LAMBENT_BACKEND")]
        backend: Backend,
        #[arg(long, default_value = "lambent", env = "LAMBENT_PREFIX")]
        prefix: String,
    },
    /// Create the table, queues, dead-letter queues, KMS key and secret on the
    /// configured AWS endpoint (idempotent).
    Bootstrap {
        #[arg(long, default_value = "lambent", env = "LAMBENT_PREFIX")]
        prefix: String,
        /// Receives before a message moves to its dead-letter queue.
        #[arg(long, default_value_t = 5)]
        max_receives: u32,
    },
    /// Print the API's OpenAPI document (committed as docs/openapi.json).
    Openapi,
    /// Print the bootstrap admin API key of an AWS deployment, derived from
    /// its Secrets Manager secret (the stack output BootstrapSecretArn).
    AdminKey {
        #[arg(long, env = "LAMBENT_SECRET_ID")]
        secret_id: String,
    },
    /// Rotate the embedded backend's root secret: a new one becomes current,
    /// the old one is kept as the previous one (API keys and cursors keep
    /// working), the old bootstrap admin key is revoked and the new one
    /// printed. On AWS use `aws secretsmanager put-secret-value` (docs/SECRETS.md).
    RotateSecret {
        #[arg(long, default_value = "./.lambent", env = "LAMBENT_DATA_DIR")]
        data_dir: PathBuf,
    },
}

/// Threads for blocking work: the embedded store's calls that find its
/// connection busy, DNS lookups, file reads. A few are enough, as the store
/// runs one write and one read at a time, and each thread costs its stack
/// and its allocator heap: with tokio's default (up to 512), 1,000 streams
/// opened 64 at a time left 237 such threads, most of the memory per open
/// stream (docs/PERFORMANCE.md, issue 15).
const BLOCKING_THREADS: usize = 16;

fn main() -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(BLOCKING_THREADS)
        .build()?
        .block_on(run())
}

async fn run() -> anyhow::Result<()> {
    lambent_boot::telemetry::init(lambent_boot::telemetry::format_from_env());
    match Cli::parse().command {
        Command::Serve {
            addr,
            data_dir,
            backend,
            prefix,
        } => {
            let options = Options {
                addr,
                data_dir,
                backend,
                prefix,
                config: lambent_app::config::Config::from_env(&lambent_core::env::ProcessEnv)?,
                clock: lambent_core::clock::system(),
                store_layer: None,
            };
            serve::run(options, shutdown_signal(), |bound| {
                println!("lambent listening on http://{bound}");
            })
            .await
        }
        Command::Bootstrap {
            prefix,
            max_receives,
        } => {
            let mut names = Names::with_prefix(&prefix);
            names.max_receives = max_receives;
            lambent_local::provision::run(&names).await
        }
        Command::Sweep {
            data_dir,
            backend,
            prefix,
        } => {
            let options = Options {
                addr: "127.0.0.1:0".parse()?,
                data_dir,
                backend,
                prefix,
                config: lambent_app::config::Config::from_env(&lambent_core::env::ProcessEnv)?,
                clock: lambent_core::clock::system(),
                store_layer: None,
            };
            let swept = serve::sweep_once(&options).await?;
            println!("{}", serde_json::to_string(&swept)?);
            Ok(())
        }
        Command::Openapi => {
            print!("{}", lambent_local::openapi::document_json()?);
            Ok(())
        }
        Command::AdminKey { secret_id } => {
            let key = lambent_local::admin_key::from_aws_secret(&secret_id).await?;
            println!(
                "{}",
                lambent_core::secret::ExposeSecret::expose_secret(&key)
            );
            Ok(())
        }
        Command::RotateSecret { data_dir } => lambent_local::rotate::run(
            &data_dir,
            &lambent_app::config::Config::from_env(&lambent_core::env::ProcessEnv)?,
        ),
    }
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = interrupt => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
