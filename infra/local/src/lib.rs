//! The local runner behind the `lambent` binary: every route group's Router
//! merged into one axum app, the queue consumers that Lambda's event sources
//! drive in AWS, and the commands that set up a deployment's resources.

pub mod admin_key;
pub mod app;
pub mod consumers;
pub mod metrics;
pub mod openapi;
pub mod provision;
pub mod resources;
pub mod rotate;
pub mod serve;
