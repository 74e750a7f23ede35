//! Tools: agents that offer them, validated field by field.

use lambent_testkit::chat::ChatWorld;
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
