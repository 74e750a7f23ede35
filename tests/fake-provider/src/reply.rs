//! The scripted reply: what the fake provider answers to one request.

use std::sync::Arc;
use std::time::Duration;

/// The ground truth of a reply's token usage. Each wire format shows it the
/// way its provider does (see the crate documentation).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FakeUsage {
    /// Input tokens that were neither read from nor written to the cache.
    pub input: u64,
    /// Output tokens.
    pub output: u64,
    /// Input tokens read from the prompt cache.
    pub cache_read: u64,
    /// Input tokens written to the cache with the 5 minute lifetime.
    pub cache_write_5m: u64,
    /// Input tokens written to the cache with the 1 hour lifetime.
    pub cache_write_1h: u64,
}

impl FakeUsage {
    /// All cache writes, whatever their lifetime.
    pub fn cache_write(&self) -> u64 {
        self.cache_write_5m.saturating_add(self.cache_write_1h)
    }
}

/// Where an Anthropic stream reports its usage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UsageAt {
    /// `message_start` carries the whole usage; `message_delta` only the
    /// final `output_tokens`.
    Start,
    /// `message_start` carries zeros; `message_delta` carries everything.
    Delta,
    /// The real API's shape: `message_start` carries input and cache counts
    /// with `output_tokens: 1`, `message_delta` the final `output_tokens`
    /// and again the input and cache counts.
    #[default]
    Both,
}

/// The shape of the OpenAI stream's usage chunk (sent only when the request
/// asks for it with `stream_options.include_usage`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FinalChunk {
    /// A separate last chunk with `"choices": []` (the real API).
    #[default]
    EmptyChoices,
    /// A separate last chunk with `"choices": null` (some compatible servers).
    NullChoices,
    /// No separate chunk: the chunk with the `finish_reason` carries the usage.
    WithChoices,
    /// No usage at all, even though the request asked for it.
    Absent,
}

/// One tool call of a scripted reply. The same call serves either wire
/// format: Anthropic's `tool_use` block and OpenAI's `tool_calls` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakeToolCall {
    /// The call's ID, sent as it is (the real ones look like `toolu_...`
    /// for Anthropic and `call_...` for OpenAI).
    pub id: String,
    /// The tool's name.
    pub name: String,
    /// The arguments as JSON text. Streams and OpenAI's whole reply send it
    /// verbatim (so a test may script malformed arguments); Anthropic's whole
    /// message parses it into `input` (empty text: `{}`; text that does not
    /// parse: the text as a JSON string, which the real API never sends).
    pub arguments_json: String,
}

impl FakeToolCall {
    /// A call of `name` with these arguments (JSON text).
    pub fn new(
        id: impl Into<String>,
        name: impl Into<String>,
        arguments_json: impl Into<String>,
    ) -> FakeToolCall {
        FakeToolCall {
            id: id.into(),
            name: name.into(),
            arguments_json: arguments_json.into(),
        }
    }
}

/// How many characters each streamed piece of a tool call's arguments has by
/// default: few enough that keys, strings and escapes are cut mid-way.
pub const ARGUMENT_PIECE_CHARS: usize = 5;

/// Where streamed arguments are cut.
#[derive(Clone, Debug)]
pub(crate) enum ArgumentSplit {
    /// Every this many characters.
    Every(usize),
    /// At these byte offsets (each moved forward to a character boundary).
    At(Arc<[usize]>),
}

