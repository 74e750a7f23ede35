//! The Anthropic Messages wire format (`POST {base}/v1/messages`).
//!
//! Usage arrives in `message_start` (the input side and a first output
//! count), in `message_delta` (the cumulative output count, and on some
//! deployments the input side again), or both; [`StreamDecoder`] keeps a
//! running [`Usage`] where each field takes the latest non-zero value and
//! emits it whenever it changes.

use reqwest::header::{HeaderValue, ACCEPT};
use rust_decimal::Decimal;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::sse::{EventDecoder, SseEvent};
use super::wire::{self, error_detail, malformed_json, merge_usage, role};
use super::{
    ChatRequest, Chunk, Completion, Image, Part, ProviderError, ToolCall, ToolChoice, ToolSpec,
    Usage,
};

/// The API version every request is pinned to.
pub const API_VERSION: &str = "2023-06-01";

#[derive(Serialize)]
struct Body<'a> {
    model: &'a str,
    max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<&'a str>,
    messages: Vec<Message>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "rust_decimal::serde::float_option"
    )]
    temperature: Option<Decimal>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<Value>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop_sequences: &'a [String],
    stream: bool,
}

#[derive(Serialize)]
struct Message {
    role: &'static str,
    /// A string for a turn of text only, else a list of blocks.
    content: Value,
}

/// A part as an Anthropic content block.
fn block(part: &Part) -> Value {
    match part {
        Part::Text(text) => json!({"type": "text", "text": text}),
        Part::Image(image) => json!({"type": "image", "source": image_source(image)}),
        Part::ToolCall(call) => json!({
            "type": "tool_use",
            "id": call.id,
            "name": call.name,
            "input": call.input,
        }),
        Part::ToolResult(result) => {
            let mut block = json!({
                "type": "tool_result",
                "tool_use_id": result.tool_call_id,
                "content": result.content,
            });
            if result.is_error {
                block["is_error"] = Value::Bool(true);
            }
            block
        }
    }
}

/// Anthropic takes inline data as base64 and fetches only http(s) URLs, so
/// a `data:` URL travels as the base64 data it holds.
fn image_source(image: &Image) -> Value {
    match image {
        Image::Base64 { media_type, data } => {
            json!({"type": "base64", "media_type": media_type, "data": data})
        }
        Image::Url(url) => match wire::data_url(url) {
            Some((media_type, data)) => {
                json!({"type": "base64", "media_type": media_type, "data": data})
            }
            None => json!({"type": "url", "url": url}),
        },
    }
}

fn tool(spec: &ToolSpec) -> Value {
    let mut tool = json!({"name": spec.name, "input_schema": spec.input_schema});
    if let Some(description) = &spec.description {
        tool["description"] = Value::String(description.clone());
    }
    tool
}

fn tool_choice(choice: &ToolChoice) -> Value {
    match choice {
        ToolChoice::Auto => json!({"type": "auto"}),
        ToolChoice::Any => json!({"type": "any"}),
        ToolChoice::None => json!({"type": "none"}),
        ToolChoice::Tool(name) => json!({"type": "tool", "name": name}),
    }
}

/// The JSON body of a Messages call.
pub fn request_body(request: &ChatRequest, stream: bool) -> Result<Vec<u8>, ProviderError> {
    let body = Body {
        model: &request.model,
        max_tokens: request.max_tokens,
        system: request.system.as_deref().filter(|s| !s.is_empty()),
        messages: request
            .turns
            .iter()
            .map(|t| Message {
                role: role(t.role),
                content: match t.as_plain_text() {
                    Some(text) => Value::String(text.to_owned()),
                    None => Value::Array(t.parts.iter().map(block).collect()),
                },
            })
            .collect(),
        temperature: request.temperature,
        tools: request.tools.iter().map(tool).collect(),
        tool_choice: (!request.tools.is_empty()).then(|| {
            let mut choice = tool_choice(&request.tool_choice);
            // Anthropic says it the other way round, and not with "none".
            if request.parallel_tool_calls == Some(false) && request.tool_choice != ToolChoice::None
            {
                choice["disable_parallel_tool_use"] = Value::Bool(true);
            }
            choice
        }),
        stop_sequences: &request.stop_sequences,
        stream,
    };
    serde_json::to_vec(&body)
        .map_err(|e| ProviderError::Protocol(format!("could not encode the request: {e}")))
}

