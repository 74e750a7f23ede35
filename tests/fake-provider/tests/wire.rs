//! The fake provider over real HTTP, checked with reqwest.

// The helpers below are test code too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use futures::StreamExt;
use lambent_fake_provider::{
    FakeProvider, FakeToolCall, FakeUsage, FinalChunk, Reply, SeenImage, SeenToolCall,
    SeenToolResult, UsageAt, ARGUMENT_PIECE_CHARS,
};
use serde_json::{json, Value};

const USAGE: FakeUsage = FakeUsage {
    input: 11,
    output: 7,
    cache_read: 100,
    cache_write_5m: 20,
    cache_write_1h: 3,
};

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

async fn anthropic(fake: &FakeProvider, body: Value) -> reqwest::Response {
    client()
        .post(format!("{}/v1/messages", fake.anthropic_base_url()))
        .header("x-api-key", "sk-ant-test")
        .header("anthropic-version", "2023-06-01")
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn openai(fake: &FakeProvider, body: Value) -> reqwest::Response {
    client()
        .post(format!("{}/chat/completions", fake.openai_base_url()))
        .bearer_auth("sk-test")
        .json(&body)
        .send()
        .await
        .unwrap()
}

fn anthropic_req(stream: bool) -> Value {
    json!({
        "model": "claude-test-1",
        "max_tokens": 100,
        "stream": stream,
        "messages": [ { "role": "user", "content": "hi" } ],
    })
}

fn openai_req(stream: bool, include_usage: bool) -> Value {
    let mut body = json!({
        "model": "gpt-test-1",
        "stream": stream,
        "messages": [ { "role": "user", "content": "hi" } ],
    });
    if include_usage {
        body["stream_options"] = json!({ "include_usage": true });
    }
    body
}

/// Server-sent events as (event name, data) pairs, read by Lambent's own
/// parser (`lambent_llm::sse`), after checking that the stream is written
/// as the providers write theirs: blocks of `event:` and one `data:` line,
/// each ended by a blank line.
fn sse(text: &str) -> Vec<(Option<String>, String)> {
    assert!(
        text.ends_with("\n\n"),
        "stream must end with a blank line: {text:?}"
    );
    for block in text.split("\n\n").filter(|block| !block.is_empty()) {
        let data_lines = block.lines().filter(|l| l.starts_with("data: ")).count();
        assert_eq!(data_lines, 1, "one data line an event: {block:?}");
        for line in block.lines() {
            assert!(
                line.starts_with("event: ") || line.starts_with("data: "),
                "unexpected line {line:?}"
            );
        }
    }
    lambent_llm::sse::SseParser::new()
        .feed(text.as_bytes())
        .expect("a well-formed event stream")
        .into_iter()
        .map(|e| (e.event, e.data))
        .collect()
}

/// Anthropic events as (name, JSON), checking that each name matches `type`.
fn anthropic_events(text: &str) -> Vec<(String, Value)> {
    sse(text)
        .into_iter()
        .map(|(event, data)| {
            let event = event.expect("anthropic events are named");
            let value: Value = serde_json::from_str(&data).unwrap();
            assert_eq!(value["type"], event.as_str(), "event name matches its type");
            (event, value)
        })
        .collect()
}

/// The usage a client gets by taking the latest non-zero value of each field.
fn anthropic_latest_usage(events: &[(String, Value)]) -> FakeUsage {
    let mut got = FakeUsage::default();
    let mut take = |usage: &Value| {
        let set = |slot: &mut u64, v: &Value| {
            if let Some(n) = v.as_u64().filter(|n| *n != 0) {
                *slot = n;
            }
        };
        set(&mut got.input, &usage["input_tokens"]);
        set(&mut got.output, &usage["output_tokens"]);
        set(&mut got.cache_read, &usage["cache_read_input_tokens"]);
        set(
            &mut got.cache_write_5m,
            &usage["cache_creation"]["ephemeral_5m_input_tokens"],
        );
        set(
            &mut got.cache_write_1h,
            &usage["cache_creation"]["ephemeral_1h_input_tokens"],
        );
    };
    for (name, value) in events {
        match name.as_str() {
            "message_start" => take(&value["message"]["usage"]),
            "message_delta" => take(&value["usage"]),
            _ => {}
        }
    }
    got
}

fn names(events: &[(String, Value)]) -> Vec<&str> {
    events.iter().map(|(n, _)| n.as_str()).collect()
}

#[tokio::test]
async fn anthropic_stream_has_the_real_event_sequence() {
    let fake = FakeProvider::start().await.unwrap();
    fake.push(Reply::chunks(["Hel", "lo", "!"]).usage(USAGE));
    let resp = anthropic(&fake, anthropic_req(true)).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    assert!(resp.headers().get("request-id").is_some());
    let events = anthropic_events(&resp.text().await.unwrap());
    assert_eq!(
        names(&events),
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
    );
    let msg = &events[0].1["message"];
    assert!(msg["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(msg["type"], "message");
    assert_eq!(msg["role"], "assistant");
    assert_eq!(msg["model"], "claude-test-1");
    assert_eq!(msg["content"], json!([]));
    assert_eq!(msg["stop_reason"], Value::Null);
    assert_eq!(
        events[1].1,
        json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}})
    );
    let text: String = events[3..6]
        .iter()
        .map(|(_, v)| {
            assert_eq!(v["index"], 0);
            assert_eq!(v["delta"]["type"], "text_delta");
            v["delta"]["text"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(text, "Hello!");
    assert_eq!(events[6].1, json!({"type":"content_block_stop","index":0}));
    assert_eq!(events[7].1["delta"]["stop_reason"], "end_turn");
    assert_eq!(events[7].1["delta"]["stop_sequence"], Value::Null);
    assert_eq!(events[8].1, json!({"type":"message_stop"}));
    assert_eq!(fake.completed_streams(), 1);
    assert_eq!(fake.open_streams(), 0);
}

#[tokio::test]
async fn anthropic_usage_placements() {
    let fake = FakeProvider::start().await.unwrap();

    // Start: everything in message_start; message_delta only output_tokens.
    fake.push(
        Reply::text("abc")
            .usage(USAGE)
            .anthropic_usage_in(UsageAt::Start),
    );
    let events = anthropic_events(
        &anthropic(&fake, anthropic_req(true))
            .await
            .text()
            .await
            .unwrap(),
    );
    assert_eq!(
        events[0].1["message"]["usage"],
        json!({
            "input_tokens": 11,
            "cache_creation_input_tokens": 23,
            "cache_read_input_tokens": 100,
            "cache_creation": { "ephemeral_5m_input_tokens": 20, "ephemeral_1h_input_tokens": 3 },
            "output_tokens": 7,
            "service_tier": "standard",
        })
    );
    let delta = events.iter().find(|(n, _)| n == "message_delta").unwrap();
    assert_eq!(delta.1["usage"], json!({ "output_tokens": 7 }));
    assert_eq!(anthropic_latest_usage(&events), USAGE);

    // Delta: zeros in message_start, everything in message_delta.
    fake.push(
        Reply::text("abc")
            .usage(USAGE)
            .anthropic_usage_in(UsageAt::Delta),
    );
    let events = anthropic_events(
        &anthropic(&fake, anthropic_req(true))
            .await
            .text()
            .await
            .unwrap(),
    );
    let start = &events[0].1["message"]["usage"];
    assert_eq!(start["input_tokens"], 0);
    assert_eq!(start["output_tokens"], 0);
    assert_eq!(start["cache_read_input_tokens"], 0);
    assert_eq!(start["cache_creation_input_tokens"], 0);
    let delta = events.iter().find(|(n, _)| n == "message_delta").unwrap();
    assert_eq!(
        delta.1["usage"],
        json!({
            "input_tokens": 11,
            "cache_creation_input_tokens": 23,
            "cache_read_input_tokens": 100,
            "cache_creation": { "ephemeral_5m_input_tokens": 20, "ephemeral_1h_input_tokens": 3 },
            "output_tokens": 7,
        })
    );
    assert_eq!(anthropic_latest_usage(&events), USAGE);

    // Both (the default): input and cache at the start with output 1, the
    // final output and again input and cache at the end.
    fake.push(Reply::text("abc").usage(USAGE));
    let events = anthropic_events(
        &anthropic(&fake, anthropic_req(true))
            .await
            .text()
            .await
            .unwrap(),
    );
    let start = &events[0].1["message"]["usage"];
    assert_eq!(start["input_tokens"], 11);
    assert_eq!(start["cache_read_input_tokens"], 100);
    assert_eq!(start["cache_creation_input_tokens"], 23);
    assert_eq!(start["cache_creation"]["ephemeral_5m_input_tokens"], 20);
    assert_eq!(start["cache_creation"]["ephemeral_1h_input_tokens"], 3);
    assert_eq!(start["output_tokens"], 1);
    let delta = events.iter().find(|(n, _)| n == "message_delta").unwrap();
    assert_eq!(
        delta.1["usage"],
        json!({
            "input_tokens": 11,
            "cache_creation_input_tokens": 23,
            "cache_read_input_tokens": 100,
            "output_tokens": 7,
        })
    );
    assert_eq!(anthropic_latest_usage(&events), USAGE);
}

#[tokio::test]
async fn anthropic_non_streamed_message() {
    let fake = FakeProvider::start().await.unwrap();
    fake.push(
        Reply::text("Hello there")
            .usage(USAGE)
            .stop_reason("length"),
    );
    let resp = anthropic(&fake, anthropic_req(false)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let body: Value = resp.json().await.unwrap();
    assert!(body["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(body["type"], "message");
    assert_eq!(body["role"], "assistant");
    assert_eq!(body["model"], "claude-test-1");
    assert_eq!(
        body["content"],
        json!([{ "type": "text", "text": "Hello there" }])
    );
    assert_eq!(body["stop_reason"], "max_tokens");
    assert_eq!(body["stop_sequence"], Value::Null);
    assert_eq!(body["usage"]["input_tokens"], 11);
    assert_eq!(body["usage"]["output_tokens"], 7);
    assert_eq!(body["usage"]["cache_read_input_tokens"], 100);
    assert_eq!(body["usage"]["cache_creation_input_tokens"], 23);
    assert_eq!(
        body["usage"]["cache_creation"]["ephemeral_1h_input_tokens"],
        3
    );
    assert_eq!(fake.open_streams() + fake.completed_streams(), 0);
}

/// OpenAI stream chunks (JSON) and whether it ended with `[DONE]`.
fn openai_chunks(text: &str) -> (Vec<Value>, bool) {
    let mut done = false;
    let mut chunks = Vec::new();
    for (event, data) in sse(text) {
        assert_eq!(event, None, "OpenAI events are unnamed");
        assert!(!done, "nothing after [DONE]");
        if data == "[DONE]" {
            done = true;
        } else {
            chunks.push(serde_json::from_str(&data).unwrap());
        }
    }
    (chunks, done)
}

fn openai_text(chunks: &[Value]) -> String {
    chunks
        .iter()
        .filter_map(|c| c["choices"].as_array())
        .flatten()
        .filter_map(|choice| choice["delta"]["content"].as_str())
        .collect()
}

fn expected_openai_usage() -> Value {
    json!({
        "prompt_tokens": 111,
        "completion_tokens": 7,
        "total_tokens": 118,
        "prompt_tokens_details": { "cached_tokens": 100, "audio_tokens": 0 },
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    })
}

#[tokio::test]
async fn openai_stream_without_include_usage_has_no_usage() {
    let fake = FakeProvider::start().await.unwrap();
    fake.push(Reply::chunks(["Hel", "lo"]).usage(USAGE));
    let resp = openai(&fake, openai_req(true, false)).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let (chunks, done) = openai_chunks(&resp.text().await.unwrap());
    assert!(done);
    assert_eq!(chunks.len(), 4, "role, two deltas, finish: {chunks:?}");
    for c in &chunks {
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["model"], "gpt-test-1");
        assert_eq!(c["id"], chunks[0]["id"]);
        assert!(c.get("usage").is_none(), "no usage field: {c}");
    }
    assert!(chunks[0]["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(chunks[0]["choices"][0]["delta"]["content"], "");
    assert_eq!(openai_text(&chunks), "Hello");
    assert_eq!(chunks[3]["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks[3]["choices"][0]["delta"], json!({}));
    assert_eq!(chunks[1]["choices"][0]["finish_reason"], Value::Null);
}

#[tokio::test]
async fn openai_final_chunk_shapes() {
    let fake = FakeProvider::start().await.unwrap();
    for shape in [
        FinalChunk::EmptyChoices,
        FinalChunk::NullChoices,
        FinalChunk::WithChoices,
        FinalChunk::Absent,
    ] {
        fake.push(Reply::text("Hello").usage(USAGE).openai_usage_chunk(shape));
        let text = openai(&fake, openai_req(true, true))
            .await
            .text()
            .await
            .unwrap();
        let (chunks, done) = openai_chunks(&text);
        assert!(done, "{shape:?}");
        assert_eq!(openai_text(&chunks), "Hello", "{shape:?}");
        let with_usage: Vec<&Value> = chunks.iter().filter(|c| !c["usage"].is_null()).collect();
        for c in &chunks {
            assert!(
                c.get("usage").is_some(),
                "with include_usage every chunk has the field"
            );
        }
        let last = chunks.last().unwrap();
        let finish = chunks
            .iter()
            .find(|c| !c["choices"][0]["finish_reason"].is_null())
            .unwrap();
        assert_eq!(finish["choices"][0]["finish_reason"], "stop");
        match shape {
            FinalChunk::EmptyChoices => {
                assert_eq!(with_usage.len(), 1);
                assert_eq!(last["choices"], json!([]));
                assert_eq!(last["usage"], expected_openai_usage());
            }
            FinalChunk::NullChoices => {
                assert_eq!(with_usage.len(), 1);
                assert_eq!(last["choices"], Value::Null);
                assert!(last.get("choices").is_some());
                assert_eq!(last["usage"], expected_openai_usage());
            }
            FinalChunk::WithChoices => {
                assert_eq!(with_usage.len(), 1);
                assert_eq!(last["choices"][0]["finish_reason"], "stop");
                assert_eq!(last["usage"], expected_openai_usage());
            }
            FinalChunk::Absent => {
                assert!(with_usage.is_empty());
                assert_eq!(last["choices"][0]["finish_reason"], "stop");
            }
        }
    }
    assert_eq!(fake.completed_streams(), 4);
}

#[tokio::test]
async fn openai_non_streamed_completion() {
    let fake = FakeProvider::start().await.unwrap();
    fake.push(Reply::text("Hi!").usage(USAGE).stop_reason("tool_use"));
    let resp = openai(&fake, openai_req(false, false)).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("x-request-id").is_some());
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "gpt-test-1");
    assert!(body["created"].as_u64().unwrap() > 1_600_000_000);
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    assert_eq!(body["choices"][0]["message"]["content"], "Hi!");
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(body["usage"], expected_openai_usage());
}

#[tokio::test]
async fn default_usage_is_ten_in_one_out_a_delta() {
    let fake = FakeProvider::start().await.unwrap();
    let body: Value = openai(&fake, openai_req(false, false))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Hello from the fake provider."
    );
    // 29 characters in deltas of 4.
    assert_eq!(body["usage"]["prompt_tokens"], 10);
    assert_eq!(body["usage"]["completion_tokens"], 8);
}

#[tokio::test]
async fn a_responder_answers_from_the_request_after_the_queue_and_before_the_default() {
    let fake = FakeProvider::start().await.unwrap();
    fake.set_default(Reply::text("default"));
    fake.set_responder(|request| {
        let said = request.body["messages"][0]["content"].as_str()?.to_owned();
        (said != "pass").then(|| Reply::text(&format!("you said {said}")))
    });
    fake.push(Reply::text("queued"));
    let mut answers = Vec::new();
    for said in ["first", "second", "pass"] {
        let mut body = anthropic_req(false);
        body["messages"][0]["content"] = json!(said);
        let reply: Value = anthropic(&fake, body).await.json().await.unwrap();
        answers.push(reply["content"][0]["text"].as_str().unwrap().to_owned());
    }
    assert_eq!(answers, ["queued", "you said second", "default"]);
    fake.clear_responder();
    let reply: Value = anthropic(&fake, anthropic_req(false))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(reply["content"][0]["text"], "default");
    assert_eq!(fake.requests().len(), 4);
}

#[tokio::test]
async fn http_errors_have_the_real_bodies() {
    let fake = FakeProvider::start().await.unwrap();

    // 429: retry-after, in both formats.
    fake.push(Reply::http_error(429, "rate_limit_error", "slow down"));
    let resp = anthropic(&fake, anthropic_req(true)).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "1");
    let request_id = resp.headers()["request-id"].to_str().unwrap().to_owned();
    assert!(request_id.starts_with("req_"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body,
        json!({
            "type": "error",
            "error": { "type": "rate_limit_error", "message": "slow down" },
            "request_id": request_id,
        })
    );
    fake.push(Reply::http_error(429, "rate_limit_error", "slow down").retry_after(0));
    let resp = openai(&fake, openai_req(true, true)).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "0");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body,
        json!({ "error": {
            "message": "slow down",
            "type": "requests",
            "param": null,
            "code": "rate_limit_exceeded",
        } })
    );

    // 500.
    fake.push(Reply::http_error(500, "api_error", "boom"));
    let resp = anthropic(&fake, anthropic_req(false)).await;
    assert_eq!(resp.status(), 500);
    assert!(resp.headers().get("retry-after").is_none());
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body["error"],
        json!({ "type": "api_error", "message": "boom" })
    );
    fake.push(Reply::http_error(500, "api_error", "boom"));
    let resp = openai(&fake, openai_req(false, false)).await;
    assert_eq!(resp.status(), 500);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "server_error");
    assert_eq!(body["error"]["code"], Value::Null);

    // 529 overloaded.
    fake.push(Reply::http_error(529, "overloaded_error", "Overloaded"));
    let resp = anthropic(&fake, anthropic_req(true)).await;
    assert_eq!(resp.status().as_u16(), 529);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(
        body["error"],
        json!({ "type": "overloaded_error", "message": "Overloaded" })
    );

    // 401: a scripted one...
    fake.push(Reply::http_error(
        401,
        "authentication_error",
        "invalid x-api-key",
    ));
    let resp = anthropic(&fake, anthropic_req(false)).await;
    assert_eq!(resp.status(), 401);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "authentication_error");
    assert_eq!(fake.queued(), 0);
}

#[tokio::test]
async fn missing_credentials_get_the_real_401() {
    let fake = FakeProvider::start().await.unwrap();
    fake.push(Reply::text("kept for the next valid request"));

    let resp = client()
        .post(format!("{}/v1/messages", fake.anthropic_base_url()))
        .header("anthropic-version", "2023-06-01")
        .json(&anthropic_req(false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert!(resp.headers().get("request-id").is_some());
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "authentication_error");

    let resp = client()
        .post(format!("{}/v1/messages", fake.anthropic_base_url()))
        .header("x-api-key", "k")
        .json(&anthropic_req(false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400, "anthropic-version is required");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error");

    let resp = client()
        .post(format!("{}/chat/completions", fake.openai_base_url()))
        .json(&openai_req(false, false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(body["error"]["param"], Value::Null);
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("didn't provide an API key"));

    // A required key: a wrong one is refused.
    fake.set_api_key(Some("sk-right"));
    let resp = client()
        .post(format!("{}/chat/completions", fake.openai_base_url()))
        .bearer_auth("sk-wrong")
        .json(&openai_req(false, false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_api_key");
    let resp = client()
        .post(format!("{}/chat/completions", fake.openai_base_url()))
        .bearer_auth("sk-right")
        .json(&openai_req(false, false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "kept for the next valid request"
    );
    assert_eq!(fake.requests().len(), 5, "failed requests are recorded too");
}

#[tokio::test]
async fn invalid_json_is_a_400_and_recorded() {
    let fake = FakeProvider::start().await.unwrap();
    let resp = client()
        .post(format!("{}/v1/messages", fake.anthropic_base_url()))
        .header("x-api-key", "k")
        .header("anthropic-version", "2023-06-01")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "invalid_request_error");

    let resp = client()
        .post(format!("{}/chat/completions", fake.openai_base_url()))
        .bearer_auth("k")
        .body("[1,")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(body["error"]["code"], Value::Null);

    let seen = fake.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].body, Value::String("{not json".into()));
    assert_eq!(seen[1].path, "/v1/chat/completions");
}

#[tokio::test]
async fn unknown_paths_are_404() {
    let fake = FakeProvider::start().await.unwrap();
    let resp = client()
        .post(format!("{}/v1/complete", fake.anthropic_base_url()))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "not_found_error");
}

/// Reads a streamed body chunk by chunk until it ends or fails.
async fn read_all(resp: reqwest::Response) -> (String, Option<reqwest::Error>) {
    let mut text = Vec::new();
    let mut body = resp.bytes_stream();
    while let Some(next) = body.next().await {
        match next {
            Ok(bytes) => text.extend_from_slice(&bytes),
            Err(e) => return (String::from_utf8(text).unwrap(), Some(e)),
        }
    }
    (String::from_utf8(text).unwrap(), None)
}

#[tokio::test]
async fn cut_after_ends_the_body_with_an_error() {
    let fake = FakeProvider::start().await.unwrap();

    fake.push(Reply::chunks(["a", "b", "c", "d", "e"]).cut_after(2));
    let resp = anthropic(&fake, anthropic_req(true)).await;
    assert_eq!(resp.status(), 200);
    let (text, err) = read_all(resp).await;
    assert!(err.is_some(), "the body must fail, got {text:?}");
    let events = anthropic_events(&text);
    assert_eq!(
        names(&events),
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta"
        ]
    );

    fake.push(Reply::chunks(["a", "b", "c", "d", "e"]).cut_after(3));
    let resp = openai(&fake, openai_req(true, true)).await;
    let (text, err) = read_all(resp).await;
    assert!(err.is_some(), "the body must fail, got {text:?}");
    let (chunks, done) = openai_chunks(&text);
    assert!(!done);
    assert_eq!(openai_text(&chunks), "abc");
    assert!(chunks.iter().all(|c| c["usage"].is_null()));

    // The connection is gone: a cut stream is neither open nor completed.
    assert_eq!(fake.open_streams(), 0);
    assert_eq!(fake.completed_streams(), 0);

    // A non-streamed cut: half a JSON body, then the reset.
    fake.push(Reply::text("some text").cut_after(0));
    let resp = anthropic(&fake, anthropic_req(false)).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.json::<Value>().await.is_err());

    // The server still serves.
    let resp = anthropic(&fake, anthropic_req(false)).await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn error_after_sends_the_mid_stream_error() {
    let fake = FakeProvider::start().await.unwrap();

    fake.push(Reply::chunks(["a", "b", "c"]).error_after(1, "overloaded_error"));
    let text = anthropic(&fake, anthropic_req(true))
        .await
        .text()
        .await
        .unwrap();
    let events = anthropic_events(&text);
    assert_eq!(
        names(&events),
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "error"
        ]
    );
    assert_eq!(
        events[4].1,
        json!({ "type": "error", "error": { "type": "overloaded_error", "message": "Overloaded" } })
    );

    fake.push(Reply::chunks(["a", "b", "c"]).error_after(2, "api_error"));
    let text = openai(&fake, openai_req(true, true))
        .await
        .text()
        .await
        .unwrap();
    let (chunks, done) = openai_chunks(&text);
    assert!(!done, "no [DONE] after an error");
    assert_eq!(openai_text(&chunks), "ab");
    let last = chunks.last().unwrap();
    assert_eq!(last["error"]["type"], "server_error");
    assert_eq!(last["error"]["param"], Value::Null);
    assert!(last["error"]["message"].is_string());
    assert!(last.get("choices").is_none());

    // Non-streamed: the matching HTTP error.
    fake.push(Reply::text("x").error_after(0, "overloaded_error"));
    let resp = anthropic(&fake, anthropic_req(false)).await;
    assert_eq!(resp.status().as_u16(), 529);
    assert_eq!(fake.completed_streams(), 2);
}

#[tokio::test]
async fn replies_are_fifo_then_default() {
    let fake = FakeProvider::start().await.unwrap();
    fake.push(Reply::text("first"));
    fake.push(Reply::text("second"));
    let mut got = Vec::new();
    for _ in 0..3 {
        let body: Value = anthropic(&fake, anthropic_req(false))
            .await
            .json()
            .await
            .unwrap();
        got.push(body["content"][0]["text"].as_str().unwrap().to_owned());
    }
    assert_eq!(got, ["first", "second", "Hello from the fake provider."]);

    fake.set_default(Reply::text("new default"));
    for _ in 0..2 {
        let body: Value = openai(&fake, openai_req(false, false))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(body["choices"][0]["message"]["content"], "new default");
    }
}

#[tokio::test]
async fn requests_are_recorded() {
    let fake = FakeProvider::start().await.unwrap();
    anthropic(&fake, anthropic_req(true))
        .await
        .text()
        .await
        .unwrap();
    openai(&fake, openai_req(false, false))
        .await
        .text()
        .await
        .unwrap();
    let seen = fake.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].path, "/v1/messages");
    assert_eq!(seen[0].header("x-api-key"), Some("sk-ant-test"));
    assert_eq!(seen[0].header("Anthropic-Version"), Some("2023-06-01"));
    assert!(seen[0]
        .headers
        .iter()
        .all(|(name, _)| *name == name.to_ascii_lowercase()));
    assert_eq!(seen[0].body, anthropic_req(true));
    assert_eq!(seen[1].path, "/v1/chat/completions");
    assert_eq!(seen[1].header("authorization"), Some("Bearer sk-test"));
    assert_eq!(seen[1].body["model"], "gpt-test-1");
    fake.clear_requests();
    assert!(fake.requests().is_empty());
}

