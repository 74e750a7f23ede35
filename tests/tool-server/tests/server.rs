//! The tool server over real HTTP, checked with reqwest.

// The helpers below are test code too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use lambent_tool_server::{large_text, ToolReply, ToolServer};
use serde_json::{json, Value};

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

/// A tool call as Lambent sends it.
fn call_body(tool_call_id: &str, name: &str, input: Value) -> Value {
    json!({
        "tool_call_id": tool_call_id,
        "name": name,
        "input": input,
        "session_id": "ses_1",
        "run_id": "run_1",
    })
}

async fn call_with(
    client: &reqwest::Client,
    url: &str,
    tool_call_id: &str,
    input: Value,
) -> reqwest::Result<reqwest::Response> {
    client
        .post(url)
        .header("Idempotency-Key", tool_call_id)
        .json(&call_body(tool_call_id, "weather", input))
        .send()
        .await
}

async fn call(url: &str, tool_call_id: &str, input: Value) -> reqwest::Response {
    call_with(&client(), url, tool_call_id, input)
        .await
        .unwrap()
}

fn content_type(resp: &reqwest::Response) -> String {
    resp.headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// Polls `cond` until it holds or `within` passes.
async fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn url_and_addr() {
    let tools = ToolServer::start().await.unwrap();
    let addr = tools.addr();
    assert!(addr.ip().is_loopback());
    assert_ne!(addr.port(), 0);
    assert_eq!(
        tools.url("/tools/weather"),
        format!("http://127.0.0.1:{}/tools/weather", addr.port())
    );
    assert_eq!(tools.url("tools/weather"), tools.url("/tools/weather"));
}

#[tokio::test]
async fn default_answer_is_echo_of_the_input() {
    let tools = ToolServer::start().await.unwrap();
    let resp = call(
        &tools.url("/tools/anything"),
        "call_1",
        json!({ "city": "Zürich" }),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(content_type(&resp), "application/json");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body, json!({ "echo": { "city": "Zürich" } }));

    // No input (or no JSON at all): the echo is null.
    let resp = client()
        .post(tools.url("/x"))
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.json::<Value>().await.unwrap(), json!({ "echo": null }));

    // An explicit echo behaves the same.
    tools.push("/e", ToolReply::echo());
    let resp = call(&tools.url("/e"), "call_2", json!([1, 2, 3])).await;
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({ "echo": [1, 2, 3] })
    );
}

#[tokio::test]
async fn queued_answers_then_default_per_path() {
    let tools = ToolServer::start().await.unwrap();
    tools.push("/tools/a", ToolReply::json(json!({ "n": 1 })));
    tools.push("/tools/a", ToolReply::json(json!({ "n": 2 })));
    tools.set_default("/tools/a", ToolReply::json(json!({ "n": "default" })));
    tools.push("tools/b", ToolReply::text("b once"));
    assert_eq!(tools.queued("/tools/a"), 2);
    assert_eq!(tools.queued("/tools/b"), 1);
    assert_eq!(tools.queued("/tools/c"), 0);

    let a = tools.url("/tools/a");
    let b = tools.url("/tools/b");
    let json_of = |resp: reqwest::Response| async move { resp.json::<Value>().await.unwrap() };

    // Paths do not share queues: /b's answer stays for /b.
    assert_eq!(
        json_of(call(&a, "c1", json!({})).await).await,
        json!({ "n": 1 })
    );
    let resp = call(&b, "c2", json!({})).await;
    assert_eq!(content_type(&resp), "text/plain; charset=utf-8");
    assert_eq!(resp.text().await.unwrap(), "b once");
    assert_eq!(
        json_of(call(&a, "c3", json!({})).await).await,
        json!({ "n": 2 })
    );
    assert_eq!(tools.queued("/tools/a"), 0);
    // Then the path's default, every time.
    for id in ["c4", "c5"] {
        assert_eq!(
            json_of(call(&a, id, json!({})).await).await,
            json!({ "n": "default" })
        );
    }
    // /b has no default left: echo.
    assert_eq!(
        json_of(call(&b, "c6", json!("x")).await).await,
        json!({ "echo": "x" })
    );
    // A queued answer still goes before the default.
    tools.push("/tools/a", ToolReply::json(json!({ "n": 3 })));
    assert_eq!(
        json_of(call(&a, "c7", json!({})).await).await,
        json!({ "n": 3 })
    );
    // The default can be replaced.
    tools.set_default("/tools/a", ToolReply::text("new default"));
    assert_eq!(
        call(&a, "c8", json!({})).await.text().await.unwrap(),
        "new default"
    );
}

