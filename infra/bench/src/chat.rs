//! The pure parts of the benchmarks, tested on their own: percentiles,
//! `/proc` readers, and the streamed chat benchmark's table with its goals.
//! The orchestration lives in `src/bin/chatbench.rs`.

use std::time::Duration;

pub use lambent_llm::sse::{SseEvent, SseParser};

/// A goal on what Lambent adds (through − direct) at p50 and at p99, in µs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AddedGoal {
    pub p50_us: f64,
    pub p99_us: f64,
}

/// Goal (issue 15): added time to first token of a streamed call.
pub const GOAL_ADDED_TTFT: AddedGoal = AddedGoal {
    p50_us: 150.0,
    p99_us: 500.0,
};
/// Goal (issue 15): added latency of a whole (non-streamed) call.
pub const GOAL_ADDED_WHOLE: AddedGoal = AddedGoal {
    p50_us: 400.0,
    p99_us: 1500.0,
};
/// Goal (issue 15): lambent's resident memory, idle after setup, in KiB.
pub const GOAL_IDLE_RSS_KIB: u64 = 16 * 1024;
/// Goal (issue 15): non-streamed calls per second through `lambent serve`
/// at this concurrency.
pub const GOAL_CALLS_PER_SEC: f64 = 2000.0;
pub const GOAL_CONCURRENCY: usize = 64;
/// Goal: what a streamed tool-call turn adds (to the whole call) minus what
/// a text turn adds (to its first text), at p50, in µs.
pub const GOAL_TOOL_MINUS_TEXT_P50_US: f64 = 50.0;
/// Goal: resident memory per open stream, in KiB.
pub const GOAL_KIB_PER_STREAM: f64 = 64.0;
/// Goal: resident memory growth while a client stops reading a 200 MB stream, in KiB.
pub const GOAL_STALL_GROWTH_KIB: i64 = 2 * 1024;

/// The `p`-th percentile (0 < p ≤ 100) of sorted values, nearest-rank
/// method: the smallest value with at least `p` % of the values at or below
/// it, i.e. `sorted[ceil(p/100 × n) − 1]`. `None` for no values.
pub fn percentile<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    if sorted.is_empty() || !(p > 0.0 && p <= 100.0) {
        return None;
    }
    let n = sorted.len();
    let rank = ((p / 100.0) * n as f64).ceil() as usize;
    sorted.get(rank.clamp(1, n) - 1).copied()
}

/// Order statistics of some samples (latencies, or signed µs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats<T> {
    pub count: usize,
    pub p50: T,
    pub p90: T,
    pub p99: T,
    pub max: T,
}

pub type Latencies = Stats<Duration>;

impl<T: Copy + PartialOrd> Stats<T> {
    /// `None` for no samples.
    pub fn of(samples: &[T]) -> Option<Stats<T>> {
        let mut sorted = samples.to_vec();
        sorted.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        Some(Stats {
            count: sorted.len(),
            p50: percentile(&sorted, 50.0)?,
            p90: percentile(&sorted, 90.0)?,
            p99: percentile(&sorted, 99.0)?,
            max: *sorted.last()?,
        })
    }
}

/// Whether an event is text of a reply: Anthropic's `content_block_delta`
/// with a `text_delta` (direct), Lambent's `delta` (through).
pub fn is_text_delta(event: &SseEvent) -> bool {
    match event.event.as_deref() {
        Some("delta") => true,
        Some("content_block_delta") => event.data.contains("\"text_delta\""),
        _ => false,
    }
}

/// The tool calls of a stream as a client sees them, in either format.
/// Lambent's native stream sends a call once, as a `tool_call` event, when
/// its arguments are whole; Anthropic's opens a `tool_use` block
/// (`content_block_start`, with an empty input), streams the arguments as
/// `input_json_delta`s and closes the block (`content_block_stop`).
#[derive(Debug, Default)]
pub struct ToolCalls {
    /// Indices of the `tool_use` blocks opened so far (direct).
    blocks: Vec<u64>,
}