impl ArgumentSplit {
    /// The pieces of `arguments`, none empty; no pieces for empty arguments.
    pub(crate) fn pieces<'a>(&self, arguments: &'a str) -> Vec<&'a str> {
        let mut cuts: Vec<usize> = match self {
            ArgumentSplit::Every(n) => {
                let n = (*n).max(1);
                arguments
                    .char_indices()
                    .enumerate()
                    .filter(|(i, _)| *i > 0 && i % n == 0)
                    .map(|(_, (at, _))| at)
                    .collect()
            }
            ArgumentSplit::At(offsets) => offsets
                .iter()
                .map(|&at| {
                    // A piece travels as a JSON string, so it must be whole
                    // UTF-8: a cut inside a character moves past it.
                    let mut at = at.min(arguments.len());
                    while !arguments.is_char_boundary(at) {
                        at += 1;
                    }
                    at
                })
                .collect(),
        };
        cuts.retain(|&at| at > 0 && at < arguments.len());
        cuts.sort_unstable();
        cuts.dedup();
        let mut pieces = Vec::with_capacity(cuts.len() + 1);
        let mut start = 0;
        for cut in cuts {
            pieces.push(&arguments[start..cut]);
            start = cut;
        }
        if start < arguments.len() {
            pieces.push(&arguments[start..]);
        }
        pieces
    }
}

/// The text of a reply: explicit deltas, or one delta repeated lazily.
#[derive(Clone, Debug)]
pub(crate) enum Text {
    Chunks(Arc<[String]>),
    Repeated { chunk: Arc<str>, count: u64 },
}

impl Text {
    /// How many text deltas the stream sends.
    pub(crate) fn len(&self) -> u64 {
        match self {
            Text::Chunks(chunks) => chunks.len() as u64,
            Text::Repeated { count, .. } => *count,
        }
    }

