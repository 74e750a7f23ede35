//! The provider clients (`lambent_llm::LlmClient`) against the fake provider
//! server over real HTTP: both wire formats, streamed and whole, every usage
//! shape, the HTTP and mid-stream errors, cut and silent streams, and the
//! SSRF guard.

use std::time::{Duration, Instant};

use futures::StreamExt;
use lambent_core::provider::ProviderKind;
use lambent_fake_provider::{FakeProvider, FakeUsage, FinalChunk, Reply, UsageAt};
use lambent_llm::{
    ChatRequest, Chunk, ChunkStream, ClientSettings, Endpoint, LlmClient, ProviderError, Role,
    Turn, Usage,
};
use rust_decimal::Decimal;

const KEY: &str = "sk-fake-LLMCLIENT-0123456789abcdef";
const IDLE: Duration = Duration::from_millis(300);

/// The guarded client as tests use it (the server-tool tests too).
pub(crate) fn client(allow_private: bool) -> LlmClient {
    LlmClient::new(ClientSettings {
        connect_timeout: Duration::from_secs(2),
        idle_timeout: IDLE,
        allow_private,
    })
    .unwrap()
}

fn endpoint(kind: ProviderKind, base_url: String) -> Endpoint {
    Endpoint {
        kind,
        base_url: Some(base_url),
        api_key: KEY.into(),
    }
}

fn anthropic(fake: &FakeProvider) -> Endpoint {
    endpoint(ProviderKind::Anthropic, fake.anthropic_base_url())
}

fn openai(fake: &FakeProvider) -> Endpoint {
    endpoint(ProviderKind::Openai, fake.openai_base_url())
}

fn compatible(fake: &FakeProvider) -> Endpoint {
    // A trailing slash on the configured base URL is tolerated.
    endpoint(
        ProviderKind::OpenaiCompatible,
        format!("{}/", fake.openai_base_url()),
    )
}

/// Every endpoint shape the fake provider serves.
fn all_endpoints(fake: &FakeProvider) -> Vec<Endpoint> {
    vec![anthropic(fake), openai(fake), compatible(fake)]
}

fn request() -> ChatRequest {
    ChatRequest {
        model: "test-model-1".into(),
        system: Some("You are terse.".into()),
        turns: vec![
            Turn::text(Role::User, "Hello?"),
            Turn::text(Role::Assistant, "Hi."),
            Turn::text(Role::User, "Tell me more."),
        ],
        max_tokens: 321,
        temperature: Some(Decimal::new(5, 1)),
        ..ChatRequest::default()
    }
}

/// Collects a whole stream; a stream that does not end in 10 s is a hang.
async fn collect(stream: ChunkStream) -> Vec<Result<Chunk, ProviderError>> {
    tokio::time::timeout(Duration::from_secs(10), stream.collect::<Vec<_>>())
        .await
        .expect("the stream hung")
}

async fn stream_all(client: &LlmClient, endpoint: &Endpoint) -> Vec<Result<Chunk, ProviderError>> {
    let stream = client.stream(endpoint, &request()).await.unwrap();
    collect(stream).await
}

fn texts(items: &[Result<Chunk, ProviderError>]) -> Vec<String> {
    items
        .iter()
        .filter_map(|i| match i {
            Ok(Chunk::Text(t)) => Some(t.clone()),
            _ => None,
        })
        .collect()
}

fn last_usage(items: &[Result<Chunk, ProviderError>]) -> Option<Usage> {
    items.iter().rev().find_map(|i| match i {
        Ok(Chunk::Usage(u)) => Some(*u),
        _ => None,
    })
}

fn stop(items: &[Result<Chunk, ProviderError>]) -> Option<String> {
    items.iter().find_map(|i| match i {
        Ok(Chunk::Stop(s)) => Some(s.clone()),
        _ => None,
    })
}

fn errors(items: &[Result<Chunk, ProviderError>]) -> Vec<ProviderError> {
    items
        .iter()
        .filter_map(|i| i.as_ref().err().cloned())
        .collect()
}

/// The normalised usage a `FakeUsage` stands for, in either format.
fn expected(u: FakeUsage, anthropic: bool) -> Usage {
    Usage {
        input_tokens: u.input,
        output_tokens: u.output,
        cache_read_tokens: u.cache_read,
        cache_write_tokens: if anthropic { u.cache_write() } else { 0 },
        cache_write_1h_tokens: if anthropic { u.cache_write_1h } else { 0 },
    }
}