impl ToolCalls {
    /// What `event` says of a tool call: `(opened, whole)`. A `tool_call`
    /// event is both; a `content_block_start` of a `tool_use` block opens
    /// one; the `content_block_stop` of such a block makes it whole.
    pub fn see(&mut self, event: &SseEvent) -> (bool, bool) {
        let index = || {
            serde_json::from_str::<serde_json::Value>(&event.data)
                .ok()
                .and_then(|v| v["index"].as_u64())
        };
        match event.event.as_deref() {
            Some("tool_call") => (true, true),
            Some("content_block_start") if event.data.contains("\"tool_use\"") => {
                self.blocks.extend(index());
                (true, false)
            }
            Some("content_block_stop") => {
                let whole = index().is_some_and(|i| self.blocks.contains(&i));
                (false, whole)
            }
            _ => (false, false),
        }
    }
}

/// A numeric field of `/proc/<pid>/status`: `VmRSS`, `VmHWM` (in KiB), `Threads`.
pub fn parse_status(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// A numeric field of a process's `/proc/<pid>/status`.
pub fn status(pid: u32, field: &str) -> Option<u64> {
    parse_status(
        &std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?,
        field,
    )
}

/// `VmRSS` of a process, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    status(pid, "VmRSS")
}

/// User plus system CPU time of a process, in clock ticks (fields 14 and 15
/// of `/proc/<pid>/stat`; the command name, field 2, may hold spaces and
/// parentheses, so fields are counted after its last `)`).
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): utime is field 14, stime 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// User plus system CPU time a process has used so far.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let per_second = rustix::param::clock_ticks_per_second().max(1);
    Some(Duration::from_secs_f64(
        parse_cpu_ticks(&stat)? as f64 / per_second as f64,
    ))
}

/// µs with one decimal.
pub fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

/// KiB as MiB with two decimals.
pub fn mib(kib: u64) -> String {
    format!("{:.2} MiB", kib as f64 / 1024.0)
}

/// The time to read `bytes`, and megabytes (10⁶ bytes) per second.
pub fn throughput(bytes: u64, d: Duration) -> String {
    let rate = bytes as f64 / 1e6 / d.as_secs_f64().max(1e-9);
    format!("{:.2} s ({rate:.0} MB/s)", d.as_secs_f64())
}

/// Memory per open stream, in KiB: the growth over idle, divided.
pub fn kib_per_stream(idle_kib: u64, open_kib: u64, streams: usize) -> f64 {
    (open_kib as f64 - idle_kib as f64) / streams.max(1) as f64
}

/// A stored reply as `GET /v1/sessions/{id}/messages` shows it in a history.
pub fn stored_reply(history: &[serde_json::Value]) -> String {
    let Some(reply) = history.iter().find(|m| m["role"] == "assistant") else {
        return format!("**not stored** ({} messages)", history.len());
    };
    let text = |field: &str| reply[field].as_str().unwrap_or("?").to_owned();
    let (status, cost, tokens) = (
        text("status"),
        text("cost_usd"),
        &reply["usage"]["output_tokens"],
    );
    let bytes = reply["content"].as_str().map_or(0, str::len);
    let truncated = if reply["truncated"] == true {
        " (truncated)"
    } else {
        ""
    };
    format!("stored: status {status}, {bytes} bytes of text{truncated}, {tokens} output tokens, cost ${cost}")
}

/// Calls made at some concurrency: how long each took, how long they took
/// together, and the CPU time lambent used meanwhile.
#[derive(Debug, Clone, Default)]
pub struct Rate {
    pub latencies: Vec<Duration>,
    pub elapsed: Duration,
    pub cpu: Option<Duration>,
}

