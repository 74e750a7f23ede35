//! `lambent-core`: Lambent's vocabulary, shared by every layer above it. IDs
//! and secrets, the clock, roles, usage, provider kinds, workflow definitions,
//! input checks and the domain error. No I/O and no web framework: nothing
//! here knows about stores, providers or HTTP.

pub mod api_key;
pub mod auth;
pub mod chat;
pub mod clock;
pub mod env;
pub mod error;
pub mod ids;
pub mod provider;
pub mod secret;
pub mod time;
pub mod ttl_cache;
pub mod validate;
pub mod workflow;

pub use error::{Error, Result};
