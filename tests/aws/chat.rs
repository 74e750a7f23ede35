//! Streamed chat through `lambent serve --backend aws`: sessions, messages,
//! costs and budgets on DynamoDB in the emulator, the provider key decrypted
//! by KMS, and the fake provider on loopback.

use std::time::Duration;

use lambent_fake_provider::{FakeProvider, FakeUsage, Reply};
use lambent_testkit::app::{send_json, ServeOnEmulator};
use lambent_testkit::chat::{parse_events, JsonData};
use reqwest::Method as M;
use serde_json::{json, Value};

#[tokio::test]
async fn chat_on_aws_services_streams_stores_and_counts() {
    let aws = ServeOnEmulator::start("ch");
    let server = &aws.server;
    let fake = FakeProvider::start().await.unwrap();
    let admin = aws.admin_key();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let call = |method: M, path: &str, key: &str, body: Option<Value>| {
        send_json(&client, method, server.url(path), key.to_owned(), body)
    };

    let (status, body) = call(
        M::POST,
        "/v1/models",
        &admin,
        Some(json!({"name": "fake-anthropic", "provider_kind": "anthropic", "input_per_mtok": "3",
                    "output_per_mtok": "15", "cache_read_per_mtok": "0.3", "cache_write_per_mtok": "3.75"})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (_, user) = call(
        M::POST,
        "/v1/users",
        &admin,
        Some(json!({"name": "ana", "role": "member"})),
    )
    .await;
    let (_, key) = call(
        M::POST,
        "/v1/keys",
        &admin,
        Some(json!({"user_id": user["id"], "name": "k"})),
    )
    .await;
    let key = key["key"].as_str().unwrap().to_owned();
    let (status, provider) = call(
        M::POST,
        "/v1/providers",
        &key,
        Some(json!({"kind": "anthropic", "name": "fake", "api_key": "sk-aws-chat-key", "base_url": fake.anthropic_base_url()})),
    )
    .await;
    assert_eq!(status, 201, "{provider}");
    let (_, agent) = call(
        M::POST,
        "/v1/agents",
        &key,
        Some(json!({"name": "a", "provider_id": provider["id"], "model": "fake-anthropic"})),
    )
    .await;
    let (status, session) = call(
        M::POST,
        "/v1/sessions",
        &key,
        Some(json!({"agent_id": agent["id"], "budget_usd": "1"})),
    )
    .await;
    assert_eq!(status, 201, "{session}");
    let session = session["id"].as_str().unwrap().to_owned();

    let usage = FakeUsage {
        input: 1000,
        output: 100,
        cache_read: 0,
        cache_write_5m: 0,
        cache_write_1h: 0,
    };
    fake.push(Reply::chunks(["On ", "AWS."]).usage(usage));
    let response = client
        .post(server.url(&format!("/v1/sessions/{session}/messages")))
        .bearer_auth(&key)
        .json(&json!({"content": "Where?"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let events = parse_events(&response.text().await.unwrap());
    let text: String = events
        .iter()
        .filter(|e| e.event.as_deref() == Some("delta"))
        .map(|e| e.json()["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(text, "On AWS.");
    assert_eq!(events.last().unwrap().event.as_deref(), Some("done"));
    let end = events
        .iter()
        .find(|e| e.event.as_deref() == Some("message_end"))
        .unwrap();
    // 1000*3 + 100*15 = 4500 micro-dollars
    assert_eq!(end.json()["cost_usd"], "0.0045");
    assert_eq!(
        fake.requests()[0].header("x-api-key"),
        Some("sk-aws-chat-key")
    );

    fake.push(Reply::text("Whole.").usage(usage));
    let (status, whole) = call(
        M::POST,
        &format!("/v1/sessions/{session}/messages"),
        &key,
        Some(json!({"content": "Again", "stream": false})),
    )
    .await;
    assert_eq!(status, 200, "{whole}");

    let (_, page) = call(
        M::GET,
        &format!("/v1/sessions/{session}/messages?limit=3&order=desc"),
        &key,
        None,
    )
    .await;
    let items = page["items"].as_array().unwrap();
    assert_eq!(items[0]["content"], "Whole.");
    assert_eq!(items[2]["content"], "On AWS.");
    let cursor = page["next_cursor"].as_str().unwrap();
    let (_, rest) = call(
        M::GET,
        &format!("/v1/sessions/{session}/messages?limit=3&order=desc&cursor={cursor}"),
        &key,
        None,
    )
    .await;
    assert_eq!(rest["items"][0]["content"], "Where?");
    assert!(rest["next_cursor"].is_null());

    let (_, s) = call(M::GET, &format!("/v1/sessions/{session}"), &key, None).await;
    assert_eq!(s["cost_usd"], "0.009");
    assert_eq!(s["message_count"], 4);
    let (_, report) = call(M::GET, "/v1/usage?group_by=model", &key, None).await;
    assert_eq!(report["total"]["calls"], 2, "{report}");
    assert_eq!(report["groups"][0]["key"], "fake-anthropic");
    assert_eq!(report["total"]["cost_usd"], "0.009");

    let (status, _) = call(M::DELETE, &format!("/v1/sessions/{session}"), &key, None).await;
    assert_eq!(status, 204);
    let (status, _) = call(
        M::GET,
        &format!("/v1/sessions/{session}/messages"),
        &key,
        None,
    )
    .await;
    assert_eq!(status, 404);
}
