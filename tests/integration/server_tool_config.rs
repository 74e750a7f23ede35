//! Server tools as an agent's settings: `http` on a tool (URL, secret
//! headers, timeout) and `requires_approval`, the agent's `max_tool_rounds`.
//! Header values are sealed at rest and answered masked, a masked value sent
//! back keeps the secret (proved by resolving the agent through
//! `lambent_app` and calling the tool), URLs pass the SSRF guard, and every
//! malformed setting is a 400 naming its field.

use std::time::Duration;

use lambent_app::chat::Target;
use lambent_app::config::Config;
use lambent_app::state::State;
use lambent_core::secret::ExposeSecret;
use lambent_llm::{ClientSettings, LlmClient, ToolInvocation};
use lambent_testkit::app::{spawn_app_with, TestApp};
use lambent_testkit::chat::ChatWorld;
use lambent_tool_server::{ToolReply, ToolServer};
use reqwest::Method;
use serde_json::{json, Value};

/// A header value that must never be stored, answered or logged as it is.
const SECRET: &str = "Bearer tool-CANARY-secret-0123456789";
/// A header value shorter than 12 bytes: masked as `****` alone.
const SHORT: &str = "CANARY-7";

fn agent_body(w: &ChatWorld, extra: Value) -> Value {
    let mut body =
        json!({"name": "tooled", "provider_id": w.provider_id, "model": "fake-anthropic"});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    body
}

fn client_tool() -> Value {
    json!({"name": "now", "input_schema": {"type": "object"}})
}

fn server_tool(url: &str) -> Value {
    json!({
        "name": "search",
        "description": "Search the docs",
        "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}},
        "http": {
            "url": url,
            "headers": {"Authorization": SECRET, "X-Team": SHORT},
            "timeout_ms": 5000,
        },
        "requires_approval": true,
    })
}

/// The server's state over the same data directory, read by another
/// `State` (its own caches): what a Lambda of the same deployment would see.
fn state_of(app: &TestApp) -> State {
    let ports = lambent_embedded::open(
        app.data_dir.path(),
        lambent_embedded::DEFAULT_MAX_RECEIVES,
        lambent_embedded::Durability::default(),
        lambent_core::clock::system(),
    )
    .unwrap();
    let config = Config {
        allow_private_provider_urls: true,
        ..Config::default()
    };
    State::from_ports(config, ports)
}

async fn resolve(w: &ChatWorld, agent_id: &str) -> Target {
    Target::of_agent(&state_of(&w.app), &w.user_id, agent_id, "the agent")
        .await
        .unwrap()
}

/// Every file of the data directory (the database, its WAL) is free of
/// `needle`.
fn assert_not_at_rest(app: &TestApp, needle: &str) {
    for entry in std::fs::read_dir(app.data_dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
            "{} holds a header value",
            path.display()
        );
    }
}

/// The header value the tool server received on its last call of `path`.
async fn call_and_read_header(
    target: &Target,
    server: &ToolServer,
    path: &str,
    header: &str,
) -> Option<String> {
    let tool = &target.server_tools["search"];
    let client = LlmClient::new(ClientSettings {
        connect_timeout: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(5),
        allow_private: true,
    })
    .unwrap();
    server.push(path, ToolReply::json(json!({"ok": true})));
    let input = json!({"q": "x"});
    let answer = client
        .call_tool(
            &tool.http,
            ToolInvocation {
                tool_call_id: "toolu_1",
                name: "search",
                input: &input,
                session_id: None,
                run_id: None,
            },
        )
        .await;
    assert!(!answer.is_error, "{}", answer.content);
    server
        .requests_to(path)
        .last()
        .and_then(|r| r.header(header).map(str::to_owned))
}

