//! Concurrent turns on a store that conflicts on contention as DynamoDB
//! does: no item every call writes may stand in the way, and every turn
//! settles on its own request, with totals exact at once.

use std::time::Duration;

use futures::future::join_all;
use lambent_testkit::app::{spawn_app_layered, TestApp};
use lambent_testkit::chat::ChatWorld;
use lambent_testkit::contention::{self, Contention};
use reqwest::Method;
use rust_decimal::Decimal;
use serde_json::{json, Value};

const USERS: usize = 8;
const TURNS_PER_USER: usize = 8;

/// A member with a provider and an agent on the world's fake provider.
struct Member {
    user_id: String,
    key: String,
    agent_id: String,
}

async fn member(w: &ChatWorld, n: usize) -> Member {
    let (user_id, key) = w.app.user_with_key(&format!("user {n}"), "member").await;
    let (status, provider) = w
        .app
        .call(
            Method::POST,
            "/v1/providers",
            &key,
            Some(
                json!({"kind": "anthropic", "name": "fake", "api_key": "sk-fake",
                        "base_url": w.fake.anthropic_base_url()}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{provider}");
    let (status, agent) = w
        .app
        .call(
            Method::POST,
            "/v1/agents",
            &key,
            Some(json!({"name": "helper", "provider_id": provider["id"],
                        "model": "fake-anthropic", "max_tokens": 100})),
        )
        .await;
    assert_eq!(status, 201, "{agent}");
    Member {
        user_id,
        key,
        agent_id: agent["id"].as_str().unwrap().to_owned(),
    }
}

async fn session(app: &TestApp, m: &Member) -> String {
    let (status, session) = app
        .call(
            Method::POST,
            "/v1/sessions",
            &m.key,
            Some(json!({"agent_id": m.agent_id})),
        )
        .await;
    assert_eq!(status, 201, "{session}");
    session["id"].as_str().unwrap().to_owned()
}

/// One turn, streamed or whole; its status and body.
async fn turn(app: &TestApp, key: &str, session: &str, n: usize) -> (u16, String) {
    let response = app
        .request(
            Method::POST,
            &format!("/v1/sessions/{session}/messages"),
            key,
        )
        .json(&json!({"content": format!("turn {n}"), "stream": n.is_multiple_of(2)}))
        .send()
        .await
        .unwrap();
    (
        response.status().as_u16(),
        response.text().await.unwrap_or_default(),
    )
}

fn decimal(v: &Value) -> Decimal {
    v.as_str()
        .unwrap_or_else(|| panic!("not a decimal string: {v}"))
        .parse()
        .unwrap()
}

/// The cost of the replies stored in `session`, and how many there are.
async fn stored_costs(app: &TestApp, key: &str, session: &str) -> (Decimal, u64) {
    let (status, page) = app
        .call(
            Method::GET,
            &format!("/v1/sessions/{session}/messages?limit=100"),
            key,
            None,
        )
        .await;
    assert_eq!(status, 200, "{page}");
    let replies: Vec<&Value> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "assistant")
        .collect();
    (
        replies.iter().map(|m| decimal(&m["cost_usd"])).sum(),
        replies.len() as u64,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_concurrent_turns_of_eight_users_all_settle_with_exact_totals() {
    // Transactions stay in flight 5 ms, as DynamoDB's take milliseconds.
    let contention = Contention::new(Duration::from_millis(20));
    let app = spawn_app_layered(
        lambent_core::clock::system(),
        Some(contention::layer(contention.clone())),
        // No sweeper: whatever a turn's own request does not settle stays
        // unsettled, and the totals below would miss it.
        |c| c.sweep_every = Duration::from_secs(3_600),
    )
    .await;
    let w = ChatWorld::seed(app, "anthropic").await;
    w.fake
        .set_default(lambent_fake_provider::Reply::text("noted, and noted again"));
    let mut members = Vec::new();
    for n in 0..USERS {
        members.push(member(&w, n).await);
    }
    let mut sessions = Vec::new();
    for m in &members {
        for _ in 0..TURNS_PER_USER {
            sessions.push(session(&w.app, m).await);
        }
    }

    let before = contention.cancelled();
    let answers = join_all(sessions.iter().enumerate().map(|(n, s)| {
        let m = &members[n / TURNS_PER_USER];
        turn(&w.app, &m.key, s, n)
    }))
    .await;
    for (n, (status, body)) in answers.iter().enumerate() {
        assert_eq!(*status, 200, "turn {n}: {body}");
        if n.is_multiple_of(2) {
            assert!(body.contains("message_end"), "turn {n} did not end: {body}");
        }
    }
    // The wrapper did stand in the way: the store was contended.
    assert!(
        contention.cancelled() > before,
        "no write met another in flight ({} transactions)",
        contention.transactions()
    );

    // Every user's report and the deployment's, read at once: each call
    // counted once, to the stored replies' cost.
    let mut everyone = Decimal::ZERO;
    for (u, m) in members.iter().enumerate() {
        let mut cost = Decimal::ZERO;
        for s in &sessions[u * TURNS_PER_USER..(u + 1) * TURNS_PER_USER] {
            let (c, replies) = stored_costs(&w.app, &m.key, s).await;
            assert_eq!(replies, 1, "session {s} has {replies} replies");
            cost += c;
        }
        assert!(cost > Decimal::ZERO);
        let (status, usage) = w.app.call(Method::GET, "/v1/usage", &m.key, None).await;
        assert_eq!(status, 200, "{usage}");
        assert_eq!(usage["total"]["calls"], TURNS_PER_USER, "{usage}");
        assert_eq!(decimal(&usage["total"]["cost_usd"]), cost, "{usage}");
        let (_, by_agent) = w
            .app
            .call(Method::GET, "/v1/usage?group_by=agent", &m.key, None)
            .await;
        assert_eq!(by_agent["groups"][0]["key"], m.agent_id.as_str());
        assert_eq!(decimal(&by_agent["groups"][0]["cost_usd"]), cost);
        everyone += cost;
    }
    let admin = w.app.admin_key();
    let (status, usage) = w.app.call(Method::GET, "/v1/usage", &admin, None).await;
    assert_eq!(status, 200, "{usage}");
    assert_eq!(usage["total"]["calls"], USERS * TURNS_PER_USER, "{usage}");
    assert_eq!(decimal(&usage["total"]["cost_usd"]), everyone, "{usage}");
    let (_, by_user) = w
        .app
        .call(Method::GET, "/v1/usage?group_by=user", &admin, None)
        .await;
    let groups = by_user["groups"].as_array().unwrap();
    assert_eq!(groups.len(), USERS, "{by_user}");
    for m in &members {
        let group = groups
            .iter()
            .find(|g| g["key"] == m.user_id.as_str())
            .unwrap_or_else(|| panic!("no group for {}: {by_user}", m.user_id));
        assert_eq!(group["calls"], TURNS_PER_USER);
    }
    let (_, by_model) = w
        .app
        .call(Method::GET, "/v1/usage?group_by=model", &admin, None)
        .await;
    assert_eq!(by_model["groups"][0]["calls"], USERS * TURNS_PER_USER);
    assert_eq!(decimal(&by_model["groups"][0]["cost_usd"]), everyone);
}
