//! CloudWatch Embedded Metric Format: what a Lambda function counted since
//! its last flush, as JSON lines on stdout that CloudWatch Logs turns into
//! metrics in the namespace [`NAMESPACE`]. One line per series (model and
//! provider kind), one for the cold start, one per tool-call outcome; only
//! what happened is written, so a flush after nothing writes nothing.
//!
//! The lines keep the specification's limits: at most [`MAX_METRICS`]
//! metrics and, per metric, [`MAX_VALUES`] values in a line (more are split
//! across lines), at most [`MAX_DIMENSIONS`] dimensions in a set. A cost is
//! written as its exact decimal digits, never through a float.

use std::fmt::Write as _;
use std::io;

use rust_decimal::Decimal;

use super::{Drained, Pending, ProcessCounts};

/// The CloudWatch namespace of every metric.
pub const NAMESPACE: &str = "Lambent";
/// Metric definitions in one directive (EMF specification).
pub const MAX_METRICS: usize = 100;
/// Values of one metric in one line (EMF specification).
pub const MAX_VALUES: usize = 100;
/// Keys in one dimension set (EMF specification).
pub const MAX_DIMENSIONS: usize = 30;

/// One metric's value in a line.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Count(u64),
    /// Exact digits (USD).
    Exact(Decimal),
    /// Durations in microseconds, written as milliseconds.
    Millis(Vec<u64>),
}

#[derive(Debug, Clone, PartialEq)]
struct Metric {
    name: &'static str,
    unit: &'static str,
    value: Value,
}

