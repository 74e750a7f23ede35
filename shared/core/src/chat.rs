//! A conversation as Lambent sees it, whatever the provider: who speaks,
//! what was said (text, images, tool calls and their results), the tools a
//! model may use, and what a call used.

use serde_json::Value;

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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    /// The provider's call ID (`toolu_…`, `call_…`); results name it.
    pub id: String,
    pub name: String,
    /// The arguments: a JSON object.
    pub input: Value,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolResult {
    pub tool_call_id: String,
    pub content: String,
    pub is_error: bool,
}

/// A tool the model may call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolSpec {
    pub name: String,
    pub description: Option<String>,
    /// A JSON Schema object for the arguments.
    pub input_schema: Value,
}

/// Whether and which tool the model must call.
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
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