impl Rate {
    pub fn per_second(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn cpu_per_call(&self) -> Option<Duration> {
        let calls = u32::try_from(self.latencies.len()).ok()?.max(1);
        Some(self.cpu? / calls)
    }
}

/// The main table of the report: each measure direct and through side by
/// side, what Lambent adds, the goal and whether it is met.
pub struct Table(String);

impl Default for Table {
    fn default() -> Table {
        let columns = "measure | direct (client → fake) | through (client → lambent → fake) | added / Lambent | goal | met?";
        Table(format!("| {columns} |\n|---|---:|---:|---:|---:|---|\n"))
    }
}

impl Table {
    /// A row; `goal` is the goal and whether it is met.
    pub fn row(
        &mut self,
        measure: &str,
        direct: &str,
        through: &str,
        added: &str,
        goal: Option<(String, bool)>,
    ) {
        let (goal, met) = goal.map_or((String::new(), ""), |(goal, met)| {
            (goal, if met { "yes" } else { "**no**" })
        });
        self.0.push_str(&format!(
            "| {measure} | {direct} | {through} | {added} | {goal} | {met} |\n"
        ));
    }

    /// A figure of lambent alone, in the through column.
    pub fn through(&mut self, measure: &str, figure: &str) {
        self.row(measure, "", figure, "", None);
    }

    /// A figure of what Lambent adds or costs.
    pub fn lambent(&mut self, measure: &str, figure: &str) {
        self.row(measure, "", "", figure, None);
    }

    /// p50, p90 and p99 of the calls each way and what Lambent adds (the
    /// goal is on p50's and p99's), then lambent's CPU time per call.
    pub fn latencies(
        &mut self,
        name: &str,
        direct: &[Duration],
        through: &[Duration],
        cpu: Option<Duration>,
        goal: AddedGoal,
    ) {
        let (Some(d), Some(t)) = (Latencies::of(direct), Latencies::of(through)) else {
            return;
        };
        for (label, d, t) in [
            ("p50", d.p50, t.p50),
            ("p90", d.p90, t.p90),
            ("p99", d.p99, t.p99),
        ] {
            let added = (t.as_secs_f64() - d.as_secs_f64()) * 1e6;
            let goal_us = match label {
                "p50" => Some(goal.p50_us),
                "p99" => Some(goal.p99_us),
                _ => None,
            };
            let goal = goal_us.map(|g| (format!("added ≤ {g:.0} µs"), added <= g));
            let measure = format!("{name} {label} ({} calls each)", through.len());
            self.row(&measure, &us(d), &us(t), &format!("{added:+.1} µs"), goal);
        }
        if let Some(cpu) = cpu {
            self.row(
                &format!("{name}: lambent CPU time (user + sys) per call"),
                "",
                "",
                &us(cpu),
                None,
            );
        }
    }

    /// A text turn and a tool-call turn measured side by side: p50 and p99
    /// each way and what Lambent adds, then how much more it adds to the
    /// tool turn than to the text turn (the goal is on p50's).
    pub fn tool_turn(
        &mut self,
        text: [&[Duration]; 2],
        tool: [&[Duration]; 2],
        text_name: &str,
        tool_name: &str,
    ) {
        let stats = |[d, t]: [&[Duration]; 2]| Some((Latencies::of(d)?, Latencies::of(t)?));
        let (Some(text_stats), Some(tool_stats)) = (stats(text), stats(tool)) else {
            return;
        };
        let added = |d: Duration, t: Duration| (t.as_secs_f64() - d.as_secs_f64()) * 1e6;
        let mut more = Vec::new();
        for (label, pick) in [
            ("p50", (|l: &Latencies| l.p50) as fn(&Latencies) -> Duration),
            ("p99", |l: &Latencies| l.p99),
        ] {
            let mut by_turn = Vec::new();
            for (name, (d, t), calls) in [
                (text_name, text_stats, text[1].len()),
                (tool_name, tool_stats, tool[1].len()),
            ] {
                let (d, t) = (pick(&d), pick(&t));
                by_turn.push(added(d, t));
                let measure = format!("{name} {label} ({calls} calls each)");
                let added = format!("{:+.1} µs", added(d, t));
                self.row(&measure, &us(d), &us(t), &added, None);
            }
            more.push((label, by_turn[1] - by_turn[0]));
        }
        for (label, more) in more {
            let goal = (label == "p50").then(|| {
                (
                    format!("≤ {GOAL_TOOL_MINUS_TEXT_P50_US:.0} µs"),
                    more <= GOAL_TOOL_MINUS_TEXT_P50_US,
                )
            });
            let measure = format!("tool turn added − text turn added, {label}");
            self.row(&measure, "", "", &format!("{more:+.1} µs"), goal);
        }
    }