#[tokio::test]
async fn header_values_are_sealed_at_rest_masked_in_answers_and_resolved_for_the_loop() {
    let w = ChatWorld::start().await;
    let tools_server = ToolServer::start().await.unwrap();
    let url = tools_server.url("/search");
    let (status, created) = w
        .call(
            Method::POST,
            "/v1/agents",
            Some(agent_body(
                &w,
                json!({"tools": [client_tool(), server_tool(&url)]}),
            )),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let masked = json!({"Authorization": "****6789", "X-Team": "****"});
    assert_eq!(created["tools"][0], client_tool());
    assert_eq!(created["tools"][1]["http"]["headers"], masked);
    assert_eq!(created["tools"][1]["http"]["url"], url.as_str());
    assert_eq!(created["tools"][1]["http"]["timeout_ms"], 5000);
    assert_eq!(created["tools"][1]["requires_approval"], true);
    assert_eq!(created["max_tool_rounds"], 8);
    let agent_id = created["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/agents/{agent_id}");

    // Every answer shows the masked values, never the secrets.
    let (_, read) = w.call(Method::GET, &path, None).await;
    let (_, listed) = w.call(Method::GET, "/v1/agents", None).await;
    let listed = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == agent_id.as_str())
        .cloned()
        .unwrap();
    for shown in [&created, &read, &listed] {
        assert!(!shown.to_string().contains("CANARY"), "{shown}");
        assert_eq!(shown["tools"], created["tools"]);
    }

    // At rest: the stored tools hold ciphertext, no secret.
    let state = state_of(&w.app);
    let item = state
        .store
        .get(&lambent_store::agents::item_key(&w.user_id, &agent_id))
        .await
        .unwrap()
        .unwrap();
    let stored = item.get_str("tools").unwrap_or_default().to_owned();
    assert!(stored.contains("ciphertext"), "{stored}");
    assert!(!stored.contains("CANARY"), "{stored}");
    assert_not_at_rest(&w.app, SECRET);
    assert_not_at_rest(&w.app, SHORT);

    // Resolved for the loop: the secrets decrypted, the default timeout
    // and rounds applied; the model is offered both tools without settings.
    let target = resolve(&w, &agent_id).await;
    assert_eq!(target.max_tool_rounds, 8);
    assert_eq!(target.server_tools.len(), 1);
    let search = &target.server_tools["search"];
    assert!(search.requires_approval);
    assert_eq!(search.http.url, url);
    assert_eq!(search.http.timeout, Duration::from_millis(5000));
    let headers: Vec<(&str, &str)> = search
        .http
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.expose_secret()))
        .collect();
    assert_eq!(headers, [("Authorization", SECRET), ("X-Team", SHORT)]);
    let offered: Vec<&str> = target.tools().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(offered, ["now", "search"]);
    assert!(target
        .tools()
        .iter()
        .all(|t| t.http.is_none() && !t.requires_approval));
    assert_eq!(
        call_and_read_header(&target, &tools_server, "/search", "authorization").await,
        Some(SECRET.to_owned())
    );

    // A GET sent back as a PATCH keeps the secrets.
    let (status, patched) = w
        .call(
            Method::PATCH,
            &path,
            Some(json!({"tools": read["tools"], "name": "renamed"})),
        )
        .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["tools"], created["tools"]);
    let target = resolve(&w, &agent_id).await;
    assert_eq!(
        call_and_read_header(&target, &tools_server, "/search", "authorization").await,
        Some(SECRET.to_owned())
    );
    // A PATCH of other fields keeps them too.
    let (status, patched) = w
        .call(Method::PATCH, &path, Some(json!({"tool_choice": "any"})))
        .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["tools"], created["tools"]);

    // A new value replaces one header; the other is kept.
    let rotated = "Bearer tool-CANARY-rotated-9876543210";
    let mut tools = read["tools"].clone();
    tools[1]["http"]["headers"]["Authorization"] = json!(rotated);
    let (status, patched) = w
        .call(Method::PATCH, &path, Some(json!({"tools": tools})))
        .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(
        patched["tools"][1]["http"]["headers"],
        json!({"Authorization": "****3210", "X-Team": "****"})
    );
    let target = resolve(&w, &agent_id).await;
    let values: Vec<&str> = target.server_tools["search"]
        .http
        .headers
        .iter()
        .map(|(_, v)| v.expose_secret())
        .collect();
    assert_eq!(values, [rotated, SHORT]);
    assert_not_at_rest(&w.app, rotated);

    // A masked value the stored tool does not have (the tool renamed, so
    // its secrets are not carried over) is refused, not stored as a secret.
    let mut renamed = patched["tools"].clone();
    renamed[1]["name"] = json!("find");
    let (status, err) = w
        .call(Method::PATCH, &path, Some(json!({"tools": renamed})))
        .await;
    assert_eq!(status, 400, "{err}");
    let message = err["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("tools[1].http.headers.Authorization: "),
        "{message}"
    );
    // The same masked value on create matches nothing either.
    let (status, err) = w
        .call(
            Method::POST,
            "/v1/agents",
            Some(agent_body(&w, json!({"tools": patched["tools"]}))),
        )
        .await;
    assert_eq!(status, 400, "{err}");

    // Removing the tool removes its settings; the agent has no server tool.
    let (status, bare) = w
        .call(
            Method::PATCH,
            &path,
            Some(json!({"tools": [client_tool()], "tool_choice": "auto"})),
        )
        .await;
    assert_eq!(status, 200, "{bare}");
    assert!(resolve(&w, &agent_id).await.server_tools.is_empty());
}

