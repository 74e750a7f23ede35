//! Workflows through the HTTP API of `lambent serve`: a whole user journey
//! in process (keys, provider, agent, chat, a workflow, its costs), the real
//! binary killed with SIGKILL in the middle of ten runs and restarted, the
//! routes' validation and tenant isolation, and a hung step that holds up no
//! other run.
//!
//! The fake provider's echo replies answer `out:` plus the prompt, with 100
//! input and 20 output tokens: 100 * 3 + 20 * 15 micro-dollars, 0.0006 USD a
//! step at the test model's prices.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, Instant};

use lambent_fake_provider::{FakeProvider, FakeUsage, Reply};
use lambent_testkit::app::{send_json, spawn_app, LambentProcess, TestApp};
use lambent_testkit::chat::{parse_events, JsonData};
use lambent_testkit::eventually;
use reqwest::Method;
use rust_decimal::Decimal;
use serde_json::{json, Value};

/// The test model, registered by the admin.
const MODEL: &str = "fake-flow";
/// What every echo answer starts with.
const ECHO: &str = "out:";
/// What a step's call reports.
const STEP_USAGE: FakeUsage = FakeUsage {
    input: 100,
    output: 20,
    cache_read: 0,
    cache_write_5m: 0,
    cache_write_1h: 0,
};
/// [`STEP_USAGE`] at 3 and 15 USD per million tokens.
const STEP_COST: &str = "0.0006";

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

/// The HTTP API of one `lambent serve`, in process or the real binary.
struct Api {
    client: reqwest::Client,
    base: String,
}

impl Api {
    fn new(base: String) -> Api {
        Api {
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            base,
        }
    }

    fn of(app: &TestApp) -> Api {
        Api::new(app.url(""))
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        key: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        send_json(
            &self.client,
            method,
            format!("{}{path}", self.base),
            key.to_owned(),
            body,
        )
        .await
    }

    async fn get(&self, path: &str, key: &str) -> (u16, Value) {
        self.call(Method::GET, path, key, None).await
    }

    async fn post(&self, path: &str, key: &str, body: Value) -> (u16, Value) {
        self.call(Method::POST, path, key, Some(body)).await
    }

    /// `POST` that must answer `expected`; returns the body.
    async fn post_ok(&self, path: &str, key: &str, body: Value, expected: u16) -> Value {
        let (status, answer) = self.post(path, key, body).await;
        assert_eq!(status, expected, "POST {path}: {answer}");
        answer
    }

    async fn run(&self, key: &str, run_id: &str) -> Value {
        let (status, run) = self.get(&format!("/v1/runs/{run_id}"), key).await;
        assert_eq!(status, 200, "{run}");
        run
    }

    /// Polls the runs until each has finished (or `within` passes); returns
    /// them in order.
    async fn finished(&self, key: &str, runs: &[String], within: Duration) -> Vec<Value> {
        eventually("every run finished", within, || async {
            let mut all = Vec::new();
            for run in runs {
                all.push(self.run(key, run).await);
            }
            all.iter().all(is_finished).then_some(all)
        })
        .await
    }
}

fn is_finished(run: &Value) -> bool {
    matches!(
        run["status"].as_str(),
        Some("succeeded" | "failed" | "cancelled")
    )
}

fn id_of(v: &Value) -> String {
    v["id"].as_str().unwrap().to_owned()
}

/// The admin registers [`MODEL`] at 3 / 15 / 0.3 / 3.75 USD per million tokens.
async fn register_model(api: &Api, admin: &str) {
    let (status, model) = api
        .post(
            "/v1/models",
            admin,
            json!({
                "name": MODEL,
                "provider_kind": "anthropic",
                "input_per_mtok": "3",
                "output_per_mtok": "15",
                "cache_read_per_mtok": "0.3",
                "cache_write_per_mtok": "3.75",
            }),
        )
        .await;
    assert!(status == 201 || status == 200, "{status} {model}");
}

/// The admin creates a member and a key for it; returns (user ID, key).
async fn member(api: &Api, admin: &str, name: &str) -> (String, String) {
    let user = api
        .post_ok(
            "/v1/users",
            admin,
            json!({"name": name, "role": "member"}),
            201,
        )
        .await;
    assert_eq!(user["role"], "member", "{user}");
    let user_id = id_of(&user);
    let key = api
        .post_ok(
            "/v1/keys",
            admin,
            json!({"user_id": user_id, "name": "laptop"}),
            201,
        )
        .await;
    let secret = key["key"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("lmb_key_"), "{key}");
    (user_id, secret)
}

/// The member adds the fake as an Anthropic provider and an agent on
/// [`MODEL`]; returns the agent's ID.
async fn provider_and_agent(api: &Api, key: &str, fake: &FakeProvider) -> String {
    let provider = api
        .post_ok(
            "/v1/providers",
            key,
            json!({
                "kind": "anthropic",
                "name": "fake",
                "api_key": "sk-ant-flow-test",
                "base_url": fake.anthropic_base_url(),
            }),
            201,
        )
        .await;
    let agent = api
        .post_ok(
            "/v1/agents",
            key,
            json!({
                "name": "stepper",
                "provider_id": id_of(&provider),
                "model": MODEL,
                "system_prompt": "You are terse.",
                "max_tokens": 100,
            }),
            201,
        )
        .await;
    id_of(&agent)
}

