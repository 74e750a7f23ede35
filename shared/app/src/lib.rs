//! `lambent-app`: the services every entry point shares. Identity (API keys
//! and roles), model calls with their accounting (`chat`), workflow runs,
//! queue batches and health, over the ports and the repositories. Nothing
//! here knows about HTTP status codes, Lambda or a particular adapter.

pub mod batch;
pub mod bootstrap;
pub mod callers;
pub mod chat;
pub mod config;
pub mod health;
pub mod identity;
pub mod metrics;
pub mod rate_gate;
pub mod state;
pub mod streams;
pub mod sweeper;
pub mod targets;
pub mod turn_registry;
pub mod turns;
pub mod workflows;