#[tokio::test]
async fn repeated_streams_lazily_and_stops_when_the_client_goes() {
    let fake = FakeProvider::start().await.unwrap();

    // A full read: every delta arrives.
    fake.push(Reply::repeated("xy", 2_000));
    let text = openai(&fake, openai_req(true, false))
        .await
        .text()
        .await
        .unwrap();
    let (chunks, done) = openai_chunks(&text);
    assert!(done);
    assert_eq!(openai_text(&chunks).len(), 4_000);
    assert_eq!(fake.completed_streams(), 1);

    // Practically endless: read a little, then drop the response.
    fake.push(Reply::repeated(&"z".repeat(1_000), u64::MAX));
    let resp = anthropic(&fake, anthropic_req(true)).await;
    let mut body = resp.bytes_stream();
    let mut read = 0;
    while read < 100_000 {
        read += body.next().await.unwrap().unwrap().len();
    }
    assert_eq!(fake.open_streams(), 1);
    drop(body);
    let deadline = Instant::now() + Duration::from_secs(5);
    while fake.open_streams() != 0 {
        assert!(
            Instant::now() < deadline,
            "the stream must stop when the client goes"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(fake.completed_streams(), 1);
}

#[tokio::test]
async fn delays_and_hang() {
    let fake = FakeProvider::start().await.unwrap();

    fake.push(
        Reply::chunks(["a", "b", "c"])
            .first_byte_delay(Duration::from_millis(60))
            .chunk_delay(Duration::from_millis(20)),
    );
    let started = Instant::now();
    let resp = anthropic(&fake, anthropic_req(true)).await;
    assert!(started.elapsed() >= Duration::from_millis(60));
    resp.text().await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(100));

    fake.push(Reply::text("never").hang());
    let result = client()
        .post(format!("{}/chat/completions", fake.openai_base_url()))
        .bearer_auth("k")
        .timeout(Duration::from_millis(150))
        .json(&openai_req(true, true))
        .send()
        .await;
    assert!(result.unwrap_err().is_timeout());
    assert_eq!(fake.requests().len(), 2, "a hung request is recorded");
}

#[tokio::test]
async fn stop_reasons_translate() {
    let fake = FakeProvider::start().await.unwrap();
    for (given, anthropic_expected, openai_expected) in [
        ("end_turn", "end_turn", "stop"),
        ("max_tokens", "max_tokens", "length"),
        ("length", "max_tokens", "length"),
        ("tool_use", "tool_use", "tool_calls"),
    ] {
        fake.push(Reply::text("x").stop_reason(given));
        let events = anthropic_events(
            &anthropic(&fake, anthropic_req(true))
                .await
                .text()
                .await
                .unwrap(),
        );
        let delta = events.iter().find(|(n, _)| n == "message_delta").unwrap();
        assert_eq!(delta.1["delta"]["stop_reason"], anthropic_expected);
        fake.push(Reply::text("x").stop_reason(given));
        let (chunks, _) = openai_chunks(
            &openai(&fake, openai_req(true, false))
                .await
                .text()
                .await
                .unwrap(),
        );
        assert_eq!(
            chunks.last().unwrap()["choices"][0]["finish_reason"],
            openai_expected
        );
    }
}

#[tokio::test]
async fn dropping_the_provider_stops_the_server() {
    let fake = FakeProvider::start().await.unwrap();
    let url = format!("{}/v1/messages", fake.anthropic_base_url());
    drop(fake);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let result = client()
        .post(url)
        .header("x-api-key", "k")
        .header("anthropic-version", "2023-06-01")
        .json(&anthropic_req(false))
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    assert!(result.is_err());
}

#[tokio::test]
async fn a_cut_is_a_tcp_reset_mid_chunked_body() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let fake = FakeProvider::start().await.unwrap();
    fake.push(Reply::chunks(["a", "b", "c"]).cut_after(1));
    let body = anthropic_req(true).to_string();
    let mut socket = tokio::net::TcpStream::connect(fake.addr()).await.unwrap();
    let request = format!(
        "POST /v1/messages HTTP/1.1\r\nhost: x\r\nx-api-key: k\r\nanthropic-version: 2023-06-01\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let err = loop {
        match socket.read(&mut buf).await {
            Ok(0) => panic!(
                "a clean close, expected a reset: {}",
                String::from_utf8_lossy(&got)
            ),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => break e,
        }
    };
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
    let got = String::from_utf8(got).unwrap();
    assert!(got.starts_with("HTTP/1.1 200 OK\r\n"));
    assert!(got.contains("transfer-encoding: chunked"));
    assert!(got.contains("content_block_delta"));
    assert!(!got.contains("message_stop"));
    assert!(
        !got.ends_with("0\r\n\r\n"),
        "the chunked body is never terminated"
    );
}