/// Adds the body and Anthropic's headers to a request.
pub(crate) fn prepare(
    builder: reqwest::RequestBuilder,
    api_key: &SecretString,
    request: &ChatRequest,
    stream: bool,
) -> Result<reqwest::RequestBuilder, ProviderError> {
    let mut key = HeaderValue::from_str(api_key.expose_secret()).map_err(|_| {
        ProviderError::Forbidden("the API key cannot be sent in an HTTP header".into())
    })?;
    key.set_sensitive(true);
    let accept = if stream {
        "text/event-stream"
    } else {
        "application/json"
    };
    Ok(builder
        .header("x-api-key", key)
        .header("anthropic-version", API_VERSION)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(ACCEPT, accept)
        .body(request_body(request, stream)?))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct WireUsage {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
    cache_creation: Option<CacheCreation>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct CacheCreation {
    ephemeral_5m_input_tokens: Option<u64>,
    ephemeral_1h_input_tokens: Option<u64>,
}

impl WireUsage {
    fn normalise(&self) -> Usage {
        let split = self.cache_creation.as_ref().map(|c| {
            let one_hour = c.ephemeral_1h_input_tokens.unwrap_or(0);
            let five_minutes = c.ephemeral_5m_input_tokens.unwrap_or(0);
            (five_minutes.saturating_add(one_hour), one_hour)
        });
        let (cache_write_tokens, cache_write_1h_tokens) = match split {
            Some((total, one_hour)) if total > 0 => (total, one_hour),
            _ => (self.cache_creation_input_tokens.unwrap_or(0), 0),
        };
        Usage {
            input_tokens: self.input_tokens.unwrap_or(0),
            output_tokens: self.output_tokens.unwrap_or(0),
            cache_read_tokens: self.cache_read_input_tokens.unwrap_or(0),
            cache_write_tokens,
            cache_write_1h_tokens,
        }
    }
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Event {
    MessageStart {
        #[serde(default)]
        message: MessageStart,
    },
    ContentBlockStart {
        #[serde(default)]
        index: u32,
        #[serde(default)]
        content_block: Option<Block>,
    },
    ContentBlockDelta {
        #[serde(default)]
        index: u32,
        delta: Delta,
    },
    MessageDelta {
        #[serde(default)]
        delta: MessageDelta,
        #[serde(default)]
        usage: Option<WireUsage>,
    },
    MessageStop,
    Error {
        #[serde(default)]
        error: serde_json::Value,
    },
    /// `ping`, `content_block_stop` and event types added later.
    #[serde(other)]
    Other,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct MessageStart {
    usage: Option<WireUsage>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct MessageDelta {
    stop_reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block {
    Text {
        #[serde(default)]
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        /// `{}` at the start of a streamed block: the arguments follow as
        /// `input_json_delta`s.
        #[serde(default)]
        input: Value,
    },
    /// Thinking and other blocks carry nothing for the caller.
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Delta {
    #[serde(rename = "text_delta")]
    Text {
        #[serde(default)]
        text: String,
    },
    #[serde(rename = "input_json_delta")]
    InputJson {
        #[serde(default)]
        partial_json: String,
    },
    /// `thinking_delta`, `signature_delta`, ...
    #[serde(other)]
    Other,
}

/// The error an `error` object of Anthropic's stands for.
fn stream_error(error: &serde_json::Value) -> ProviderError {
    let detail = error_detail(error);
    if detail == "overloaded_error" {
        ProviderError::Overloaded
    } else {
        ProviderError::StreamError { detail }
    }
}

fn malformed(e: serde_json::Error) -> ProviderError {
    malformed_json("Anthropic event", &e)
}

/// Reads Anthropic's event stream.
#[derive(Debug, Default)]
pub(crate) struct StreamDecoder {
    usage: Usage,
    stopped: bool,
    /// The tool call each `tool_use` block is, by block index: Anthropic
    /// numbers text and tool blocks together, Lambent numbers tool calls.
    tool_blocks: Vec<(u32, u32)>,
}

impl StreamDecoder {
    pub(crate) fn new() -> StreamDecoder {
        StreamDecoder::default()
    }

    fn tool_call_of(&self, block: u32) -> Option<u32> {
        self.tool_blocks
            .iter()
            .find(|(b, _)| *b == block)
            .map(|(_, call)| *call)
    }

    fn usage_chunk(&mut self, wire: Option<&WireUsage>, out: &mut Vec<Chunk>) {
        if let Some(wire) = wire {
            if merge_usage(&mut self.usage, &wire.normalise()) {
                out.push(Chunk::Usage(self.usage));
            }
        }
    }
}

impl EventDecoder for StreamDecoder {
    fn on_event(&mut self, event: SseEvent) -> Result<Vec<Chunk>, ProviderError> {
        let parsed: Event = serde_json::from_str(&event.data).map_err(malformed)?;
        let mut out = Vec::new();
        match parsed {
            Event::MessageStart { message } => {
                self.usage_chunk(message.usage.as_ref(), &mut out);
            }
            Event::ContentBlockStart {
                content_block: Some(Block::Text { text }),
                ..
            } if !text.is_empty() => out.push(Chunk::Text(text)),
            Event::ContentBlockStart {
                index,
                content_block: Some(Block::ToolUse { id, name, input }),
            } => {
                let call = self.tool_blocks.len() as u32;
                self.tool_blocks.push((index, call));
                out.push(Chunk::ToolCallStart {
                    index: call,
                    id,
                    name,
                });
                // Streamed blocks start empty; a proxy that sends the whole
                // input at once is read as one piece.
                if input.as_object().is_some_and(|o| !o.is_empty()) {
                    out.push(Chunk::ToolCallArguments {
                        index: call,
                        json: input.to_string(),
                    });
                }
            }
            Event::ContentBlockDelta {
                delta: Delta::Text { text },
                ..
            } if !text.is_empty() => out.push(Chunk::Text(text)),
            // Arguments for a block that is not a tool call carry nothing
            // for the caller, like a thinking delta.
            Event::ContentBlockDelta {
                index,
                delta: Delta::InputJson { partial_json },
            } if !partial_json.is_empty() => {
                if let Some(call) = self.tool_call_of(index) {
                    out.push(Chunk::ToolCallArguments {
                        index: call,
                        json: partial_json,
                    });
                }
            }
            Event::MessageDelta { delta, usage } => {
                self.usage_chunk(usage.as_ref(), &mut out);
                if let Some(reason) = delta.stop_reason {
                    out.push(Chunk::Stop(reason));
                }
            }
            Event::MessageStop => self.stopped = true,
            Event::Error { error } => return Err(stream_error(&error)),
            Event::ContentBlockStart { .. } | Event::ContentBlockDelta { .. } | Event::Other => {}
        }
        Ok(out)
    }

    fn finished(&self) -> bool {
        self.stopped
    }
}

#[derive(Deserialize)]
struct WireMessage {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    content: Vec<Block>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    error: serde_json::Value,
}

/// Reads a whole (non-streamed) message object.
pub fn parse_completion(body: &[u8]) -> Result<Completion, ProviderError> {
    let message: WireMessage =
        serde_json::from_slice(body).map_err(|e| malformed_json("Anthropic message", &e))?;
    if message.kind.as_deref() == Some("error") {
        return Err(stream_error(&message.error));
    }
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for block in message.content {
        match block {
            Block::Text { text: piece } => text.push_str(&piece),
            Block::ToolUse { id, name, input } => tool_calls.push(ToolCall { id, name, input }),
            Block::Other => {}
        }
    }
    Ok(Completion {
        text,
        tool_calls,
        usage: message
            .usage
            .as_ref()
            .map(WireUsage::normalise)
            .unwrap_or_default(),
        stop_reason: message.stop_reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sse::tests::parse_bytewise;
    use lambent_core::chat::{Role, Turn};

    /// Runs an event stream, fed byte by byte, through the decoder.
    fn decode(input: &str) -> (Vec<Result<Chunk, ProviderError>>, bool) {
        let mut decoder = StreamDecoder::new();
        let mut out = Vec::new();
        for event in parse_bytewise(input.as_bytes()).unwrap() {
            match decoder.on_event(event) {
                Ok(chunks) => out.extend(chunks.into_iter().map(Ok)),
                Err(e) => {
                    out.push(Err(e));
                    break;
                }
            }
        }
        (out, decoder.finished())
    }

    fn last_usage(chunks: &[Result<Chunk, ProviderError>]) -> Option<Usage> {
        chunks.iter().rev().find_map(|c| match c {
            Ok(Chunk::Usage(u)) => Some(*u),
            _ => None,
        })
    }

    fn texts(chunks: &[Result<Chunk, ProviderError>]) -> String {
        chunks
            .iter()
            .filter_map(|c| match c {
                Ok(Chunk::Text(t)) => Some(t.as_str()),
                _ => None,
            })
            .collect()
    }

    const START_FULL: &str = r#"event: message_start
data: {"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"m","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":25,"cache_creation_input_tokens":40,"cache_read_input_tokens":300,"cache_creation":{"ephemeral_5m_input_tokens":30,"ephemeral_1h_input_tokens":10},"output_tokens":1}}}

"#;

    const BODY: &str = r#"event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

event: ping
data: {"type": "ping"}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{\"a\":"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"hmm"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":", world"}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

"#;

    const STOP: &str = "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";

    #[test]
    fn usage_in_message_start_and_delta() {
        let input = format!(
            "{START_FULL}{BODY}event: message_delta\ndata: {{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":\"end_turn\",\"stop_sequence\":null}},\"usage\":{{\"output_tokens\":15}}}}\n\n{STOP}"
        );
        let (chunks, finished) = decode(&input);
        assert!(finished);
        assert_eq!(texts(&chunks), "Hello, world");
        assert_eq!(
            last_usage(&chunks),
            Some(Usage {
                input_tokens: 25,
                output_tokens: 15,
                cache_read_tokens: 300,
                cache_write_tokens: 40,
                cache_write_1h_tokens: 10,
            })
        );
        assert!(chunks.contains(&Ok(Chunk::Stop("end_turn".into()))));
        // The first usage chunk comes from message_start.
        assert_eq!(
            chunks.first(),
            Some(&Ok(Chunk::Usage(Usage {
                input_tokens: 25,
                output_tokens: 1,
                cache_read_tokens: 300,
                cache_write_tokens: 40,
                cache_write_1h_tokens: 10,
            })))
        );
    }

    #[test]
    fn usage_only_in_message_delta() {
        let input = format!(
            "event: message_start\ndata: {{\"type\":\"message_start\",\"message\":{{\"id\":\"m\",\"content\":[]}}}}\n\n{BODY}event: message_delta\ndata: {{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":\"max_tokens\"}},\"usage\":{{\"input_tokens\":7,\"output_tokens\":9,\"cache_read_input_tokens\":3,\"cache_creation_input_tokens\":5}}}}\n\n{STOP}"
        );
        let (chunks, finished) = decode(&input);
        assert!(finished);
        assert_eq!(
            last_usage(&chunks),
            Some(Usage {
                input_tokens: 7,
                output_tokens: 9,
                cache_read_tokens: 3,
                cache_write_tokens: 5,
                cache_write_1h_tokens: 0,
            })
        );
        let usage_chunks = chunks
            .iter()
            .filter(|c| matches!(c, Ok(Chunk::Usage(_))))
            .count();
        assert_eq!(usage_chunks, 1);
    }

    #[test]
    fn usage_only_in_message_start_with_zero_delta_values() {
        // A message_delta whose usage repeats zeros must not erase the counts.
        let input = format!(
            "{START_FULL}{BODY}event: message_delta\ndata: {{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":\"end_turn\"}},\"usage\":{{\"input_tokens\":0,\"output_tokens\":0,\"cache_read_input_tokens\":null}}}}\n\n{STOP}"
        );
        let (chunks, _) = decode(&input);
        assert_eq!(
            last_usage(&chunks),
            Some(Usage {
                input_tokens: 25,
                output_tokens: 1,
                cache_read_tokens: 300,
                cache_write_tokens: 40,
                cache_write_1h_tokens: 10,
            })
        );
        let usage_chunks = chunks
            .iter()
            .filter(|c| matches!(c, Ok(Chunk::Usage(_))))
            .count();
        assert_eq!(usage_chunks, 1, "unchanged usage is not repeated");
    }

    #[test]
    fn cache_creation_without_split_counts_as_five_minute_writes() {
        let input = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":1,\"cache_creation_input_tokens\":12,\"output_tokens\":0}}}\n\n";
        let (chunks, finished) = decode(input);
        assert!(!finished);
        assert_eq!(
            last_usage(&chunks),
            Some(Usage {
                input_tokens: 1,
                output_tokens: 0,
                cache_read_tokens: 0,
                cache_write_tokens: 12,
                cache_write_1h_tokens: 0,
            })
        );
    }

    #[test]
    fn error_events() {
        let (chunks, finished) = decode(&format!(
            "{START_FULL}event: error\ndata: {{\"type\":\"error\",\"error\":{{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}}}\n\n"
        ));
        assert!(!finished);
        assert_eq!(chunks.last(), Some(&Err(ProviderError::Overloaded)));

        let (chunks, _) = decode(
            "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"secret stuff\"}}\n\n",
        );
        assert_eq!(
            chunks.last(),
            Some(&Err(ProviderError::StreamError {
                detail: "api_error".into()
            }))
        );
    }

    #[test]
    fn malformed_json_is_a_protocol_error_and_unknown_events_are_ignored() {
        let (chunks, _) = decode("event: content_block_delta\ndata: {not json\n\n");
        assert!(matches!(
            chunks.last(),
            Some(Err(ProviderError::Protocol(_)))
        ));
        let (chunks, _) = decode("event: future\ndata: {\"type\":\"future_event\",\"x\":1}\n\n");
        assert!(chunks.is_empty());
    }

    #[test]
    fn request_body_shape() {
        let request = ChatRequest {
            model: "claude-x".into(),
            system: Some("be brief".into()),
            turns: vec![
                Turn::text(Role::User, "hi"),
                Turn::text(Role::Assistant, "hello"),
                Turn::text(Role::User, "more"),
            ],
            max_tokens: 256,
            temperature: Some(Decimal::new(7, 1)),
            ..ChatRequest::default()
        };
        let body: serde_json::Value =
            serde_json::from_slice(&request_body(&request, true).unwrap()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "model": "claude-x",
                "max_tokens": 256,
                "system": "be brief",
                "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": "hello"},
                    {"role": "user", "content": "more"}
                ],
                "temperature": 0.7,
                "stream": true
            })
        );
        let bare = ChatRequest {
            system: None,
            temperature: None,
            ..request
        };
        let body: serde_json::Value =
            serde_json::from_slice(&request_body(&bare, false).unwrap()).unwrap();
        assert!(body.get("system").is_none());
        assert!(body.get("temperature").is_none());
        assert_eq!(body["stream"], false);
    }

    #[test]
    fn whole_message() {
        let body = br#"{"id":"msg_1","type":"message","role":"assistant","model":"m",
            "content":[{"type":"thinking","thinking":"x"},{"type":"text","text":"Hello"},{"type":"tool_use","id":"t","name":"n","input":{}},{"type":"text","text":" there"}],
            "stop_reason":"end_turn","stop_sequence":null,
            "usage":{"input_tokens":10,"output_tokens":20,"cache_read_input_tokens":30,"cache_creation_input_tokens":40,
                     "cache_creation":{"ephemeral_5m_input_tokens":15,"ephemeral_1h_input_tokens":25}}}"#;
        assert_eq!(
            parse_completion(body).unwrap(),
            Completion {
                text: "Hello there".into(),
                tool_calls: vec![ToolCall {
                    id: "t".into(),
                    name: "n".into(),
                    input: json!({}),
                }],
                usage: Usage {
                    input_tokens: 10,
                    output_tokens: 20,
                    cache_read_tokens: 30,
                    cache_write_tokens: 40,
                    cache_write_1h_tokens: 25,
                },
                stop_reason: Some("end_turn".into()),
            }
        );
        assert!(matches!(
            parse_completion(b"<html>"),
            Err(ProviderError::Protocol(_))
        ));
        assert_eq!(
            parse_completion(br#"{"type":"error","error":{"type":"overloaded_error"}}"#),
            Err(ProviderError::Overloaded)
        );
    }

    #[test]
    fn a_server_tools_settings_never_reach_the_provider() {
        let server = crate::fixtures::server_tool_conversation();
        for stream in [false, true] {
            let body = request_body(&server, stream).unwrap();
            crate::fixtures::assert_no_server_tool_settings(&body);
            // The tool goes out exactly as a client tool would.
            let client = request_body(&crate::fixtures::tool_conversation(), stream).unwrap();
            assert_eq!(body, client);
        }
    }

    #[test]
    fn a_tool_conversation_is_sent_as_blocks() {
        let body = request_body(&crate::fixtures::tool_conversation(), true).unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            body,
            json!({
                "model": "m",
                "max_tokens": 100,
                "system": "Be brief.",
                "messages": [
                    {"role": "user", "content": [
                        {"type": "text", "text": "Weather here and there?"},
                        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}},
                        {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/"}},
                        {"type": "image", "source": {"type": "url", "url": "https://example.com/map.png"}},
                    ]},
                    {"role": "assistant", "content": [
                        {"type": "text", "text": "Checking."},
                        {"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Zürich"}},
                        {"type": "tool_use", "id": "call_2", "name": "weather", "input": {"city": "Oslo"}},
                    ]},
                    {"role": "user", "content": [
                        {"type": "tool_result", "tool_use_id": "call_1", "content": "12 °C"},
                        {"type": "tool_result", "tool_use_id": "call_2", "content": "no station", "is_error": true},
                    ]},
                ],
                "tools": [{"name": "weather", "description": "Current weather",
                           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
                "tool_choice": {"type": "tool", "name": "weather"},
                "stream": true,
            })
        );
        // Without tools, no tool fields at all.
        let plain = ChatRequest {
            tools: Vec::new(),
            ..crate::fixtures::tool_conversation()
        };
        let body: Value = serde_json::from_slice(&request_body(&plain, false).unwrap()).unwrap();
        assert!(body.get("tools").is_none() && body.get("tool_choice").is_none());
    }

    #[test]
    fn streamed_tool_calls_are_numbered_in_order_and_their_pieces_kept() {
        let input = r#"event: message_start
data: {"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"m","stop_reason":null,"usage":{"input_tokens":50,"output_tokens":1}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Checking."}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: content_block_start
data: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_1","name":"weather","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"ci"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"ty\": \"Z\u00fcr"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"ich\"}"}}

event: content_block_stop
data: {"type":"content_block_stop","index":1}

event: content_block_start
data: {"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"toolu_2","name":"time","input":{}}}

event: content_block_stop
data: {"type":"content_block_stop","index":2}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":30}}

event: message_stop
data: {"type":"message_stop"}

"#;
        let (chunks, finished) = decode(input);
        assert!(finished, "{chunks:?}");
        let chunks: Vec<Chunk> = chunks.into_iter().map(Result::unwrap).collect();
        let tools: Vec<&Chunk> = chunks
            .iter()
            .filter(|c| {
                matches!(
                    c,
                    Chunk::ToolCallStart { .. } | Chunk::ToolCallArguments { .. }
                )
            })
            .collect();
        assert_eq!(
            tools,
            [
                &Chunk::ToolCallStart {
                    index: 0,
                    id: "toolu_1".into(),
                    name: "weather".into()
                },
                &Chunk::ToolCallArguments {
                    index: 0,
                    json: "{\"ci".into()
                },
                &Chunk::ToolCallArguments {
                    index: 0,
                    json: "ty\": \"Zür".into()
                },
                &Chunk::ToolCallArguments {
                    index: 0,
                    json: "ich\"}".into()
                },
                &Chunk::ToolCallStart {
                    index: 1,
                    id: "toolu_2".into(),
                    name: "time".into()
                },
            ]
        );
        let mut calls = crate::ToolCallAssembler::default();
        chunks.iter().for_each(|c| calls.push(c));
        let calls = calls.finish();
        assert_eq!(calls[0].input, json!({"city": "Zürich"}));
        assert_eq!(calls[1].input, json!({}));
        assert_eq!(chunks.last(), Some(&Chunk::Stop("tool_use".into())));
    }
}
