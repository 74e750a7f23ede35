//! Tools: agents that offer them, validated field by field.

use lambent_fake_provider::{FakeUsage, Reply};
use lambent_testkit::chat::{ChatWorld, JsonData};
use reqwest::Method;
use serde_json::{json, Value};

fn weather() -> Value {
    json!({
        "name": "get_weather",
        "description": "Current weather in a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    })
}

#[tokio::test]
async fn agents_keep_their_tools_and_tool_choice() {
    let w = ChatWorld::start().await;
    let (status, agent) = w
        .call(
            Method::POST,
            "/v1/agents",
            Some(json!({
                "name": "tooled",
                "provider_id": w.provider_id,
                "model": "fake-anthropic",
                "tools": [weather(), {"name": "now", "input_schema": {"type": "object"}}],
                "tool_choice": {"name": "get_weather"},
            })),
        )
        .await;
    assert_eq!(status, 201, "{agent}");
    assert_eq!(agent["tools"][0], weather());
    assert_eq!(
        agent["tools"][1],
        json!({"name": "now", "input_schema": {"type": "object"}})
    );
    assert_eq!(agent["tool_choice"], json!({"name": "get_weather"}));
    let path = format!("/v1/agents/{}", agent["id"].as_str().unwrap());
    let (_, read) = w.call(Method::GET, &path, None).await;
    assert_eq!(read["tools"], agent["tools"]);
    assert_eq!(read["tool_choice"], agent["tool_choice"]);

    // A PATCH of other fields keeps them; `tools: []` with "auto" clears them.
    let (status, renamed) = w
        .call(Method::PATCH, &path, Some(json!({"name": "renamed"})))
        .await;
    assert_eq!(status, 200, "{renamed}");
    assert_eq!(renamed["tools"], agent["tools"]);
    let (status, bare) = w
        .call(
            Method::PATCH,
            &path,
            Some(json!({"tools": [], "tool_choice": "auto"})),
        )
        .await;
    assert_eq!(status, 200, "{bare}");
    assert_eq!(bare["tools"], json!([]));
    assert_eq!(bare["tool_choice"], "auto");
    // An agent made without tools has none, and "auto".
    let (_, plain) = w
        .call(Method::GET, &format!("/v1/agents/{}", w.agent_id), None)
        .await;
    assert_eq!(
        (plain["tools"].clone(), plain["tool_choice"].clone()),
        (json!([]), json!("auto"))
    );
}

#[tokio::test]
async fn malformed_tools_are_refused_naming_the_field() {
    let w = ChatWorld::start().await;
    let agent = |extra: Value| {
        let mut body =
            json!({"name": "a", "provider_id": w.provider_id, "model": "fake-anthropic"});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    for (extra, field) in [
        (
            json!({"tools": [{"name": "bad name", "input_schema": {"type": "object"}}]}),
            "tools[0].name",
        ),
        (json!({"tools": [weather(), weather()]}), "tools[1].name"),
        (
            json!({"tools": [{"name": "t", "input_schema": {"type": "array"}}]}),
            "tools[0].input_schema",
        ),
        (
            json!({"tools": [{"name": "t", "input_schema": "object"}]}),
            "tools[0].input_schema",
        ),
        (json!({"tools": [{"name": "t"}]}), "input_schema"),
        (
            json!({"tools": [{"name": "t", "input_schema": {}, "http": 1}]}),
            "http",
        ),
        (
            json!({"tools": [weather()], "tool_choice": {"name": "other"}}),
            "tool_choice",
        ),
        (json!({"tool_choice": "any"}), "tool_choice"),
        (
            json!({"tools": [weather()], "tool_choice": "required"}),
            "tool_choice",
        ),
    ] {
        let (status, err) = w
            .call(Method::POST, "/v1/agents", Some(agent(extra.clone())))
            .await;
        assert_eq!(status, 400, "{extra}: {err}");
        let message = err["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(field), "{extra}: {message}");
    }
    let (_, list) = w.call(Method::GET, "/v1/agents", None).await;
    assert_eq!(
        list["items"].as_array().unwrap().len(),
        1,
        "nothing was created"
    );
}

/// The messages' costs sum to the usage total, and `calls` calls were billed.
async fn assert_billed_once(w: &ChatWorld, history: &[Value], calls: u64) {
    let billed: rust_decimal::Decimal = history
        .iter()
        .filter_map(|m| m["cost_usd"].as_str())
        .map(|c| c.parse::<rust_decimal::Decimal>().unwrap())
        .sum();
    let (_, usage) = w.call(Method::GET, "/v1/usage", None).await;
    let total: rust_decimal::Decimal = usage["total"]["cost_usd"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(billed, total);
    assert_eq!(usage["total"]["calls"], calls);
}

/// A world of `kind` whose agent offers [`weather`].
async fn tooled_world(kind: &str) -> ChatWorld {
    let w = ChatWorld::start_with(kind, |_| {}).await;
    let (status, agent) = w
        .call(
            Method::PATCH,
            &format!("/v1/agents/{}", w.agent_id),
            Some(json!({"tools": [weather()]})),
        )
        .await;
    assert_eq!(status, 200, "{agent}");
    w
}

/// Text, then two parallel calls whose arguments arrive in pieces of 3.
fn calling_reply() -> Reply {
    Reply::text("Checking.")
        .with_tool_call("call_1", "get_weather", r#"{"city": "Zürich"}"#)
        .with_tool_call("call_2", "get_weather", r#"{"city":"Oslo"}"#)
        .split_arguments_every(3)
        .usage(FakeUsage {
            input: 100,
            cache_read: 40,
            output: 20,
            ..FakeUsage::default()
        })
}

fn expected_calls() -> Value {
    json!([
        {"id": "call_1", "name": "get_weather", "input": {"city": "Zürich"}},
        {"id": "call_2", "name": "get_weather", "input": {"city": "Oslo"}},
    ])
}

#[tokio::test]
async fn native_chat_streams_the_calls_and_stores_them_for_both_provider_kinds() {
    for kind in ["anthropic", "openai"] {
        let w = tooled_world(kind).await;
        w.fake.push(calling_reply());
        let session = w.session(json!({})).await;
        let stream = w.chat(&session, "Weather in Zürich and Oslo?").await;
        assert_eq!(stream.status, 200, "{kind}: {}", stream.raw);
        assert_eq!(stream.text(), "Checking.", "{kind}");
        let calls: Vec<Value> = stream.named("tool_call").iter().map(|e| e.json()).collect();
        assert_eq!(calls.len(), 2, "{kind}: {}", stream.raw);
        for (i, (event, expected)) in calls
            .iter()
            .zip(expected_calls().as_array().unwrap())
            .enumerate()
        {
            assert_eq!(event["index"], i, "{kind}");
            for field in ["id", "name", "input"] {
                assert_eq!(event[field], expected[field], "{kind}: {field}");
            }
        }
        let end = stream.end();
        assert_eq!(end["stop_reason"], "tool_use", "{kind}: {end}");

        // The provider was offered the agent's tool, in its own format.
        let request = w.fake.requests().last().unwrap().clone();
        assert_eq!(request.tool_names(), ["get_weather"], "{kind}");

        // History: the assistant's message carries the calls.
        let history = w.history(&session, 10, "asc").await;
        let reply = &history[1];
        assert_eq!(reply["tool_calls"], expected_calls(), "{kind}: {reply}");
        assert_eq!(reply["stop_reason"], "tool_use", "{kind}");
        assert_eq!(reply["content"], "Checking.", "{kind}");

        // Whole: the stored message, calls included.
        w.fake.push(calling_reply());
        let (status, whole) = w.chat_whole(&session, "And again?").await;
        assert_eq!(status, 200, "{kind}: {whole}");
        assert_eq!(whole["tool_calls"], expected_calls(), "{kind}: {whole}");

        // Every call is billed once: the messages' costs are the total.
        let history = w.history(&session, 10, "asc").await;
        assert_billed_once(&w, &history, 2).await;
    }
}

#[tokio::test]
async fn completions_answer_tool_calls_in_openai_shape_whatever_the_provider() {
    for kind in ["anthropic", "openai"] {
        let w = tooled_world(kind).await;
        w.fake.push(calling_reply());
        let body =
            json!({"model": w.agent_id, "messages": [{"role": "user", "content": "Weather?"}]});
        let (status, whole) = w
            .call(Method::POST, "/v1/chat/completions", Some(body.clone()))
            .await;
        assert_eq!(status, 200, "{kind}: {whole}");
        let choice = &whole["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls", "{kind}");
        let calls = choice["message"]["tool_calls"].as_array().unwrap();
        assert_eq!(calls.len(), 2, "{kind}");
        assert_eq!(calls[0]["id"], "call_1");
        assert_eq!(calls[0]["type"], "function");
        assert_eq!(calls[0]["function"]["name"], "get_weather");
        let arguments: Value =
            serde_json::from_str(calls[0]["function"]["arguments"].as_str().unwrap()).unwrap();
        assert_eq!(arguments, json!({"city": "Zürich"}));

        // Streamed: the id and name on a call's first fragment, then the
        // arguments in pieces that join to the call's JSON.
        w.fake.push(calling_reply());
        let mut streamed = body.clone();
        streamed["stream"] = json!(true);
        let response = w
            .app
            .request(Method::POST, "/v1/chat/completions", &w.key)
            .json(&streamed)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let text = response.text().await.unwrap();
        let mut ids = Vec::new();
        let mut arguments = [String::new(), String::new()];
        let mut finish = Value::Null;
        for event in lambent_testkit::chat::parse_events(&text) {
            let Ok(chunk) = serde_json::from_str::<Value>(&event.data) else {
                continue;
            };
            let choice = &chunk["choices"][0];
            if !choice["finish_reason"].is_null() {
                finish = choice["finish_reason"].clone();
            }
            for fragment in choice["delta"]["tool_calls"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let index = fragment["index"].as_u64().unwrap() as usize;
                if let Some(id) = fragment["id"].as_str() {
                    assert_eq!(fragment["function"]["name"], "get_weather");
                    ids.push((index, id.to_owned()));
                }
                arguments[index].push_str(fragment["function"]["arguments"].as_str().unwrap_or(""));
            }
        }
        assert_eq!(
            ids,
            [(0, "call_1".to_owned()), (1, "call_2".to_owned())],
            "{kind}: {text}"
        );
        let parsed: Vec<Value> = arguments
            .iter()
            .map(|a| serde_json::from_str(a).unwrap())
            .collect();
        assert_eq!(
            parsed,
            [json!({"city": "Zürich"}), json!({"city": "Oslo"})],
            "{kind}"
        );
        assert_eq!(finish, "tool_calls", "{kind}");
    }
}

/// Sends `body` as a turn of `session`, whole.
async fn turn(w: &ChatWorld, session: &str, body: Value) -> (u16, Value) {
    let mut body = body;
    body["stream"] = json!(false);
    w.call(
        Method::POST,
        &format!("/v1/sessions/{session}/messages"),
        Some(body),
    )
    .await
}

#[tokio::test]
async fn a_two_round_tool_conversation_reads_back_from_history() {
    for kind in ["anthropic", "openai"] {
        let w = tooled_world(kind).await;
        let session = w.session(json!({})).await;
        // Results before any call: nothing waits for them.
        let (status, err) = turn(
            &w,
            &session,
            json!({"tool_results": [{"tool_call_id": "call_1", "content": "x"}]}),
        )
        .await;
        assert_eq!(status, 409, "{kind}: {err}");

        // Round 1: a question with an image; the model calls two tools.
        w.fake.push(calling_reply());
        let (status, first) = turn(
            &w,
            &session,
            json!({"content": [
                {"type": "text", "text": "Weather in Zürich and Oslo?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
            ]}),
        )
        .await;
        assert_eq!(status, 200, "{kind}: {first}");
        assert_eq!(first["stop_reason"], "tool_use");

        // Results that do not answer exactly those calls are refused.
        for (results, code, field) in [
            (
                json!([{"tool_call_id": "call_1", "content": "12 °C"}]),
                400,
                "call_2",
            ),
            (
                json!([{"tool_call_id": "call_1", "content": "a"}, {"tool_call_id": "call_9", "content": "b"}]),
                400,
                "tool_results[1].tool_call_id",
            ),
            (
                json!([{"tool_call_id": "call_1", "content": "a"}, {"tool_call_id": "call_1", "content": "b"}]),
                400,
                "tool_results[1].tool_call_id",
            ),
        ] {
            let (status, err) = turn(&w, &session, json!({ "tool_results": results })).await;
            assert_eq!(status, code, "{kind}: {err}");
            let message = err["error"]["message"].as_str().unwrap();
            assert!(message.contains(field), "{kind}: {message}");
        }
        let (status, err) = turn(&w, &session, json!({"content": "hi", "tool_results": []})).await;
        assert_eq!(status, 400, "{kind}: {err}");

        // Round 2: the results; the model answers.
        w.fake
            .push(Reply::text("Sunny in Zürich; Oslo has no station."));
        let (status, second) = turn(
            &w,
            &session,
            json!({"tool_results": [
                {"tool_call_id": "call_1", "content": "12 °C, sunny"},
                {"tool_call_id": "call_2", "content": "no station", "is_error": true},
            ]}),
        )
        .await;
        assert_eq!(status, 200, "{kind}: {second}");
        assert_eq!(second["content"], "Sunny in Zürich; Oslo has no station.");

        // The provider saw the whole conversation in its own format: the
        // image, the calls and both results (refused attempts left nothing).
        let seen = w.fake.requests().last().unwrap().clone();
        assert_eq!(seen.images().len(), 1, "{kind}: {}", seen.body);
        let calls: Vec<String> = seen.tool_calls().iter().map(|c| c.id.clone()).collect();
        assert_eq!(calls, ["call_1", "call_2"], "{kind}");
        let results: Vec<(String, bool)> = seen
            .tool_results()
            .iter()
            .map(|r| (r.tool_call_id.clone(), r.is_error))
            .collect();
        if kind == "anthropic" {
            assert_eq!(results, [("call_1".into(), false), ("call_2".into(), true)]);
        } else {
            // OpenAI's tool messages have no error flag.
            assert_eq!(
                results,
                [("call_1".into(), false), ("call_2".into(), false)]
            );
        }

        // History: the question with its image, the calls, one message per
        // result, the answer.
        let history = w.history(&session, 10, "asc").await;
        let roles: Vec<&str> = history
            .iter()
            .map(|m| m["role"].as_str().unwrap())
            .collect();
        assert_eq!(
            roles,
            ["user", "assistant", "tool", "tool", "assistant"],
            "{kind}"
        );
        assert_eq!(history[0]["parts"][1]["type"], "image");
        assert_eq!(history[0]["content"], "Weather in Zürich and Oslo?");
        assert_eq!(history[1]["tool_calls"], expected_calls());
        assert_eq!(history[2]["tool_call_id"], "call_1");
        assert_eq!(history[2]["is_error"], false);
        assert_eq!(history[3]["is_error"], true);
        assert!(history[1].get("is_error").is_none());
        let (_, view) = w
            .call(Method::GET, &format!("/v1/sessions/{session}"), None)
            .await;
        assert_eq!(view["message_count"], 5, "{kind}: {view}");

        // Two calls, billed once each, summing to the usage total.
        assert_billed_once(&w, &history, 2).await;
    }
}

#[tokio::test]
async fn malformed_content_parts_are_refused_naming_the_field() {
    let w = ChatWorld::start().await;
    let session = w.session(json!({})).await;
    for (content, field) in [
        (json!([]), "content"),
        (json!([{"type": "text", "text": " "}]), "content"),
        (
            json!([{"type": "image", "source": {"type": "base64", "media_type": "image/tiff", "data": "AA=="}}]),
            "content[0].source.media_type",
        ),
        (
            json!([{"type": "text", "text": "a"}, {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "not base64!"}}]),
            "content[1].source.data",
        ),
        (
            json!([{"type": "image", "source": {"type": "url", "url": "http://example.com/a.png"}}]),
            "content[0].source.url",
        ),
    ] {
        let (status, err) = turn(&w, &session, json!({ "content": content })).await;
        assert_eq!(status, 400, "{content}: {err}");
        let message = err["error"]["message"].as_str().unwrap_or_default();
        assert!(message.starts_with(field), "{content}: {message}");
    }
    assert!(w.fake.requests().is_empty(), "no call was made");
}

#[tokio::test]
async fn completions_take_tools_tool_messages_and_images_for_both_provider_kinds() {
    for kind in ["anthropic", "openai"] {
        let w = ChatWorld::start_with(kind, |_| {}).await;
        w.fake.push(Reply::text("Sunny in Zürich."));
        let body = json!({
            "model": w.agent_id,
            "messages": [
                {"role": "developer", "content": "Answer briefly."},
                {"role": "user", "content": [
                    {"type": "text", "text": "Weather here?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                ]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Zürich\"}"}},
                    {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Bern\"}"}},
                ]},
                {"role": "tool", "tool_call_id": "call_1", "content": "12 °C"},
                {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "9 °C"}]},
            ],
            "tools": [{"type": "function", "function": {
                "name": "get_weather", "description": "Current weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
            "tool_choice": "required",
            "parallel_tool_calls": false,
        });
        let (status, answer) = w
            .call(Method::POST, "/v1/chat/completions", Some(body))
            .await;
        assert_eq!(status, 200, "{kind}: {answer}");
        assert_eq!(
            answer["choices"][0]["message"]["content"],
            "Sunny in Zürich."
        );

        // The provider got the same conversation in its own format.
        let seen = w.fake.requests().last().unwrap().clone();
        assert_eq!(seen.tool_names(), ["get_weather"], "{kind}");
        assert_eq!(seen.images().len(), 1, "{kind}");
        let calls: Vec<(String, Value)> = seen
            .tool_calls()
            .into_iter()
            .map(|c| (c.id, c.input))
            .collect();
        assert_eq!(
            calls,
            [
                ("call_1".to_owned(), json!({"city": "Zürich"})),
                ("call_2".to_owned(), json!({"city": "Bern"}))
            ],
            "{kind}"
        );
        let results: Vec<(String, String)> = seen
            .tool_results()
            .iter()
            .map(|r| (r.tool_call_id.clone(), r.text()))
            .collect();
        assert_eq!(
            results,
            [
                ("call_1".to_owned(), "12 °C".to_owned()),
                ("call_2".to_owned(), "9 °C".to_owned())
            ],
            "{kind}"
        );
        if kind == "anthropic" {
            // Both results in one user message, as Anthropic requires.
            let messages = seen.body["messages"].as_array().unwrap();
            assert_eq!(messages.len(), 3, "{}", seen.body);
            assert_eq!(
                seen.body["tool_choice"],
                json!({"type": "any", "disable_parallel_tool_use": true})
            );
            assert!(seen.body["system"]
                .as_str()
                .unwrap()
                .ends_with("Answer briefly."));
        } else {
            assert_eq!(seen.body["tool_choice"], "required");
            assert_eq!(seen.body["parallel_tool_calls"], false);
            assert_eq!(seen.body["messages"][0]["role"], "system");
        }
    }
}

#[tokio::test]
async fn the_official_openai_sdk_calls_tools_through_either_provider_kind() {
    for kind in ["anthropic", "openai"] {
        let w = tooled_world(kind).await;
        // Whole, then streamed: two calls each; then the answer.
        w.fake.push(calling_reply());
        w.fake.push(calling_reply());
        w.fake.push(Reply::text("Both 12 °C."));
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/openai_sdk/tools.py");
        let (base_url, key, model) = (w.app.url("/v1"), w.key.clone(), w.agent_id.clone());
        let seen = tokio::task::spawn_blocking(move || {
            lambent_testkit::app::run_python_json(
                script,
                &[
                    ("LAMBENT_BASE_URL", &base_url),
                    ("LAMBENT_KEY", &key),
                    ("LAMBENT_MODEL", &model),
                ],
            )
        })
        .await
        .unwrap();
        let calls = json!([
            {"id": "call_1", "name": "get_weather", "arguments": {"city": "Zürich"}},
            {"id": "call_2", "name": "get_weather", "arguments": {"city": "Oslo"}},
        ]);
        assert_eq!(
            seen["whole"]["finish_reason"], "tool_calls",
            "{kind}: {seen}"
        );
        assert_eq!(seen["whole"]["content"], "Checking.", "{kind}");
        let whole_calls: Vec<Value> = seen["whole"]["calls"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| json!({"id": c["id"], "name": c["name"], "arguments": c["arguments"]}))
            .collect();
        assert_eq!(Value::from(whole_calls), calls, "{kind}");
        assert!(seen["whole"]["calls"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["type"] == "function"));
        assert_eq!(seen["stream"]["finish_reason"], "tool_calls", "{kind}");
        assert_eq!(seen["stream"]["content"], "Checking.", "{kind}");
        assert_eq!(seen["stream"]["calls"], calls, "{kind}");
        assert_eq!(seen["answer"]["content"], "Both 12 °C.", "{kind}");
        assert_eq!(seen["answer"]["finish_reason"], "stop", "{kind}");
        // The results reached the provider, in its format.
        let last = w.fake.requests().last().unwrap().clone();
        let results: Vec<String> = last.tool_results().iter().map(|r| r.text()).collect();
        assert_eq!(results, ["12 °C in Zürich", "12 °C in Oslo"], "{kind}");
        let (_, usage) = w.call(Method::GET, "/v1/usage", None).await;
        assert_eq!(usage["total"]["calls"], 3, "{kind}");
    }
}

#[tokio::test]
async fn the_official_anthropic_sdk_calls_tools_through_either_provider_kind() {
    for kind in ["anthropic", "openai"] {
        let w = tooled_world(kind).await;
        w.fake.push(calling_reply());
        w.fake.push(calling_reply());
        w.fake.push(Reply::text("Both 12 °C."));
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/anthropic_sdk/tools.py");
        let (base_url, key, model) = (w.app.url(""), w.key.clone(), w.agent_id.clone());
        let seen = tokio::task::spawn_blocking(move || {
            lambent_testkit::app::run_python_json(
                script,
                &[
                    ("LAMBENT_BASE_URL", base_url.trim_end_matches('/')),
                    ("LAMBENT_KEY", &key),
                    ("LAMBENT_MODEL", &model),
                ],
            )
        })
        .await
        .unwrap();
        let content = json!([
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Zürich"}},
            {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {"city": "Oslo"}},
        ]);
        for round in ["whole", "stream"] {
            assert_eq!(
                seen[round]["stop_reason"], "tool_use",
                "{kind} {round}: {seen}"
            );
            assert_eq!(seen[round]["content"], content, "{kind} {round}");
            // The fake's usage: 100 input (40 of them cache reads for OpenAI's count), 20 output.
            assert_eq!(seen[round]["usage"]["output_tokens"], 20, "{kind} {round}");
            assert_eq!(
                seen[round]["usage"]["cache_read_input_tokens"], 40,
                "{kind} {round}"
            );
        }
        assert_eq!(seen["whole"]["type"], "message");
        let events: Vec<&str> = seen["stream"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(events.first(), Some(&"message_start"), "{kind}");
        assert_eq!(events.last(), Some(&"message_stop"), "{kind}");
        assert!(
            events.contains(&"content_block_start"),
            "{kind}: {events:?}"
        );
        assert_eq!(seen["answer"]["stop_reason"], "end_turn", "{kind}");
        assert_eq!(
            seen["answer"]["content"],
            json!([{"type": "text", "text": "Both 12 °C."}])
        );
        assert_eq!(
            seen["refused"],
            json!({"status": 400, "type": "invalid_request_error"}),
            "{kind}"
        );
        let last = w.fake.requests().last().unwrap().clone();
        let results: Vec<String> = last.tool_results().iter().map(|r| r.text()).collect();
        assert_eq!(results, ["12 °C in Zürich", "12 °C in Oslo"], "{kind}");
        let (_, usage) = w.call(Method::GET, "/v1/usage", None).await;
        assert_eq!(usage["total"]["calls"], 3, "{kind}");
    }
}

#[tokio::test]
async fn the_messages_endpoint_answers_errors_in_anthropics_shape() {
    let w = ChatWorld::start().await;
    let client = reqwest::Client::new();
    let url = w.app.url("/v1/messages");
    let body = json!({"model": w.agent_id, "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]});
    // No key: the key check's 401, in Anthropic's shape.
    let response = client.post(&url).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 401);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["type"], "error");
    assert_eq!(error["error"]["type"], "authentication_error");
    // A bad request, with the key as Anthropic's clients send it.
    let mut bad = body.clone();
    bad["messages"] = json!([{"role": "system", "content": "hi"}]);
    let response = client
        .post(&url)
        .header("x-api-key", &w.key)
        .header("anthropic-version", "2023-06-01")
        .json(&bad)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["type"], "invalid_request_error");
    assert!(error["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("messages[0].role"));
    // And a good one, whole.
    w.fake.push(Reply::text("Hello."));
    let response = client
        .post(&url)
        .header("x-api-key", &w.key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let message: Value = response.json().await.unwrap();
    assert_eq!(
        message["content"],
        json!([{"type": "text", "text": "Hello."}])
    );
    assert_eq!(message["stop_reason"], "end_turn");
}

/// The provider's request body for the last call.
fn last_request(w: &ChatWorld) -> Value {
    w.fake.requests().last().unwrap().body.clone()
}

#[tokio::test]
async fn every_client_format_sends_the_provider_the_same_request() {
    for kind in ["anthropic", "openai"] {
        let w = tooled_world(kind).await;
        let image = "iVBORw0KGgo=";

        // Native: a question with an image, the model's calls, the results.
        let session = w.session(json!({})).await;
        w.fake.push(calling_reply());
        let (status, _) = turn(
            &w,
            &session,
            json!({"content": [
                {"type": "text", "text": "Weather?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": image}},
            ]}),
        )
        .await;
        assert_eq!(status, 200);
        w.fake.push(Reply::text("Done."));
        let (status, _) = turn(
            &w,
            &session,
            json!({"tool_results": [
                {"tool_call_id": "call_1", "content": "12 °C"},
                {"tool_call_id": "call_2", "content": "9 °C"},
            ]}),
        )
        .await;
        assert_eq!(status, 200);
        // A native turn always streams from the provider (its events are
        // stored, whether its client reads a stream or one JSON message).
        let mut native = last_request(&w);
        native["stream"] = json!(false);
        if let Some(request) = native.as_object_mut() {
            request.remove("stream_options");
        }

        // OpenAI-compatible: the same conversation, the agent's tools.
        w.fake.push(Reply::text("Done."));
        let (status, answer) = w
            .call(
                Method::POST,
                "/v1/chat/completions",
                Some(json!({"model": w.agent_id, "messages": [
                    {"role": "user", "content": [
                        {"type": "text", "text": "Weather?"},
                        {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{image}")}},
                    ]},
                    {"role": "assistant", "content": "Checking.", "tool_calls": [
                        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Zürich\"}"}},
                        {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}},
                    ]},
                    {"role": "tool", "tool_call_id": "call_1", "content": "12 °C"},
                    {"role": "tool", "tool_call_id": "call_2", "content": "9 °C"},
                ]})),
            )
            .await;
        assert_eq!(status, 200, "{answer}");
        let completions = last_request(&w);

        // Anthropic-compatible: the same again.
        w.fake.push(Reply::text("Done."));
        let (status, answer) = w
            .call(
                Method::POST,
                "/v1/messages",
                Some(json!({"model": w.agent_id, "max_tokens": 100, "messages": [
                    {"role": "user", "content": [
                        {"type": "text", "text": "Weather?"},
                        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": image}},
                    ]},
                    {"role": "assistant", "content": [
                        {"type": "text", "text": "Checking."},
                        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Zürich"}},
                        {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {"city": "Oslo"}},
                    ]},
                    {"role": "user", "content": [
                        {"type": "tool_result", "tool_use_id": "call_1", "content": "12 °C"},
                        {"type": "tool_result", "tool_use_id": "call_2", "content": [{"type": "text", "text": "9 °C"}]},
                    ]},
                ]})),
            )
            .await;
        assert_eq!(status, 200, "{answer}");
        let messages = last_request(&w);

        assert_eq!(
            native, completions,
            "{kind}: native and OpenAI-format clients differ"
        );
        assert_eq!(
            native, messages,
            "{kind}: native and Anthropic-format clients differ"
        );

        // And that request is exactly the provider's format.
        let tool = &weather();
        let expected = if kind == "anthropic" {
            json!({
                "model": "fake-anthropic",
                "max_tokens": 100,
                "system": "You are terse.",
                "messages": [
                    {"role": "user", "content": [
                        {"type": "text", "text": "Weather?"},
                        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": image}},
                    ]},
                    {"role": "assistant", "content": [
                        {"type": "text", "text": "Checking."},
                        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Zürich"}},
                        {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {"city": "Oslo"}},
                    ]},
                    {"role": "user", "content": [
                        {"type": "tool_result", "tool_use_id": "call_1", "content": "12 °C"},
                        {"type": "tool_result", "tool_use_id": "call_2", "content": "9 °C"},
                    ]},
                ],
                "tools": [tool],
                "tool_choice": {"type": "auto"},
                "stream": false,
            })
        } else {
            json!({
                "model": "fake-openai",
                "messages": [
                    {"role": "system", "content": "You are terse."},
                    {"role": "user", "content": [
                        {"type": "text", "text": "Weather?"},
                        {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{image}")}},
                    ]},
                    {"role": "assistant", "content": "Checking.", "tool_calls": [
                        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Zürich\"}"}},
                        {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}},
                    ]},
                    {"role": "tool", "tool_call_id": "call_1", "content": "12 °C"},
                    {"role": "tool", "tool_call_id": "call_2", "content": "9 °C"},
                ],
                "max_completion_tokens": 100,
                "stream": false,
                "tools": [{"type": "function", "function": {
                    "name": tool["name"], "description": tool["description"], "parameters": tool["input_schema"]}}],
                "tool_choice": "auto",
            })
        };
        assert_eq!(native, expected, "{kind}");
    }
}

#[tokio::test]
async fn the_same_calls_are_answered_once_even_at_once() {
    let w = tooled_world("anthropic").await;
    let session = w.session(json!({})).await;
    w.fake.push(calling_reply());
    let (status, _) = turn(&w, &session, json!({"content": "Weather?"})).await;
    assert_eq!(status, 200);
    w.fake.set_default(Reply::text("Done."));
    let results = json!({"tool_results": [
        {"tool_call_id": "call_1", "content": "12 °C"},
        {"tool_call_id": "call_2", "content": "9 °C"},
    ]});
    let calls_before = w.fake.requests().len();
    let (a, b) = tokio::join!(
        turn(&w, &session, results.clone()),
        turn(&w, &session, results.clone())
    );
    let mut statuses = [a.0, b.0];
    statuses.sort_unstable();
    // Both may pass the check; only one write of the results lands.
    assert!(statuses == [200, 409], "{statuses:?}: {} / {}", a.1, b.1);
    assert_eq!(w.fake.requests().len(), calls_before + 1, "one model call");
    let history = w.history(&session, 20, "asc").await;
    let tools = history.iter().filter(|m| m["role"] == "tool").count();
    assert_eq!(tools, 2, "each result stored once");
    // Afterwards, nothing waits.
    let (status, _) = turn(&w, &session, results).await;
    assert_eq!(status, 409);
    let (_, usage) = w.call(Method::GET, "/v1/usage", None).await;
    assert_eq!(usage["total"]["calls"], 2);
}

/// `value` with the fields that are new on every call replaced.
fn masked(mut value: Value, fields: &[&str]) -> Value {
    for field in fields {
        if value.get(*field).is_some() {
            value[*field] = json!("<varies>");
        }
    }
    value
}

#[tokio::test]
async fn every_client_format_gets_its_exact_answer_to_a_tool_call() {
    for kind in ["anthropic", "openai"] {
        let w = tooled_world(kind).await;
        let ask = json!([{"role": "user", "content": "Weather?"}]);
        // Usage: 100 input, 40 of them read from the cache, 20 output.
        let usage = json!({"input_tokens": 100, "output_tokens": 20, "cache_read_tokens": 40, "cache_write_tokens": 0});
        let cost = "0.000612"; // 100 × 3 + 20 × 15 + 40 × 0.3, per million

        w.fake.push(calling_reply());
        let (_, completion) = w
            .call(
                Method::POST,
                "/v1/chat/completions",
                Some(json!({"model": w.agent_id, "messages": ask})),
            )
            .await;
        let model = format!("fake-{kind}");
        assert_eq!(
            masked(completion, &["id", "created"]),
            json!({
                "id": "<varies>", "object": "chat.completion", "created": "<varies>", "model": model,
                "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                    "role": "assistant", "content": "Checking.", "tool_calls": [
                        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Zürich\"}"}},
                        {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}},
                    ]}}],
                "usage": {"prompt_tokens": 140, "completion_tokens": 20, "total_tokens": 160,
                          "prompt_tokens_details": {"cached_tokens": 40}, "cost_usd": cost},
            }),
            "{kind}"
        );

        w.fake.push(calling_reply());
        let (_, message) = w
            .call(
                Method::POST,
                "/v1/messages",
                Some(json!({"model": w.agent_id, "max_tokens": 100, "messages": ask})),
            )
            .await;
        assert_eq!(
            masked(message, &["id"]),
            json!({
                "id": "<varies>", "type": "message", "role": "assistant", "model": model,
                "content": [
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Zürich"}},
                    {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {"city": "Oslo"}},
                ],
                "stop_reason": "tool_use", "stop_sequence": null,
                "usage": {"input_tokens": 100, "output_tokens": 20,
                          "cache_read_input_tokens": 40, "cache_creation_input_tokens": 0},
            }),
            "{kind}"
        );

        w.fake.push(calling_reply());
        let session = w.session(json!({})).await;
        let (_, native) = turn(&w, &session, json!({"content": "Weather?"})).await;
        assert_eq!(
            masked(native, &["id", "session_id", "created_at", "turn_id"]),
            json!({
                "id": "<varies>", "session_id": "<varies>", "created_at": "<varies>",
                "turn_id": "<varies>",
                "role": "assistant", "content": "Checking.",
                "parts": [{"type": "text", "text": "Checking."}],
                "tool_calls": expected_calls(),
                "status": "complete", "model": model, "stop_reason": "tool_use",
                "usage": usage, "cost_usd": cost,
                "prices": {"input_per_mtok": "3", "output_per_mtok": "15",
                           "cache_read_per_mtok": "0.3", "cache_write_per_mtok": "3.75"},
            }),
            "{kind}"
        );
    }
}

