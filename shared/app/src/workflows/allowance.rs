//! How long a step attempt may hold its step (the lease) and wait for a
//! model call. On Lambda the invocation's own deadline decides: a model call
//! may use what is left of it but the time to journal, bill and answer SQS,
//! and the lease covers the rest of the invocation, so no other worker takes
//! the step over while this one may still run. Elsewhere (`lambent serve`),
//! the configured lease decides, and a model call gets 80 % of it.

use std::time::Duration;

use crate::config::Config;

/// Kept from the end of a Lambda invocation for what follows a model call:
/// journaling the reply, the settle transaction, the step's completion and
/// the batch's answer to SQS.
const AFTER_THE_CALL: Duration = Duration::from_secs(15);
/// The lease outlives the invocation by this much, so the step is free only
/// once its worker is surely gone.
const PAST_THE_DEADLINE: Duration = Duration::from_secs(5);
/// The least a model call gets, however late the attempt starts (a call
/// that cannot finish fails the attempt, which is retried).
const SHORTEST_CALL: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Allowance {
    /// The end of the Lambda invocation, in milliseconds since the epoch.
    deadline_ms: Option<i64>,
}

impl Allowance {
    /// Bounded by the configured lease (`LAMBENT_STEP_LEASE_MS`).
    pub const fn configured() -> Allowance {
        Allowance { deadline_ms: None }
    }

    /// Bounded by a Lambda invocation that ends at `deadline_ms` (the
    /// runtime's `Context::deadline`, milliseconds since the epoch).
    pub const fn until(deadline_ms: i64) -> Allowance {
        Allowance {
            deadline_ms: Some(deadline_ms),
        }
    }

    /// How long the attempt holds the step, from `now_ms`.
    pub(crate) fn lease(&self, config: &Config, now_ms: i64) -> Duration {
        match self.deadline_ms {
            Some(deadline) => left(deadline, now_ms) + PAST_THE_DEADLINE,
            None => config.step_lease,
        }
    }

    /// How long one model call of the attempt may take, from `now_ms`.
    pub(crate) fn model_call(&self, config: &Config, now_ms: i64) -> Duration {
        match self.deadline_ms {
            Some(deadline) => left(deadline, now_ms)
                .saturating_sub(AFTER_THE_CALL)
                .max(SHORTEST_CALL),
            None => config.step_lease.mul_f64(0.8),
        }
    }
}

fn left(deadline_ms: i64, now_ms: i64) -> Duration {
    Duration::from_millis(deadline_ms.saturating_sub(now_ms).max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lambda_invocation_bounds_the_call_and_the_lease_by_what_is_left() {
        let config = Config::default();
        let now = 1_000_000;
        // 900 s invocation, just started: a call may take 885 s, far more
        // than 80 % of the configured lease.
        let fresh = Allowance::until(now + 900_000);
        assert_eq!(fresh.model_call(&config, now), Duration::from_secs(885));
        assert_eq!(fresh.lease(&config, now), Duration::from_secs(905));
        assert!(fresh.model_call(&config, now) > config.step_lease);
        // 40 s left: 25 s for the call, the lease to 5 s past the end.
        let late = Allowance::until(now + 40_000);
        assert_eq!(late.model_call(&config, now), Duration::from_secs(25));
        assert_eq!(late.lease(&config, now), Duration::from_secs(45));
        // Past the reserve, or past the deadline: the shortest call.
        assert_eq!(
            Allowance::until(now + 3_000).model_call(&config, now),
            SHORTEST_CALL
        );
        assert_eq!(
            Allowance::until(now - 3_000).model_call(&config, now),
            SHORTEST_CALL
        );
        assert_eq!(
            Allowance::until(now - 3_000).lease(&config, now),
            PAST_THE_DEADLINE
        );
    }

    #[test]
    fn elsewhere_the_configured_lease_bounds_them() {
        let config = Config {
            step_lease: Duration::from_secs(100),
            ..Config::default()
        };
        let configured = Allowance::configured();
        assert_eq!(configured.lease(&config, 0), Duration::from_secs(100));
        assert_eq!(configured.model_call(&config, 0), Duration::from_secs(80));
    }
}
