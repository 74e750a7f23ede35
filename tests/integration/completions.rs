//! `POST /v1/chat/completions`: Lambent as an OpenAI-compatible endpoint,
//! over the fake provider, and driven by the official OpenAI Python SDK.

use std::process::Command;

use lambent_fake_provider::{FakeUsage, Reply};
use lambent_testkit::chat::{parse_events, ChatWorld, JsonData};
use reqwest::Method;
use serde_json::{json, Value};

const USAGE: FakeUsage = FakeUsage {
    input: 200,
    output: 30,
    cache_read: 1_000,
    cache_write_5m: 0,
    cache_write_1h: 0,
};

async fn completion(w: &ChatWorld, body: Value) -> (u16, String) {
    let response = w
        .app
        .request(Method::POST, "/v1/chat/completions", &w.key)
        .json(&body)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test]
async fn completions_answer_whole_and_streamed_through_an_agent_or_a_provider() {
    let w = ChatWorld::start_with("openai", |_| {}).await;
    w.fake.push(Reply::text("Whole answer.").usage(USAGE));
    let (status, body) = completion(
        &w,
        json!({"model": w.agent_id, "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
        ]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let whole: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(whole["object"], "chat.completion");
    assert_eq!(whole["choices"][0]["message"]["content"], "Whole answer.");
    assert_eq!(whole["choices"][0]["finish_reason"], "stop");
    assert_eq!(whole["usage"]["prompt_tokens"], 1200);
    assert_eq!(whole["usage"]["completion_tokens"], 30);
    assert_eq!(
        whole["usage"]["prompt_tokens_details"]["cached_tokens"],
        1000
    );
    // 200*3 + 30*15 + 1000*0.3 = 1350 micro-dollars
    assert_eq!(whole["usage"]["cost_usd"], "0.00135");
    // The agent's system prompt comes first, then the request's.
    let sent = w.fake.requests().pop().unwrap();
    assert_eq!(
        sent.body["messages"][0],
        json!({"role": "system", "content": "You are terse.\n\nBe brief."})
    );

    w.fake
        .push(Reply::chunks(["Str", "eam", "ed."]).usage(USAGE));
    let (status, body) = completion(
        &w,
        json!({"model": "fake/fake-openai", "stream": true, "stream_options": {"include_usage": true},
               "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let events = parse_events(&body);
    assert_eq!(events.last().unwrap().data, "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| e.json())
        .collect();
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Streamed.");
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["total_tokens"], 1230);
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk"));

    // Both calls are counted, one under the agent and one without.
    let (_, report) = w.call(Method::GET, "/v1/usage?group_by=agent", None).await;
    assert_eq!(report["total"]["calls"], 2, "{report}");
    assert_eq!(report["total"]["cost_usd"], "0.0027");
    let keys: Vec<&Value> = report["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| &g["key"])
        .collect();
    assert!(
        keys.contains(&&Value::Null) && keys.contains(&&json!(w.agent_id)),
        "{report}"
    );
}

#[tokio::test]
async fn completions_refuse_what_they_cannot_serve() {
    let w = ChatWorld::start_with("openai", |_| {}).await;
    let user = json!([{"role": "user", "content": "Hi"}]);
    for (body, field) in [
        (json!({"model": "agt_nothere", "messages": user}), "model"),
        (
            json!({"model": "nobody/fake-openai", "messages": user}),
            "model",
        ),
        (
            json!({"model": "fake/not-a-model", "messages": user}),
            "model",
        ),
        (json!({"model": "plain", "messages": user}), "model"),
        (
            json!({"model": "fake/fake-openai", "messages": []}),
            "messages",
        ),
        (
            json!({"model": "fake/fake-openai", "messages": [{"role": "tool", "content": "x"}]}),
            "messages[0].tool_call_id",
        ),
        (
            json!({"model": "fake/fake-openai", "messages": [{"role": "critic", "content": "x"}]}),
            "messages[0].role",
        ),
        (
            json!({"model": "fake/fake-openai", "messages": user,
                   "tools": [{"type": "function", "function": {"name": "bad name"}}]}),
            "tools[0].name",
        ),
        (
            json!({"model": "fake/fake-openai", "messages": user,
                   "tools": [{"type": "function", "function": {"name": "f"}}],
                   "tool_choice": {"type": "function", "function": {"name": "g"}}}),
            "tool_choice",
        ),
        (
            json!({"model": "fake/fake-openai", "messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}]}]}),
            "messages[0].content[0].image_url.url",
        ),
        (
            json!({"model": "fake/fake-openai", "messages": user, "n": 2}),
            "n",
        ),
        (
            json!({"model": "fake/fake-openai", "messages": user, "max_tokens": 0}),
            "max_tokens",
        ),
        (
            json!({"model": "fake/fake-openai", "messages": user, "temperature": 3}),
            "temperature",
        ),
        (
            json!({"model": "fake/fake-openai", "messages": user, "tools": []}),
            "tools",
        ),
    ] {
        let (status, text) = completion(&w, body.clone()).await;
        assert_eq!(status, 400, "{body}: {text}");
        let error: Value = serde_json::from_str(&text).unwrap();
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.contains(field), "{body}: {message}");
    }
    assert!(w.fake.requests().is_empty());
}

#[tokio::test]
async fn the_official_openai_sdk_round_trips() {
    let w = ChatWorld::start_with("openai", |_| {}).await;
    w.fake.push(Reply::text("Hello.").usage(USAGE));
    w.fake
        .push(Reply::chunks(["Hel", "lo ", "again."]).usage(USAGE));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/openai_sdk/roundtrip.py");
    let base_url = w.app.url("/v1");
    let key = w.key.clone();
    let model = w.agent_id.clone();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(lambent_testkit::app::test_python())
            .arg(script)
            .env("LAMBENT_BASE_URL", base_url)
            .env("LAMBENT_KEY", key)
            .env("LAMBENT_MODEL", model)
            .output()
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| {
        panic!(
            "could not run {} ({e}); scripts/test installs it with the openai package",
            lambent_testkit::app::test_python()
        )
    });
    assert!(
        output.status.success(),
        "the SDK script failed (scripts/test installs the openai package):\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(seen["whole"]["text"], "Hello.");
    assert_eq!(seen["whole"]["role"], "assistant");
    assert_eq!(seen["whole"]["object"], "chat.completion");
    assert_eq!(seen["whole"]["model"], "fake-openai");
    assert_eq!(seen["whole"]["finish_reason"], "stop");
    assert_eq!(seen["whole"]["prompt_tokens"], 1200);
    assert_eq!(seen["whole"]["completion_tokens"], 30);
    assert_eq!(seen["whole"]["total_tokens"], 1230);
    assert_eq!(seen["whole"]["cached_tokens"], 1000);
    assert_eq!(seen["stream"]["deltas"], json!(["Hel", "lo ", "again."]));
    assert_eq!(seen["stream"]["finish_reason"], "stop");
    assert_eq!(seen["stream"]["prompt_tokens"], 1200);
    assert_eq!(seen["stream"]["completion_tokens"], 30);
    assert_eq!(seen["stream"]["cached_tokens"], 1000);
    assert_eq!(
        seen["refused"],
        json!({"status": 400, "code": "invalid_request"})
    );
    // The SDK's max_tokens reached the provider.
    let first = &w.fake.requests()[0];
    assert_eq!(first.body["max_completion_tokens"], 50, "{}", first.body);

    let (_, report) = w.call(Method::GET, "/v1/usage", None).await;
    assert_eq!(report["total"]["calls"], 2);
    assert_eq!(report["total"]["cost_usd"], "0.0027");
}
