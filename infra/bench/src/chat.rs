//! The pieces of the streamed chat benchmark worth testing on their own:
//! percentiles, an incremental server-sent events parser, `/proc` readers
//! and the Markdown report with the goals.
//!
//! The orchestration (the fake provider, `lambent serve`, the HTTP clients)
//! lives in `src/bin/chatbench.rs`.

use std::time::Duration;

/// Goal: added time to first token at p99, in µs.
pub const GOAL_ADDED_TTFT_P99_US: f64 = 250.0;
/// Goal: added latency of a non-streamed call at p99, in µs.
pub const GOAL_ADDED_WHOLE_P99_US: f64 = 100.0;
/// Goal: resident memory per open stream, in KiB.
pub const GOAL_KIB_PER_STREAM: f64 = 64.0;
/// Goal: resident memory growth while a client stops reading a 200 MB stream, in KiB.
pub const GOAL_STALL_GROWTH_KIB: f64 = 2.0 * 1024.0;

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

/// Order statistics of some latencies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Latencies {
    pub count: usize,
    pub p50: Duration,
    pub p90: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl Latencies {
    /// `None` for no samples.
    pub fn of(samples: &[Duration]) -> Option<Latencies> {
        let mut sorted = samples.to_vec();
        sorted.sort_unstable();
        Some(Latencies {
            count: sorted.len(),
            p50: percentile(&sorted, 50.0)?,
            p90: percentile(&sorted, 90.0)?,
            p99: percentile(&sorted, 99.0)?,
            max: *sorted.last()?,
        })
    }
}

/// `b − a` in µs, signed (the added time can be negative within noise).
pub fn added_us(direct: Duration, through: Duration) -> f64 {
    (through.as_secs_f64() - direct.as_secs_f64()) * 1e6
}

pub use lambent_llm::sse::{SseEvent, SseParser};

/// Whether an event is the first text of a reply: Anthropic's
/// `content_block_delta` with a `text_delta` (direct), Lambent's `delta`
/// (through).
pub fn is_text_delta(event: &SseEvent) -> bool {
    match event.event.as_deref() {
        Some("delta") => true,
        Some("content_block_delta") => event.data.contains("\"text_delta\""),
        _ => false,
    }
}

/// A field of `/proc/<pid>/status` given in kB (`VmRSS`, `VmHWM`), in KiB.
pub fn parse_status_kib(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// The `Threads:` count of `/proc/<pid>/status`.
pub fn parse_threads(status: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        line.strip_prefix("Threads:")?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
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
    let ticks = parse_cpu_ticks(&stat)?;
    let per_second = rustix::param::clock_ticks_per_second().max(1);
    Some(Duration::from_secs_f64(ticks as f64 / per_second as f64))
}

/// `VmRSS` of a process, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status_kib(&status, "VmRSS")
}

/// `VmHWM` (peak resident set) of a process, in KiB.
pub fn hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status_kib(&status, "VmHWM")
}