#[tokio::test]
async fn status_answers() {
    let tools = ToolServer::start().await.unwrap();
    let url = tools.url("/tools/flaky");
    tools.push("/tools/flaky", ToolReply::status(500, "boom"));
    tools.push(
        "/tools/flaky",
        ToolReply::status(422, r#"{"error":"bad input"}"#),
    );
    tools.push("/tools/flaky", ToolReply::status(201, "created"));
    tools.push("/tools/flaky", ToolReply::status(404, ""));

    let resp = call(&url, "c1", json!({})).await;
    assert_eq!(resp.status(), 500);
    assert_eq!(content_type(&resp), "text/plain; charset=utf-8");
    assert_eq!(resp.text().await.unwrap(), "boom");

    let resp = call(&url, "c2", json!({})).await;
    assert_eq!(resp.status(), 422);
    assert_eq!(content_type(&resp), "application/json");
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({ "error": "bad input" })
    );

    let resp = call(&url, "c3", json!({})).await;
    assert_eq!(resp.status(), 201);
    assert_eq!(resp.text().await.unwrap(), "created");

    let resp = call(&url, "c4", json!({})).await;
    assert_eq!(resp.status(), 404);
    assert_eq!(resp.text().await.unwrap(), "");
}

#[tokio::test]
async fn delay_answers_late_and_counts_in_flight() {
    let tools = ToolServer::start().await.unwrap();
    let delay = Duration::from_millis(300);
    tools.push(
        "/tools/slow",
        ToolReply::json(json!({ "ok": true })).delay(delay),
    );
    let url = tools.url("/tools/slow");
    let started = Instant::now();
    let pending = tokio::spawn(async move { call(&url, "c1", json!({})).await });

    // Recorded at once, and in flight while it waits.
    assert!(eventually(Duration::from_secs(2), || tools.in_flight() == 1).await);
    assert_eq!(tools.requests().len(), 1);

    let resp = pending.await.unwrap();
    assert!(
        started.elapsed() >= delay,
        "answered after {:?}",
        started.elapsed()
    );
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap(), json!({ "ok": true }));
    // Once the client has its answer, the request is no longer in flight.
    assert_eq!(tools.in_flight(), 0);
    assert_eq!(tools.max_in_flight(), 1);

    // A delayed status error and a delayed echo.
    tools.push(
        "/d",
        ToolReply::status(503, "later").delay(Duration::from_millis(100)),
    );
    tools.push("/d", ToolReply::echo().delay(Duration::from_millis(100)));
    let started = Instant::now();
    let resp = call(&tools.url("/d"), "c2", json!(1)).await;
    assert_eq!(resp.status(), 503);
    let resp = call(&tools.url("/d"), "c3", json!(1)).await;
    assert_eq!(resp.json::<Value>().await.unwrap(), json!({ "echo": 1 }));
    assert!(started.elapsed() >= Duration::from_millis(200));
}

#[tokio::test]
async fn hang_makes_the_client_time_out() {
    let tools = ToolServer::start().await.unwrap();
    tools.set_default("/tools/stuck", ToolReply::hang());
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let started = Instant::now();
    let err = call_with(&client, &tools.url("/tools/stuck"), "c1", json!({}))
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "expected a timeout, got {err:?}");
    assert!(started.elapsed() >= Duration::from_millis(300));
    // The request was recorded all the same.
    let seen = tools.requests_to("/tools/stuck");
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].tool_call_id(), Some("c1"));
    // The client went away: the hung request stops counting.
    assert!(
        eventually(Duration::from_secs(2), || tools.in_flight() == 0).await,
        "in flight: {}",
        tools.in_flight()
    );
    assert_eq!(tools.max_in_flight(), 1);

    // Other paths still answer meanwhile.
    let resp = call(&tools.url("/tools/ok"), "c2", json!("hi")).await;
    assert_eq!(resp.json::<Value>().await.unwrap(), json!({ "echo": "hi" }));
}

