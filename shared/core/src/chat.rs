//! A conversation as Lambent sees it, whatever the provider: who speaks,
//! what was said (text, images, tool calls and their results), the tools a
//! model may use, and what a call used.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    User,
    Assistant,
}

/// One turn of the conversation sent to the model.
///
/// The results of tool calls travel in a user turn, all results of one
/// assistant turn together, as Anthropic's format has them; the OpenAI
/// format sends each as a `role: "tool"` message instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Turn {
    pub role: Role,
    pub parts: Vec<Part>,
}

impl Turn {
    /// A turn of text only.
    pub fn text(role: Role, text: impl Into<String>) -> Turn {
        Turn {
            role,
            parts: vec![Part::Text(text.into())],
        }
    }

    /// A model's reply as the next call sends it again: its text (if any),
    /// then its tool calls.
    pub fn reply(text: &str, calls: &[ToolCall]) -> Turn {
        let mut parts = Vec::with_capacity(calls.len() + 1);
        if !text.is_empty() {
            parts.push(Part::Text(text.to_owned()));
        }
        parts.extend(calls.iter().cloned().map(Part::ToolCall));
        Turn {
            role: Role::Assistant,
            parts,
        }
    }

    /// The results of tool calls, as one user turn.
    pub fn results(results: impl IntoIterator<Item = ToolResult>) -> Turn {
        Turn {
            role: Role::User,
            parts: results.into_iter().map(Part::ToolResult).collect(),
        }
    }

    /// The text parts, joined.
    pub fn joined_text(&self) -> String {
        self.parts
            .iter()
            .filter_map(|p| match p {
                Part::Text(text) => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }

    /// The turn's single text, if text is all it holds: such a turn goes
    /// on the wire as a plain string.
    pub fn as_plain_text(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [Part::Text(text)] => Some(text),
            _ => None,
        }
    }
}

/// One piece of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Text(String),
    Image(Image),
    /// The model asks for a tool (assistant turns only).
    ToolCall(ToolCall),
    /// The answer to a tool call (user turns only).
    ToolResult(ToolResult),
}

/// An image, inline or by URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Image {
    /// Base64 data of the given media type (`image/png`, ...).
    Base64 { media_type: String, data: String },
    /// An https URL (or a `data:` URL) the provider fetches.
    Url(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ToolCall {
    /// The provider's call ID (`toolu_…`, `call_…`); results name it.
    pub id: String,
    pub name: String,
    /// The arguments: a JSON object.
    #[schema(value_type = Object)]
    pub input: Value,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolResult {
    pub tool_call_id: String,
    pub content: String,
    #[serde(default)]
    pub is_error: bool,
}

/// A part of a message's content as the API and the store write it:
/// `{"type": "text", "text"}` or `{"type": "image", "source": …}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ContentPart {
    Text { text: String },
    Image { source: ImageSource },
}

/// `{"type": "base64", "media_type", "data"}` or `{"type": "url", "url"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ImageSource {
    Base64 { media_type: String, data: String },
    Url { url: String },
}

impl From<ContentPart> for Part {
    fn from(part: ContentPart) -> Part {
        match part {
            ContentPart::Text { text } => Part::Text(text),
            ContentPart::Image {
                source: ImageSource::Base64 { media_type, data },
            } => Part::Image(Image::Base64 { media_type, data }),
            ContentPart::Image {
                source: ImageSource::Url { url },
            } => Part::Image(Image::Url(url)),
        }
    }
}

impl Part {
    /// The part as content, if it is text or an image.
    pub fn as_content(&self) -> Option<ContentPart> {
        match self {
            Part::Text(text) => Some(ContentPart::Text { text: text.clone() }),
            Part::Image(Image::Base64 { media_type, data }) => Some(ContentPart::Image {
                source: ImageSource::Base64 {
                    media_type: media_type.clone(),
                    data: data.clone(),
                },
            }),
            Part::Image(Image::Url(url)) => Some(ContentPart::Image {
                source: ImageSource::Url { url: url.clone() },
            }),
            Part::ToolCall(_) | Part::ToolResult(_) => None,
        }
    }
}

