//! `POST /v1/messages`: the Anthropic Messages API in front of any agent,
//! whatever its provider speaks. Requests become the pipeline's turns and
//! replies come back as Anthropic's message object or its event stream;
//! errors take Anthropic's shape.

use axum::extract::State as Extract;
use axum::http::StatusCode;
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use axum::Json;
use lambent_app::chat::{self, Prepared, Settled};
use lambent_core::chat::{check_tools, ImageSource};
use lambent_http::error::{ApiError, ApiResult};
use lambent_http::{Body, Caller};
use lambent_llm::{
    Chunk, Image, Part, Role, ToolCall, ToolChoice, ToolResult, ToolSpec, Turn, Usage,
};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::events::Wire;
use crate::{bad, Chat};

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MessagesRequest {
    /// One of your agents (`agt_...`), or `<provider name>/<catalog model>`.
    model: String,
    /// 1 to 200000.
    max_tokens: u64,
    /// `user` and `assistant` messages: a string, or `text`, `image`,
    /// `tool_use` and `tool_result` blocks.
    #[schema(value_type = Vec<Object>)]
    messages: Vec<InMessage>,
    /// A string or text blocks; follows the agent's own system prompt.
    #[schema(value_type = Option<Object>)]
    system: Option<InContent>,
    /// Client tools the model may call; they replace the agent's.
    tools: Option<Vec<ClientTool>>,
    /// `{"type": "auto" | "any" | "none" | "tool", "name"?, "disable_parallel_tool_use"?}`.
    #[schema(value_type = Option<Object>)]
    tool_choice: Option<InToolChoice>,
    #[schema(value_type = Option<f64>)]
    temperature: Option<serde_json::Number>,
    stop_sequences: Option<Vec<String>>,
    #[serde(default)]
    stream: bool,
    /// Accepted and ignored (Anthropic's end-user tag).
    #[schema(value_type = Option<Object>)]
    #[allow(dead_code)]
    metadata: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InMessage {
    role: String,
    content: InContent,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum InContent {
    Text(String),
    Blocks(Vec<InBlock>),
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum InBlock {
    Text {
        text: String,
        #[allow(dead_code)]
        cache_control: Option<Value>,
    },
    Image {
        source: ImageSource,
        #[allow(dead_code)]
        cache_control: Option<Value>,
    },
    ToolUse {
        id: String,
        name: String,
        input: Value,
    },
    ToolResult {
        tool_use_id: String,
        content: Option<InContent>,
        #[serde(default)]
        is_error: bool,
    },
}

/// A client tool, as Anthropic's format has it.
// Server tools (`http`) are an agent's alone: a request cannot name one, so
// it is refused here as an unknown field.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientTool {
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    name: String,
    description: Option<String>,
    /// A JSON Schema object for the arguments (`"type": "object"`).
    #[schema(value_type = Object)]
    input_schema: Value,
}

impl From<ClientTool> for ToolSpec {
    fn from(tool: ClientTool) -> ToolSpec {
        ToolSpec::client(tool.name, tool.description, tool.input_schema)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InToolChoice {
    #[serde(rename = "type")]
    kind: String,
    name: Option<String>,
    disable_parallel_tool_use: Option<bool>,
}

fn text_of(content: InContent) -> String {
    match content {
        InContent::Text(text) => text,
        InContent::Blocks(blocks) => blocks
            .into_iter()
            .filter_map(|b| match b {
                InBlock::Text { text, .. } => Some(text),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

fn turns_of(messages: Vec<InMessage>) -> ApiResult<Vec<Turn>> {
    let mut turns = Vec::with_capacity(messages.len());
    for (i, message) in messages.into_iter().enumerate() {
        let role = match message.role.as_str() {
            "user" => Role::User,
            "assistant" => Role::Assistant,
            other => {
                return Err(bad(format!(
                    "messages[{i}].role: {other:?} is not user or assistant"
                )))
            }
        };
        let blocks = match message.content {
            InContent::Text(text) => vec![InBlock::Text {
                text,
                cache_control: None,
            }],
            InContent::Blocks(blocks) => blocks,
        };
        let mut parts = Vec::with_capacity(blocks.len());
        for (j, block) in blocks.into_iter().enumerate() {
            let part = match (block, role) {
                (InBlock::Text { text, .. }, _) => Part::Text(text),
                (InBlock::Image { source, .. }, Role::User) => match source {
                    ImageSource::Base64 { media_type, data } => {
                        Part::Image(Image::Base64 { media_type, data })
                    }
                    ImageSource::Url { url } => Part::Image(Image::Url(url)),
                },
                (InBlock::ToolUse { id, name, input }, Role::Assistant) => {
                    Part::ToolCall(ToolCall { id, name, input })
                }
                (
                    InBlock::ToolResult {
                        tool_use_id,
                        content,
                        is_error,
                    },
                    Role::User,
                ) => Part::ToolResult(ToolResult {
                    tool_call_id: tool_use_id,
                    content: content.map(text_of).unwrap_or_default(),
                    is_error,
                }),
                _ => {
                    return Err(bad(format!(
                        "messages[{i}].content[{j}]: this block is not allowed in a {} message",
                        message.role
                    )))
                }
            };
            parts.push(part);
        }
        turns.push(Turn { role, parts });
    }
    if turns.first().is_none_or(|t| t.role != Role::User) {
        return Err(bad("messages: the first message must be the user's".into()));
    }
    Ok(turns)
}

fn tool_choice_of(choice: &InToolChoice) -> ApiResult<ToolChoice> {
    match (choice.kind.as_str(), &choice.name) {
        ("auto", _) => Ok(ToolChoice::Auto),
        ("any", _) => Ok(ToolChoice::Any),
        ("none", _) => Ok(ToolChoice::None),
        ("tool", Some(name)) => Ok(ToolChoice::Tool(name.clone())),
        ("tool", None) => Err(bad("tool_choice.name: needed with type tool".into())),
        (other, _) => Err(bad(format!(
            "tool_choice.type: {other:?} is not auto, any, none or tool"
        ))),
    }
}

/// Create a message, Anthropic-style: whole, or streamed as Anthropic's
/// events (`"stream": true`). Works whatever the agent's provider kind;
/// errors are `{"type": "error", "error": {"type", "message"}}`.
#[utoipa::path(post, path = "/v1/messages", tag = "chat",
    request_body = MessagesRequest,
    responses(
        (status = 200, description = "a `message` object, or Anthropic's server-sent events",
            content(
                (Object = "application/json"),
                (String = "text/event-stream"),
            )),
        (status = 400, description = "`invalid_request_error`", body = AnthropicError),
        (status = 401, description = "`authentication_error`", body = AnthropicError),
        (status = 403, description = "`permission_error`", body = AnthropicError),
        (status = 404, description = "`not_found_error`", body = AnthropicError),
        (status = 409, description = "`invalid_request_error`: a concurrent change", body = AnthropicError),
        (status = 413, description = "`request_too_large`", body = AnthropicError),
        (status = 415, description = "`invalid_request_error`: the body is not JSON", body = AnthropicError),
        (status = 429, description = "`rate_limit_error`: rate limited, or a spending limit", body = AnthropicError),
        (status = 502, description = "`api_error`: the provider failed", body = AnthropicError),
        (status = 503, description = "`overloaded_error`: a dependency is unavailable", body = AnthropicError),
        (status = 504, description = "`api_error`: the provider did not answer in time", body = AnthropicError),
    ))]
pub async fn create_message(
    Extract(chat): Extract<Chat>,
    principal: Caller,
    Body(body): Body<MessagesRequest>,
) -> ApiResult<Response> {
    if !(1..=200_000).contains(&body.max_tokens) {
        return Err(bad("max_tokens: must be 1 to 200000".into()));
    }
    let turns = turns_of(body.messages)?;
    let mut target = crate::target(&chat, &principal.user_id, &body.model).await?;
    if let Some(system) = body.system.map(text_of).filter(|s| !s.is_empty()) {
        target.add_system(system);
    }
    target.max_tokens = body.max_tokens as u32;
    if let Some(t) = &body.temperature {
        target.temperature = Some(lambent_core::validate::temperature(t)?);
    }
    if let Some(tools) = body.tools {
        target.set_tools(tools.into_iter().map(ToolSpec::from).collect());
        target.tool_choice = ToolChoice::Auto;
    }
    if let Some(choice) = &body.tool_choice {
        target.tool_choice = tool_choice_of(choice)?;
        target.parallel_tool_calls = choice.disable_parallel_tool_use.map(|d| !d);
    }
    check_tools(target.tools(), &target.tool_choice)?;
    target.stop_sequences = body.stop_sequences.unwrap_or_default();
    let state = &chat.state;
    let prepare = chat::prepare_call(state, &principal.user_id, target, turns);
    let (call, slot) =
        crate::prepare_with_slot(state, &principal.user_id, body.stream, prepare).await?;
    let Some(slot) = slot else {
        let settled = chat::complete(state, &chat.llm, &call).await?;
        return Ok(Json(message(&call, &settled)).into_response());
    };
    let started = chat::start(state, &chat.llm, &call).await?;
    Ok(crate::events::stream_reply(
        state.clone(),
        call,
        started,
        AnthropicEvents::default(),
        slot,
    ))
}

fn message_id(call: &Prepared) -> String {
    format!("msg_{}", call.reply_id())
}

/// Usage as Anthropic reports it: input excludes the cache.
fn usage_of(usage: &Usage) -> Value {
    json!({
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cache_read_input_tokens": usage.cache_read_tokens,
        "cache_creation_input_tokens": usage.cache_write_tokens,
    })
}

fn message(call: &Prepared, settled: &Settled) -> Value {
    let mut content = Vec::new();
    if !settled.text.is_empty() {
        content.push(json!({"type": "text", "text": settled.text}));
    }
    for call in &settled.tool_calls {
        content.push(
            json!({"type": "tool_use", "id": call.id, "name": call.name, "input": call.input}),
        );
    }
    json!({
        "id": message_id(call),
        "type": "message",
        "role": "assistant",
        "model": call.model,
        "content": content,
        "stop_reason": settled.stop_reason,
        "stop_sequence": null,
        "usage": usage_of(&settled.usage),
    })
}

/// Anthropic's error shape.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct AnthropicError {
    /// Always `error`.
    #[serde(rename = "type")]
    kind: String,
    error: AnthropicErrorDetail,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct AnthropicErrorDetail {
    /// `invalid_request_error`, `authentication_error`, `permission_error`,
    /// `not_found_error`, `request_too_large`, `rate_limit_error`,
    /// `api_error` or `overloaded_error`.
    #[serde(rename = "type")]
    kind: String,
    message: String,
}

/// Gives every error of `/v1/messages` Anthropic's shape, whoever answered
/// it (the key check and the rate limit before the handler, or the
/// handler): Anthropic's SDKs read errors in that shape only.
pub async fn anthropic_errors(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let ours = request.uri().path() == "/v1/messages";
    let response = next.run(request).await;
    if !ours || response.status().is_success() {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 64 * 1024).await else {
        return (
            parts.status,
            Json(anthropic_error(parts.status, "the request failed")),
        )
            .into_response();
    };
    let message = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "the request failed".to_owned());
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    let body = Json(anthropic_error(parts.status, &message))
        .into_response()
        .into_body();
    parts.headers.insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, body)
}

fn anthropic_error(status: StatusCode, message: &str) -> Value {
    json!({"type": "error", "error": {"type": error_type(status), "message": message}})
}

/// Anthropic's error type for each of Lambent's refusals.
fn error_type(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST | StatusCode::UNSUPPORTED_MEDIA_TYPE | StatusCode::CONFLICT => {
            "invalid_request_error"
        }
        StatusCode::UNAUTHORIZED => "authentication_error",
        StatusCode::FORBIDDEN => "permission_error",
        StatusCode::NOT_FOUND => "not_found_error",
        StatusCode::PAYLOAD_TOO_LARGE => "request_too_large",
        StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
        StatusCode::SERVICE_UNAVAILABLE => "overloaded_error",
        _ => "api_error",
    }
}

fn error_body(e: &ApiError) -> Value {
    anthropic_error(e.status(), &e.public_message())
}

/// Anthropic's events: `message_start`, `ping`, content blocks (text, and
/// tool_use with `input_json_delta`s), `message_delta`, `message_stop`.
#[derive(Default)]
struct AnthropicEvents {
    /// The index of the next block, and whether the open one is text.
    next_block: usize,
    open: Option<bool>,
    /// The tool call each tool_use block is, to place argument pieces.
    tool_blocks: Vec<usize>,
}

impl AnthropicEvents {
    fn event(name: &str, data: Value) -> Event {
        Event::default().event(name).data(data.to_string())
    }

    fn close(&mut self, out: &mut Vec<Event>) {
        if self.open.take().is_some() {
            out.push(Self::event(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": self.next_block - 1}),
            ));
        }
    }

    fn open(&mut self, block: Value, text: bool, out: &mut Vec<Event>) -> usize {
        self.close(out);
        let index = self.next_block;
        self.next_block += 1;
        self.open = Some(text);
        out.push(Self::event(
            "content_block_start",
            json!({"type": "content_block_start", "index": index, "content_block": block}),
        ));
        index
    }
}

impl Wire for AnthropicEvents {
    fn start(&mut self, call: &Prepared) -> Vec<Event> {
        vec![
            Self::event(
                "message_start",
                json!({"type": "message_start", "message": {
                    "id": message_id(call), "type": "message", "role": "assistant",
                    "model": call.model, "content": [], "stop_reason": null, "stop_sequence": null,
                    "usage": usage_of(&Usage::default()),
                }}),
            ),
            Self::event("ping", json!({"type": "ping"})),
        ]
    }

    fn text(&mut self, piece: &str) -> Vec<Event> {
        let mut out = Vec::new();
        let index = match self.open {
            Some(true) => self.next_block - 1,
            _ => self.open(json!({"type": "text", "text": ""}), true, &mut out),
        };
        out.push(Self::event(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": index,
                   "delta": {"type": "text_delta", "text": piece}}),
        ));
        out
    }

    fn tool_piece(&mut self, chunk: &Chunk) -> Vec<Event> {
        let mut out = Vec::new();
        match chunk {
            Chunk::ToolCallStart { id, name, .. } => {
                let index = self.open(
                    json!({"type": "tool_use", "id": id, "name": name, "input": {}}),
                    false,
                    &mut out,
                );
                self.tool_blocks.push(index);
            }
            Chunk::ToolCallArguments { index, json } => {
                if let Some(block) = self.tool_blocks.get(*index as usize) {
                    out.push(Self::event(
                        "content_block_delta",
                        json!({"type": "content_block_delta", "index": block,
                               "delta": {"type": "input_json_delta", "partial_json": json}}),
                    ));
                }
            }
            Chunk::Text(_) | Chunk::Usage(_) | Chunk::Stop(_) => {}
        }
        out
    }

    fn end(&mut self, settled: &Settled) -> Vec<Event> {
        let mut out = Vec::new();
        self.close(&mut out);
        out.push(Self::event(
            "message_delta",
            json!({"type": "message_delta",
                   "delta": {"stop_reason": settled.stop_reason, "stop_sequence": null},
                   "usage": usage_of(&settled.usage)}),
        ));
        out.push(Self::event("message_stop", json!({"type": "message_stop"})));
        out
    }

    fn error(&mut self, error: &ApiError, _request_id: &str) -> Vec<Event> {
        vec![Self::event("error", error_body(error))]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(tool: Value) -> Result<MessagesRequest, serde_json::Error> {
        serde_json::from_value(json!({
            "model": "agt_x",
            "max_tokens": 10,
            "messages": [{"role": "user", "content": "hi"}],
            "tools": [tool],
        }))
    }

    #[test]
    fn a_request_cannot_name_a_server_tool() {
        let tool = json!({"name": "t", "description": "d", "input_schema": {"type": "object"}});
        let parsed = request(tool.clone()).unwrap();
        let spec = ToolSpec::from(parsed.tools.unwrap().remove(0));
        assert_eq!((spec.http, spec.requires_approval), (None, false));
        for extra in [
            json!({"http": {"url": "https://tools.example/t"}}),
            json!({"requires_approval": false}),
        ] {
            let mut smuggled = tool.clone();
            smuggled
                .as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            assert!(request(smuggled).is_err(), "{extra}");
        }
    }
}
