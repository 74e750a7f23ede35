//! Agent turns (issue 14) through `lambent serve`: the loop with server
//! tools against the fake tool server, approvals, client and server tools
//! in one reply, limits (`max_tool_rounds`, budgets), background turns and
//! their stored events replayed after `Last-Event-ID`, and cancels.

use std::time::{Duration, Instant};

use lambent_fake_provider::{FakeUsage, Reply};
use lambent_testkit::chat::{parse_events, ChatWorld, JsonData, SseEvent};
use lambent_tool_server::{ToolReply, ToolServer};
use reqwest::Method;
use rust_decimal::Decimal;
use serde_json::{json, Value};

const TOOL_SECRET: &str = "tool-CANARY-77aa";

/// A chat world whose agent has the server tools `weather` and `clock`
/// (on the fake tool server), the client tool `ask_user`, and `deploy`,
/// a server tool that waits for approval.
async fn world() -> (ChatWorld, ToolServer) {
    world_with(json!({})).await
}

async fn world_with(agent: Value) -> (ChatWorld, ToolServer) {
    world_configured("anthropic", agent, |_| {}).await
}

async fn world_configured(
    kind: &str,
    agent: Value,
    configure: impl FnOnce(&mut lambent_app::config::Config),
) -> (ChatWorld, ToolServer) {
    let w = ChatWorld::start_with(kind, configure).await;
    let tools = ToolServer::start().await.unwrap();
    let schema = json!({"type": "object", "properties": {"city": {"type": "string"}}});
    let server_tool = |name: &str, path: &str, extra: Value| {
        let mut tool = json!({
            "name": name,
            "description": format!("the {name} tool"),
            "input_schema": schema,
            "http": {"url": tools.url(path), "headers": {"X-Tool-Key": TOOL_SECRET}, "timeout_ms": 1000},
        });
        if let (Some(t), Some(e)) = (tool.as_object_mut(), extra.as_object()) {
            t.extend(e.clone());
        }
        tool
    };
    let mut patch = json!({"tools": [
        server_tool("weather", "/weather", json!({})),
        server_tool("clock", "/clock", json!({})),
        server_tool("deploy", "/deploy", json!({"requires_approval": true})),
        {"name": "ask_user", "input_schema": {"type": "object"}},
    ]});
    if let (Some(p), Some(e)) = (patch.as_object_mut(), agent.as_object()) {
        p.extend(e.clone());
    }
    let (status, body) = w
        .call(
            Method::PATCH,
            &format!("/v1/agents/{}", w.agent_id),
            Some(patch),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    (w, tools)
}

fn usage(input: u64, output: u64) -> FakeUsage {
    FakeUsage {
        input,
        output,
        ..FakeUsage::default()
    }
}

/// Posts `body` to the session and reads the whole event stream.
async fn post(w: &ChatWorld, session: &str, body: Value) -> (u16, Vec<SseEvent>, String) {
    let response = w
        .app
        .request(
            Method::POST,
            &format!("/v1/sessions/{session}/messages"),
            &w.key,
        )
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let raw = response.text().await.unwrap();
    let events = if status == 200 {
        parse_events(&raw)
    } else {
        Vec::new()
    };
    (status, events, raw)
}

fn names(events: &[SseEvent]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e.event.as_deref().unwrap_or_default())
        .collect()
}

/// The events' names, each run of `delta`s as one.
fn shape(events: &[SseEvent]) -> Vec<&str> {
    let mut shape = names(events);
    shape.dedup_by(|a, b| *a == "delta" && *b == "delta");
    shape
}

fn named(events: &[SseEvent], name: &str) -> Vec<Value> {
    events
        .iter()
        .filter(|e| e.event.as_deref() == Some(name))
        .map(|e| e.json())
        .collect()
}

fn ids(events: &[SseEvent]) -> Vec<u64> {
    events
        .iter()
        .map(|e| e.id.as_deref().unwrap().parse().unwrap())
        .collect()
}

fn text_of(events: &[SseEvent]) -> String {
    named(events, "delta")
        .iter()
        .map(|d| d["text"].as_str().unwrap().to_owned())
        .collect()
}

fn decimal(v: &Value) -> Decimal {
    v.as_str().unwrap().parse().unwrap()
}

