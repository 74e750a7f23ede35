//! Identity through the HTTP API of `lambent serve` on embedded storage:
//! authentication, roles, tenant isolation, validation, limits, providers'
//! keys at rest, user deletion, the audit log and CORS.

use std::time::Duration;

use lambent_core::clock::{Clock, ManualClock};
use lambent_testkit::app::{spawn_app, spawn_app_on, spawn_app_with, TestApp};
use reqwest::Method;
use serde_json::{json, Value};

const PROVIDER_KEY: &str = "sk-ant-CANARY-provider-secret-7f3a9c";

async fn provider(app: &TestApp, key: &str, name: &str) -> Value {
    let (status, body) = app
        .call(
            Method::POST,
            "/v1/providers",
            key,
            Some(json!({"kind": "anthropic", "name": name, "api_key": PROVIDER_KEY})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    body
}

async fn agent(app: &TestApp, key: &str, provider_id: &str) -> Value {
    let (status, body) = app
        .call(
            Method::POST,
            "/v1/agents",
            key,
            Some(
                json!({"name": "helper", "provider_id": provider_id, "model": "claude-sonnet-4-5"}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    body
}

fn assert_envelope(status: u16, body: &Value, expected_status: u16, code: &str) {
    assert_eq!(status, expected_status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["request_id"]
            .as_str()
            .unwrap()
            .starts_with("req_"),
        "{body}"
    );
    assert!(!body["error"]["message"].as_str().unwrap().is_empty());
}

#[tokio::test]
async fn missing_malformed_and_wrong_keys_are_401() {
    let app = spawn_app().await;
    let (_, member) = app.user_with_key("ana", "member").await;
    // The same key with its last character changed (to one it is not).
    let last = if member.ends_with('x') { 'y' } else { 'x' };
    let wrong_secret = format!("{}{last}", &member[..member.len() - 1]);
    let unknown_id =
        "lmb_key_00000000000000000000000000_abcdefabcdefabcdefabcdefabcdefabcdefabcdefabcdefabcd";
    for key in [
        "",
        "not-a-key",
        "lmb_",
        wrong_secret.as_str(),
        unknown_id,
        "lmb_admin_wrong",
    ] {
        let response = app
            .request(Method::GET, "/v1/keys", key)
            .send()
            .await
            .unwrap();
        assert_eq!(response.headers()["www-authenticate"], "Bearer", "{key:?}");
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap();
        assert_envelope(status, &body, 401, "unauthenticated");
    }
    let (status, _) = app.call(Method::GET, "/v1/keys", &member, None).await;
    assert_eq!(status, 200);
    // Public routes need no key.
    assert_eq!(app.call(Method::GET, "/health", "", None).await.0, 200);
    assert_eq!(
        app.call(Method::GET, "/openapi.json", "", None).await.0,
        200
    );
    app.stop().await;
}

#[tokio::test]
async fn members_get_403_on_admin_routes() {
    let app = spawn_app().await;
    let (member_id, member) = app.user_with_key("ana", "member").await;
    let user_path = format!("/v1/users/{member_id}");
    let cases: Vec<(Method, &str, Option<Value>)> = vec![
        (Method::GET, "/v1/users", None),
        (
            Method::POST,
            "/v1/users",
            Some(json!({"name": "x", "role": "admin"})),
        ),
        (Method::GET, &user_path, None),
        (Method::PATCH, &user_path, Some(json!({"role": "admin"}))),
        (Method::DELETE, &user_path, None),
        (Method::GET, "/v1/audit", None),
        (
            Method::POST,
            "/v1/models",
            Some(
                json!({"name": "m", "provider_kind": "openai", "input_per_mtok": "1",
                        "output_per_mtok": "1", "cache_read_per_mtok": "0", "cache_write_per_mtok": "0"}),
            ),
        ),
        // A malformed body learns nothing of the admin-only schema.
        (Method::POST, "/v1/models", Some(json!({"nme": 1}))),
        (Method::POST, "/v1/users", Some(json!({"role": "emperor"}))),
        (Method::PATCH, &user_path, Some(json!([]))),
    ];
    for (method, path, body) in cases {
        let (status, body) = app.call(method.clone(), path, &member, body).await;
        assert_envelope(status, &body, 403, "forbidden");
    }
    // The member's own self-service routes work.
    assert_eq!(
        app.call(Method::GET, "/v1/models", &member, None).await.0,
        200
    );
    app.stop().await;
}

#[tokio::test]
async fn another_tenants_ids_answer_exactly_like_unknown_ones() {
    let app = spawn_app().await;
    let (_, owner) = app.user_with_key("owner", "member").await;
    let (_, other) = app.user_with_key("other", "member").await;
    let prv = provider(&app, &owner, "mine").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let agt = agent(&app, &owner, &prv).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, keys) = app.call(Method::GET, "/v1/keys", &owner, None).await;
    let key_id = keys["items"][0]["id"].as_str().unwrap().to_owned();

    let unknown = |prefix: &str| format!("{prefix}_0000000000000000000000000z");
    // (method, path with the owner's ID, the same path with an unknown ID, body)
    let routes: Vec<(Method, String, String, Option<Value>)> = vec![
        (
            Method::GET,
            format!("/v1/providers/{prv}"),
            format!("/v1/providers/{}", unknown("prv")),
            None,
        ),
        (
            Method::PATCH,
            format!("/v1/providers/{prv}"),
            format!("/v1/providers/{}", unknown("prv")),
            Some(json!({"name": "stolen"})),
        ),
        (
            Method::DELETE,
            format!("/v1/providers/{prv}"),
            format!("/v1/providers/{}", unknown("prv")),
            None,
        ),
        (
            Method::GET,
            format!("/v1/agents/{agt}"),
            format!("/v1/agents/{}", unknown("agt")),
            None,
        ),
        (
            Method::PATCH,
            format!("/v1/agents/{agt}"),
            format!("/v1/agents/{}", unknown("agt")),
            Some(json!({"name": "stolen"})),
        ),
        (
            Method::DELETE,
            format!("/v1/agents/{agt}"),
            format!("/v1/agents/{}", unknown("agt")),
            None,
        ),
        (
            Method::DELETE,
            format!("/v1/keys/{key_id}"),
            format!("/v1/keys/{}", unknown("key")),
            None,
        ),
    ];
    for (method, theirs, missing, body) in routes {
        let (status, stolen) = app
            .call(method.clone(), &theirs, &other, body.clone())
            .await;
        let (missing_status, absent) = app.call(method.clone(), &missing, &other, body).await;
        assert_envelope(status, &stolen, 404, "not_found");
        assert_eq!(status, missing_status, "{method} {theirs}");
        assert_eq!(
            stolen["error"]["message"], absent["error"]["message"],
            "{method} {theirs}"
        );
    }
    // An agent cannot be built on someone else's provider.
    let (status, body) = app
        .call(
            Method::POST,
            "/v1/agents",
            &other,
            Some(json!({"name": "x", "provider_id": prv, "model": "claude-sonnet-4-5"})),
        )
        .await;
    assert_envelope(status, &body, 400, "invalid_request");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("provider_id"),
        "{body}"
    );
    // Listings show only the caller's own.
    let (_, listed) = app.call(Method::GET, "/v1/providers", &other, None).await;
    assert_eq!(listed["items"], json!([]));
    let (_, listed) = app.call(Method::GET, "/v1/agents", &other, None).await;
    assert_eq!(listed["items"], json!([]));
    // Nothing of the owner's changed.
    let (status, still) = app
        .call(Method::GET, &format!("/v1/agents/{agt}"), &owner, None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(still["name"], "helper");
    assert_eq!(app.call(Method::GET, "/v1/keys", &owner, None).await.0, 200);
    app.stop().await;
}

#[tokio::test]
async fn invalid_input_is_a_400_naming_the_field() {
    let app = spawn_app().await;
    let admin = app.admin_key();
    let cases = [
        (
            json!({"name": "a", "role": "admin", "colour": "red"}),
            "colour",
        ),
        (json!({"role": "member"}), "name"),
        (json!({"name": 5, "role": "member"}), "name"),
        (json!({"name": "a", "role": "owner"}), "role"),
        (json!({"name": "  ", "role": "member"}), "name"),
        (
            json!({"name": "a", "role": "member", "monthly_budget_usd": "-1"}),
            "monthly_budget_usd",
        ),
        (
            json!({"name": "a", "role": "member", "monthly_budget_usd": 1.5}),
            "monthly_budget_usd",
        ),
    ];
    for (body, field) in cases {
        let response = app
            .request(Method::POST, "/v1/users", &admin)
            .json(&body)
            .send()
            .await
            .unwrap();
        let header_id = response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_owned();
        let status = response.status().as_u16();
        let error: Value = response.json().await.unwrap();
        assert_envelope(status, &error, 400, "invalid_request");
        assert_eq!(error["error"]["request_id"], header_id.as_str());
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.contains(field), "{body} -> {message}");
    }
    // Not JSON at all.
    let response = app
        .request(Method::POST, "/v1/users", &admin)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    // A provider URL pointing at the metadata service, even with private URLs allowed.
    let (status, body) = app
        .call(
            Method::POST,
            "/v1/providers",
            &admin,
            Some(
                json!({"kind": "openai_compatible", "name": "meta", "api_key": "k",
                          "base_url": "http://169.254.169.254/latest"}),
            ),
        )
        .await;
    assert_envelope(status, &body, 400, "invalid_request");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("base_url"),
        "{body}"
    );
    // Nothing was created by any of them.
    let (_, users) = app.call(Method::GET, "/v1/users", &admin, None).await;
    assert_eq!(users["items"].as_array().unwrap().len(), 1, "{users}");
    app.stop().await;
}

#[tokio::test]
async fn an_oversized_body_is_413() {
    let app = spawn_app_with(|c| c.max_body_bytes = 4096).await;
    let admin = app.admin_key();
    let big = json!({"name": "x".repeat(10_000), "role": "member"});
    let (status, body) = app.call(Method::POST, "/v1/users", &admin, Some(big)).await;
    assert_envelope(status, &body, 413, "payload_too_large");
    app.stop().await;
}

#[tokio::test]
async fn a_key_over_its_rate_limit_gets_429_with_retry_after() {
    let app = spawn_app_with(|c| {
        c.rate_limit.requests = 5;
        c.rate_limit.window_secs = 60;
    })
    .await;
    let admin = app.admin_key();
    let (_, first) = app.user_with_key("a", "member").await;
    // user_with_key used 2 of the admin's requests.
    for _ in 0..5 {
        assert_eq!(app.call(Method::GET, "/v1/keys", &first, None).await.0, 200);
    }
    let response = app
        .request(Method::GET, "/v1/keys", &first)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let body: Value = response.json().await.unwrap();
    assert_envelope(429, &body, 429, "rate_limited");
    // The limit is per user: the admin's own budget is separate.
    assert_eq!(app.call(Method::GET, "/v1/keys", &admin, None).await.0, 200);
    app.stop().await;
}

#[tokio::test]
async fn rate_limits_count_every_key_of_a_user_with_no_burst_at_a_window_edge() {
    let clock = ManualClock::starting_now();
    let app = spawn_app_on(clock.clone(), |c| {
        c.rate_limit.requests = 5;
        c.rate_limit.window_secs = 60;
    })
    .await;
    let admin = app.admin_key();
    // The admin has 5 requests a minute too: one every 12 s.
    clock.advance(Duration::from_secs(60));
    let (user, first) = app.user_with_key("many keys", "member").await;
    let mut keys = vec![first];
    for _ in 0..5 {
        clock.advance(Duration::from_secs(12));
        let (status, key) = app
            .call(
                Method::POST,
                "/v1/keys",
                &admin,
                Some(json!({"user_id": user})),
            )
            .await;
        assert_eq!(status, 201, "{key}");
        keys.push(key["key"].as_str().unwrap().to_owned());
    }

    // Five requests, each with another key, use up the user's limit; the
    // sixth key is refused like the others would be.
    clock.advance(Duration::from_secs(120));
    for key in &keys[..5] {
        assert_eq!(app.call(Method::GET, "/v1/keys", key, None).await.0, 200);
    }
    let (status, body) = app.call(Method::GET, "/v1/keys", &keys[5], None).await;
    assert_eq!(status, 429, "{body}");

    // A full burst just before a minute starts, and another just after:
    // a fixed window would allow both; the bucket refills 5 a minute.
    clock.advance(Duration::from_secs(120));
    let to_edge = 60_000 - clock.now_millis().rem_euclid(60_000) - 100;
    clock.advance(Duration::from_millis(to_edge as u64));
    for key in &keys[..5] {
        assert_eq!(app.call(Method::GET, "/v1/keys", key, None).await.0, 200);
    }
    clock.advance(Duration::from_millis(200));
    for key in &keys {
        let (status, _) = app.call(Method::GET, "/v1/keys", key, None).await;
        assert_eq!(status, 429, "a second burst at the window's edge");
    }
    app.stop().await;
}

#[tokio::test]
async fn keys_are_shown_once_listed_masked_and_revoked_at_once() {
    let app = spawn_app().await;
    let (_, member) = app.user_with_key("ana", "member").await;
    let (status, created) = app
        .call(
            Method::POST,
            "/v1/keys",
            &member,
            Some(json!({"name": "ci"})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let second = created["key"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap();
    assert!(second.starts_with(&format!("lmb_{id}_")));
    let (_, listed) = app.call(Method::GET, "/v1/keys", &second, None).await;
    let text = listed.to_string();
    let secret = second.rsplit('_').next().unwrap();
    assert!(!text.contains(secret), "a listing shows the secret: {text}");
    assert_eq!(listed["items"].as_array().unwrap().len(), 2);
    let shown = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == id)
        .unwrap();
    assert_eq!(shown["prefix"], format!("lmb_{id}"));
    assert_eq!(shown["last4"], &second[second.len() - 4..]);
    // A member cannot make keys for someone else.
    let (status, _) = app
        .call(
            Method::POST,
            "/v1/keys",
            &member,
            Some(json!({"user_id": "usr_admin"})),
        )
        .await;
    assert_eq!(status, 403);
    // Revoked: refused on the next request, even though it was just used (cached).
    assert_eq!(
        app.call(Method::DELETE, &format!("/v1/keys/{id}"), &member, None)
            .await
            .0,
        204
    );
    assert_eq!(
        app.call(Method::GET, "/v1/keys", &second, None).await.0,
        401
    );
    assert_eq!(
        app.call(Method::GET, "/v1/keys", &member, None).await.0,
        200
    );
    app.stop().await;
}

#[tokio::test]
async fn provider_keys_are_never_stored_or_returned_in_plain_text() {
    let app = spawn_app().await;
    let (_, member) = app.user_with_key("ana", "member").await;
    let created = provider(&app, &member, "claude").await;
    assert_eq!(created["api_key_last4"], "3a9c");
    let id = created["id"].as_str().unwrap();
    let (_, read) = app
        .call(Method::GET, &format!("/v1/providers/{id}"), &member, None)
        .await;
    let (_, listed) = app.call(Method::GET, "/v1/providers", &member, None).await;
    for shown in [&created, &read, &listed] {
        assert!(!shown.to_string().contains(PROVIDER_KEY), "{shown}");
        assert!(!shown.to_string().contains("CANARY"), "{shown}");
    }
    // Rotate the key.
    let rotated = "sk-ant-CANARY-rotated-key-000111";
    let (status, patched) = app
        .call(
            Method::PATCH,
            &format!("/v1/providers/{id}"),
            &member,
            Some(json!({"api_key": rotated})),
        )
        .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["api_key_last4"], "0111");
    // Nothing at rest holds either key: every file of the data directory.
    for entry in std::fs::read_dir(app.data_dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        for needle in [PROVIDER_KEY, rotated, "CANARY"] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{} holds {needle}",
                path.display()
            );
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn deleting_a_user_removes_everything_it_owns_and_its_keys_fail() {
    let app = spawn_app().await;
    let admin = app.admin_key();
    let (user_id, member) = app.user_with_key("leaver", "member").await;
    let prv = provider(&app, &member, "mine").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    agent(&app, &member, &prv).await;
    let (_, second) = app
        .call(Method::POST, "/v1/keys", &member, Some(json!({})))
        .await;
    let second = second["key"].as_str().unwrap().to_owned();

    assert_eq!(
        app.call(
            Method::DELETE,
            &format!("/v1/users/{user_id}"),
            &admin,
            None
        )
        .await
        .0,
        204
    );
    for key in [&member, &second] {
        assert_eq!(
            app.call(Method::GET, "/v1/providers", key, None).await.0,
            401
        );
    }
    assert_eq!(
        app.call(Method::GET, &format!("/v1/users/{user_id}"), &admin, None)
            .await
            .0,
        404
    );
    assert_eq!(
        app.call(
            Method::DELETE,
            &format!("/v1/users/{user_id}"),
            &admin,
            None
        )
        .await
        .0,
        404
    );
    let (_, users) = app.call(Method::GET, "/v1/users", &admin, None).await;
    assert!(!users.to_string().contains(&user_id), "{users}");
    app.stop().await;
}

#[tokio::test]
async fn writes_are_audited_and_admins_page_through_them() {
    let app = spawn_app().await;
    let admin = app.admin_key();
    let (member_id, member) = app.user_with_key("ana", "member").await;
    provider(&app, &member, "p1").await;
    let (status, page) = app
        .call(Method::GET, "/v1/audit?limit=2", &admin, None)
        .await;
    assert_eq!(status, 200, "{page}");
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    // Newest first: the member's provider write.
    assert_eq!(items[0]["user_id"], member_id.as_str());
    assert_eq!(items[0]["route"], "/v1/providers");
    assert_eq!(items[0]["method"], "POST");
    assert!(items[0]["request_id"].as_str().unwrap().starts_with("req_"));
    assert!(items[0]["key_id"].as_str().unwrap().starts_with("key_"));
    assert_eq!(items[1]["route"], "/v1/keys");
    assert_eq!(items[1]["key_id"], "admin");
    // A key's creation names the user it is for and the new key.
    assert_eq!(items[1]["subject_user_id"], member_id.as_str(), "{page}");
    assert_eq!(items[1]["resource_id"], items[0]["key_id"], "{page}");
    let cursor = page["next_cursor"].as_str().unwrap();
    let (status, next) = app
        .call(
            Method::GET,
            &format!("/v1/audit?limit=2&cursor={cursor}"),
            &admin,
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(next["items"][0]["route"], "/v1/users");
    assert!(next["next_cursor"].is_null(), "{next}");
    // A forged cursor, or one from another listing, is a 400.
    let (status, _) = app
        .call(Method::GET, "/v1/audit?cursor=AAAAforged", &admin, None)
        .await;
    assert_eq!(status, 400);
    let (status, body) = app
        .call(
            Method::GET,
            &format!("/v1/users?cursor={cursor}"),
            &admin,
            None,
        )
        .await;
    assert_envelope(status, &body, 400, "invalid_request");
    app.stop().await;
}

#[tokio::test]
async fn cors_allows_only_configured_origins() {
    let app = spawn_app_with(|c| c.cors_origins = vec!["https://app.example".into()]).await;
    for (origin, allowed) in [
        ("https://app.example", true),
        ("https://evil.example", false),
    ] {
        let response = app
            .client
            .request(Method::OPTIONS, app.url("/v1/keys"))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization")
            .send()
            .await
            .unwrap();
        let header = response.headers().get("access-control-allow-origin");
        assert_eq!(
            header.is_some(),
            allowed,
            "{origin}: {:?}",
            response.headers()
        );
        if allowed {
            assert_eq!(header.unwrap(), origin);
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn models_ship_with_prices_and_admins_reprice_them() {
    let app = spawn_app().await;
    let admin = app.admin_key();
    let (_, member) = app.user_with_key("ana", "member").await;
    let (status, models) = app.call(Method::GET, "/v1/models", &member, None).await;
    assert_eq!(status, 200);
    let sonnet = models["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "claude-sonnet-4-5")
        .unwrap()
        .clone();
    assert_eq!(sonnet["input_per_mtok"], "3");
    assert_eq!(sonnet["output_per_mtok"], "15");
    assert_eq!(sonnet["cache_read_per_mtok"], "0.30");
    let reprice = json!({"name": "claude-sonnet-4-5", "provider_kind": "anthropic",
        "input_per_mtok": "2.5", "output_per_mtok": "12.000001",
        "cache_read_per_mtok": "0.25", "cache_write_per_mtok": "3.125"});
    let (status, model) = app
        .call(Method::POST, "/v1/models", &admin, Some(reprice))
        .await;
    assert_eq!(status, 200, "{model}");
    assert_eq!(model["output_per_mtok"], "12.000001");
    // Agents list with the new prices joined in.
    let prv = provider(&app, &member, "p").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    agent(&app, &member, &prv).await;
    let (_, agents) = app.call(Method::GET, "/v1/agents", &member, None).await;
    assert_eq!(
        agents["items"][0]["prices"]["output_per_mtok"], "12.000001",
        "{agents}"
    );
    // An unknown model, or one of the wrong kind, is refused by name.
    for model in ["no-such-model", "gpt-4o"] {
        let (status, body) = app
            .call(
                Method::POST,
                "/v1/agents",
                &member,
                Some(json!({"name": "x", "provider_id": prv, "model": model})),
            )
            .await;
        assert_envelope(status, &body, 400, "invalid_request");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("model"),
            "{body}"
        );
    }
    app.stop().await;
}

/// A user whose bucket is busy (a request within the last interval) is
/// counted with one write per request: the bucket's advance, tried first
/// because this process saw the bucket busy; trying the idle reset first
/// cost a failed write before it on every such request.
#[tokio::test]
async fn a_busy_rate_bucket_takes_one_write_per_request() {
    use lambent_testkit::counting::{layer, Call, Meter};
    let meter = Meter::new();
    // The default limit, 600 a minute: one request every 100 ms refills.
    let app = lambent_testkit::app::spawn_app_layered(
        lambent_core::clock::system(),
        Some(layer(meter.clone())),
        |c| c.auth_cache = Duration::from_secs(600),
    )
    .await;
    let (_, key) = app.user_with_key("busy", "member").await;
    assert_eq!(app.call(Method::GET, "/v1/keys", &key, None).await.0, 200);
    let bucket_writes = |meter: &Meter| {
        meter
            .take_trace()
            .iter()
            .filter(|t| t.call == Call::Update && t.what.starts_with("RATE#"))
            .count()
    };
    // The bucket is idle again (its count was written beside the request).
    tokio::time::sleep(Duration::from_millis(150)).await;
    meter.start_trace();
    // Five requests within one interval: the first finds the bucket idle,
    // the other four busy. Each count is written beside its request; a
    // short pause lets it land before the next.
    for _ in 0..5 {
        assert_eq!(app.call(Method::GET, "/v1/keys", &key, None).await.0, 200);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(bucket_writes(&meter), 5);
    app.stop().await;
}
