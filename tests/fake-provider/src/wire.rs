//! The two wire formats: the JSON bodies and the server-sent events.

use bytes::Bytes;
use serde_json::{json, Value};

use crate::reply::{
    anthropic_error_kind, openai_error_kind, FakeUsage, FinalChunk, PlannedCall, UsageAt,
};

/// Writes one stream's events, in order: the opening events, one event a
/// text delta, the tool calls' events, then the closing events or an error
/// event.
pub(crate) trait Wire: Send + 'static {
    fn preamble(&self) -> Vec<Bytes>;
    fn text_event(&self, text: &str) -> Bytes;
    /// The tool calls' events, grouped by delta: each group ends with the
    /// event of one argument piece (or a call's opening, for a call without
    /// arguments) and begins with whatever must come before it. Grouping
    /// lets delays, cuts and errors count an argument piece as one delta.
    fn tool_steps(&self) -> Vec<Vec<Bytes>>;
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

/// A tool call's arguments as Anthropic's `input`, which is always a JSON
/// value (the real API always gives an object).
fn anthropic_input(arguments: &str) -> Value {
    if arguments.trim().is_empty() {
        return json!({});
    }
    serde_json::from_str(arguments).unwrap_or_else(|_| Value::String(arguments.to_owned()))
}

/// A non-streamed Anthropic message: a text block (unless the reply is only
/// tool calls), then a `tool_use` block a call.
pub(crate) fn anthropic_message(
    id: &str,
    model: &str,
    text: &str,
    calls: &[PlannedCall],
    stop_reason: &str,
    usage: &FakeUsage,
) -> Value {
    let mut content = Vec::with_capacity(calls.len() + 1);
    if !text.is_empty() || calls.is_empty() {
        content.push(json!({ "type": "text", "text": text }));
    }
    for call in calls {
        content.push(json!({
            "type": "tool_use",
            "id": call.id,
            "name": call.name,
            "input": anthropic_input(&call.arguments),
        }));
    }
    json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
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
    /// Whether the message has a text block (index 0): it has unless it is
    /// only tool calls.
    pub text_block: bool,
    pub calls: Vec<PlannedCall>,
}

impl AnthropicStream {
    /// The content block index of tool call `k`.
    fn call_index(&self, k: usize) -> usize {
        k + usize::from(self.text_block)
    }

    fn tool_block_start(&self, k: usize, call: &PlannedCall) -> Bytes {
        // The block opens with an empty input; the input arrives as JSON
        // text in `input_json_delta`s.
        let start = json!({
            "type": "content_block_start",
            "index": self.call_index(k),
            "content_block": { "type": "tool_use", "id": call.id, "name": call.name, "input": {} },
        });
        anthropic_event("content_block_start", &start)
    }

    fn json_delta(&self, k: usize, piece: &str) -> Bytes {
        let delta = json!({
            "type": "content_block_delta",
            "index": self.call_index(k),
            "delta": { "type": "input_json_delta", "partial_json": piece },
        });
        anthropic_event("content_block_delta", &delta)
    }

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
        // The first block opens before the ping, as the real stream does.
        let first_block = match self.calls.first() {
            Some(call) if !self.text_block => self.tool_block_start(0, call),
            _ => {
                let block = json!({
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": { "type": "text", "text": "" },
                });
                anthropic_event("content_block_start", &block)
            }
        };
        vec![
            anthropic_event("message_start", &start),
            first_block,
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

    fn tool_steps(&self) -> Vec<Vec<Bytes>> {
        let mut steps = Vec::new();
        for (k, call) in self.calls.iter().enumerate() {
            let index = self.call_index(k);
            let mut first = Vec::new();
            if index > 0 {
                // Blocks never overlap: the previous one stops first. (Block
                // 0 was opened by the preamble.)
                let stop = json!({ "type": "content_block_stop", "index": index - 1 });
                first.push(anthropic_event("content_block_stop", &stop));
                first.push(self.tool_block_start(k, call));
            }
            // The real API opens every tool input with an empty piece.
            first.push(self.json_delta(k, ""));
            let mut pieces = call.pieces.iter();
            if let Some(piece) = pieces.next() {
                first.push(self.json_delta(k, piece));
            }
            steps.push(first);
            steps.extend(pieces.map(|piece| vec![self.json_delta(k, piece)]));
        }
        steps
    }

    fn finale(&self) -> Vec<Bytes> {
        let last = self.call_index(self.calls.len()).saturating_sub(1);
        let stop = json!({ "type": "content_block_stop", "index": last });
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

/// A non-streamed OpenAI chat completion: `content` is null when the reply
/// is only tool calls, and `tool_calls` is there only when there are some.
pub(crate) fn openai_completion(
    id: &str,
    created: u64,
    model: &str,
    text: &str,
    calls: &[PlannedCall],
    finish_reason: &str,
    usage: &FakeUsage,
) -> Value {
    let content = if text.is_empty() && !calls.is_empty() {
        Value::Null
    } else {
        Value::String(text.to_owned())
    };
    let mut message = json!({
        "role": "assistant",
        "content": content,
        "refusal": null,
        "annotations": [],
    });
    if !calls.is_empty() {
        let calls: Vec<Value> = calls
            .iter()
            .map(|call| {
                json!({
                    "id": call.id,
                    "type": "function",
                    "function": { "name": call.name, "arguments": call.arguments },
                })
            })
            .collect();
        message["tool_calls"] = Value::Array(calls);
    }
    json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [ {
            "index": 0,
            "message": message,
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
    /// Whether the reply has text: the opening chunk's `content` is `""`
    /// then, and null before tool calls alone.
    pub has_text: bool,
    pub calls: Vec<PlannedCall>,
    pub interleave: bool,
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
        let content = if self.has_text || self.calls.is_empty() {
            json!("")
        } else {
            Value::Null
        };
        let choices = json!([ {
            "index": 0,
            "delta": { "role": "assistant", "content": content, "refusal": null },
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

    fn tool_steps(&self) -> Vec<Vec<Bytes>> {
        let fragment = |fragment: Value| {
            let choices = json!([ {
                "index": 0,
                "delta": { "tool_calls": [fragment] },
                "logprobs": null,
                "finish_reason": null,
            } ]);
            self.chunk(choices, None)
        };
        // Each call's steps: its first fragment (ID, type, name, empty
        // arguments) with its first piece, then a fragment a piece.
        let per_call: Vec<Vec<Vec<Bytes>>> = self
            .calls
            .iter()
            .enumerate()
            .map(|(i, call)| {
                let mut first = vec![fragment(json!({
                    "index": i,
                    "id": call.id,
                    "type": "function",
                    "function": { "name": call.name, "arguments": "" },
                }))];
                let pieces: Vec<Bytes> = call
                    .pieces
                    .iter()
                    .map(|piece| {
                        fragment(json!({ "index": i, "function": { "arguments": piece } }))
                    })
                    .collect();
                let mut pieces = pieces.into_iter();
                first.extend(pieces.next());
                std::iter::once(first)
                    .chain(pieces.map(|piece| vec![piece]))
                    .collect()
            })
            .collect();
        if !self.interleave {
            return per_call.into_iter().flatten().collect();
        }
        // In turn: the first step of every call, then the second, ...
        let rounds = per_call.iter().map(Vec::len).max().unwrap_or(0);
        let mut calls: Vec<_> = per_call.into_iter().map(Vec::into_iter).collect();
        let mut steps = Vec::new();
        for _ in 0..rounds {
            steps.extend(calls.iter_mut().filter_map(Iterator::next));
        }
        steps
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