/// The turn `message_id` as `GET …/messages/{id}` shows it.
async fn turn_view(w: &ChatWorld, session: &str, message_id: &str) -> Value {
    let (status, view) = w
        .call(
            Method::GET,
            &format!("/v1/sessions/{session}/messages/{message_id}"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{view}");
    view
}

/// The sum of the stored replies' costs equals the usage total.
async fn assert_billed_once(w: &ChatWorld, session: &str) -> Decimal {
    let history = w.history(session, 100, "asc").await;
    let replied: Decimal = history
        .iter()
        .filter(|m| m["role"] == "assistant")
        .map(|m| decimal(&m["cost_usd"]))
        .sum();
    let (_, usage) = w.call(Method::GET, "/v1/usage", None).await;
    assert_eq!(decimal(&usage["total"]["cost_usd"]), replied, "{usage}");
    replied
}

#[tokio::test]
async fn a_three_round_loop_runs_server_tools_in_parallel_and_reads_back() {
    three_rounds("anthropic").await;
}

#[tokio::test]
async fn a_three_round_loop_speaks_the_openai_wire_format_too() {
    three_rounds("openai").await;
}

async fn three_rounds(kind: &str) {
    let (w, tools) = world_configured(kind, json!({}), |_| {}).await;
    let session = w.session(json!({})).await;
    // Round 1: two calls at once; round 2: one; then the answer.
    w.fake.push(
        Reply::text("Looking.")
            .with_tool_call("call_w1", "weather", r#"{"city":"Oslo"}"#)
            .with_tool_call("call_c1", "clock", r#"{"city":"Oslo"}"#)
            .usage(usage(100, 20)),
    );
    w.fake.push(
        Reply::tool_calls([])
            .with_tool_call("call_w2", "weather", r#"{"city":"Bergen"}"#)
            .usage(usage(200, 10)),
    );
    w.fake
        .push(Reply::chunks(["Oslo 3 °C, ", "Bergen 7 °C."]).usage(usage(300, 15)));
    let slow = Duration::from_millis(300);
    tools.set_default(
        "/weather",
        ToolReply::json(json!({"temp_c": 3})).delay(slow),
    );
    tools.set_default("/clock", ToolReply::text("12:00").delay(slow));

    let (status, events, raw) = post(&w, &session, json!({"content": "Weather?"})).await;
    assert_eq!(status, 200, "{raw}");
    assert_eq!(
        shape(&events),
        [
            "message_start",
            "delta",
            "tool_call",
            "tool_call",
            "message_end",
            "tool_result",
            "tool_result",
            "message_start",
            "tool_call",
            "message_end",
            "tool_result",
            "message_start",
            "delta",
            "message_end",
            "done"
        ],
        "{raw}"
    );
    assert_eq!(ids(&events), (0..events.len() as u64).collect::<Vec<_>>());
    // The two tools of one reply ran at once.
    assert_eq!(tools.max_in_flight(), 2);
    for (id, path) in [
        ("call_w1", "/weather"),
        ("call_c1", "/clock"),
        ("call_w2", "/weather"),
    ] {
        assert_eq!(tools.count_with_key(id), 1, "{id} sent once");
        let sent = tools
            .requests_to(path)
            .into_iter()
            .find(|r| r.idempotency_key.as_deref() == Some(id))
            .unwrap();
        assert_eq!(sent.header("x-tool-key"), Some(TOOL_SECRET));
        assert_eq!(sent.tool_call_id(), Some(id));
    }
    let results = named(&events, "tool_result");
    let by_id = |id: &str| {
        results
            .iter()
            .find(|r| r["tool_call_id"] == id)
            .unwrap()
            .clone()
    };
    assert_eq!(
        by_id("call_w1"),
        json!({"tool_call_id": "call_w1", "name": "weather", "content": "{\"temp_c\":3}", "is_error": false})
    );
    assert_eq!(by_id("call_c1")["content"], "12:00");
    let done = named(&events, "done").pop().unwrap();
    assert_eq!(done["stop_reason"], "end_turn");
    assert_eq!(done["model_calls"], 3);
    let ends = named(&events, "message_end");
    let spent: Decimal = ends.iter().map(|e| decimal(&e["cost_usd"])).sum();
    assert_eq!(decimal(&done["cost_usd"]), spent);
    assert_eq!(done["usage"]["input_tokens"], 600);

    // The model saw each round's results.
    let requests = w.fake.requests();
    assert_eq!(requests.len(), 3);
    let last = requests[2].body["messages"].to_string();
    for seen in ["call_w1", "call_c1", "call_w2", "12:00"] {
        assert!(last.contains(seen), "{seen} in {last}");
    }

    // History: the user's message, each reply and each result, one turn.
    let turn = named(&events, "message_start")[0]["message_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let history = w.history(&session, 100, "asc").await;
    let roles: Vec<&str> = history
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(
        roles,
        [
            "user",
            "assistant",
            "tool",
            "tool",
            "assistant",
            "tool",
            "assistant"
        ]
    );
    assert!(history.iter().all(|m| m["turn_id"] == turn.as_str()));
    assert_eq!(history[1]["id"], turn.as_str());
    assert_eq!(history[6]["content"], "Oslo 3 °C, Bergen 7 °C.");
    assert_eq!(history[5]["tool_call_id"], "call_w2");
    assert_eq!(assert_billed_once(&w, &session).await, spent);
    let (_, s) = w
        .call(Method::GET, &format!("/v1/sessions/{session}"), None)
        .await;
    assert_eq!(s["message_count"], 7, "{s}");

    // The loop sent each call the conversation the stored history reads
    // back as: the next turn's call starts with the third call's messages.
    w.fake.push(Reply::text("You're welcome."));
    let (status, _, raw) = post(&w, &session, json!({"content": "Thanks"})).await;
    assert_eq!(status, 200, "{raw}");
    let requests = w.fake.requests();
    let (third, fourth) = (&requests[2].body["messages"], &requests[3].body["messages"]);
    let third = third.as_array().unwrap();
    assert_eq!(fourth.as_array().unwrap()[..third.len()], third[..]);

    // The stored events are the ones streamed, and the turn is complete.
    let replay = w.turn_events(&session, &turn, None).await;
    assert_eq!(replay, events);
    let view = turn_view(&w, &session, &turn).await;
    assert_eq!(view["status"], "complete");
    assert_eq!(view["turn"]["model_calls"], 3);
    assert_eq!(view["turn"]["stop_reason"], "end_turn");
}

#[tokio::test]
async fn max_tool_rounds_ends_the_loop_with_the_calls_answered_as_not_run() {
    let (w, tools) = world_with(json!({"max_tool_rounds": 2})).await;
    let session = w.session(json!({})).await;
    for round in 0..3 {
        w.fake.push(
            Reply::tool_calls([])
                .with_tool_call(&format!("call_{round}"), "weather", r#"{"city":"Oslo"}"#)
                .usage(usage(10, 5)),
        );
    }
    tools.set_default("/weather", ToolReply::json(json!({"temp_c": 3})));
    let (status, events, raw) = post(&w, &session, json!({"content": "Forever?"})).await;
    assert_eq!(status, 200, "{raw}");
    let done = named(&events, "done").pop().unwrap();
    assert_eq!(done["stop_reason"], "max_tool_rounds", "{raw}");
    assert_eq!(done["model_calls"], 3);
    assert_eq!(tools.requests_to("/weather").len(), 2, "two rounds ran");
    assert_eq!(tools.count_with_key("call_2"), 0);
    let history = w.history(&session, 100, "asc").await;
    let last = history.last().unwrap();
    assert_eq!(last["tool_call_id"], "call_2");
    assert_eq!(last["is_error"], true);
    assert!(last["content"]
        .as_str()
        .unwrap()
        .contains("max_tool_rounds"));
    assert_billed_once(&w, &session).await;
}

#[tokio::test]
async fn a_failing_and_a_hanging_tool_reach_the_model_as_errors() {
    let (w, tools) = world().await;
    let session = w.session(json!({})).await;
    w.fake.push(
        Reply::tool_calls([])
            .with_tool_call("call_fail", "weather", r#"{"city":"Oslo"}"#)
            .with_tool_call("call_hang", "clock", r#"{"city":"Oslo"}"#),
    );
    w.fake.push(Reply::text("Both failed."));
    tools.set_default(
        "/weather",
        ToolReply::status(500, "stack trace with secrets"),
    );
    tools.set_default("/clock", ToolReply::hang());
    let started = Instant::now();
    let (status, events, raw) = post(&w, &session, json!({"content": "Try"})).await;
    assert_eq!(status, 200, "{raw}");
    // The hanging tool's timeout (1 s) bounds the turn.
    assert!(started.elapsed() < Duration::from_secs(10));
    let results = named(&events, "tool_result");
    assert_eq!(results.len(), 2, "{raw}");
    for result in &results {
        assert_eq!(result["is_error"], true, "{result}");
        let content = result["content"].as_str().unwrap();
        assert!(!content.contains("secrets"), "{content}");
        assert!(content.len() < 200, "{content}");
    }
    assert_eq!(named(&events, "done")[0]["stop_reason"], "end_turn");
    let second = w.fake.requests()[1].body["messages"].to_string();
    assert!(second.contains("call_fail") && second.contains("call_hang"));
    assert_eq!(text_of(&events), "Both failed.");
}

#[tokio::test]
async fn approvals_run_a_granted_tool_and_tell_the_model_of_a_denial() {
    let (w, tools) = world().await;
    let session = w.session(json!({})).await;
    tools.set_default("/deploy", ToolReply::text("deployed"));
    w.fake.push(Reply::text("Deploying.").with_tool_call(
        "call_d1",
        "deploy",
        r#"{"city":"prod"}"#,
    ));
    let (status, events, raw) = post(&w, &session, json!({"content": "Ship it"})).await;
    assert_eq!(status, 200, "{raw}");
    assert_eq!(
        named(&events, "approval_required"),
        [json!({"tool_call_id": "call_d1", "name": "deploy", "input": {"city": "prod"}})]
    );
    assert_eq!(
        named(&events, "done")[0]["stop_reason"],
        "approval_required"
    );
    assert!(tools.requests().is_empty(), "nothing runs before approval");
    let turn = named(&events, "message_start")[0]["message_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let view = turn_view(&w, &session, &turn).await;
    assert_eq!(view["status"], "waiting");
    assert_eq!(view["turn"]["waiting"][0]["tool_call_id"], "call_d1");
    assert_eq!(view["turn"]["waiting"][0]["needs"], "approval");

    // Answers that do not fit are refused; nothing is lost.
    for (body, status, field) in [
        (
            json!({"approvals": [{"tool_call_id": "call_x", "approved": true}]}),
            400,
            "approvals[0].tool_call_id",
        ),
        (
            json!({"tool_results": [{"tool_call_id": "call_d1", "content": "ok"}]}),
            400,
            "tool_results[0].tool_call_id",
        ),
        (json!({"approvals": []}), 400, "tool_results"),
    ] {
        let (got, _, raw) = post(&w, &session, body).await;
        assert_eq!(got, status, "{raw}");
        assert!(raw.contains(field), "{raw}");
    }

    // Granted: the tool runs once, the model goes on.
    w.fake.push(Reply::text("Done. Again?").with_tool_call(
        "call_d2",
        "deploy",
        r#"{"city":"prod"}"#,
    ));
    let (status, events, raw) = post(
        &w,
        &session,
        json!({"approvals": [{"tool_call_id": "call_d1", "approved": true}]}),
    )
    .await;
    assert_eq!(status, 200, "{raw}");
    assert_eq!(names(&events)[0], "tool_result", "{raw}");
    assert_eq!(named(&events, "tool_result")[0]["content"], "deployed");
    assert_eq!(tools.count_with_key("call_d1"), 1);
    assert_eq!(turn_view(&w, &session, &turn).await["status"], "complete");
    // The same answer again: nothing waits for it any more.
    let (status, _, raw) = post(
        &w,
        &session,
        json!({"approvals": [{"tool_call_id": "call_d1", "approved": true}]}),
    )
    .await;
    assert_eq!(status, 400, "{raw}");

    // Denied: the tool never runs; the model is told why.
    w.fake.push(Reply::text("Understood."));
    let (status, events, raw) = post(
        &w,
        &session,
        json!({"approvals": [{"tool_call_id": "call_d2", "approved": false, "reason": "not on a Friday"}]}),
    )
    .await;
    assert_eq!(status, 200, "{raw}");
    let denial = &named(&events, "tool_result")[0];
    assert_eq!(denial["is_error"], true);
    assert!(denial["content"]
        .as_str()
        .unwrap()
        .contains("not on a Friday"));
    assert_eq!(tools.count_with_key("call_d2"), 0);
    let told = w.fake.requests().last().unwrap().body["messages"].to_string();
    assert!(told.contains("not on a Friday"), "{told}");
    assert_eq!(text_of(&events), "Understood.");
    assert_billed_once(&w, &session).await;
}

#[tokio::test]
async fn a_turn_with_client_and_server_tools_runs_its_own_and_waits_for_the_rest() {
    let (w, tools) = world().await;
    let session = w.session(json!({})).await;
    tools.set_default("/weather", ToolReply::json(json!({"temp_c": 3})));
    w.fake.push(
        Reply::tool_calls([])
            .with_tool_call("call_s", "weather", r#"{"city":"Oslo"}"#)
            .with_tool_call("call_u", "ask_user", r#"{"question":"which day?"}"#),
    );
    let (status, events, raw) = post(&w, &session, json!({"content": "Plan a trip"})).await;
    assert_eq!(status, 200, "{raw}");
    assert_eq!(named(&events, "tool_result")[0]["tool_call_id"], "call_s");
    let done = named(&events, "done").pop().unwrap();
    assert_eq!(done["stop_reason"], "tool_use");
    let turn = named(&events, "message_start")[0]["message_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let view = turn_view(&w, &session, &turn).await;
    assert_eq!(view["status"], "waiting");
    assert_eq!(view["turn"]["waiting"].as_array().unwrap().len(), 1);
    assert_eq!(view["turn"]["waiting"][0]["tool_call_id"], "call_u");
    assert_eq!(view["turn"]["waiting"][0]["needs"], "result");

    // The server tool's result is not the caller's to send.
    let (status, _, raw) = post(
        &w,
        &session,
        json!({"tool_results": [
            {"tool_call_id": "call_u", "content": "Monday"},
            {"tool_call_id": "call_s", "content": "forged"},
        ]}),
    )
    .await;
    assert_eq!(status, 400, "{raw}");
    w.fake.push(Reply::text("Monday in Oslo, 3 °C."));
    let (status, events, raw) = post(
        &w,
        &session,
        json!({"tool_results": [{"tool_call_id": "call_u", "content": "Monday"}]}),
    )
    .await;
    assert_eq!(status, 200, "{raw}");
    assert_eq!(text_of(&events), "Monday in Oslo, 3 °C.");
    let history = w.history(&session, 100, "asc").await;
    let roles: Vec<&str> = history
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "assistant", "tool", "tool", "assistant"]);
    assert_eq!(history[2]["tool_call_id"], "call_s");
    assert_eq!(history[3]["tool_call_id"], "call_u");
    let last = w.fake.requests().last().unwrap().body["messages"].to_string();
    assert!(last.contains("Monday") && last.contains("temp_c"), "{last}");
    assert_eq!(tools.requests().len(), 1);
}

#[tokio::test]
async fn a_budget_spent_mid_loop_ends_the_turn_with_what_was_used_billed() {
    let (w, tools) = world().await;
    // The first call fits; what it cost leaves too little for the next.
    let session = w.session(json!({"budget_usd": "0.35"})).await;
    tools.set_default("/weather", ToolReply::json(json!({"temp_c": 3})));
    w.fake.push(
        Reply::tool_calls([])
            .with_tool_call("call_1", "weather", r#"{"city":"Oslo"}"#)
            .usage(usage(116_633, 0)),
    );
    let (status, events, raw) = post(&w, &session, json!({"content": "Weather?"})).await;
    assert_eq!(status, 200, "{raw}");
    let done = named(&events, "done").pop().unwrap();
    assert_eq!(done["stop_reason"], "budget_exceeded", "{raw}");
    assert_eq!(done["model_calls"], 1);
    assert_eq!(named(&events, "error")[0]["code"], "budget_exceeded");
    assert_eq!(tools.requests().len(), 1, "the round's tool ran");
    assert_eq!(w.fake.requests().len(), 1, "no call past the budget");
    let spent = assert_billed_once(&w, &session).await;
    assert_eq!(spent, "0.349899".parse::<Decimal>().unwrap());
    let turn = named(&events, "message_start")[0]["message_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(turn_view(&w, &session, &turn).await["status"], "incomplete");
}

/// Reads a live event stream until event `until` (inclusive), then hangs up.
async fn read_until(response: reqwest::Response, until: u64) -> Vec<SseEvent> {
    let mut response = response;
    let mut raw = String::new();
    loop {
        let chunk = response.chunk().await.unwrap().expect("the stream went on");
        raw.push_str(&String::from_utf8_lossy(&chunk));
        // Whole events only.
        let whole = &raw[..raw.rfind("\n\n").map_or(0, |i| i + 2)];
        let events = parse_events(whole);
        if let Some(at) = events
            .iter()
            .position(|e| e.id.as_deref() == Some(&until.to_string()))
        {
            return events[..=at].to_vec();
        }
    }
}

#[tokio::test]
async fn a_background_turn_is_replayed_after_last_event_id_whenever_the_client_comes_back() {
    let (w, _tools) = world().await;
    let session = w.session(json!({})).await;
    let (turn, chunks) = slow_background_turn(&w, &session, Duration::from_millis(40)).await;
    assert!(turn.starts_with("msg_"));

    // A client follows, and leaves at event 5.
    let follow = |after: Option<u64>| {
        let mut request = w.app.request(
            Method::GET,
            &format!("/v1/sessions/{session}/messages/{turn}/events"),
            &w.key,
        );
        if let Some(after) = after {
            request = request.header("last-event-id", after.to_string());
        }
        request.send()
    };
    let first = read_until(follow(None).await.unwrap(), 5).await;
    assert_eq!(ids(&first), (0..=5).collect::<Vec<_>>());
    assert_eq!(turn_view(&w, &session, &turn).await["status"], "running");

    // Back while the turn runs: every event after 5, once, to `done`.
    let live = parse_events(&follow(Some(5)).await.unwrap().text().await.unwrap());
    assert!(
        named(&live, "delta").len() < chunks.len(),
        "the turn was still running when the client came back"
    );
    // Back again after it ended: the same events.
    let after = parse_events(&follow(Some(5)).await.unwrap().text().await.unwrap());
    for events in [&live, &after] {
        assert_eq!(
            ids(events),
            (6..6 + events.len() as u64).collect::<Vec<_>>()
        );
        assert_eq!(events.last().unwrap().event.as_deref(), Some("done"));
    }
    assert_eq!(live, after);
    // What the client saw, joined, is the stored reply.
    let mut seen = first.clone();
    seen.extend(after.iter().cloned());
    let view = turn_view(&w, &session, &turn).await;
    assert_eq!(view["status"], "complete");
    assert_eq!(view["content"], text_of(&seen));
    assert_eq!(text_of(&seen), chunks.concat());
    // `?after=` works for clients that cannot set the header.
    let (status, _) = w
        .call(
            Method::GET,
            &format!("/v1/sessions/{session}/messages/{turn}/events?after=x"),
            None,
        )
        .await;
    assert_eq!(status, 400);
    assert_billed_once(&w, &session).await;
}

#[tokio::test]
async fn a_cancel_stops_a_model_stream_and_a_tool_call_and_bills_what_was_used() {
    let (w, tools) = world().await;
    let session = w.session(json!({})).await;
    let cancel = |turn: String| {
        let w = &w;
        let session = session.clone();
        async move {
            w.call(
                Method::POST,
                &format!("/v1/sessions/{session}/messages/{turn}/cancel"),
                None,
            )
            .await
        }
    };

    // During a model stream.
    let chunks: Vec<String> = (0..200).map(|i| format!("w{i} ")).collect();
    w.fake
        .push(Reply::chunks(chunks).chunk_delay(Duration::from_millis(50)));
    let response = w
        .app
        .request(
            Method::POST,
            &format!("/v1/sessions/{session}/messages"),
            &w.key,
        )
        .json(&json!({"content": "Go on forever"}))
        .send()
        .await
        .unwrap();
    let seen = read_until(response, 3).await;
    let turn = named(&seen, "message_start")[0]["message_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, view) = cancel(turn.clone()).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["status"], "cancelled", "{view}");
    let events = w.turn_events(&session, &turn, None).await;
    let end = named(&events, "message_end").pop().unwrap();
    assert_eq!(end["stop_reason"], "cancelled");
    assert_eq!(named(&events, "done")[0]["stop_reason"], "cancelled");
    let stored = w.history(&session, 100, "asc").await.pop().unwrap();
    assert_eq!(stored["status"], "cancelled");
    assert!(
        decimal(&stored["cost_usd"]) > Decimal::ZERO,
        "what was used is billed"
    );
    assert!(stored["content"].as_str().unwrap().starts_with("w0 w1"));
    lambent_testkit::eventually(
        "the provider stream closed",
        Duration::from_secs(5),
        || async { (w.fake.open_streams() == 0).then_some(()) },
    )
    .await;
    // Idempotent.
    let (status, again) = cancel(turn.clone()).await;
    assert_eq!((status, &again["status"]), (200, &json!("cancelled")));

    // During a tool call.
    tools.set_default(
        "/weather",
        ToolReply::json(json!({})).delay(Duration::from_secs(30)),
    );
    w.fake
        .push(Reply::tool_calls([]).with_tool_call("call_slow", "weather", "{}"));
    let (status, accepted) = w
        .call(
            Method::POST,
            &format!("/v1/sessions/{session}/messages"),
            Some(json!({"content": "Slow tool", "background": true})),
        )
        .await;
    assert_eq!(status, 202, "{accepted}");
    let turn = accepted["message_id"].as_str().unwrap().to_owned();
    lambent_testkit::eventually(
        "the tool call under way",
        Duration::from_secs(10),
        || async { (tools.in_flight() == 1).then_some(()) },
    )
    .await;
    let started = Instant::now();
    let (status, view) = cancel(turn.clone()).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["status"], "cancelled", "{view}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let events = w.turn_events(&session, &turn, None).await;
    let result = &named(&events, "tool_result")[0];
    assert_eq!(result["is_error"], true);
    assert_eq!(result["content"], "cancelled");
    assert_eq!(named(&events, "done")[0]["stop_reason"], "cancelled");
    assert_eq!(w.fake.requests().len(), 2, "no model call after the cancel");
    assert_billed_once(&w, &session).await;
}

#[tokio::test]
async fn a_background_turn_longer_than_its_invocation_goes_on_in_the_next() {
    // The worker's invocation lasts 1 s here: a turn of three rounds with
    // slow tools outlives it.
    let (w, tools) = world_configured("anthropic", json!({}), |c| {
        c.stream_deadline = Duration::from_secs(1);
    })
    .await;
    let session = w.session(json!({})).await;
    tools.set_default(
        "/weather",
        ToolReply::json(json!({"temp_c": 3})).delay(Duration::from_millis(700)),
    );
    for round in 0..3 {
        w.fake.push(
            Reply::tool_calls([])
                .with_tool_call(&format!("call_{round}"), "weather", r#"{"city":"Oslo"}"#)
                .usage(usage(10, 5)),
        );
    }
    w.fake
        .push(Reply::text("Done at last.").usage(usage(10, 5)));
    let (status, accepted) = w
        .call(
            Method::POST,
            &format!("/v1/sessions/{session}/messages"),
            Some(json!({"content": "Take your time", "background": true})),
        )
        .await;
    assert_eq!(status, 202, "{accepted}");
    let turn = accepted["message_id"].as_str().unwrap().to_owned();
    // A follow ends at the (short) deadline too: the client reconnects
    // with the last id it saw, until `done`.
    let mut events: Vec<SseEvent> = Vec::new();
    let started = Instant::now();
    while events.last().and_then(|e| e.event.as_deref()) != Some("done") {
        assert!(started.elapsed() < Duration::from_secs(30), "no done");
        let after = events
            .last()
            .map(|e| e.id.as_deref().unwrap().parse().unwrap());
        events.extend(w.turn_events(&session, &turn, after).await);
    }
    assert_eq!(ids(&events), (0..events.len() as u64).collect::<Vec<_>>());
    let done = named(&events, "done");
    assert_eq!(done.len(), 1);
    assert_eq!(done[0]["stop_reason"], "end_turn");
    assert_eq!(done[0]["model_calls"], 4);
    assert_eq!(text_of(&events), "Done at last.");
    for round in 0..3 {
        assert_eq!(tools.count_with_key(&format!("call_{round}")), 1);
    }
    assert_eq!(w.fake.requests().len(), 4, "no model call made twice");
    let view = turn_view(&w, &session, &turn).await;
    assert_eq!(view["status"], "complete");
    assert_eq!(view["turn"]["model_calls"], 4);
    assert_billed_once(&w, &session).await;
}

/// A world whose turns store their events every 50 ms once followed and
/// not before the turn ends otherwise (an hour), with its store at hand.
async fn world_with_store() -> (ChatWorld, std::sync::Arc<dyn lambent_ports::ItemStore>) {
    let kept = std::sync::Arc::new(std::sync::OnceLock::new());
    let layer = {
        let kept = kept.clone();
        lambent_local::serve::StoreLayer::new(move |store| {
            let _ = kept.set(store.clone());
            store
        })
    };
    let app = lambent_testkit::app::spawn_app_layered(
        lambent_core::clock::system(),
        Some(layer),
        |config| {
            config.events_flush = Duration::from_millis(50);
            config.events_idle_flush = Duration::from_secs(60);
        },
    )
    .await;
    let w = ChatWorld::seed(app, "anthropic").await;
    let store = kept.get().expect("the store was built").clone();
    (w, store)
}

/// A background turn of 40 deltas, one every `pace`: its ID and its deltas.
async fn slow_background_turn(
    w: &ChatWorld,
    session: &str,
    pace: Duration,
) -> (String, Vec<String>) {
    let chunks: Vec<String> = (0..40).map(|i| format!("word{i} ")).collect();
    w.fake.push(
        Reply::chunks(chunks.clone())
            .chunk_delay(pace)
            .usage(usage(50, 40)),
    );
    let (status, accepted) = w
        .call(
            Method::POST,
            &format!("/v1/sessions/{session}/messages"),
            Some(json!({"content": "Tell me a story", "background": true})),
        )
        .await;
    assert_eq!(status, 202, "{accepted}");
    let turn = accepted["message_id"].as_str().unwrap().to_owned();
    (turn, chunks)
}

#[tokio::test]
async fn a_turn_nobody_follows_stores_its_events_rarely_and_often_once_followed() {
    let (w, store) = world_with_store().await;
    let stored = |session: String, turn: String| {
        let store = store.clone();
        async move {
            let next = lambent_store::turns::next_event_id(store.as_ref(), &session, &turn);
            let running = lambent_store::turns::get(store.as_ref(), &session, &turn);
            let (next, running) = (next.await.unwrap(), running.await.unwrap().unwrap());
            (next, !running.status.is_final())
        }
    };

    // Followed from this process: its events come while it runs.
    let session = w.session(json!({})).await;
    let (turn, _) = slow_background_turn(&w, &session, Duration::from_millis(50)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        stored(session.clone(), turn.clone()).await,
        (0, true),
        "half a second into an unfollowed turn nothing is stored yet"
    );
    let follower = w
        .app
        .request(
            Method::GET,
            &format!("/v1/sessions/{session}/messages/{turn}/events"),
            &w.key,
        )
        .send()
        .await
        .unwrap();
    let first = read_until(follower, 3).await;
    assert_eq!(ids(&first), vec![0, 1, 2, 3]);
    assert_eq!(turn_view(&w, &session, &turn).await["status"], "running");

    // Followed from another process (as on Lambda): only the store tells
    // the runner, which reads it every second (the turn lasts about 4 s).
    let session = w.session(json!({})).await;
    let (turn, _) = slow_background_turn(&w, &session, Duration::from_millis(100)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    lambent_store::turns::mark_followed(store.as_ref(), &session, &turn)
        .await
        .unwrap();
    let marked = Instant::now();
    loop {
        let (next, running) = stored(session.clone(), turn.clone()).await;
        if next > 0 {
            assert!(running, "the events were stored only at the turn's end");
            break;
        }
        assert!(running, "the turn ended before any event was stored");
        assert!(marked.elapsed() < Duration::from_secs(4));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let view = loop {
        let view = turn_view(&w, &session, &turn).await;
        if view["status"] != "running" {
            break view;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(view["status"], "complete");
}

/// A background turn that could not make its first call is refused as a
/// turn in the request would be (429 `budget_exceeded`, 400), before
/// anything is stored or queued: not answered 202 and then failed with the
/// message unanswered.
#[tokio::test]
async fn a_background_turn_over_its_budget_is_refused_up_front() {
    let (w, _tools) = world().await;
    let session = w.session(json!({"budget_usd": "0.000001"})).await;
    let (status, body) = w
        .call(
            Method::POST,
            &format!("/v1/sessions/{session}/messages"),
            Some(json!({"content": "Tell me a story", "background": true})),
        )
        .await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "budget_exceeded", "{body}");
    let (status, history) = w
        .call(
            Method::GET,
            &format!("/v1/sessions/{session}/messages"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{history}");
    assert_eq!(
        history["items"].as_array().map(Vec::len),
        Some(0),
        "{history}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(w.fake.requests().is_empty(), "no model call was made");
}
