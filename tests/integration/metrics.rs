//! Metrics of real model calls (issue 16) against the fake provider: what
//! `lambent serve` shows on `GET /metrics` (Prometheus text, admins only),
//! and the CloudWatch EMF lines a Lambda function would write, each read
//! back as its consumer reads it and compared with `/v1/usage`.

use std::collections::BTreeMap;
use std::time::Duration;

use lambent_app::config::Config;
use lambent_fake_provider::{FakeUsage, Reply};
use lambent_testkit::app::{spawn_app_on_state, TestApp};
use lambent_testkit::chat::{ChatWorld, JsonData};
use lambent_tool_server::{ToolReply, ToolServer};
use reqwest::Method;
use rust_decimal::Decimal;
use serde_json::{json, Value};

const MODEL: &str = "fake-anthropic";

fn usage(input: u64, output: u64, cache_read: u64, cache_write_5m: u64) -> FakeUsage {
    FakeUsage {
        input,
        output,
        cache_read,
        cache_write_5m,
        ..FakeUsage::default()
    }
}

/// One sample of the text: its labels, and its value as written.
type Samples = BTreeMap<(String, BTreeMap<String, String>), String>;

/// Parses Prometheus text exposition format 0.0.4 as a scraper does:
/// `# HELP` and `# TYPE` before a family's samples, each sample
/// `name{label="value",...} value` with `\\`, `\"` and `\n` escaped.
fn parse_prometheus(text: &str) -> Samples {
    let mut samples = Samples::new();
    let mut typed: BTreeMap<String, String> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(
                ["counter", "histogram", "gauge", "summary"].contains(&kind),
                "{line}"
            );
            assert!(kind != "counter" || name.ends_with("_total"), "{line}");
            assert!(typed.insert(name.to_owned(), kind.to_owned()).is_none());
            continue;
        }
        if line.starts_with("# HELP ") || line.is_empty() {
            continue;
        }
        let name_end = line.find(['{', ' ']).unwrap();
        let name = &line[..name_end];
        let mut labels = BTreeMap::new();
        let mut rest = &line[name_end..];
        if let Some(inner) = rest.strip_prefix('{') {
            let mut chars = inner.char_indices();
            let mut key = String::new();
            loop {
                let (_, c) = chars.next().unwrap();
                match c {
                    '}' => break,
                    ',' => continue,
                    '=' => {
                        assert_eq!(chars.next().unwrap().1, '"', "{line}");
                        let mut value = String::new();
                        loop {
                            match chars.next().unwrap().1 {
                                '\\' => value.push(match chars.next().unwrap().1 {
                                    'n' => '\n',
                                    other => other,
                                }),
                                '"' => break,
                                c => value.push(c),
                            }
                        }
                        labels.insert(std::mem::take(&mut key), value);
                    }
                    c => key.push(c),
                }
            }
            let consumed = chars.next().map_or(inner.len(), |(at, _)| at);
            rest = &inner[consumed..];
        }
        let value = rest.trim();
        assert!(value.parse::<f64>().is_ok(), "{line}");
        // A sample belongs to a family declared before it.
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| typed.get(*f).is_some_and(|k| k == "histogram"))
            })
            .unwrap_or(name);
        assert!(typed.contains_key(family), "{name} has no # TYPE before it");
        assert!(
            samples
                .insert((name.to_owned(), labels), value.to_owned())
                .is_none(),
            "{line} twice"
        );
    }
    samples
}

fn sample<'a>(samples: &'a Samples, name: &str, labels: &[(&str, &str)]) -> &'a str {
    let labels: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    samples
        .get(&(name.to_owned(), labels.clone()))
        .unwrap_or_else(|| panic!("no {name}{labels:?}"))
}

fn model_labels() -> [(&'static str, &'static str); 2] {
    [("model", MODEL), ("provider_kind", "anthropic")]
}

/// The deployment's usage report (as the bootstrap admin).
async fn usage_total(app: &TestApp) -> Value {
    let (status, report) = app
        .call(Method::GET, "/v1/usage", &app.admin_key(), None)
        .await;
    assert_eq!(status, 200, "{report}");
    report["total"].clone()
}

