//! The OpenAI chat completions wire format (`POST {base}/chat/completions`),
//! spoken by OpenAI and by every OpenAI-compatible server.
//!
//! Streams end with `data: [DONE]`. With `stream_options.include_usage` the
//! usage arrives in a chunk of its own before it, whose `choices` is `[]` by
//! the specification, but `null` or a real choice on some compatible servers:
//! all three are read. `prompt_tokens` includes the cached tokens, so the
//! normalised `input_tokens` is `prompt_tokens - cached_tokens`.

use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION};
use rust_decimal::Decimal;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::sse::{EventDecoder, SseEvent};
use super::wire::{arguments, error_detail, malformed_json, merge_usage, role};
use super::{
    ChatRequest, Chunk, Completion, Image, Part, ProviderError, Role, ToolCall, ToolChoice,
    ToolSpec, Turn, Usage,
};

/// How the output limit is named: OpenAI's current name, or the older one
/// that compatible servers understand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// api.openai.com: `max_completion_tokens`.
    OpenAi,
    /// Any compatible server: `max_tokens`.
    Compatible,
}

#[derive(Serialize)]
struct Body<'a> {
    model: &'a str,
    messages: Vec<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_completion_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "rust_decimal::serde::float_option"
    )]
    temperature: Option<Decimal>,
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parallel_tool_calls: Option<bool>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop: &'a [String],
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

/// A turn as chat completions messages: a user turn's tool results become
/// one `role: "tool"` message each, before whatever else the turn says.
fn messages_of(turn: &Turn, out: &mut Vec<Value>) {
    if let Some(text) = turn.as_plain_text() {
        out.push(json!({"role": role(turn.role), "content": text}));
        return;
    }
    let mut content = Vec::new();
    let mut tool_calls = Vec::new();
    for part in &turn.parts {
        match part {
            Part::Text(text) => content.push(json!({"type": "text", "text": text})),
            Part::Image(image) => content.push(json!({
                "type": "image_url",
                "image_url": {"url": image_url(image)},
            })),
            Part::ToolCall(call) => tool_calls.push(json!({
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.input.to_string()},
            })),
            Part::ToolResult(result) => out.push(json!({
                "role": "tool",
                "tool_call_id": result.tool_call_id,
                "content": result.content,
            })),
        }
    }
    match turn.role {
        Role::Assistant => {
            // The assistant's content is a string (or null beside tool calls).
            let text = turn.joined_text();
            let mut message = json!({
                "role": "assistant",
                "content": if text.is_empty() { Value::Null } else { Value::String(text) },
            });
            if !tool_calls.is_empty() {
                message["tool_calls"] = Value::Array(tool_calls);
            }
            out.push(message);
        }
        Role::User if !content.is_empty() => {
            out.push(json!({"role": "user", "content": content}));
        }
        Role::User => {}
    }
}

/// OpenAI takes every image as a URL: inline data as a `data:` URL.
fn image_url(image: &Image) -> String {
    match image {
        Image::Base64 { media_type, data } => format!("data:{media_type};base64,{data}"),
        Image::Url(url) => url.clone(),
    }
}

fn tool(spec: &ToolSpec) -> Value {
    let mut function = json!({"name": spec.name, "parameters": spec.input_schema});
    if let Some(description) = &spec.description {
        function["description"] = Value::String(description.clone());
    }
    json!({"type": "function", "function": function})
}

fn tool_choice(choice: &ToolChoice) -> Value {
    match choice {
        ToolChoice::Auto => json!("auto"),
        ToolChoice::Any => json!("required"),
        ToolChoice::None => json!("none"),
        ToolChoice::Tool(name) => json!({"type": "function", "function": {"name": name}}),
    }
}

/// The JSON body of a chat completions call.
pub fn request_body(
    request: &ChatRequest,
    flavour: Flavour,
    stream: bool,
) -> Result<Vec<u8>, ProviderError> {
    let mut messages = Vec::with_capacity(request.turns.len() + 1);
    if let Some(system) = request.system.as_deref().filter(|s| !s.is_empty()) {
        messages.push(json!({"role": "system", "content": system}));
    }
    for turn in &request.turns {
        messages_of(turn, &mut messages);
    }
    let body = Body {
        model: &request.model,
        messages,
        max_completion_tokens: (flavour == Flavour::OpenAi).then_some(request.max_tokens),
        max_tokens: (flavour == Flavour::Compatible).then_some(request.max_tokens),
        temperature: request.temperature,
        stream,
        stream_options: stream.then_some(StreamOptions {
            include_usage: true,
        }),
        tools: request.tools.iter().map(tool).collect(),
        tool_choice: (!request.tools.is_empty()).then(|| tool_choice(&request.tool_choice)),
        parallel_tool_calls: request
            .parallel_tool_calls
            .filter(|_| !request.tools.is_empty()),
        stop: &request.stop_sequences,
    };
    serde_json::to_vec(&body)
        .map_err(|e| ProviderError::Protocol(format!("could not encode the request: {e}")))
}