/// A tool the model may call: a client tool (the caller answers its calls)
/// or, with `http`, a server tool (Lambent calls it). Providers get only the
/// name, description and schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolSpec {
    /// `^[A-Za-z0-9_-]{1,64}$`, unique among the agent's tools.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A JSON Schema object for the arguments (`"type": "object"`).
    #[schema(value_type = Object)]
    pub input_schema: Value,
    /// Makes this a server tool: Lambent POSTs each call to this URL (an
    /// agent's tools only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpToolSpec>,
    /// A server tool's call waits for a person's approval (needs `http`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub requires_approval: bool,
}

impl ToolSpec {
    /// A client tool: a name, a description and a schema.
    pub fn client(
        name: impl Into<String>,
        description: Option<String>,
        input_schema: Value,
    ) -> ToolSpec {
        ToolSpec {
            name: name.into(),
            description,
            input_schema,
            http: None,
            requires_approval: false,
        }
    }

    /// What a provider is told of the tool: its name, description and
    /// schema, without the server tool's settings.
    pub fn offered(&self) -> ToolSpec {
        ToolSpec::client(
            self.name.clone(),
            self.description.clone(),
            self.input_schema.clone(),
        )
    }
}

/// Where Lambent calls a server tool. Header values are secrets: encrypted
/// at rest and answered masked.
// Never logged either: `Debug` shows the header names only.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpToolSpec {
    /// https (http only where private URLs are allowed); passes the same SSRF
    /// guard as providers' base URLs.
    #[schema(example = "https://tools.example.com/weather")]
    pub url: String,
    /// Sent with every call (up to 16). Answers show each value masked:
    /// `****` and its last 4 characters (only `****` when shorter than 12);
    /// a PATCH that sends a masked value back keeps the stored one.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schema(example = json!({"Authorization": "Bearer ****f00d"}))]
    pub headers: BTreeMap<String, String>,
    /// 1 to 300000 (default 30000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 300000)]
    pub timeout_ms: Option<u64>,
}

impl std::fmt::Debug for HttpToolSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpToolSpec")
            .field("url", &self.url)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("timeout_ms", &self.timeout_ms)
            .finish()
    }
}

/// A server tool's timeout when it names none.
pub const DEFAULT_TOOL_TIMEOUT_MS: u64 = 30_000;
/// The longest timeout a server tool may have.
pub const MAX_TOOL_TIMEOUT_MS: u64 = 300_000;
/// The most headers of one server tool.
pub const MAX_TOOL_HEADERS: usize = 16;
/// The most bytes of one header value (KMS encrypts at most 4 KiB at once).
pub const MAX_TOOL_HEADER_VALUE: usize = 4096;
/// Headers Lambent sets itself (or that would break the request).
const RESERVED_HEADERS: [&str; 6] = [
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "idempotency-key",
];

/// What answers show of a header value: `****` and its last 4 characters
/// when it has at least 12 bytes, else `****` alone.
pub fn masked_header_value(value: &str) -> String {
    if value.len() < 12 {
        return "****".to_owned();
    }
    let tail: Vec<char> = value.chars().rev().take(4).collect();
    format!("****{}", tail.into_iter().rev().collect::<String>())
}

/// Whether a header value has the shape of a masked one (`****`, or `****`
/// and 4 more characters).
pub fn looks_masked(value: &str) -> bool {
    value
        .strip_prefix("****")
        .is_some_and(|rest| rest.is_empty() || rest.chars().count() == 4)
}

