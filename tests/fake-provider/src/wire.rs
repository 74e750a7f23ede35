//! The two wire formats: the JSON bodies and the server-sent events.

use bytes::Bytes;
use serde_json::{json, Value};

use crate::reply::{anthropic_error_kind, openai_error_kind, FakeUsage, FinalChunk, UsageAt};

/// Writes one stream's events, in order: the opening events, one event a
/// text delta, then the closing events or an error event.
pub(crate) trait Wire: Send + 'static {
    fn preamble(&self) -> Vec<Bytes>;
    fn text_event(&self, text: &str) -> Bytes;
    fn finale(&self) -> Vec<Bytes>;
    fn error_event(&self, kind: &str, message: &str) -> Bytes;
}

// ---------------------------------------------------------------- Anthropic

/// Anthropic's usage object with every field, as a non-streamed message and
/// `message_start` carry it.
fn anthropic_full_usage(u: &FakeUsage, output: u64) -> Value {
    json!({
        "input_tokens": u.input,
        "cache_creation_input_tokens": u.cache_write(),
        "cache_read_input_tokens": u.cache_read,
        "cache_creation": {
            "ephemeral_5m_input_tokens": u.cache_write_5m,
            "ephemeral_1h_input_tokens": u.cache_write_1h,
        },
        "output_tokens": output,
        "service_tier": "standard",
    })
}

fn anthropic_event(name: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

/// Anthropic's error body.
pub(crate) fn anthropic_error_body(kind: &str, message: &str, request_id: &str) -> Value {
    json!({
        "type": "error",
        "error": { "type": kind, "message": message },
        "request_id": request_id,
    })
}

/// A non-streamed Anthropic message.
pub(crate) fn anthropic_message(
    id: &str,
    model: &str,
    text: &str,
    stop_reason: &str,
    usage: &FakeUsage,
) -> Value {
    json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [ { "type": "text", "text": text } ],
        "stop_reason": stop_reason,
        "stop_sequence": null,
        "usage": anthropic_full_usage(usage, usage.output),
    })
}

pub(crate) struct AnthropicStream {
    pub id: String,
    pub model: String,
    pub usage: FakeUsage,
    pub usage_at: UsageAt,
    pub stop_reason: String,
}

impl AnthropicStream {
    fn start_usage(&self) -> Value {
        let u = &self.usage;
        match self.usage_at {
            UsageAt::Start => anthropic_full_usage(u, u.output),
            UsageAt::Delta => anthropic_full_usage(&FakeUsage::default(), 0),
            UsageAt::Both => anthropic_full_usage(u, u.output.min(1)),
        }
    }

    fn delta_usage(&self) -> Value {
        let u = &self.usage;
        match self.usage_at {
            UsageAt::Start => json!({ "output_tokens": u.output }),
            UsageAt::Delta => json!({
                "input_tokens": u.input,
                "cache_creation_input_tokens": u.cache_write(),
                "cache_read_input_tokens": u.cache_read,
                "cache_creation": {
                    "ephemeral_5m_input_tokens": u.cache_write_5m,
                    "ephemeral_1h_input_tokens": u.cache_write_1h,
                },
                "output_tokens": u.output,
            }),
            UsageAt::Both => json!({
                "input_tokens": u.input,
                "cache_creation_input_tokens": u.cache_write(),
                "cache_read_input_tokens": u.cache_read,
                "output_tokens": u.output,
            }),
        }
    }
}

impl Wire for AnthropicStream {
    fn preamble(&self) -> Vec<Bytes> {
        let start = json!({
            "type": "message_start",
            "message": {
                "id": self.id,
                "type": "message",
                "role": "assistant",
                "model": self.model,
                "content": [],
                "stop_reason": null,
                "stop_sequence": null,
                "usage": self.start_usage(),
            },
        });
        let block = json!({
            "type": "content_block_start",
            "index": 0,
            "content_block": { "type": "text", "text": "" },
        });
        vec![
            anthropic_event("message_start", &start),
            anthropic_event("content_block_start", &block),
            anthropic_event("ping", &json!({ "type": "ping" })),
        ]
    }

    fn text_event(&self, text: &str) -> Bytes {
        let delta = json!({
            "type": "content_block_delta",
            "index": 0,
            "delta": { "type": "text_delta", "text": text },
        });
        anthropic_event("content_block_delta", &delta)
    }

    fn finale(&self) -> Vec<Bytes> {
        let stop = json!({ "type": "content_block_stop", "index": 0 });
        let delta = json!({
            "type": "message_delta",
            "delta": { "stop_reason": self.stop_reason, "stop_sequence": null },
            "usage": self.delta_usage(),
        });
        vec![
            anthropic_event("content_block_stop", &stop),
            anthropic_event("message_delta", &delta),
            anthropic_event("message_stop", &json!({ "type": "message_stop" })),
        ]
    }

