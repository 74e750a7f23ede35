//! DynamoDB's size limits at the HTTP edge: whatever a route would store in
//! one record over the store's 400 KB is a 400 that names the field (never a
//! 500), and nothing is created. (The store port's own rules, on both
//! backends, are its contract suite: `lambent_ports::contract::store`.)

use lambent_testkit::app::{spawn_app, TestApp};
use reqwest::Method;
use serde_json::{json, Value};

const MODEL: &str = "fake-limits";

async fn post(app: &TestApp, path: &str, key: &str, body: Value) -> (u16, Value) {
    app.call(Method::POST, path, key, Some(body)).await
}

/// A 400 `invalid_request` whose message starts with `field: `; returns
/// the message.
fn refused(status: u16, answer: &Value, field: &str) -> String {
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"]["code"], "invalid_request", "{answer}");
    let message = answer["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        message.starts_with(&format!("{field}: ")),
        "{message:?} does not name {field}"
    );
    assert!(message.contains("KB"), "{message}");
    message
}

/// The items of a listing.
async fn listed(app: &TestApp, path: &str, key: &str) -> Vec<Value> {
    let (status, page) = app.call(Method::GET, path, key, None).await;
    assert_eq!(status, 200, "{page}");
    page["items"].as_array().cloned().unwrap_or_default()
}

/// A member with a provider and one agent; returns (key, agent ID).
async fn member_with_agent(app: &TestApp) -> (String, String) {
    let admin = app.admin_key();
    let (status, model) = post(
        app,
        "/v1/models",
        &admin,
        json!({
            "name": MODEL,
            "provider_kind": "anthropic",
            "input_per_mtok": "3",
            "output_per_mtok": "15",
            "cache_read_per_mtok": "0.3",
            "cache_write_per_mtok": "3.75",
        }),
    )
    .await;
    assert!(status == 201 || status == 200, "{status} {model}");
    let (_, key) = app.user_with_key("ana", "member").await;
    let (status, provider) = post(
        app,
        "/v1/providers",
        &key,
        json!({"kind": "anthropic", "name": "main", "api_key": "sk-ant-limits"}),
    )
    .await;
    assert_eq!(status, 201, "{provider}");
    let (status, agent) = post(
        app,
        "/v1/agents",
        &key,
        json!({
            "name": "small",
            "provider_id": provider["id"],
            "model": MODEL,
            "system_prompt": "You are terse.",
        }),
    )
    .await;
    assert_eq!(status, 201, "{agent}");
    (key, agent["id"].as_str().unwrap().to_owned())
}

/// `n` steps in a chain, each with a prompt of `prompt_bytes`.
fn steps(agent: &str, n: usize, prompt_bytes: usize) -> Value {
    (0..n)
        .map(|i| {
            let deps: Vec<String> = if i == 0 {
                Vec::new()
            } else {
                vec![format!("s{}", i - 1)]
            };
            json!({
                "id": format!("s{i}"),
                "agent_id": agent,
                "prompt": "p".repeat(prompt_bytes),
                "depends_on": deps,
            })
        })
        .collect()
}

#[tokio::test]
async fn an_oversized_workflow_is_a_400_naming_steps_and_creates_nothing() {
    let app = spawn_app().await;
    let (key, agent) = member_with_agent(&app).await;

    // 40 steps of 12 KB prompts (each within its own 16 KB): 480 KB of
    // definition, more than one record holds.
    let (status, answer) = post(
        &app,
        "/v1/workflows",
        &key,
        json!({"name": "huge", "steps": steps(&agent, 40, 12 * 1024)}),
    )
    .await;
    let message = refused(status, &answer, "steps");
    assert!(
        message.contains("more than the 350 KB a workflow can hold"),
        "{message}"
    );
    assert_eq!(
        listed(&app, "/v1/workflows", &key).await,
        Vec::<Value>::new()
    );

    // Just under the limit (20 prompts of 16 KB, about 330 KB) is stored
    // and reads back whole.
    let (status, created) = post(
        &app,
        "/v1/workflows",
        &key,
        json!({"name": "large", "steps": steps(&agent, 20, 16 * 1024)}),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap();
    let (status, read) = app
        .call(Method::GET, &format!("/v1/workflows/{id}"), &key, None)
        .await;
    assert_eq!(status, 200, "{read}");
    assert_eq!(read["steps"].as_array().map(Vec::len), Some(20));
    assert_eq!(
        read["steps"][19]["prompt"].as_str().map(str::len),
        Some(16 * 1024)
    );
    assert_eq!(listed(&app, "/v1/workflows", &key).await.len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn an_oversized_agent_is_a_400_naming_the_field_and_creates_or_changes_nothing() {
    let app = spawn_app().await;
    let (key, agent) = member_with_agent(&app).await;
    let (_, existing) = app
        .call(Method::GET, &format!("/v1/agents/{agent}"), &key, None)
        .await;
    let provider_id = existing["provider_id"].clone();

    // 100,000 characters (the prompt's limit in characters) of 4 bytes
    // each: 391 KB.
    let wide = "\u{1F600}".repeat(100_000);
    let (status, answer) = post(
        &app,
        "/v1/agents",
        &key,
        json!({
            "name": "wide",
            "provider_id": provider_id,
            "model": MODEL,
            "system_prompt": wide,
        }),
    )
    .await;
    let message = refused(status, &answer, "system_prompt");
    assert!(
        message.contains("more than the 350 KB an agent can hold"),
        "{message}"
    );

    // 60 tools of 8 KB descriptions (each tool within its own limits).
    let tools: Vec<Value> = (0..60)
        .map(|i| {
            json!({
                "name": format!("tool_{i}"),
                "description": "d".repeat(8 * 1024),
                "input_schema": {"type": "object"},
            })
        })
        .collect();
    let (status, answer) = post(
        &app,
        "/v1/agents",
        &key,
        json!({
            "name": "tooled",
            "provider_id": provider_id,
            "model": MODEL,
            "tools": tools,
        }),
    )
    .await;
    refused(status, &answer, "tools");

    let agents = listed(&app, "/v1/agents", &key).await;
    assert_eq!(agents.len(), 1, "{agents:?}");
    assert_eq!(agents[0]["id"], agent.as_str());

    // A change that would make the existing agent too large is refused and
    // leaves it as it was.
    let (status, answer) = app
        .call(
            Method::PATCH,
            &format!("/v1/agents/{agent}"),
            &key,
            Some(json!({"system_prompt": wide})),
        )
        .await;
    refused(status, &answer, "system_prompt");
    let (status, answer) = app
        .call(
            Method::PATCH,
            &format!("/v1/agents/{agent}"),
            &key,
            Some(json!({"system_prompt": "x".repeat(90_000), "tools": tools})),
        )
        .await;
    refused(status, &answer, "tools");
    let (status, after) = app
        .call(Method::GET, &format!("/v1/agents/{agent}"), &key, None)
        .await;
    assert_eq!(status, 200, "{after}");
    assert_eq!(after, existing);
    app.stop().await;
}