/// An HTTP token (RFC 9110 `tchar`s), as a header name must be.
fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Checks a tool's server settings (the URL's SSRF guard is the caller's:
/// it needs the network rules); the error names the field and never echoes
/// a header value.
fn check_server_tool(i: usize, tool: &ToolSpec) -> Result<(), Error> {
    let bad = |field: String, why: &str| Err(Error::BadRequest(format!("{field}: {why}")));
    let Some(http) = &tool.http else {
        if tool.requires_approval {
            return bad(
                format!("tools[{i}].requires_approval"),
                "only a server tool (with `http`) can require approval",
            );
        }
        return Ok(());
    };
    if http
        .timeout_ms
        .is_some_and(|t| !(1..=MAX_TOOL_TIMEOUT_MS).contains(&t))
    {
        return bad(
            format!("tools[{i}].http.timeout_ms"),
            &format!("must be 1 to {MAX_TOOL_TIMEOUT_MS}"),
        );
    }
    if http.headers.len() > MAX_TOOL_HEADERS {
        return bad(
            format!("tools[{i}].http.headers"),
            &format!("at most {MAX_TOOL_HEADERS} headers"),
        );
    }
    let mut seen: Vec<String> = Vec::with_capacity(http.headers.len());
    for (name, value) in &http.headers {
        if !is_token(name) {
            return bad(
                format!("tools[{i}].http.headers"),
                &format!("{name:?} is not a valid header name"),
            );
        }
        let field = format!("tools[{i}].http.headers.{name}");
        let lower = name.to_ascii_lowercase();
        if RESERVED_HEADERS.contains(&lower.as_str()) {
            return bad(field, "Lambent sets this header itself");
        }
        if seen.contains(&lower) {
            return bad(field, "named twice (header names ignore case)");
        }
        seen.push(lower);
        if value.is_empty() {
            return bad(field, "must not be empty");
        }
        if value.len() > MAX_TOOL_HEADER_VALUE {
            return bad(field, &format!("at most {MAX_TOOL_HEADER_VALUE} bytes"));
        }
        if !value
            .bytes()
            .all(|b| b.is_ascii_graphic() || b == b' ' || b == b'\t')
        {
            return bad(
                field,
                "may contain only visible ASCII characters, spaces and tabs",
            );
        }
    }
    Ok(())
}

/// The most tools one agent or call may offer (OpenAI's limit).
pub const MAX_TOOLS: usize = 128;
/// The most bytes of one tool's description.
const MAX_TOOL_DESCRIPTION: usize = 10_000;
/// The most bytes of one tool's schema, as JSON.
const MAX_TOOL_SCHEMA: usize = 64 * 1024;

/// Checks tools as both providers would take them: a valid, unique name, an
/// object schema; and a server tool's settings (timeout, headers;
/// `requires_approval` only with `http`), all but the URL's SSRF guard. The
/// error names the field (`tools[2].name`, `tools[1].http.timeout_ms`).
pub fn check_tools(tools: &[ToolSpec], choice: &ToolChoice) -> Result<(), Error> {
    let bad = |field: String, why: &str| Err(Error::BadRequest(format!("{field}: {why}")));
    if tools.len() > MAX_TOOLS {
        return bad("tools".into(), &format!("at most {MAX_TOOLS} tools"));
    }
    for (i, tool) in tools.iter().enumerate() {
        let valid_name = !tool.name.is_empty()
            && tool.name.len() <= 64
            && tool
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !valid_name {
            return bad(
                format!("tools[{i}].name"),
                "must match ^[A-Za-z0-9_-]{1,64}$",
            );
        }
        if tools[..i].iter().any(|t| t.name == tool.name) {
            return bad(
                format!("tools[{i}].name"),
                &format!("{:?} is already a tool of this agent", tool.name),
            );
        }
        if tool
            .description
            .as_ref()
            .is_some_and(|d| d.len() > MAX_TOOL_DESCRIPTION)
        {
            return bad(
                format!("tools[{i}].description"),
                &format!("at most {MAX_TOOL_DESCRIPTION} bytes"),
            );
        }
        let schema = &tool.input_schema;
        let is_object_schema = schema.is_object()
            && schema
                .get("type")
                .is_none_or(|t| t == &Value::String("object".into()));
        if !is_object_schema {
            return bad(
                format!("tools[{i}].input_schema"),
                "must be a JSON Schema object with \"type\": \"object\"",
            );
        }
        if schema.to_string().len() > MAX_TOOL_SCHEMA {
            return bad(
                format!("tools[{i}].input_schema"),
                &format!("at most {MAX_TOOL_SCHEMA} bytes"),
            );
        }
        check_server_tool(i, tool)?;
    }
    match choice {
        ToolChoice::Tool(name) if !tools.iter().any(|t| &t.name == name) => bad(
            "tool_choice".into(),
            &format!("{name:?} is not one of the tools"),
        ),
        ToolChoice::Any | ToolChoice::Tool(_) if tools.is_empty() => {
            bad("tool_choice".into(), "needs tools")
        }
        _ => Ok(()),
    }
}

/// Whether and which tool the model must call. On the wire: `"auto"`,
/// `"any"`, `"none"` or `{"name": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ToolChoice {
    /// The model decides.
    #[default]
    Auto,
    /// Some tool, the model picks which.
    Any,
    /// No tool.
    None,
    /// This tool.
    Tool(String),
}

