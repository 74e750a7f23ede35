//! A crash in the middle of agent turns (docs: API.md, "Durable agent
//! turns"): 10 background turns of an agent with two server tools run in
//! `lambent serve` as a child process (`chaos-serve`: the same server, here
//! with no store faults), which is killed with SIGKILL while they are
//! mid-way (model calls streaming or waiting, tool requests in flight, one
//! turn already done) and started again on the same data directory. Then:
//!
//! - every turn finishes (`complete`), its history is the user's message,
//!   the reply calling both tools, both results, the final reply, and its
//!   events replay with ids 0, 1, 2… and end with one `done`;
//! - no model round is made twice, except a round that was in flight at the
//!   kill (its reply not stored), which is made again with the very same
//!   conversation;
//! - no tool call is sent twice, except one whose result was not stored at
//!   the kill, which is sent again with the same `Idempotency-Key`;
//! - every call is billed once: the stored replies' costs add up to
//!   `/v1/usage` (and to each turn's cost), and once the sweeper has closed
//!   the calls that died with the process, no reservation is outstanding;
//! - (checked last) the replayed events tell everything the journal holds:
//!   each stored reply's `message_start`, `tool_call`s and `message_end`,
//!   each stored result's `tool_result`, once.
//!
//! What was stored at the kill is read from the data directory while no
//! process runs, so "in flight at the kill" is decided from the store
//! itself, not guessed from timing.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lambent_fake_provider::{FakeToolCall, FakeUsage, Recorded, Reply};
use lambent_ports::Query;
use lambent_store::messages::{Message, MessageRole};
use lambent_testkit::app::{LambentProcess, TestApp};
use lambent_testkit::chat::{ChatWorld, JsonData};
use lambent_testkit::eventually;
use lambent_tool_server::{ToolReply, ToolServer};
use reqwest::Method;
use rust_decimal::Decimal;
use serde_json::{json, Value};

const TURNS: usize = 10;
/// The secret header both tools are configured with.
const TOOL_HEADER: (&str, &str) = ("X-Tool-Token", "tool-token-5e1f0c");
const SEARCH: &str = "/tools/search";
const FETCH: &str = "/tools/fetch";
/// How long the tools take: the two calls of a reply overlap, the fast one
/// answered (and stored) while the slow one is still in flight.
const SEARCH_DELAY: Duration = Duration::from_millis(300);
const FETCH_DELAY: Duration = Duration::from_millis(1_200);
/// Turn `i`'s first model call waits `i` times this for its first byte, so
/// the turns are spread over every stage when the process dies.
const FIRST_ROUND_STAGGER: Duration = Duration::from_millis(300);
/// Between two deltas of a final reply (turn 0's excepted: it finishes
/// before the kill).
const FINAL_CHUNK_DELAY: Duration = Duration::from_millis(150);

fn serve(addr: &str, dir: &Path) -> LambentProcess {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_chaos-serve"));
    let envs = [
        ("LAMBENT_CHAOS_WRITE_FAILURE_PERCENT", "0"),
        ("LAMBENT_ALLOW_PRIVATE_PROVIDER_URLS", "1"),
        ("LAMBENT_RATE_LIMIT_REQUESTS", "0"),
        ("LAMBENT_MAX_STREAMS_PER_USER", "0"),
        // The default lease (30 s): the restarted server takes up the
        // turns its killed run left at once, not a lease later.
        ("LAMBENT_TURN_LEASE_MS", "30000"),
        ("LAMBENT_TURN_MAX_ATTEMPTS", "10"),
        ("LAMBENT_STEP_LEASE_MS", "3000"),
        ("LAMBENT_STEP_BACKOFF_MS", "100"),
        ("LAMBENT_SWEEP_EVERY_SECS", "1"),
        // Calls that died with the process give their reservation back.
        ("LAMBENT_SWEEP_STALE_SECS", "3"),
    ];
    LambentProcess::serve_bin(
        &bin,
        &[addr, dir.to_str().unwrap()],
        &envs,
        Stdio::inherit(),
    )
}