#[tokio::test]
async fn stream_opening_comes_before_the_first_token_delay() {
    let fake = FakeProvider::start().await.unwrap();
    fake.push(Reply::text("late").first_token_delay(Duration::from_millis(150)));
    let started = Instant::now();
    let resp = openai(&fake, openai_req(true, false)).await;
    let mut body = resp.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(started.elapsed() < Duration::from_millis(120));
    assert!(String::from_utf8_lossy(&first).contains("\"role\":\"assistant\""));
    let mut rest = Vec::new();
    while let Some(chunk) = body.next().await {
        rest.extend_from_slice(&chunk.unwrap());
    }
    assert!(started.elapsed() >= Duration::from_millis(150));
    assert!(String::from_utf8_lossy(&rest).contains("late"));
}

// ------------------------------------------------------------- tool calls

/// Arguments with what a careless reassembly breaks: escapes, multi-byte
/// characters (two and three bytes), nesting, numbers.
const AWKWARD_ARGS: &str = r#"{"q":"say \"hi\" to Zürich ✓","n":[1,2.5e3],"o":{"k":null}}"#;

/// Each tool_use block of an Anthropic stream: (index, its start block, the
/// `partial_json` pieces), checking that blocks open, take deltas and stop
/// in order without overlapping.
fn anthropic_tool_blocks(events: &[(String, Value)]) -> Vec<(u64, Value, Vec<String>)> {
    let mut blocks: Vec<(u64, Value, Vec<String>)> = Vec::new();
    let mut open: Option<u64> = None;
    for (name, value) in events {
        match name.as_str() {
            "content_block_start" => {
                assert_eq!(open, None, "blocks never overlap");
                let index = value["index"].as_u64().unwrap();
                open = Some(index);
                if value["content_block"]["type"] == "tool_use" {
                    blocks.push((index, value["content_block"].clone(), Vec::new()));
                }
            }
            "content_block_delta" => {
                assert_eq!(Some(value["index"].as_u64().unwrap()), open);
                if value["delta"]["type"] == "input_json_delta" {
                    let block = blocks.last_mut().unwrap();
                    assert_eq!(block.0, value["index"]);
                    assert_eq!(
                        value["delta"].as_object().unwrap().len(),
                        2,
                        "type and partial_json only"
                    );
                    block
                        .2
                        .push(value["delta"]["partial_json"].as_str().unwrap().to_owned());
                }
            }
            "content_block_stop" => {
                assert_eq!(Some(value["index"].as_u64().unwrap()), open);
                open = None;
            }
            _ => {}
        }
    }
    assert_eq!(open, None, "every block stopped");
    blocks
}

