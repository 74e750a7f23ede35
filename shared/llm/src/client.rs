//! The provider HTTP client: one `reqwest` client per process (TLS with
//! certificate validation, timeouts, no redirects, no proxy, TCP_NODELAY) and
//! the SSRF guard at connection time.
//!
//! The guard runs twice per call: on the final URL before it is sent (an IP
//! literal never reaches a resolver), and in the client's DNS resolver, which
//! drops every resolved address `net_guard` refuses, so a name that resolved
//! to a public address when the provider was saved and to a private or
//! metadata address now is still refused.

use std::error::Error as StdError;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{HeaderMap, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{redirect, Response, StatusCode};

use super::openai::Flavour;
use super::{anthropic, openai, sse};
use super::{ChatRequest, ChunkStream, ClientSettings, Completion, Endpoint, ProviderError};
use crate::net_guard;
use crate::wire::error_detail;
use lambent_core::provider::ProviderKind;

/// The public Anthropic API.
pub const ANTHROPIC_BASE_URL: &str = "https://api.anthropic.com";
/// The public OpenAI API.
pub const OPENAI_BASE_URL: &str = "https://api.openai.com/v1";

/// The most of an error body that is read (to find the error's type).
const MAX_ERROR_BODY: usize = 64 * 1024;
/// The largest whole (non-streamed) reply accepted.
const MAX_COMPLETION_BODY: usize = 16 * 1024 * 1024;
/// How long an idle pooled connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

const USER_AGENT: &str = concat!("lambent/", env!("CARGO_PKG_VERSION"));

/// Calls model providers. Cheap to clone: the clones share one connection
/// pool, so build it once per process.
#[derive(Debug, Clone)]
pub struct LlmClient {
    http: reqwest::Client,
    settings: ClientSettings,
}

/// The wire format of a provider kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wire {
    Anthropic,
    OpenAi(Flavour),
}

impl Wire {
    fn of(kind: ProviderKind) -> Wire {
        match kind {
            ProviderKind::Anthropic => Wire::Anthropic,
            ProviderKind::Openai => Wire::OpenAi(Flavour::OpenAi),
            ProviderKind::OpenaiCompatible => Wire::OpenAi(Flavour::Compatible),
        }
    }
}

/// The URL a call to `endpoint` is sent to.
pub fn request_url(endpoint: &Endpoint) -> String {
    let wire = Wire::of(endpoint.kind);
    let base = endpoint.base_url.as_deref().unwrap_or(match wire {
        Wire::Anthropic => ANTHROPIC_BASE_URL,
        Wire::OpenAi(_) => OPENAI_BASE_URL,
    });
    let base = base.trim_end_matches('/');
    match wire {
        Wire::Anthropic => format!("{base}/v1/messages"),
        Wire::OpenAi(_) => format!("{base}/chat/completions"),
    }
}

