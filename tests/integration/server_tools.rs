//! Server tools called through the guarded client, against the fake tool
//! server (`tests/tool-server`): the request a tool gets, and what the model
//! is told for every way a tool can answer or fail.

use std::time::Duration;

use crate::llm_clients::client;
use lambent_core::secret::SecretString;
use lambent_llm::server_tools::{HttpTool, ToolAnswer, ToolInvocation, MAX_RESULT_BYTES};
use lambent_tool_server::{large_text, ToolReply, ToolServer};
use serde_json::{json, Value};

fn tool(server: &ToolServer, path: &str, timeout: Duration) -> HttpTool {
    HttpTool {
        url: server.url(path),
        headers: vec![(
            "Authorization".into(),
            SecretString::from("Bearer tool-CANARY-9f2".to_owned()),
        )],
        timeout,
    }
}

fn invocation<'a>(id: &'a str, input: &'a Value) -> ToolInvocation<'a> {
    ToolInvocation {
        tool_call_id: id,
        name: "weather",
        input,
        session_id: Some("ses_1"),
        run_id: None,
    }
}

#[tokio::test]
async fn a_tool_gets_the_call_with_its_idempotency_key_and_headers() {
    let server = ToolServer::start().await.unwrap();
    server.push("/weather", ToolReply::json(json!({"temp_c": 21})));
    let input = json!({"city": "Lisbon"});
    let answer = client(true)
        .call_tool(
            &tool(&server, "/weather", Duration::from_secs(2)),
            invocation("toolu_1", &input),
        )
        .await;
    assert_eq!(
        answer,
        ToolAnswer {
            content: r#"{"temp_c":21}"#.into(),
            is_error: false
        }
    );
    let seen = server.requests_to("/weather");
    assert_eq!(seen.len(), 1);
    let request = &seen[0];
    assert_eq!(request.idempotency_key.as_deref(), Some("toolu_1"));
    assert_eq!(
        request.header("authorization"),
        Some("Bearer tool-CANARY-9f2")
    );
    assert_eq!(request.tool_call_id(), Some("toolu_1"));
    assert_eq!(request.name(), Some("weather"));
    assert_eq!(request.input(), Some(&input));
    assert_eq!(request.session_id(), Some("ses_1"));
    assert_eq!(request.run_id(), None);

    // A resend carries the same key, so the tool can answer it once.
    client(true)
        .call_tool(
            &tool(&server, "/weather", Duration::from_secs(2)),
            invocation("toolu_1", &input),
        )
        .await;
    assert_eq!(server.count_with_key("toolu_1"), 2);
}

#[tokio::test]
async fn every_failure_is_an_error_result_with_a_short_reason() {
    let server = ToolServer::start().await.unwrap();
    let input = json!({});
    let call = |path: &'static str, timeout_ms: u64| {
        let tool = tool(&server, path, Duration::from_millis(timeout_ms));
        let input = &input;
        async move {
            client(true)
                .call_tool(&tool, invocation("toolu_2", input))
                .await
        }
    };

    server.push(
        "/fails",
        ToolReply::status(500, "stack trace: secret internals"),
    );
    let failed = call("/fails", 2_000).await;
    assert!(failed.is_error);
    assert_eq!(failed.content, "the tool answered HTTP 500");

    server.push(
        "/slow",
        ToolReply::text("late").delay(Duration::from_millis(800)),
    );
    let slow = call("/slow", 200).await;
    assert!(slow.is_error);
    assert_eq!(slow.content, "the tool did not answer within 200 ms");

    server.push("/hangs", ToolReply::hang());
    let hung = call("/hangs", 300).await;
    assert!(hung.is_error, "{hung:?}");

    // Nothing listens there.
    let gone = ToolServer::start().await.unwrap();
    let url = gone.url("/x");
    drop(gone);
    let unreachable = client(true)
        .call_tool(
            &HttpTool {
                url,
                headers: Vec::new(),
                timeout: Duration::from_secs(2),
            },
            invocation("toolu_3", &input),
        )
        .await;
    assert_eq!(
        unreachable,
        ToolAnswer {
            content: "the tool could not be reached".into(),
            is_error: true
        }
    );
}

#[tokio::test]
async fn a_long_answer_is_cut_at_64_kib() {
    let server = ToolServer::start().await.unwrap();
    server.push("/big", ToolReply::large(200_000));
    let input = json!({});
    let answer = client(true)
        .call_tool(
            &tool(&server, "/big", Duration::from_secs(5)),
            invocation("toolu_4", &input),
        )
        .await;
    assert!(!answer.is_error);
    assert_eq!(answer.content.len(), MAX_RESULT_BYTES);
    assert_eq!(answer.content, large_text(200_000)[..MAX_RESULT_BYTES]);
}

#[tokio::test]
async fn the_ssrf_guard_refuses_private_and_metadata_tool_urls() {
    let server = ToolServer::start().await.unwrap();
    let input = json!({});
    // Loopback: refused unless the deployment allows private URLs.
    let refused = client(false)
        .call_tool(
            &tool(&server, "/weather", Duration::from_secs(2)),
            invocation("toolu_5", &input),
        )
        .await;
    assert_eq!(
        refused,
        ToolAnswer {
            content: "the tool's URL is not allowed".into(),
            is_error: true
        }
    );
    assert!(server.requests().is_empty());
    // Metadata: always refused, and the reason does not echo the address.
    let metadata = client(true)
        .call_tool(
            &HttpTool {
                url: "http://169.254.169.254/latest/meta-data".into(),
                headers: Vec::new(),
                timeout: Duration::from_secs(2),
            },
            invocation("toolu_6", &input),
        )
        .await;
    assert!(metadata.is_error);
    assert!(
        !metadata.content.contains("169.254"),
        "{}",
        metadata.content
    );
}