fn is_anthropic(e: &Endpoint) -> bool {
    e.kind == ProviderKind::Anthropic
}

const USAGE: FakeUsage = FakeUsage {
    input: 1234,
    output: 56,
    cache_read: 7890,
    cache_write_5m: 300,
    cache_write_1h: 45,
};

#[tokio::test]
async fn streams_text_in_order_and_ends_cleanly_in_both_formats() {
    let fake = FakeProvider::start().await.unwrap();
    let client = client(true);
    for ep in all_endpoints(&fake) {
        fake.push(Reply::chunks(["Once ", "upon ", "a ", "time", "."]).stop_reason("max_tokens"));
        let items = stream_all(&client, &ep).await;
        assert!(errors(&items).is_empty(), "{:?}: {items:?}", ep.kind);
        assert_eq!(texts(&items), ["Once ", "upon ", "a ", "time", "."]);
        let expected_stop = if is_anthropic(&ep) {
            "max_tokens"
        } else {
            "length"
        };
        assert_eq!(stop(&items).as_deref(), Some(expected_stop));
    }
}

#[tokio::test]
async fn a_long_stream_arrives_whole() {
    let fake = FakeProvider::start().await.unwrap();
    let client = client(true);
    for ep in all_endpoints(&fake) {
        fake.push(Reply::repeated("abc\u{e9}", 2000));
        let items = stream_all(&client, &ep).await;
        assert!(errors(&items).is_empty());
        assert_eq!(texts(&items).concat(), "abc\u{e9}".repeat(2000));
    }
}

#[tokio::test]
async fn anthropic_usage_is_exact_wherever_the_stream_reports_it() {
    let fake = FakeProvider::start().await.unwrap();
    let client = client(true);
    let ep = anthropic(&fake);
    for at in [UsageAt::Start, UsageAt::Delta, UsageAt::Both] {
        fake.push(
            Reply::text("Some words here")
                .usage(USAGE)
                .anthropic_usage_in(at),
        );
        let items = stream_all(&client, &ep).await;
        assert!(errors(&items).is_empty(), "{at:?}: {items:?}");
        assert_eq!(
            last_usage(&items),
            Some(expected(USAGE, true)),
            "{at:?}: {items:?}"
        );
    }
    // Without cache activity.
    let plain = FakeUsage {
        input: 9,
        output: 4,
        ..FakeUsage::default()
    };
    fake.push(
        Reply::text("x")
            .usage(plain)
            .anthropic_usage_in(UsageAt::Delta),
    );
    let items = stream_all(&client, &ep).await;
    assert_eq!(last_usage(&items), Some(expected(plain, true)));
}

#[tokio::test]
async fn openai_usage_is_exact_whatever_the_final_chunk_looks_like() {
    let fake = FakeProvider::start().await.unwrap();
    let client = client(true);
    for ep in [openai(&fake), compatible(&fake)] {
        for shape in [
            FinalChunk::EmptyChoices,
            FinalChunk::NullChoices,
            FinalChunk::WithChoices,
        ] {
            fake.push(
                Reply::chunks(["alpha ", "beta"])
                    .usage(USAGE)
                    .openai_usage_chunk(shape),
            );
            let items = stream_all(&client, &ep).await;
            assert!(errors(&items).is_empty(), "{shape:?}: {items:?}");
            assert_eq!(texts(&items), ["alpha ", "beta"], "{shape:?}");
            assert_eq!(stop(&items).as_deref(), Some("stop"), "{shape:?}");
            assert_eq!(
                last_usage(&items),
                Some(expected(USAGE, false)),
                "{shape:?}: {items:?}"
            );
        }
        fake.push(
            Reply::text("no usage")
                .usage(USAGE)
                .openai_usage_chunk(FinalChunk::Absent),
        );
        let items = stream_all(&client, &ep).await;
        assert!(errors(&items).is_empty());
        assert_eq!(last_usage(&items), None);
    }
}