    /// The whole text, for a non-streamed reply.
    pub(crate) fn full(&self) -> String {
        match self {
            Text::Chunks(chunks) => chunks.concat(),
            Text::Repeated { chunk, count } => {
                let count = usize::try_from(*count).unwrap_or(usize::MAX);
                chunk.repeat(count)
            }
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) enum Body {
    Text(Text),
    /// The request's last user message after a prefix.
    Echo(String),
    HttpError {
        status: u16,
        kind: String,
        message: String,
    },
}

/// What interrupts a stream after some text deltas.
#[derive(Clone, Debug)]
pub(crate) enum Interrupt {
    /// Drop the connection.
    Cut,
    /// Send the format's mid-stream error event of this kind.
    Error(String),
}

/// A scripted reply. Build one with [`Reply::text`], [`Reply::chunks`],
/// [`Reply::repeated`], [`Reply::tool_calls`] or [`Reply::http_error`], then
/// adjust it with the builder methods. The same reply serves either wire
/// format.
///
/// A reply is text, then its tool calls (if any). A stream sends *deltas*:
/// the text deltas, then the pieces of each call's arguments (a call with
/// empty arguments counts one). Delays, cuts, errors and the default output
/// usage count deltas of both kinds.
#[derive(Clone, Debug)]
pub struct Reply {
    pub(crate) body: Body,
    pub(crate) usage: Option<FakeUsage>,
    pub(crate) stop_reason: Option<String>,
    pub(crate) usage_at: UsageAt,
    pub(crate) final_chunk: FinalChunk,
    pub(crate) first_byte_delay: Duration,
    pub(crate) first_token_delay: Duration,
    pub(crate) chunk_delay: Duration,
    pub(crate) interrupt: Option<(u64, Interrupt)>,
    pub(crate) hang: bool,
    pub(crate) retry_after: Option<u64>,
    pub(crate) tool_calls: Vec<FakeToolCall>,
    pub(crate) argument_split: ArgumentSplit,
    pub(crate) interleave_tool_calls: bool,
    pub(crate) input_per_byte: bool,
}

/// How many characters [`Reply::text`] puts in each delta.
pub const TEXT_CHUNK_CHARS: usize = 4;

impl Reply {
    fn with_body(body: Body) -> Reply {
        Reply {
            body,
            usage: None,
            stop_reason: None,
            usage_at: UsageAt::default(),
            final_chunk: FinalChunk::default(),
            first_byte_delay: Duration::ZERO,
            first_token_delay: Duration::ZERO,
            chunk_delay: Duration::ZERO,
            interrupt: None,
            hang: false,
            retry_after: None,
            tool_calls: Vec::new(),
            argument_split: ArgumentSplit::Every(ARGUMENT_PIECE_CHARS),
            interleave_tool_calls: false,
            input_per_byte: false,
        }
    }

    /// A text reply, streamed in deltas of [`TEXT_CHUNK_CHARS`] characters.
    pub fn text(text: &str) -> Reply {
        Reply::with_body(Body::Text(text_chunks(text)))
    }

    /// A reply that answers `prefix` followed by the text of the request's
    /// last user message, so a test can see what each call was asked.
    pub fn echo(prefix: &str) -> Reply {
        Reply::with_body(Body::Echo(prefix.to_owned()))
    }

    /// The reply to `request`: an echo becomes its text.
    pub(crate) fn answering(
        mut self,
        request: &serde_json::Map<String, serde_json::Value>,
    ) -> Reply {
        if let Body::Echo(prefix) = &self.body {
            let text = format!("{prefix}{}", last_user_text(request));
            self.body = Body::Text(text_chunks(&text));
        }
        if self.input_per_byte {
            let mut usage = self.effective_usage();
            usage.input = prompt_text_bytes(request);
            self.usage = Some(usage);
        }
        self
    }

    /// Bills the prompt at one input token per byte of the text it carries
    /// (the most a byte-level tokenizer can count): the system prompt, each
    /// message's text, tool calls' names and arguments, tool results, and
    /// the tools' names, descriptions and schemas. Images count nothing.
    pub fn bill_input_per_byte(mut self) -> Reply {
        self.input_per_byte = true;
        self
    }

    /// A text reply streamed as exactly these deltas.
    pub fn chunks<I: IntoIterator<Item = S>, S: Into<String>>(chunks: I) -> Reply {
        let chunks: Vec<String> = chunks.into_iter().map(Into::into).collect();
        Reply::with_body(Body::Text(Text::Chunks(chunks.into())))
    }

    /// `count` deltas of `chunk`, generated as the client reads (a stream of
    /// any length holds one delta in memory). A non-streamed request gets the
    /// whole text at once, which is held in memory.
    pub fn repeated(chunk: &str, count: u64) -> Reply {
        Reply::with_body(Body::Text(Text::Repeated {
            chunk: Arc::from(chunk),
            count,
        }))
    }

    /// An HTTP error response with the format's real error body:
    /// Anthropic `{"type":"error","error":{"type":kind,"message":..},"request_id":..}`
    /// (and a `request-id` header), OpenAI
    /// `{"error":{"message":..,"type":..,"param":null,"code":..}}`. `kind`
    /// is an Anthropic error type (`rate_limit_error`, `overloaded_error`,
    /// ...), translated for OpenAI; an unknown kind is sent as it is. A 429
    /// carries `retry-after: 1` unless [`Reply::retry_after`] says otherwise.
    pub fn http_error(status: u16, kind: &str, message: &str) -> Reply {
        Reply::with_body(Body::HttpError {
            status,
            kind: kind.to_owned(),
            message: message.to_owned(),
        })
    }

    /// A reply of tool calls only (no text). Add more with
    /// [`Reply::with_tool_call`].
    pub fn tool_calls<I: IntoIterator<Item = FakeToolCall>>(calls: I) -> Reply {
        let mut reply = Reply::with_body(Body::Text(Text::Chunks(Arc::from([]))));
        reply.tool_calls = calls.into_iter().collect();
        reply
    }

    /// Adds a tool call after the reply's text and its earlier calls (calls
    /// of one reply are parallel calls). `arguments_json` is JSON text (see
    /// [`FakeToolCall::arguments_json`]). A reply with tool calls stops with
    /// `tool_use` / `tool_calls` unless [`Reply::stop_reason`] says
    /// otherwise. Ignored by an HTTP error reply.
    pub fn with_tool_call(mut self, id: &str, name: &str, arguments_json: &str) -> Reply {
        self.tool_calls
            .push(FakeToolCall::new(id, name, arguments_json));
        self
    }

    /// Streams each call's arguments cut at these byte offsets (the same
    /// offsets for every call; an offset inside a UTF-8 character moves to
    /// the character's end, offsets at or past the end are ignored). Any
    /// other place is fair: inside a key, a number, or an escape such as
    /// between `\` and `"`. Default: every [`ARGUMENT_PIECE_CHARS`] characters.
    pub fn split_arguments_at(mut self, offsets: &[usize]) -> Reply {
        self.argument_split = ArgumentSplit::At(Arc::from(offsets));
        self
    }

    /// Streams each call's arguments in pieces of this many characters (at
    /// least 1).
    pub fn split_arguments_every(mut self, chars: usize) -> Reply {
        self.argument_split = ArgumentSplit::Every(chars.max(1));
        self
    }

    /// OpenAI streams only: send the calls' fragments in turn (the first
    /// fragment of every call, then the second of every call, ...) instead
    /// of one call after the other. Anthropic's content blocks never
    /// overlap, so its streams are unchanged.
    pub fn interleave_tool_calls(mut self, interleave: bool) -> Reply {
        self.interleave_tool_calls = interleave;
        self
    }

    /// The usage to report. Default: 10 input tokens and one output token a
    /// delta (text delta or argument piece), no cache.
    pub fn usage(mut self, usage: FakeUsage) -> Reply {
        self.usage = Some(usage);
        self
    }

    /// The stop reason. Default `end_turn` (Anthropic) and `stop` (OpenAI),
    /// or `tool_use` / `tool_calls` for a reply with tool calls;
    /// a reason of either vocabulary is translated for the other
    /// (`max_tokens` <-> `length`, `tool_use` <-> `tool_calls`,
    /// `refusal` <-> `content_filter`, `end_turn`/`stop_sequence` -> `stop`);
    /// anything else is sent as it is.
    pub fn stop_reason(mut self, reason: &str) -> Reply {
        self.stop_reason = Some(reason.to_owned());
        self
    }

    /// Where an Anthropic stream reports usage (default [`UsageAt::Both`]).
    pub fn anthropic_usage_in(mut self, at: UsageAt) -> Reply {
        self.usage_at = at;
        self
    }

    /// The shape of an OpenAI stream's usage chunk (default
    /// [`FinalChunk::EmptyChoices`]).
    pub fn openai_usage_chunk(mut self, shape: FinalChunk) -> Reply {
        self.final_chunk = shape;
        self
    }

    /// Wait this long before sending the response headers.
    pub fn first_byte_delay(mut self, d: Duration) -> Reply {
        self.first_byte_delay = d;
        self
    }

    /// Wait this long after the stream's opening events (headers,
    /// `message_start`, ... already sent) before the first delta.
    pub fn first_token_delay(mut self, d: Duration) -> Reply {
        self.first_token_delay = d;
        self
    }

    /// Wait this long between two deltas.
    pub fn chunk_delay(mut self, d: Duration) -> Reply {
        self.chunk_delay = d;
        self
    }

    /// After `n` deltas, drop the connection abruptly (TCP reset, the
    /// chunked body never terminated): no final events, no usage, no
    /// `[DONE]`. A non-streamed reply sends half its JSON body, then drops.
    pub fn cut_after(mut self, n: usize) -> Reply {
        self.interrupt = Some((n as u64, Interrupt::Cut));
        self
    }

    /// After `n` deltas, send the format's mid-stream error of this
    /// kind (Anthropic `event: error`, OpenAI a `data: {"error":..}` chunk)
    /// and end the stream (no `message_stop`, no `[DONE]`). A non-streamed
    /// reply answers the matching HTTP error instead.
    pub fn error_after(mut self, n: usize, kind: &str) -> Reply {
        self.interrupt = Some((n as u64, Interrupt::Error(kind.to_owned())));
        self
    }

    /// Accept the request and never answer.
    pub fn hang(mut self) -> Reply {
        self.hang = true;
        self
    }

    /// Send `retry-after: secs` with an error response (by default only a
    /// 429 carries it, with 1 second).
    pub fn retry_after(mut self, secs: u64) -> Reply {
        self.retry_after = Some(secs);
        self
    }

    /// The usage this reply reports.
    pub(crate) fn effective_usage(&self) -> FakeUsage {
        match (self.usage, &self.body) {
            (Some(usage), _) => usage,
            (None, Body::Text(text)) => FakeUsage {
                input: 10,
                output: text.len().saturating_add(self.tool_deltas()),
                ..FakeUsage::default()
            },
            (None, Body::HttpError { .. } | Body::Echo(_)) => FakeUsage::default(),
        }
    }
}

// What the server needs of a reply's tool calls, kept apart from the
// public builders.
impl Reply {
    /// The stop reason asked for, or `tool_use` when the reply calls tools.
    pub(crate) fn effective_stop_reason(&self) -> Option<&str> {
        self.stop_reason
            .as_deref()
            .or((!self.tool_calls.is_empty()).then_some("tool_use"))
    }

    /// How many deltas the tool calls stream: one an argument piece, at
    /// least one a call.
    pub(crate) fn tool_deltas(&self) -> u64 {
        self.tool_calls
            .iter()
            .map(|call| {
                self.argument_split
                    .pieces(&call.arguments_json)
                    .len()
                    .max(1) as u64
            })
            .sum()
    }

    /// The calls with their arguments cut into streamed pieces.
    pub(crate) fn planned_calls(&self) -> Vec<PlannedCall> {
        self.tool_calls
            .iter()
            .map(|call| PlannedCall {
                id: call.id.clone(),
                name: call.name.clone(),
                arguments: call.arguments_json.clone(),
                pieces: self
                    .argument_split
                    .pieces(&call.arguments_json)
                    .into_iter()
                    .map(str::to_owned)
                    .collect(),
            })
            .collect()
    }
}

/// A tool call ready for the wire.
#[derive(Clone, Debug)]
pub(crate) struct PlannedCall {
    pub id: String,
    pub name: String,
    /// The whole arguments, for a whole reply.
    pub arguments: String,
    /// The arguments cut for a stream.
    pub pieces: Vec<String>,
}

impl Default for Reply {
    fn default() -> Self {
        Reply::text("Hello from the fake provider.")
    }
}

/// The Anthropic stop reason for a reply's configured one.
pub(crate) fn anthropic_stop_reason(reason: Option<&str>) -> String {
    match reason {
        None | Some("stop") => "end_turn",
        Some("length") => "max_tokens",
        Some("tool_calls" | "function_call") => "tool_use",
        Some("content_filter") => "refusal",
        Some(other) => other,
    }
    .to_owned()
}

/// The OpenAI finish reason for a reply's configured one.
pub(crate) fn openai_finish_reason(reason: Option<&str>) -> String {
    match reason {
        None | Some("end_turn" | "stop_sequence" | "pause_turn") => "stop",
        Some("max_tokens" | "model_context_window_exceeded") => "length",
        Some("tool_use") => "tool_calls",
        Some("refusal") => "content_filter",
        Some(other) => other,
    }
    .to_owned()
}

/// The Anthropic error type for a kind given in either vocabulary.
pub(crate) fn anthropic_error_kind(kind: &str) -> &str {
    match kind {
        "server_error" => "api_error",
        "requests" | "tokens" | "rate_limit_exceeded" => "rate_limit_error",
        "insufficient_quota" => "billing_error",
        other => other,
    }
}

/// The OpenAI `(type, code)` for a kind given in either vocabulary.
pub(crate) fn openai_error_kind(kind: &str) -> (&str, Option<&str>) {
    match kind {
        "authentication_error" | "invalid_api_key" => {
            ("invalid_request_error", Some("invalid_api_key"))
        }
        "permission_error" | "request_too_large" => ("invalid_request_error", None),
        "not_found_error" | "model_not_found" => ("invalid_request_error", Some("model_not_found")),
        "rate_limit_error" | "rate_limit_exceeded" | "requests" => {
            ("requests", Some("rate_limit_exceeded"))
        }
        "tokens" => ("tokens", Some("rate_limit_exceeded")),
        "billing_error" | "insufficient_quota" => {
            ("insufficient_quota", Some("insufficient_quota"))
        }
        "api_error" | "overloaded_error" | "timeout_error" => ("server_error", None),
        other => (other, None),
    }
}

/// The HTTP status that goes with an error kind (for a non-streamed reply
/// scripted with [`Reply::error_after`]).
pub(crate) fn status_for_kind(kind: &str, openai: bool) -> u16 {
    match anthropic_error_kind(kind) {
        "invalid_request_error" => 400,
        "authentication_error" => 401,
        "billing_error" => 402,
        "permission_error" => 403,
        "not_found_error" => 404,
        "request_too_large" => 413,
        "rate_limit_error" => 429,
        "timeout_error" => 504,
        "overloaded_error" if openai => 503,
        "overloaded_error" => 529,
        _ => 500,
    }
}

/// A message for an error of this kind.
pub(crate) fn default_error_message(kind: &str) -> String {
    match anthropic_error_kind(kind) {
        "overloaded_error" => "Overloaded".to_owned(),
        "rate_limit_error" => "Rate limit exceeded (fake provider)".to_owned(),
        "api_error" => "Internal server error".to_owned(),
        other => format!("Fake provider error: {other}"),
    }
}

pub(crate) fn text_chunks(text: &str) -> Text {
    let chars: Vec<char> = text.chars().collect();
    let chunks: Vec<String> = chars
        .chunks(TEXT_CHUNK_CHARS)
        .map(|c| c.iter().collect())
        .collect();
    Text::Chunks(chunks.into())
}

/// The text of the last `user` message of either wire format: a string, or
/// the concatenated `text` parts.
/// The bytes of text a request's prompt carries, in either wire format;
/// see [`Reply::bill_input_per_byte`].
fn prompt_text_bytes(request: &serde_json::Map<String, serde_json::Value>) -> u64 {
    use serde_json::Value;
    fn text_of(value: &Value) -> u64 {
        match value {
            Value::String(s) => s.len() as u64,
            Value::Array(parts) => parts.iter().map(part).sum(),
            _ => 0,
        }
    }
    fn part(value: &Value) -> u64 {
        let str_len = |key: &str| value[key].as_str().map_or(0, |s| s.len() as u64);
        match value["type"].as_str() {
            Some("text") => str_len("text"),
            Some("tool_use") => {
                str_len("id") + str_len("name") + value["input"].to_string().len() as u64
            }
            Some("tool_result") => str_len("tool_use_id") + text_of(&value["content"]),
            _ => 0,
        }
    }
    let system = request.get("system").map_or(0, text_of);
    let messages: u64 = request
        .get("messages")
        .and_then(Value::as_array)
        .map_or(0, |messages| {
            messages
                .iter()
                .map(|m| {
                    let calls: u64 = m["tool_calls"].as_array().map_or(0, |calls| {
                        calls
                            .iter()
                            .map(|c| {
                                let f = &c["function"];
                                (c["id"].as_str().unwrap_or("").len()
                                    + f["name"].as_str().unwrap_or("").len()
                                    + f["arguments"].as_str().unwrap_or("").len())
                                    as u64
                            })
                            .sum()
                    });
                    let answered = m["tool_call_id"].as_str().map_or(0, |id| id.len() as u64);
                    text_of(&m["content"]) + calls + answered
                })
                .sum()
        });
    let tools: u64 = request
        .get("tools")
        .and_then(Value::as_array)
        .map_or(0, |tools| {
            tools
                .iter()
                .map(|t| {
                    let t = if t["function"].is_object() {
                        &t["function"]
                    } else {
                        t
                    };
                    let schema = if t["parameters"].is_null() {
                        &t["input_schema"]
                    } else {
                        &t["parameters"]
                    };
                    (t["name"].as_str().unwrap_or("").len()
                        + t["description"].as_str().unwrap_or("").len()
                        + schema.to_string().len()) as u64
                })
                .sum()
        });
    system + messages + tools
}

fn last_user_text(request: &serde_json::Map<String, serde_json::Value>) -> String {
    use serde_json::Value;
    let Some(message) = request
        .get("messages")
        .and_then(Value::as_array)
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
    else {
        return String::new();
    };
    match &message["content"] {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts.iter().filter_map(|p| p["text"].as_str()).collect(),
        _ => String::new(),
    }
}