/// The step definitions `[(id, prompt, depends_on)]` with one agent.
fn steps(agent: &str, specs: &[(&str, &str, &[&str])]) -> Value {
    specs
        .iter()
        .map(|(id, prompt, deps)| {
            json!({"id": id, "agent_id": agent, "prompt": prompt, "depends_on": deps})
        })
        .collect()
}

/// Model calls the fake provider received.
fn provider_calls(fake: &FakeProvider) -> usize {
    fake.requests()
        .iter()
        .filter(|r| r.path == "/v1/messages")
        .count()
}

/// The last user message of every model call, as a set.
fn prompts_asked(fake: &FakeProvider) -> BTreeSet<String> {
    fake.requests()
        .iter()
        .filter(|r| r.path == "/v1/messages")
        .filter_map(|r| {
            r.body["messages"]
                .as_array()
                .and_then(|m| m.last())
                .and_then(|m| m["content"].as_str())
                .map(str::to_owned)
        })
        .collect()
}

/// Each step's output by step ID.
fn outputs(run: &Value) -> BTreeMap<String, String> {
    run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap().to_owned(),
                s["output"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn error_message(body: &Value) -> &str {
    body["error"]["message"].as_str().unwrap_or_default()
}

// ------------------------------------------------------------ journey --

/// The journey's workflow: a draft, its review, and a final step that uses
/// both (given out of order: the API stores each step after its
/// dependencies).
const JOURNEY: &[(&str, &str, &[&str])] = &[
    (
        "final",
        "Combine [{{steps.draft.output}}] with [{{steps.review.output}}]",
        &["draft", "review"],
    ),
    ("draft", "Write about {{input.topic}}", &[]),
    ("review", "Review: {{steps.draft.output}}", &["draft"]),
];

/// What each step of [`JOURNEY`] answers for `topic`, by the echo rule.
fn journey_outputs(topic: &str) -> BTreeMap<String, String> {
    let draft = format!("{ECHO}Write about {topic}");
    let review = format!("{ECHO}Review: {draft}");
    let last = format!("{ECHO}Combine [{draft}] with [{review}]");
    BTreeMap::from([
        ("draft".to_owned(), draft),
        ("review".to_owned(), review),
        ("final".to_owned(), last),
    ])
}

/// The run statuses a client may see, in the only order they may come.
fn rank(status: &str) -> usize {
    match status {
        "pending" => 0,
        "running" => 1,
        "succeeded" => 2,
        other => panic!("unexpected run status {other}"),
    }
}

#[tokio::test]
async fn a_user_journey_from_key_to_costs() {
    let first_day = lambent_core::time::today();
    let app = spawn_app().await;
    let api = Api::of(&app);
    let fake = FakeProvider::start().await.unwrap();
    let admin = app.admin_key();

    // The admin: a model, a member and the member's key.
    register_model(&api, &admin).await;
    let (user_id, key) = member(&api, &admin, "ana").await;

    // The member: a provider, an agent, a session and a streamed chat.
    let agent = provider_and_agent(&api, &key, &fake).await;
    let session = api
        .post_ok("/v1/sessions", &key, json!({"agent_id": agent}), 201)
        .await;
    let session = id_of(&session);
    // 1234 * 3 + 567 * 15 micro-dollars.
    let chat_cost = "0.012207";
    fake.push(Reply::chunks(["Hel", "lo ", "there."]).usage(FakeUsage {
        input: 1234,
        output: 567,
        ..FakeUsage::default()
    }));
    let response = app
        .request(
            Method::POST,
            &format!("/v1/sessions/{session}/messages"),
            &key,
        )
        .json(&json!({"content": "Hello!"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let raw = response.text().await.unwrap();
    let events = parse_events(&raw);
    let names: Vec<&str> = events
        .iter()
        .map(|e| e.event.as_deref().unwrap_or_default())
        .collect();
    assert_eq!(
        names,
        [
            "message_start",
            "delta",
            "delta",
            "delta",
            "message_end",
            "done"
        ],
        "{raw}"
    );
    let text: String = events
        .iter()
        .filter(|e| e.event.as_deref() == Some("delta"))
        .map(|e| e.json()["text"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(text, "Hello there.");
    let end = events.last().unwrap().json();
    assert_eq!(end["cost_usd"], chat_cost, "{raw}");
    assert_eq!(end["usage"]["input_tokens"], 1234);
    assert_eq!(end["usage"]["output_tokens"], 567);

    // A workflow of three steps, data flowing from each to the next.
    fake.set_default(
        Reply::echo(ECHO)
            .usage(STEP_USAGE)
            .first_byte_delay(Duration::from_millis(150)),
    );
    let workflow = api
        .post_ok(
            "/v1/workflows",
            &key,
            json!({"name": "article", "steps": steps(&agent, JOURNEY)}),
            201,
        )
        .await;
    let order: Vec<&str> = workflow["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(order, ["draft", "review", "final"], "{workflow}");
    let workflow_id = id_of(&workflow);
    let (status, read) = api.get(&format!("/v1/workflows/{workflow_id}"), &key).await;
    assert_eq!(status, 200);
    assert_eq!(read, workflow);

    // The first run's first call is slow: while it is in flight, the run is
    // `running`, its first step `running` and the others `waiting`.
    fake.push(
        Reply::echo(ECHO)
            .usage(STEP_USAGE)
            .first_byte_delay(Duration::from_secs(3)),
    );
    let started = api
        .post_ok(
            &format!("/v1/workflows/{workflow_id}/runs"),
            &key,
            json!({"input": {"topic": "bees"}}),
            202,
        )
        .await;
    let first = started["run_id"].as_str().unwrap().to_owned();
    eventually("the first step called", Duration::from_secs(30), || async {
        (provider_calls(&fake) >= 2).then_some(())
    })
    .await;
    let running = api.run(&key, &first).await;
    assert_eq!(running["status"], "running", "{running}");
    let step_states: Vec<(&str, &str, u64)> = running["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap(),
                s["status"].as_str().unwrap(),
                s["attempts"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        step_states,
        [
            ("draft", "running", 1),
            ("review", "waiting", 0),
            ("final", "waiting", 0)
        ]
    );

    let started = api
        .post_ok(
            &format!("/v1/workflows/{workflow_id}/runs"),
            &key,
            json!({"input": {"topic": "ants"}}),
            202,
        )
        .await;
    let second = started["run_id"].as_str().unwrap().to_owned();
    // The second run is not held up by the first one's slow step: the
    // consumer handles messages concurrently. Right after its start it is
    // `pending` (no step started) or already `running`.
    let early = api.run(&key, &second).await;
    let early_status = early["status"].as_str().unwrap().to_owned();
    assert!(
        early_status == "pending" || early_status == "running",
        "{early}"
    );
    assert_eq!(early["workflow_id"], workflow_id.as_str());
    assert_eq!(early["input"], json!({"topic": "ants"}));

    // Both runs, followed to the end: their statuses only move forward.
    let runs = [first.clone(), second.clone()];
    let mut seen: Vec<Vec<String>> = vec![vec!["running".into()], vec![early_status]];
    let deadline = Instant::now() + Duration::from_secs(60);
    let finished = loop {
        let mut now = Vec::new();
        for (i, run) in runs.iter().enumerate() {
            let view = api.run(&key, run).await;
            let status = view["status"].as_str().unwrap().to_owned();
            if seen[i].last() != Some(&status) {
                seen[i].push(status);
            }
            now.push(view);
        }
        if now.iter().all(is_finished) {
            break now;
        }
        assert!(Instant::now() < deadline, "runs did not finish: {seen:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for (i, statuses) in seen.iter().enumerate() {
        let ranks: Vec<usize> = statuses.iter().map(|s| rank(s)).collect();
        assert!(
            ranks.windows(2).all(|w| w[0] < w[1]),
            "run {i} went {statuses:?}"
        );
        assert_eq!(statuses.last().map(String::as_str), Some("succeeded"));
    }
    println!("journey: statuses seen {seen:?}");

    for (run, topic) in finished.iter().zip(["bees", "ants"]) {
        assert_eq!(run["status"], "succeeded", "{run}");
        assert_eq!(outputs(run), journey_outputs(topic), "{run}");
        for step in run["steps"].as_array().unwrap() {
            assert_eq!(step["status"], "succeeded", "{step}");
            assert_eq!(step["attempts"], 1, "{step}");
            assert_eq!(step["cost_usd"], STEP_COST, "{step}");
            assert_eq!(step["usage"]["input_tokens"], 100, "{step}");
            assert_eq!(step["usage"]["output_tokens"], 20, "{step}");
            assert_eq!(step["model"], MODEL, "{step}");
            assert_eq!(step["error"], Value::Null, "{step}");
            assert_eq!(step["output_truncated"], false, "{step}");
        }
        assert_eq!(run["cost_usd"], "0.0018", "{run}");
        assert_eq!(run["usage"]["input_tokens"], 300);
        assert_eq!(run["usage"]["output_tokens"], 60);
        assert_eq!(run["error"], Value::Null);
        assert!(run["finished_at"].is_string(), "{run}");
    }
    // Every call was asked the prompt built from the outputs before it.
    let mut expected: BTreeSet<String> = ["bees", "ants"]
        .iter()
        .flat_map(|topic| journey_outputs(topic).into_values())
        .map(|o| o.trim_start_matches(ECHO).to_owned())
        .collect();
    expected.insert("Hello!".into());
    assert_eq!(prompts_asked(&fake), expected);
    assert_eq!(provider_calls(&fake), 7);

    // The chat's session carries the chat only; the usage report everything.
    let (_, s) = api.get(&format!("/v1/sessions/{session}"), &key).await;
    assert_eq!(s["cost_usd"], chat_cost, "{s}");
    let runs_cost: Decimal = finished
        .iter()
        .map(|r| d(r["cost_usd"].as_str().unwrap()))
        .sum();
    let expected_total = "0.015807";
    assert_eq!(d(chat_cost) + runs_cost, d(expected_total));
    let (status, usage) = api.get(&format!("/v1/usage?from={first_day}"), &key).await;
    assert_eq!(status, 200, "{usage}");
    assert_eq!(usage["total"]["cost_usd"], expected_total, "{usage}");
    assert_eq!(usage["total"]["calls"], 7, "{usage}");
    assert_eq!(usage["total"]["input_tokens"], 1234 + 600, "{usage}");
    assert_eq!(usage["total"]["output_tokens"], 567 + 120, "{usage}");
    let (_, by_agent) = api
        .get(&format!("/v1/usage?from={first_day}&group_by=agent"), &key)
        .await;
    let groups = by_agent["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 1, "{by_agent}");
    assert_eq!(groups[0]["key"], agent.as_str());
    assert_eq!(groups[0]["cost_usd"], expected_total);
    assert_eq!(groups[0]["calls"], 7);
    // The admin sees the same for this member.
    let (_, seen_by_admin) = api
        .get(
            &format!("/v1/usage?from={first_day}&user_id={user_id}"),
            &admin,
        )
        .await;
    assert_eq!(seen_by_admin["total"], usage["total"], "{seen_by_admin}");

    app.stop().await;
}

// ------------------------------------------------------------- kill -9 --

/// A chain of three steps.
const CHAIN: &[(&str, &str, &[&str])] = &[
    ("a", "Start {{input.n}}", &[]),
    ("b", "Next {{steps.a.output}}", &["a"]),
    ("c", "Last {{steps.b.output}}", &["b"]),
];

fn chain_outputs(n: usize) -> BTreeMap<String, String> {
    let a = format!("{ECHO}Start {n}");
    let b = format!("{ECHO}Next {a}");
    let c = format!("{ECHO}Last {b}");
    BTreeMap::from([("a".into(), a), ("b".into(), b), ("c".into(), c)])
}

/// `lambent serve` on `data`, its logs appended to `log`.
fn serve(data: &Path, log: &Path) -> LambentProcess {
    let data = data.display().to_string();
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    LambentProcess::serve_with_stderr(
        &["serve", "--addr", "127.0.0.1:0", "--data-dir", &data],
        &[
            ("LAMBENT_ALLOW_PRIVATE_PROVIDER_URLS", "1"),
            ("LAMBENT_STEP_LEASE_MS", "1000"),
            ("LAMBENT_STEP_BACKOFF_MS", "100"),
            // The test polls ten runs many times a second.
            ("LAMBENT_RATE_LIMIT_REQUESTS", "0"),
        ],
        stderr,
    )
}

/// Steps of `runs` in `status`.
fn step_count(runs: &[Value], status: &str) -> usize {
    runs.iter()
        .flat_map(|r| r["steps"].as_array().unwrap())
        .filter(|s| s["status"] == status)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_in_the_middle_of_ten_runs_then_restart_finishes_all_billed_once() {
    let first_day = lambent_core::time::today();
    let fake = FakeProvider::start().await.unwrap();
    // Slow enough to be caught in flight, well inside the step's call limit
    // (0.8 x the 1 s lease).
    fake.set_default(
        Reply::echo(ECHO)
            .usage(STEP_USAGE)
            .first_byte_delay(Duration::from_millis(400)),
    );
    let dir = tempfile::Builder::new()
        .prefix("lambent-kill-")
        .tempdir()
        .unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("serve.log");
    let log_tail = || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    };

    let mut server = serve(&data, &log);
    let admin = std::fs::read_to_string(data.join("admin-key")).unwrap();
    assert!(
        server.banner.iter().any(|l| l == &admin),
        "{:?}",
        server.banner
    );
    let api = Api::new(server.url(""));
    register_model(&api, &admin).await;
    let (user_id, key) = member(&api, &admin, "runner").await;
    let agent = provider_and_agent(&api, &key, &fake).await;
    let workflow = api
        .post_ok(
            "/v1/workflows",
            &key,
            json!({"name": "chain", "steps": steps(&agent, CHAIN)}),
            201,
        )
        .await;
    let workflow_id = id_of(&workflow);
    let mut runs = Vec::new();
    for n in 0..10 {
        let started = api
            .post_ok(
                &format!("/v1/workflows/{workflow_id}/runs"),
                &key,
                json!({"input": {"n": n}}),
                202,
            )
            .await;
        runs.push(started["run_id"].as_str().unwrap().to_owned());
    }

    // Wait until some steps have succeeded, then for the next model call to
    // start: the process dies with that step claimed and its call in flight
    // (the reply is 400 ms away).
    let deadline = Instant::now() + Duration::from_secs(60);
    let done_before_kill = loop {
        let mut views = Vec::new();
        for run in &runs {
            views.push(api.run(&key, run).await);
        }
        let succeeded = step_count(&views, "succeeded");
        if succeeded >= 5 {
            break succeeded;
        }
        assert!(
            Instant::now() < deadline,
            "steps did not progress: {succeeded} succeeded; logs:\n{}",
            log_tail()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let calls_before = provider_calls(&fake);
    assert!(
        calls_before < 30,
        "every step was called before the kill; make the replies slower"
    );
    // Polled every millisecond, not with eventually()'s backoff: the kill
    // must land while that call is in flight.
    let deadline = Instant::now() + Duration::from_secs(30);
    while provider_calls(&fake) == calls_before {
        assert!(Instant::now() < deadline, "no further model call started");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let calls_at_kill = provider_calls(&fake);
    server.child.kill().unwrap(); // SIGKILL
    server.child.wait().unwrap();
    drop(server);

    let server = serve(&data, &log);
    let api = Api::new(server.url(""));
    let deadline = Instant::now() + Duration::from_secs(90);
    let finished = loop {
        let mut views = Vec::new();
        for run in &runs {
            views.push(api.run(&key, run).await);
        }
        if views.iter().all(is_finished) {
            break views;
        }
        assert!(
            Instant::now() < deadline,
            "runs did not finish after the restart: {:?}; logs:\n{}",
            views.iter().map(|r| &r["status"]).collect::<Vec<_>>(),
            log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    let mut retried = Vec::new();
    for (n, run) in finished.iter().enumerate() {
        assert_eq!(run["status"], "succeeded", "{run}\nlogs:\n{}", log_tail());
        assert_eq!(outputs(run), chain_outputs(n), "{run}");
        for step in run["steps"].as_array().unwrap() {
            assert_eq!(step["status"], "succeeded", "{step}");
            assert_eq!(step["cost_usd"], STEP_COST, "{step}");
            assert_eq!(step["usage"]["input_tokens"], 100, "{step}");
            assert_eq!(step["usage"]["output_tokens"], 20, "{step}");
            let attempts = step["attempts"].as_u64().unwrap();
            assert!(attempts >= 1, "{step}");
            if attempts > 1 {
                retried.push(format!("run {n} step {}: {attempts}", step["id"]));
            }
        }
        assert_eq!(run["cost_usd"], "0.0018", "{run}");
        assert_eq!(run["usage"]["input_tokens"], 300, "{run}");
    }
    let expected: BTreeSet<String> = (0..10)
        .flat_map(chain_outputs_prompts)
        .collect::<BTreeSet<_>>();
    assert_eq!(prompts_asked(&fake), expected);

    let (status, usage) = api.get(&format!("/v1/usage?from={first_day}"), &key).await;
    assert_eq!(status, 200, "{usage}");
    assert_eq!(usage["total"]["calls"], 30, "{usage}");
    assert_eq!(usage["total"]["cost_usd"], "0.018", "{usage}");
    assert_eq!(usage["total"]["input_tokens"], 3000, "{usage}");
    assert_eq!(usage["total"]["output_tokens"], 600, "{usage}");
    let (_, seen_by_admin) = api
        .get(
            &format!("/v1/usage?from={first_day}&user_id={user_id}"),
            &admin,
        )
        .await;
    assert_eq!(seen_by_admin["total"], usage["total"]);

    // The steps whose calls the kill cut were taken over: called again,
    // billed once.
    let calls = provider_calls(&fake);
    assert!(calls > 30, "{calls} provider calls");
    assert!(!retried.is_empty(), "no step was started twice");
    println!(
        "kill -9: {done_before_kill} steps had succeeded; {calls_at_kill} model calls had \
         started at the kill, {calls} in all; steps started twice: {retried:?}"
    );
}

/// The prompts the steps of run `n` of [`CHAIN`] are asked.
fn chain_outputs_prompts(n: usize) -> Vec<String> {
    chain_outputs(n)
        .into_values()
        .map(|o| o.trim_start_matches(ECHO).to_owned())
        .collect()
}

// ---------------------------------------------- validation, isolation --

/// Creating the workflow `body` must fail with a 400 whose message contains
/// `expected`; returns the message.
async fn refused(api: &Api, key: &str, body: Value, expected: &str) -> String {
    let (status, answer) = api.post("/v1/workflows", key, body.clone()).await;
    assert_eq!(status, 400, "{body} -> {answer}");
    assert_eq!(answer["error"]["code"], "invalid_request", "{answer}");
    let message = error_message(&answer).to_owned();
    assert!(
        message.contains(expected),
        "{message:?} does not name {expected:?}"
    );
    message
}

/// `(status, code, message)` of an answer, for comparing two errors.
fn error_of(status: u16, body: &Value) -> (u16, String, String) {
    (
        status,
        body["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        error_message(body).to_owned(),
    )
}

#[tokio::test]
async fn workflow_routes_validate_and_isolate() {
    let app = spawn_app().await;
    let api = Api::of(&app);
    let fake = FakeProvider::start().await.unwrap();
    fake.set_default(Reply::echo(ECHO).usage(STEP_USAGE));
    let admin = app.admin_key();
    register_model(&api, &admin).await;
    let (_, ana) = member(&api, &admin, "ana").await;
    let (_, bob) = member(&api, &admin, "bob").await;
    let ana_agent = provider_and_agent(&api, &ana, &fake).await;
    let bob_agent = provider_and_agent(&api, &bob, &fake).await;
    let def =
        |specs: &[(&str, &str, &[&str])]| json!({"name": "w", "steps": steps(&ana_agent, specs)});

    // --- definitions: each mistake is a 400 that names it.
    let cycle = refused(
        &api,
        &ana,
        def(&[
            ("a", "x", &["c"]),
            ("b", "x", &["a"]),
            ("c", "x", &["b"]),
            ("d", "x", &[]),
        ]),
        "steps: the dependencies form a cycle: ",
    )
    .await;
    assert!(
        ["a -> b -> c -> a", "b -> c -> a -> b", "c -> a -> b -> c"]
            .iter()
            .any(|c| cycle.ends_with(c)),
        "{cycle}"
    );
    refused(
        &api,
        &ana,
        def(&[("a", "x", &[]), ("b", "x", &["a", "nope"])]),
        "steps[1].depends_on: there is no step \"nope\"",
    )
    .await;
    refused(
        &api,
        &ana,
        def(&[("a", "x", &["a"])]),
        "steps[0].depends_on: step a cannot depend on itself",
    )
    .await;
    refused(
        &api,
        &ana,
        def(&[("a", "Use {{steps.ghost.output}}", &[])]),
        "steps[0].prompt: {{steps.ghost.output}} cannot be resolved: there is no such step",
    )
    .await;
    refused(
        &api,
        &ana,
        def(&[("a", "x", &[]), ("b", "Use {{steps.a.output}}", &[])]),
        "steps[1].prompt: {{steps.a.output}} cannot be resolved: add \"a\" to depends_on",
    )
    .await;
    refused(
        &api,
        &ana,
        def(&[("a", "Use {{oops}}", &[])]),
        "steps[0].prompt: {{oops}} is not a placeholder",
    )
    .await;
    refused(
        &api,
        &ana,
        json!({"name": "w", "steps": []}),
        "steps: a workflow has 1 to 40 steps",
    )
    .await;
    refused(
        &api,
        &ana,
        def(&[("a", "x", &[]), ("a", "y", &[])]),
        "steps[1].id: \"a\" is used by more than one step",
    )
    .await;
    // Bob's agent is refused exactly as an agent that does not exist.
    let not_mine = refused(
        &api,
        &ana,
        json!({"name": "w", "steps": steps(&bob_agent, &[("a", "x", &[])])}),
        "steps[0].agent_id: you have no agent",
    )
    .await;
    assert_eq!(
        not_mine,
        format!("steps[0].agent_id: you have no agent {bob_agent:?}")
    );
    let unknown = refused(
        &api,
        &ana,
        json!({"name": "w", "steps": [
            {"id": "a", "agent_id": ana_agent, "prompt": "x"},
            {"id": "b", "agent_id": "agt_doesnotexist", "prompt": "x"},
        ]}),
        "steps[1].agent_id: you have no agent",
    )
    .await;
    assert_eq!(
        unknown,
        "steps[1].agent_id: you have no agent \"agt_doesnotexist\""
    );
    refused(
        &api,
        &ana,
        json!({"name": "w", "steps": [{"id": "a", "agent_id": "usr_abc", "prompt": "x"}]}),
        "steps[0].agent_id: not an agent ID",
    )
    .await;
    // Unknown fields, at the top and in a step.
    refused(
        &api,
        &ana,
        json!({"name": "w", "steps": steps(&ana_agent, &[("a", "x", &[])]), "timeout": 5}),
        "unknown field `timeout`",
    )
    .await;
    refused(
        &api,
        &ana,
        json!({"name": "w", "steps": [{"id": "a", "agent_id": ana_agent, "prompt": "x", "dependsOn": []}]}),
        "unknown field `dependsOn`",
    )
    .await;
    // Nothing was stored by any of them.
    let (_, listed) = api.get("/v1/workflows", &ana).await;
    assert_eq!(listed["items"], json!([]), "{listed}");

    // --- a valid workflow of Ana's, and Bob's view of it.
    let workflow = api
        .post_ok(
            "/v1/workflows",
            &ana,
            def(&[
                ("a", "About {{input.topic}}", &[]),
                ("b", "More: {{steps.a.output}}", &["a"]),
            ]),
            201,
        )
        .await;
    let wfl = id_of(&workflow);
    let unknown_wfl = "wfl_0000000000000000000000000";
    let runs_path = format!("/v1/workflows/{wfl}/runs");
    let start = json!({"input": {"topic": "x"}});
    for (method, path, body) in [
        (Method::GET, format!("/v1/workflows/{wfl}"), None),
        (Method::DELETE, format!("/v1/workflows/{wfl}"), None),
        (Method::POST, runs_path.clone(), Some(start.clone())),
    ] {
        let (status, theirs) = api.call(method.clone(), &path, &bob, body.clone()).await;
        let unknown_path = path.replace(&wfl, unknown_wfl);
        let (unknown_status, none) = api.call(method.clone(), &unknown_path, &bob, body).await;
        assert_eq!(
            error_of(status, &theirs),
            (404, "not_found".into(), "workflow not found".into()),
            "{method} {path}"
        );
        assert_eq!(error_of(status, &theirs), error_of(unknown_status, &none));
    }
    let (_, bobs) = api.get("/v1/workflows", &bob).await;
    assert_eq!(bobs["items"], json!([]), "{bobs}");
    // Still Ana's after Bob's DELETE.
    let (status, _) = api.get(&format!("/v1/workflows/{wfl}"), &ana).await;
    assert_eq!(status, 200);

    // --- runs: inputs, idempotency keys.
    let (status, missing) = api.post(&runs_path, &ana, json!({"input": {}})).await;
    assert_eq!(status, 400, "{missing}");
    assert_eq!(
        error_message(&missing),
        "input: step a: input.topic is missing (a prompt uses {{input.topic}})"
    );
    let (status, missing) = api.post(&runs_path, &ana, json!({})).await;
    assert_eq!(status, 400, "{missing}");
    assert!(error_message(&missing).contains("input.topic is missing"));
    let (status, bad) = api
        .post(
            &runs_path,
            &ana,
            json!({"input": {"topic": "x"}, "idempotency_key": "has space"}),
        )
        .await;
    assert_eq!(status, 400, "{bad}");
    assert!(
        error_message(&bad).starts_with("idempotency_key: "),
        "{bad}"
    );
    let (status, bad) = api
        .post(
            &runs_path,
            &ana,
            json!({"input": {"topic": "x"}, "priority": 1}),
        )
        .await;
    assert_eq!(status, 400, "{bad}");
    assert!(
        error_message(&bad).contains("unknown field `priority`"),
        "{bad}"
    );

    let keyed = json!({"input": {"topic": "x"}, "idempotency_key": "order-42"});
    let once = api.post_ok(&runs_path, &ana, keyed.clone(), 202).await;
    let again = api.post_ok(&runs_path, &ana, keyed, 202).await;
    assert_eq!(once, again);
    let run = once["run_id"].as_str().unwrap().to_owned();
    assert!(run.starts_with("run_"), "{once}");
    // The key names the run, whatever the input says this time.
    let other_input = api
        .post_ok(
            &runs_path,
            &ana,
            json!({"input": {"topic": "y"}, "idempotency_key": "order-42"}),
            202,
        )
        .await;
    assert_eq!(other_input["run_id"], run.as_str());
    let other_key = api
        .post_ok(
            &runs_path,
            &ana,
            json!({"input": {"topic": "x"}, "idempotency_key": "order-43"}),
            202,
        )
        .await;
    let second = other_key["run_id"].as_str().unwrap().to_owned();
    assert_ne!(second, run);

    let finished = api
        .finished(
            &ana,
            &[run.clone(), second.clone()],
            Duration::from_secs(60),
        )
        .await;
    for view in &finished {
        assert_eq!(view["status"], "succeeded", "{view}");
        assert_eq!(view["cost_usd"], "0.0012");
    }
    assert_eq!(finished[0]["idempotency_key"], "order-42");
    assert_eq!(finished[0]["input"], json!({"topic": "x"}));
    assert_eq!(provider_calls(&fake), 4, "one run per key");

    // Bob sees neither the run nor a difference from an unknown one.
    let unknown_run = "run_0000000000000000000000000";
    for (method, path) in [
        (Method::GET, format!("/v1/runs/{run}")),
        (Method::POST, format!("/v1/runs/{run}/cancel")),
    ] {
        let (status, theirs) = api.call(method.clone(), &path, &bob, None).await;
        let (unknown_status, none) = api
            .call(method.clone(), &path.replace(&run, unknown_run), &bob, None)
            .await;
        assert_eq!(
            error_of(status, &theirs),
            (404, "not_found".into(), "run not found".into()),
            "{method} {path}"
        );
        assert_eq!(error_of(status, &theirs), error_of(unknown_status, &none));
    }

    // --- cancel: 409 once finished; a running run stops after its step.
    let (status, conflict) = api
        .post(&format!("/v1/runs/{run}/cancel"), &ana, json!({}))
        .await;
    assert_eq!(
        error_of(status, &conflict),
        (
            409,
            "conflict".into(),
            "the run has already finished (succeeded)".into()
        )
    );
    fake.push(
        Reply::echo(ECHO)
            .usage(STEP_USAGE)
            .first_byte_delay(Duration::from_secs(2)),
    );
    let slow = api
        .post_ok(&runs_path, &ana, json!({"input": {"topic": "slow"}}), 202)
        .await;
    let slow = slow["run_id"].as_str().unwrap().to_owned();
    let (status, cancelled) = api
        .post(&format!("/v1/runs/{slow}/cancel"), &ana, json!({}))
        .await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    assert_eq!(cancelled["steps"][1]["status"], "cancelled", "{cancelled}");
    let (status, twice) = api
        .post(&format!("/v1/runs/{slow}/cancel"), &ana, json!({}))
        .await;
    assert_eq!(
        error_of(status, &twice),
        (
            409,
            "conflict".into(),
            "the run has already finished (cancelled)".into()
        )
    );
    // Its first step, if a worker had started it, finishes and is billed.
    let deadline = Instant::now() + Duration::from_secs(30);
    let slow_view = loop {
        let view = api.run(&ana, &slow).await;
        let settled = view["steps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| !matches!(s["status"].as_str(), Some("running" | "ready" | "waiting")));
        if settled {
            break view;
        }
        assert!(Instant::now() < deadline, "{view}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(slow_view["status"], "cancelled", "{slow_view}");
    let first_step = &slow_view["steps"][0];
    match first_step["status"].as_str() {
        Some("succeeded") => {
            assert_eq!(first_step["cost_usd"], STEP_COST);
            assert_eq!(slow_view["cost_usd"], STEP_COST);
        }
        Some("cancelled") => {
            assert_eq!(first_step["attempts"], 0);
            assert_eq!(slow_view["cost_usd"], "0");
        }
        other => panic!("first step {other:?}: {slow_view}"),
    }
    assert_eq!(slow_view["steps"][1]["status"], "cancelled");
    assert_eq!(slow_view["steps"][1]["attempts"], 0);
    println!(
        "cancel: the slow run's first step ended {}",
        first_step["status"]
    );

    // --- malformed IDs answer as unknown ones.
    let too_long = format!("run_{}", "a".repeat(65));
    for (method, path, what) in [
        (Method::GET, "/v1/workflows/nope".to_owned(), "workflow"),
        (Method::GET, format!("/v1/workflows/{run}"), "workflow"),
        (Method::DELETE, "/v1/workflows/wfl_".to_owned(), "workflow"),
        (
            Method::POST,
            "/v1/workflows/wfl_a-b/runs".to_owned(),
            "workflow",
        ),
        (Method::GET, format!("/v1/runs/{wfl}"), "run"),
        (Method::GET, "/v1/runs/run_%21%21".to_owned(), "run"),
        (Method::GET, format!("/v1/runs/{too_long}"), "run"),
        (Method::POST, "/v1/runs/RUN_abc/cancel".to_owned(), "run"),
    ] {
        let body = (method == Method::POST).then(|| json!({"input": {}}));
        let (status, answer) = api.call(method.clone(), &path, &ana, body).await;
        assert_eq!(
            error_of(status, &answer),
            (404, "not_found".into(), format!("{what} not found")),
            "{method} {path}"
        );
    }

    // --- listing: pages of `limit`, each cursor for its own listing only.
    let mut mine = BTreeSet::from([wfl.clone()]);
    for i in 0..4 {
        let made = api
            .post_ok(
                "/v1/workflows",
                &ana,
                json!({"name": format!("w{i}"), "steps": steps(&ana_agent, &[("a", "x", &[])])}),
                201,
            )
            .await;
        mine.insert(id_of(&made));
    }
    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/workflows?limit=2&cursor={c}"),
            None => "/v1/workflows?limit=2".to_owned(),
        };
        let (status, page) = api.get(&path, &ana).await;
        assert_eq!(status, 200, "{page}");
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 2, "{page}");
        paged.extend(items.iter().map(id_of));
        pages += 1;
        match page["next_cursor"].as_str() {
            Some(next) => {
                assert_eq!(items.len(), 2, "a short page before the end: {page}");
                // Bob cannot read on with Ana's cursor.
                let (status, refused) = api
                    .get(&format!("/v1/workflows?limit=2&cursor={next}"), &bob)
                    .await;
                assert_eq!(status, 400, "{refused}");
                assert!(error_message(&refused).starts_with("cursor: "), "{refused}");
                cursor = Some(next.to_owned());
            }
            None => break,
        }
        assert!(pages < 10, "the listing does not end: {paged:?}");
    }
    assert_eq!(pages, 3, "{paged:?}");
    assert_eq!(paged.len(), 5, "no duplicates: {paged:?}");
    assert_eq!(paged.iter().cloned().collect::<BTreeSet<_>>(), mine);
    for (query, expected) in [
        ("limit=0", "limit: must be 1 to 100"),
        ("limit=101", "limit: must be 1 to 100"),
        (
            "cursor=forged",
            "cursor: not a cursor issued for this listing",
        ),
    ] {
        let (status, answer) = api.get(&format!("/v1/workflows?{query}"), &ana).await;
        assert_eq!(status, 400, "{query}: {answer}");
        assert_eq!(error_message(&answer), expected, "{query}");
    }

    // --- delete: the workflow goes, its runs stay readable.
    let (status, _) = api
        .call(Method::DELETE, &format!("/v1/workflows/{wfl}"), &ana, None)
        .await;
    assert_eq!(status, 204);
    let (status, gone) = api.get(&format!("/v1/workflows/{wfl}"), &ana).await;
    assert_eq!(error_message(&gone), "workflow not found");
    assert_eq!(status, 404);
    let (status, gone) = api.post(&runs_path, &ana, start.clone()).await;
    assert_eq!((status, error_message(&gone)), (404, "workflow not found"));
    let (status, gone) = api
        .call(Method::DELETE, &format!("/v1/workflows/{wfl}"), &ana, None)
        .await;
    assert_eq!((status, error_message(&gone)), (404, "workflow not found"));
    let kept = api.run(&ana, &run).await;
    assert_eq!(kept["status"], "succeeded");
    assert_eq!(kept["workflow_id"], wfl.as_str());

    app.stop().await;
}

/// `lambent serve` handles step messages concurrently: a step whose model
/// call hangs holds up no other run.
#[tokio::test]
async fn a_hung_step_holds_up_no_other_run() {
    let app = spawn_app().await;
    let api = Api::of(&app);
    let admin = app.admin_key();
    register_model(&api, &admin).await;
    let (_, key) = member(&api, &admin, "patient").await;
    let fake = FakeProvider::start().await.unwrap();
    fake.set_default(Reply::echo(ECHO).usage(STEP_USAGE));
    let agent = provider_and_agent(&api, &key, &fake).await;
    let workflow = api
        .post_ok(
            "/v1/workflows",
            &key,
            json!({"name": "pair", "steps": steps(&agent, &[
                ("a", "First {{input.n}}", &[]),
                ("b", "Then {{steps.a.output}}", &["a"]),
            ])}),
            201,
        )
        .await;
    let runs = format!("/v1/workflows/{}/runs", id_of(&workflow));
    // The first call never answers (until the step's own time limit).
    fake.push(Reply::echo(ECHO).hang());
    let hung = api
        .post_ok(&runs, &key, json!({"input": {"n": 1}}), 202)
        .await;
    let hung = hung["run_id"].as_str().unwrap().to_owned();
    eventually("the hung step called", Duration::from_secs(30), || async {
        (provider_calls(&fake) >= 1).then_some(())
    })
    .await;
    let others: Vec<String> = {
        let mut ids = Vec::new();
        for n in 2..=4 {
            let run = api
                .post_ok(&runs, &key, json!({"input": {"n": n}}), 202)
                .await;
            ids.push(run["run_id"].as_str().unwrap().to_owned());
        }
        ids
    };
    for run in api.finished(&key, &others, Duration::from_secs(30)).await {
        assert_eq!(run["status"], "succeeded", "{run}");
    }
    let still = api.run(&key, &hung).await;
    assert_eq!(still["status"], "running", "{still}");
    assert_eq!(still["steps"][0]["status"], "running", "{still}");
}
