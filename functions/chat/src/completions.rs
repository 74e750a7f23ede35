//! `POST /v1/chat/completions`: OpenAI's chat completions API, so any
//! OpenAI SDK can use Lambent. `model` names one of the caller's agents
//! (`agt_...`) or `<provider name>/<model>`; costs and budgets apply as to
//! any call, and each call is counted under a call marker (it belongs to no
//! session).

use axum::extract::State as Extract;
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use axum::Json;
use lambent_app::chat::{self, Prepared, Settled};
use lambent_core::chat::check_tools;
use lambent_http::error::{ApiError, ApiResult};
use lambent_http::Body;
use lambent_http::Caller;
use lambent_llm::{Chunk, Image, Role, ToolCall, ToolChoice, ToolResult, ToolSpec, Turn, Usage};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::events::Wire;
use crate::{bad, Chat};

const MAX_TOKENS: std::ops::RangeInclusive<u64> = 1..=200_000;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompletionRequest {
    /// One of your agents (`agt_...`), or `<provider name>/<catalog model>`.
    #[schema(example = "my-openai/gpt-4o-mini")]
    model: String,
    /// The conversation: `system`/`developer`, `user` and `assistant` messages,
    /// with text content (a string or text parts).
    #[schema(value_type = Vec<Object>)]
    messages: Vec<InputMessage>,
    #[serde(default)]
    stream: bool,
    #[schema(value_type = Option<Object>)]
    stream_options: Option<StreamOptions>,
    /// Overrides the agent's `max_tokens` (default 1024 without an agent).
    max_tokens: Option<u64>,
    /// The same as `max_tokens`, by its newer name.
    max_completion_tokens: Option<u64>,
    /// 0 to 2.
    #[schema(value_type = Option<f64>)]
    temperature: Option<serde_json::Number>,
    /// Only 1 is supported.
    n: Option<u32>,
    /// Accepted and ignored, as an end-user tag.
    user: Option<String>,
    /// Functions the model may call (`type: "function"`); they replace the
    /// agent's tools for this call.
    #[schema(value_type = Option<Vec<Object>>)]
    tools: Option<Vec<InputTool>>,
    /// `"auto"`, `"none"`, `"required"` or `{"type": "function", "function": {"name"}}`.
    #[schema(value_type = Option<Object>)]
    tool_choice: Option<Value>,
    /// Whether the model may call several tools at once.
    parallel_tool_calls: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InputTool {
    #[serde(rename = "type")]
    kind: String,
    function: InputFunction,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InputFunction {
    name: String,
    description: Option<String>,
    parameters: Option<Value>,
    /// Accepted; schemas are passed on as they are.
    #[allow(dead_code)]
    strict: Option<bool>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

/// The tools of a request as Lambent's.
fn tool_specs(tools: Vec<InputTool>) -> ApiResult<Vec<ToolSpec>> {
    // As OpenAI: an empty list is a mistake, not "no tools".
    if tools.is_empty() {
        return Err(bad(
            "tools: must not be empty (leave it out for none)".into()
        ));
    }
    tools
        .into_iter()
        .enumerate()
        .map(|(i, tool)| {
            if tool.kind != "function" {
                return Err(bad(format!(
                    "tools[{i}].type: only \"function\" is supported"
                )));
            }
            // A client tool: this format has no way to name a server tool.
            Ok(ToolSpec::client(
                tool.function.name,
                tool.function.description,
                tool.function
                    .parameters
                    .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
            ))
        })
        .collect()
}

/// OpenAI's tool choice as Lambent's.
fn tool_choice_of(choice: &Value) -> ApiResult<ToolChoice> {
    match choice {
        Value::String(s) if s == "auto" => Ok(ToolChoice::Auto),
        Value::String(s) if s == "none" => Ok(ToolChoice::None),
        Value::String(s) if s == "required" => Ok(ToolChoice::Any),
        value => match value["function"]["name"].as_str() {
            Some(name) if value["type"] == "function" => Ok(ToolChoice::Tool(name.to_owned())),
            _ => Err(bad(
                "tool_choice: expected \"auto\", \"none\", \"required\" or \
                 {\"type\": \"function\", \"function\": {\"name\"}}"
                    .into(),
            )),
        },
    }
}

#[derive(Deserialize)]
struct InputMessage {
    role: String,
    content: Option<Content>,
    #[allow(dead_code)]
    name: Option<String>,
    /// Assistant messages: the calls the model made.
    tool_calls: Option<Vec<InputToolCall>>,
    /// Tool messages: the call this answers.
    tool_call_id: Option<String>,
}

#[derive(Deserialize)]
struct InputToolCall {
    id: String,
    function: InputCalled,
}

#[derive(Deserialize)]
struct InputCalled {
    name: String,
    #[serde(default)]
    arguments: String,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Deserialize)]
struct Part {
    #[serde(rename = "type")]
    kind: String,
    text: Option<String>,
    image_url: Option<ImageUrl>,
}

#[derive(Deserialize)]
struct ImageUrl {
    url: String,
    /// Accepted; only OpenAI models read it.
    #[allow(dead_code)]
    detail: Option<String>,
}

/// A message's content as parts: text and images (https or data URLs).
fn parts_of(index: usize, content: Option<Content>) -> ApiResult<Vec<ContentPiece>> {
    match content {
        None => Ok(Vec::new()),
        Some(Content::Text(text)) => Ok(vec![ContentPiece::Text(text)]),
        Some(Content::Parts(parts)) => parts
            .into_iter()
            .enumerate()
            .map(|(p, part)| match (part.kind.as_str(), part.text, part.image_url) {
                ("text", Some(text), _) => Ok(ContentPiece::Text(text)),
                ("image_url", _, Some(image))
                    if image.url.starts_with("https://") || image.url.starts_with("data:image/") =>
                {
                    Ok(ContentPiece::Image(Image::Url(image.url)))
                }
                ("image_url", _, _) => Err(bad(format!(
                    "messages[{index}].content[{p}].image_url.url: must be an https or a data:image URL"
                ))),
                (kind, _, _) => Err(bad(format!(
                    "messages[{index}].content[{p}].type: {kind:?} is not text or image_url"
                ))),
            })
            .collect(),
    }
}

enum ContentPiece {
    Text(String),
    Image(Image),
}

impl From<ContentPiece> for lambent_llm::Part {
    fn from(piece: ContentPiece) -> Self {
        match piece {
            ContentPiece::Text(text) => lambent_llm::Part::Text(text),
            ContentPiece::Image(image) => lambent_llm::Part::Image(image),
        }
    }
}

fn text_only(pieces: Vec<ContentPiece>) -> String {
    pieces
        .into_iter()
        .filter_map(|p| match p {
            ContentPiece::Text(text) => Some(text),
            ContentPiece::Image(_) => None,
        })
        .collect()
}

/// The system prompt and the turns of a request. Consecutive `tool`
/// messages become one user turn of results, as Anthropic needs them.
fn conversation(messages: Vec<InputMessage>) -> ApiResult<(Option<String>, Vec<Turn>)> {
    let mut system = Vec::new();
    let mut turns: Vec<Turn> = Vec::new();
    for (index, message) in messages.into_iter().enumerate() {
        let pieces = parts_of(index, message.content)?;
        match message.role.as_str() {
            "system" | "developer" => system.push(text_only(pieces)),
            "user" => turns.push(Turn {
                role: Role::User,
                parts: pieces.into_iter().map(Into::into).collect(),
            }),
            "assistant" => {
                let mut parts: Vec<lambent_llm::Part> = Vec::new();
                let text = text_only(pieces);
                if !text.is_empty() {
                    parts.push(lambent_llm::Part::Text(text));
                }
                for call in message.tool_calls.into_iter().flatten() {
                    parts.push(lambent_llm::Part::ToolCall(ToolCall {
                        id: call.id,
                        name: call.function.name,
                        input: lambent_llm::wire::arguments(&call.function.arguments),
                    }));
                }
                turns.push(Turn {
                    role: Role::Assistant,
                    parts,
                });
            }
            "tool" => {
                let Some(tool_call_id) = message.tool_call_id else {
                    return Err(bad(format!(
                        "messages[{index}].tool_call_id: a tool message needs the call it answers"
                    )));
                };
                let result = lambent_llm::Part::ToolResult(ToolResult {
                    tool_call_id,
                    content: text_only(pieces),
                    is_error: false,
                });
                match turns.last_mut() {
                    Some(last)
                        if last.role == Role::User
                            && last
                                .parts
                                .iter()
                                .all(|p| matches!(p, lambent_llm::Part::ToolResult(_))) =>
                    {
                        last.parts.push(result)
                    }
                    _ => turns.push(Turn {
                        role: Role::User,
                        parts: vec![result],
                    }),
                }
            }
            other => {
                return Err(bad(format!(
                    "messages[{index}].role: {other:?} is not system, developer, user, assistant or tool"
                )))
            }
        }
    }
    if !turns.iter().any(|t| t.role == Role::User) {
        return Err(bad("messages: at least one user message is needed".into()));
    }
    let system = (!system.is_empty()).then(|| system.join("\n\n"));
    Ok((system, turns))
}

/// Create a chat completion, OpenAI-style, streamed (`"stream": true`, with
/// `stream_options.include_usage` for a final usage chunk) or not. The usage
/// carries Lambent's `cost_usd` as well.
#[utoipa::path(post, path = "/v1/chat/completions", tag = "chat",
    request_body = CompletionRequest,
    responses(
        (status = 200, description = "a `chat.completion` object, or `chat.completion.chunk` server-sent events ending with `data: [DONE]`",
            content(
                (Object = "application/json"),
                (String = "text/event-stream"),
            )),
        (status = 429, description = "rate limited, or `budget_exceeded`"),
        (status = 502, description = "the provider failed"),
        (status = 504, description = "the provider did not answer in time"),
    ))]
