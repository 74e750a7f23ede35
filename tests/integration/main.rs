//! Integration tests on the embedded backend: the port contracts, the HTTP
//! API of `lambent serve` (in process and as the real binary), and a function
//! driven through the real Lambda HTTP adapter.

mod agent_turns;
mod chaos;
mod chat;
mod completions;
mod contention;
mod contracts;
mod faults;
mod first_token;
mod identity;
mod limits;
mod llm_clients;
mod metrics;
mod rotation;
mod secrets_in_logs;
mod serve_binary;
mod serve_http;
mod server_tool_config;
mod server_tools;
mod tools;
mod turn_crash;
mod units;
mod workflow_tools;
mod workflows;
