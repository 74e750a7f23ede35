//! The one error type of the HTTP API: the domain error (`lambent_core::Error`)
//! and the edge's own refusals, one exhaustive status mapping, one JSON
//! envelope. Clients get a generic message and the request ID; the
//! details go to the logs only.

use axum::response::{IntoResponse, Response};
use http::StatusCode;

use lambent_ports::{CipherError, QueueError, SecretsError, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
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
    /// The body is over `LAMBENT_MAX_BODY_BYTES`.
    #[error("request body is too large")]
    PayloadTooLarge,
    #[error("expected a JSON body with Content-Type: application/json")]
    UnsupportedMediaType,
    #[error("rate limit exceeded")]
    RateLimited { retry_after_secs: u64 },
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

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthenticated => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::RateLimited { .. } | ApiError::BudgetExceeded(_) => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::ProviderFailed(_) => StatusCode::BAD_GATEWAY,
            ApiError::ProviderTimeout => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "invalid_request",
            ApiError::Unauthenticated => "unauthenticated",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::PayloadTooLarge => "payload_too_large",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::BudgetExceeded(_) => "budget_exceeded",
            ApiError::ProviderFailed(_) => "provider_error",
            ApiError::ProviderTimeout => "provider_timeout",
            ApiError::Unavailable(_) => "dependency_unavailable",
            ApiError::Internal(_) => "internal",
        }
    }

    /// What the client may read. Internal details never appear here.
    pub fn public_message(&self) -> String {
        self.to_string()
    }

    fn internal_detail(&self) -> Option<&str> {
        match self {
            ApiError::ProviderFailed(d) | ApiError::Unavailable(d) | ApiError::Internal(d) => {
                Some(d)
            }
            _ => None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Some(detail) = self.internal_detail() {
            tracing::error!(code = self.code(), detail, "request failed");
        }
        let mut response =
            crate::error_response(self.status(), self.code(), &self.public_message());
        match self {
            ApiError::RateLimited { retry_after_secs } => {
                if let Ok(v) = http::HeaderValue::from_str(&retry_after_secs.to_string()) {
                    response.headers_mut().insert(http::header::RETRY_AFTER, v);
                }
            }
            ApiError::Unauthenticated => {
                response.headers_mut().insert(
                    http::header::WWW_AUTHENTICATE,
                    http::HeaderValue::from_static("Bearer"),
                );
            }
            _ => {}
        }
        response
    }
}

impl From<lambent_core::Error> for ApiError {
    fn from(e: lambent_core::Error) -> Self {
        use lambent_core::Error as E;
        match e {
            E::BadRequest(m) => ApiError::BadRequest(m),
            E::Unauthenticated => ApiError::Unauthenticated,
            E::Forbidden(role) => ApiError::Forbidden(role),
            E::NotFound(what) => ApiError::NotFound(what),
            E::Conflict(m) => ApiError::Conflict(m),
            E::RateLimited { retry_after_secs } => ApiError::RateLimited { retry_after_secs },
            E::BudgetExceeded(m) => ApiError::BudgetExceeded(m),
            E::ProviderFailed(d) => ApiError::ProviderFailed(d),
            E::ProviderTimeout => ApiError::ProviderTimeout,
            E::Unavailable(d) => ApiError::Unavailable(d),
            E::Internal(d) => ApiError::Internal(d),
        }
    }
}

// A port's error reaches the edge the way the domain classifies it.
macro_rules! through_the_domain {
    ($($port_error:ty),*) => {$(
        impl From<$port_error> for ApiError {
            fn from(e: $port_error) -> Self {
                lambent_core::Error::from(e).into()
            }
        }
    )*};
}
through_the_domain!(StoreError, CipherError, QueueError, SecretsError);

pub type ApiResult<T> = Result<T, ApiError>;

/// The error envelope, as the OpenAPI document describes it.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable: `invalid_request`, `unauthenticated`, `forbidden`,
    /// `not_found`, `conflict`, `payload_too_large`, `rate_limited`, ...
    pub code: String,
    /// For people; a 400 names the field.
    pub message: String,
    pub request_id: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_details_never_reach_the_message() {
        let e = ApiError::Unavailable("table lambent-prod: AccessDenied".into());
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(!e.public_message().contains("lambent-prod"));
        let e = ApiError::Internal("stack trace".into());
        assert!(!e.public_message().contains("stack"));
    }
}
