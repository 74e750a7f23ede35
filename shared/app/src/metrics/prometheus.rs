//! The running totals as Prometheus text exposition format 0.0.4 (what
//! `lambent serve` answers on `GET /metrics`): counters end in `_total`,
//! latencies are histograms in seconds, label values are escaped, and a
//! cost is written as its exact decimal digits.

use std::fmt::Write as _;

use rust_decimal::Decimal;

use super::{Counts, Histogram, Snapshot, Totals};

/// The `Content-Type` of the text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A counter of each (model, provider kind).
struct SeriesCounter {
    name: &'static str,
    help: &'static str,
    value: fn(&Counts) -> Decimal,
}

const SERIES_COUNTERS: &[SeriesCounter] = &[
    SeriesCounter {
        name: "lambent_model_calls_total",
        help: "Model calls billed.",
        value: |c| c.calls.into(),
    },
    SeriesCounter {
        name: "lambent_provider_errors_total",
        help: "Model calls the provider failed (before or during its reply, or too slowly).",
        value: |c| c.provider_errors.into(),
    },
    SeriesCounter {
        name: "lambent_budget_refusals_total",
        help: "Model calls refused for a spending limit (budget_exceeded).",
        value: |c| c.budget_refusals.into(),
    },
    SeriesCounter {
        name: "lambent_input_tokens_total",
        help: "Input tokens billed (without cache reads and writes).",
        value: |c| c.input_tokens.into(),
    },
    SeriesCounter {
        name: "lambent_output_tokens_total",
        help: "Output tokens billed.",
        value: |c| c.output_tokens.into(),
    },
    SeriesCounter {
        name: "lambent_cache_read_tokens_total",
        help: "Prompt tokens read from the provider's cache.",
        value: |c| c.cache_read_tokens.into(),
    },
    SeriesCounter {
        name: "lambent_cache_write_tokens_total",
        help: "Prompt tokens written to the provider's cache.",
        value: |c| c.cache_write_tokens.into(),
    },
    SeriesCounter {
        name: "lambent_cost_usd_total",
        help: "Cost of the billed model calls in USD, exact.",
        value: |c| c.cost_usd,
    },
];

/// A latency histogram of each (model, provider kind).
struct SeriesHistogram {
    name: &'static str,
    help: &'static str,
    of: fn(&Totals) -> &Histogram,
}

const SERIES_HISTOGRAMS: &[SeriesHistogram] = &[
    SeriesHistogram {
        name: "lambent_provider_latency_seconds",
        help: "Provider calls from the request to the reply's end.",
        of: |t| &t.latency,
    },
    SeriesHistogram {
        name: "lambent_time_to_first_token_seconds",
        help: "Streamed provider calls from the request to the first piece of the reply.",
        of: |t| &t.first_token,
    },
];

/// The whole exposition of `snapshot`.
pub fn render(snapshot: &Snapshot) -> String {
    let mut out = String::with_capacity(4096);
    for counter in SERIES_COUNTERS {
        family(&mut out, counter.name, counter.help, "counter");
        for s in &snapshot.series {
            sample(
                &mut out,
                counter.name,
                &labels(s, None),
                (counter.value)(&s.counts),
            );
        }
    }
    for histogram in SERIES_HISTOGRAMS {
        family(&mut out, histogram.name, histogram.help, "histogram");
        for s in &snapshot.series {
            let h = (histogram.of)(s);
            let bucket = format!("{}_bucket", histogram.name);
            for (le, n) in h.cumulative() {
                let le = le.map_or_else(|| "+Inf".to_owned(), |d| d.to_string());
                sample(&mut out, &bucket, &labels(s, Some(&le)), n.into());
            }
            sample(
                &mut out,
                &format!("{}_sum", histogram.name),
                &labels(s, None),
                h.sum_secs(),
            );
            sample(
                &mut out,
                &format!("{}_count", histogram.name),
                &labels(s, None),
                h.count().into(),
            );
        }
    }
    let p = &snapshot.process;
    let name = "lambent_tool_calls_total";
    family(
        &mut out,
        name,
        "Server tool calls answered, by outcome.",
        "counter",
    );
    sample(&mut out, name, "{outcome=\"ok\"}", p.tool_calls_ok.into());
    sample(
        &mut out,
        name,
        "{outcome=\"error\"}",
        p.tool_calls_error.into(),
    );
    let name = "lambent_cold_starts_total";
    family(&mut out, name, "Starts of this process.", "counter");
    sample(&mut out, name, "", p.cold_starts.into());
    if let Some(behind) = p.sweep_behind {
        let name = "lambent_sweep_behind";
        family(
            &mut out,
            name,
            "1 if the last sweeper pass left work for the next one, else 0.",
            "gauge",
        );
        sample(&mut out, name, "", behind.into());
    }
    out
}

