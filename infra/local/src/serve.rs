//! `lambent serve`: the whole API and the queue consumers in one process, on
//! the embedded backend (default) or on AWS services.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use axum::serve::ListenerExt;
use lambent_app::config::Config;
use lambent_app::state::State;
use lambent_boot::AwsResources;
use lambent_core::clock::Clock;
use lambent_core::secret::ExposeSecret;
use lambent_ports::ItemStore;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::admin_key::{self, AdminKey};
use crate::provision::Names;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// One SQLite file and key files in the data directory: no AWS, no setup.
    Embedded,
    /// DynamoDB, KMS, SQS and Secrets Manager, as `lambent bootstrap` created
    /// them (`AWS_ENDPOINT_URL` points at LocalStack or another emulator).
    Aws,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    pub backend: Backend,
    /// Names of the AWS resources (the `--prefix` of `lambent bootstrap`).
    pub prefix: String,
    /// The settings of every route (`LAMBENT_*` environment variables).
    pub config: Config,
    /// The time expiry and daily totals are decided by on the embedded
    /// backend (the wall clock, but for tests); AWS keeps DynamoDB's time.
    pub clock: Arc<dyn Clock>,
    /// Wraps the item store before anything uses it (tests inject faults
    /// with it); `None` in the product.
    pub store_layer: Option<StoreLayer>,
}

type WrapStore = dyn Fn(Arc<dyn ItemStore>) -> Arc<dyn ItemStore> + Send + Sync;

/// A wrapper put around the item store: fault injection in tests.
#[derive(Clone)]
pub struct StoreLayer(Arc<WrapStore>);

impl StoreLayer {
    pub fn new(
        wrap: impl Fn(Arc<dyn ItemStore>) -> Arc<dyn ItemStore> + Send + Sync + 'static,
    ) -> StoreLayer {
        StoreLayer(Arc::new(wrap))
    }

    fn wrap(&self, store: Arc<dyn ItemStore>) -> Arc<dyn ItemStore> {
        (self.0)(store)
    }
}

impl std::fmt::Debug for StoreLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreLayer")
    }
}

/// Builds the state for the chosen backend, its store wrapped by the
/// options' layer if any.
pub async fn open_state(options: &Options) -> anyhow::Result<State> {
    let mut state = open_backend(options).await?;
    if let Some(layer) = &options.store_layer {
        state = State::from_ports(
            (*state.config).clone(),
            lambent_ports::Ports {
                store: layer.wrap(state.store.clone()),
                cipher: state.cipher.clone(),
                queue: state.queue.clone(),
                secrets: state.secrets.clone(),
                clock: state.clock.clone(),
            },
        );
    }
    Ok(state)
}

async fn open_backend(options: &Options) -> anyhow::Result<State> {
    let config = options.config.clone();
    lambent_embedded::ensure_data_dir(&options.data_dir)
        .with_context(|| format!("data directory {}", options.data_dir.display()))?;
    match options.backend {
        Backend::Embedded => {
            admin_key::ensure_embedded_signing_key(&options.data_dir)?;
            Ok(lambent_boot::embedded_on(
                &options.data_dir,
                config,
                options.clock.clone(),
            )?)
        }
        Backend::Aws => {
            let sdk = lambent_aws::load_sdk_config().await;
            let names = Names::with_prefix(&options.prefix);
            let found = crate::resources::resolve(&sdk, &names)
                .await
                .context("AWS resources not found: run `lambent bootstrap` first")?;
            Ok(lambent_boot::aws(&sdk, config, AwsResources::from(found)).await?)
        }
    }
}

/// The lock file a serving process holds in its embedded data directory.
pub const SERVE_LOCK_FILE: &str = "serve.lock";

/// Takes the data directory for this process, or fails if another
/// `lambent serve` has it: a serving process takes up at start the turns
/// left running in its store (a killed run's), which would be another's
/// live turns. The lock goes with the process, however it ends.
fn own_data_dir(data_dir: &std::path::Path) -> anyhow::Result<std::fs::File> {
    lambent_embedded::ensure_data_dir(data_dir)
        .with_context(|| format!("data directory {}", data_dir.display()))?;
    let path = data_dir.join(SERVE_LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("lock file {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "another `lambent serve` is using the data directory {} (it holds {}): \
             stop it, or give this one another --data-dir",
            data_dir.display(),
            path.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("locking {}", path.display()))
        }
    }
}

/// One sweeper pass over the backend's data (`lambent sweep`).
pub async fn sweep_once(options: &Options) -> anyhow::Result<lambent_app::sweeper::Swept> {
    let state = open_state(options).await?;
    Ok(lambent_app::sweeper::sweep(&state).await)
}

/// Serves until `shutdown` resolves. `on_ready` gets the bound address (the
/// port may have been 0).
pub async fn run(
    options: Options,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    on_ready: impl FnOnce(SocketAddr),
) -> anyhow::Result<()> {
    // Held while this serves: the embedded store is this process's alone.
    let _owned = match options.backend {
        Backend::Embedded => Some(own_data_dir(&options.data_dir)?),
        Backend::Aws => None,
    };
    let state = open_state(&options).await?;
    match admin_key::ensure(&state, &options.data_dir).await? {
        AdminKey::Created { path, key } => {
            // Printed once, on the first start; afterwards it is only in the file.
            println!(
                "Bootstrap admin API key (shown once, saved to {}):\n{}",
                path.display(),
                key.expose_secret()
            );
        }
        AdminKey::Existing { path } => {
            tracing::info!(path = %path.display(), "bootstrap admin key already saved")
        }
    }

    let listener = TcpListener::bind(options.addr)
        .await
        .with_context(|| format!("binding {}", options.addr))?;
    let bound = listener.local_addr()?;
    // Without TCP_NODELAY the last small SSE chunks of a stream wait ~40 ms (Nagle).
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
    });

    let app = crate::app::app(state.clone())?;
    let worker = lambent_app::workflows::Worker::new(state.clone())?;
    if options.backend == Backend::Embedded {
        // This process owns its embedded store: a turn still running there
        // was left by a previous run of it (killed), and goes on now.
        match lambent_app::turns::background::take_up_orphans(&state).await {
            Ok(0) => {}
            Ok(handed) => tracing::info!(turns = handed, "took up turns left running"),
            Err(e) => {
                tracing::warn!(error = %e, "could not take up turns left running; the sweeper will")
            }
        }
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut consumers = crate::consumers::spawn_all(&state, worker, &stop_rx);
    // What the scheduled sweeper function does on AWS.
    consumers.push(tokio::spawn(lambent_app::sweeper::run_every(
        state.clone(),
        state.config.sweep_every,
        stop_rx.clone(),
    )));
    // Calls' pending usage, folded more often than a sweep: the entries a
    // usage report reads beside the aggregates stay few.
    consumers.push(tokio::spawn(lambent_app::sweeper::fold_every(
        state.clone(),
        state.config.fold_every,
        stop_rx.clone(),
    )));
    tracing::info!(%bound, backend = ?options.backend, data_dir = %options.data_dir.display(), "lambent serving");
    on_ready(bound);

    // A make-service builds the routes once; serving the Router itself
    // would rebuild them for every connection (about 9 KiB each).
    let served = axum::serve(listener, app.into_make_service())
        .with_graceful_shutdown(shutdown)
        .await;
    let _ = stop_tx.send(true);
    for consumer in consumers {
        let _ = consumer.await;
    }
    served.context("server failed")
}