/// Adds the body and the bearer key to a request.
pub(crate) fn prepare(
    builder: reqwest::RequestBuilder,
    api_key: &SecretString,
    flavour: Flavour,
    request: &ChatRequest,
    stream: bool,
) -> Result<reqwest::RequestBuilder, ProviderError> {
    let mut auth =
        HeaderValue::from_str(&format!("Bearer {}", api_key.expose_secret())).map_err(|_| {
            ProviderError::Forbidden("the API key cannot be sent in an HTTP header".into())
        })?;
    auth.set_sensitive(true);
    let accept = if stream {
        "text/event-stream"
    } else {
        "application/json"
    };
    Ok(builder
        .header(AUTHORIZATION, auth)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(ACCEPT, accept)
        .body(request_body(request, flavour, stream)?))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct WireUsage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    prompt_tokens_details: Option<PromptDetails>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PromptDetails {
    cached_tokens: Option<u64>,
}

impl WireUsage {
    fn normalise(&self) -> Usage {
        let cached = self
            .prompt_tokens_details
            .as_ref()
            .and_then(|d| d.cached_tokens)
            .unwrap_or(0);
        Usage {
            input_tokens: self.prompt_tokens.unwrap_or(0).saturating_sub(cached),
            output_tokens: self.completion_tokens.unwrap_or(0),
            cache_read_tokens: cached,
            cache_write_tokens: 0,
            cache_write_1h_tokens: 0,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct StreamChunk {
    choices: Option<Vec<StreamChoice>>,
    usage: Option<WireUsage>,
    error: Option<serde_json::Value>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct StreamChoice {
    index: Option<u32>,
    delta: Option<Delta>,
    finish_reason: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Delta {
    content: Option<String>,
    tool_calls: Option<Vec<ToolCallFragment>>,
}

/// A piece of a streamed tool call: `index` always; `id` and the function's
/// `name` on the call's first piece; `arguments` in pieces after.
#[derive(Deserialize, Default)]
#[serde(default)]
struct ToolCallFragment {
    index: Option<u32>,
    id: Option<String>,
    function: Option<FunctionFragment>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct FunctionFragment {
    name: Option<String>,
    arguments: Option<String>,
}

/// The error an `error` object (a string on some servers) stands for.
fn error_of(error: &serde_json::Value) -> ProviderError {
    let detail = match error {
        serde_json::Value::Object(_) => error_detail(error),
        _ => "unknown".to_owned(),
    };
    if detail == "overloaded_error" {
        ProviderError::Overloaded
    } else {
        ProviderError::StreamError { detail }
    }
}

/// Reads an OpenAI event stream.
#[derive(Debug, Default)]
pub(crate) struct StreamDecoder {
    usage: Usage,
    done: bool,
    /// The tool calls begun, by the provider's index, in order.
    tool_indices: Vec<u32>,
}

impl StreamDecoder {
    pub(crate) fn new() -> StreamDecoder {
        StreamDecoder::default()
    }

    fn tool_fragment(
        &mut self,
        fragment: &ToolCallFragment,
        out: &mut Vec<Chunk>,
    ) -> Result<(), ProviderError> {
        // Servers that stream one call at a time may leave the index out.
        let provider_index = fragment.index.unwrap_or(0);
        let function = fragment.function.as_ref();
        let known = self.tool_indices.iter().position(|i| *i == provider_index);
        let index = match known {
            Some(call) => call as u32,
            None => {
                let (Some(id), Some(name)) =
                    (fragment.id.as_ref(), function.and_then(|f| f.name.as_ref()))
                else {
                    return Err(ProviderError::Protocol(format!(
                        "tool call {provider_index} began without its id and name"
                    )));
                };
                let call = self.tool_indices.len() as u32;
                self.tool_indices.push(provider_index);
                out.push(Chunk::ToolCallStart {
                    index: call,
                    id: id.clone(),
                    name: name.clone(),
                });
                call
            }
        };
        if let Some(json) = function
            .and_then(|f| f.arguments.as_ref())
            .filter(|a| !a.is_empty())
        {
            out.push(Chunk::ToolCallArguments {
                index,
                json: json.clone(),
            });
        }
        Ok(())
    }
}

impl EventDecoder for StreamDecoder {
    fn on_event(&mut self, event: SseEvent) -> Result<Vec<Chunk>, ProviderError> {
        let data = event.data.trim();
        if data == "[DONE]" {
            self.done = true;
            return Ok(Vec::new());
        }
        let chunk: StreamChunk =
            serde_json::from_str(data).map_err(|e| malformed_json("OpenAI chunk", &e))?;
        if let Some(error) = chunk.error.as_ref().filter(|e| !e.is_null()) {
            return Err(error_of(error));
        }
        let mut out = Vec::new();
        // Only the first choice is read (`n` is never set); it is the one of
        // index 0, or the first one listed by servers that omit the index.
        let choice = chunk.choices.as_deref().and_then(|choices| {
            choices
                .iter()
                .find(|c| c.index == Some(0))
                .or_else(|| choices.first())
        });
        if let Some(delta) = choice.and_then(|c| c.delta.as_ref()) {
            if let Some(text) = delta.content.as_deref().filter(|t| !t.is_empty()) {
                out.push(Chunk::Text(text.to_owned()));
            }
            for fragment in delta.tool_calls.iter().flatten() {
                self.tool_fragment(fragment, &mut out)?;
            }
        }
        if let Some(usage) = &chunk.usage {
            if merge_usage(&mut self.usage, &usage.normalise()) {
                out.push(Chunk::Usage(self.usage));
            }
        }
        if let Some(reason) = choice.and_then(|c| c.finish_reason.clone()) {
            out.push(Chunk::Stop(reason));
        }
        Ok(out)
    }

    fn finished(&self) -> bool {
        self.done
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct WireCompletion {
    choices: Option<Vec<WholeChoice>>,
    usage: Option<WireUsage>,
    error: Option<serde_json::Value>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct WholeChoice {
    index: Option<u32>,
    message: Option<WholeMessage>,
    finish_reason: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct WholeMessage {
    content: Option<String>,
    tool_calls: Option<Vec<WholeToolCall>>,
}

#[derive(Deserialize)]
struct WholeToolCall {
    id: String,
    function: WholeFunction,
}

#[derive(Deserialize)]
struct WholeFunction {
    name: String,
    #[serde(default)]
    arguments: String,
}

/// Reads a whole (non-streamed) `chat.completion` object.
pub fn parse_completion(body: &[u8]) -> Result<Completion, ProviderError> {
    let completion: WireCompletion =
        serde_json::from_slice(body).map_err(|e| malformed_json("OpenAI completion", &e))?;
    if let Some(error) = completion.error.as_ref().filter(|e| !e.is_null()) {
        return Err(error_of(error));
    }
    let choices = completion.choices.unwrap_or_default();
    let choice = choices
        .iter()
        .find(|c| c.index == Some(0))
        .or_else(|| choices.first());
    let message = choice.and_then(|c| c.message.as_ref());
    Ok(Completion {
        text: message.and_then(|m| m.content.clone()).unwrap_or_default(),
        tool_calls: message
            .and_then(|m| m.tool_calls.as_ref())
            .into_iter()
            .flatten()
            .map(|call| ToolCall {
                id: call.id.clone(),
                name: call.function.name.clone(),
                input: arguments(&call.function.arguments),
            })
            .collect(),
        usage: completion
            .usage
            .as_ref()
            .map(WireUsage::normalise)
            .unwrap_or_default(),
        stop_reason: choice.and_then(|c| c.finish_reason.clone()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sse::tests::parse_bytewise;
    use lambent_core::chat::Turn;

    fn decode(input: &str) -> (Vec<Result<Chunk, ProviderError>>, bool) {
        let mut decoder = StreamDecoder::new();
        let mut out = Vec::new();
        for event in parse_bytewise(input.as_bytes()).unwrap() {
            if decoder.finished() {
                break;
            }
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

    const TEXT: &str = concat!(
        "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}],\"usage\":null}\n\n",
        "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"},\"finish_reason\":null}],\"usage\":null}\n\n",
        ": keep-alive\n\n",
        "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"},\"finish_reason\":null}]}\n\n",
    );
    const FINISH: &str = "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n";
    const USAGE: &str = "\"usage\":{\"prompt_tokens\":1200,\"completion_tokens\":34,\"total_tokens\":1234,\"prompt_tokens_details\":{\"cached_tokens\":1000,\"audio_tokens\":0},\"completion_tokens_details\":{\"reasoning_tokens\":0}}";
    const DONE: &str = "data: [DONE]\n\n";

    fn expected_usage() -> Usage {
        Usage {
            input_tokens: 200,
            output_tokens: 34,
            cache_read_tokens: 1000,
            cache_write_tokens: 0,
            cache_write_1h_tokens: 0,
        }
    }

    #[test]
    fn final_chunk_with_empty_choices() {
        let input =
            format!("{TEXT}{FINISH}data: {{\"id\":\"c\",\"choices\":[],{USAGE}}}\n\n{DONE}");
        let (chunks, done) = decode(&input);
        assert!(done);
        assert_eq!(
            chunks,
            vec![
                Ok(Chunk::Text("Hel".into())),
                Ok(Chunk::Text("lo".into())),
                Ok(Chunk::Stop("stop".into())),
                Ok(Chunk::Usage(expected_usage())),
            ]
        );
    }

    #[test]
    fn final_chunk_with_null_or_missing_choices() {
        for choices in ["\"choices\":null,", ""] {
            let input = format!("{TEXT}{FINISH}data: {{\"id\":\"c\",{choices}{USAGE}}}\n\n{DONE}");
            let (chunks, done) = decode(&input);
            assert!(done);
            assert_eq!(chunks.last(), Some(&Ok(Chunk::Usage(expected_usage()))));
            assert_eq!(chunks.len(), 4);
        }
    }

    #[test]
    fn final_chunk_with_a_choice_keeps_its_text_and_finish_reason() {
        let input = format!(
            "{TEXT}data: {{\"id\":\"c\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"!\"}},\"finish_reason\":\"length\"}}],{USAGE}}}\n\n{DONE}"
        );
        let (chunks, done) = decode(&input);
        assert!(done);
        assert_eq!(
            chunks,
            vec![
                Ok(Chunk::Text("Hel".into())),
                Ok(Chunk::Text("lo".into())),
                Ok(Chunk::Text("!".into())),
                Ok(Chunk::Usage(expected_usage())),
                Ok(Chunk::Stop("length".into())),
            ]
        );
    }

    #[test]
    fn no_usage_chunk_and_no_cached_tokens() {
        let (chunks, done) = decode(&format!("{TEXT}{FINISH}{DONE}"));
        assert!(done);
        assert!(!chunks.iter().any(|c| matches!(c, Ok(Chunk::Usage(_)))));

        let input = format!(
            "{TEXT}data: {{\"choices\":[],\"usage\":{{\"prompt_tokens\":5,\"completion_tokens\":6}}}}\n\n{DONE}"
        );
        let (chunks, _) = decode(&input);
        assert_eq!(
            chunks.last(),
            Some(&Ok(Chunk::Usage(Usage {
                input_tokens: 5,
                output_tokens: 6,
                ..Usage::default()
            })))
        );
    }

    #[test]
    fn cached_tokens_larger_than_prompt_tokens_saturate() {
        let input = "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":1,\"prompt_tokens_details\":{\"cached_tokens\":9}}}\n\n";
        let (chunks, _) = decode(input);
        assert_eq!(
            chunks,
            vec![Ok(Chunk::Usage(Usage {
                input_tokens: 0,
                output_tokens: 1,
                cache_read_tokens: 9,
                ..Usage::default()
            }))]
        );
    }

    #[test]
    fn nothing_is_read_after_done() {
        let (chunks, done) = decode(&format!("{DONE}{TEXT}"));
        assert!(done);
        assert!(chunks.is_empty());
    }

    #[test]
    fn error_chunks_end_the_stream() {
        let input = format!(
            "{TEXT}data: {{\"error\":{{\"message\":\"boom\",\"type\":\"server_error\",\"code\":null}}}}\n\n"
        );
        let (chunks, done) = decode(&input);
        assert!(!done);
        assert_eq!(
            chunks.last(),
            Some(&Err(ProviderError::StreamError {
                detail: "server_error".into()
            }))
        );
        let (chunks, _) = decode("data: {\"error\":{\"message\":\"x\",\"type\":null,\"code\":\"rate_limit_exceeded\"}}\n\n");
        assert_eq!(
            chunks.last(),
            Some(&Err(ProviderError::StreamError {
                detail: "rate_limit_exceeded".into()
            }))
        );
        let (chunks, _) = decode("data: {\"error\":\"something <b>odd</b>\"}\n\n");
        assert_eq!(
            chunks.last(),
            Some(&Err(ProviderError::StreamError {
                detail: "unknown".into()
            }))
        );
        let (chunks, _) = decode("data: {oops\n\n");
        assert!(matches!(
            chunks.last(),
            Some(Err(ProviderError::Protocol(_)))
        ));
    }

    #[test]
    fn request_bodies() {
        let request = ChatRequest {
            model: "gpt-x".into(),
            system: Some("sys".into()),
            turns: vec![
                Turn::text(Role::User, "a"),
                Turn::text(Role::Assistant, "b"),
            ],
            max_tokens: 99,
            temperature: Some(Decimal::new(125, 2)),
            ..ChatRequest::default()
        };
        let body: serde_json::Value =
            serde_json::from_slice(&request_body(&request, Flavour::OpenAi, true).unwrap())
                .unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "model": "gpt-x",
                "messages": [
                    {"role": "system", "content": "sys"},
                    {"role": "user", "content": "a"},
                    {"role": "assistant", "content": "b"}
                ],
                "max_completion_tokens": 99,
                "temperature": 1.25,
                "stream": true,
                "stream_options": {"include_usage": true}
            })
        );
        let bare = ChatRequest {
            system: None,
            temperature: None,
            ..request
        };
        let body: serde_json::Value =
            serde_json::from_slice(&request_body(&bare, Flavour::Compatible, false).unwrap())
                .unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "model": "gpt-x",
                "messages": [
                    {"role": "user", "content": "a"},
                    {"role": "assistant", "content": "b"}
                ],
                "max_tokens": 99,
                "stream": false
            })
        );
    }

    #[test]
    fn whole_completion() {
        let body = br#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"m",
            "choices":[{"index":0,"message":{"role":"assistant","content":"Hi there","refusal":null},"logprobs":null,"finish_reason":"stop"}],
            "usage":{"prompt_tokens":50,"completion_tokens":5,"total_tokens":55,"prompt_tokens_details":{"cached_tokens":20}}}"#;
        assert_eq!(
            parse_completion(body).unwrap(),
            Completion {
                text: "Hi there".into(),
                tool_calls: Vec::new(),
                usage: Usage {
                    input_tokens: 30,
                    output_tokens: 5,
                    cache_read_tokens: 20,
                    ..Usage::default()
                },
                stop_reason: Some("stop".into()),
            }
        );
        let body = br#"{"choices":[{"index":0,"message":{"role":"assistant","content":null},"finish_reason":"tool_calls"}]}"#;
        let completion = parse_completion(body).unwrap();
        assert_eq!(completion.text, "");
        assert_eq!(completion.usage, Usage::default());
        assert!(matches!(
            parse_completion(b"nope"),
            Err(ProviderError::Protocol(_))
        ));
    }

    #[test]
    fn a_server_tools_settings_never_reach_the_provider() {
        let server = crate::fixtures::server_tool_conversation();
        for (flavour, stream) in [
            (Flavour::OpenAi, false),
            (Flavour::OpenAi, true),
            (Flavour::Compatible, true),
        ] {
            let body = request_body(&server, flavour, stream).unwrap();
            crate::fixtures::assert_no_server_tool_settings(&body);
            // The tool goes out exactly as a client tool would.
            let client =
                request_body(&crate::fixtures::tool_conversation(), flavour, stream).unwrap();
            assert_eq!(body, client);
        }
    }

    #[test]
    fn a_tool_conversation_is_sent_as_messages_and_tool_messages() {
        let request = crate::fixtures::tool_conversation();
        let body = request_body(&request, Flavour::OpenAi, false).unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            body,
            json!({
                "model": "m",
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": [
                        {"type": "text", "text": "Weather here and there?"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}},
                        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/"}},
                        {"type": "image_url", "image_url": {"url": "https://example.com/map.png"}},
                    ]},
                    {"role": "assistant", "content": "Checking.", "tool_calls": [
                        {"id": "call_1", "type": "function",
                         "function": {"name": "weather", "arguments": "{\"city\":\"Zürich\"}"}},
                        {"id": "call_2", "type": "function",
                         "function": {"name": "weather", "arguments": "{\"city\":\"Oslo\"}"}},
                    ]},
                    {"role": "tool", "tool_call_id": "call_1", "content": "12 °C"},
                    {"role": "tool", "tool_call_id": "call_2", "content": "no station"},
                ],
                "max_completion_tokens": 100,
                "stream": false,
                "tools": [{"type": "function", "function": {
                    "name": "weather", "description": "Current weather",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
                "tool_choice": {"type": "function", "function": {"name": "weather"}},
            })
        );
        for (choice, wire) in [
            (ToolChoice::Auto, json!("auto")),
            (ToolChoice::Any, json!("required")),
            (ToolChoice::None, json!("none")),
        ] {
            let request = ChatRequest {
                tool_choice: choice,
                ..request.clone()
            };
            let body = request_body(&request, Flavour::Compatible, true).unwrap();
            let body: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(body["tool_choice"], wire);
        }
    }

    #[test]
    fn streamed_tool_call_fragments_keep_their_calls_apart() {
        // Parallel calls: the id and name only on a call's first fragment,
        // the arguments split mid-string and mid-escape, the second call's
        // first fragment between the first call's pieces.
        let input = r#"data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"weather","arguments":""}}]},"finish_reason":null}]}

data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\": \"Z"}}]},"finish_reason":null}]}

