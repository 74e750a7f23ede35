//! The JSON body extractor of every route: a malformed, mistyped or unknown
//! field is a 400 whose message names the field; a body over the limit is a
//! 413; a missing `Content-Type: application/json` is a 415.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use http::StatusCode;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON request body of type `T` (request types deny unknown fields).
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(Body(value)),
            Err(rejection) => Err(explain(rejection)),
        }
    }
}

fn explain(rejection: JsonRejection) -> ApiError {
    match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge(None),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType,
        _ => {
            let text = rejection.body_text();
            // axum prefixes serde's message ("name: invalid type ...") with
            // its own sentence; the client needs only serde's part.
            let detail = text
                .split_once("target type: ")
                .map(|(_, d)| d)
                .or_else(|| text.split_once("JSON data: ").map(|(_, d)| d))
                .unwrap_or(&text);
            let detail: String = detail.chars().take(300).collect();
            match rejection {
                JsonRejection::JsonSyntaxError(_) => {
                    ApiError::BadRequest(format!("body is not valid JSON: {detail}"))
                }
                _ => ApiError::BadRequest(detail),
            }
        }
    }
}