#[tokio::test]
async fn whole_completions_in_both_formats() {
    let fake = FakeProvider::start().await.unwrap();
    let client = client(true);
    for ep in all_endpoints(&fake) {
        fake.push(
            Reply::text("The whole answer.")
                .usage(USAGE)
                .stop_reason("end_turn"),
        );
        let completion = client.complete(&ep, &request()).await.unwrap();
        assert_eq!(completion.text, "The whole answer.");
        assert_eq!(completion.usage, expected(USAGE, is_anthropic(&ep)));
        let expected_stop = if is_anthropic(&ep) {
            "end_turn"
        } else {
            "stop"
        };
        assert_eq!(completion.stop_reason.as_deref(), Some(expected_stop));
        let recorded = fake.requests().pop().unwrap();
        assert_eq!(recorded.body["stream"], false);
        assert!(recorded.body.get("stream_options").is_none());
    }
}

#[tokio::test]
async fn the_provider_receives_the_request_as_its_api_defines_it() {
    let fake = FakeProvider::start().await.unwrap();
    fake.set_api_key(Some(KEY));
    let client = client(true);

    let _ = stream_all(&client, &anthropic(&fake)).await;
    let seen = fake.requests().pop().unwrap();
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.path, "/v1/messages");
    assert_eq!(seen.header("x-api-key"), Some(KEY));
    assert_eq!(seen.header("authorization"), None);
    assert_eq!(seen.header("anthropic-version"), Some("2023-06-01"));
    assert!(seen
        .header("content-type")
        .is_some_and(|v| v.starts_with("application/json")));
    assert!(seen
        .header("user-agent")
        .is_some_and(|v| v.starts_with("lambent/")));
    assert_eq!(
        seen.body,
        serde_json::json!({
            "model": "test-model-1",
            "max_tokens": 321,
            "system": "You are terse.",
            "messages": [
                {"role": "user", "content": "Hello?"},
                {"role": "assistant", "content": "Hi."},
                {"role": "user", "content": "Tell me more."}
            ],
            "temperature": 0.5,
            "stream": true
        })
    );

    let messages = serde_json::json!([
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hello?"},
        {"role": "assistant", "content": "Hi."},
        {"role": "user", "content": "Tell me more."}
    ]);
    let _ = stream_all(&client, &openai(&fake)).await;
    let seen = fake.requests().pop().unwrap();
    assert_eq!(seen.path, "/v1/chat/completions");
    assert_eq!(
        seen.header("authorization"),
        Some(&*format!("Bearer {KEY}"))
    );
    assert_eq!(seen.header("x-api-key"), None);
    assert_eq!(
        seen.body,
        serde_json::json!({
            "model": "test-model-1",
            "messages": messages,
            "max_completion_tokens": 321,
            "temperature": 0.5,
            "stream": true,
            "stream_options": {"include_usage": true}
        })
    );

    let _ = stream_all(&client, &compatible(&fake)).await;
    let seen = fake.requests().pop().unwrap();
    assert_eq!(seen.path, "/v1/chat/completions");
    assert_eq!(seen.body["max_tokens"], 321);
    assert!(seen.body.get("max_completion_tokens").is_none());
    assert_eq!(seen.body["messages"], messages);
}

#[tokio::test]
async fn http_errors_map_to_provider_errors() {
    let fake = FakeProvider::start().await.unwrap();
    let client = client(true);
    for ep in all_endpoints(&fake) {
        let cases = [
            (
                Reply::http_error(401, "authentication_error", "invalid x-api-key"),
                ProviderError::Unauthorized { status: 401 },
            ),
            (
                Reply::http_error(403, "permission_error", "no"),
                ProviderError::Unauthorized { status: 403 },
            ),
            (
                Reply::http_error(429, "rate_limit_error", "slow down").retry_after(7),
                ProviderError::RateLimited {
                    retry_after_secs: Some(7),
                },
            ),
            (
                Reply::http_error(500, "api_error", "boom"),
                ProviderError::Upstream { status: 500 },
            ),
            (
                Reply::http_error(529, "overloaded_error", "Overloaded"),
                ProviderError::Overloaded,
            ),
            (
                Reply::http_error(400, "invalid_request_error", "bad model <secret>"),
                ProviderError::Rejected {
                    status: 400,
                    detail: "invalid_request_error".into(),
                },
            ),
        ];
        for (reply, want) in cases {
            fake.push(reply.clone());
            let got = client.stream(&ep, &request()).await.err();
            assert_eq!(got.as_ref(), Some(&want), "{:?} stream", ep.kind);
            fake.push(reply);
            let got = client.complete(&ep, &request()).await.err();
            assert_eq!(got.as_ref(), Some(&want), "{:?} complete", ep.kind);
        }
    }
    // Anthropic's overloaded_error means overloaded whatever the status.
    fake.push(Reply::http_error(503, "overloaded_error", "Overloaded"));
    let got = client.stream(&anthropic(&fake), &request()).await.err();
    assert_eq!(got, Some(ProviderError::Overloaded));
}

