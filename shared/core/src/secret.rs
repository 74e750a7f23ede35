//! Secrets in memory: never printed, never serialised by accident.

pub use secrecy::{ExposeSecret, SecretString};