fn family(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {}", escape_help(help));
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &str, value: Decimal) {
    // Decimal's Display is plain digits: exact, and a valid Prometheus value.
    let _ = writeln!(out, "{name}{labels} {}", value.normalize());
}

/// `{model="…",provider_kind="…"}`, with `le` for a histogram bucket.
fn labels(s: &Totals, le: Option<&str>) -> String {
    let mut labels = format!(
        "{{model=\"{}\",provider_kind=\"{}\"",
        escape_label(&s.model),
        s.kind.as_str()
    );
    if let Some(le) = le {
        let _ = write!(labels, ",le=\"{le}\"");
    }
    labels.push('}');
    labels
}

/// A label value as the format escapes it: backslash, double quote, newline.
pub fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A `# HELP` text as the format escapes it: backslash and newline.
fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Event, Metrics};
    use lambent_core::chat::Usage;
    use lambent_core::provider::ProviderKind;
    use std::time::Duration;

    #[test]
    fn the_text_has_families_samples_and_exact_costs() {
        let m = Metrics::new(false);
        m.cold_start();
        let u = Usage {
            input_tokens: 7,
            output_tokens: 3,
            ..Usage::default()
        };
        for cost in ["0.1", "0.2"] {
            let cost_usd = cost.parse().unwrap();
            m.record(
                "m\"1",
                ProviderKind::Anthropic,
                Event::Billed {
                    usage: &u,
                    cost_usd,
                },
            );
        }
        m.record(
            "m\"1",
            ProviderKind::Anthropic,
            Event::Latency(Duration::from_millis(30)),
        );
        let text = render(&m.snapshot());
        let labels = "{model=\"m\\\"1\",provider_kind=\"anthropic\"}";
        assert!(
            text.contains(&format!("lambent_cost_usd_total{labels} 0.3\n")),
            "{text}"
        );
        assert!(text.contains(&format!("lambent_model_calls_total{labels} 2\n")));
        assert!(text.contains(&format!("lambent_input_tokens_total{labels} 14\n")));
        assert!(text.contains(
            "lambent_provider_latency_seconds_bucket{model=\"m\\\"1\",provider_kind=\"anthropic\",le=\"0.025\"} 0\n"
        ));
        assert!(text.contains(
            "lambent_provider_latency_seconds_bucket{model=\"m\\\"1\",provider_kind=\"anthropic\",le=\"0.05\"} 1\n"
        ));
        assert!(text.contains(
            "lambent_provider_latency_seconds_bucket{model=\"m\\\"1\",provider_kind=\"anthropic\",le=\"+Inf\"} 1\n"
        ));
        assert!(text.contains(&format!(
            "lambent_provider_latency_seconds_sum{labels} 0.03\n"
        )));
        assert!(text.contains("lambent_cold_starts_total 1\n"));
        assert!(text.contains("lambent_tool_calls_total{outcome=\"ok\"} 0\n"));
        assert!(text.contains("# TYPE lambent_provider_latency_seconds histogram\n"));
        // Every counter family ends in _total; every line is a comment or a sample.
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert!(kind != "counter" || name.ends_with("_total"), "{line}");
            } else if !line.starts_with("# HELP ") {
                let (_, value) = line.rsplit_once(' ').unwrap();
                assert!(value.parse::<f64>().is_ok(), "{line}");
            }
        }
        assert_eq!(escape_label("a\\b\nc\"d"), "a\\\\b\\nc\\\"d");
    }
}
