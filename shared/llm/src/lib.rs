//! The model-provider port: one chat completion, streamed or whole, with the
//! token usage a cost tracker needs. Providers are HTTP in every world, so
//! there is one adapter per wire format (Anthropic Messages, OpenAI chat
//! completions) and no embedded stand-in; tests run them against the fake
//! provider server in `tests/fake-provider`. The same guarded client can
//! also call server tools ([`server_tools`], tested against
//! `tests/tool-server`; an agent's server tools resolve into [`HttpTool`]s,
//! for the agent loop still to come).

pub mod anthropic;
pub mod client;
pub mod net_guard;
pub mod openai;
pub mod server_tools;
pub mod sse;
pub mod tool_calls;
pub mod wire;

pub use client::LlmClient;
pub use server_tools::{HttpTool, ToolAnswer, ToolInvocation};
pub use tool_calls::ToolCallAssembler;

use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use rust_decimal::Decimal;
use secrecy::SecretString;

pub use lambent_core::chat::{
    Image, Part, Role, StopReason, ToolCall, ToolChoice, ToolResult, ToolSpec, Turn, Usage,
};
use lambent_core::provider::ProviderKind;

/// Who speaks which wire format, where, with which key.
#[derive(Clone)]
pub struct Endpoint {
    pub kind: ProviderKind,
    /// The provider's base URL; `None` means the kind's public API
    /// (`https://api.anthropic.com`, `https://api.openai.com/v1`).
    pub base_url: Option<String>,
    pub api_key: SecretString,
}

/// What to ask the model.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChatRequest {
    pub model: String,
    pub system: Option<String>,
    /// Oldest first; the last turn is the user's new message (or the
    /// results of the tools the model called).
    pub turns: Vec<Turn>,
    pub max_tokens: u32,
    pub temperature: Option<Decimal>,
    /// The tools the model may call; none means a plain chat.
    pub tools: Vec<ToolSpec>,
    /// Sent only with tools.
    pub tool_choice: ToolChoice,
    /// `Some(false)`: at most one call per reply (sent only with tools).
    pub parallel_tool_calls: Option<bool>,
    /// Texts that end the reply (Anthropic `stop_sequences`, OpenAI `stop`).
    pub stop_sequences: Vec<String>,
}

/// One piece of a streamed reply, in the order the provider sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chunk {
    /// Text to forward to the client.
    Text(String),
    /// A tool call begins. `index` counts the reply's tool calls from 0, in
    /// order, whatever the provider numbers its blocks by.
    ToolCallStart {
        index: u32,
        id: String,
        name: String,
    },
    /// A piece of the JSON arguments of the call `index`; the pieces of a
    /// call, joined, are its arguments exactly as the provider sent them.
    ToolCallArguments { index: u32, json: String },
    /// The usage as known so far, already merged by the adapter's rules: each
    /// `Usage` chunk replaces the previous one.
    Usage(Usage),
    /// Why the model stopped (`end_turn`, `max_tokens`, `stop`, `length`...).
    Stop(String),
}

/// A reply as a stream of chunks. It ends after the provider's last event;
/// an `Err` item ends it early (nothing follows an error).
pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<Chunk, ProviderError>> + Send>>;

/// A whole reply (`"stream": false`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    pub text: String,
    /// The tools the model called, in order.
    pub tool_calls: Vec<ToolCall>,
    pub usage: Usage,
    pub stop_reason: Option<String>,
}

/// What went wrong with a provider call. The messages are for clients: they
/// say what happened without echoing the provider's body, which could
/// contain anything.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// The provider refused the API key (401/403).
    #[error("the provider refused the API key (HTTP {status})")]
    Unauthorized { status: u16 },
    /// The provider rate limited the call (429).
    #[error("the provider rate limited the call (HTTP 429)")]
    RateLimited { retry_after_secs: Option<u64> },
    /// The provider is overloaded (Anthropic 529, or an `overloaded_error` event).
    #[error("the provider is overloaded")]
    Overloaded,
    /// The provider rejected the request (other 4xx); `detail` is its error type.
    #[error("the provider rejected the request (HTTP {status}: {detail})")]
    Rejected { status: u16, detail: String },
    /// The provider failed (5xx).
    #[error("the provider failed (HTTP {status})")]
    Upstream { status: u16 },
    /// An error event in the middle of a stream; `detail` is its error type.
    #[error("the provider reported an error mid-stream ({detail})")]
    StreamError { detail: String },
    /// No connection, or a connection that broke before the reply ended.
    #[error("the connection to the provider failed")]
    Connection(String),
    /// No byte from the provider within the idle timeout.
    #[error("the provider timed out")]
    Timeout,
    /// The provider sent something that is not its wire format.
    #[error("the provider sent an unreadable reply")]
    Protocol(String),
    /// The endpoint is not allowed (SSRF guard) or not usable.
    #[error("the provider's URL is not allowed: {0}")]
    Forbidden(String),
}

