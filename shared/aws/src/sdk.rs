//! The AWS SDK configuration shared by every client: loaded once per cold
//! start, with explicit timeouts and a bounded standard retry policy.
//!
//! Everything comes from the default provider chain, so `AWS_ENDPOINT_URL`
//! (or `AWS_ENDPOINT_URL_<SERVICE>`) points every client at LocalStack, moto or
//! any other emulator without a code change, and `AWS_REGION` / credentials
//! come from the environment, a profile or the Lambda execution role.

use std::error::Error;
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_dynamodb::error::DisplayErrorContext;

/// Time allowed to open a TCP (and TLS) connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Time allowed for one attempt of an operation, response included.
pub const OPERATION_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time allowed for an operation, all retries included.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts per operation (the first one included), with exponential backoff.
pub const MAX_ATTEMPTS: u32 = 3;

/// The timeouts every client uses unless an operation overrides them (SQS
/// long polling does: its attempt lasts as long as the wait).
pub fn timeout_config() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .operation_attempt_timeout(OPERATION_ATTEMPT_TIMEOUT)
        .operation_timeout(OPERATION_TIMEOUT)
        .build()
}

/// The retry policy every client uses.
pub fn retry_config() -> RetryConfig {
    RetryConfig::standard().with_max_attempts(MAX_ATTEMPTS)
}

/// Loads the SDK configuration from the environment (region, credentials,
/// endpoint overrides), with Lambent's timeouts and retry policy. Call it
/// once per cold start and build every client from the result.
pub async fn load_sdk_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(timeout_config())
        .retry_config(retry_config())
        .load()
        .await
}

/// An SDK error rendered with its whole source chain (for logs only).
pub fn error_text<E: Error>(err: &E) -> String {
    DisplayErrorContext(err).to_string()
}