pub async fn create_completion(
    Extract(chat): Extract<Chat>,
    principal: Caller,
    Body(body): Body<CompletionRequest>,
) -> ApiResult<Response> {
    if body.n.is_some_and(|n| n != 1) {
        return Err(bad("n: only 1 is supported".into()));
    }
    let _ = body.user;
    let (system, turns) = conversation(body.messages)?;
    let mut target = crate::target(&chat, &principal.user_id, &body.model).await?;
    if let Some(extra) = system {
        target.add_system(extra);
    }
    if let Some(max) = body.max_completion_tokens.or(body.max_tokens) {
        if !MAX_TOKENS.contains(&max) {
            return Err(bad("max_tokens: must be 1 to 200000".into()));
        }
        target.max_tokens = max as u32;
    }
    if let Some(t) = &body.temperature {
        target.temperature = Some(lambent_core::validate::temperature(t)?);
    }
    if let Some(tools) = body.tools {
        target.set_tools(tool_specs(tools)?);
        target.tool_choice = ToolChoice::Auto;
    }
    if let Some(choice) = &body.tool_choice {
        target.tool_choice = tool_choice_of(choice)?;
    }
    check_tools(target.tools(), &target.tool_choice)?;
    target.parallel_tool_calls = body.parallel_tool_calls;
    let state = &chat.state;
    let prepare = chat::prepare_call(state, &principal.user_id, target, turns);
    let (call, slot) =
        crate::prepare_with_slot(state, &principal.user_id, body.stream, prepare).await?;
    let created = lambent_core::time::now_epoch_secs();
    let Some(slot) = slot else {
        let settled = chat::complete(state, &chat.llm, &call).await?;
        return Ok(Json(completion(&call, &settled, created)).into_response());
    };
    let started = chat::start(state, &chat.llm, &call).await?;
    let wire = OpenAiChunks {
        id: completion_id(&call),
        model: call.model.clone(),
        created,
        include_usage: body.stream_options.is_some_and(|o| o.include_usage),
    };
    Ok(crate::events::stream_reply(
        state.clone(),
        call,
        started,
        wire,
        slot,
    ))
}