/// TLS to providers: rustls on aws-lc-rs (the crypto the AWS SDK already
/// links), certificates always verified, HTTP/1.1 only. The Mozilla root
/// store is compiled in: parsing the system's CA bundle instead costs
/// millions of instructions at every cold start (docs/PERFORMANCE.md).
fn tls_config() -> Result<rustls::ClientConfig, ProviderError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ProviderError::Connection(format!("TLS configuration: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

impl LlmClient {
    /// Builds the client (its TLS configuration and connection pool).
    pub fn new(settings: ClientSettings) -> Result<LlmClient, ProviderError> {
        let resolver = GuardedResolver {
            allow_private: settings.allow_private,
        };
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls_config()?)
            .connect_timeout(settings.connect_timeout)
            .read_timeout(settings.idle_timeout)
            .tcp_nodelay(true)
            .redirect(redirect::Policy::none())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .user_agent(USER_AGENT)
            // A proxy would resolve the provider's name itself, out of the
            // guard's reach.
            .no_proxy()
            .dns_resolver(Arc::new(resolver))
            .build()
            .map_err(|e| {
                ProviderError::Connection(format!(
                    "could not build the HTTP client: {}",
                    root_cause(&e)
                ))
            })?;
        Ok(LlmClient { http, settings })
    }

    pub fn settings(&self) -> ClientSettings {
        self.settings
    }

    /// The guarded HTTP client, for other outbound calls (server tools).
    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Starts a streamed completion. Errors before the first event (status,
    /// connection, guard) are returned here; later ones end the stream.
    pub async fn stream(
        &self,
        endpoint: &Endpoint,
        request: &ChatRequest,
    ) -> Result<ChunkStream, ProviderError> {
        let wire = Wire::of(endpoint.kind);
        let response = self.send(wire, endpoint, request, true).await?;
        let is_json = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim_start().starts_with("application/json"));
        if is_json {
            // Not an event stream: an error object, or a server that ignored
            // `"stream": true`.
            let (body, _) = read_capped(response, MAX_ERROR_BODY).await?;
            return Err(match error_type(&body) {
                Some(kind) if kind == "overloaded_error" => ProviderError::Overloaded,
                Some(detail) => ProviderError::StreamError { detail },
                None => ProviderError::Protocol(
                    "the provider answered with JSON instead of an event stream".into(),
                ),
            });
        }
        let body = response.bytes_stream().map_err(map_reqwest_error);
        Ok(match wire {
            Wire::Anthropic => sse::decode(body, anthropic::StreamDecoder::new()),
            Wire::OpenAi(_) => sse::decode(body, openai::StreamDecoder::new()),
        })
    }

    /// A whole completion (`"stream": false`).
    pub async fn complete(
        &self,
        endpoint: &Endpoint,
        request: &ChatRequest,
    ) -> Result<Completion, ProviderError> {
        let wire = Wire::of(endpoint.kind);
        let response = self.send(wire, endpoint, request, false).await?;
        let (body, truncated) = read_capped(response, MAX_COMPLETION_BODY).await?;
        if truncated {
            return Err(ProviderError::Protocol(format!(
                "the reply is larger than {MAX_COMPLETION_BODY} bytes"
            )));
        }
        match wire {
            Wire::Anthropic => anthropic::parse_completion(&body),
            Wire::OpenAi(_) => openai::parse_completion(&body),
        }
    }

    /// Sends the call and returns the response if its status is a success.
    async fn send(
        &self,
        wire: Wire,
        endpoint: &Endpoint,
        request: &ChatRequest,
        stream: bool,
    ) -> Result<Response, ProviderError> {
        let url = net_guard::check_url(&request_url(endpoint), self.settings.allow_private)
            .map_err(|refused| ProviderError::Forbidden(refused.to_string()))?;
        let builder = self.http.post(url);
        let builder = match wire {
            Wire::Anthropic => anthropic::prepare(builder, &endpoint.api_key, request, stream)?,
            Wire::OpenAi(flavour) => {
                openai::prepare(builder, &endpoint.api_key, flavour, request, stream)?
            }
        };
        // The client's read timeout already bounds the wait for the response
        // head; this bound holds whatever the HTTP stack does.
        let deadline = self.settings.connect_timeout + self.settings.idle_timeout;
        let response = tokio::time::timeout(deadline, builder.send())
            .await
            .map_err(|_| ProviderError::Timeout)?
            .map_err(map_reqwest_error)?;
        let status = response.status();
        if status.is_success() {
            Ok(response)
        } else {
            Err(status_error(response).await)
        }
    }
}

/// The error a non-success response stands for.
async fn status_error(response: Response) -> ProviderError {
    let status = response.status();
    match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => ProviderError::Unauthorized {
            status: status.as_u16(),
        },
        StatusCode::TOO_MANY_REQUESTS => ProviderError::RateLimited {
            retry_after_secs: retry_after_secs(response.headers()),
        },
        _ if status.as_u16() == 529 => ProviderError::Overloaded,
        _ => {
            // A body that cannot be read does not change what the status says.
            let kind = match read_capped(response, MAX_ERROR_BODY).await {
                Ok((body, _)) => error_type(&body),
                Err(_) => None,
            };
            if kind.as_deref() == Some("overloaded_error") {
                ProviderError::Overloaded
            } else if status.is_client_error() {
                ProviderError::Rejected {
                    status: status.as_u16(),
                    detail: kind.unwrap_or_else(|| "unknown".to_owned()),
                }
            } else if status.is_server_error() {
                ProviderError::Upstream {
                    status: status.as_u16(),
                }
            } else {
                ProviderError::Protocol(format!("unexpected HTTP status {}", status.as_u16()))
            }
        }
    }
}

/// Reads at most `cap` bytes of a body; the flag says whether more was left.
async fn read_capped(mut response: Response, cap: usize) -> Result<(Vec<u8>, bool), ProviderError> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(map_reqwest_error)? {
        let room = cap - body.len();
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            return Ok((body, true));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, false))
}

/// The `retry-after` header in seconds (a number of seconds, possibly
/// fractional, or an HTTP date).
fn retry_after_secs(headers: &HeaderMap) -> Option<u64> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(secs);
    }
    if let Ok(secs) = value.parse::<f64>() {
        if secs.is_finite() && (0.0..1e12).contains(&secs) {
            // Truncation is safe: the value is finite, non-negative and small.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            return Some(secs.ceil() as u64);
        }
        return None;
    }
    let date =
        time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc2822).ok()?;
    let wait = date - time::OffsetDateTime::now_utc();
    Some(u64::try_from(wait.whole_seconds().max(0)).unwrap_or(0))
}