/// A streamed OpenAI call: its ID, its name and its argument pieces.
type StreamedCall = (String, String, Vec<String>);

/// An OpenAI stream's tool calls by their index: (id, name, the argument
/// pieces), checking that `id`, `type` and `name` come once, on the call's
/// first fragment, with empty arguments, and that the later fragments carry
/// only `index` and `function.arguments`. Also returns the order of the
/// fragments' indices.
fn openai_tool_calls(chunks: &[Value]) -> (Vec<StreamedCall>, Vec<u64>) {
    let mut calls: Vec<StreamedCall> = Vec::new();
    let mut order = Vec::new();
    for chunk in chunks {
        let Some(choice) = chunk["choices"].as_array().and_then(|c| c.first()) else {
            continue;
        };
        for fragment in choice["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            assert_eq!(choice["finish_reason"], Value::Null);
            let index = fragment["index"].as_u64().unwrap();
            order.push(index);
            let i = usize::try_from(index).unwrap();
            if fragment.get("id").is_some() {
                assert_eq!(i, calls.len(), "calls begin in index order");
                assert_eq!(fragment["type"], "function");
                assert_eq!(
                    fragment["function"]["arguments"], "",
                    "the first fragment has empty arguments"
                );
                calls.push((
                    fragment["id"].as_str().unwrap().to_owned(),
                    fragment["function"]["name"].as_str().unwrap().to_owned(),
                    Vec::new(),
                ));
            } else {
                let piece = fragment["function"]["arguments"].as_str().unwrap();
                assert_eq!(
                    *fragment,
                    json!({ "index": index, "function": { "arguments": piece } })
                );
                calls[i].2.push(piece.to_owned());
            }
        }
    }
    (calls, order)
}

