//! Chaos: 200 chat turns and 50 workflow runs against `lambent serve`
//! (the real binary, `chaos-serve`) while its store fails 5 % of writes at
//! random and the process is killed with SIGKILL three times. Afterwards,
//! once the sweeper has run: every turn is stored or marked, every call is
//! counted exactly once (the sum of what messages, runs and call markers
//! cost is the usage total, to the last decimal), no reservation is
//! outstanding, and every run has finished.

use std::path::PathBuf;
use std::process::Stdio;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lambent_fake_provider::{FakeUsage, Reply};
use lambent_ports::Query;
use lambent_testkit::app::{LambentProcess, TestApp};
use lambent_testkit::chat::ChatWorld;
use reqwest::Method;
use rust_decimal::Decimal;
use serde_json::{json, Value};

const TURNS: usize = 200;
const RUNS: usize = 50;
const SESSIONS: usize = 10;
const KILLS: usize = 3;

fn serve(addr: &str, dir: &std::path::Path, failure_percent: &str) -> LambentProcess {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_chaos-serve"));
    let dir = dir.to_str().unwrap();
    let envs = [
        ("LAMBENT_CHAOS_WRITE_FAILURE_PERCENT", failure_percent),
        ("LAMBENT_ALLOW_PRIVATE_PROVIDER_URLS", "1"),
        ("LAMBENT_RATE_LIMIT_REQUESTS", "0"),
        ("LAMBENT_MAX_STREAMS_PER_USER", "0"),
        ("LAMBENT_SWEEP_EVERY_SECS", "1"),
        ("LAMBENT_SWEEP_STALE_SECS", "3"),
        ("LAMBENT_STEP_LEASE_MS", "1500"),
        ("LAMBENT_TURN_LEASE_MS", "1500"),
        ("LAMBENT_STEP_BACKOFF_MS", "100"),
        ("LAMBENT_STEP_MAX_ATTEMPTS", "6"),
    ];
    // A start may meet an injected fault itself: try again.
    for _ in 0..5 {
        let started = std::panic::catch_unwind(|| {
            LambentProcess::serve_bin(&bin, &[addr, dir], &envs, Stdio::null())
        });
        if let Ok(process) = started {
            return process;
        }
    }
    panic!("chaos-serve did not start");
}

