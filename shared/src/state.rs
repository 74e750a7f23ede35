//! The state every handler receives: configuration and the ports. Built once
//! per cold start (or once per `lambent serve`) and passed down explicitly;
//! there is no global registry.

use std::sync::Arc;

use crate::chat::Targets;
use crate::config::{Config, ConfigError};
use crate::identity::Identity;
use crate::ports::{ItemStore, KeyCipher, Queue, QueueName, Secrets};
use crate::repos::models::Catalog;

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
}

impl State {
    pub fn new(
        config: Config,
        store: Arc<dyn ItemStore>,
        cipher: Arc<dyn KeyCipher>,
        queue: Arc<dyn Queue>,
        secrets: Arc<dyn Secrets>,
    ) -> State {
        let identity = Arc::new(Identity::new(secrets.clone(), config.auth_cache));
        let catalog = Arc::new(Catalog::new(config.auth_cache));
        let targets = Arc::new(Targets::new(config.auth_cache));
        State {
            config: Arc::new(config),
            store,
            cipher,
            queue,
            secrets,
            identity,
            catalog,
            targets,
        }
    }
}

/// Which optional ports a function uses. A function gets IAM permissions
/// only for what it needs, so it must not build (or warm) anything else.
/// The store and the secrets are always needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Needs {
    pub cipher: bool,
    /// The queues it sends to or acknowledges on.
    pub queues: &'static [QueueName],
}

impl Needs {
    pub const STORE_ONLY: Needs = Needs {
        cipher: false,
        queues: &[],
    };
}

/// Why a function or `lambent serve` could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    /// A dependency is missing or unreachable at start-up.
    #[error("dependency {name} is not usable: {detail}")]
    Dependency { name: &'static str, detail: String },
    #[error("data directory: {0}")]
    DataDir(String),
}