async fn anthropic_stream_events(fake: &FakeProvider) -> Vec<(String, Value)> {
    let resp = anthropic(fake, anthropic_req(true)).await;
    assert_eq!(resp.status(), 200);
    anthropic_events(&resp.text().await.unwrap())
}

async fn openai_stream_chunks(fake: &FakeProvider, include_usage: bool) -> Vec<Value> {
    let resp = openai(fake, openai_req(true, include_usage)).await;
    assert_eq!(resp.status(), 200);
    let (chunks, done) = openai_chunks(&resp.text().await.unwrap());
    assert!(done);
    chunks
}

#[tokio::test]
async fn anthropic_whole_message_with_text_and_tool_calls() {
    let fake = FakeProvider::start().await.unwrap();
    fake.push(
        Reply::text("Let me check.")
            .with_tool_call("toolu_01", "weather", AWKWARD_ARGS)
            .with_tool_call("toolu_02", "clock", "")
            .usage(USAGE),
    );
    let body: Value = anthropic(&fake, anthropic_req(false))
        .await
        .json()
        .await
        .unwrap();
    let expected_input: Value = serde_json::from_str(AWKWARD_ARGS).unwrap();
    assert_eq!(
        body["content"],
        json!([
            { "type": "text", "text": "Let me check." },
            { "type": "tool_use", "id": "toolu_01", "name": "weather", "input": expected_input },
            { "type": "tool_use", "id": "toolu_02", "name": "clock", "input": {} },
        ])
    );
    assert_eq!(body["stop_reason"], "tool_use");
    // The cache counts of a tool turn are reported as in any turn.
    assert_eq!(body["usage"]["cache_read_input_tokens"], 100);
    assert_eq!(body["usage"]["cache_creation_input_tokens"], 23);
    assert_eq!(body["usage"]["output_tokens"], 7);

    // Tool calls alone: no text block.
    fake.push(Reply::tool_calls([FakeToolCall::new(
        "toolu_03",
        "weather",
        r#"{"city":"Bern"}"#,
    )]));
    let body: Value = anthropic(&fake, anthropic_req(false))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        body["content"],
        json!([{ "type": "tool_use", "id": "toolu_03", "name": "weather", "input": { "city": "Bern" } }])
    );
    assert_eq!(body["stop_reason"], "tool_use");
}