/// A request that may meet a dead server: `None` then.
async fn try_call(
    client: &reqwest::Client,
    method: Method,
    url: String,
    key: &str,
    body: Option<Value>,
) -> Option<(u16, Value)> {
    let mut request = client.request(method, url).bearer_auth(key);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.ok()?;
    let status = response.status().as_u16();
    let text = response.text().await.ok()?;
    Some((
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

fn decimal(v: &Value) -> Decimal {
    v.as_str()
        .map(|s| Decimal::from_str(s).unwrap())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn turns_and_runs_survive_failing_writes_and_kills_and_are_billed_exactly_once() {
    let dir = tempfile::Builder::new()
        .prefix("lambent-chaos-")
        .tempdir()
        .unwrap();
    let port = lambent_testkit::emulator::free_port();
    let addr = format!("127.0.0.1:{port}");

    // The world is set up on a healthy store.
    let mut process = serve(&addr, dir.path(), "0");
    let w = ChatWorld::seed(
        TestApp::attached(process.addr, copy_admin_key(dir.path())),
        "anthropic",
    )
    .await;
    let usage = FakeUsage {
        input: 100,
        output: 20,
        ..FakeUsage::default()
    };
    w.fake.set_default(Reply::text("fine").usage(usage));
    w.set_monthly_budget("1000").await;
    let mut sessions = Vec::new();
    for _ in 0..SESSIONS {
        sessions.push(w.session(json!({})).await);
    }
    let steps: Vec<Value> = lambent_testkit::DIAMOND
        .iter()
        .map(|(id, prompt, needs)| {
            json!({"id": id, "agent_id": w.agent_id, "prompt": prompt, "depends_on": needs})
        })
        .collect();
    let (status, workflow) = w
        .call(
            Method::POST,
            "/v1/workflows",
            Some(json!({"name": "chaos", "steps": steps})),
        )
        .await;
    assert_eq!(status, 201, "{workflow}");
    let workflow_id = workflow["id"].as_str().unwrap().to_owned();
    process.stop();

    // Now 5 % of writes fail, and the load runs.
    process = serve(&addr, dir.path(), "5");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let base = format!("http://{addr}");
    let answered = Arc::new(AtomicUsize::new(0));
    let turns = (0..TURNS).map(|i| {
        let (client, base, key) = (client.clone(), base.clone(), w.key.clone());
        let session = sessions[i % SESSIONS].clone();
        let answered = answered.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20 * i as u64)).await;
            let body = json!({"content": format!("turn {i}"), "stream": i % 2 == 0});
            let url = format!("{base}/v1/sessions/{session}/messages");
            if let Some((200, _)) = try_call(&client, Method::POST, url, &key, Some(body)).await {
                answered.fetch_add(1, Ordering::SeqCst);
            }
        })
    });
    let turns: Vec<_> = turns.collect();
    let runs = (0..RUNS).map(|i| {
        let (client, base, key) = (client.clone(), base.clone(), w.key.clone());
        let url = format!("{base}/v1/workflows/{workflow_id}/runs");
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(80 * i as u64)).await;
            // The same idempotency key until it is accepted: one run each.
            let body =
                json!({"input": {"topic": format!("t{i}")}, "idempotency_key": format!("k{i}")});
            loop {
                if let Some((202, run)) =
                    try_call(&client, Method::POST, url.clone(), &key, Some(body.clone())).await
                {
                    return run["run_id"].as_str().unwrap().to_owned();
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    });
    let runs: Vec<_> = runs.collect();
    for _ in 0..KILLS {
        tokio::time::sleep(Duration::from_millis(1_300)).await;
        process.stop(); // SIGKILL
        process = serve(&addr, dir.path(), "5");
    }
    for turn in turns {
        turn.await.unwrap();
    }
    let mut run_ids = Vec::new();
    for run in runs {
        run_ids.push(run.await.unwrap());
    }

    // The faults stop; the sweeper finishes what was left.
    process.stop();
    let process = serve(&addr, dir.path(), "0");
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut runs_cost = Decimal::ZERO;
    for run_id in &run_ids {
        loop {
            let (status, run) = w
                .call(Method::GET, &format!("/v1/runs/{run_id}"), None)
                .await;
            assert_eq!(status, 200, "{run}");
            if ["succeeded", "failed", "cancelled"].contains(&run["status"].as_str().unwrap()) {
                runs_cost += decimal(&run["cost_usd"]);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "run {run_id} never finished: {run}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // Past the stale time, twice over: abandoned calls are closed.
    tokio::time::sleep(Duration::from_secs(8)).await;

    // Every turn is stored or marked: each user message has its reply.
    let mut messages_cost = Decimal::ZERO;
    let mut users = 0;
    for session in &sessions {
        let history = w.history(session, 100, "asc").await;
        let said = history.iter().filter(|m| m["role"] == "user").count();
        let replies: Vec<&Value> = history
            .iter()
            .filter(|m| m["role"] == "assistant")
            .collect();
        assert_eq!(
            said,
            replies.len(),
            "a turn without a reply in {session}: {history:#?}"
        );
        users += said;
        for reply in replies {
            messages_cost += decimal(&reply["cost_usd"]);
        }
    }
    let answered = answered.load(Ordering::SeqCst);
    assert!(users >= answered);
    // The faults and kills did bite: not every turn was answered.
    assert!(
        answered < TURNS,
        "all {TURNS} turns answered: no fault was met"
    );
    let (_, usage) = w.call(Method::GET, "/v1/usage", None).await;
    let total = decimal(&usage["total"]["cost_usd"]);
    drop(process);

    // The store itself: the ledger is empty, nothing is reserved, and
    // call markers (step attempts billed on their own) close the sum.
    let state = lambent_boot::embedded(dir.path(), lambent_app::config::Config::default()).unwrap();
    let store = state.store.as_ref();
    for shard in 0..lambent_store::ledger::SHARDS {
        let left = store
            .query(Query::partition(format!("LEDGER#{shard}")).limit(10))
            .await
            .unwrap();
        assert!(
            left.items.is_empty(),
            "ledger entries left: {:?}",
            left.items
        );
    }
    let markers = store
        .query(
            Query::partition(lambent_store::users::partition(&w.user_id))
                .prefix("CALL#")
                .limit(1000),
        )
        .await
        .unwrap();
    let markers_cost: Decimal = markers
        .items
        .iter()
        .filter_map(|m| m.get_decimal("cost_usd"))
        .sum();
    assert_eq!(
        (messages_cost + runs_cost + markers_cost).normalize(),
        total.normalize(),
        "messages {messages_cost} + runs {runs_cost} + markers {markers_cost} != usage {total}"
    );
    let month = lambent_core::time::month_of(&lambent_core::time::today()).to_owned();
    let budget = store
        .get(&lambent_store::budgets::month_key(&w.user_id, &month))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        budget
            .get_decimal("committed_usd")
            .unwrap_or_default()
            .normalize(),
        budget
            .get_decimal("spent_usd")
            .unwrap_or_default()
            .normalize(),
        "a reservation is outstanding"
    );
    assert_eq!(
        budget
            .get_decimal("spent_usd")
            .unwrap_or_default()
            .normalize(),
        total.normalize()
    );
}

/// The bootstrap admin key the first start saved, in a directory of its
/// own for [`TestApp::attached`] (which reads `admin-key` from it).
fn copy_admin_key(data_dir: &std::path::Path) -> tempfile::TempDir {
    let copy = tempfile::tempdir().unwrap();
    std::fs::copy(data_dir.join("admin-key"), copy.path().join("admin-key")).unwrap();
    copy
}
