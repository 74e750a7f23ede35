//! The domain error: what went wrong, in Lambent's terms. Services and
//! repositories return it; only the HTTP edge (`lambent-http`) turns it into
//! a status code and an envelope. Messages of the client-facing variants are
//! what a client may read; the detail of `ProviderFailed`, `Unavailable` and
//! `Internal` is for the logs.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Invalid input; the message says which field and why.
    #[error("{0}")]
    BadRequest(String),
    #[error("missing or invalid API key")]
    Unauthenticated,
    #[error("this route needs the {0} role")]
    Forbidden(&'static str),
    /// Unknown, or not the caller's: both answer the same.
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error("rate limit exceeded")]
    RateLimited { retry_after_secs: u64 },
    /// The user already has as many streams open as a user may.
    #[error("{max} streams are already open for this user; wait for one to end")]
    TooManyStreams { max: u32 },
    #[error("{0}")]
    BudgetExceeded(String),
    /// The model provider failed; the message says how (status, error type),
    /// never echoing the provider's body.
    #[error("{0}")]
    ProviderFailed(String),
    #[error("the model provider timed out")]
    ProviderTimeout,
    /// A dependency (store, cipher, queue, secrets) is down; detail logged.
    #[error("a dependency is unavailable")]
    Unavailable(String),
    /// A bug or an unexpected state; detail logged.
    #[error("internal error")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The error's code, as clients see it (`"not_found"`).
    pub fn code(&self) -> &'static str {
        match self {
            Error::BadRequest(_) => "invalid_request",
            Error::Unauthenticated => "unauthenticated",
            Error::Forbidden(_) => "forbidden",
            Error::NotFound(_) => "not_found",
            Error::Conflict(_) => "conflict",
            Error::RateLimited { .. } => "rate_limited",
            Error::TooManyStreams { .. } => "too_many_streams",
            Error::BudgetExceeded(_) => "budget_exceeded",
            Error::ProviderFailed(_) => "provider_error",
            Error::ProviderTimeout => "provider_timeout",
            Error::Unavailable(_) => "dependency_unavailable",
            Error::Internal(_) => "internal",
        }
    }
}
