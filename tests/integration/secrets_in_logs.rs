//! No secret reaches the logs: the real `lambent` binary, logging everything
//! down to `debug` as JSON, driven through every identity route, an agent's
//! server tool, a chat and a workflow run with the fake provider; then its
//! whole log output is searched for every API key, provider key and tool
//! header used, and for the conversation's text.

use lambent_fake_provider::{FakeProvider, Reply};
use lambent_testkit::app::{send_json, LambentProcess};
use serde_json::{json, Value};

const PROVIDER_KEY: &str = "sk-ant-LOGCANARY-0123456789abcdef";
const ROTATED_KEY: &str = "sk-ant-LOGCANARY-rotated-fedcba98";
/// A server tool's header value.
const TOOL_HEADER: &str = "tool-LOGCANARY-header-0123456789";
/// Words of the conversation: message content is never logged either.
const USER_WORDS: &str = "CONTENTCANARY-user-asks";
const REPLY_WORDS: &str = "CONTENTCANARY-model-answers";

#[tokio::test]
async fn no_api_key_or_provider_key_appears_in_the_logs() {
    let dir = tempfile::Builder::new()
        .prefix("lambent-logs-")
        .tempdir()
        .unwrap();
    let log_path = dir.path().join("lambent.log");
    let data_dir = dir.path().join("data");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut server = LambentProcess::serve_with_stderr(
        &[
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--data-dir",
            data_dir.to_str().unwrap(),
        ],
        &[
            ("RUST_LOG", "debug"),
            ("LAMBENT_LOG_FORMAT", "json"),
            ("LAMBENT_ALLOW_PRIVATE_PROVIDER_URLS", "1"),
        ],
        log,
    );
    let admin = std::fs::read_to_string(data_dir.join("admin-key")).unwrap();
    let fake = FakeProvider::start().await.unwrap();
    let client = reqwest::Client::new();
    let call = |method: reqwest::Method, path: &str, key: &str, body: Option<Value>| {
        send_json(&client, method, server.url(path), key.to_owned(), body)
    };
    use reqwest::Method as M;

    let (_, user) = call(
        M::POST,
        "/v1/users",
        &admin,
        Some(json!({"name": "ana", "role": "member"})),
    )
    .await;
    let user_id = user["id"].as_str().unwrap().to_owned();
    let (_, key) = call(
        M::POST,
        "/v1/keys",
        &admin,
        Some(json!({"user_id": user_id})),
    )
    .await;
    let member = key["key"].as_str().unwrap().to_owned();
    let (status, provider) = call(
        M::POST,
        "/v1/providers",
        &member,
        Some(
            json!({"kind": "openai_compatible", "name": "local", "api_key": PROVIDER_KEY,
                    "base_url": fake.openai_base_url()}),
        ),
    )
    .await;
    assert_eq!(status, 201, "{provider}");
    let provider_id = provider["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/providers/{provider_id}");
    call(
        M::PATCH,
        &path,
        &member,
        Some(json!({"api_key": ROTATED_KEY})),
    )
    .await;
    // Invalid input that carries a key: the 400 must not echo it either.
    call(
        M::POST,
        "/v1/providers",
        &member,
        Some(json!({"kind": "openai", "name": "x y", "api_key": PROVIDER_KEY})),
    )
    .await;
    call(
        M::POST,
        "/v1/providers",
        &member,
        Some(json!({"kind": "openai", "name": "z", "api_key": 12345, "extra": PROVIDER_KEY})),
    )
    .await;
    let (status, agent) = call(
        M::POST,
        "/v1/agents",
        &member,
        Some(json!({"name": "a", "provider_id": provider_id, "model": "gpt-4o"})),
    )
    .await;
    assert_eq!(status, 201, "{agent}");
    let agent_id = agent["id"].as_str().unwrap().to_owned();
    // A server tool's secret header: set, sent back masked, refused when
    // malformed (the 400 must not echo it); the chats below resolve it.
    let agent_path = format!("/v1/agents/{agent_id}");
    let tool = |value: &str| {
        json!({"tools": [{"name": "lookup", "input_schema": {"type": "object"},
                          "http": {"url": "http://127.0.0.1:9/lookup",
                                   "headers": {"X-Api-Key": value}}}]})
    };
    let (status, tooled) = call(M::PATCH, &agent_path, &member, Some(tool(TOOL_HEADER))).await;
    assert_eq!(status, 200, "{tooled}");
    let (status, _) = call(
        M::PATCH,
        &agent_path,
        &member,
        Some(json!({"tools": tooled["tools"]})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = call(
        M::PATCH,
        &agent_path,
        &member,
        Some(tool(&format!("{TOOL_HEADER}\u{1}"))),
    )
    .await;
    assert_eq!(status, 400);
    // A chat, streamed and whole, an OpenAI-style call, and a provider
    // refusing the key: the provider only accepts the rotated key.
    fake.set_api_key(Some(ROTATED_KEY));
    let (status, session) = call(
        M::POST,
        "/v1/sessions",
        &member,
        Some(json!({"agent_id": agent_id})),
    )
    .await;
    assert_eq!(status, 201, "{session}");
    let messages = format!("/v1/sessions/{}/messages", session["id"].as_str().unwrap());
    fake.push(Reply::text(REPLY_WORDS));
    let (status, _) = call(
        M::POST,
        &messages,
        &member,
        Some(json!({"content": USER_WORDS})),
    )
    .await;
    assert_eq!(status, 200);
    fake.push(Reply::text(REPLY_WORDS));
    let (status, reply) = call(
        M::POST,
        &messages,
        &member,
        Some(json!({"content": USER_WORDS, "stream": false})),
    )
    .await;
    assert_eq!(reply["content"], REPLY_WORDS, "{status}");
    fake.push(Reply::text(REPLY_WORDS));
    let (status, _) = call(
        M::POST,
        "/v1/chat/completions",
        &member,
        Some(json!({"model": agent_id, "messages": [{"role": "user", "content": USER_WORDS}]})),
    )
    .await;
    assert_eq!(status, 200);
    // A workflow run: its prompts, input and outputs are content too.
    fake.set_default(Reply::text(REPLY_WORDS));
    let steps = json!([
        {"id": "a", "agent_id": agent_id, "prompt": format!("{USER_WORDS} {{{{input.x}}}}")},
        {"id": "b", "agent_id": agent_id, "prompt": "Then {{steps.a.output}}", "depends_on": ["a"]},
    ]);
    let (status, workflow) = call(
        M::POST,
        "/v1/workflows",
        &member,
        Some(json!({"name": "w", "steps": steps})),
    )
    .await;
    assert_eq!(status, 201, "{workflow}");
    let runs = format!("/v1/workflows/{}/runs", workflow["id"].as_str().unwrap());
    let input = json!({"input": {"x": "CONTENTCANARY-input"}});
    let (status, started) = call(M::POST, &runs, &member, Some(input)).await;
    assert_eq!(status, 202, "{started}");
    let run = format!("/v1/runs/{}", started["run_id"].as_str().unwrap());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (_, state) = call(M::GET, &run, &member, None).await;
        if state["status"] == "succeeded" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{state}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    fake.set_api_key(Some("sk-another-key"));
    let (status, _) = call(
        M::POST,
        &messages,
        &member,
        Some(json!({"content": USER_WORDS})),
    )
    .await;
    assert_eq!(status, 502);
    assert_eq!(
        fake.requests()[0].header("authorization"),
        Some(format!("Bearer {ROTATED_KEY}").as_str())
    );
    call(M::GET, &messages, &member, None).await;
    call(M::GET, "/v1/agents", &member, None).await;
    call(M::GET, "/v1/providers", &member, None).await;
    call(M::GET, "/v1/keys", &member, None).await;
    // A wrong secret for a real key ID, and the admin key with a typo.
    let last = if member.ends_with('0') { '1' } else { '0' };
    let wrong = format!("{}{last}", &member[..member.len() - 1]);
    call(M::GET, "/v1/keys", &wrong, None).await;
    call(M::GET, "/v1/keys", &format!("{admin}x"), None).await;
    call(M::DELETE, &format!("/v1/users/{user_id}"), &admin, None).await;
    call(M::GET, "/v1/audit", &admin, None).await;
    server.stop();

    let logs = std::fs::read_to_string(&log_path).unwrap();
    // The capture works: there are request lines with principals in them.
    assert!(logs.contains("request served"), "no request logs captured");
    assert!(logs.contains(&user_id), "principals are not logged");
    assert!(
        logs.contains("/v1/sessions/{id}/messages"),
        "no chat request logged"
    );
    let secret_of = |key: &str| key.rsplit('_').next().unwrap().to_owned();
    for needle in [
        admin.clone(),
        secret_of(&admin),
        member.clone(),
        secret_of(&member),
        secret_of(&wrong),
        PROVIDER_KEY.to_owned(),
        ROTATED_KEY.to_owned(),
        TOOL_HEADER.to_owned(),
        "LOGCANARY".to_owned(),
        "CONTENTCANARY".to_owned(),
    ] {
        assert!(
            !logs.contains(&needle),
            "the logs contain a secret ({} chars)",
            needle.len()
        );
    }
}
