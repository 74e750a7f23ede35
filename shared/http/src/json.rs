//! The JSON body extractor of every route: a body that is not a JSON object,
//! or has a malformed, mistyped or unknown field, is a 400 whose message
//! names the field; a body over the limit is a 413; a missing
//! `Content-Type: application/json` is a 415.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use bytes::Bytes;
use http::StatusCode;
use lambent_core::Error;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON request body of type `T` (request types deny unknown fields).
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(request.headers()) {
            return Err(ApiError::UnsupportedMediaType);
        }
        let bytes =
            Bytes::from_request(request, state)
                .await
                .map_err(|rejection| match rejection.status() {
                    StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
                    _ => Error::BadRequest("body: could not be read".into()).into(),
                })?;
        // serde would also read a struct from a JSON array ([null, null]);
        // the API takes objects only.
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(Error::BadRequest("body: expected a JSON object".into()).into());
        }
        axum::Json::<T>::from_bytes(&bytes)
            .map(|axum::Json(value)| Body(value))
            .map_err(explain)
    }
}

fn is_json(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|essence| {
            let essence = essence.trim().to_ascii_lowercase();
            essence == "application/json"
                || (essence.starts_with("application/") && essence.ends_with("+json"))
        })
        .unwrap_or(false)
}

fn explain(rejection: JsonRejection) -> ApiError {
    let text = rejection.body_text();
    // axum prefixes serde's message ("name: invalid type ...") with its own
    // sentence; the client needs only serde's part.
    let detail = text
        .split_once("target type: ")
        .map(|(_, d)| d)
        .or_else(|| text.split_once("JSON data: ").map(|(_, d)| d))
        .unwrap_or(&text);
    let detail: String = detail.chars().take(300).collect();
    let refused = match rejection {
        JsonRejection::JsonSyntaxError(_) => {
            Error::BadRequest(format!("body is not valid JSON: {detail}"))
        }
        _ => Error::BadRequest(detail),
    };
    refused.into()
}
