//! Sessions and streamed chat through the HTTP API of `lambent serve`, with
//! the fake provider on loopback speaking the providers' real wire formats.

use std::time::Duration;

use lambent_core::clock::ManualClock;
use lambent_fake_provider::{FakeUsage, FinalChunk, Reply, UsageAt};
use lambent_testkit::chat::{ChatWorld, JsonData, PROVIDER_KEY};
use lambent_testkit::eventually;
use reqwest::Method;
use serde_json::{json, Value};

const USAGE: FakeUsage = FakeUsage {
    input: 1234,
    output: 567,
    cache_read: 10_000,
    cache_write_5m: 1_500,
    cache_write_1h: 500,
};
/// USAGE at the test prices: 1234*3 + 567*15 + 10000*0.3 + 2000*3.75 micro-dollars.
const USAGE_COST: &str = "0.022707";
/// The same on an OpenAI wire, which has no cache writes: 1234*3 + 567*15 + 10000*0.3.
const USAGE_COST_OPENAI: &str = "0.015207";

#[tokio::test]
async fn a_streamed_reply_arrives_in_order_and_reads_back_from_history() {
    let w = ChatWorld::start().await;
    let session = w.session(json!({"title": "first"})).await;
    w.fake
        .push(Reply::chunks(["Hel", "lo, ", "wor", "ld!"]).usage(USAGE));

    let stream = w.chat(&session, "Say hello").await;
    assert_eq!(stream.status, 200, "{}", stream.raw);
    assert!(stream.content_type.starts_with("text/event-stream"));
    let names: Vec<_> = stream
        .events
        .iter()
        .map(|e| e.event.clone().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "message_start",
            "delta",
            "delta",
            "delta",
            "delta",
            "message_end",
            "done"
        ]
    );
    let ids: Vec<_> = stream
        .events
        .iter()
        .map(|e| e.id.clone().unwrap())
        .collect();
    assert_eq!(ids, ["0", "1", "2", "3", "4", "5", "6"]);
    let deltas: Vec<_> = stream
        .named("delta")
        .iter()
        .map(|e| e.json()["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(deltas, ["Hel", "lo, ", "wor", "ld!"]);
    let start = stream.named("message_start")[0].json();
    assert_eq!(start["session_id"], session);
    assert_eq!(start["model"], "fake-anthropic");
    let end = stream.end();
    assert_eq!(end["message_id"], start["message_id"]);
    assert_eq!(end["stop_reason"], "end_turn");
    assert_eq!(
        end["usage"],
        json!({"input_tokens": 1234, "output_tokens": 567, "cache_read_tokens": 10000, "cache_write_tokens": 2000})
    );
    assert_eq!(end["cost_usd"], USAGE_COST);
    // The turn's last event sums up its model calls.
    let done = stream.named("done")[0].json();
    assert_eq!(done["stop_reason"], "end_turn");
    assert_eq!(done["model_calls"], 1);
    assert_eq!(done["usage"], end["usage"]);
    assert_eq!(done["cost_usd"], USAGE_COST);

    // The provider got the agent's settings, the key and the message.
    let sent = w.fake.requests().pop().unwrap();
    assert_eq!(sent.path, "/v1/messages");
    assert_eq!(sent.header("x-api-key"), Some(PROVIDER_KEY));
    assert_eq!(sent.body["model"], "fake-anthropic");
    assert_eq!(sent.body["system"], "You are terse.");
    assert_eq!(sent.body["max_tokens"], 100);
    assert_eq!(
        sent.body["messages"],
        json!([{"role": "user", "content": "Say hello"}])
    );

    // History reads back what was streamed.
    let history = w.history(&session, 20, "asc").await;
    assert_eq!(history.len(), 2, "{history:?}");
    assert_eq!(history[0]["role"], "user");
    assert_eq!(history[0]["content"], "Say hello");
    assert_eq!(history[1]["role"], "assistant");
    assert_eq!(history[1]["id"], end["message_id"]);
    assert_eq!(history[1]["content"], stream.text());
    assert_eq!(history[1]["status"], "complete");
    assert_eq!(history[1]["usage"], end["usage"]);
    assert_eq!(history[1]["cost_usd"], end["cost_usd"]);
    assert_eq!(history[1]["prices"]["output_per_mtok"], "15");

    // The session carries the totals.
    let (_, s) = w
        .call(Method::GET, &format!("/v1/sessions/{session}"), None)
        .await;
    assert_eq!(s["cost_usd"], USAGE_COST);
    assert_eq!(s["usage"], end["usage"]);
    assert_eq!(s["message_count"], 2);

    // The turn is in the audit log (written beside the stream, not before it).
    let admin = w.app.admin_key();
    eventually(
        "the streamed turn's audit entry",
        Duration::from_secs(5),
        || async {
            let (_, audit) = w
                .app
                .call(Method::GET, "/v1/audit?limit=100", &admin, None)
                .await;
            audit["items"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| {
                    e["route"] == "/v1/sessions/{id}/messages" && e["user_id"] == w.user_id.as_str()
                })
                .then_some(())
        },
    )
    .await;

    // The next turn sends the history before the new message.
    w.fake.push(Reply::text("Again."));
    let second = w.chat(&session, "Once more").await;
    assert_eq!(second.status, 200, "{}", second.raw);
    let sent = w.fake.requests().pop().unwrap();
    assert_eq!(
        sent.body["messages"],
        json!([
            {"role": "user", "content": "Say hello"},
            {"role": "assistant", "content": "Hello, world!"},
            {"role": "user", "content": "Once more"},
        ])
    );
}

#[tokio::test]
async fn stream_false_answers_one_json_message() {
    let w = ChatWorld::start().await;
    let session = w.session(json!({})).await;
    w.fake.push(Reply::text("Whole reply.").usage(USAGE));
    let (status, message) = w.chat_whole(&session, "Hi").await;
    assert_eq!(status, 200, "{message}");
    assert_eq!(message["role"], "assistant");
    assert_eq!(message["content"], "Whole reply.");
    assert_eq!(message["cost_usd"], USAGE_COST);
    assert_eq!(message["status"], "complete");
    let history = w.history(&session, 10, "desc").await;
    assert_eq!(history[0], message);
    // Its events are stored like a streamed turn's.
    let replay = w
        .turn_events(&session, message["id"].as_str().unwrap(), None)
        .await;
    let names: Vec<_> = replay.iter().map(|e| e.event.clone().unwrap()).collect();
    assert_eq!(names.first().unwrap(), "message_start");
    assert_eq!(names[names.len() - 2..], ["message_end", "done"]);
    let text: String = replay
        .iter()
        .filter(|e| e.event.as_deref() == Some("delta"))
        .map(|e| e.json()["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(text, "Whole reply.");
}

#[tokio::test]
async fn every_usage_variant_is_priced_exactly() {
    let w = ChatWorld::start().await;
    let session = w.session(json!({})).await;
    for at in [UsageAt::Start, UsageAt::Delta, UsageAt::Both] {
        w.fake
            .push(Reply::text("ok").usage(USAGE).anthropic_usage_in(at));
        let stream = w.chat(&session, "price me").await;
        assert_eq!(
            stream.end()["cost_usd"],
            USAGE_COST,
            "{at:?}: {}",
            stream.raw
        );
        assert_eq!(stream.end()["usage"]["cache_write_tokens"], 2000, "{at:?}");
    }
    w.fake.push(Reply::text("ok").usage(USAGE));
    let (_, whole) = w.chat_whole(&session, "price me whole").await;
    assert_eq!(whole["cost_usd"], USAGE_COST);
    let (_, s) = w
        .call(Method::GET, &format!("/v1/sessions/{session}"), None)
        .await;
    assert_eq!(s["cost_usd"], "0.090828", "four calls at {USAGE_COST}");

    let o = ChatWorld::start_with("openai", |_| {}).await;
    let session = o.session(json!({})).await;
    for shape in [
        FinalChunk::EmptyChoices,
        FinalChunk::NullChoices,
        FinalChunk::WithChoices,
    ] {
        o.fake
            .push(Reply::text("ok").usage(USAGE).openai_usage_chunk(shape));
        let stream = o.chat(&session, "price me").await;
        let end = stream.end();
        assert_eq!(
            end["cost_usd"], USAGE_COST_OPENAI,
            "{shape:?}: {}",
            stream.raw
        );
        // cached tokens are part of OpenAI's prompt tokens, counted once.
        assert_eq!(end["usage"]["input_tokens"], 1234, "{shape:?}");
        assert_eq!(end["usage"]["cache_read_tokens"], 10000, "{shape:?}");
        assert_eq!(
            o.fake.requests().pop().unwrap().body["stream_options"]["include_usage"],
            true
        );
    }
    // A stream with no usage at all is stored and costs nothing.
    o.fake.push(
        Reply::text("ok")
            .usage(USAGE)
            .openai_usage_chunk(FinalChunk::Absent),
    );
    let stream = o.chat(&session, "no usage").await;
    assert_eq!(stream.end()["cost_usd"], "0");
    o.fake.push(Reply::text("ok").usage(USAGE));
    let (_, whole) = o.chat_whole(&session, "whole").await;
    assert_eq!(whole["cost_usd"], USAGE_COST_OPENAI);
}

async fn error_of(stream: &lambent_testkit::chat::Stream) -> Value {
    let errors = stream.named("error");
    assert_eq!(errors.len(), 1, "{}", stream.raw);
    assert!(stream.named("message_end").is_empty());
    errors[0].json()
}

#[tokio::test]
async fn provider_errors_are_clear_and_never_hang() {
    let w = ChatWorld::start_with("anthropic", |c| {
        c.provider_idle_timeout = Duration::from_millis(500);
    })
    .await;
    let session = w.session(json!({})).await;

    let cases = [
        (
            Reply::http_error(401, "authentication_error", "invalid x-api-key"),
            502,
            "API key",
        ),
        (
            Reply::http_error(429, "rate_limit_error", "slow down"),
            502,
            "rate limited",
        ),
        (Reply::http_error(500, "api_error", "boom"), 502, "HTTP 500"),
        (
            Reply::http_error(529, "overloaded_error", "Overloaded"),
            502,
            "overloaded",
        ),
        (Reply::text("never").hang(), 504, "timed out"),
    ];
    for (reply, status, words) in cases {
        w.fake.push(reply);
        let stream = w.chat(&session, "hi").await;
        assert_eq!(stream.status, status, "{}", stream.raw);
        let body: Value = serde_json::from_str(&stream.raw).unwrap();
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(words), "{message:?} lacks {words:?}");
        assert!(!stream.raw.contains(PROVIDER_KEY));
    }

    // Mid-stream: an error event, then the partial reply is kept as failed.
    w.fake
        .push(Reply::chunks(["one ", "two ", "three"]).error_after(2, "overloaded_error"));
    let stream = w.chat(&session, "go").await;
    assert_eq!(stream.status, 200);
    assert_eq!(stream.text(), "one two ");
    let error = error_of(&stream).await;
    assert_eq!(error["code"], "provider_error");
    assert!(error["request_id"].as_str().unwrap().starts_with("req_"));

    w.fake
        .push(Reply::chunks(["cut ", "here ", "never"]).cut_after(2));
    let stream = w.chat(&session, "go again").await;
    assert_eq!(stream.text(), "cut here ");
    let error = error_of(&stream).await;
    assert_eq!(error["code"], "provider_error");

    w.fake.push(
        Reply::chunks(["slow"])
            .chunk_delay(Duration::from_secs(3))
            .first_token_delay(Duration::from_secs(3)),
    );
    let stream = w.chat(&session, "stall").await;
    let error = error_of(&stream).await;
    assert_eq!(error["code"], "provider_timeout", "{}", stream.raw);

    let history = w.history(&session, 50, "asc").await;
    let failed: Vec<_> = history
        .iter()
        .filter(|m| m["status"] == "failed")
        .map(|m| m["content"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(failed, ["one two ", "cut here ", ""], "{history:#?}");
}

#[tokio::test]
async fn a_client_that_leaves_mid_stream_does_not_stop_its_turn() {
    let w = ChatWorld::start().await;
    let session = w.session(json!({})).await;
    let chunks: Vec<String> = (0..20).map(|i| format!("part{i} ")).collect();
    w.fake.push(
        Reply::chunks(chunks.clone())
            .chunk_delay(Duration::from_millis(50))
            .usage(USAGE),
    );
    let mut response = w
        .app
        .request(
            Method::POST,
            &format!("/v1/sessions/{session}/messages"),
            &w.key,
        )
        .json(&json!({"content": "tell me a long story"}))
        .send()
        .await
        .unwrap();
    // Read until the first delta, then hang up.
    let mut seen = String::new();
    while !seen.contains("event: delta") {
        let chunk = response.chunk().await.unwrap().unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    drop(response);

    // The turn goes on to its end: stored complete, billed whole.
    let stored = w.stored_reply(&session, Duration::from_secs(10)).await;
    assert_eq!(stored["status"], "complete");
    assert_eq!(stored["stop_reason"], "end_turn");
    assert_eq!(stored["content"], chunks.concat());
    assert_eq!(stored["cost_usd"], USAGE_COST);
    let (_, s) = w
        .call(Method::GET, &format!("/v1/sessions/{session}"), None)
        .await;
    assert_eq!(s["cost_usd"], USAGE_COST);
    let (_, usage) = w.call(Method::GET, "/v1/usage", None).await;
    assert_eq!(usage["total"]["cost_usd"], USAGE_COST, "{usage}");
    assert_eq!(w.fake.completed_streams(), 1);
    // The client that left reads the rest from where it stopped.
    let turn = stored["id"].as_str().unwrap();
    let rest = w.turn_events(&session, turn, Some(1)).await;
    let text: String = rest
        .iter()
        .filter(|e| e.event.as_deref() == Some("delta"))
        .map(|e| e.json()["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(text, chunks[1..].concat());
    assert_eq!(rest.last().unwrap().event.as_deref(), Some("done"));
}

#[tokio::test]
async fn history_pages_through_1000_messages_without_gaps_or_duplicates() {
    let w = ChatWorld::start().await;
    let session = w.session(json!({})).await;
    // A small context budget: each turn sends only the newest history.
    let (status, body) = w
        .call(
            Method::PATCH,
            &format!("/v1/agents/{}", w.agent_id),
            Some(json!({"context_token_budget": 200})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    w.fake.set_default(Reply::text("ok"));
    for i in 0..500 {
        let (status, body) = w.chat_whole(&session, &format!("message {i}")).await;
        assert_eq!(status, 200, "{body}");
    }
    let asc = w.history(&session, 100, "asc").await;
    assert_eq!(asc.len(), 1000);
    let ids: Vec<&str> = asc.iter().map(|m| m["id"].as_str().unwrap()).collect();
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 1000, "duplicates");
    assert_eq!(unique, ids, "ascending pages are in id order");
    for (i, pair) in asc.chunks(2).enumerate() {
        assert_eq!(pair[0]["content"], format!("message {i}"));
        assert_eq!(pair[0]["role"], "user");
        assert_eq!(pair[1]["role"], "assistant");
    }
    let mut desc = w.history(&session, 37, "desc").await;
    desc.reverse();
    assert_eq!(desc, asc);

    // The context sent with the last call is the newest history that fits
    // the agent's budget of 200 tokens, whatever the session's length.
    let last = w.fake.requests().pop().unwrap();
    let sent = last.body["messages"].as_array().unwrap();
    assert!(
        (3..40).contains(&sent.len()),
        "{} messages sent",
        sent.len()
    );
    assert_eq!(sent.last().unwrap()["content"], "message 499");
    assert_eq!(sent[0]["role"], "user", "the context starts with the user");
    let tokens: usize = sent
        .iter()
        .map(|m| m["content"].as_str().unwrap().len().div_ceil(3) + 4)
        .sum();
    assert!(
        tokens <= 200 - "You are terse.".len().div_ceil(3) - 4,
        "{tokens} tokens"
    );
}

#[tokio::test]
async fn a_forged_or_foreign_cursor_is_a_400() {
    let w = ChatWorld::start().await;
    let a = w.session(json!({})).await;
    let b = w.session(json!({})).await;
    w.fake.set_default(Reply::text("ok"));
    for i in 0..3 {
        w.chat_whole(&a, &format!("m{i}")).await;
        w.chat_whole(&b, &format!("m{i}")).await;
    }
    let (_, page) = w
        .call(
            Method::GET,
            &format!("/v1/sessions/{a}/messages?limit=2"),
            None,
        )
        .await;
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let mut forged = cursor.clone().into_bytes();
    let last = forged.len() - 3;
    forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    for (path, why) in [
        (
            format!("/v1/sessions/{a}/messages?limit=2&cursor={forged}"),
            "forged",
        ),
        (
            format!("/v1/sessions/{b}/messages?limit=2&cursor={cursor}"),
            "another session",
        ),
        (
            format!("/v1/sessions/{a}/messages?limit=2&order=desc&cursor={cursor}"),
            "another order",
        ),
        (
            format!("/v1/sessions/{a}/messages?limit=2&cursor=not-a-cursor"),
            "garbage",
        ),
    ] {
        let (status, body) = w.call(Method::GET, &path, None).await;
        assert_eq!(status, 400, "{why}: {body}");
        assert_eq!(body["error"]["code"], "invalid_request", "{why}");
    }
    let (status, _) = w
        .call(
            Method::GET,
            &format!("/v1/sessions/{a}/messages?limit=2&cursor={cursor}"),
            None,
        )
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn concurrent_calls_never_spend_past_a_session_budget() {
    let w = ChatWorld::start().await;
    // Worst case of one call: prompt estimate (system + message, < 20 tokens
    // at 3.75) plus 100 output tokens at 15 = at most 0.0016 USD. A budget
    // of 0.005 fits three reservations, never four.
    let session = w.session(json!({"budget_usd": "0.005"})).await;
    w.fake.set_default(
        Reply::text("ok")
            .usage(FakeUsage {
                input: 10,
                output: 100,
                ..FakeUsage::default()
            })
            .first_byte_delay(Duration::from_millis(300)),
    );
    let calls = (0..16).map(|_| {
        let client = w.app.client.clone();
        let url = w.app.url(&format!("/v1/sessions/{session}/messages"));
        let key = w.key.clone();
        tokio::spawn(async move {
            lambent_testkit::app::send_json(
                &client,
                Method::POST,
                url,
                key,
                Some(json!({"content": "hi", "stream": false})),
            )
            .await
        })
    });
    let mut ok = 0;
    let mut refused = 0;
    for call in calls {
        let (status, body) = call.await.unwrap();
        match status {
            200 => ok += 1,
            429 => {
                assert_eq!(body["error"]["code"], "budget_exceeded", "{body}");
                refused += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(ok + refused, 16);
    assert!((1..=3).contains(&ok), "{ok} calls got through");
    let (_, s) = w
        .call(Method::GET, &format!("/v1/sessions/{session}"), None)
        .await;
    let spent: rust_decimal::Decimal = s["cost_usd"].as_str().unwrap().parse().unwrap();
    assert!(spent <= "0.005".parse().unwrap(), "spent {spent}");
    // Each successful call cost 10*3 + 100*15 = 1530 micro-dollars.
    assert_eq!(spent, rust_decimal::Decimal::new(1530 * ok, 6));
}

#[tokio::test]
async fn concurrent_calls_never_spend_past_a_monthly_budget() {
    let w = ChatWorld::start().await;
    w.set_monthly_budget("0.004").await;
    w.fake.set_default(
        Reply::text("ok")
            .usage(FakeUsage {
                input: 10,
                output: 100,
                ..FakeUsage::default()
            })
            .first_byte_delay(Duration::from_millis(300)),
    );
    let mut sessions = Vec::new();
    for _ in 0..4 {
        sessions.push(w.session(json!({})).await);
    }
    let calls = (0..16).map(|i| {
        let client = w.app.client.clone();
        let url = w
            .app
            .url(&format!("/v1/sessions/{}/messages", sessions[i % 4]));
        let key = w.key.clone();
        tokio::spawn(async move {
            lambent_testkit::app::send_json(
                &client,
                Method::POST,
                url,
                key,
                Some(json!({"content": "hi", "stream": false})),
            )
            .await
        })
    });
    let mut ok = 0i64;
    for call in calls {
        let (status, body) = call.await.unwrap();
        if status == 200 {
            ok += 1;
        } else {
            assert_eq!(status, 429, "{body}");
            assert_eq!(body["error"]["code"], "budget_exceeded");
        }
    }
    assert!((1..=2).contains(&ok), "{ok} calls got through");
    let (_, usage) = w
        .call(Method::GET, "/v1/usage?group_by=session", None)
        .await;
    assert_eq!(usage["total"]["calls"], ok);
    let spent: rust_decimal::Decimal = usage["total"]["cost_usd"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(spent, rust_decimal::Decimal::new(1530 * ok, 6));
}

#[tokio::test]
async fn deleting_a_session_deletes_its_messages_and_sessions_expire() {
    let clock = ManualClock::starting_now();
    let w = ChatWorld::start_on(clock.clone(), "anthropic", |c| {
        c.session_ttl = Duration::from_secs(2);
    })
    .await;
    w.fake.set_default(Reply::text("ok"));
    let doomed = w.session(json!({})).await;
    w.chat_whole(&doomed, "hello").await;
    let (status, _) = w
        .call(Method::DELETE, &format!("/v1/sessions/{doomed}"), None)
        .await;
    assert_eq!(status, 204);
    for path in [
        format!("/v1/sessions/{doomed}"),
        format!("/v1/sessions/{doomed}/messages"),
    ] {
        let (status, body) = w.call(Method::GET, &path, None).await;
        assert_eq!(status, 404, "{body}");
    }
    let (status, _) = w
        .call(Method::DELETE, &format!("/v1/sessions/{doomed}"), None)
        .await;
    assert_eq!(status, 404);
    // Its cost stays counted.
    let (_, usage) = w.call(Method::GET, "/v1/usage", None).await;
    assert_eq!(usage["total"]["calls"], 1);

    let fading = w.session(json!({})).await;
    let (_, s) = w
        .call(Method::GET, &format!("/v1/sessions/{fading}"), None)
        .await;
    assert!(s["expires_at"].as_str().unwrap().starts_with("20"));
    clock.advance(Duration::from_secs(1));
    let (status, _) = w
        .call(Method::GET, &format!("/v1/sessions/{fading}"), None)
        .await;
    assert_eq!(status, 200, "a session lives out its time to live");
    clock.advance(Duration::from_millis(2_100));
    let (status, _) = w
        .call(Method::GET, &format!("/v1/sessions/{fading}"), None)
        .await;
    assert_eq!(status, 404, "an expired session is gone");
    let (_, list) = w.call(Method::GET, "/v1/sessions", None).await;
    assert_eq!(list["items"], json!([]));
}

#[tokio::test]
async fn sessions_are_validated_listed_and_private() {
    let w = ChatWorld::start().await;
    for (body, field) in [
        (json!({"agent_id": "agt_doesnotexist"}), "agent_id"),
        (json!({"agent_id": "nope"}), "agent_id"),
        (
            json!({"agent_id": w.agent_id, "budget_usd": 5}),
            "budget_usd",
        ),
        (
            json!({"agent_id": w.agent_id, "budget_usd": "-1"}),
            "budget_usd",
        ),
        (json!({"agent_id": w.agent_id, "title": " "}), "title"),
    ] {
        let (status, err) = w
            .call(Method::POST, "/v1/sessions", Some(body.clone()))
            .await;
        assert_eq!(status, 400, "{body}: {err}");
        assert!(
            err["error"]["message"].as_str().unwrap().contains(field),
            "{err}"
        );
    }
    let a = w.session(json!({"title": "a"})).await;
    let b = w.session(json!({"title": "b", "budget_usd": "2.50"})).await;
    let (_, list) = w.call(Method::GET, "/v1/sessions?limit=1", None).await;
    assert_eq!(list["items"][0]["id"], b, "newest first");
    assert_eq!(list["items"][0]["budget_usd"], "2.5");
    let cursor = list["next_cursor"].as_str().unwrap();
    let (_, list) = w
        .call(
            Method::GET,
            &format!("/v1/sessions?limit=1&cursor={cursor}"),
            None,
        )
        .await;
    assert_eq!(list["items"][0]["id"], a);

    // Someone else's session is not found, whatever the route.
    let (_, other_key) = w.app.user_with_key("other", "member").await;
    for (method, path, body) in [
        (Method::GET, format!("/v1/sessions/{a}"), None),
        (Method::GET, format!("/v1/sessions/{a}/messages"), None),
        (Method::DELETE, format!("/v1/sessions/{a}"), None),
        (
            Method::POST,
            format!("/v1/sessions/{a}/messages"),
            Some(json!({"content": "hi"})),
        ),
    ] {
        let (status, body) = w.app.call(method, &path, &other_key, body).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert_eq!(body["error"]["message"], "session not found");
    }
    let (status, body) = w
        .app
        .call(
            Method::POST,
            "/v1/sessions",
            &other_key,
            Some(json!({"agent_id": w.agent_id})),
        )
        .await;
    assert_eq!(status, 400, "another user's agent: {body}");
}

#[tokio::test]
async fn agent_problems_are_clear_errors() {
    let w = ChatWorld::start().await;
    let session = w.session(json!({})).await;
    // A message longer than the agent's context budget.
    let (status, body) = w
        .call(
            Method::PATCH,
            &format!("/v1/agents/{}", w.agent_id),
            Some(json!({"context_token_budget": 50})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = w.chat_whole(&session, &"long words ".repeat(100)).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("content:"));
    for (content, why) in [("", "empty"), ("   ", "blank")] {
        let (status, body) = w.chat_whole(&session, content).await;
        assert_eq!(status, 400, "{why}: {body}");
    }
    // The agent's provider deleted.
    let (status, _) = w
        .call(
            Method::DELETE,
            &format!("/v1/providers/{}", w.provider_id),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let (status, body) = w.chat_whole(&session, "hi").await;
    assert_eq!(status, 409, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains(&w.provider_id));
    // The agent deleted.
    let (status, _) = w
        .call(Method::DELETE, &format!("/v1/agents/{}", w.agent_id), None)
        .await;
    assert_eq!(status, 204);
    let stream = w.chat(&session, "hi").await;
    assert_eq!(stream.status, 409, "{}", stream.raw);
    assert!(stream.raw.contains(&w.agent_id));
    assert!(w.fake.requests().is_empty(), "no call reached the provider");
}

#[tokio::test]
async fn a_client_that_stops_reading_is_caught_up_from_the_store() {
    let w = ChatWorld::start().await;
    let session = w.session(json!({})).await;
    // 8 MiB in 1 KiB deltas.
    let chunk = "x".repeat(1024);
    let deltas = 8 * 1024;
    w.fake.push(Reply::repeated(&chunk, deltas as u64));
    let mut response = w
        .app
        .request(
            Method::POST,
            &format!("/v1/sessions/{session}/messages"),
            &w.key,
        )
        .json(&json!({"content": "flood me"}))
        .send()
        .await
        .unwrap();
    let mut raw = Vec::new();
    while raw.len() < 64 * 1024 {
        raw.extend_from_slice(&response.chunk().await.unwrap().unwrap());
    }
    // The client reads no more. The turn does not wait for it: the provider
    // is read to the end and the reply stored (cut at 256 KiB) meanwhile.
    let stored = w.stored_reply(&session, Duration::from_secs(60)).await;
    assert_eq!(stored["status"], "complete");
    assert_eq!(stored["truncated"], true);
    assert_eq!(stored["content"].as_str().unwrap().len(), 256 * 1024);
    assert_eq!(w.fake.completed_streams(), 1);
    // Reading again, it gets every event once, in order, to `done`.
    while let Some(chunk) = response.chunk().await.unwrap() {
        raw.extend_from_slice(&chunk);
    }
    let events = lambent_testkit::chat::parse_events(&String::from_utf8(raw).unwrap());
    let ids: Vec<u64> = events
        .iter()
        .map(|e| e.id.as_deref().unwrap().parse().unwrap())
        .collect();
    assert_eq!(ids, (0..ids.len() as u64).collect::<Vec<_>>());
    assert_eq!(
        events
            .iter()
            .filter(|e| e.event.as_deref() == Some("delta"))
            .count(),
        deltas
    );
    assert_eq!(events.last().unwrap().event.as_deref(), Some("done"));
}

#[tokio::test]
async fn concurrent_turns_in_one_session_are_all_kept_and_counted() {
    let w = ChatWorld::start().await;
    let session = w.session(json!({})).await;
    w.fake.set_default(
        Reply::text("ok")
            .usage(FakeUsage {
                input: 10,
                output: 2,
                ..FakeUsage::default()
            })
            .first_byte_delay(Duration::from_millis(100)),
    );
    let turns = (0..8).map(|i| {
        let client = w.app.client.clone();
        let url = w.app.url(&format!("/v1/sessions/{session}/messages"));
        let key = w.key.clone();
        tokio::spawn(async move {
            let body = json!({"content": format!("turn {i}"), "stream": i % 2 == 0});
            lambent_testkit::app::send_json(&client, Method::POST, url, key, Some(body)).await
        })
    });
    for turn in turns {
        assert_eq!(turn.await.unwrap().0, 200);
    }
    let history = w.history(&session, 100, "asc").await;
    assert_eq!(history.len(), 16);
    let mut asked: Vec<String> = history
        .iter()
        .filter(|m| m["role"] == "user")
        .map(|m| m["content"].as_str().unwrap().to_owned())
        .collect();
    asked.sort();
    assert_eq!(
        asked,
        (0..8).map(|i| format!("turn {i}")).collect::<Vec<_>>()
    );
    let (_, s) = w
        .call(Method::GET, &format!("/v1/sessions/{session}"), None)
        .await;
    assert_eq!(s["message_count"], 16);
    // 8 calls of 10*3 + 2*15 = 60 micro-dollars.
    assert_eq!(s["cost_usd"], "0.00048");
    assert_eq!(s["usage"]["input_tokens"], 80);
}

#[tokio::test]
async fn a_user_has_at_most_its_cap_of_open_streams_whatever_key_it_uses() {
    let w = ChatWorld::start_with("anthropic", |c| c.max_streams_per_user = 2).await;
    let session = w.session(json!({})).await;
    let admin = w.app.admin_key();
    let (_, second_key) = w
        .app
        .call(
            Method::POST,
            "/v1/keys",
            &admin,
            Some(json!({"user_id": w.user_id})),
        )
        .await;
    let second_key = second_key["key"].as_str().unwrap().to_owned();
    let slow = || {
        Reply::chunks(["slow ", "reply"])
            .chunk_delay(Duration::from_millis(700))
            .usage(USAGE)
    };
    w.fake.push(slow());
    w.fake.push(slow());
    let open = |key: String| {
        let request = w
            .app
            .request(Method::POST, "/v1/chat/completions", &key)
            .json(&json!({
                "model": w.agent_id,
                "stream": true,
                "messages": [{"role": "user", "content": "hi"}],
            }));
        async move { request.send().await.unwrap() }
    };
    let first = open(w.key.clone()).await;
    let second = open(second_key.clone()).await;
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );

    // A third, from either key or endpoint, waits for one to end.
    let third = open(second_key.clone()).await;
    assert_eq!(third.status(), 429);
    let body: Value = third.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_many_streams", "{body}");
    let stream = w.chat(&session, "hello").await;
    assert!(stream.raw.contains("too_many_streams"), "{}", stream.raw);
    // A whole reply is no stream: it goes through.
    w.fake.push(Reply::text("whole").usage(USAGE));
    let (status, _) = w.chat_whole(&session, "whole please").await;
    assert_eq!(status, 200);

    // Once the streams end, their slots are free again.
    first.text().await.unwrap();
    second.text().await.unwrap();
    w.fake.push(Reply::text("again").usage(USAGE));
    let mut status = 0;
    for _ in 0..50 {
        let response = open(w.key.clone()).await;
        status = response.status().as_u16();
        if status == 200 {
            response.text().await.unwrap();
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_stream_that_would_outlive_its_deadline_is_cut_stored_incomplete_and_billed() {
    let w = ChatWorld::start_with("anthropic", |c| {
        c.stream_deadline = Duration::from_secs(1);
    })
    .await;
    let session = w.session(json!({})).await;
    // The provider never finishes: its usage never arrives.
    let chunks: Vec<String> = (0..100).map(|i| format!("p{i} ")).collect();
    w.fake
        .push(Reply::chunks(chunks).chunk_delay(Duration::from_millis(100)));
    let stream = w.chat(&session, "go on forever").await;
    let end = stream.end();
    assert_eq!(end["stop_reason"], "deadline", "{}", stream.raw);
    let stored = w.stored_reply(&session, Duration::from_secs(10)).await;
    assert_eq!(stored["status"], "incomplete");
    assert_eq!(stored["content"], stream.text());
    // Billed for at least what it said: one token per byte of its reply,
    // on top of the prompt.
    let output = stored["usage"]["output_tokens"].as_u64().unwrap();
    assert!(output >= stream.text().len() as u64, "{stored}");
    assert!(
        stored["usage"]["input_tokens"].as_u64().unwrap() > 0,
        "{stored}"
    );
    let cost: rust_decimal::Decimal = stored["cost_usd"].as_str().unwrap().parse().unwrap();
    assert!(cost > rust_decimal::Decimal::ZERO);
}

#[tokio::test]
async fn a_provider_that_bills_a_token_per_byte_never_takes_spending_past_a_limit() {
    let w = ChatWorld::start().await;
    // A prompt of 4,000 bytes of plain English: a tokenizer's usual 4 bytes
    // a token would make it 1,000 tokens; this provider bills 4,000.
    let prompt = "lorem ipsum dolor sit amet ".repeat(148);
    let limit = rust_decimal::Decimal::new(5, 2); // 0.05 USD
    w.set_monthly_budget(&limit.to_string()).await;
    w.fake.set_default(
        Reply::text("ok")
            .bill_input_per_byte()
            .first_byte_delay(Duration::from_millis(300)),
    );
    let calls = (0..16).map(|i| {
        let client = w.app.client.clone();
        let url = w.app.url("/v1/chat/completions");
        let key = w.key.clone();
        let body = json!({
            "model": w.agent_id,
            "messages": [{"role": "user", "content": format!("{i} {prompt}")}],
        });
        tokio::spawn(async move {
            lambent_testkit::app::send_json(&client, Method::POST, url, key, Some(body)).await
        })
    });
    let mut ok = 0;
    for call in calls {
        let (status, body) = call.await.unwrap();
        match status {
            200 => {
                ok += 1;
                let billed = body["usage"]["prompt_tokens"].as_u64().unwrap();
                assert!(billed >= prompt.len() as u64, "{body}");
            }
            _ => assert_eq!(body["error"]["code"], "budget_exceeded", "{body}"),
        }
    }
    assert!(ok >= 1, "no call fitted the limit");
    let (_, usage) = w.call(Method::GET, "/v1/usage", None).await;
    let spent: rust_decimal::Decimal = usage["total"]["cost_usd"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        spent <= limit,
        "spent {spent} USD of a {limit} USD limit in {ok} calls"
    );
}
