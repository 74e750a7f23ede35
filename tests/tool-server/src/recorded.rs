//! A recorded request, with accessors for the fields of Lambent's tool call
//! body `{"tool_call_id","name","input","session_id"?,"run_id"?}`.

use serde_json::Value;

/// One request the tool server received.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolRequest {
    /// The HTTP method, e.g. `POST`.
    pub method: String,
    /// The request path, e.g. `/tools/weather` (without the query).
    pub path: String,
    /// The request headers in the order received, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The `Idempotency-Key` header's value, if the request had one.
    pub idempotency_key: Option<String>,
    /// The body parsed as JSON; a body that is not JSON is kept as a JSON
    /// string of its (lossily decoded) text, and an empty one as `null`.
    pub body: Value,
}

impl ToolRequest {
    /// The first value of a header, its name matched without regard to case.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body's `tool_call_id`, if it is a string.
    pub fn tool_call_id(&self) -> Option<&str> {
        self.body.get("tool_call_id").and_then(Value::as_str)
    }

    /// The body's `name` (the tool's name), if it is a string.
    pub fn name(&self) -> Option<&str> {
        self.body.get("name").and_then(Value::as_str)
    }

    /// The body's `input`, if present (any JSON value, `null` included).
    pub fn input(&self) -> Option<&Value> {
        self.body.get("input")
    }

    /// The body's `session_id`, if it is a string.
    pub fn session_id(&self) -> Option<&str> {
        self.body.get("session_id").and_then(Value::as_str)
    }

    /// The body's `run_id`, if it is a string.
    pub fn run_id(&self) -> Option<&str> {
        self.body.get("run_id").and_then(Value::as_str)
    }
}
