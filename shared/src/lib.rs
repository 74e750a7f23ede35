//! `lambent`: the domain, services, ports and adapters shared by every Lambent
//! function and by the local runner. Nothing here knows whether it runs in
//! Lambda or on a laptop, and nothing here depends on the Lambda runtime.

pub mod adapters;
pub mod backend;
pub mod batch;
pub mod bootstrap;
pub mod chat;
pub mod config;
pub mod cursor;
pub mod error;
pub mod health;
pub mod http;
pub mod identity;
pub mod ids;
pub mod llm;
pub mod net_guard;
pub mod ports;
pub mod repos;
pub mod secret;
pub mod state;
pub mod telemetry;
pub mod time;
pub mod ttl_cache;
pub mod workflows;
