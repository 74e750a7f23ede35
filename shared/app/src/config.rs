//! Configuration, read from the environment once per cold start, validated,
//! and passed down explicitly. A missing or malformed variable fails the start
//! with an error that names it.

use std::time::Duration;

pub use lambent_core::env::{number, required, ConfigError, Env, ProcessEnv};
pub use lambent_store::rate_limits::Limit;

/// Settings every function and the local runner share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// How long sessions and their messages live after their last activity.
    pub session_ttl: Duration,
    /// How long a verified API key may be trusted without a store lookup.
    pub auth_cache: Duration,
    /// How long keys derived from the root secret are used before it is
    /// read again: a rotation reaches every process within it.
    pub secret_cache: Duration,
    /// Whether the bootstrap admin key works (`LAMBENT_BOOTSTRAP_ADMIN=off`
    /// turns it off once real admin users exist).
    pub bootstrap_admin: bool,
    /// Browser origins allowed by CORS; empty means no cross-origin access.
    pub cors_origins: Vec<String>,
    /// Largest request body accepted (413 past it).
    pub max_body_bytes: usize,
    /// Time limit of each dependency check of `GET /health`.
    pub health_check_timeout: Duration,
    /// Logs as JSON lines (Lambda, CloudWatch) or human-readable text.
    pub log_format: LogFormat,
    /// Requests per key per window, counted in the store.
    pub rate_limit: Limit,
    /// How long audit entries are kept.
    pub audit_ttl_days: u64,
    /// Lets provider base URLs use http and loopback or private addresses
    /// (never link-local or metadata): local development and tests only.
    pub allow_private_provider_urls: bool,
    /// Longest wait for a TCP (and TLS) connection to a model provider.
    pub provider_connect_timeout: Duration,
    /// Longest silence from a model provider, before its first byte or
    /// between two chunks; past it the call fails with 504 or an error event.
    pub provider_idle_timeout: Duration,
    /// How long a turn's runner holds it (renewed a third of the way): a
    /// turn whose runner died is taken up again by the worker after it.
    pub turn_lease: Duration,
    /// Times a turn may be taken up before it fails.
    pub turn_max_attempts: u32,
    /// Server tools of one model reply run at once, at most.
    pub tool_concurrency: usize,
    /// The longest a turn's events wait in memory before they are stored,
    /// once a client follows the turn.
    pub events_flush: Duration,
    /// The same while nobody follows it: fewer, larger writes.
    pub events_idle_flush: Duration,
    /// Whether the embedded store fsyncs every commit (`LAMBENT_SYNC=full`)
    /// or checkpoints its WAL every second (`normal`, the default): a power
    /// loss may then lose the last second of commits, a crash nothing.
    pub fsync_each_commit: bool,
    /// Attempts of a workflow step before it and its run fail.
    pub step_max_attempts: u32,
    /// How long a worker holds a step it is running. It bounds the step's
    /// model call, and a step whose worker died is taken over after it, so
    /// it must stay below the steps queue's visibility timeout.
    pub step_lease: Duration,
    /// Pause before a failed step's first retry; it doubles with each attempt.
    pub step_backoff: Duration,
    /// Streams a user may have open at once (0: no cap).
    pub max_streams_per_user: u32,
    /// The longest a streamed reply may run: Lambent cuts it there, stores
    /// it `incomplete` and bills it, before the function's own timeout
    /// would kill it unbilled.
    pub stream_deadline: Duration,
    /// How old a call without an outcome (or a stranded workflow step) must
    /// be before the sweeper acts on it: longer than any call can run.
    pub sweep_stale: Duration,
    /// How often `lambent serve` runs a sweeper pass (on AWS, the schedule
    /// of the sweeper function).
    pub sweep_every: Duration,
    /// How often `lambent serve` folds the calls' pending usage into the
    /// aggregates between sweeper passes (on AWS, each sweeper pass folds).
    pub fold_every: Duration,
    /// The Lambda function this process is (`AWS_LAMBDA_FUNCTION_NAME`,
    /// set by Lambda itself), `None` elsewhere. Only then are the metrics
    /// written as CloudWatch EMF lines (`crate::metrics`), with the name as
    /// their `Function` dimension: `lambent serve` never prints them.
    pub lambda_function: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            session_ttl: Duration::from_secs(30 * 86_400),
            auth_cache: Duration::from_secs(5),
            secret_cache: Duration::from_secs(300),
            bootstrap_admin: true,
            cors_origins: Vec::new(),
            max_body_bytes: 1024 * 1024,
            health_check_timeout: Duration::from_millis(2_000),
            log_format: LogFormat::Text,
            rate_limit: Limit {
                requests: 600,
                window_secs: 60,
            },
            audit_ttl_days: 90,
            allow_private_provider_urls: false,
            provider_connect_timeout: Duration::from_secs(5),
            provider_idle_timeout: Duration::from_secs(120),
            turn_lease: Duration::from_secs(30),
            turn_max_attempts: 5,
            tool_concurrency: 8,
            events_flush: Duration::from_millis(100),
            events_idle_flush: Duration::from_secs(2),
            fsync_each_commit: false,
            step_max_attempts: 3,
            step_lease: Duration::from_secs(150),
            step_backoff: Duration::from_secs(5),
            max_streams_per_user: 8,
            // The chat function's timeout is 300 s: settle with time to spare.
            stream_deadline: Duration::from_secs(270),
            // Above the stream deadline, the worker's lease, and the
            // longest step backoff (15 min).
            sweep_stale: Duration::from_secs(1_200),
            sweep_every: Duration::from_secs(60),
            fold_every: Duration::from_secs(1),
            lambda_function: None,
        }
    }
}

