//! `GET /health`: really checks the store, the key cipher and the queue, each
//! within a time limit, concurrently, so a hanging dependency cannot hang the
//! check. Failures are named; their details go to the logs only.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::state::State;

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Report {
    /// `ok` when every check passed, else `degraded`.
    #[schema(value_type = String, example = "ok")]
    pub status: &'static str,
    #[schema(value_type = BTreeMap<String, Check>)]
    pub checks: BTreeMap<&'static str, Check>,
}

#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Check {
    /// `ok` or `failed`.
    #[schema(value_type = String)]
    pub status: &'static str,
    /// `timeout` or `unavailable` when failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub reason: Option<&'static str>,
    pub latency_ms: u64,
}

impl Report {
    pub fn is_ok(&self) -> bool {
        self.status == "ok"
    }

    /// The names of the failed checks.
    pub fn failed(&self) -> Vec<&'static str> {
        self.checks
            .iter()
            .filter(|(_, c)| c.status != "ok")
            .map(|(n, _)| *n)
            .collect()
    }
}

pub async fn check(state: &State) -> Report {
    let limit = state.config.health_check_timeout;
    let (store, cipher, queue) = tokio::join!(
        timed("store", limit, state.store.ping()),
        timed("cipher", limit, state.cipher.ping()),
        timed("queue", limit, state.queue.ping()),
    );
    let checks: BTreeMap<_, _> = [("store", store), ("cipher", cipher), ("queue", queue)]
        .into_iter()
        .collect();
    let status = if checks.values().all(|c| c.status == "ok") {
        "ok"
    } else {
        "degraded"
    };
    Report { status, checks }
}

async fn timed<E: std::fmt::Display>(
    name: &'static str,
    limit: Duration,
    probe: impl Future<Output = Result<(), E>>,
) -> Check {
    let started = Instant::now();
    let outcome = tokio::time::timeout(limit, probe).await;
    let latency_ms = started.elapsed().as_millis() as u64;
    let reason = match outcome {
        Ok(Ok(())) => None,
        Ok(Err(e)) => {
            tracing::warn!(dependency = name, error = %e, "health check failed");
            Some("unavailable")
        }
        Err(_) => {
            tracing::warn!(dependency = name, ?limit, "health check timed out");
            Some("timeout")
        }
    };
    Check {
        status: if reason.is_none() { "ok" } else { "failed" },
        reason,
        latency_ms,
    }
}