#[tokio::test]
async fn large_body_is_exactly_n_bytes() {
    let tools = ToolServer::start().await.unwrap();
    let n = 200_000;
    tools.push("/tools/big", ToolReply::large(n));
    tools.push("/tools/big", ToolReply::large(0));
    let resp = call(&tools.url("/tools/big"), "c1", json!({})).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(content_type(&resp), "text/plain; charset=utf-8");
    assert_eq!(resp.content_length(), Some(n as u64));
    let body = resp.text().await.unwrap();
    assert_eq!(body.len(), n);
    assert!(body.starts_with("abcdefghijklmnopqrstuvwxyzabc"));
    assert_eq!(body, large_text(n));
    // 64 KiB = 65536 = 2520 * 26 + 16: the cut falls after a 'p'.
    assert_eq!(&body[65_535..65_537], "pq");

    let resp = call(&tools.url("/tools/big"), "c2", json!({})).await;
    assert_eq!(resp.text().await.unwrap(), "");
    assert_eq!(large_text(3), "abc");
}

#[tokio::test]
async fn records_headers_body_and_idempotency_key() {
    let tools = ToolServer::start().await.unwrap();
    let url = tools.url("/tools/weather?v=2");
    let resp = client()
        .post(&url)
        .header("Idempotency-Key", "toolu_01")
        .header("Authorization", "Bearer secret-token")
        .header("X-Custom-Thing", "yes")
        .json(&call_body("toolu_01", "weather", json!({ "city": "Oslo" })))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    let seen = tools.requests();
    assert_eq!(seen.len(), 1);
    let req = &seen[0];
    assert_eq!(req.method, "POST");
    assert_eq!(
        req.path, "/tools/weather",
        "the query is not part of the path"
    );
    assert_eq!(req.idempotency_key.as_deref(), Some("toolu_01"));
    assert_eq!(req.tool_call_id(), Some("toolu_01"));
    assert_eq!(req.name(), Some("weather"));
    assert_eq!(req.input(), Some(&json!({ "city": "Oslo" })));
    assert_eq!(req.session_id(), Some("ses_1"));
    assert_eq!(req.run_id(), Some("run_1"));
    assert_eq!(req.body["input"]["city"], "Oslo");

    // Header names in lower case, in the order sent.
    assert!(req
        .headers
        .iter()
        .all(|(n, _)| *n == n.to_ascii_lowercase()));
    let names: Vec<&str> = req.headers.iter().map(|(n, _)| n.as_str()).collect();
    let pos = |name: &str| names.iter().position(|n| *n == name).unwrap();
    assert!(pos("idempotency-key") < pos("authorization"));
    assert!(pos("authorization") < pos("x-custom-thing"));
    assert_eq!(req.header("authorization"), Some("Bearer secret-token"));
    assert_eq!(req.header("AUTHORIZATION"), Some("Bearer secret-token"));
    assert_eq!(req.header("x-custom-thing"), Some("yes"));
    assert_eq!(req.header("content-type"), Some("application/json"));
    assert_eq!(req.header("missing"), None);

    // A retry with the same key, another call, a request without a key.
    call(
        &tools.url("/tools/weather"),
        "toolu_01",
        json!({ "city": "Oslo" }),
    )
    .await;
    call(&tools.url("/tools/clock"), "toolu_02", json!({})).await;
    client()
        .post(tools.url("/tools/clock"))
        .send()
        .await
        .unwrap();
    assert_eq!(tools.count_with_key("toolu_01"), 2);
    assert_eq!(tools.count_with_key("toolu_02"), 1);
    assert_eq!(tools.count_with_key("toolu_03"), 0);
    assert_eq!(tools.requests_to("/tools/weather").len(), 2);
    let clock = tools.requests_to("tools/clock");
    assert_eq!(clock.len(), 2);
    assert_eq!(clock[0].tool_call_id(), Some("toolu_02"));
    // No key, no body.
    assert_eq!(clock[1].idempotency_key, None);
    assert_eq!(clock[1].body, Value::Null);
    assert_eq!(clock[1].tool_call_id(), None);
    assert_eq!(clock[1].input(), None);

    // A body that is not JSON is kept as a string.
    client()
        .post(tools.url("/raw"))
        .body("plain words")
        .send()
        .await
        .unwrap();
    assert_eq!(tools.requests_to("/raw")[0].body, json!("plain words"));

    // Other methods are recorded and refused, taking no scripted answer.
    tools.push("/tools/weather", ToolReply::text("for the POST"));
    let resp = client()
        .get(tools.url("/tools/weather"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(resp.headers()["allow"], "POST");
    assert_eq!(tools.queued("/tools/weather"), 1);
    let weather = tools.requests_to("/tools/weather");
    assert_eq!(weather.last().unwrap().method, "GET");

    tools.clear();
    assert!(tools.requests().is_empty());
    assert_eq!(tools.count_with_key("toolu_01"), 0);
    assert_eq!(tools.queued("/tools/weather"), 1, "clear keeps the script");
}

#[tokio::test]
async fn counts_concurrent_requests() {
    let tools = ToolServer::start().await.unwrap();
    tools.set_default(
        "/tools/slow",
        ToolReply::echo().delay(Duration::from_millis(400)),
    );
    assert_eq!((tools.in_flight(), tools.max_in_flight()), (0, 0));

    let client = client();
    let url = tools.url("/tools/slow");
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..4 {
        let (client, url) = (client.clone(), url.clone());
        calls.spawn(async move {
            let resp = call_with(&client, &url, &format!("c{i}"), json!(i))
                .await
                .unwrap();
            resp.json::<Value>().await.unwrap()
        });
    }
    assert!(
        eventually(Duration::from_secs(3), || tools.in_flight() == 4).await,
        "in flight: {}",
        tools.in_flight()
    );
    let mut echoed = Vec::new();
    while let Some(answer) = calls.join_next().await {
        echoed.push(answer.unwrap()["echo"].as_i64().unwrap());
    }
    echoed.sort_unstable();
    assert_eq!(echoed, [0, 1, 2, 3]);
    assert_eq!(tools.in_flight(), 0);
    assert_eq!(tools.max_in_flight(), 4);
    for i in 0..4 {
        assert_eq!(tools.count_with_key(&format!("c{i}")), 1);
    }

    // One at a time: the most at once is one.
    tools.clear();
    assert_eq!(tools.max_in_flight(), 0);
    for i in 0..2 {
        call_with(&client, &url, &format!("s{i}"), json!(i))
            .await
            .unwrap();
    }
    assert_eq!(tools.max_in_flight(), 1);
    assert_eq!(tools.requests().len(), 2);
}

#[tokio::test]
async fn dropping_the_server_closes_it() {
    let tools = ToolServer::start().await.unwrap();
    tools.set_default("/tools/stuck", ToolReply::hang());
    let url = tools.url("/tools/stuck");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let pending = {
        let (client, url) = (client.clone(), url.clone());
        tokio::spawn(async move { call_with(&client, &url, "c1", json!({})).await })
    };
    assert!(eventually(Duration::from_secs(2), || tools.in_flight() == 1).await);
    let started = Instant::now();
    drop(tools);
    // The hung connection is closed, not left to time out.
    let err = pending.await.unwrap().unwrap_err();
    assert!(
        !err.is_timeout(),
        "expected a closed connection, got {err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    // And nothing listens any more.
    assert!(call_with(&client, &url, "c2", json!({})).await.is_err());
}
