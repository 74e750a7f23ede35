//! The state every handler receives: configuration and the ports. Built once
//! per cold start (or once per `lambent serve`) and passed down explicitly;
//! there is no global registry.

use std::sync::Arc;

use crate::config::Config;
use crate::identity::Identity;
use crate::metrics::Metrics;
use crate::targets::Targets;
use lambent_core::clock::Clock;
use lambent_ports::{ItemStore, KeyCipher, Ports, Queue, Secrets};
use lambent_store::models::Catalog;

#[derive(Clone)]
pub struct State {
    pub config: Arc<Config>,
    pub store: Arc<dyn ItemStore>,
    pub cipher: Arc<dyn KeyCipher>,
    pub queue: Arc<dyn Queue>,
    pub secrets: Arc<dyn Secrets>,
    /// API key checks and their per-process cache.
    pub identity: Arc<Identity>,
    /// The model catalog as this process last read it.
    pub catalog: Arc<Catalog>,
    /// Agents resolved for model calls, briefly cached.
    pub targets: Arc<Targets>,
    /// Sessions and monthly limits read for model calls, briefly cached.
    pub callers: Arc<crate::callers::Callers>,
    /// Users' rate limits as this process knows them.
    pub rates: Arc<crate::rate_gate::RateGate>,
    /// What expiry, leases, rate-limit windows and the day of a cost are
    /// decided by.
    pub clock: Arc<dyn Clock>,
    /// The agent turns this process runs or follows.
    pub turn_registry: Arc<crate::turn_registry::Registry>,
    /// What this process counted of its model calls, tools and start.
    pub metrics: Arc<Metrics>,
}

impl State {
    pub fn new(
        config: Config,
        store: Arc<dyn ItemStore>,
        cipher: Arc<dyn KeyCipher>,
        queue: Arc<dyn Queue>,
        secrets: Arc<dyn Secrets>,
    ) -> State {
        let identity = Arc::new(Identity::for_config(secrets.clone(), &config));
        let catalog = Arc::new(Catalog::new(config.auth_cache));
        let targets = Arc::new(Targets::new(config.auth_cache));
        let callers = Arc::new(crate::callers::Callers::new(config.auth_cache));
        // A state is built once per process start (a Lambda cold start).
        let metrics = Arc::new(Metrics::new(config.lambda_function.is_some()));
        metrics.cold_start();
        State {
            config: Arc::new(config),
            store,
            cipher,
            queue,
            secrets,
            identity,
            catalog,
            targets,
            callers,
            rates: Default::default(),
            clock: lambent_core::clock::system(),
            turn_registry: Default::default(),
            metrics,
        }
    }

    /// The state over a set of adapters and their clock.
    pub fn from_ports(config: Config, ports: Ports) -> State {
        State {
            clock: ports.clock,
            ..State::new(
                config,
                ports.store,
                ports.cipher,
                ports.queue,
                ports.secrets,
            )
        }
    }

    /// Writes what this process counted since the last flush as CloudWatch
    /// EMF lines (see [`crate::metrics::emf`]): nothing if nothing happened.
    /// The `Function` dimension is the Lambda function's name.
    pub fn flush_emf(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        let function = self.config.lambda_function.as_deref().unwrap_or("lambent");
        let drained = self.metrics.drain();
        crate::metrics::emf::write(&drained, function, self.clock.now_millis(), out)
    }

    /// On Lambda, [`State::flush_emf`] to stdout, which Lambda sends to
    /// CloudWatch Logs: the glue calls it at the end of each invocation.
    /// Elsewhere (`lambent serve`) nothing.
    pub fn flush_emf_to_stdout(&self) {
        if self.config.lambda_function.is_none() {
            return;
        }
        if let Err(e) = self.flush_emf(&mut std::io::stdout().lock()) {
            tracing::warn!(error = %e, "metrics not written");
        }
    }
}

pub use lambent_core::env::StartError;