#[tokio::test]
async fn max_tool_rounds_has_a_default_limits_and_a_reset() {
    let w = ChatWorld::start().await;
    for (rounds, accepted) in [
        (json!(0), false),
        (json!(33), false),
        (json!(-1), false),
        (json!("8"), false),
        (json!(1.5), false),
        (json!(1), true),
        (json!(32), true),
    ] {
        let (status, body) = w
            .call(
                Method::POST,
                "/v1/agents",
                Some(agent_body(&w, json!({"max_tool_rounds": rounds}))),
            )
            .await;
        if accepted {
            assert_eq!(status, 201, "{rounds}: {body}");
            assert_eq!(body["max_tool_rounds"], rounds);
        } else {
            assert_eq!(status, 400, "{rounds}: {body}");
            let message = body["error"]["message"].as_str().unwrap_or_default();
            assert!(message.contains("max_tool_rounds"), "{rounds}: {message}");
        }
    }
    let path = format!("/v1/agents/{}", w.agent_id);
    let (_, agent) = w.call(Method::GET, &path, None).await;
    assert_eq!(agent["max_tool_rounds"], 8);
    let patch = |body: Value| w.call(Method::PATCH, &path, Some(body));
    let (status, agent) = patch(json!({"max_tool_rounds": 3})).await;
    assert_eq!((status, agent["max_tool_rounds"].clone()), (200, json!(3)));
    // Absent keeps it.
    let (_, agent) = patch(json!({"name": "other"})).await;
    assert_eq!(agent["max_tool_rounds"], 3);
    assert_eq!(resolve(&w, &w.agent_id).await.max_tool_rounds, 3);
    for bad in [json!(0), json!(33), json!("3")] {
        let (status, err) = patch(json!({"max_tool_rounds": bad})).await;
        assert_eq!(status, 400, "{bad}: {err}");
        let message = err["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("max_tool_rounds"), "{bad}: {message}");
    }
    // null returns to the default.
    let (status, agent) = patch(json!({"max_tool_rounds": null})).await;
    assert_eq!((status, agent["max_tool_rounds"].clone()), (200, json!(8)));
    assert_eq!(resolve(&w, &w.agent_id).await.max_tool_rounds, 8);
    let (_, listed) = w.call(Method::GET, "/v1/agents", None).await;
    assert!(listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|a| a["max_tool_rounds"].is_u64()));
}

