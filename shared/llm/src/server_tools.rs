//! Server tools (issue 14: agents store them and `lambent_app` resolves
//! them into [`HttpTool`]s; the agent loop will call this): Lambent POSTs a
//! tool call to the tool's URL through the same guarded client as provider
//! calls (the SSRF guard on the URL and on every address its name resolves
//! to, no redirects, no proxy). The request is
//! `{"tool_call_id","name","input","session_id"?,"run_id"?}` with
//! `Idempotency-Key: <tool_call_id>`, so a tool can make a resent call
//! (after a crash) harmless. Whatever happens, the caller gets a result for
//! the model: a 2xx body cut at [`MAX_RESULT_BYTES`], or an `is_error` result
//! with a short reason that never echoes the tool's body or an address.

use std::time::Duration;

use futures::TryStreamExt;
use lambent_core::secret::{ExposeSecret, SecretString};
use serde_json::{json, Value};

use crate::client::LlmClient;
use crate::net_guard;

/// The most of a tool's answer the model gets.
pub const MAX_RESULT_BYTES: usize = 64 * 1024;

/// Where and how a server tool is called.
#[derive(Debug, Clone)]
pub struct HttpTool {
    pub url: String,
    /// Header names and their (decrypted) values.
    pub headers: Vec<(String, SecretString)>,
    pub timeout: Duration,
}

/// One call of a server tool, as the model made it.
#[derive(Debug, Clone, Copy)]
pub struct ToolInvocation<'a> {
    pub tool_call_id: &'a str,
    pub name: &'a str,
    pub input: &'a Value,
    pub session_id: Option<&'a str>,
    pub run_id: Option<&'a str>,
}

/// What the model is told a tool answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolAnswer {
    pub content: String,
    pub is_error: bool,
}

impl ToolAnswer {
    fn failed(reason: impl Into<String>) -> ToolAnswer {
        ToolAnswer {
            content: reason.into(),
            is_error: true,
        }
    }
}

impl LlmClient {
    /// Calls a server tool; every failure is an `is_error` answer.
    pub async fn call_tool(&self, tool: &HttpTool, call: ToolInvocation<'_>) -> ToolAnswer {
        if net_guard::check_url(&tool.url, self.settings().allow_private).is_err() {
            return ToolAnswer::failed("the tool's URL is not allowed");
        }
        let mut body = json!({
            "tool_call_id": call.tool_call_id,
            "name": call.name,
            "input": call.input,
        });
        if let Some(session_id) = call.session_id {
            body["session_id"] = json!(session_id);
        }
        if let Some(run_id) = call.run_id {
            body["run_id"] = json!(run_id);
        }
        let mut request = self
            .http()
            .post(&tool.url)
            .header("idempotency-key", call.tool_call_id)
            .json(&body);
        for (name, value) in &tool.headers {
            request = request.header(name.as_str(), value.expose_secret());
        }
        let answered = tokio::time::timeout(tool.timeout, async {
            let response = request
                .send()
                .await
                .map_err(|_| "the tool could not be reached")?;
            let status = response.status();
            if !status.is_success() {
                return Ok(ToolAnswer::failed(format!(
                    "the tool answered HTTP {}",
                    status.as_u16()
                )));
            }
            let content = read_capped(response, MAX_RESULT_BYTES)
                .await
                .map_err(|_| "the tool's answer broke off")?;
            Ok::<_, &str>(ToolAnswer {
                content,
                is_error: false,
            })
        })
        .await;
        match answered {
            Ok(Ok(answer)) => answer,
            Ok(Err(reason)) => ToolAnswer::failed(reason),
            Err(_) => ToolAnswer::failed(format!(
                "the tool did not answer within {} ms",
                tool.timeout.as_millis()
            )),
        }
    }
}

/// At most `max` bytes of a body, cut at a character boundary; the rest is
/// not read.
async fn read_capped(response: reqwest::Response, max: usize) -> Result<String, reqwest::Error> {
    let mut bytes = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.try_next().await? {
        let room = max - bytes.len();
        if chunk.len() >= room {
            bytes.extend_from_slice(&chunk[..room]);
            break;
        }
        bytes.extend_from_slice(&chunk);
    }
    // A character cut at the end is dropped, not replaced.
    if let Err(e) = std::str::from_utf8(&bytes) {
        if e.error_len().is_none() {
            bytes.truncate(e.valid_up_to());
        }
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}