impl ToolChoice {
    pub fn as_wire(&self) -> Value {
        match self {
            ToolChoice::Auto => Value::String("auto".into()),
            ToolChoice::Any => Value::String("any".into()),
            ToolChoice::None => Value::String("none".into()),
            ToolChoice::Tool(name) => serde_json::json!({ "name": name }),
        }
    }

    pub fn from_wire(value: &Value) -> Option<ToolChoice> {
        match value {
            Value::String(s) => match s.as_str() {
                "auto" => Some(ToolChoice::Auto),
                "any" => Some(ToolChoice::Any),
                "none" => Some(ToolChoice::None),
                _ => None,
            },
            Value::Object(o) if o.len() == 1 => o
                .get("name")?
                .as_str()
                .map(|n| ToolChoice::Tool(n.to_owned())),
            _ => None,
        }
    }
}

impl Serialize for ToolChoice {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.as_wire().serialize(s)
    }
}

impl<'de> Deserialize<'de> for ToolChoice {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        ToolChoice::from_wire(&value).ok_or_else(|| {
            serde::de::Error::custom(r#"expected "auto", "any", "none" or {"name": "<tool>"}"#)
        })
    }
}

impl utoipa::PartialSchema for ToolChoice {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, SchemaType, Type};
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(SchemaType::new(Type::String))
                    .enum_values(Some(["auto", "any", "none"])),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(SchemaType::new(Type::Object))
                    .property(
                        "name",
                        ObjectBuilder::new().schema_type(SchemaType::new(Type::String)),
                    )
                    .required("name")
                    .additional_properties(Some(
                        utoipa::openapi::schema::AdditionalProperties::FreeForm(false),
                    )),
            )
            .into()
    }
}

impl utoipa::ToSchema for ToolChoice {}

/// Why the model stopped, in one vocabulary whatever the provider's
/// (Anthropic's names; OpenAI's `stop`, `length`, `tool_calls` map onto them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    EndTurn,
    MaxTokens,
    StopSequence,
    ToolUse,
    /// Anything else, as the provider named it.
    Other(String),
}

impl StopReason {
    /// From Anthropic's `stop_reason` or OpenAI's `finish_reason`.
    pub fn from_provider(reason: &str) -> StopReason {
        match reason {
            "end_turn" | "stop" => StopReason::EndTurn,
            "max_tokens" | "length" => StopReason::MaxTokens,
            "stop_sequence" => StopReason::StopSequence,
            "tool_use" | "tool_calls" | "function_call" => StopReason::ToolUse,
            other => StopReason::Other(other.to_owned()),
        }
    }

    /// Anthropic's name.
    pub fn anthropic(&self) -> &str {
        match self {
            StopReason::EndTurn => "end_turn",
            StopReason::MaxTokens => "max_tokens",
            StopReason::StopSequence => "stop_sequence",
            StopReason::ToolUse => "tool_use",
            StopReason::Other(other) => other,
        }
    }

    /// OpenAI's `finish_reason`.
    pub fn openai(&self) -> &str {
        match self {
            StopReason::EndTurn | StopReason::StopSequence => "stop",
            StopReason::MaxTokens => "length",
            StopReason::ToolUse => "tool_calls",
            StopReason::Other(other) => other,
        }
    }
}

