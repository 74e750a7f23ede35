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

use super::sse::{EventDecoder, SseEvent};
use super::wire::{error_detail, malformed_json, merge_usage};
use super::{ChatRequest, Chunk, Completion, ProviderError, Role, Usage};

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
    messages: Vec<Message<'a>>,
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
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'static str,
    content: &'a str,
}

/// The JSON body of a chat completions call.
pub fn request_body(
    request: &ChatRequest,
    flavour: Flavour,
    stream: bool,
) -> Result<Vec<u8>, ProviderError> {
    let system = request
        .system
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(|content| Message {
            role: "system",
            content,
        });
    let turns = request.turns.iter().map(|t| Message {
        role: match t.role {
            Role::User => "user",
            Role::Assistant => "assistant",
        },
        content: &t.content,
    });
    let body = Body {
        model: &request.model,
        messages: system.into_iter().chain(turns).collect(),
        max_completion_tokens: (flavour == Flavour::OpenAi).then_some(request.max_tokens),
        max_tokens: (flavour == Flavour::Compatible).then_some(request.max_tokens),
        temperature: request.temperature,
        stream,
        stream_options: stream.then_some(StreamOptions {
            include_usage: true,
        }),
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
}

impl StreamDecoder {
    pub(crate) fn new() -> StreamDecoder {
        StreamDecoder::default()
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
        if let Some(choice) = choice {
            if let Some(text) = choice.delta.as_ref().and_then(|d| d.content.as_deref()) {
                if !text.is_empty() {
                    out.push(Chunk::Text(text.to_owned()));
                }
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
    Ok(Completion {
        text: choice
            .and_then(|c| c.message.as_ref())
            .and_then(|m| m.content.clone())
            .unwrap_or_default(),
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
                Turn {
                    role: Role::User,
                    content: "a".into(),
                },
                Turn {
                    role: Role::Assistant,
                    content: "b".into(),
                },
            ],
            max_tokens: 99,
            temperature: Some(Decimal::new(125, 2)),
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
}