data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_b","type":"function","function":{"name":"time","arguments":"{}"}}]},"finish_reason":null}]}

data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\u00fcrich\\\"s\"}"}}]},"finish_reason":null}]}

data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}

data: {"id":"c","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":40,"completion_tokens":12,"total_tokens":52}}

data: [DONE]

"#;
        let (chunks, finished) = decode(input);
        assert!(finished, "{chunks:?}");
        let chunks: Vec<Chunk> = chunks.into_iter().map(Result::unwrap).collect();
        assert_eq!(
            chunks[..5],
            [
                Chunk::ToolCallStart {
                    index: 0,
                    id: "call_a".into(),
                    name: "weather".into()
                },
                Chunk::ToolCallArguments {
                    index: 0,
                    json: "{\"city\": \"Z".into()
                },
                Chunk::ToolCallStart {
                    index: 1,
                    id: "call_b".into(),
                    name: "time".into()
                },
                Chunk::ToolCallArguments {
                    index: 1,
                    json: "{}".into()
                },
                Chunk::ToolCallArguments {
                    index: 0,
                    json: "ürich\\\"s\"}".into()
                },
            ]
        );
        assert_eq!(chunks[5], Chunk::Stop("tool_calls".into()));
        let mut calls = crate::ToolCallAssembler::default();
        chunks.iter().for_each(|c| calls.push(c));
        let calls = calls.finish();
        assert_eq!(calls[0].input, json!({"city": "Zürich\"s"}));
        assert_eq!(
            (calls[1].id.as_str(), &calls[1].input),
            ("call_b", &json!({}))
        );
    }

    #[test]
    fn a_call_that_begins_without_id_and_name_is_a_protocol_error() {
        let input = "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{}\"}}]}}]}\n\n";
        let (chunks, _) = decode(input);
        assert!(
            matches!(chunks.last(), Some(Err(ProviderError::Protocol(m))) if m.contains("without its id")),
            "{chunks:?}"
        );
    }

    #[test]
    fn whole_tool_calls_are_parsed() {
        let body = br#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"m",
            "choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[
                {"id":"call_a","type":"function","function":{"name":"weather","arguments":"{\"city\":\"Oslo\"}"}},
                {"id":"call_b","type":"function","function":{"name":"time","arguments":""}}]},
              "finish_reason":"tool_calls"}],
            "usage":{"prompt_tokens":50,"completion_tokens":5,"total_tokens":55}}"#;
        let completion = parse_completion(body).unwrap();
        assert_eq!(completion.text, "");
        assert_eq!(completion.stop_reason.as_deref(), Some("tool_calls"));
        assert_eq!(
            completion.tool_calls,
            vec![
                ToolCall {
                    id: "call_a".into(),
                    name: "weather".into(),
                    input: json!({"city": "Oslo"}),
                },
                ToolCall {
                    id: "call_b".into(),
                    name: "time".into(),
                    input: json!({}),
                },
            ]
        );
    }
}