/// Token counts of one call, normalised across providers. The four
/// categories are disjoint: `input_tokens` excludes cache reads and writes
/// (Anthropic reports it that way; for OpenAI it is `prompt_tokens` minus
/// `cached_tokens`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    /// All cache writes, 5-minute and 1-hour.
    pub cache_write_tokens: u64,
    /// The part of `cache_write_tokens` written for one hour (Anthropic
    /// prices it higher); zero when the provider does not split them.
    pub cache_write_1h_tokens: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_reasons_map_both_ways() {
        for (openai, anthropic) in [
            ("stop", "end_turn"),
            ("length", "max_tokens"),
            ("tool_calls", "tool_use"),
        ] {
            assert_eq!(StopReason::from_provider(openai).anthropic(), anthropic);
            assert_eq!(StopReason::from_provider(anthropic).openai(), openai);
        }
        assert_eq!(StopReason::from_provider("refusal").openai(), "refusal");
        assert_eq!(StopReason::from_provider("stop_sequence").openai(), "stop");
    }

    fn tool(name: &str, schema: Value) -> ToolSpec {
        ToolSpec::client(name, None, schema)
    }

    fn server_tool(http: Value) -> ToolSpec {
        serde_json::from_value(serde_json::json!({
            "name": "search",
            "input_schema": {"type": "object"},
            "http": http,
        }))
        .unwrap()
    }

    #[test]
    fn server_tools_are_checked_field_by_field_without_echoing_values() {
        let ok = server_tool(serde_json::json!({
            "url": "https://tools.example.com/search",
            "headers": {"Authorization": "Bearer SECRET-value\twith tab", "X-Team": "a"},
            "timeout_ms": 300000,
        }));
        assert!(check_tools(std::slice::from_ref(&ok), &ToolChoice::Auto).is_ok());
        let mut approving = ok.clone();
        approving.requires_approval = true;
        assert!(check_tools(&[approving], &ToolChoice::Auto).is_ok());

        let secret = "SECRET-\u{7f}-value";
        let headers = |pairs: Vec<(String, String)>| serde_json::json!({"url": "https://x.example/", "headers": pairs.into_iter().collect::<BTreeMap<_, _>>()});
        let many: Vec<(String, String)> = (0..17).map(|n| (format!("X-{n}"), "v".into())).collect();
        let cases = [
            (
                serde_json::json!({"url": "https://x.example/", "timeout_ms": 0}),
                "tools[1].http.timeout_ms",
            ),
            (
                serde_json::json!({"url": "https://x.example/", "timeout_ms": 300001}),
                "tools[1].http.timeout_ms",
            ),
            (headers(many), "tools[1].http.headers"),
            (
                headers(vec![("Bad Name".into(), "v".into())]),
                "tools[1].http.headers",
            ),
            (
                headers(vec![("".into(), "v".into())]),
                "tools[1].http.headers",
            ),
            (
                headers(vec![("Content-Type".into(), "v".into())]),
                "tools[1].http.headers.Content-Type",
            ),
            (
                headers(vec![("idempotency-KEY".into(), "v".into())]),
                "tools[1].http.headers.idempotency-KEY",
            ),
            (
                headers(vec![("HOST".into(), "v".into())]),
                "tools[1].http.headers.HOST",
            ),
            (
                headers(vec![
                    ("X-Key".into(), "v".into()),
                    ("x-key".into(), "w".into()),
                ]),
                "tools[1].http.headers.x-key",
            ),
            (
                headers(vec![("X-Key".into(), String::new())]),
                "tools[1].http.headers.X-Key",
            ),
            (
                headers(vec![("X-Key".into(), "v".repeat(4097))]),
                "tools[1].http.headers.X-Key",
            ),
            (
                headers(vec![("X-Key".into(), secret.into())]),
                "tools[1].http.headers.X-Key",
            ),
            (
                headers(vec![("X-Key".into(), "SECRET-é".into())]),
                "tools[1].http.headers.X-Key",
            ),
            (
                headers(vec![("X-Key".into(), "SECRET\nx".into())]),
                "tools[1].http.headers.X-Key",
            ),
        ];
        let first = tool("first", serde_json::json!({}));
        for (http, field) in cases {
            let tools = [first.clone(), server_tool(http.clone())];
            let Err(Error::BadRequest(message)) = check_tools(&tools, &ToolChoice::Auto) else {
                panic!("{http}: accepted");
            };
            assert!(message.starts_with(&format!("{field}: ")), "{message}");
            assert!(!message.contains("SECRET"), "{message}");
        }
        // Approval without `http` means nothing: refused, naming the field.
        let mut plain = tool("plain", serde_json::json!({}));
        plain.requires_approval = true;
        let Err(Error::BadRequest(message)) = check_tools(&[first, plain], &ToolChoice::Auto)
        else {
            panic!("requires_approval without http: accepted");
        };
        assert!(
            message.starts_with("tools[1].requires_approval: "),
            "{message}"
        );
        // The limits themselves pass.
        let widest = server_tool(headers(
            (0..16)
                .map(|n| (format!("X-{n}"), "v".repeat(4096)))
                .collect(),
        ));
        assert!(check_tools(&[widest], &ToolChoice::Auto).is_ok());
    }

    #[test]
    fn server_tool_settings_are_read_strictly_and_hidden_from_debug() {
        let spec = server_tool(serde_json::json!({
            "url": "https://x.example/", "headers": {"X-Key": "SECRET-1234567890"},
        }));
        assert!(!format!("{spec:?}").contains("SECRET"));
        assert!(format!("{spec:?}").contains("X-Key"));
        // The offered tool has no server settings, and serialises as before.
        let offered = spec.offered();
        assert_eq!(
            serde_json::to_value(&offered).unwrap(),
            serde_json::json!({"name": "search", "input_schema": {"type": "object"}})
        );
        for bad in [
            serde_json::json!({"name": "a", "input_schema": {}, "http": {"url": "https://x/", "method": "GET"}}),
            serde_json::json!({"name": "a", "input_schema": {}, "http": {"headers": {}}}),
            serde_json::json!({"name": "a", "input_schema": {}, "http": {"url": "https://x/", "headers": {"X": 1}}}),
            serde_json::json!({"name": "a", "input_schema": {}, "requires_approval": "yes"}),
        ] {
            assert!(
                serde_json::from_value::<ToolSpec>(bad.clone()).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn header_values_are_masked_to_their_last_four_from_twelve_bytes() {
        assert_eq!(masked_header_value("short"), "****");
        assert_eq!(masked_header_value("elevenbytes"), "****");
        assert_eq!(masked_header_value("twelve-bytes"), "****ytes");
        assert_eq!(masked_header_value("Bearer sk-abcdef0123"), "****0123");
        assert!(looks_masked("****") && looks_masked("****0123"));
        assert!(!looks_masked("****012") && !looks_masked("Bearer ****0123"));
    }

    #[test]
    fn tools_are_checked_field_by_field() {
        let object = serde_json::json!({"type": "object", "properties": {}});
        let ok = [
            tool("get_weather", object.clone()),
            tool("time-now", serde_json::json!({})),
        ];
        assert!(check_tools(&ok, &ToolChoice::Tool("time-now".into())).is_ok());
        let cases = [
            (
                vec![tool("has space", object.clone())],
                ToolChoice::Auto,
                "tools[0].name",
            ),
            (
                vec![tool(&"x".repeat(65), object.clone())],
                ToolChoice::Auto,
                "tools[0].name",
            ),
            (
                vec![tool("a", object.clone()), tool("a", object.clone())],
                ToolChoice::Auto,
                "tools[1].name",
            ),
            (
                vec![tool("a", serde_json::json!({"type": "string"}))],
                ToolChoice::Auto,
                "tools[0].input_schema",
            ),
            (
                vec![tool("a", serde_json::json!([1]))],
                ToolChoice::Auto,
                "tools[0].input_schema",
            ),
            (
                vec![tool("a", object.clone())],
                ToolChoice::Tool("b".into()),
                "tool_choice",
            ),
            (Vec::new(), ToolChoice::Any, "tool_choice"),
        ];
        for (tools, choice, field) in cases {
            let Err(Error::BadRequest(message)) = check_tools(&tools, &choice) else {
                panic!("{field}: accepted");
            };
            assert!(message.starts_with(&format!("{field}: ")), "{message}");
        }
    }

    #[test]
    fn tool_choices_read_and_write_their_wire_forms() {
        for wire in [
            serde_json::json!("auto"),
            serde_json::json!("any"),
            serde_json::json!("none"),
            serde_json::json!({"name": "get_weather"}),
        ] {
            let choice: ToolChoice = serde_json::from_value(wire.clone()).unwrap();
            assert_eq!(serde_json::to_value(&choice).unwrap(), wire);
        }
        for bad in [
            serde_json::json!("required"),
            serde_json::json!({"type": "tool"}),
            serde_json::json!(1),
        ] {
            assert!(serde_json::from_value::<ToolChoice>(bad).is_err());
        }
    }

    #[test]
    fn a_turn_of_one_text_is_plain() {
        let turn = Turn::text(Role::User, "hi");
        assert_eq!(turn.as_plain_text(), Some("hi"));
        let mut mixed = turn.clone();
        mixed
            .parts
            .push(Part::Image(Image::Url("https://x/y.png".into())));
        assert_eq!(mixed.as_plain_text(), None);
        assert_eq!(mixed.joined_text(), "hi");
    }
}
