//! Workflow steps whose agent has server tools run the agent loop in the
//! worker: the tools are called (with the run's ID), the output is the last
//! reply's text, every call billed once; a call that waits for approval
//! pauses the run (`waiting`) until `POST /v1/runs/{id}/approvals`.

use std::time::Duration;

use lambent_fake_provider::{FakeUsage, Reply};
use lambent_testkit::chat::ChatWorld;
use lambent_tool_server::{ToolReply, ToolServer};
use reqwest::Method;
use rust_decimal::Decimal;
use serde_json::{json, Value};

async fn world() -> (ChatWorld, ToolServer, String) {
    let w = ChatWorld::start().await;
    let tools = ToolServer::start().await.unwrap();
    let schema = json!({"type": "object", "properties": {"q": {"type": "string"}}});
    let (status, body) = w
        .call(
            Method::PATCH,
            &format!("/v1/agents/{}", w.agent_id),
            Some(json!({"tools": [
                {"name": "search", "input_schema": schema,
                 "http": {"url": tools.url("/search"), "headers": {"X-Key": "wf-CANARY-1"}}},
                {"name": "publish", "input_schema": schema, "requires_approval": true,
                 "http": {"url": tools.url("/publish")}},
                {"name": "ask_user", "input_schema": schema},
            ]})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, workflow) = w
        .call(
            Method::POST,
            "/v1/workflows",
            Some(json!({"name": "research", "steps": [
                {"id": "find", "agent_id": w.agent_id, "prompt": "Find {{input.topic}}"},
                {"id": "summary", "agent_id": w.agent_id, "prompt": "Summarise: {{steps.find.output}}", "depends_on": ["find"]},
            ]})),
        )
        .await;
    assert_eq!(status, 201, "{workflow}");
    let id = workflow["id"].as_str().unwrap().to_owned();
    (w, tools, id)
}

async fn start(w: &ChatWorld, workflow: &str) -> String {
    let (status, run) = w
        .call(
            Method::POST,
            &format!("/v1/workflows/{workflow}/runs"),
            Some(json!({"input": {"topic": "otters"}})),
        )
        .await;
    assert_eq!(status, 202, "{run}");
    run["run_id"].as_str().unwrap().to_owned()
}

async fn run_when(w: &ChatWorld, run: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    lambent_testkit::eventually(what, Duration::from_secs(20), || async {
        let (_, view) = w.call(Method::GET, &format!("/v1/runs/{run}"), None).await;
        done(&view).then_some(view)
    })
    .await
}

fn usage(input: u64, output: u64) -> FakeUsage {
    FakeUsage {
        input,
        output,
        ..FakeUsage::default()
    }
}

fn decimal(v: &Value) -> Decimal {
    v.as_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_step_runs_its_agents_server_tools_and_outputs_the_last_reply() {
    let (w, tools, workflow) = world().await;
    tools.set_default("/search", ToolReply::json(json!({"hits": 3})));
    // Step `find`: two rounds of tools, then its answer; `summary`: text.
    w.fake.push(
        Reply::text("Searching.")
            .with_tool_call("call_s1", "search", r#"{"q":"otters"}"#)
            .usage(usage(100, 10)),
    );
    w.fake.push(
        Reply::tool_calls([])
            .with_tool_call("call_s2", "search", r#"{"q":"sea otters"}"#)
            .usage(usage(200, 10)),
    );
    w.fake
        .push(Reply::text("Otters hold hands.").usage(usage(300, 20)));
    w.fake.push(Reply::text("Cute.").usage(usage(50, 5)));
    let run = start(&w, &workflow).await;
    let view = run_when(&w, &run, "the run succeeded", |v| {
        v["status"] == "succeeded"
    })
    .await;
    let find = &view["steps"][0];
    assert_eq!(find["output"], "Otters hold hands.");
    assert_eq!(view["steps"][1]["output"], "Cute.");
    // The tools got the calls, with the run's ID and the secret header.
    for id in ["call_s1", "call_s2"] {
        assert_eq!(tools.count_with_key(id), 1);
    }
    let sent = &tools.requests_to("/search")[0];
    assert_eq!(sent.header("x-key"), Some("wf-CANARY-1"));
    assert_eq!(sent.body["run_id"], run.as_str());
    // The model saw each result; a client tool is not offered in a step.
    let requests = w.fake.requests();
    assert_eq!(requests.len(), 4);
    let third = requests[2].body.to_string();
    assert!(third.contains("call_s1") && third.contains("call_s2") && third.contains("hits"));
    assert!(!requests[0].body["tools"].to_string().contains("ask_user"));
    // Every call billed once: the step, the run and the usage agree.
    let (_, usage) = w.call(Method::GET, "/v1/usage", None).await;
    let total = decimal(&usage["total"]["cost_usd"]);
    assert_eq!(decimal(&view["cost_usd"]), total);
    let steps: Decimal = view["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| decimal(&s["cost_usd"]))
        .sum();
    assert_eq!(steps, total);
    // 100*3 + 10*15 + 200*3 + 10*15 + 300*3 + 20*15 micro-dollars for `find`.
    assert_eq!(
        decimal(&find["cost_usd"]),
        "0.0024".parse::<Decimal>().unwrap()
    );
    assert_eq!(find["usage"]["input_tokens"], 600);
}

#[tokio::test]
async fn an_approval_pauses_the_run_until_it_is_decided() {
    let (w, tools, workflow) = world().await;
    tools.set_default("/publish", ToolReply::text("published"));
    w.fake
        .push(Reply::tool_calls([]).with_tool_call("call_p1", "publish", r#"{"q":"post"}"#));
    let run = start(&w, &workflow).await;
    let view = run_when(&w, &run, "the run waits", |v| v["status"] == "waiting").await;
    let find = &view["steps"][0];
    assert_eq!(find["status"], "awaiting_approval");
    assert_eq!(
        find["pending"],
        json!([{"tool_call_id": "call_p1", "name": "publish", "input": {"q": "post"}, "needs": "approval", "message_id": "find"}])
    );
    assert_eq!(
        view["pending"],
        json!([{"step_id": "find", "tool_call_id": "call_p1", "name": "publish", "input": {"q": "post"}}])
    );
    assert!(tools.requests().is_empty(), "nothing runs before approval");

    let decide = |body: Value| {
        let w = &w;
        let run = run.clone();
        async move {
            w.call(
                Method::POST,
                &format!("/v1/runs/{run}/approvals"),
                Some(body),
            )
            .await
        }
    };
    let (status, body) =
        decide(json!({"approvals": [{"tool_call_id": "call_x", "approved": true}]})).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("approvals[0].tool_call_id"));

    // Granted: the tool runs once, the step and the run go on.
    w.fake.push(Reply::text("Posted."));
    w.fake.push(Reply::text("Done."));
    let (status, body) =
        decide(json!({"approvals": [{"tool_call_id": "call_p1", "approved": true}]})).await;
    assert_eq!(status, 200, "{body}");
    let view = run_when(&w, &run, "the run succeeded", |v| {
        v["status"] == "succeeded"
    })
    .await;
    assert_eq!(view["steps"][0]["output"], "Posted.");
    assert_eq!(tools.count_with_key("call_p1"), 1);
    // Decided once: nothing waits any more.
    let (status, _) =
        decide(json!({"approvals": [{"tool_call_id": "call_p1", "approved": true}]})).await;
    assert_eq!(status, 409);

    // Denied: the tool never runs; the model is told why.
    w.fake
        .push(Reply::tool_calls([]).with_tool_call("call_p2", "publish", r#"{"q":"again"}"#));
    let run2 = start(&w, &workflow).await;
    run_when(&w, &run2, "the second run waits", |v| {
        v["status"] == "waiting"
    })
    .await;
    w.fake.push(Reply::text("Not posted."));
    w.fake.push(Reply::text("Fine."));
    let (status, body) = w
        .call(
            Method::POST,
            &format!("/v1/runs/{run2}/approvals"),
            Some(json!({"approvals": [{"tool_call_id": "call_p2", "approved": false, "reason": "embargo"}]})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let view = run_when(&w, &run2, "the second run succeeded", |v| {
        v["status"] == "succeeded"
    })
    .await;
    assert_eq!(view["steps"][0]["output"], "Not posted.");
    assert_eq!(tools.count_with_key("call_p2"), 0);
    let told = w.fake.requests()[w.fake.requests().len() - 2]
        .body
        .to_string();
    assert!(told.contains("embargo"), "{told}");
    assert_eq!(view["steps"][0]["attempts"], 1, "a pause spends no attempt");
}
