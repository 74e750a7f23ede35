//! The seams between Lambent's services and the outside world. Each port has an
//! AWS adapter (`lambent-aws`) and an embedded adapter (`lambent-embedded`),
//! and one contract test suite that both pass.

pub mod cipher;
#[cfg(feature = "testkit")]
pub mod contract;
pub mod queue;
pub mod secrets;
pub mod store;

pub use cipher::{CipherError, EncryptionContext, KeyCipher};
pub use queue::{Queue, QueueError, QueueName, Received};
pub use secrets::{Secrets, SecretsError};
pub use store::{
    Cmp, Condition, Item, ItemStore, Key, Order, Page, Query, StoreCursor, StoreError, TxOp,
    Update, Value,
};

use std::sync::Arc;

/// One adapter of each port, and the clock they and the services decide
/// expiry by: what a process runs on.
#[derive(Clone)]
pub struct Ports {
    pub store: Arc<dyn ItemStore>,
    pub cipher: Arc<dyn KeyCipher>,
    pub queue: Arc<dyn Queue>,
    pub secrets: Arc<dyn Secrets>,
    pub clock: Arc<dyn lambent_core::clock::Clock>,
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

// A failing port as the domain sees it: an outage is `Unavailable`, a
// conflict with a concurrent writer a `Conflict`, anything else a bug.
impl From<StoreError> for lambent_core::Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) => lambent_core::Error::Unavailable(e.to_string()),
            StoreError::Conflict => {
                lambent_core::Error::Conflict("a concurrent request changed this".into())
            }
            _ => lambent_core::Error::Internal(e.to_string()),
        }
    }
}

impl From<CipherError> for lambent_core::Error {
    fn from(e: CipherError) -> Self {
        match e {
            CipherError::Unavailable(_) => lambent_core::Error::Unavailable(e.to_string()),
            _ => lambent_core::Error::Internal(e.to_string()),
        }
    }
}

impl From<QueueError> for lambent_core::Error {
    fn from(e: QueueError) -> Self {
        match e {
            QueueError::Unavailable(_) => lambent_core::Error::Unavailable(e.to_string()),
            _ => lambent_core::Error::Internal(e.to_string()),
        }
    }
}

impl From<SecretsError> for lambent_core::Error {
    fn from(e: SecretsError) -> Self {
        match e {
            SecretsError::Unavailable(_) => lambent_core::Error::Unavailable(e.to_string()),
            _ => lambent_core::Error::Internal(e.to_string()),
        }
    }
}