#[tokio::test]
async fn malformed_server_tool_settings_are_refused_naming_the_field() {
    let w = ChatWorld::start().await;
    let with_http = |http: Value| json!({"tools": [client_tool(), {"name": "t", "input_schema": {}, "http": http}]});
    let headers =
        |headers: Value| with_http(json!({"url": "https://tools.example/t", "headers": headers}));
    let many: serde_json::Map<String, Value> = (0..17)
        .map(|n| (format!("X-{n}"), json!("CANARY-value")))
        .collect();
    let mut cases: Vec<(Value, String)> = [
        (with_http(json!({"url": "ftp://tools.example/t"})), "tools[1].http.url"),
        (with_http(json!({"url": "not a url"})), "tools[1].http.url"),
        (with_http(json!({"url": "https://tools.example/t?key=CANARY"})), "tools[1].http.url"),
        (with_http(json!({"url": "https://user:CANARY@tools.example/t"})), "tools[1].http.url"),
        (with_http(json!({"url": "http://169.254.169.254/latest"})), "tools[1].http.url"),
        (with_http(json!({"url": "https://[fd00:ec2::254]/"})), "tools[1].http.url"),
        (with_http(json!({"url": "https://metadata.google.internal/"})), "tools[1].http.url"),
        (with_http(json!({"url": "https://tools.example/t", "timeout_ms": 0})), "tools[1].http.timeout_ms"),
        (with_http(json!({"url": "https://tools.example/t", "timeout_ms": 300001})), "tools[1].http.timeout_ms"),
        (with_http(json!({"url": "https://tools.example/t", "timeout_ms": -1})), "timeout_ms"),
        (with_http(json!({"url": "https://tools.example/t", "method": "GET"})), "method"),
        (with_http(json!({"headers": {}})), "url"),
        (headers(Value::Object(many)), "tools[1].http.headers"),
        (headers(json!({"Bad Name": "CANARY-value"})), "tools[1].http.headers"),
        (headers(json!({"X-Bad:": "CANARY-value"})), "tools[1].http.headers"),
        (headers(json!({"": "CANARY-value"})), "tools[1].http.headers"),
        (headers(json!({"X-Key": ""})), "tools[1].http.headers.X-Key"),
        (headers(json!({"X-Key": "CANARY-".repeat(600)})), "tools[1].http.headers.X-Key"),
        (headers(json!({"X-Key": "CANARY\u{7}value"})), "tools[1].http.headers.X-Key"),
        (headers(json!({"X-Key": "CANARY\r\nX-Evil: 1"})), "tools[1].http.headers.X-Key"),
        (headers(json!({"X-Key": "CANARY-é"})), "tools[1].http.headers.X-Key"),
        (headers(json!({"X-Key": "CANARY", "x-key": "CANARY"})), "tools[1].http.headers.x-key"),
        (headers(json!({"X-Key": 12345})), "tools[1].http.headers"),
        (headers(json!({"X-Key": "****"})), "tools[1].http.headers.X-Key"),
        (
            json!({"tools": [client_tool(), {"name": "t", "input_schema": {}, "requires_approval": true}]}),
            "tools[1].requires_approval",
        ),
        (
            json!({"tools": [{"name": "t", "input_schema": {}, "requires_approval": "yes"}]}),
            "requires_approval",
        ),
    ]
    .into_iter()
    .map(|(body, field)| (body, field.to_owned()))
    .collect();
    for reserved in [
        "Host",
        "content-length",
        "Content-Type",
        "Transfer-Encoding",
        "CONNECTION",
        "Idempotency-Key",
    ] {
        cases.push((
            headers(json!({ reserved: "CANARY-value" })),
            format!("tools[1].http.headers.{reserved}"),
        ));
    }
    for (extra, field) in cases {
        let (status, err) = w
            .call(
                Method::POST,
                "/v1/agents",
                Some(agent_body(&w, extra.clone())),
            )
            .await;
        assert_eq!(status, 400, "{extra}: {err}");
        let message = err["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(&field), "{extra}: {message}");
        assert!(
            !message.contains("CANARY"),
            "{extra}: the 400 echoes a value: {message}"
        );
        // The same on a PATCH.
        let (status, err) = w
            .call(
                Method::PATCH,
                &format!("/v1/agents/{}", w.agent_id),
                Some(extra.clone()),
            )
            .await;
        assert_eq!(status, 400, "PATCH {extra}: {err}");
        let message = err["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(&field), "PATCH {extra}: {message}");
    }
    // The limits themselves pass: 16 headers of 4096 bytes, both timeouts.
    let widest: serde_json::Map<String, Value> = (0..16)
        .map(|n| (format!("X-{n}"), json!("v".repeat(4096))))
        .collect();
    for http in [
        json!({"url": "https://tools.example/t", "headers": widest, "timeout_ms": 1}),
        json!({"url": "https://tools.example/t", "timeout_ms": 300000}),
    ] {
        let (status, body) = w
            .call(
                Method::POST,
                "/v1/agents",
                Some(agent_body(&w, with_http(http))),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let (_, list) = w.call(Method::GET, "/v1/agents", None).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn the_record_size_check_counts_the_sealed_values() {
    let w = ChatWorld::start().await;
    // Each tool: 16 values of 4096 bytes, 64 KiB as sent; sealed (base64 of
    // a longer ciphertext) each takes a third more.
    let tool = |n: usize| {
        let headers: serde_json::Map<String, Value> = (0..16)
            .map(|h| {
                (
                    format!("X-{h}"),
                    json!(format!("{n:02}{h:02}").repeat(1024)),
                )
            })
            .collect();
        json!({"name": format!("t{n}"), "input_schema": {},
               "http": {"url": "https://tools.example/t", "headers": headers}})
    };
    // 5 tools: 320 KiB as sent, within the 350 KB an agent holds, but over
    // it once sealed.
    let tools: Vec<Value> = (0..5).map(tool).collect();
    let plain = serde_json::to_string(&tools).unwrap().len();
    assert!(plain < 350 * 1024, "{plain}");
    let (status, err) = w
        .call(
            Method::POST,
            "/v1/agents",
            Some(agent_body(&w, json!({"tools": tools}))),
        )
        .await;
    assert_eq!(status, 400, "{err}");
    let message = err["error"]["message"].as_str().unwrap_or_default();
    assert!(message.starts_with("tools: "), "{message}");
    assert!(message.contains("350 KB an agent can hold"), "{message}");
    // 4 such tools fit, sealed.
    let tools: Vec<Value> = (0..4).map(tool).collect();
    let (status, body) = w
        .call(
            Method::POST,
            "/v1/agents",
            Some(agent_body(&w, json!({"tools": tools}))),
        )
        .await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test]
async fn tool_urls_pass_the_ssrf_guard_of_the_deployment() {
    // Private URLs allowed (as in the other tests): loopback and http pass,
    // link-local and metadata addresses never.
    let w = ChatWorld::start().await;
    let create = |url: &str| {
        let body = agent_body(
            &w,
            json!({"tools": [{"name": "t", "input_schema": {}, "http": {"url": url}}]}),
        );
        w.call(Method::POST, "/v1/agents", Some(body))
    };
    for url in [
        "https://127.0.0.1/t",
        "http://127.0.0.1:9/t",
        "http://10.0.0.8/t",
        "https://localhost:8443/t",
    ] {
        let (status, body) = create(url).await;
        assert_eq!(status, 201, "{url}: {body}");
    }
    for url in [
        "http://169.254.169.254/",
        "https://169.254.169.254/latest/meta-data",
        "https://[::ffff:169.254.169.254]/",
    ] {
        let (status, body) = create(url).await;
        assert_eq!(status, 400, "{url}: {body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.starts_with("tools[0].http.url: "), "{message}");
    }

    // Without LAMBENT_ALLOW_PRIVATE_PROVIDER_URLS: public https only.
    let app = spawn_app_with(|c| c.allow_private_provider_urls = false).await;
    let (_, key) = app.user_with_key("strict", "member").await;
    let (status, provider) = app
        .call(
            Method::POST,
            "/v1/providers",
            &key,
            Some(json!({"kind": "anthropic", "name": "p", "api_key": "sk-ant-test-0123456789"})),
        )
        .await;
    assert_eq!(status, 201, "{provider}");
    let body = |url: &str| {
        json!({"name": "a", "provider_id": provider["id"], "model": "claude-haiku-4-5",
               "tools": [{"name": "t", "input_schema": {}, "http": {"url": url}}]})
    };
    for (url, why) in [
        ("http://169.254.169.254/", "must use https"),
        ("https://169.254.169.254/", "link-local or metadata"),
        ("https://127.0.0.1/", "loopback, private or reserved"),
        ("https://10.1.2.3/t", "loopback, private or reserved"),
        ("https://[::1]/t", "loopback, private or reserved"),
        ("https://localhost/t", "local host name"),
        ("https://tools.internal/t", "local host name"),
        ("http://tools.example.com/t", "must use https"),
    ] {
        let (status, err) = app
            .call(Method::POST, "/v1/agents", &key, Some(body(url)))
            .await;
        assert_eq!(status, 400, "{url}: {err}");
        let message = err["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.starts_with("tools[0].http.url: "),
            "{url}: {message}"
        );
        assert!(message.contains(why), "{url}: {message}");
    }
    let (status, created) = app
        .call(
            Method::POST,
            "/v1/agents",
            &key,
            Some(body("https://tools.example.com/t")),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    // A PATCH is guarded the same way.
    let (status, err) = app
        .call(
            Method::PATCH,
            &format!("/v1/agents/{}", created["id"].as_str().unwrap()),
            &key,
            Some(json!({"tools": [{"name": "t", "input_schema": {}, "http": {"url": "https://127.0.0.1/"}}]})),
        )
        .await;
    assert_eq!(status, 400, "{err}");
    app.stop().await;
}

#[tokio::test]
async fn the_compatible_endpoints_cannot_name_a_server_tool() {
    let w = ChatWorld::start().await;
    let http = json!({"url": "https://tools.example/t", "headers": {"X-Key": "CANARY-value"}});
    let (status, err) = w
        .call(
            Method::POST,
            "/v1/messages",
            Some(json!({
                "model": w.agent_id, "max_tokens": 10,
                "messages": [{"role": "user", "content": "hi"}],
                "tools": [{"name": "t", "input_schema": {"type": "object"}, "http": http}],
            })),
        )
        .await;
    assert_eq!(status, 400, "{err}");
    assert!(err.to_string().contains("http"), "{err}");
    for tool in [
        json!({"type": "function", "function": {"name": "t", "parameters": {}, "http": http}}),
        json!({"type": "function", "function": {"name": "t", "parameters": {}}, "http": http}),
    ] {
        let (status, err) = w
            .call(
                Method::POST,
                "/v1/chat/completions",
                Some(json!({
                    "model": w.agent_id,
                    "messages": [{"role": "user", "content": "hi"}],
                    "tools": [tool],
                })),
            )
            .await;
        assert_eq!(status, 400, "{err}");
        assert!(err.to_string().contains("http"), "{err}");
    }
    assert!(w.fake.requests().is_empty(), "a provider was called");
}