/// The bootstrap admin key the first start saved, in a directory of its
/// own for [`TestApp::attached`] (which reads `admin-key` from it).
fn copy_admin_key(data_dir: &Path) -> tempfile::TempDir {
    let copy = tempfile::tempdir().unwrap();
    std::fs::copy(data_dir.join("admin-key"), copy.path().join("admin-key")).unwrap();
    copy
}

fn decimal(v: &Value) -> Decimal {
    v.as_str()
        .map(|s| Decimal::from_str(s).unwrap())
        .unwrap_or_default()
}

fn tool(name: &str, url: String, schema: Value) -> Value {
    json!({
        "name": name,
        "description": format!("The {name} tool"),
        "input_schema": schema,
        "http": {"url": url, "headers": {TOOL_HEADER.0: TOOL_HEADER.1}, "timeout_ms": 10_000},
    })
}

/// What the user says in turn `i`.
fn said(i: usize) -> String {
    format!("turn {i}: look it up")
}

/// Turn `i`'s final text.
fn final_text(i: usize) -> String {
    format!("turn {i}: both tools answered")
}

/// The text of a request's first message (the turn's user message).
fn first_user_text(request: &Recorded) -> String {
    let content = &request.body["messages"][0]["content"];
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts.iter().filter_map(|p| p["text"].as_str()).collect(),
        _ => String::new(),
    }
}

/// Which turn a provider request belongs to, and which model round of it
/// it is (1: the user's message only; 2: after the tools' results).
fn round_of(request: &Recorded) -> (usize, usize) {
    let text = first_user_text(request);
    let i = text
        .strip_prefix("turn ")
        .and_then(|rest| rest.split(':').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a turn's request: {}", request.body));
    let replies = request.body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "assistant")
        .count();
    (i, replies + 1)
}

/// The fake model: round 1 calls both tools (fresh call IDs every time, as
/// a real model does), round 2 answers in text.
fn script(fake: &lambent_fake_provider::FakeProvider) {
    let calls = Arc::new(AtomicUsize::new(0));
    fake.set_responder(move |request| {
        let (i, _) = round_of(request);
        let n = calls.fetch_add(1, Ordering::SeqCst);
        let reply = if request.tool_results().is_empty() {
            Reply::tool_calls([
                FakeToolCall::new(
                    format!("toolu_t{i}_n{n}_search"),
                    "search",
                    json!({"q": format!("turn {i}")}).to_string(),
                ),
                FakeToolCall::new(
                    format!("toolu_t{i}_n{n}_fetch"),
                    "fetch",
                    json!({"url": format!("https://example.com/{i}")}).to_string(),
                ),
            ])
            .first_byte_delay(FIRST_ROUND_STAGGER * i as u32)
            .usage(FakeUsage {
                input: 100 + i as u64,
                output: 20,
                ..FakeUsage::default()
            })
        } else {
            let delay = if i == 0 {
                Duration::ZERO
            } else {
                FINAL_CHUNK_DELAY
            };
            Reply::text(&final_text(i))
                .chunk_delay(delay)
                .usage(FakeUsage {
                    input: 300 + i as u64,
                    output: 30,
                    ..FakeUsage::default()
                })
        };
        Some(reply)
    });
}

/// A turn as the test follows it.
struct Turn {
    session: String,
    id: String,
}

/// What the store held for a turn when the process died.
#[derive(Debug, Default)]
struct AtKill {
    status: String,
    /// Its stored replies.
    replies: usize,
    /// The tool calls whose results were stored.
    answered: HashSet<String>,
}

