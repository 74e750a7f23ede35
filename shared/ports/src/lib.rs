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
/// The store is always needed; the secrets by every function but health
/// and the sweeper.
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
// conflict with a concurrent writer a `Conflict`, something too large to
// store the client's doing (a 400; the routes check their fields' sizes
// first and name them, this is the backstop for what they missed), anything
// else a bug.
impl From<StoreError> for lambent_core::Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) => lambent_core::Error::Unavailable(e.to_string()),
            StoreError::Conflict => {
                lambent_core::Error::Conflict("a concurrent request changed this".into())
            }
            // The detail (keys, sizes) is not for the client.
            StoreError::TooLarge(_) => lambent_core::Error::BadRequest(TOO_LARGE_TO_STORE.into()),
            _ => lambent_core::Error::Internal(e.to_string()),
        }
    }
}

/// What a client reads when a write was too large for the store.
const TOO_LARGE_TO_STORE: &str =
    "request: too large to store (a stored record holds at most 400 KB, \
     and one change at most 4 MB in all)";

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_too_large_to_store_is_the_clients_400_without_its_detail() {
        let domain = lambent_core::Error::from(StoreError::TooLarge(
            "item USER#usr_secret/AGENT#agt_1 is 500000 bytes".into(),
        ));
        match domain {
            lambent_core::Error::BadRequest(message) => {
                assert_eq!(message, TOO_LARGE_TO_STORE);
                assert!(!message.contains("usr_secret"));
            }
            other => panic!("expected a bad request, got {other:?}"),
        }
        assert!(matches!(
            lambent_core::Error::from(StoreError::Invalid("bug".into())),
            lambent_core::Error::Internal(_)
        ));
    }
}