    /// Calls per second at one concurrency, each way, with p50 and p99
    /// latency and what Lambent adds to them, and lambent's CPU per call;
    /// the goal is on the through rate at [`GOAL_CONCURRENCY`].
    pub fn throughput(&mut self, concurrency: usize, direct: &Rate, through: &Rate) {
        let (Some(d), Some(t)) = (
            Latencies::of(&direct.latencies),
            Latencies::of(&through.latencies),
        ) else {
            return;
        };
        let rate = |r: &Rate, l: &Latencies| {
            format!(
                "{:.0} calls/s (p50 {}, p99 {})",
                r.per_second(),
                us(l.p50),
                us(l.p99)
            )
        };
        let added = |d: Duration, t: Duration| (t.as_secs_f64() - d.as_secs_f64()) * 1e6;
        let cpu = through
            .cpu_per_call()
            .map_or_else(String::new, |c| format!("; lambent CPU {} per call", us(c)));
        let lambent = format!(
            "p50 {:+.1} µs, p99 {:+.1} µs{cpu}",
            added(d.p50, t.p50),
            added(d.p99, t.p99)
        );
        let goal = (concurrency == GOAL_CONCURRENCY).then(|| {
            (
                format!("≥ {GOAL_CALLS_PER_SEC:.0} calls/s"),
                through.per_second() >= GOAL_CALLS_PER_SEC,
            )
        });
        let measure = format!(
            "throughput, non-streamed, {concurrency} at once ({} calls each way)",
            through.latencies.len()
        );
        self.row(
            &measure,
            &rate(direct, &d),
            &rate(through, &t),
            &lambent,
            goal,
        );
    }

    pub fn markdown(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn micros(values: &[u64]) -> Vec<Duration> {
        values.iter().map(|&n| Duration::from_micros(n)).collect()
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let values: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&values, 50.0), Some(50));
        assert_eq!(percentile(&values, 99.0), Some(99));
        assert_eq!(percentile(&values, 100.0), Some(100));
        assert_eq!(percentile(&values, 0.5), Some(1));
        let small = [10, 20, 30];
        assert_eq!(percentile(&small, 50.0), Some(20));
        assert_eq!(percentile(&small, 99.0), Some(30));
        assert_eq!(percentile(&small, 1.0), Some(10));
        // 2,000 samples: p99 is the 1,980th, so the 20 slowest are above it.
        let many: Vec<u64> = (1..=2000).collect();
        assert_eq!(percentile(&many, 99.0), Some(1980));
        assert_eq!(percentile::<u64>(&[], 50.0), None);
        assert_eq!(percentile(&small, 0.0), None);
        assert_eq!(percentile(&small, 101.0), None);
    }

    #[test]
    fn stats_sort_their_samples_latencies_and_signed_values_alike() {
        let l = Latencies::of(&micros(&[5, 1, 4, 2, 3])).unwrap();
        assert_eq!(
            (l.count, l.p50, l.p90),
            (5, Duration::from_micros(3), Duration::from_micros(5))
        );
        assert_eq!(
            (l.p99, l.max),
            (Duration::from_micros(5), Duration::from_micros(5))
        );
        assert_eq!(Latencies::of(&[]), None);
        let signed: Vec<f64> = (1..=100).map(|v| f64::from(v) - 10.0).collect();
        let s = Stats::of(&signed).unwrap();
        assert_eq!((s.p50, s.p99, s.max), (40.0, 89.0, 90.0));
    }

    fn ev(event: &str, data: &str) -> SseEvent {
        SseEvent {
            event: Some(event.into()),
            id: None,
            data: data.into(),
        }
    }

