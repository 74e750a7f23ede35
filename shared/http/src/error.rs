//! The one error type of the HTTP API: the domain error (`lambent_core::Error`)
//! and the edge's own refusals, one exhaustive status mapping, one JSON
//! envelope. Clients get a generic message and the request ID; the
//! details go to the logs only.

use axum::response::{IntoResponse, Response};
use http::StatusCode;

use lambent_core::Error;
use lambent_ports::{CipherError, QueueError, SecretsError, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// What the domain refused (invalid input, not found, a conflict, a
    /// limit) or could not do (a provider or a dependency failed).
    #[error(transparent)]
    Domain(#[from] Error),
    /// The body is over `LAMBENT_MAX_BODY_BYTES`.
    #[error("request body is too large")]
    PayloadTooLarge,
    #[error("expected a JSON body with Content-Type: application/json")]
    UnsupportedMediaType,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Domain(e) => match e {
                Error::BadRequest(_) => StatusCode::BAD_REQUEST,
                Error::Unauthenticated => StatusCode::UNAUTHORIZED,
                Error::Forbidden(_) => StatusCode::FORBIDDEN,
                Error::NotFound(_) => StatusCode::NOT_FOUND,
                Error::Conflict(_) => StatusCode::CONFLICT,
                Error::RateLimited { .. }
                | Error::TooManyStreams { .. }
                | Error::BudgetExceeded(_) => StatusCode::TOO_MANY_REQUESTS,
                Error::ProviderFailed(_) => StatusCode::BAD_GATEWAY,
                Error::ProviderTimeout => StatusCode::GATEWAY_TIMEOUT,
                Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
                Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            },
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Domain(e) => e.code(),
            ApiError::PayloadTooLarge => "payload_too_large",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
        }
    }

    /// What the client may read. Internal details never appear here.
    pub fn public_message(&self) -> String {
        self.to_string()
    }

    fn internal_detail(&self) -> Option<&str> {
        match self {
            ApiError::Domain(
                Error::ProviderFailed(d) | Error::Unavailable(d) | Error::Internal(d),
            ) => Some(d),
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
            ApiError::Domain(Error::RateLimited { retry_after_secs }) => {
                if let Ok(v) = http::HeaderValue::from_str(&retry_after_secs.to_string()) {
                    response.headers_mut().insert(http::header::RETRY_AFTER, v);
                }
            }
            ApiError::Domain(Error::Unauthenticated) => {
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

// A port's error reaches the edge the way the domain classifies it.
macro_rules! through_the_domain {
    ($($port_error:ty),*) => {$(
        impl From<$port_error> for ApiError {
            fn from(e: $port_error) -> Self {
                Error::from(e).into()
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
    /// `not_found`, `conflict`, `payload_too_large`, `rate_limited`,
    /// `too_many_streams`, ...
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
        let e = ApiError::from(Error::Unavailable(
            "table lambent-prod: AccessDenied".into(),
        ));
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(!e.public_message().contains("lambent-prod"));
        let e = ApiError::from(Error::Internal("stack trace".into()));
        assert!(!e.public_message().contains("stack"));
    }
}
