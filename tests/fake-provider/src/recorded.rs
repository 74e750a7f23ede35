//! A recorded request, and views of what it asked in either wire format:
//! the tools offered, the tool calls and results of its history, its images.
//! The body stays the plain JSON it was; the views only save a test from
//! knowing both formats when it runs one scenario against each.

use serde_json::Value;

/// One request the fake provider received.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// The HTTP method, e.g. `POST`.
    pub method: String,
    /// The request path, e.g. `/v1/messages` (without the query).
    pub path: String,
    /// The request headers in the order received, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body parsed as JSON; a body that is not JSON is kept as a JSON
    /// string of its (lossily decoded) text, and an empty one as `null`.
    pub body: serde_json::Value,
}

/// A tool call in a request's history (an assistant message's).
#[derive(Clone, Debug, PartialEq)]
pub struct SeenToolCall {
    pub id: String,
    pub name: String,
    /// Anthropic's `input`; OpenAI's `arguments` parsed (a JSON string of
    /// the text when it does not parse).
    pub input: Value,
}

/// A tool result in a request's history.
#[derive(Clone, Debug, PartialEq)]
pub struct SeenToolResult {
    /// Anthropic's `tool_use_id`, OpenAI's `tool_call_id`.
    pub tool_call_id: String,
    /// The `content` as sent: a string or a list of parts (null if absent).
    pub content: Value,
    /// Anthropic's `is_error`; OpenAI has no such field, so always false.
    pub is_error: bool,
}

impl SeenToolResult {
    /// The content's text: the string, or the `text` parts joined.
    pub fn text(&self) -> String {
        text_of(&self.content)
    }
}

/// An image part of a request, in either format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SeenImage {
    /// Inline data: Anthropic's `base64` source, or an OpenAI `data:` URL.
    Base64 { media_type: String, data: String },
    /// A URL to fetch (`http(s)`).
    Url(String),
}

impl Recorded {
    /// The first value of a header, its name matched without regard to case.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn messages(&self) -> &[Value] {
        self.body["messages"]
            .as_array()
            .map_or(&[][..], Vec::as_slice)
    }

    /// The names of the tools offered (`tools[].name` for Anthropic,
    /// `tools[].function.name` for OpenAI), in order.
    pub fn tool_names(&self) -> Vec<String> {
        let Some(tools) = self.body["tools"].as_array() else {
            return Vec::new();
        };
        tools
            .iter()
            .filter_map(|tool| {
                tool["name"]
                    .as_str()
                    .or_else(|| tool["function"]["name"].as_str())
                    .map(str::to_owned)
            })
            .collect()
    }

    /// The tool calls of the history's assistant messages, in order:
    /// Anthropic `tool_use` blocks, OpenAI `tool_calls` entries.
    pub fn tool_calls(&self) -> Vec<SeenToolCall> {
        let mut calls = Vec::new();
        for message in self.messages().iter().filter(|m| m["role"] == "assistant") {
            for call in message["tool_calls"].as_array().into_iter().flatten() {
                let arguments = call["function"]["arguments"].as_str().unwrap_or("");
                calls.push(SeenToolCall {
                    id: string(&call["id"]),
                    name: string(&call["function"]["name"]),
                    input: serde_json::from_str(arguments)
                        .unwrap_or_else(|_| Value::String(arguments.to_owned())),
                });
            }
            let blocks = message["content"].as_array().into_iter().flatten();
            for block in blocks.filter(|b| b["type"] == "tool_use") {
                calls.push(SeenToolCall {
                    id: string(&block["id"]),
                    name: string(&block["name"]),
                    input: block["input"].clone(),
                });
            }
        }
        calls
    }

    /// The tool results of the history, in order: Anthropic `tool_result`
    /// blocks of user messages, OpenAI `role: "tool"` messages.
    pub fn tool_results(&self) -> Vec<SeenToolResult> {
        let mut results = Vec::new();
        for message in self.messages() {
            if message["role"] == "tool" {
                results.push(SeenToolResult {
                    tool_call_id: string(&message["tool_call_id"]),
                    content: message["content"].clone(),
                    is_error: false,
                });
                continue;
            }
            let blocks = message["content"].as_array().into_iter().flatten();
            for block in blocks.filter(|b| b["type"] == "tool_result") {
                results.push(SeenToolResult {
                    tool_call_id: string(&block["tool_use_id"]),
                    content: block["content"].clone(),
                    is_error: block["is_error"].as_bool().unwrap_or(false),
                });
            }
        }
        results
    }

    /// Every image part of the messages, in order, tool results' included:
    /// Anthropic `image` blocks, OpenAI `image_url` parts.
    pub fn images(&self) -> Vec<SeenImage> {
        let mut images = Vec::new();
        for message in self.messages() {
            collect_images(&message["content"], &mut images);
        }
        images
    }
}

fn string(value: &Value) -> String {
    value.as_str().unwrap_or_default().to_owned()
}

fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts.iter().filter_map(|p| p["text"].as_str()).collect(),
        _ => String::new(),
    }
}

fn collect_images(content: &Value, out: &mut Vec<SeenImage>) {
    for part in content.as_array().into_iter().flatten() {
        match part["type"].as_str() {
            Some("image") => {
                let source = &part["source"];
                match source["type"].as_str() {
                    Some("base64") => out.push(SeenImage::Base64 {
                        media_type: string(&source["media_type"]),
                        data: string(&source["data"]),
                    }),
                    Some("url") => out.push(SeenImage::Url(string(&source["url"]))),
                    _ => {}
                }
            }
            Some("image_url") => {
                let url = part["image_url"]["url"].as_str().unwrap_or_default();
                out.push(data_url(url).unwrap_or_else(|| SeenImage::Url(url.to_owned())));
            }
            // A tool result may carry images of its own.
            Some("tool_result") => collect_images(&part["content"], out),
            _ => {}
        }
    }
}

/// `data:<media type>;base64,<data>` as the image it holds.
fn data_url(url: &str) -> Option<SeenImage> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    let media_type = meta.strip_suffix(";base64")?;
    Some(SeenImage::Base64 {
        media_type: media_type.to_owned(),
        data: data.to_owned(),
    })
}