/// The error type of a provider's error body, `{"error": {"type": ...}}`
/// (both formats), if it has one.
fn error_type(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let error = value.get("error")?;
    let detail = error_detail(error);
    (detail != "unknown").then_some(detail)
}

/// Why the resolver refused a name: every address it resolves to is refused.
#[derive(Debug)]
struct ResolverRefused(String);

impl std::fmt::Display for ResolverRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl StdError for ResolverRefused {}

/// Resolves with the system resolver (through tokio) and keeps only the
/// addresses `net_guard` allows.
#[derive(Debug, Clone, Copy)]
struct GuardedResolver {
    allow_private: bool,
}

impl GuardedResolver {
    async fn lookup(
        host: String,
        allow_private: bool,
    ) -> Result<Vec<SocketAddr>, Box<dyn StdError + Send + Sync>> {
        let mut refused = None;
        let allowed: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
            .await?
            .filter(
                |addr| match net_guard::address_allowed(addr.ip(), allow_private) {
                    Ok(()) => true,
                    Err(why) => {
                        refused = Some(why);
                        false
                    }
                },
            )
            .collect();
        if allowed.is_empty() {
            return Err(match refused {
                Some(net_guard::Refused(why)) => Box::new(ResolverRefused(format!(
                    "base_url: {host} resolves to {why}"
                ))),
                None => Box::new(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("{host} has no address"),
                )),
            });
        }
        Ok(allowed)
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        let allow_private = self.allow_private;
        Box::pin(async move {
            let addrs = GuardedResolver::lookup(host, allow_private).await?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// The innermost cause of an error (an OS error, a hyper error...), which
/// names what happened without the URL.
fn root_cause(e: &(dyn StdError + 'static)) -> String {
    let mut current = e;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

fn find_refusal<'a>(e: &'a (dyn StdError + 'static)) -> Option<&'a ResolverRefused> {
    let mut current = Some(e);
    while let Some(err) = current {
        if let Some(refused) = err.downcast_ref::<ResolverRefused>() {
            return Some(refused);
        }
        current = err.source();
    }
    None
}

/// The provider error a transport error stands for.
pub(crate) fn map_reqwest_error(e: reqwest::Error) -> ProviderError {
    if let Some(refused) = find_refusal(&e) {
        return ProviderError::Forbidden(refused.0.clone());
    }
    if e.is_timeout() {
        return ProviderError::Timeout;
    }
    let cause = root_cause(&e);
    if e.is_connect() {
        ProviderError::Connection(format!("could not connect: {cause}"))
    } else if e.is_body() || e.is_decode() {
        ProviderError::Connection(format!("the reply was cut: {cause}"))
    } else {
        ProviderError::Connection(cause)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;
    use secrecy::SecretString;

    fn settings(allow_private: bool) -> ClientSettings {
        ClientSettings {
            connect_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(2),
            allow_private,
        }
    }

    fn endpoint(kind: ProviderKind, base_url: Option<&str>) -> Endpoint {
        Endpoint {
            kind,
            base_url: base_url.map(str::to_owned),
            api_key: SecretString::from("sk-test-secret-key"),
        }
    }

    #[test]
    fn urls_per_kind() {
        assert_eq!(
            request_url(&endpoint(ProviderKind::Anthropic, None)),
            "https://api.anthropic.com/v1/messages"
        );
        assert_eq!(
            request_url(&endpoint(ProviderKind::Openai, None)),
            "https://api.openai.com/v1/chat/completions"
        );
        assert_eq!(
            request_url(&endpoint(
                ProviderKind::OpenaiCompatible,
                Some("http://127.0.0.1:8000/v1/")
            )),
            "http://127.0.0.1:8000/v1/chat/completions"
        );
        assert_eq!(
            request_url(&endpoint(
                ProviderKind::Anthropic,
                Some("https://gw.example.com/anthropic")
            )),
            "https://gw.example.com/anthropic/v1/messages"
        );
    }

    #[test]
    fn retry_after_forms() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after_secs(&headers), None);
        headers.insert(RETRY_AFTER, HeaderValue::from_static("17"));
        assert_eq!(retry_after_secs(&headers), Some(17));
        headers.insert(RETRY_AFTER, HeaderValue::from_static("1.2"));
        assert_eq!(retry_after_secs(&headers), Some(2));
        headers.insert(RETRY_AFTER, HeaderValue::from_static("-3"));
        assert_eq!(retry_after_secs(&headers), None);
        headers.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after_secs(&headers), Some(0));
        headers.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after_secs(&headers), None);
    }

    #[test]
    fn error_types_are_short_identifiers_only() {
        assert_eq!(
            error_type(
                br#"{"type":"error","error":{"type":"invalid_request_error","message":"x"}}"#
            ),
            Some("invalid_request_error".into())
        );
        assert_eq!(
            error_type(br#"{"error":{"message":"x","type":null,"code":"model_not_found"}}"#),
            Some("model_not_found".into())
        );
        assert_eq!(
            error_type(br#"{"error":{"type":"<script>alert(1)</script>"}}"#),
            None
        );
        assert_eq!(error_type(b"<html>502</html>"), None);
        assert_eq!(error_type(br#"{"detail":"x"}"#), None);
    }

    #[tokio::test]
    async fn refused_urls_are_forbidden_before_any_connection() {
        let request = ChatRequest {
            model: "m".into(),
            system: None,
            turns: vec![],
            max_tokens: 1,
            temperature: None,
            ..ChatRequest::default()
        };
        let client = LlmClient::new(settings(true)).unwrap();
        for base in [
            "http://169.254.169.254",
            "http://[fe80::1]:8080/v1",
            "https://metadata.google.internal",
        ] {
            let err = client
                .complete(
                    &endpoint(ProviderKind::OpenaiCompatible, Some(base)),
                    &request,
                )
                .await
                .unwrap_err();
            assert!(
                matches!(err, ProviderError::Forbidden(_)),
                "{base}: {err:?}"
            );
        }
        let client = LlmClient::new(settings(false)).unwrap();
        for base in [
            "https://127.0.0.1:1",
            "http://127.0.0.1:1",
            "https://localhost:1",
        ] {
            let err = client
                .stream(&endpoint(ProviderKind::Anthropic, Some(base)), &request)
                .await
                .err();
            assert!(
                matches!(err, Some(ProviderError::Forbidden(_))),
                "{base}: {err:?}"
            );
        }
    }

    #[tokio::test]
    async fn the_resolver_drops_refused_addresses() {
        let refused = GuardedResolver::lookup("localhost".into(), false)
            .await
            .unwrap_err();
        assert!(refused.downcast_ref::<ResolverRefused>().is_some());
        let allowed = GuardedResolver::lookup("localhost".into(), true)
            .await
            .unwrap();
        assert!(allowed.iter().all(|a| a.ip().is_loopback()));
    }

    #[tokio::test]
    async fn a_name_resolving_to_a_refused_address_is_forbidden_at_connect_time() {
        // The URL check would refuse "localhost" first; the transport alone
        // must refuse it too (as it would a public name that now resolves to
        // a private address).
        let client = LlmClient::new(settings(false)).unwrap();
        let err = client
            .http
            .get("http://localhost:9/")
            .send()
            .await
            .unwrap_err();
        let mapped = map_reqwest_error(err);
        assert!(matches!(mapped, ProviderError::Forbidden(_)), "{mapped:?}");
    }

    #[tokio::test]
    async fn connection_refused_is_a_connection_error() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let client = LlmClient::new(settings(true)).unwrap();
        let request = ChatRequest {
            model: "m".into(),
            system: None,
            turns: vec![],
            max_tokens: 1,
            temperature: None,
            ..ChatRequest::default()
        };
        let base = format!("http://127.0.0.1:{port}");
        let err = client
            .complete(&endpoint(ProviderKind::Anthropic, Some(&base)), &request)
            .await
            .unwrap_err();
        assert!(matches!(err, ProviderError::Connection(_)), "{err:?}");
        assert!(!format!("{err:?}{err}").contains("sk-test-secret-key"));
    }

    #[test]
    fn the_key_never_shows_in_debug_output() {
        let client = LlmClient::new(settings(false)).unwrap();
        let e = endpoint(ProviderKind::Openai, None);
        let request = ChatRequest {
            model: "m".into(),
            system: None,
            turns: vec![],
            max_tokens: 1,
            temperature: None,
            ..ChatRequest::default()
        };
        let builder = openai::prepare(
            client.http.post("https://x.example/"),
            &e.api_key,
            Flavour::OpenAi,
            &request,
            true,
        )
        .unwrap();
        assert!(!format!("{builder:?}").contains("sk-test-secret-key"));
        let builder = anthropic::prepare(
            client.http.post("https://x.example/"),
            &e.api_key,
            &request,
            true,
        )
        .unwrap();
        assert!(!format!("{builder:?}").contains("sk-test-secret-key"));
        assert!(!format!("{client:?}").contains("sk-test"));
    }
}