#[tokio::test]
async fn a_wrong_key_is_unauthorized_and_never_echoed() {
    let fake = FakeProvider::start().await.unwrap();
    fake.set_api_key(Some("sk-the-right-one"));
    let client = client(true);
    for ep in all_endpoints(&fake) {
        let err = client.stream(&ep, &request()).await.err().unwrap();
        assert_eq!(err, ProviderError::Unauthorized { status: 401 });
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains(KEY) && !shown.contains("cdef"), "{shown}");
    }
}

#[tokio::test]
async fn a_mid_stream_error_event_ends_the_stream_with_an_error() {
    let fake = FakeProvider::start().await.unwrap();
    let client = client(true);
    for ep in all_endpoints(&fake) {
        fake.push(Reply::chunks(["one ", "two ", "three"]).error_after(2, "api_error"));
        let items = stream_all(&client, &ep).await;
        assert_eq!(texts(&items), ["one ", "two "]);
        let detail = if is_anthropic(&ep) {
            "api_error"
        } else {
            "server_error"
        };
        assert_eq!(
            items.last(),
            Some(&Err(ProviderError::StreamError {
                detail: detail.into()
            })),
            "{:?}: {items:?}",
            ep.kind
        );
        assert_eq!(errors(&items).len(), 1);
    }
    fake.push(Reply::chunks(["one ", "two"]).error_after(1, "overloaded_error"));
    let items = stream_all(&client, &anthropic(&fake)).await;
    assert_eq!(texts(&items), ["one "]);
    assert_eq!(items.last(), Some(&Err(ProviderError::Overloaded)));
}

#[tokio::test]
async fn a_cut_stream_ends_with_a_connection_error() {
    let fake = FakeProvider::start().await.unwrap();
    let client = client(true);
    for ep in all_endpoints(&fake) {
        fake.push(
            Reply::chunks(["a", "b", "c", "d"])
                .usage(USAGE)
                .cut_after(2),
        );
        let items = stream_all(&client, &ep).await;
        assert_eq!(texts(&items), ["a", "b"], "{:?}: {items:?}", ep.kind);
        assert!(
            matches!(items.last(), Some(Err(ProviderError::Connection(_)))),
            "{:?}: {items:?}",
            ep.kind
        );
        assert_eq!(errors(&items).len(), 1);

        fake.push(Reply::text("a whole reply, cut").cut_after(1));
        let err = client.complete(&ep, &request()).await.err();
        assert!(
            matches!(err, Some(ProviderError::Connection(_))),
            "{:?}: {err:?}",
            ep.kind
        );
    }
}

#[tokio::test]
async fn a_silent_provider_times_out_within_the_idle_timeout() {
    let fake = FakeProvider::start().await.unwrap();
    let client = client(true);
    // Well below the providers' 3 s silences, with room for a loaded machine.
    let bound = IDLE + Duration::from_millis(1200);
    for ep in all_endpoints(&fake) {
        // No response head at all.
        fake.push(Reply::text("never").hang());
        let started = Instant::now();
        let err = client.stream(&ep, &request()).await.err();
        assert_eq!(err, Some(ProviderError::Timeout), "{:?}", ep.kind);
        assert!(started.elapsed() < bound, "{:?}", started.elapsed());

        fake.push(Reply::text("never").hang());
        let started = Instant::now();
        let err = client.complete(&ep, &request()).await.err();
        assert_eq!(err, Some(ProviderError::Timeout), "{:?}", ep.kind);
        assert!(started.elapsed() < bound, "{:?}", started.elapsed());

        // Headers only after a long silence.
        fake.push(Reply::text("late").first_byte_delay(Duration::from_secs(3)));
        let started = Instant::now();
        let err = client.stream(&ep, &request()).await.err();
        assert_eq!(err, Some(ProviderError::Timeout), "{:?}", ep.kind);
        assert!(started.elapsed() < bound, "{:?}", started.elapsed());

        // A stream that goes silent in the middle.
        fake.push(Reply::chunks(["first", "second"]).chunk_delay(Duration::from_secs(3)));
        let started = Instant::now();
        let items = stream_all(&client, &ep).await;
        assert_eq!(texts(&items), ["first"], "{:?}: {items:?}", ep.kind);
        assert_eq!(items.last(), Some(&Err(ProviderError::Timeout)));
        assert!(started.elapsed() < bound, "{:?}", started.elapsed());
    }
}