fn decimal(s: &str) -> Decimal {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// The IDs and secrets of a world: none may appear in any metric.
fn identities(w: &ChatWorld, session: &str) -> Vec<String> {
    vec![
        w.user_id.clone(),
        w.key.clone(),
        w.agent_id.clone(),
        w.provider_id.clone(),
        session.to_owned(),
    ]
}

/// A world whose agent has the server tool `weather`; monthly limits are
/// read afresh on every call (no cache), so a new limit applies at once.
async fn tooled_world() -> (ChatWorld, ToolServer) {
    let w = ChatWorld::start_with("anthropic", |c| c.auth_cache = Duration::ZERO).await;
    let tools = ToolServer::start().await.unwrap();
    let weather = json!({
        "name": "weather",
        "description": "the weather",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        "http": {"url": tools.url("/weather"), "timeout_ms": 1000},
    });
    let (status, body) = w
        .call(
            Method::PATCH,
            &format!("/v1/agents/{}", w.agent_id),
            Some(json!({"tools": [weather]})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    (w, tools)
}

#[tokio::test]
async fn metrics_show_what_usage_reports_and_only_to_an_admin() {
    let (w, tools) = tooled_world().await;
    let session = w.session(json!({})).await;

    // A streamed turn of two model calls: the first calls the tool twice
    // (one answer fine, one a failure), the second answers.
    w.fake.push(
        Reply::text("Checking.")
            .with_tool_call("toolu_a", "weather", r#"{"city":"Oslo"}"#)
            .with_tool_call("toolu_b", "weather", r#"{"city":"Bergen"}"#)
            .usage(usage(100, 20, 40, 0)),
    );
    tools.push("/weather", ToolReply::json(json!({"temp_c": 3})));
    tools.push("/weather", ToolReply::status(500, "down"));
    w.fake
        .push(Reply::chunks(["It is ", "3 C."]).usage(usage(1234, 567, 10_000, 1_500)));
    let stream = w.chat(&session, "Weather up north?").await;
    assert_eq!(stream.status, 200, "{}", stream.raw);
    assert_eq!(
        stream.named("done")[0].json()["model_calls"],
        2,
        "{}",
        stream.raw
    );
    // A whole reply, then one the provider fails.
    w.fake.push(Reply::text("Whole.").usage(usage(7, 3, 0, 0)));
    let (status, body) = w.chat_whole(&session, "Again").await;
    assert_eq!(status, 200, "{body}");
    w.fake
        .push(Reply::http_error(500, "api_error", "the provider is down"));
    let (status, body) = w.chat_whole(&session, "And again").await;
    assert_ne!(status, 200, "{body}");
    // Past the monthly limit: refused before any provider call.
    w.set_monthly_budget("0.001").await;
    let requests = w.fake.requests().len();
    let (status, body) = w.chat_whole(&session, "Too dear").await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(w.fake.requests().len(), requests);

    // No key, then a member's key.
    let (status, body) = w.app.call(Method::GET, "/metrics", "", None).await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = w.call(Method::GET, "/metrics", None).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "forbidden");

    let response = w
        .app
        .request(Method::GET, "/metrics", &w.app.admin_key())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = response.text().await.unwrap();
    let samples = parse_prometheus(&text);

    let total = usage_total(&w.app).await;
    let labels = model_labels();
    let of = |name: &str| sample(&samples, name, &labels).to_owned();
    assert_eq!(total["calls"], 3, "{total}");
    assert_eq!(of("lambent_model_calls_total"), total["calls"].to_string());
    for tokens in [
        "input_tokens",
        "output_tokens",
        "cache_read_tokens",
        "cache_write_tokens",
    ] {
        assert_eq!(
            of(&format!("lambent_{tokens}_total")),
            total[tokens].to_string(),
            "{tokens}: {total}"
        );
    }
    assert_eq!(of("lambent_input_tokens_total"), "1341");
    // The cost: the same exact decimal, digit for digit.
    let cost = of("lambent_cost_usd_total");
    assert_eq!(decimal(&cost), decimal(total["cost_usd"].as_str().unwrap()));
    assert_eq!(cost, total["cost_usd"].as_str().unwrap());
    assert_eq!(of("lambent_provider_errors_total"), "1");
    assert_eq!(of("lambent_budget_refusals_total"), "1");
    assert_eq!(
        sample(&samples, "lambent_tool_calls_total", &[("outcome", "ok")]),
        "1"
    );
    assert_eq!(
        sample(
            &samples,
            "lambent_tool_calls_total",
            &[("outcome", "error")]
        ),
        "1"
    );
    assert_eq!(sample(&samples, "lambent_cold_starts_total", &[]), "1");

    // Latencies: one per answered call, in non-decreasing buckets that end
    // with all of them; a first token for each streamed one at least.
    for (histogram, at_least) in [
        ("lambent_provider_latency_seconds", 3),
        ("lambent_time_to_first_token_seconds", 2),
    ] {
        let count: u64 = of(&format!("{histogram}_count")).parse().unwrap();
        assert!(count >= at_least, "{histogram}: {count}");
        let mut buckets: Vec<(f64, u64)> = samples
            .iter()
            .filter(|((name, l), _)| {
                *name == format!("{histogram}_bucket")
                    && l.get("model").map(String::as_str) == Some(MODEL)
            })
            .map(|((_, l), v)| {
                let le = l["le"].replace("+Inf", "inf").parse::<f64>().unwrap();
                (le, v.parse().unwrap())
            })
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        assert!(buckets.windows(2).all(|b| b[0].1 <= b[1].1), "{buckets:?}");
        assert_eq!(buckets.last().unwrap(), &(f64::INFINITY, count));
        let sum: f64 = of(&format!("{histogram}_sum")).parse().unwrap();
        assert!(sum > 0.0);
    }

    for id in identities(&w, &session) {
        assert!(!text.contains(&id), "{id} is in the metrics");
    }
    for detail in ["toolu_", "weather", "Oslo"] {
        assert!(!text.contains(detail), "{detail} is in the metrics");
    }
}

/// What CloudWatch extracts from EMF lines: (dimensions, metric) -> values.
type Extracted = BTreeMap<(BTreeMap<String, String>, String), Vec<f64>>;

/// Reads `lines` as CloudWatch Logs does: each a JSON object whose `_aws`
/// names the metrics (at most 100 a directive) and their dimensions (at
/// most 30 a set), each a top-level member (a number, or at most 100
/// numbers; a dimension a string).
fn extract_emf(lines: &str, now_ms: i64) -> Extracted {
    let mut all = Extracted::new();
    for line in lines.lines() {
        let doc: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        let aws = &doc["_aws"];
        let stamp = aws["Timestamp"].as_i64().expect("epoch milliseconds");
        assert!((stamp - now_ms).abs() < 60_000, "{stamp} vs {now_ms}");
        for directive in aws["CloudWatchMetrics"].as_array().unwrap() {
            assert_eq!(directive["Namespace"], "Lambent");
            let metrics = directive["Metrics"].as_array().unwrap();
            assert!(metrics.len() <= 100);
            for set in directive["Dimensions"].as_array().unwrap() {
                let keys = set.as_array().unwrap();
                assert!(keys.len() <= 30);
                let dims: BTreeMap<String, String> = keys
                    .iter()
                    .map(|k| {
                        let k = k.as_str().unwrap();
                        (
                            k.to_owned(),
                            doc[k].as_str().expect("a string dimension").to_owned(),
                        )
                    })
                    .collect();
                for m in metrics {
                    let name = m["Name"].as_str().unwrap();
                    let values = match &doc[name] {
                        Value::Number(n) => vec![n.as_f64().unwrap()],
                        Value::Array(a) => {
                            assert!(a.len() <= 100);
                            a.iter().map(|v| v.as_f64().unwrap()).collect()
                        }
                        other => panic!("{name}: {other}"),
                    };
                    all.entry((dims.clone(), name.to_owned()))
                        .or_default()
                        .extend(values);
                }
            }
        }
    }
    all
}

#[tokio::test]
async fn emf_lines_of_real_calls_read_back_as_usage_reports() {
    // The state of a Lambda function (its name set), on embedded storage.
    let dir = tempfile::tempdir().unwrap();
    lambent_local::admin_key::ensure_embedded_signing_key(dir.path()).unwrap();
    let config = Config {
        allow_private_provider_urls: true,
        lambda_function: Some("lambent-chat".into()),
        ..Config::default()
    };
    let state = lambent_boot::embedded(dir.path(), config).unwrap();
    let w = ChatWorld::seed(spawn_app_on_state(state.clone()).await, "anthropic").await;
    let session = w.session(json!({})).await;
    w.fake
        .push(Reply::chunks(["Hel", "lo."]).usage(usage(1234, 567, 10_000, 1_500)));
    let stream = w.chat(&session, "Hi").await;
    assert_eq!(stream.status, 200, "{}", stream.raw);
    w.fake.push(Reply::text("Whole.").usage(usage(7, 3, 0, 0)));
    let (status, body) = w.chat_whole(&session, "Again").await;
    assert_eq!(status, 200, "{body}");

    // What the Lambda glue does at the end of an invocation.
    let mut out = Vec::new();
    state.flush_emf(&mut out).unwrap();
    let lines = String::from_utf8(out).unwrap();
    let now_ms = lambent_core::time::now_epoch_millis();
    let all = extract_emf(&lines, now_ms);
    let dims: BTreeMap<String, String> = [("Model", MODEL), ("ProviderKind", "anthropic")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let of = |name: &str| {
        all.get(&(dims.clone(), name.to_owned()))
            .unwrap_or_else(|| panic!("no {name} in {lines}"))
            .clone()
    };
    let total = usage_total(&w.app).await;
    let number = |v: &Value| v.as_u64().unwrap() as f64;
    assert_eq!(of("ModelCalls"), [number(&total["calls"])]);
    assert_eq!(of("InputTokens"), [number(&total["input_tokens"])]);
    assert_eq!(of("OutputTokens"), [number(&total["output_tokens"])]);
    assert_eq!(of("CacheReadTokens"), [number(&total["cache_read_tokens"])]);
    assert_eq!(
        of("CacheWriteTokens"),
        [number(&total["cache_write_tokens"])]
    );
    assert!(!of("ProviderLatency").is_empty());
    assert!(!of("TimeToFirstToken").is_empty());
    let function: BTreeMap<String, String> =
        [("Function".to_owned(), "lambent-chat".to_owned())].into();
    assert_eq!(all[&(function, "ColdStarts".to_owned())], [1.0]);
    // The cost as written: the report's exact decimal, not a float's.
    let token = lines
        .lines()
        .find_map(|l| {
            let at = l.find("\"CostUSD\":")? + "\"CostUSD\":".len();
            let rest = &l[at..];
            Some(rest[..rest.find([',', '}'])?].to_owned())
        })
        .expect("a CostUSD");
    assert_eq!(
        decimal(&token),
        decimal(total["cost_usd"].as_str().unwrap())
    );
    for id in identities(&w, &session) {
        assert!(!lines.contains(&id), "{id} is in the EMF lines");
    }

    // Flushed once: nothing new, nothing written; `/metrics` keeps the totals.
    let mut again = Vec::new();
    state.flush_emf(&mut again).unwrap();
    assert!(again.is_empty(), "{}", String::from_utf8_lossy(&again));
    let (status, text) = w
        .app
        .call(Method::GET, "/metrics", &w.app.admin_key(), None)
        .await;
    assert_eq!(status, 200);
    let samples = parse_prometheus(text.as_str().unwrap());
    assert_eq!(
        sample(&samples, "lambent_model_calls_total", &model_labels()),
        total["calls"].to_string()
    );
}