/// Connection settings of the provider HTTP client, from the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientSettings {
    pub connect_timeout: Duration,
    /// Longest silence between two reads of a reply (the first byte included).
    pub idle_timeout: Duration,
    /// Whether loopback and private addresses may be called (local
    /// development and tests); link-local and metadata addresses never.
    pub allow_private: bool,
}

/// A tool conversation both wire formats' tests encode.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;
    use serde_json::json;

    pub fn tool_conversation() -> ChatRequest {
        let call = |id: &str, city: &str| {
            Part::ToolCall(ToolCall {
                id: id.into(),
                name: "weather".into(),
                input: json!({"city": city}),
            })
        };
        let result = |id: &str, content: &str, is_error: bool| {
            Part::ToolResult(ToolResult {
                tool_call_id: id.into(),
                content: content.into(),
                is_error,
            })
        };
        ChatRequest {
            model: "m".into(),
            system: Some("Be brief.".into()),
            turns: vec![
                Turn {
                    role: Role::User,
                    parts: vec![
                        Part::Text("Weather here and there?".into()),
                        Part::Image(Image::Base64 {
                            media_type: "image/png".into(),
                            data: "iVBOR".into(),
                        }),
                        Part::Image(Image::Url("data:image/jpeg;base64,/9j/".into())),
                        Part::Image(Image::Url("https://example.com/map.png".into())),
                    ],
                },
                Turn {
                    role: Role::Assistant,
                    parts: vec![
                        Part::Text("Checking.".into()),
                        call("call_1", "Zürich"),
                        call("call_2", "Oslo"),
                    ],
                },
                Turn {
                    role: Role::User,
                    parts: vec![
                        result("call_1", "12 °C", false),
                        result("call_2", "no station", true),
                    ],
                },
            ],
            max_tokens: 100,
            temperature: None,
            tools: vec![ToolSpec::client(
                "weather",
                Some("Current weather".into()),
                json!({"type": "object", "properties": {"city": {"type": "string"}}}),
            )],
            tool_choice: ToolChoice::Tool("weather".into()),
            parallel_tool_calls: None,
            stop_sequences: Vec::new(),
        }
    }

    /// [`tool_conversation`] whose tool is a server tool (`http`, with a
    /// secret header, and `requires_approval`).
    pub fn server_tool_conversation() -> ChatRequest {
        let mut request = tool_conversation();
        request.tools[0].http = Some(lambent_core::chat::HttpToolSpec {
            url: "https://tools.CANARY.example/weather".into(),
            headers: [(
                "X-Canary-Header".to_owned(),
                "header-CANARY-secret".to_owned(),
            )]
            .into(),
            timeout_ms: Some(5_000),
        });
        request.tools[0].requires_approval = true;
        request
    }

    /// Fails if a provider request body mentions a server tool's settings
    /// (URL, header name or value, approval), or if a tool has a key that
    /// is not the wire format's own.
    pub fn assert_no_server_tool_settings(body: &[u8]) {
        let text = String::from_utf8_lossy(body);
        for canary in [
            "CANARY",
            "X-Canary-Header",
            "requires_approval",
            "timeout_ms",
        ] {
            assert!(
                !text.contains(canary),
                "{canary} reached the provider: {text}"
            );
        }
        let value: serde_json::Value = serde_json::from_slice(body).unwrap();
        let tools = value["tools"].as_array().unwrap();
        assert_eq!(tools.len(), 1);
        let keys = |v: &serde_json::Value| -> Vec<String> {
            v.as_object()
                .map_or(Vec::new(), |o| o.keys().cloned().collect())
        };
        for tool in tools {
            for key in keys(tool).into_iter().chain(keys(&tool["function"])) {
                assert!(
                    [
                        "name",
                        "description",
                        "input_schema",
                        "type",
                        "function",
                        "parameters"
                    ]
                    .contains(&key.as_str()),
                    "{key} reached the provider"
                );
            }
        }
    }
}