/// Reads what the store held for each turn, while no process runs.
async fn stored_at_kill(dir: &Path, turns: &[Turn]) -> Vec<AtKill> {
    let state = lambent_boot::embedded(dir, lambent_app::config::Config::default()).unwrap();
    let store = state.store.as_ref();
    let mut found = Vec::new();
    for turn in turns {
        let record = lambent_store::turns::get(store, &turn.session, &turn.id)
            .await
            .unwrap()
            .unwrap();
        let journal: Vec<Message> = lambent_store::messages::of_turn(
            store,
            &turn.session,
            &turn.id,
            &record.first_message_id,
        )
        .await
        .unwrap();
        found.push(AtKill {
            status: record.status.as_str().to_owned(),
            replies: journal
                .iter()
                .filter(|m| m.role == MessageRole::Assistant)
                .count(),
            answered: journal
                .iter()
                .filter_map(|m| m.tool_call_id.clone())
                .collect(),
        });
    }
    found
}

/// Whether the call ledger is empty and nothing is reserved beyond what
/// was spent; read from another `State` on the data directory.
async fn nothing_reserved(dir: &Path, user_id: &str) -> Result<(), String> {
    let state = lambent_boot::embedded(dir, lambent_app::config::Config::default()).unwrap();
    let store = state.store.as_ref();
    for shard in 0..lambent_store::ledger::SHARDS {
        let left = store
            .query(Query::partition(format!("LEDGER#{shard}")).limit(10))
            .await
            .unwrap();
        if !left.items.is_empty() {
            return Err(format!("ledger entries left: {:?}", left.items));
        }
    }
    let month = lambent_core::time::month_of(&lambent_core::time::today()).to_owned();
    let budget = store
        .get(&lambent_store::budgets::month_key(user_id, &month))
        .await
        .unwrap()
        .unwrap();
    let committed = budget.get_decimal("committed_usd").unwrap_or_default();
    let spent = budget.get_decimal("spent_usd").unwrap_or_default();
    if committed.normalize() != spent.normalize() {
        return Err(format!("committed {committed} != spent {spent}"));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_turn_the_background_turns_finish_without_repeating_a_round_a_tool_call_or_a_charge(
) {
    let dir = tempfile::Builder::new()
        .prefix("lambent-turn-crash-")
        .tempdir()
        .unwrap();
    let port = lambent_testkit::emulator::free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut process = serve(&addr, dir.path());
    let w = ChatWorld::seed(
        TestApp::attached(process.addr, copy_admin_key(dir.path())),
        "anthropic",
    )
    .await;
    w.set_monthly_budget("1000").await;
    let tools = ToolServer::start().await.unwrap();
    tools.set_default(SEARCH, ToolReply::echo().delay(SEARCH_DELAY));
    tools.set_default(FETCH, ToolReply::echo().delay(FETCH_DELAY));
    let (status, agent) = w
        .call(
            Method::POST,
            "/v1/agents",
            Some(json!({
                "name": "researcher",
                "provider_id": w.provider_id,
                "model": "fake-anthropic",
                "system_prompt": "Use the tools.",
                "max_tokens": 100,
                "max_tool_rounds": 4,
                "tools": [
                    tool("search", tools.url(SEARCH), json!({"type": "object", "properties": {"q": {"type": "string"}}})),
                    tool("fetch", tools.url(FETCH), json!({"type": "object", "properties": {"url": {"type": "string"}}})),
                ],
            })),
        )
        .await;
    assert_eq!(status, 201, "{agent}");
    let agent_id = agent["id"].as_str().unwrap().to_owned();
    script(&w.fake);

    // Ten background turns, one per session.
    let mut turns = Vec::new();
    for i in 0..TURNS {
        let (status, session) = w
            .call(
                Method::POST,
                "/v1/sessions",
                Some(json!({"agent_id": agent_id})),
            )
            .await;
        assert_eq!(status, 201, "{session}");
        let session = session["id"].as_str().unwrap().to_owned();
        let (status, accepted) = w
            .call(
                Method::POST,
                &format!("/v1/sessions/{session}/messages"),
                Some(json!({"content": said(i), "background": true})),
            )
            .await;
        assert_eq!(status, 202, "{accepted}");
        let id = accepted["message_id"].as_str().unwrap().to_owned();
        turns.push(Turn { session, id });
    }

    // The kill lands when turn 0 is done, a second turn is on its final
    // round and tool requests are in flight; the later turns are still
    // waiting for their first reply.
    eventually("the turns mid-way", Duration::from_secs(30), || async {
        let second_rounds = w
            .fake
            .requests()
            .iter()
            .filter(|r| round_of(r).1 == 2)
            .count();
        if second_rounds < 2 || tools.in_flight() == 0 {
            return None;
        }
        let (_, first) = w
            .call(
                Method::GET,
                &format!("/v1/sessions/{}/messages/{}", turns[0].session, turns[0].id),
                None,
            )
            .await;
        (first["status"] == "complete").then_some(())
    })
    .await;
    process.stop(); // SIGKILL
    let killed = Instant::now();
    let at_kill = stored_at_kill(dir.path(), &turns).await;
    // Nothing reaches the fake servers from a dead process: what they
    // recorded so far was asked before the kill.
    let asked_before = w.fake.requests().len();
    let sent_before = tools.requests().len();
    let unfinished = at_kill.iter().filter(|t| t.status == "running").count();
    assert!(
        unfinished >= TURNS / 2,
        "the kill came too late: {at_kill:?}"
    );

    process = serve(&addr, dir.path());
    let views = eventually(
        "every turn final after the restart",
        Duration::from_secs(45),
        || async {
            let mut views = Vec::new();
            for turn in &turns {
                let (status, view) = w
                    .call(
                        Method::GET,
                        &format!("/v1/sessions/{}/messages/{}", turn.session, turn.id),
                        None,
                    )
                    .await;
                assert_eq!(status, 200, "{view}");
                if view["status"] == "running" {
                    return None;
                }
                views.push(view);
            }
            Some(views)
        },
    )
    .await;
    let recovered = killed.elapsed();
    for view in &views {
        assert_eq!(view["status"], "complete", "{view}");
        assert_eq!(view["turn"]["status"], "complete", "{view}");
        assert_eq!(view["turn"]["stop_reason"], "end_turn", "{view}");
    }

    // Each history: the user's message, the reply calling both tools, both
    // results, the final reply; all of the turn.
    let mut replies_cost = Decimal::ZERO;
    let mut calls_of_turn: Vec<HashMap<String, String>> = Vec::new();
    let mut untold: Vec<String> = Vec::new();
    for (i, (turn, view)) in turns.iter().zip(&views).enumerate() {
        let history = w.history(&turn.session, 100, "asc").await;
        let roles: Vec<&str> = history
            .iter()
            .map(|m| m["role"].as_str().unwrap())
            .collect();
        assert_eq!(
            roles,
            ["user", "assistant", "tool", "tool", "assistant"],
            "turn {i}: {history:#?}"
        );
        for message in &history {
            assert_eq!(message["turn_id"], turn.id.as_str(), "{message}");
            assert_eq!(message["status"], "complete", "{message}");
        }
        assert_eq!(history[0]["content"], said(i).as_str());
        let calls: HashMap<String, String> = history[1]["tool_calls"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["id"].as_str().unwrap().to_owned(),
                    c["name"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        assert_eq!(calls.len(), 2, "{}", history[1]);
        let answered: HashSet<String> = history[2..4]
            .iter()
            .map(|m| {
                assert_eq!(m["is_error"], false, "{m}");
                let id = m["tool_call_id"].as_str().unwrap().to_owned();
                let input = match calls[&id].as_str() {
                    "search" => json!({"q": format!("turn {i}")}),
                    _ => json!({"url": format!("https://example.com/{i}")}),
                };
                let content: Value = serde_json::from_str(m["content"].as_str().unwrap())
                    .unwrap_or_else(|_| panic!("{m}"));
                assert_eq!(content, json!({ "echo": input }));
                id
            })
            .collect();
        assert_eq!(
            answered,
            calls.keys().cloned().collect::<HashSet<_>>(),
            "turn {i}"
        );
        assert_eq!(history[4]["content"], final_text(i).as_str());
        assert_eq!(history[4]["stop_reason"], "end_turn");
        let turn_cost: Decimal = [&history[1], &history[4]]
            .iter()
            .map(|m| decimal(&m["cost_usd"]))
            .sum();
        assert!(turn_cost > Decimal::ZERO);
        assert_eq!(
            decimal(&view["turn"]["cost_usd"]).normalize(),
            turn_cost.normalize(),
            "turn {i}: the turn's cost is its replies'"
        );
        assert_eq!(view["turn"]["model_calls"], 2, "{view}");
        replies_cost += turn_cost;

        // Its events: numbered 0, 1, 2… without a gap or a repeat, one
        // `done` (the last), which tells the same ending.
        let events = w.turn_events(&turn.session, &turn.id, None).await;
        let ids: Vec<u64> = events
            .iter()
            .map(|e| e.id.as_deref().unwrap().parse().unwrap())
            .collect();
        assert_eq!(
            ids,
            (0..events.len() as u64).collect::<Vec<_>>(),
            "turn {i}: {events:#?}"
        );
        let names: Vec<&str> = events.iter().filter_map(|e| e.event.as_deref()).collect();
        assert_eq!(names.last(), Some(&"done"), "turn {i}: {names:?}");
        assert_eq!(names.iter().filter(|n| **n == "done").count(), 1);
        let done = events.last().unwrap().json();
        assert_eq!(done["status"], "complete", "{done}");
        assert_eq!(done["stop_reason"], "end_turn", "{done}");
        assert_eq!(done["model_calls"], 2, "{done}");
        assert_eq!(
            decimal(&done["cost_usd"]).normalize(),
            turn_cost.normalize()
        );
        // The replay tells what the turn did, once: each stored reply's
        // `message_start` and `message_end`, its `tool_call`s, and a
        // `tool_result` for each stored result (checked last, below).
        let told = |name: &str, key: &str, value: &str| {
            events
                .iter()
                .filter(|e| e.event.as_deref() == Some(name) && e.json()[key] == value)
                .count()
        };
        for reply in [&history[1], &history[4]] {
            let id = reply["id"].as_str().unwrap();
            for name in ["message_start", "message_end"] {
                if told(name, "message_id", id) != 1 {
                    untold.push(format!("turn {i}: `{name}` of stored reply {id}"));
                }
            }
        }
        for id in calls.keys() {
            if told("tool_call", "id", id) != 1 {
                untold.push(format!("turn {i}: `tool_call` {id}"));
            }
            if told("tool_result", "tool_call_id", id) != 1 {
                untold.push(format!("turn {i}: `tool_result` of stored result {id}"));
            }
        }
        calls_of_turn.push(calls);
    }

    // Model rounds. A round's requests carry the same turn and the same
    // number of earlier replies. Made twice only if the first was made
    // before the kill and its reply was not stored when the process died
    // (it was in flight): then the second, after the restart, sends the
    // very same conversation.
    let asked = w.fake.requests();
    let mut rounds: BTreeMap<(usize, usize), Vec<usize>> = BTreeMap::new();
    for (at, request) in asked.iter().enumerate() {
        assert_eq!(request.path, "/v1/messages");
        rounds.entry(round_of(request)).or_default().push(at);
    }
    let mut repeated_rounds = 0;
    for (i, kill) in at_kill.iter().enumerate() {
        for round in 1..=2 {
            let made = rounds.remove(&(i, round)).unwrap_or_default();
            let stored_at_kill = kill.replies >= round;
            match made.as_slice() {
                [once] => assert!(
                    *once >= asked_before || stored_at_kill,
                    "turn {i} round {round}: in flight at the kill and never made again"
                ),
                [first, again] => {
                    assert!(
                        *first < asked_before && *again >= asked_before && !stored_at_kill,
                        "turn {i} round {round} made twice though its reply was stored \
                         (requests #{first} and #{again}, {asked_before} before the kill)"
                    );
                    assert_eq!(
                        asked[*first].body["messages"], asked[*again].body["messages"],
                        "turn {i} round {round}: made again with another conversation"
                    );
                    repeated_rounds += 1;
                }
                _ => panic!("turn {i} round {round}: made {} times", made.len()),
            }
        }
    }
    assert!(rounds.is_empty(), "rounds no turn has: {rounds:?}");

    // Tool calls. Each call goes out with its ID as the `Idempotency-Key`
    // and the tool's header, for a reply that is stored; twice only if its
    // result was not stored at the kill (the tool may have answered, or
    // not), once before and once after.
    let sent = tools.requests();
    let stored_calls: HashMap<&String, usize> = calls_of_turn
        .iter()
        .enumerate()
        .flat_map(|(i, calls)| calls.keys().map(move |id| (id, i)))
        .collect();
    let mut by_id: HashMap<String, Vec<usize>> = HashMap::new();
    for (at, request) in sent.iter().enumerate() {
        let id = request.tool_call_id().unwrap().to_owned();
        assert_eq!(request.idempotency_key.as_deref(), Some(id.as_str()));
        assert_eq!(request.header(TOOL_HEADER.0), Some(TOOL_HEADER.1));
        let Some(&i) = stored_calls.get(&id) else {
            panic!("a tool call of no stored reply was sent: {request:?}");
        };
        assert_eq!(request.session_id(), Some(turns[i].session.as_str()));
        let path = match calls_of_turn[i][&id].as_str() {
            "search" => SEARCH,
            _ => FETCH,
        };
        assert_eq!(request.path, path);
        by_id.entry(id).or_default().push(at);
    }
    let mut resent_tools = 0;
    for (id, &i) in &stored_calls {
        let answered_at_kill = at_kill[i].answered.contains(*id);
        match by_id.get(*id).map(Vec::as_slice).unwrap_or_default() {
            [once] => assert!(
                *once >= sent_before || answered_at_kill,
                "{id}: sent before the kill, no result stored, never sent again"
            ),
            [first, again] => {
                assert!(
                    *first < sent_before && *again >= sent_before && !answered_at_kill,
                    "{id} sent twice though its result was stored \
                     (requests #{first} and #{again}, {sent_before} before the kill)"
                );
                resent_tools += 1;
            }
            made => panic!("{id}: sent {} times", made.len()),
        }
    }

    // The kill did land mid-way: a reply and a tool call were cut off.
    assert!(
        repeated_rounds >= 1,
        "no model round was in flight at the kill"
    );
    assert!(resent_tools >= 1, "no tool call was in flight at the kill");

    // Billed once: the replies are the usage total, and once the sweeper
    // has closed the calls that died with the process (their reservations
    // held until LAMBENT_SWEEP_STALE_SECS), nothing more is reserved.
    let (status, usage) = w.call(Method::GET, "/v1/usage", None).await;
    assert_eq!(status, 200, "{usage}");
    let total = decimal(&usage["total"]["cost_usd"]);
    assert_eq!(
        replies_cost.normalize(),
        total.normalize(),
        "the replies cost {replies_cost}, the usage says {total}"
    );
    let mut reserved = Ok(());
    for _ in 0..100 {
        reserved = nothing_reserved(dir.path(), &w.user_id).await;
        if reserved.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    reserved.unwrap();
    let (_, usage) = w.call(Method::GET, "/v1/usage", None).await;
    assert_eq!(
        decimal(&usage["total"]["cost_usd"]).normalize(),
        total.normalize()
    );
    // Every turn's events are stored as they happen: what the dead runner
    // did in its last moments (a reply, a tool result, stored in the
    // journal) is in the replay too.
    assert!(
        untold.is_empty(),
        "everything else holds, but the replayed events miss what the turns did \
         ({} missing): {untold:#?}",
        untold.len()
    );
    println!(
        "turn crash: {unfinished} turns unfinished at the kill, all final {recovered:?} after it; \
         {repeated_rounds} model rounds and {resent_tools} tool calls made again; {} model \
         calls, {} tool requests",
        asked.len(),
        sent.len()
    );
    drop(process);
}