#[tokio::test]
async fn the_messages_stream_follows_anthropics_event_order() {
    for kind in ["anthropic", "openai"] {
        let w = tooled_world(kind).await;
        w.fake.push(calling_reply());
        let response = w
            .app
            .request(Method::POST, "/v1/messages", &w.key)
            .json(
                &json!({"model": w.agent_id, "max_tokens": 100, "stream": true,
                          "messages": [{"role": "user", "content": "Weather?"}]}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let text = response.text().await.unwrap();
        let events = lambent_testkit::chat::parse_events(&text);
        // Each event's name is its data's type.
        for event in &events {
            assert_eq!(
                event.json()["type"],
                event.event.as_deref().unwrap_or("message"),
                "{kind}: {}",
                event.data
            );
        }
        let mut shape: Vec<String> = Vec::new();
        let mut arguments = [String::new(), String::new()];
        for event in &events {
            let data = event.json();
            let step = match event.event.as_deref().unwrap_or("message") {
                "content_block_start" => {
                    format!("start {} {}", data["index"], data["content_block"]["type"])
                }
                "content_block_delta" if data["delta"]["type"] == "input_json_delta" => {
                    let index = data["index"].as_u64().unwrap() as usize;
                    arguments[index - 1].push_str(data["delta"]["partial_json"].as_str().unwrap());
                    "json".into()
                }
                "content_block_delta" => format!("delta {}", data["delta"]["type"]),
                "content_block_stop" => format!("stop {}", data["index"]),
                other => other.to_owned(),
            };
            if shape.last() != Some(&step) {
                shape.push(step);
            }
        }
        assert_eq!(
            shape,
            [
                "message_start",
                "ping",
                "start 0 \"text\"",
                "delta \"text_delta\"",
                "stop 0",
                "start 1 \"tool_use\"",
                "json",
                "stop 1",
                "start 2 \"tool_use\"",
                "json",
                "stop 2",
                "message_delta",
                "message_stop",
            ],
            "{kind}: {text}"
        );
        let parsed: Vec<Value> = arguments
            .iter()
            .map(|a| serde_json::from_str(a).unwrap())
            .collect();
        assert_eq!(
            parsed,
            [json!({"city": "Zürich"}), json!({"city": "Oslo"})],
            "{kind}"
        );
        let delta = events
            .iter()
            .find(|e| e.event.as_deref() == Some("message_delta"))
            .unwrap()
            .json();
        assert_eq!(delta["delta"]["stop_reason"], "tool_use");
        assert_eq!(delta["usage"]["output_tokens"], 20);
        assert_eq!(delta["usage"]["cache_read_input_tokens"], 40);
    }
}

#[tokio::test]
async fn a_large_image_reaches_the_provider_and_history_whole() {
    let w = ChatWorld::start().await;
    let session = w.session(json!({})).await;
    let data = "iVBORw0KGgo".repeat(64 * 1024); // ~700 KB, under the 1 MiB body limit
    w.fake.push(Reply::text("A cat."));
    let (status, reply) = turn(
        &w,
        &session,
        json!({"content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": data}},
        ]}),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    let seen = w.fake.requests().last().unwrap().clone();
    assert_eq!(
        seen.body["messages"][0]["content"][1]["source"]["data"]
            .as_str()
            .map(str::len),
        Some(data.len())
    );
    let history = w.history(&session, 10, "asc").await;
    assert_eq!(history[0]["parts"][1]["source"]["data"], data.as_str());
    // The next turn sends it again.
    w.fake.push(Reply::text("Yes."));
    let (status, _) = turn(&w, &session, json!({"content": "Sure?"})).await;
    assert_eq!(status, 200);
    let seen = w.fake.requests().last().unwrap().clone();
    assert_eq!(
        seen.body["messages"][0]["content"][1]["source"]["data"],
        data.as_str()
    );
}