/// `RssAnon`, `RssFile` and `RssShmem` of a process, for the progress log.
pub fn rss_breakdown(pid: u32) -> String {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return "n/a".into();
    };
    ["RssAnon", "RssFile", "RssShmem"]
        .iter()
        .map(|field| {
            let value = parse_status_kib(&status, field)
                .map_or_else(|| "n/a".to_owned(), |kib| format!("{kib} KiB"));
            format!("{field} {value}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Threads of a process.
pub fn threads(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_threads(&status)
}

/// The median of some whole numbers (the lower middle one for an even count).
pub fn median_u64(values: &[u64]) -> Option<u64> {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    percentile(&sorted, 50.0)
}

/// Formats µs with one decimal, or `n/a`.
pub fn us(d: Option<Duration>) -> String {
    d.map(|d| format!("{:.1} µs", d.as_secs_f64() * 1e6))
        .unwrap_or_else(|| "n/a".into())
}

/// Formats a signed µs figure, or `n/a`.
pub fn signed_us(v: Option<f64>) -> String {
    v.map(|v| format!("{v:+.1} µs"))
        .unwrap_or_else(|| "n/a".into())
}

/// Formats KiB as MiB with two decimals, or `n/a`.
pub fn mib(kib: Option<u64>) -> String {
    kib.map(|k| format!("{:.2} MiB", k as f64 / 1024.0))
        .unwrap_or_else(|| "n/a".into())
}

/// Formats a signed KiB figure, or `n/a`.
pub fn signed_kib(v: Option<i64>) -> String {
    v.map(|v| format!("{v:+} KiB"))
        .unwrap_or_else(|| "n/a".into())
}

fn verdict(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "yes",
        Some(false) => "**no**",
        None => "n/a",
    }
}

/// The direct and through latencies of one kind of call.
#[derive(Debug, Clone, Copy, Default)]
pub struct SideBySide {
    pub direct: Option<Latencies>,
    pub through: Option<Latencies>,
    /// Lambent's user + system CPU time over the measured calls, divided by
    /// the calls through it.
    pub lambent_cpu_per_call: Option<Duration>,
}

impl SideBySide {
    /// Through minus direct at p50, in µs.
    pub fn added_p50_us(&self) -> Option<f64> {
        Some(added_us(self.direct?.p50, self.through?.p50))
    }
    pub fn added_p90_us(&self) -> Option<f64> {
        Some(added_us(self.direct?.p90, self.through?.p90))
    }
    pub fn added_p99_us(&self) -> Option<f64> {
        Some(added_us(self.direct?.p99, self.through?.p99))
    }
}

/// Memory with many streams open at once.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenStreams {
    pub streams: usize,
    pub idle_rss_kib: u64,
    pub idle_threads: Option<u64>,
    /// When the last stream had received `message_start`.
    pub all_open_rss_kib: u64,
    /// Highest sample while the streams were held open.
    pub peak_rss_kib: u64,
    /// The last sample before the streams were closed.
    pub end_rss_kib: u64,
    pub open_threads: Option<u64>,
    pub end_threads: Option<u64>,
    /// Streams that were being opened at once.
    pub open_concurrency: usize,
    pub hold: Duration,
    /// Time to open all the streams.
    pub opening: Duration,
}

impl OpenStreams {
    /// (peak − idle) / streams, in KiB: the headline figure.
    pub fn kib_per_stream(&self) -> Option<f64> {
        self.per_stream(self.peak_rss_kib)
    }
    /// (last sample − idle) / streams, in KiB.
    pub fn kib_per_stream_end(&self) -> Option<f64> {
        self.per_stream(self.end_rss_kib)
    }
    fn per_stream(&self, rss: u64) -> Option<f64> {
        if self.streams == 0 {
            return None;
        }
        Some((rss as f64 - self.idle_rss_kib as f64) / self.streams as f64)
    }
}

/// A 200 MB reply through Lambent: a client that stalls, then one that reads
/// at full speed.
#[derive(Debug, Clone, Default)]
pub struct BigReply {
    pub reply_bytes: u64,
    pub baseline_rss_kib: u64,
    pub stall: Duration,
    /// Highest RSS sample while the client did not read.
    pub stall_peak_rss_kib: u64,
    /// Highest RSS sample while the stalled client read the rest.
    pub resume_peak_rss_kib: u64,
    /// Deltas the stalled client received in all.
    pub resumed_deltas: u64,
    pub resumed_ended: bool,
    /// What `GET /v1/sessions/{id}/messages` shows of the reply.
    pub stored: String,
    /// Highest RSS sample while a second client read a whole reply at full speed.
    pub full_peak_rss_kib: u64,
    pub full_duration: Option<Duration>,
    pub direct_full_duration: Option<Duration>,
}

impl BigReply {
    pub fn stall_growth_kib(&self) -> i64 {
        self.stall_peak_rss_kib as i64 - self.baseline_rss_kib as i64
    }
    pub fn resume_growth_kib(&self) -> i64 {
        self.resume_peak_rss_kib as i64 - self.baseline_rss_kib as i64
    }
    pub fn full_growth_kib(&self) -> i64 {
        self.full_peak_rss_kib as i64 - self.baseline_rss_kib as i64
    }
}

/// Megabytes (10⁶ bytes) per second, or `n/a`.
pub fn throughput(bytes: u64, d: Option<Duration>) -> String {
    match d {
        Some(d) if d > Duration::ZERO => {
            format!("{:.0} MB/s", bytes as f64 / 1e6 / d.as_secs_f64())
        }
        _ => "n/a".into(),
    }
}

/// Everything one run measured; a phase not run is `None`.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub ttft: SideBySide,
    pub whole: SideBySide,
    pub idle_rss_kib: Option<u64>,
    pub streams: Option<OpenStreams>,
    pub big: Option<BigReply>,
    /// Plain API calls to lambent, for context: what any request costs.
    pub probes: Vec<Probe>,
}