/// Metrics that share their dimensions; split into as many EMF lines as
/// the limits need.
#[derive(Debug, Clone, PartialEq)]
struct Line {
    dimensions: Vec<(&'static str, String)>,
    metrics: Vec<Metric>,
}

fn count(name: &'static str, n: u64) -> Metric {
    Metric {
        name,
        unit: "Count",
        value: Value::Count(n),
    }
}

/// Writes `drained` as EMF lines stamped `timestamp_ms` (epoch
/// milliseconds), with `function` as the `Function` dimension of the
/// process's own metrics.
pub fn write(
    drained: &Drained,
    function: &str,
    timestamp_ms: i64,
    out: &mut impl io::Write,
) -> io::Result<()> {
    for line in lines(drained, function, timestamp_ms) {
        out.write_all(line.as_bytes())?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

/// The EMF lines of `drained` (see [`write`]), without their newlines.
pub fn lines(drained: &Drained, function: &str, timestamp_ms: i64) -> Vec<String> {
    let mut logical: Vec<Line> = drained.series.iter().map(series_line).collect();
    logical.extend(process_lines(&drained.process, function));
    logical
        .into_iter()
        .filter(|line| !line.metrics.is_empty())
        .flat_map(split)
        .map(|line| render(&line, timestamp_ms))
        .collect()
}

fn series_line(s: &Pending) -> Line {
    let c = &s.counts;
    let mut metrics = Vec::new();
    if c.calls > 0 {
        metrics.extend([
            count("ModelCalls", c.calls),
            count("InputTokens", c.input_tokens),
            count("OutputTokens", c.output_tokens),
            count("CacheReadTokens", c.cache_read_tokens),
            count("CacheWriteTokens", c.cache_write_tokens),
            Metric {
                name: "CostUSD",
                // USD is no CloudWatch unit.
                unit: "None",
                value: Value::Exact(c.cost_usd),
            },
        ]);
    }
    if c.provider_errors > 0 {
        metrics.push(count("ProviderErrors", c.provider_errors));
    }
    if c.budget_refusals > 0 {
        metrics.push(count("BudgetRefusals", c.budget_refusals));
    }
    for (name, values) in [
        ("ProviderLatency", &s.latency_us),
        ("TimeToFirstToken", &s.first_token_us),
    ] {
        if !values.is_empty() {
            metrics.push(Metric {
                name,
                unit: "Milliseconds",
                value: Value::Millis(values.clone()),
            });
        }
    }
    Line {
        dimensions: vec![
            ("Model", s.model.clone()),
            ("ProviderKind", s.kind.as_str().to_owned()),
        ],
        metrics,
    }
}

fn process_lines(p: &ProcessCounts, function: &str) -> Vec<Line> {
    let mut lines = Vec::new();
    if p.cold_starts > 0 {
        lines.push(Line {
            dimensions: vec![("Function", function.to_owned())],
            metrics: vec![count("ColdStarts", p.cold_starts)],
        });
    }
    if let Some(behind) = p.sweep_behind {
        lines.push(Line {
            dimensions: vec![("Function", function.to_owned())],
            metrics: vec![count("SweepBehind", behind)],
        });
    }
    for (outcome, n) in [("ok", p.tool_calls_ok), ("error", p.tool_calls_error)] {
        if n > 0 {
            lines.push(Line {
                dimensions: vec![
                    ("Function", function.to_owned()),
                    ("Outcome", outcome.to_owned()),
                ],
                metrics: vec![count("ToolCalls", n)],
            });
        }
    }
    lines
}

/// `line` within the limits: values past [`MAX_VALUES`] go to further
/// lines (the single values stay in the first), then each line's metrics in
/// groups of at most [`MAX_METRICS`]. Every value is written once.
fn split(line: Line) -> Vec<Line> {
    let rounds = line
        .metrics
        .iter()
        .map(|m| match &m.value {
            Value::Millis(values) => values.len().div_ceil(MAX_VALUES),
            _ => 1,
        })
        .max()
        .unwrap_or(1);
    let mut out = Vec::new();
    for round in 0..rounds {
        let metrics: Vec<Metric> = line
            .metrics
            .iter()
            .filter_map(|m| match &m.value {
                Value::Millis(values) => {
                    let chunk = values.chunks(MAX_VALUES).nth(round)?;
                    Some(Metric {
                        value: Value::Millis(chunk.to_vec()),
                        ..m.clone()
                    })
                }
                _ => (round == 0).then(|| m.clone()),
            })
            .collect();
        for group in metrics.chunks(MAX_METRICS) {
            out.push(Line {
                dimensions: line.dimensions.clone(),
                metrics: group.to_vec(),
            });
        }
    }
    out
}

/// A JSON string.
fn quoted(s: &str) -> String {
    // Serialising a string cannot fail.
    serde_json::to_string(s).unwrap_or_default()
}

fn render(line: &Line, timestamp_ms: i64) -> String {
    let mut out = String::with_capacity(512);
    let dimension_keys: Vec<String> = line.dimensions.iter().map(|(k, _)| quoted(k)).collect();
    let definitions: Vec<String> = line
        .metrics
        .iter()
        .map(|m| {
            format!(
                "{{\"Name\":{},\"Unit\":{}}}",
                quoted(m.name),
                quoted(m.unit)
            )
        })
        .collect();
    let _ = write!(
        out,
        "{{\"_aws\":{{\"Timestamp\":{timestamp_ms},\"CloudWatchMetrics\":[{{\"Namespace\":{},\
         \"Dimensions\":[[{}]],\"Metrics\":[{}]}}]}}",
        quoted(NAMESPACE),
        dimension_keys.join(","),
        definitions.join(","),
    );
    for (key, value) in &line.dimensions {
        let _ = write!(out, ",{}:{}", quoted(key), quoted(value));
    }
    for m in &line.metrics {
        let _ = write!(out, ",{}:", quoted(m.name));
        match &m.value {
            Value::Count(n) => {
                let _ = write!(out, "{n}");
            }
            // Decimal's Display is plain digits (no exponent): a JSON number.
            Value::Exact(d) => {
                let _ = write!(out, "{}", d.normalize());
            }
            Value::Millis(values) => {
                out.push('[');
                for (i, us) in values.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{}", millis(*us));
                }
                out.push(']');
            }
        }
    }
    out.push('}');
    out
}

/// Microseconds as milliseconds, exactly.
fn millis(us: u64) -> Decimal {
    Decimal::from_i128_with_scale(i128::from(us), 3).normalize()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Event, Metrics};
    use lambent_core::chat::Usage;
    use lambent_core::provider::ProviderKind;
    use serde_json::Value as Json;
    use std::collections::BTreeMap;
    use std::time::Duration;

    const NOW_MS: i64 = 1_767_225_600_123;
    const UNITS: &[&str] = &["Count", "None", "Milliseconds"];

    /// What CloudWatch would extract from one line, checked as its
    /// specification says: (dimensions, metric name) -> values.
    type Extracted = BTreeMap<(Vec<(String, String)>, String), Vec<f64>>;

    fn extract(line: &str, into: &mut Extracted) {
        let doc: Json = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        let root = doc.as_object().expect("an object");
        let aws = root["_aws"].as_object().expect("_aws is an object");
        assert_eq!(aws.len(), 2, "only Timestamp and CloudWatchMetrics: {line}");
        let stamp = aws["Timestamp"].as_i64().expect("an integer timestamp");
        assert_eq!(stamp, NOW_MS, "epoch milliseconds");
        let directives = aws["CloudWatchMetrics"].as_array().expect("an array");
        assert!(!directives.is_empty());
        for directive in directives {
            assert_eq!(directive["Namespace"], NAMESPACE);
            let sets = directive["Dimensions"].as_array().expect("dimension sets");
            assert!(!sets.is_empty(), "at least one dimension set");
            let metrics = directive["Metrics"].as_array().expect("metrics");
            assert!(metrics.len() <= MAX_METRICS, "{} metrics", metrics.len());
            for set in sets {
                let keys = set.as_array().expect("a dimension set");
                assert!(keys.len() <= MAX_DIMENSIONS);
                let dims: Vec<(String, String)> = keys
                    .iter()
                    .map(|k| {
                        let k = k.as_str().expect("a dimension key");
                        let v = root[k].as_str().unwrap_or_else(|| panic!("{k}: no string"));
                        assert!(!v.is_empty() && v.chars().count() <= 1024);
                        (k.to_owned(), v.to_owned())
                    })
                    .collect();
                for m in metrics {
                    let name = m["Name"].as_str().expect("a name");
                    assert!(UNITS.contains(&m["Unit"].as_str().expect("a unit")));
                    let values = match &root[name] {
                        Json::Number(n) => vec![n.as_f64().expect("a number")],
                        Json::Array(a) => {
                            assert!(!a.is_empty() && a.len() <= MAX_VALUES, "{}", a.len());
                            a.iter().map(|v| v.as_f64().expect("numbers")).collect()
                        }
                        other => panic!("{name}: {other}"),
                    };
                    into.entry((dims.clone(), name.to_owned()))
                        .or_default()
                        .extend(values);
                }
            }
        }
    }

    fn extracted(lines: &[String]) -> Extracted {
        let mut all = Extracted::new();
        for line in lines {
            extract(line, &mut all);
        }
        all
    }

    fn model_dims(model: &str, kind: &str) -> Vec<(String, String)> {
        vec![
            ("Model".to_owned(), model.to_owned()),
            ("ProviderKind".to_owned(), kind.to_owned()),
        ]
    }

    /// The number token of `name` in a line, as written.
    fn token<'a>(line: &'a str, name: &str) -> Option<&'a str> {
        let at = line.find(&format!("\"{name}\":"))? + name.len() + 3;
        let rest = &line[at..];
        Some(&rest[..rest.find([',', '}'])?])
    }

    fn usage(input: u64, output: u64, cache_read: u64, cache_write: u64) -> Usage {
        Usage {
            input_tokens: input,
            output_tokens: output,
            cache_read_tokens: cache_read,
            cache_write_tokens: cache_write,
            ..Usage::default()
        }
    }

    #[test]
    fn lines_read_as_cloudwatch_reads_them() {
        let m = Metrics::new(true);
        m.cold_start();
        let costs = ["0.1", "0.2", "0.000001", "12.345678901234567"];
        let u = usage(1234, 567, 10, 20);
        for cost in costs {
            let cost_usd = cost.parse().unwrap();
            m.record(
                "claude-x",
                ProviderKind::Anthropic,
                Event::Billed {
                    usage: &u,
                    cost_usd,
                },
            );
        }
        m.record(
            "claude-x",
            ProviderKind::Anthropic,
            Event::Latency(Duration::from_micros(1_500_250)),
        );
        m.record(
            "claude-x",
            ProviderKind::Anthropic,
            Event::FirstToken(Duration::from_millis(42)),
        );
        m.record("gpt-y", ProviderKind::Openai, Event::ProviderFailed);
        m.record("gpt-y", ProviderKind::Openai, Event::BudgetRefused);
        m.tool_call(true);
        m.tool_call(true);
        m.tool_call(false);

        let written = lines(&m.drain(), "lambent-chat", NOW_MS);
        let all = extracted(&written);
        let claude = model_dims("claude-x", "anthropic");
        let of = |dims: &Vec<(String, String)>, name: &str| {
            all[&(dims.clone(), name.to_owned())].clone()
        };
        assert_eq!(of(&claude, "ModelCalls"), [4.0]);
        assert_eq!(of(&claude, "InputTokens"), [4.0 * 1234.0]);
        assert_eq!(of(&claude, "OutputTokens"), [4.0 * 567.0]);
        assert_eq!(of(&claude, "CacheReadTokens"), [40.0]);
        assert_eq!(of(&claude, "CacheWriteTokens"), [80.0]);
        assert_eq!(of(&claude, "ProviderLatency"), [1500.25]);
        assert_eq!(of(&claude, "TimeToFirstToken"), [42.0]);
        let gpt = model_dims("gpt-y", "openai");
        assert_eq!(of(&gpt, "ProviderErrors"), [1.0]);
        assert_eq!(of(&gpt, "BudgetRefusals"), [1.0]);
        assert!(!all.contains_key(&(gpt.clone(), "ModelCalls".to_owned())));
        let function = vec![("Function".to_owned(), "lambent-chat".to_owned())];
        assert_eq!(of(&function, "ColdStarts"), [1.0]);
        let outcome = |o: &str| {
            let mut dims = function.clone();
            dims.push(("Outcome".to_owned(), o.to_owned()));
            dims
        };
        assert_eq!(of(&outcome("ok"), "ToolCalls"), [2.0]);
        assert_eq!(of(&outcome("error"), "ToolCalls"), [1.0]);

        // The cost is the exact decimal sum, written digit for digit.
        let expected: Decimal = costs.iter().map(|c| c.parse::<Decimal>().unwrap()).sum();
        let cost: Vec<&str> = written.iter().filter_map(|l| token(l, "CostUSD")).collect();
        assert_eq!(cost, [expected.normalize().to_string()]);
        assert_eq!(cost[0], "12.645679901234567");
        assert_eq!(cost[0].parse::<Decimal>().unwrap(), expected);

        // Nothing new, nothing written.
        assert!(lines(&m.drain(), "lambent-chat", NOW_MS).is_empty());
        let mut out = Vec::new();
        write(&m.drain(), "lambent-chat", NOW_MS, &mut out).unwrap();
        assert!(out.is_empty());
    }

    #[test]
    fn a_sweeper_pass_reports_whether_it_is_behind() {
        let m = Metrics::new(true);
        m.sweep_pass(false);
        m.sweep_pass(true);
        let function = vec![("Function".to_owned(), "lambent-sweeper".to_owned())];
        let all = extracted(&lines(&m.drain(), "lambent-sweeper", NOW_MS));
        // The last pass's report, once per flush.
        assert_eq!(all[&(function.clone(), "SweepBehind".to_owned())], [1.0]);
        m.sweep_pass(false);
        let all = extracted(&lines(&m.drain(), "lambent-sweeper", NOW_MS));
        assert_eq!(all[&(function, "SweepBehind".to_owned())], [0.0]);
        assert!(lines(&m.drain(), "lambent-sweeper", NOW_MS).is_empty());
    }

    #[test]
    fn more_values_than_a_line_holds_are_split_and_all_kept() {
        let m = Metrics::new(true);
        let u = usage(1, 1, 0, 0);
        for i in 0..250u64 {
            m.record(
                "m",
                ProviderKind::Openai,
                Event::Latency(Duration::from_millis(i + 1)),
            );
            m.record(
                "m",
                ProviderKind::Openai,
                Event::Billed {
                    usage: &u,
                    cost_usd: Decimal::ONE,
                },
            );
        }
        let written = lines(&m.drain(), "f", NOW_MS);
        assert_eq!(written.len(), 3, "{written:#?}");
        let all = extracted(&written);
        let dims = model_dims("m", "openai");
        let latency = &all[&(dims.clone(), "ProviderLatency".to_owned())];
        let expected: Vec<f64> = (1..=250).map(|ms| ms as f64).collect();
        assert_eq!(latency, &expected);
        // The counters are written once, in the first line.
        assert_eq!(all[&(dims, "ModelCalls".to_owned())], [250.0]);
        let mut out = Vec::new();
        write(&Drained::default(), "f", NOW_MS, &mut out).unwrap();
        assert!(out.is_empty());
    }

    #[test]
    fn more_metrics_than_a_line_holds_are_split() {
        let metrics: Vec<Metric> = (0..250).map(|_| count("ModelCalls", 1)).collect();
        let split = split(Line {
            dimensions: vec![("Model", "m".to_owned())],
            metrics,
        });
        let sizes: Vec<usize> = split.iter().map(|l| l.metrics.len()).collect();
        assert_eq!(sizes, [100, 100, 50]);
        for line in &split {
            let text = render(line, NOW_MS);
            let doc: Json = serde_json::from_str(&text).unwrap();
            let defined = doc["_aws"]["CloudWatchMetrics"][0]["Metrics"]
                .as_array()
                .unwrap();
            assert!(defined.len() <= MAX_METRICS);
        }
    }

    #[test]
    fn dimension_values_are_escaped_json() {
        let m = Metrics::new(true);
        m.record(
            "we\"ird\\model\n",
            ProviderKind::OpenaiCompatible,
            Event::ProviderFailed,
        );
        let written = lines(&m.drain(), "f", NOW_MS);
        let all = extracted(&written);
        assert!(all.contains_key(&(
            model_dims("we\"ird\\model\n", "openai_compatible"),
            "ProviderErrors".to_owned()
        )));
    }
}