impl Config {
    /// The provider HTTP client's settings.
    pub fn llm_client(&self) -> lambent_llm::ClientSettings {
        lambent_llm::ClientSettings {
            connect_timeout: self.provider_connect_timeout,
            idle_timeout: self.provider_idle_timeout,
            allow_private: self.allow_private_provider_urls,
        }
    }

    pub fn from_env(env: &dyn Env) -> Result<Config, ConfigError> {
        let defaults = Config::default();
        Ok(Config {
            session_ttl: Duration::from_secs(
                86_400
                    * number(env, "LAMBENT_SESSION_TTL_DAYS", 1..=3650)?
                        .unwrap_or(defaults.session_ttl.as_secs() / 86_400),
            ),
            auth_cache: number(env, "LAMBENT_AUTH_CACHE_SECS", 0..=300)?
                .map(Duration::from_secs)
                .unwrap_or(defaults.auth_cache),
            secret_cache: number(env, "LAMBENT_SECRET_CACHE_SECS", 0..=3600)?
                .map(Duration::from_secs)
                .unwrap_or(defaults.secret_cache),
            bootstrap_admin: match env.var("LAMBENT_BOOTSTRAP_ADMIN").as_deref() {
                None | Some("on") | Some("1") | Some("true") => true,
                Some("off") | Some("0") | Some("false") => false,
                Some(other) => {
                    return Err(ConfigError::Invalid {
                        name: "LAMBENT_BOOTSTRAP_ADMIN",
                        why: format!("{other:?} is not on or off"),
                    })
                }
            },
            cors_origins: match env.var("LAMBENT_CORS_ORIGINS") {
                None => Vec::new(),
                Some(list) => cors_origins(&list)?,
            },
            max_body_bytes: number(env, "LAMBENT_MAX_BODY_BYTES", 1024..=(64 * 1024 * 1024))?
                .map(|n| n as usize)
                .unwrap_or(defaults.max_body_bytes),
            health_check_timeout: number(env, "LAMBENT_HEALTH_TIMEOUT_MS", 50..=30_000)?
                .map(Duration::from_millis)
                .unwrap_or(defaults.health_check_timeout),
            log_format: match env.var("LAMBENT_LOG_FORMAT").as_deref() {
                None | Some("text") => LogFormat::Text,
                Some("json") => LogFormat::Json,
                Some(other) => {
                    return Err(ConfigError::Invalid {
                        name: "LAMBENT_LOG_FORMAT",
                        why: format!("{other:?} is not json or text"),
                    })
                }
            },
            rate_limit: Limit {
                requests: number(env, "LAMBENT_RATE_LIMIT_REQUESTS", 0..=1_000_000)?
                    .unwrap_or(defaults.rate_limit.requests),
                window_secs: number(env, "LAMBENT_RATE_LIMIT_WINDOW_SECS", 1..=3600)?
                    .unwrap_or(defaults.rate_limit.window_secs),
            },
            audit_ttl_days: number(env, "LAMBENT_AUDIT_TTL_DAYS", 1..=3650)?
                .unwrap_or(defaults.audit_ttl_days),
            allow_private_provider_urls: match env
                .var("LAMBENT_ALLOW_PRIVATE_PROVIDER_URLS")
                .as_deref()
            {
                None | Some("0") | Some("false") => false,
                Some("1") | Some("true") => true,
                Some(other) => {
                    return Err(ConfigError::Invalid {
                        name: "LAMBENT_ALLOW_PRIVATE_PROVIDER_URLS",
                        why: format!("{other:?} is not 1 or 0"),
                    })
                }
            },
            provider_connect_timeout: number(
                env,
                "LAMBENT_PROVIDER_CONNECT_TIMEOUT_MS",
                100..=60_000,
            )?
            .map(Duration::from_millis)
            .unwrap_or(defaults.provider_connect_timeout),
            provider_idle_timeout: number(env, "LAMBENT_PROVIDER_IDLE_TIMEOUT_MS", 100..=900_000)?
                .map(Duration::from_millis)
                .unwrap_or(defaults.provider_idle_timeout),
            turn_lease: number(env, "LAMBENT_TURN_LEASE_MS", 300..=900_000)?
                .map(Duration::from_millis)
                .unwrap_or(defaults.turn_lease),
            turn_max_attempts: number(env, "LAMBENT_TURN_MAX_ATTEMPTS", 1..=50)?
                .map(|n| n as u32)
                .unwrap_or(defaults.turn_max_attempts),
            tool_concurrency: number(env, "LAMBENT_TOOL_CONCURRENCY", 1..=64)?
                .map(|n| n as usize)
                .unwrap_or(defaults.tool_concurrency),
            events_flush: number(env, "LAMBENT_EVENTS_FLUSH_MS", 1..=5_000)?
                .map(Duration::from_millis)
                .unwrap_or(defaults.events_flush),
            events_idle_flush: number(env, "LAMBENT_EVENTS_IDLE_FLUSH_MS", 1..=60_000)?
                .map(Duration::from_millis)
                .unwrap_or(defaults.events_idle_flush),
            fsync_each_commit: match env.var("LAMBENT_SYNC").as_deref() {
                None | Some("normal") => false,
                Some("full") => true,
                Some(other) => {
                    return Err(ConfigError::Invalid {
                        name: "LAMBENT_SYNC",
                        why: format!("{other:?} is not normal or full"),
                    })
                }
            },
            step_max_attempts: number(env, "LAMBENT_STEP_MAX_ATTEMPTS", 1..=20)?
                .map(|n| n as u32)
                .unwrap_or(defaults.step_max_attempts),
            step_lease: number(env, "LAMBENT_STEP_LEASE_MS", 100..=3_600_000)?
                .map(Duration::from_millis)
                .unwrap_or(defaults.step_lease),
            step_backoff: number(env, "LAMBENT_STEP_BACKOFF_MS", 0..=300_000)?
                .map(Duration::from_millis)
                .unwrap_or(defaults.step_backoff),
            max_streams_per_user: number(env, "LAMBENT_MAX_STREAMS_PER_USER", 0..=10_000)?
                .map(|n| n as u32)
                .unwrap_or(defaults.max_streams_per_user),
            stream_deadline: number(env, "LAMBENT_STREAM_DEADLINE_SECS", 1..=86_400)?
                .map(Duration::from_secs)
                .unwrap_or(defaults.stream_deadline),
            sweep_stale: number(env, "LAMBENT_SWEEP_STALE_SECS", 1..=86_400)?
                .map(Duration::from_secs)
                .unwrap_or(defaults.sweep_stale),
            sweep_every: number(env, "LAMBENT_SWEEP_EVERY_SECS", 1..=3_600)?
                .map(Duration::from_secs)
                .unwrap_or(defaults.sweep_every),
            fold_every: number(env, "LAMBENT_FOLD_EVERY_SECS", 1..=3_600)?
                .map(Duration::from_secs)
                .unwrap_or(defaults.fold_every),
            lambda_function: env.var("AWS_LAMBDA_FUNCTION_NAME"),
        })
    }
}