    fn error_event(&self, kind: &str, message: &str) -> Bytes {
        let kind = anthropic_error_kind(kind);
        let data = json!({ "type": "error", "error": { "type": kind, "message": message } });
        anthropic_event("error", &data)
    }
}

// ------------------------------------------------------------------- OpenAI

/// The `system_fingerprint` of every OpenAI reply.
pub(crate) const FINGERPRINT: &str = "fp_fake0001";

/// OpenAI's usage object: cached tokens are part of the prompt tokens.
pub(crate) fn openai_usage(u: &FakeUsage) -> Value {
    let prompt = u.input.saturating_add(u.cache_read);
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": u.output,
        "total_tokens": prompt.saturating_add(u.output),
        "prompt_tokens_details": { "cached_tokens": u.cache_read, "audio_tokens": 0 },
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    })
}

/// OpenAI's error body, with `kind` translated to OpenAI's vocabulary.
pub(crate) fn openai_error_body(kind: &str, message: &str) -> Value {
    let (kind, code) = openai_error_kind(kind);
    openai_error_body_raw(kind, code, message)
}

/// OpenAI's error body, as it is given.
pub(crate) fn openai_error_body_raw(kind: &str, code: Option<&str>, message: &str) -> Value {
    json!({
        "error": { "message": message, "type": kind, "param": null, "code": code },
    })
}

/// A non-streamed OpenAI chat completion.
pub(crate) fn openai_completion(
    id: &str,
    created: u64,
    model: &str,
    text: &str,
    finish_reason: &str,
    usage: &FakeUsage,
) -> Value {
    json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [ {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": text,
                "refusal": null,
                "annotations": [],
            },
            "logprobs": null,
            "finish_reason": finish_reason,
        } ],
        "usage": openai_usage(usage),
        "service_tier": "default",
        "system_fingerprint": FINGERPRINT,
    })
}

fn openai_data(data: &Value) -> Bytes {
    Bytes::from(format!("data: {data}\n\n"))
}

pub(crate) struct OpenAiStream {
    pub id: String,
    pub created: u64,
    pub model: String,
    pub usage: FakeUsage,
    pub include_usage: bool,
    pub final_chunk: FinalChunk,
    pub finish_reason: String,
}

impl OpenAiStream {
    /// A `chat.completion.chunk`; with `include_usage`, every chunk has a
    /// `usage` field, null but in the chunk that reports it.
    fn chunk(&self, choices: Value, usage: Option<Value>) -> Bytes {
        let mut chunk = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "service_tier": "default",
            "system_fingerprint": FINGERPRINT,
            "choices": choices,
        });
        if self.include_usage {
            if let Some(map) = chunk.as_object_mut() {
                map.insert("usage".to_owned(), usage.unwrap_or(Value::Null));
            }
        }
        openai_data(&chunk)
    }
}

impl Wire for OpenAiStream {
    fn preamble(&self) -> Vec<Bytes> {
        let choices = json!([ {
            "index": 0,
            "delta": { "role": "assistant", "content": "", "refusal": null },
            "logprobs": null,
            "finish_reason": null,
        } ]);
        vec![self.chunk(choices, None)]
    }

    fn text_event(&self, text: &str) -> Bytes {
        let choices = json!([ {
            "index": 0,
            "delta": { "content": text },
            "logprobs": null,
            "finish_reason": null,
        } ]);
        self.chunk(choices, None)
    }

    fn finale(&self) -> Vec<Bytes> {
        let finish = json!([ {
            "index": 0,
            "delta": {},
            "logprobs": null,
            "finish_reason": self.finish_reason,
        } ]);
        let usage = openai_usage(&self.usage);
        let mut events = Vec::with_capacity(3);
        match (self.include_usage, self.final_chunk) {
            (true, FinalChunk::WithChoices) => events.push(self.chunk(finish, Some(usage))),
            (true, FinalChunk::EmptyChoices) => {
                events.push(self.chunk(finish, None));
                events.push(self.chunk(json!([]), Some(usage)));
            }
            (true, FinalChunk::NullChoices) => {
                events.push(self.chunk(finish, None));
                events.push(self.chunk(Value::Null, Some(usage)));
            }
            (true, FinalChunk::Absent) | (false, _) => events.push(self.chunk(finish, None)),
        }
        events.push(Bytes::from_static(b"data: [DONE]\n\n"));
        events
    }

    fn error_event(&self, kind: &str, message: &str) -> Bytes {
        openai_data(&openai_error_body(kind, message))
    }
}
