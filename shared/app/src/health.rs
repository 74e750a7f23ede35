//! `GET /health`: really checks the store, the key cipher and the queue, each
//! within a time limit, concurrently, so a hanging dependency cannot hang the
//! check. Failures are named; their details go to the logs only. The public
//! route answers from [`Cached`]: one set of checks per [`CACHE_FOR`],
//! however many requests come. No secret is read: a health check needs none
//! (the health function is not even allowed to read one).

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::Mutex;

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

/// How long a health report is reused.
pub const CACHE_FOR: Duration = Duration::from_secs(10);

/// The last report and when it was made (by the state's clock), reused for
/// its lifetime so a busy public route makes no AWS call per request.
/// Concurrent requests wait for one set of checks, never start their own.
pub struct Cached {
    lifetime: Duration,
    last: Mutex<Option<(i64, Report)>>,
}

impl Cached {
    pub fn new(lifetime: Duration) -> Cached {
        Cached {
            lifetime,
            last: Mutex::new(None),
        }
    }

    /// The last report if it is younger than the lifetime, else a new one.
    pub async fn check(&self, state: &State) -> Report {
        let mut last = self.last.lock().await;
        let lifetime_ms = i64::try_from(self.lifetime.as_millis()).unwrap_or(i64::MAX);
        let now = state.clock.now_millis();
        if let Some((at, report)) = last.as_ref() {
            if (*at..at.saturating_add(lifetime_ms)).contains(&now) {
                return report.clone();
            }
        }
        let report = check(state).await;
        *last = Some((state.clock.now_millis(), report.clone()));
        report
    }
}

impl Default for Cached {
    fn default() -> Cached {
        Cached::new(CACHE_FOR)
    }
}

/// Checks every dependency now.
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