#[tokio::test]
async fn anthropic_stream_of_text_then_parallel_tool_calls() {
    let fake = FakeProvider::start().await.unwrap();
    fake.push(
        Reply::chunks(["Let me ", "check."])
            .with_tool_call("toolu_01", "weather", AWKWARD_ARGS)
            .with_tool_call("toolu_02", "clock", "{}")
            .usage(USAGE),
    );
    let events = anthropic_stream_events(&fake).await;
    let pieces_1 = AWKWARD_ARGS.chars().count().div_ceil(ARGUMENT_PIECE_CHARS);
    let mut expected = vec![
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
    ];
    // The empty first piece, then the arguments' pieces.
    expected.extend(std::iter::repeat_n("content_block_delta", 1 + pieces_1));
    expected.extend([
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]);
    assert_eq!(names(&events), expected);
    assert_eq!(
        events[1].1["content_block"],
        json!({ "type": "text", "text": "" })
    );
    assert_eq!(
        events[6].1,
        json!({
            "type": "content_block_start",
            "index": 1,
            "content_block": { "type": "tool_use", "id": "toolu_01", "name": "weather", "input": {} },
        })
    );
    assert_eq!(
        events[7].1,
        json!({
            "type": "content_block_delta",
            "index": 1,
            "delta": { "type": "input_json_delta", "partial_json": "" },
        })
    );

    let blocks = anthropic_tool_blocks(&events);
    assert_eq!(blocks.len(), 2);
    assert_eq!(blocks[0].0, 1);
    assert_eq!(blocks[1].0, 2);
    assert_eq!(blocks[1].1["id"], "toolu_02");
    assert_eq!(blocks[1].1["name"], "clock");
    assert_eq!(blocks[0].2.concat(), AWKWARD_ARGS);
    assert_eq!(blocks[1].2, ["", "{}"]);
    for piece in &blocks[0].2[1..] {
        assert!(!piece.is_empty() && piece.chars().count() <= ARGUMENT_PIECE_CHARS);
    }

    let delta = &events[events.len() - 2].1;
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");
    assert_eq!(anthropic_latest_usage(&events), USAGE);
    assert_eq!(fake.completed_streams(), 1);
}

