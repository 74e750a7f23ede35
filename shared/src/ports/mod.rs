//! The seams between Lambent's services and the outside world. Each port has an
//! AWS adapter and an embedded adapter (`crate::adapters`), and one contract
//! test suite that both pass.

pub mod cipher;
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
