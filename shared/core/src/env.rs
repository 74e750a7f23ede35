//! Reading the process environment: once per cold start, strictly, with
//! errors that name the variable.

use std::collections::BTreeMap;

/// Where configuration values come from: the process environment in
/// production, a map in tests.
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
}

/// The real process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.trim().is_empty())
    }
}

impl Env for BTreeMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned().filter(|v| !v.trim().is_empty())
    }
}

/// An environment of the given variables only (tests, and settings read
/// from somewhere other than the process).
pub fn fixed(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{name} is not set: {why}")]
    Missing {
        name: &'static str,
        why: &'static str,
    },
    #[error("{name} is invalid: {why}")]
    Invalid { name: &'static str, why: String },
}

/// An optional whole number within `range`.
pub fn number(
    env: &dyn Env,
    name: &'static str,
    range: std::ops::RangeInclusive<u64>,
) -> Result<Option<u64>, ConfigError> {
    let Some(raw) = env.var(name) else {
        return Ok(None);
    };
    let n: u64 = raw.trim().parse().map_err(|_| ConfigError::Invalid {
        name,
        why: format!("{raw:?} is not a whole number"),
    })?;
    if !range.contains(&n) {
        return Err(ConfigError::Invalid {
            name,
            why: format!("{n} is outside {}..={}", range.start(), range.end()),
        });
    }
    Ok(Some(n))
}

/// A required, non-empty variable.
pub fn required(
    env: &dyn Env,
    name: &'static str,
    why: &'static str,
) -> Result<String, ConfigError> {
    env.var(name).ok_or(ConfigError::Missing { name, why })
}

/// Why a function or `lambent serve` could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    /// A dependency is missing or unreachable at start-up.
    #[error("dependency {name} is not usable: {detail}")]
    Dependency { name: &'static str, detail: String },
    #[error("data directory: {0}")]
    DataDir(String),
}