fn cors_origins(list: &str) -> Result<Vec<String>, ConfigError> {
    list.split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .map(|origin| {
            let ok = (origin.starts_with("https://") || origin.starts_with("http://"))
                && !origin.ends_with('/')
                && origin != "*"
                && origin.parse::<http::HeaderValue>().is_ok();
            if ok {
                Ok(origin.to_owned())
            } else {
                Err(ConfigError::Invalid {
                    name: "LAMBENT_CORS_ORIGINS",
                    why: format!("{origin:?} is not an origin such as https://app.example.com"),
                })
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use lambent_core::env::fixed as env;

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        assert_eq!(Config::from_env(&env(&[])), Ok(Config::default()));
    }

    #[test]
    fn values_are_read_and_validated() {
        let cfg = Config::from_env(&env(&[
            ("LAMBENT_SESSION_TTL_DAYS", "7"),
            (
                "LAMBENT_CORS_ORIGINS",
                "https://a.example, http://localhost:5173",
            ),
            ("LAMBENT_LOG_FORMAT", "json"),
            ("LAMBENT_SYNC", "full"),
        ]))
        .map_err(|e| e.to_string());
        let cfg = cfg.as_ref().map(|c| {
            (
                c.session_ttl.as_secs(),
                c.cors_origins.clone(),
                c.log_format,
                c.fsync_each_commit,
            )
        });
        assert_eq!(
            cfg,
            Ok((
                7 * 86_400,
                vec![
                    "https://a.example".to_string(),
                    "http://localhost:5173".to_string()
                ],
                LogFormat::Json,
                true
            ))
        );
    }

    #[test]
    fn a_bad_value_names_its_variable() {
        let err = Config::from_env(&env(&[("LAMBENT_SESSION_TTL_DAYS", "soon")]));
        assert!(
            matches!(
                &err,
                Err(ConfigError::Invalid {
                    name: "LAMBENT_SESSION_TTL_DAYS",
                    ..
                })
            ),
            "{err:?}"
        );
        let err = Config::from_env(&env(&[("LAMBENT_SYNC", "always")]));
        assert!(
            matches!(
                &err,
                Err(ConfigError::Invalid {
                    name: "LAMBENT_SYNC",
                    ..
                })
            ),
            "{err:?}"
        );
        let err = Config::from_env(&env(&[("LAMBENT_CORS_ORIGINS", "*")]));
        assert!(
            matches!(
                &err,
                Err(ConfigError::Invalid {
                    name: "LAMBENT_CORS_ORIGINS",
                    ..
                })
            ),
            "{err:?}"
        );
    }
}