fn completion_id(call: &Prepared) -> String {
    format!("chatcmpl-{}", call.reply_id())
}

/// OpenAI's finish reasons from any provider's stop reason.
fn finish_reason(stop: Option<&str>) -> &'static str {
    match stop {
        Some("max_tokens" | "length") => "length",
        Some("content_filter" | "refusal") => "content_filter",
        Some("tool_use" | "tool_calls") => "tool_calls",
        _ => "stop",
    }
}

/// Usage the way OpenAI reports it: prompt tokens include cached ones.
fn openai_usage(usage: &Usage, cost_usd: Decimal) -> Value {
    let prompt = usage.input_tokens + usage.cache_read_tokens + usage.cache_write_tokens;
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": usage.output_tokens,
        "total_tokens": prompt + usage.output_tokens,
        "prompt_tokens_details": { "cached_tokens": usage.cache_read_tokens },
        "cost_usd": cost_usd.to_string(),
    })
}

fn completion(call: &Prepared, settled: &Settled, created: i64) -> Value {
    let mut message = json!({ "role": "assistant", "content": settled.text });
    if !settled.tool_calls.is_empty() {
        if settled.text.is_empty() {
            message["content"] = Value::Null;
        }
        message["tool_calls"] = settled
            .tool_calls
            .iter()
            .map(|call| {
                json!({
                    "id": call.id,
                    "type": "function",
                    "function": { "name": call.name, "arguments": call.input.to_string() },
                })
            })
            .collect();
    }
    json!({
        "id": completion_id(call),
        "object": "chat.completion",
        "created": created,
        "model": call.model,
        "choices": [{
            "index": 0,
            "message": message,
            "finish_reason": finish_reason(settled.stop_reason.as_deref()),
        }],
        "usage": openai_usage(&settled.usage, settled.cost_usd),
    })
}