#[tokio::test]
async fn slow_but_steady_streams_do_not_time_out() {
    let fake = FakeProvider::start().await.unwrap();
    let client = client(true);
    for ep in all_endpoints(&fake) {
        // Each gap is below the idle timeout; the whole reply is well above it.
        fake.push(
            Reply::chunks(["a", "b", "c", "d", "e", "f"])
                .first_byte_delay(IDLE / 2)
                .chunk_delay(IDLE / 3),
        );
        let items = stream_all(&client, &ep).await;
        assert!(errors(&items).is_empty(), "{:?}: {items:?}", ep.kind);
        assert_eq!(texts(&items).concat(), "abcdef");
    }
}

#[tokio::test]
async fn link_local_and_metadata_addresses_are_always_forbidden() {
    let client = client(true);
    for kind in [
        ProviderKind::Anthropic,
        ProviderKind::Openai,
        ProviderKind::OpenaiCompatible,
    ] {
        for base in [
            "http://169.254.169.254",
            "http://169.254.169.254/latest/meta-data",
            "http://[fd00:ec2::254]/v1",
        ] {
            let ep = endpoint(kind, base.to_owned());
            let started = Instant::now();
            let err = client.stream(&ep, &request()).await.err();
            assert!(
                matches!(err, Some(ProviderError::Forbidden(_))),
                "{base}: {err:?}"
            );
            let err = client.complete(&ep, &request()).await.err();
            assert!(
                matches!(err, Some(ProviderError::Forbidden(_))),
                "{base}: {err:?}"
            );
            // Refused before any connection attempt.
            assert!(started.elapsed() < Duration::from_secs(1));
        }
    }
}

#[tokio::test]
async fn private_addresses_need_allow_private() {
    let fake = FakeProvider::start().await.unwrap();
    let strict = client(false);
    for ep in all_endpoints(&fake) {
        let err = strict.stream(&ep, &request()).await.err();
        assert!(
            matches!(err, Some(ProviderError::Forbidden(_))),
            "{:?}: {err:?}",
            ep.kind
        );
        let err = strict.complete(&ep, &request()).await.err();
        assert!(matches!(err, Some(ProviderError::Forbidden(_))));
    }
    // A name for a loopback address is refused too.
    let by_name = endpoint(
        ProviderKind::Anthropic,
        format!("http://localhost:{}", fake.addr().port()),
    );
    let err = strict.stream(&by_name, &request()).await.err();
    assert!(matches!(err, Some(ProviderError::Forbidden(_))), "{err:?}");
    assert!(
        fake.requests().is_empty(),
        "no request may reach the provider"
    );

    // The same endpoints work where private addresses are allowed.
    let lenient = client(true);
    let items = stream_all(&lenient, &by_name).await;
    assert!(errors(&items).is_empty(), "{items:?}");
    assert_eq!(fake.requests().len(), 1);
}

#[tokio::test]
async fn a_refused_connection_is_a_connection_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let client = client(true);
    let ep = endpoint(ProviderKind::Anthropic, format!("http://127.0.0.1:{port}"));
    let err = client.stream(&ep, &request()).await.err();
    assert!(matches!(err, Some(ProviderError::Connection(_))), "{err:?}");
}

#[tokio::test]
async fn one_client_serves_concurrent_streams() {
    let fake = FakeProvider::start().await.unwrap();
    let client = client(true);
    let ep = openai(&fake);
    fake.set_default(Reply::chunks(["x", "y", "z"]).chunk_delay(Duration::from_millis(20)));
    let runs = (0..8).map(|_| {
        let client = client.clone();
        let ep = ep.clone();
        async move { stream_all(&client, &ep).await }
    });
    for items in futures::future::join_all(runs).await {
        assert!(errors(&items).is_empty(), "{items:?}");
        assert_eq!(texts(&items).concat(), "xyz");
    }
}