/// Sequential calls of one plain route of lambent.
#[derive(Debug, Clone)]
pub struct Probe {
    pub what: String,
    pub latencies: Latencies,
}

impl Report {
    /// The Markdown table: direct and through side by side, the added
    /// figure, the goal and whether it is met.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        out.push_str("| measure | direct (client → fake) | through (client → lambent → fake) | added / Lambent | goal | met? |\n");
        out.push_str("|---|---:|---:|---:|---:|---|\n");
        let mut row = |cells: [String; 6]| {
            out.push_str(&format!("| {} |\n", cells.join(" | ")));
        };
        for (name, side, goal) in [
            ("TTFT, streamed", &self.ttft, Some(GOAL_ADDED_TTFT_P99_US)),
            (
                "latency, non-streamed",
                &self.whole,
                Some(GOAL_ADDED_WHOLE_P99_US),
            ),
        ] {
            let count = side
                .through
                .map(|l| format!(" ({} calls each)", l.count))
                .unwrap_or_default();
            for (label, direct, through, added, is_p99) in [
                (
                    "p50",
                    side.direct.map(|l| l.p50),
                    side.through.map(|l| l.p50),
                    side.added_p50_us(),
                    false,
                ),
                (
                    "p90",
                    side.direct.map(|l| l.p90),
                    side.through.map(|l| l.p90),
                    side.added_p90_us(),
                    false,
                ),
                (
                    "p99",
                    side.direct.map(|l| l.p99),
                    side.through.map(|l| l.p99),
                    side.added_p99_us(),
                    true,
                ),
            ] {
                let (goal_cell, met) = match (goal, is_p99) {
                    (Some(g), true) => (
                        format!("added ≤ {g:.0} µs"),
                        verdict(added.map(|a| a <= g)).to_owned(),
                    ),
                    _ => ("".to_owned(), "".to_owned()),
                };
                row([
                    format!("{name} {label}{count}"),
                    us(direct),
                    us(through),
                    signed_us(added),
                    goal_cell,
                    met,
                ]);
            }
            if let Some(cpu) = side.lambent_cpu_per_call {
                row([
                    format!("{name}: lambent CPU time (user + sys) per call"),
                    "".into(),
                    "".into(),
                    us(Some(cpu)),
                    "".into(),
                    "".into(),
                ]);
            }
        }
        row([
            "RSS of lambent, idle after setup".into(),
            "".into(),
            mib(self.idle_rss_kib),
            "".into(),
            "".into(),
            "".into(),
        ]);
        if let Some(s) = &self.streams {
            row([
                format!(
                    "RSS of lambent, idle before opening the streams (threads: {})",
                    opt(s.idle_threads)
                ),
                "".into(),
                mib(Some(s.idle_rss_kib)),
                "".into(),
                "".into(),
                "".into(),
            ]);
            row([
                format!(
                    "RSS with {} open streams ({} opened at a time): peak over {:.0} s held \
                     (at all open / at the end; threads at all open / at the end: {} / {})",
                    s.streams,
                    s.open_concurrency,
                    s.hold.as_secs_f64(),
                    opt(s.open_threads),
                    opt(s.end_threads)
                ),
                "".into(),
                format!(
                    "{} ({} / {})",
                    mib(Some(s.peak_rss_kib)),
                    mib(Some(s.all_open_rss_kib)),
                    mib(Some(s.end_rss_kib))
                ),
                "".into(),
                "".into(),
                "".into(),
            ]);
            let per = s.kib_per_stream();
            row([
                "RSS per open stream: (peak − idle) / streams (with the last sample instead of the peak)"
                    .into(),
                "".into(),
                "".into(),
                format!(
                    "{} ({})",
                    per.map(|k| format!("{k:.1} KiB")).unwrap_or_else(|| "n/a".into()),
                    s.kib_per_stream_end()
                        .map(|k| format!("{k:.1} KiB"))
                        .unwrap_or_else(|| "n/a".into())
                ),
                format!("≤ {GOAL_KIB_PER_STREAM:.0} KiB"),
                verdict(per.map(|k| k <= GOAL_KIB_PER_STREAM)).into(),
            ]);
        }
        if let Some(b) = &self.big {
            let mb = b.reply_bytes as f64 / 1e6;
            row([
                format!("RSS growth while a client stops reading a {mb:.0} MB stream for {:.0} s (peak − baseline {})",
                    b.stall.as_secs_f64(), mib(Some(b.baseline_rss_kib))),
                "".into(),
                "".into(),
                signed_kib(Some(b.stall_growth_kib())),
                format!("≤ {:.0} MiB", GOAL_STALL_GROWTH_KIB / 1024.0),
                verdict(Some(b.stall_growth_kib() as f64 <= GOAL_STALL_GROWTH_KIB)).into(),
            ]);
            row([
                format!(
                    "… then reading on to the end: peak growth; deltas received{}",
                    if b.resumed_ended {
                        ", message_end seen"
                    } else {
                        ", **no message_end**"
                    }
                ),
                "".into(),
                "".into(),
                format!(
                    "{} ({} deltas)",
                    signed_kib(Some(b.resume_growth_kib())),
                    b.resumed_deltas
                ),
                "".into(),
                "".into(),
            ]);
            row([
                "… the stalled reply as stored (GET history)".into(),
                "".into(),
                "".into(),
                b.stored.clone(),
                "".into(),
                "".into(),
            ]);
            row([
                format!(
                    "reading a {mb:.0} MB stream at full speed: time (throughput); RSS peak growth"
                ),
                format!(
                    "{} ({})",
                    b.direct_full_duration
                        .map(|d| format!("{:.2} s", d.as_secs_f64()))
                        .unwrap_or_else(|| "n/a".into()),
                    throughput(b.reply_bytes, b.direct_full_duration)
                ),
                format!(
                    "{} ({})",
                    b.full_duration
                        .map(|d| format!("{:.2} s", d.as_secs_f64()))
                        .unwrap_or_else(|| "n/a".into()),
                    throughput(b.reply_bytes, b.full_duration)
                ),
                signed_kib(Some(b.full_growth_kib())),
                "".into(),
                "".into(),
            ]);
        }
        if !self.probes.is_empty() {
            out.push_str(
                "\nFor context, plain routes of lambent on the same connection and client:\n\n",
            );
            out.push_str(
                "| request | calls | p50 | p90 | p99 | max |\n|---|---:|---:|---:|---:|---:|\n",
            );
            for probe in &self.probes {
                let l = probe.latencies;
                out.push_str(&format!(
                    "| {} | {} | {} | {} | {} | {} |\n",
                    probe.what,
                    l.count,
                    us(Some(l.p50)),
                    us(Some(l.p90)),
                    us(Some(l.p99)),
                    us(Some(l.max))
                ));
            }
        }
        out
    }
}