/// `chat.completion.chunk` events, then `[DONE]`.
struct OpenAiChunks {
    id: String,
    model: String,
    created: i64,
    include_usage: bool,
}

impl OpenAiChunks {
    fn chunk(&self, choices: Value, usage: Option<Value>) -> Event {
        let mut chunk = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        });
        if let Some(usage) = usage {
            chunk["usage"] = usage;
        }
        Event::default().data(chunk.to_string())
    }
}

impl Wire for OpenAiChunks {
    fn start(&mut self, _: &Prepared) -> Vec<Event> {
        vec![self.chunk(
            json!([{ "index": 0, "delta": { "role": "assistant", "content": "" }, "finish_reason": null }]),
            None,
        )]
    }

    fn text(&mut self, piece: &str) -> Vec<Event> {
        vec![self.chunk(
            json!([{ "index": 0, "delta": { "content": piece }, "finish_reason": null }]),
            None,
        )]
    }

    fn tool_piece(&mut self, chunk: &Chunk) -> Vec<Event> {
        let fragment = match chunk {
            Chunk::ToolCallStart { index, id, name } => json!({
                "index": index,
                "id": id,
                "type": "function",
                "function": { "name": name, "arguments": "" },
            }),
            Chunk::ToolCallArguments { index, json } => json!({
                "index": index,
                "function": { "arguments": json },
            }),
            Chunk::Text(_) | Chunk::Usage(_) | Chunk::Stop(_) => return Vec::new(),
        };
        vec![self.chunk(
            json!([{ "index": 0, "delta": { "tool_calls": [fragment] }, "finish_reason": null }]),
            None,
        )]
    }

    fn end(&mut self, settled: &Settled) -> Vec<Event> {
        let reason = finish_reason(settled.stop_reason.as_deref());
        let mut events = vec![self.chunk(
            json!([{ "index": 0, "delta": {}, "finish_reason": reason }]),
            None,
        )];
        if self.include_usage {
            events.push(self.chunk(
                json!([]),
                Some(openai_usage(&settled.usage, settled.cost_usd)),
            ));
        }
        events.push(Event::default().data("[DONE]"));
        events
    }

    fn error(&mut self, error: &ApiError, request_id: &str) -> Vec<Event> {
        vec![Event::default().data(
            json!({ "error": {
                "message": error.public_message(),
                "type": error.code(),
                "code": error.code(),
                "param": null,
                "request_id": request_id,
            }})
            .to_string(),
        )]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_cannot_name_a_server_tool() {
        let tool = json!({"type": "function", "function": {"name": "t", "parameters": {"type": "object"}}});
        let parsed: InputTool = serde_json::from_value(tool.clone()).unwrap();
        let spec = tool_specs(vec![parsed]).unwrap().remove(0);
        assert_eq!((spec.http, spec.requires_approval), (None, false));
        let mut inside = tool.clone();
        inside["function"]["http"] = json!({"url": "https://tools.example/t"});
        let mut beside = tool;
        beside["http"] = json!({"url": "https://tools.example/t"});
        for smuggled in [inside, beside] {
            assert!(
                serde_json::from_value::<InputTool>(smuggled.clone()).is_err(),
                "{smuggled}"
            );
        }
    }
}