#[tokio::test]
async fn anthropic_stream_of_tool_calls_alone() {
    let fake = FakeProvider::start().await.unwrap();
    fake.push(
        Reply::tool_calls([
            FakeToolCall::new("toolu_a", "first", r#"{"a":1}"#),
            FakeToolCall::new("toolu_b", "second", r#"{"b":2}"#),
        ])
        .split_arguments_at(&[3]),
    );
    let events = anthropic_stream_events(&fake).await;
    assert_eq!(
        names(&events),
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
    );
    assert_eq!(events[1].1["index"], 0, "the first call is block 0");
    let blocks = anthropic_tool_blocks(&events);
    assert_eq!(
        blocks
            .iter()
            .map(|(i, start, pieces)| (*i, start["id"].as_str().unwrap(), pieces.clone()))
            .collect::<Vec<_>>(),
        [
            (0, "toolu_a", vec!["".into(), "{\"a".into(), "\":1}".into()]),
            (1, "toolu_b", vec!["".into(), "{\"b".into(), "\":2}".into()]),
        ]
    );
    assert_eq!(events[12].1["delta"]["stop_reason"], "tool_use");
    // Default usage: one output token a delta (here, an argument piece).
    assert_eq!(events[12].1["usage"]["output_tokens"], 4);
}

#[tokio::test]
async fn arguments_split_anywhere_reassemble_exactly() {
    let fake = FakeProvider::start().await.unwrap();
    let escape = AWKWARD_ARGS.find(r#"\""#).unwrap();
    let umlaut = AWKWARD_ARGS.find('ü').unwrap();
    let check = AWKWARD_ARGS.find('✓').unwrap();
    // Inside a key, between `\` and `"`, inside `ü` and inside `✓` (both
    // moved to the character's end), and past the end (ignored).
    let offsets = [3, escape + 1, umlaut + 1, check + 2, AWKWARD_ARGS.len() + 9];
    let expected_pieces = [
        &AWKWARD_ARGS[..3],
        &AWKWARD_ARGS[3..=escape],
        &AWKWARD_ARGS[escape + 1..umlaut + 2],
        &AWKWARD_ARGS[umlaut + 2..check + 3],
        &AWKWARD_ARGS[check + 3..],
    ];
    assert!(expected_pieces[1].ends_with('\\'));

    let reply = || {
        Reply::tool_calls([FakeToolCall::new("call_1", "lookup", AWKWARD_ARGS)])
            .split_arguments_at(&offsets)
    };
    fake.push(reply());
    let blocks = anthropic_tool_blocks(&anthropic_stream_events(&fake).await);
    assert_eq!(blocks[0].2[0], "");
    assert_eq!(blocks[0].2[1..], expected_pieces);

    fake.push(reply());
    let (calls, _) = openai_tool_calls(&openai_stream_chunks(&fake, false).await);
    assert_eq!(calls[0].2, expected_pieces);

    // One character a piece.
    for stream_openai in [false, true] {
        fake.push(
            Reply::tool_calls([FakeToolCall::new("call_1", "lookup", AWKWARD_ARGS)])
                .split_arguments_every(1),
        );
        let pieces = if stream_openai {
            openai_tool_calls(&openai_stream_chunks(&fake, false).await).0[0]
                .2
                .clone()
        } else {
            anthropic_tool_blocks(&anthropic_stream_events(&fake).await)[0].2[1..].to_vec()
        };
        assert_eq!(pieces.len(), AWKWARD_ARGS.chars().count());
        assert_eq!(pieces.concat(), AWKWARD_ARGS);
    }
}

#[tokio::test]
async fn openai_whole_completion_with_tool_calls() {
    let fake = FakeProvider::start().await.unwrap();
    fake.push(
        Reply::tool_calls([
            FakeToolCall::new("call_a", "weather", AWKWARD_ARGS),
            FakeToolCall::new("call_b", "clock", "{}"),
        ])
        .usage(USAGE),
    );
    let body: Value = openai(&fake, openai_req(false, false))
        .await
        .json()
        .await
        .unwrap();
    let message = &body["choices"][0]["message"];
    assert_eq!(message["role"], "assistant");
    assert_eq!(message["content"], Value::Null);
    assert!(message.get("content").is_some(), "content is there, null");
    assert_eq!(
        message["tool_calls"],
        json!([
            { "id": "call_a", "type": "function", "function": { "name": "weather", "arguments": AWKWARD_ARGS } },
            { "id": "call_b", "type": "function", "function": { "name": "clock", "arguments": "{}" } },
        ])
    );
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(body["usage"], expected_openai_usage());

    // Text beside the calls is the content.
    fake.push(Reply::text("Checking.").with_tool_call("call_c", "weather", "{}"));
    let body: Value = openai(&fake, openai_req(false, false))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "Checking.");
    assert_eq!(
        body["choices"][0]["message"]["tool_calls"][0]["id"],
        "call_c"
    );

    // A text reply has no tool_calls field at all.
    fake.push(Reply::text("plain"));
    let body: Value = openai(&fake, openai_req(false, false))
        .await
        .json()
        .await
        .unwrap();
    assert!(body["choices"][0]["message"].get("tool_calls").is_none());
}

#[tokio::test]
async fn openai_stream_of_parallel_tool_calls() {
    let fake = FakeProvider::start().await.unwrap();
    fake.push(
        Reply::tool_calls([
            FakeToolCall::new("call_a", "weather", AWKWARD_ARGS),
            FakeToolCall::new("call_b", "clock", r#"{"tz":"Europe/Zurich"}"#),
        ])
        .usage(USAGE),
    );
    let chunks = openai_stream_chunks(&fake, true).await;
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({ "role": "assistant", "content": null, "refusal": null }),
        "no text: the opening chunk's content is null"
    );
    let first = &chunks[1]["choices"][0]["delta"]["tool_calls"];
    assert_eq!(
        *first,
        json!([{ "index": 0, "id": "call_a", "type": "function", "function": { "name": "weather", "arguments": "" } }])
    );
    let (calls, order) = openai_tool_calls(&chunks);
    assert_eq!(calls.len(), 2);
    assert_eq!(
        (calls[0].0.as_str(), calls[0].1.as_str()),
        ("call_a", "weather")
    );
    assert_eq!(
        (calls[1].0.as_str(), calls[1].1.as_str()),
        ("call_b", "clock")
    );
    assert_eq!(calls[0].2.concat(), AWKWARD_ARGS);
    assert_eq!(calls[1].2.concat(), r#"{"tz":"Europe/Zurich"}"#);
    // One call after the other.
    let switch = order.iter().position(|i| *i == 1).unwrap();
    assert!(order[..switch].iter().all(|i| *i == 0));
    assert!(order[switch..].iter().all(|i| *i == 1));
    assert_eq!(openai_text(&chunks), "");

    let finish = chunks
        .iter()
        .find(|c| !c["choices"][0]["finish_reason"].is_null())
        .unwrap();
    assert_eq!(finish["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(finish["choices"][0]["delta"], json!({}));
    // Usage (cache included) in the last chunk, as for any reply.
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"], expected_openai_usage());
    assert_eq!(fake.completed_streams(), 1);
}

#[tokio::test]
async fn openai_stream_of_interleaved_tool_calls() {
    let fake = FakeProvider::start().await.unwrap();
    fake.push(
        Reply::text("On it.")
            .with_tool_call("call_a", "weather", AWKWARD_ARGS)
            .with_tool_call("call_b", "clock", r#"{"tz":"UTC"}"#)
            .split_arguments_every(3)
            .interleave_tool_calls(true),
    );
    let chunks = openai_stream_chunks(&fake, false).await;
    assert_eq!(chunks[0]["choices"][0]["delta"]["content"], "");
    assert_eq!(openai_text(&chunks), "On it.");
    let (calls, order) = openai_tool_calls(&chunks);
    assert_eq!(calls[0].2.concat(), AWKWARD_ARGS);
    assert_eq!(calls[1].2.concat(), r#"{"tz":"UTC"}"#);
    // In turn: each call's opening fragment with its first piece, then a
    // piece of each, until the second call's pieces run out.
    let pieces = [
        AWKWARD_ARGS.chars().count().div_ceil(3),
        r#"{"tz":"UTC"}"#.len().div_ceil(3),
    ];
    let mut expected: Vec<u64> = vec![0, 0, 1, 1];
    for round in 1..pieces[0] {
        expected.extend((0..2u64).filter(|call| round < pieces[*call as usize]));
    }
    assert!(expected[4..8] == [0, 1, 0, 1] && expected.ends_with(&[0, 0]));
    assert_eq!(order, expected);
    // Anthropic blocks never overlap, whatever the option says.
    fake.push(
        Reply::tool_calls([
            FakeToolCall::new("toolu_a", "weather", AWKWARD_ARGS),
            FakeToolCall::new("toolu_b", "clock", "{}"),
        ])
        .interleave_tool_calls(true),
    );
    let blocks = anthropic_tool_blocks(&anthropic_stream_events(&fake).await);
    assert_eq!(blocks[0].2.concat(), AWKWARD_ARGS);
    assert_eq!(blocks[1].2.concat(), "{}");
}

#[tokio::test]
async fn openai_stream_text_then_a_tool_call() {
    let fake = FakeProvider::start().await.unwrap();
    fake.push(
        Reply::chunks(["Let me ", "look."])
            .with_tool_call("call_a", "weather", "")
            .stop_reason("end_turn"),
    );
    let chunks = openai_stream_chunks(&fake, false).await;
    // Role, two text deltas, the call's one fragment, the finish.
    assert_eq!(chunks.len(), 5, "{chunks:?}");
    assert_eq!(
        chunks[1]["choices"][0]["delta"],
        json!({ "content": "Let me " })
    );
    assert_eq!(
        chunks[3]["choices"][0]["delta"]["tool_calls"][0]["function"],
        json!({ "name": "weather", "arguments": "" })
    );
    // A stop reason set by the test wins over the tool default.
    assert_eq!(chunks[4]["choices"][0]["finish_reason"], "stop");
}

#[tokio::test]
async fn tool_replies_stop_reasons() {
    let fake = FakeProvider::start().await.unwrap();
    let call = || Reply::text("x").with_tool_call("id_1", "f", "{}");
    for (reply, anthropic_expected, openai_expected) in [
        (call(), "tool_use", "tool_calls"),
        (call().stop_reason("max_tokens"), "max_tokens", "length"),
        (call().stop_reason("length"), "max_tokens", "length"),
        (Reply::text("x"), "end_turn", "stop"),
    ] {
        fake.push(reply.clone());
        let events = anthropic_stream_events(&fake).await;
        let delta = events.iter().find(|(n, _)| n == "message_delta").unwrap();
        assert_eq!(delta.1["delta"]["stop_reason"], anthropic_expected);
        fake.push(reply.clone());
        let body: Value = anthropic(&fake, anthropic_req(false))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(body["stop_reason"], anthropic_expected);
        fake.push(reply.clone());
        let chunks = openai_stream_chunks(&fake, false).await;
        assert_eq!(
            chunks.last().unwrap()["choices"][0]["finish_reason"],
            openai_expected
        );
        fake.push(reply);
        let body: Value = openai(&fake, openai_req(false, false))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(body["choices"][0]["finish_reason"], openai_expected);
    }
}

#[tokio::test]
async fn cuts_and_errors_count_argument_pieces() {
    let fake = FakeProvider::start().await.unwrap();
    // One text delta, then the call's pieces `{"a":` `1}`: cut after the
    // first piece.
    let reply = || {
        Reply::text("ab")
            .with_tool_call("toolu_1", "f", r#"{"a":1}"#)
            .split_arguments_at(&[5])
    };
    fake.push(reply().cut_after(2));
    let (text, err) = read_all(anthropic(&fake, anthropic_req(true)).await).await;
    assert!(err.is_some(), "the body must fail, got {text:?}");
    let events = anthropic_events(&text);
    let last = &events.last().unwrap().1;
    assert_eq!(last["delta"]["partial_json"], r#"{"a":"#);
    assert!(!names(&events).contains(&"message_delta"));

    fake.push(reply().cut_after(2));
    let (text, err) = read_all(openai(&fake, openai_req(true, false)).await).await;
    assert!(err.is_some());
    let (chunks, done) = openai_chunks(&text);
    assert!(!done);
    let (calls, _) = openai_tool_calls(&chunks);
    assert_eq!(calls[0].2, [r#"{"a":"#]);

    // A mid-stream error after the whole call, before the stop.
    fake.push(reply().error_after(3, "overloaded_error"));
    let events = anthropic_stream_events(&fake).await;
    let tail: Vec<&str> = names(&events).into_iter().rev().take(2).collect();
    assert_eq!(tail, ["error", "content_block_delta"]);
    let arguments: String = events
        .iter()
        .filter_map(|(_, v)| v["delta"]["partial_json"].as_str())
        .collect();
    assert_eq!(arguments, r#"{"a":1}"#);
    assert!(!names(&events).contains(&"message_delta"));
}

#[tokio::test]
async fn recorded_requests_show_tools_results_and_images() {
    let fake = FakeProvider::start().await.unwrap();
    let png = "iVBORw0KGgo=";
    let anthropic_body = json!({
        "model": "claude-test-1",
        "max_tokens": 100,
        "tools": [{ "name": "weather", "input_schema": { "type": "object" } }],
        "tool_choice": { "type": "any" },
        "messages": [
            { "role": "user", "content": [
                { "type": "text", "text": "What is this?" },
                { "type": "image", "source": { "type": "base64", "media_type": "image/png", "data": png } },
                { "type": "image", "source": { "type": "url", "url": "https://example.com/a.jpg" } },
            ] },
            { "role": "assistant", "content": [
                { "type": "text", "text": "Checking." },
                { "type": "tool_use", "id": "toolu_1", "name": "weather", "input": { "city": "Bern" } },
            ] },
            { "role": "user", "content": [
                { "type": "tool_result", "tool_use_id": "toolu_1", "content": "12 °C" },
                { "type": "tool_result", "tool_use_id": "toolu_2", "is_error": true,
                  "content": [{ "type": "text", "text": "no " }, { "type": "text", "text": "station" }] },
            ] },
        ],
    });
    anthropic(&fake, anthropic_body.clone())
        .await
        .text()
        .await
        .unwrap();
    let openai_body = json!({
        "model": "gpt-test-1",
        "tools": [{ "type": "function", "function": { "name": "weather", "parameters": { "type": "object" } } }],
        "tool_choice": "required",
        "messages": [
            { "role": "user", "content": [
                { "type": "text", "text": "What is this?" },
                { "type": "image_url", "image_url": { "url": format!("data:image/png;base64,{png}") } },
                { "type": "image_url", "image_url": { "url": "https://example.com/a.jpg" } },
            ] },
            { "role": "assistant", "content": "Checking.", "tool_calls": [
                { "id": "toolu_1", "type": "function", "function": { "name": "weather", "arguments": "{\"city\":\"Bern\"}" } },
            ] },
            { "role": "tool", "tool_call_id": "toolu_1", "content": "12 °C" },
            { "role": "tool", "tool_call_id": "toolu_2", "content": "no station" },
        ],
    });
    openai(&fake, openai_body.clone())
        .await
        .text()
        .await
        .unwrap();

    let seen = fake.requests();
    assert_eq!(seen[0].body, anthropic_body, "the body as sent");
    assert_eq!(seen[0].body["tool_choice"], json!({ "type": "any" }));
    assert_eq!(seen[1].body["tool_choice"], "required");
    for request in &seen {
        assert_eq!(request.tool_names(), ["weather"]);
        assert_eq!(
            request.tool_calls(),
            [SeenToolCall {
                id: "toolu_1".into(),
                name: "weather".into(),
                input: json!({ "city": "Bern" }),
            }]
        );
        let results = request.tool_results();
        assert_eq!(results.len(), 2);
        assert_eq!(
            results[0],
            SeenToolResult {
                tool_call_id: "toolu_1".into(),
                content: json!("12 °C"),
                is_error: false,
            }
        );
        assert_eq!(results[1].tool_call_id, "toolu_2");
        assert_eq!(results[1].text(), "no station");
        assert_eq!(
            request.images(),
            [
                SeenImage::Base64 {
                    media_type: "image/png".into(),
                    data: png.into(),
                },
                SeenImage::Url("https://example.com/a.jpg".into()),
            ]
        );
    }
    assert!(seen[0].tool_results()[1].is_error);

    // A request without any of it.
    anthropic(&fake, anthropic_req(false))
        .await
        .text()
        .await
        .unwrap();
    let plain = &fake.requests()[2];
    assert!(plain.tool_names().is_empty());
    assert!(plain.tool_calls().is_empty());
    assert!(plain.tool_results().is_empty());
    assert!(plain.images().is_empty());
}