fn opt(v: Option<u64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "n/a".into())
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn latencies_sort_their_samples() {
        let samples: Vec<Duration> = [5u64, 1, 4, 2, 3]
            .iter()
            .map(|&n| Duration::from_micros(n))
            .collect();
        let l = Latencies::of(&samples);
        assert_eq!(
            l,
            Some(Latencies {
                count: 5,
                p50: Duration::from_micros(3),
                p90: Duration::from_micros(5),
                p99: Duration::from_micros(5),
                max: Duration::from_micros(5),
            })
        );
        assert_eq!(Latencies::of(&[]), None);
    }

    #[test]
    fn added_is_through_minus_direct_and_may_be_negative() {
        let side = SideBySide {
            direct: Latencies::of(&[Duration::from_micros(100)]),
            through: Latencies::of(&[Duration::from_micros(350)]),
            lambent_cpu_per_call: None,
        };
        assert_eq!(side.added_p99_us().map(f64::round), Some(250.0));
        assert_eq!(
            added_us(Duration::from_micros(300), Duration::from_micros(250)).round(),
            -50.0
        );
        assert_eq!(SideBySide::default().added_p50_us(), None);
    }

    fn ev(event: &str, data: &str) -> SseEvent {
        SseEvent {
            event: Some(event.into()),
            id: None,
            data: data.into(),
        }
    }

    #[test]
    fn first_text_is_recognised_in_both_formats() {
        assert!(is_text_delta(&ev(
            "content_block_delta",
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}"#
        )));
        assert!(!is_text_delta(&ev(
            "content_block_delta",
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":""}}"#
        )));
        assert!(!is_text_delta(&ev("content_block_start", "{}")));
        assert!(is_text_delta(&ev("delta", r#"{"text":"Hi"}"#)));
        assert!(!is_text_delta(&ev("message_start", "{}")));
    }

    #[test]
    fn proc_status_fields_are_read() {
        let status = "Name:\tlambent\nVmHWM:\t   20480 kB\nVmRSS:\t   12345 kB\nThreads:\t7\n";
        assert_eq!(parse_status_kib(status, "VmRSS"), Some(12345));
        assert_eq!(parse_status_kib(status, "VmHWM"), Some(20480));
        assert_eq!(parse_status_kib(status, "VmSwap"), None);
        assert_eq!(parse_threads(status), Some(7));
        assert_eq!(parse_threads("Name:\tx\n"), None);
    }

    #[test]
    fn cpu_ticks_are_counted_after_the_command_name() {
        let stat = "4242 (lambent (x) y) S 1 4242 4242 0 -1 4194560 1405 0 0 0 \
                    170 35 0 0 20 0 9 0 12345 123456789 4000 18446744073709551615";
        assert_eq!(parse_cpu_ticks(stat), Some(205));
        assert_eq!(parse_cpu_ticks("4242 (x) S 1 2"), None);
        assert_eq!(parse_cpu_ticks("garbage"), None);
    }

    #[test]
    fn per_stream_memory_is_the_growth_over_idle_divided() {
        let s = OpenStreams {
            streams: 1000,
            idle_rss_kib: 10_000,
            peak_rss_kib: 74_000,
            end_rss_kib: 50_000,
            ..Default::default()
        };
        assert_eq!(s.kib_per_stream(), Some(64.0));
        assert_eq!(s.kib_per_stream_end(), Some(40.0));
        assert_eq!(OpenStreams::default().kib_per_stream(), None);
    }

    #[test]
    fn medians_and_formats() {
        assert_eq!(median_u64(&[5, 1, 3]), Some(3));
        assert_eq!(median_u64(&[4, 1, 3, 2]), Some(2));
        assert_eq!(median_u64(&[]), None);
        assert_eq!(us(Some(Duration::from_nanos(1_500))), "1.5 µs");
        assert_eq!(signed_us(Some(-2.25)), "-2.2 µs");
        assert_eq!(mib(Some(1536)), "1.50 MiB");
        assert_eq!(signed_kib(Some(12)), "+12 KiB");
        assert_eq!(
            throughput(200_000_000, Some(Duration::from_secs(2))),
            "100 MB/s"
        );
        assert_eq!(throughput(1, None), "n/a");
    }

    #[test]
    fn the_report_shows_goals_and_verdicts() {
        let report = Report {
            ttft: SideBySide {
                direct: Latencies::of(&[Duration::from_micros(100)]),
                through: Latencies::of(&[Duration::from_micros(200)]),
                lambent_cpu_per_call: Some(Duration::from_micros(420)),
            },
            whole: SideBySide {
                direct: Latencies::of(&[Duration::from_micros(100)]),
                through: Latencies::of(&[Duration::from_micros(300)]),
                lambent_cpu_per_call: None,
            },
            idle_rss_kib: Some(10_240),
            streams: None,
            big: None,
            probes: vec![Probe {
                what: "GET /v1/sessions/{id}".into(),
                latencies: Latencies {
                    count: 3,
                    p50: Duration::from_micros(50),
                    p90: Duration::from_micros(60),
                    p99: Duration::from_micros(70),
                    max: Duration::from_micros(80),
                },
            }],
        };
        let table = report.markdown();
        assert!(table.contains("| TTFT, streamed p99 (1 calls each) | 100.0 µs | 200.0 µs | +100.0 µs | added ≤ 250 µs | yes |"), "{table}");
        assert!(table.contains("| latency, non-streamed p99 (1 calls each) | 100.0 µs | 300.0 µs | +200.0 µs | added ≤ 100 µs | **no** |"), "{table}");
        assert!(table.contains("10.00 MiB"), "{table}");
        assert!(
            table.contains(
                "| TTFT, streamed: lambent CPU time (user + sys) per call |  |  | 420.0 µs |"
            ),
            "{table}"
        );
        assert!(
            table.contains("| GET /v1/sessions/{id} | 3 | 50.0 µs | 60.0 µs | 70.0 µs | 80.0 µs |"),
            "{table}"
        );
    }
}
