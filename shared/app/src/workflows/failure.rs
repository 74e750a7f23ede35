//! How a step's attempt fails: for the worker (retry after a backoff, or
//! fail the step and its run) and for the queue (come back later).

use std::time::Duration;

use lambent_core::Error;
use lambent_llm::ProviderError;

use super::Point;

#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// The step will run again after `after` (the message's visibility
    /// timeout was set to it).
    #[error("retrying in {after:?}: {reason}")]
    Retry { reason: String, after: Duration },
    /// A test stopped the worker here, as if its process died.
    #[error("worker stopped at {0:?} (injected crash)")]
    Crashed(Point),
    /// The store or the queue failed; the message comes back after its
    /// visibility timeout.
    #[error("a dependency is unavailable: {0}")]
    Unavailable(String),
}

pub(super) fn unavailable(e: impl std::fmt::Display) -> StepError {
    StepError::Unavailable(e.to_string())
}

/// Why an attempt did not produce a result.
pub(super) enum Failure {
    /// Retrying cannot help: a deleted agent, a refused key, a budget.
    Permanent(String),
    /// A provider hiccup or an unavailable dependency.
    Retryable(String),
}

pub(super) fn domain_failure(e: Error) -> Failure {
    match e {
        Error::Unavailable(_) | Error::Internal(_) => {
            Failure::Retryable("a dependency is unavailable".into())
        }
        Error::BudgetExceeded(m) => Failure::Permanent(format!("budget_exceeded: {m}")),
        other => Failure::Permanent(other.to_string()),
    }
}

pub(super) fn provider_failure(e: ProviderError) -> Failure {
    let message = e.to_string();
    match e {
        ProviderError::Unauthorized { .. }
        | ProviderError::Rejected { .. }
        | ProviderError::Forbidden(_) => Failure::Permanent(message),
        ProviderError::RateLimited { .. }
        | ProviderError::Overloaded
        | ProviderError::Upstream { .. }
        | ProviderError::StreamError { .. }
        | ProviderError::Connection(_)
        | ProviderError::Timeout
        | ProviderError::Protocol(_) => Failure::Retryable(message),
    }
}

/// `text` cut to at most `max` bytes at a character boundary.
pub(super) fn cut(mut text: String, max: usize) -> (String, bool) {
    if text.len() <= max {
        return (text, false);
    }
    let mut at = max;
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    text.truncate(at);
    (text, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_keeps_whole_characters() {
        let (text, cut_off) = cut("héllo".to_owned(), 2);
        assert_eq!((text.as_str(), cut_off), ("h", true));
        let (text, cut_off) = cut("hi".to_owned(), 2);
        assert_eq!((text.as_str(), cut_off), ("hi", false));
    }
}