    #[test]
    fn text_is_recognised_in_both_formats() {
        let text =
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}"#;
        assert!(is_text_delta(&ev("content_block_delta", text)));
        let json =
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta"}}"#;
        assert!(!is_text_delta(&ev("content_block_delta", json)));
        assert!(!is_text_delta(&ev("content_block_start", "{}")));
        assert!(is_text_delta(&ev("delta", r#"{"text":"Hi"}"#)));
        assert!(!is_text_delta(&ev("message_start", "{}")));
    }

    #[test]
    fn tool_calls_are_recognised_in_both_formats() {
        let mut direct = ToolCalls::default();
        let text_block =
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#;
        assert_eq!(
            direct.see(&ev("content_block_start", text_block)),
            (false, false)
        );
        let tool_block = r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"c","name":"n","input":{}}}"#;
        assert_eq!(
            direct.see(&ev("content_block_start", tool_block)),
            (true, false)
        );
        let json = r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{"}}"#;
        assert_eq!(direct.see(&ev("content_block_delta", json)), (false, false));
        let stop = |i: u32| format!(r#"{{"type":"content_block_stop","index":{i}}}"#);
        assert_eq!(
            direct.see(&ev("content_block_stop", &stop(0))),
            (false, false)
        );
        assert_eq!(
            direct.see(&ev("content_block_stop", &stop(1))),
            (false, true)
        );
        let mut through = ToolCalls::default();
        let call = r#"{"index":0,"id":"c","name":"n","input":{}}"#;
        assert_eq!(through.see(&ev("tool_call", call)), (true, true));
        assert_eq!(
            through.see(&ev("delta", r#"{"text":"Hi"}"#)),
            (false, false)
        );
    }

    #[test]
    fn tool_turns_are_compared_with_text_turns() {
        let mut table = Table::default();
        let (d, t) = (micros(&[100, 100, 200]), micros(&[150, 150, 300]));
        let (td, tt) = (micros(&[300, 300, 400]), micros(&[380, 380, 500]));
        table.tool_turn([&d, &t], [&td, &tt], "text", "tool");
        let md = table.markdown();
        assert!(md.contains("| text p50 (3 calls each) | 100.0 µs | 150.0 µs | +50.0 µs |"));
        assert!(md.contains("| tool p50 (3 calls each) | 300.0 µs | 380.0 µs | +80.0 µs |"));
        assert!(md.contains(
            "| tool turn added − text turn added, p50 |  |  | +30.0 µs | ≤ 50 µs | yes |"
        ));
        assert!(md.contains("| tool turn added − text turn added, p99 |  |  | +0.0 µs |  |  |"));
    }

    #[test]
    fn proc_fields_are_read() {
        let status = "Name:\tlambent\nVmHWM:\t   20480 kB\nVmRSS:\t   12345 kB\nThreads:\t7\n";
        assert_eq!(parse_status(status, "VmRSS"), Some(12345));
        assert_eq!(parse_status(status, "VmHWM"), Some(20480));
        assert_eq!(parse_status(status, "Threads"), Some(7));
        assert_eq!(parse_status(status, "VmSwap"), None);
        let stat = "4242 (lambent (x) y) S 1 4242 4242 0 -1 4194560 1405 0 0 0 \
                    170 35 0 0 20 0 9 0 12345 123456789 4000 18446744073709551615";
        assert_eq!(parse_cpu_ticks(stat), Some(205));
        assert_eq!(parse_cpu_ticks("4242 (x) S 1 2"), None);
        assert_eq!(parse_cpu_ticks("garbage"), None);
    }

    #[test]
    fn figures_and_formats() {
        assert_eq!(kib_per_stream(10_000, 74_000, 1000), 64.0);
        assert_eq!(us(Duration::from_nanos(1_500)), "1.5 µs");
        assert_eq!(mib(1536), "1.50 MiB");
        assert_eq!(
            throughput(200_000_000, Duration::from_secs(2)),
            "2.00 s (100 MB/s)"
        );
    }

    #[test]
    fn a_stored_reply_is_described_as_the_api_shows_it() {
        let reply = serde_json::json!({"role": "assistant", "status": "complete", "content": "abc",
            "truncated": true, "usage": {"output_tokens": 9}, "cost_usd": "0.000135"});
        let history = [serde_json::json!({"role": "user"}), reply];
        let described =
            "stored: status complete, 3 bytes of text (truncated), 9 output tokens, cost $0.000135";
        assert_eq!(stored_reply(&history), described);
        assert_eq!(stored_reply(&history[..1]), "**not stored** (1 messages)");
    }

    #[test]
    fn the_table_shows_what_lambent_adds_and_the_goals() {
        let mut table = Table::default();
        table.latencies(
            "TTFT, streamed",
            &micros(&[100]),
            &micros(&[200]),
            Some(Duration::from_micros(420)),
            GOAL_ADDED_TTFT,
        );
        table.latencies(
            "latency, non-streamed",
            &micros(&[300]),
            &micros(&[2000]),
            None,
            GOAL_ADDED_WHOLE,
        );
        table.latencies("nothing measured", &[], &[], None, GOAL_ADDED_WHOLE);
        table.row(
            "RSS per open stream",
            "",
            "",
            "70.0 KiB",
            Some(("≤ 64 KiB".into(), false)),
        );
        let table = table.markdown();
        for line in [
            "| TTFT, streamed p50 (1 calls each) | 100.0 µs | 200.0 µs | +100.0 µs | added ≤ 150 µs | yes |",
            "| TTFT, streamed p90 (1 calls each) | 100.0 µs | 200.0 µs | +100.0 µs |  |  |",
            "| TTFT, streamed p99 (1 calls each) | 100.0 µs | 200.0 µs | +100.0 µs | added ≤ 500 µs | yes |",
            "| TTFT, streamed: lambent CPU time (user + sys) per call |  |  | 420.0 µs |  |  |",
            "| latency, non-streamed p50 (1 calls each) | 300.0 µs | 2000.0 µs | +1700.0 µs | added ≤ 400 µs | **no** |",
            "| latency, non-streamed p99 (1 calls each) | 300.0 µs | 2000.0 µs | +1700.0 µs | added ≤ 1500 µs | **no** |",
            "| RSS per open stream |  |  | 70.0 KiB | ≤ 64 KiB | **no** |",
        ] {
            assert!(table.contains(line), "{line} not in\n{table}");
        }
        assert_eq!(table.lines().count(), 2 + 4 + 3 + 1, "{table}");
    }

    #[test]
    fn throughput_is_calls_over_their_time_and_its_goal_is_at_64() {
        let rate = |n: u64, us_each: u64, secs: u64, cpu_ms: Option<u64>| Rate {
            latencies: micros(&vec![us_each; n as usize]),
            elapsed: Duration::from_secs(secs),
            cpu: cpu_ms.map(Duration::from_millis),
        };
        let (direct, through) = (rate(4000, 100, 1, None), rate(4000, 300, 2, Some(1200)));
        assert_eq!(through.per_second(), 2000.0);
        assert_eq!(through.cpu_per_call(), Some(Duration::from_micros(300)));
        let mut table = Table::default();
        table.throughput(16, &direct, &through);
        table.throughput(64, &direct, &through);
        table.throughput(64, &direct, &rate(3900, 300, 2, None));
        table.throughput(64, &Rate::default(), &through);
        let table = table.markdown();
        for line in [
            "| throughput, non-streamed, 16 at once (4000 calls each way) | 4000 calls/s (p50 100.0 µs, p99 100.0 µs) | 2000 calls/s (p50 300.0 µs, p99 300.0 µs) | p50 +200.0 µs, p99 +200.0 µs; lambent CPU 300.0 µs per call |  |  |",
            "| throughput, non-streamed, 64 at once (4000 calls each way) | 4000 calls/s (p50 100.0 µs, p99 100.0 µs) | 2000 calls/s (p50 300.0 µs, p99 300.0 µs) | p50 +200.0 µs, p99 +200.0 µs; lambent CPU 300.0 µs per call | ≥ 2000 calls/s | yes |",
            "| throughput, non-streamed, 64 at once (3900 calls each way) | 4000 calls/s (p50 100.0 µs, p99 100.0 µs) | 1950 calls/s (p50 300.0 µs, p99 300.0 µs) | p50 +200.0 µs, p99 +200.0 µs | ≥ 2000 calls/s | **no** |",
        ] {
            assert!(table.contains(line), "{line} not in\n{table}");
        }
        assert_eq!(table.lines().count(), 2 + 3, "{table}");
    }
}
