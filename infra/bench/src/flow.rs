//! The summaries of the workflow benchmark's report, over the tallies of
//! the counting ports (`lambent_testkit::counting`).
//!
//! The orchestration (the embedded backend or the AWS emulator, the fake
//! provider, the worker driven from the queue) lives in
//! `src/bin/flowbench.rs`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

pub use lambent_testkit::counting::*;

use crate::chat::percentile;

/// Goal: store round trips per step of a chain.
pub const GOAL_ROUND_TRIPS_PER_STEP: f64 = 3.0;
/// Goal: the worker's own time per step (beyond I/O and the model call), µs.
pub const GOAL_OVERHEAD_US: f64 = 100.0;

// ------------------------------------------------------------- summaries --

/// One handled step message.
#[derive(Debug, Clone)]
pub struct StepSample {
    /// The step's ID in its workflow.
    pub step: String,
    /// Port calls during `Worker::handle`.
    pub tally: Tally,
    /// Wall time of `Worker::handle`.
    pub handle: Duration,
}

/// Mean calls of each kind per sample, and the mean time of one call of
/// each kind. Only kinds that occurred.
pub fn per_sample_means(tallies: &[&Tally]) -> Vec<(Call, f64, Duration)> {
    if tallies.is_empty() {
        return Vec::new();
    }
    let total = tallies.iter().fold(Tally::default(), |sum, t| sum.plus(t));
    Call::ALL
        .iter()
        .filter(|c| total.count(**c) > 0)
        .map(|c| {
            let n = total.count(*c);
            (
                *c,
                n as f64 / tallies.len() as f64,
                total.time_of(*c) / u32::try_from(n).unwrap_or(u32::MAX),
            )
        })
        .collect()
}

/// How many samples made each number of store round trips.
pub fn round_trip_histogram(tallies: &[&Tally]) -> BTreeMap<u64, usize> {
    let mut histogram = BTreeMap::new();
    for t in tallies {
        *histogram.entry(t.round_trips()).or_insert(0) += 1;
    }
    histogram
}

/// `4 × 1,998; 5 × 2`: round trips × samples.
pub fn describe_histogram(histogram: &BTreeMap<u64, usize>) -> String {
    histogram
        .iter()
        .map(|(trips, n)| format!("{trips} × {}", thousands(*n as u64)))
        .collect::<Vec<_>>()
        .join("; ")
}

/// 12345 → `12,345`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Percentiles of signed values (µs): p50, p90, p99, max.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    pub count: usize,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Spread {
    /// `None` for no values.
    pub fn of(values: &[f64]) -> Option<Spread> {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        Some(Spread {
            count: sorted.len(),
            p50: percentile(&sorted, 50.0)?,
            p90: percentile(&sorted, 90.0)?,
            p99: percentile(&sorted, 99.0)?,
            max: *sorted.last()?,
        })
    }
}

/// Microseconds of a duration, as a float.
pub fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// The worker's own time in each sample, µs: the wall time of `handle`
/// minus the time some port call was in flight minus the model call, as
/// `provider` estimates it for the sample's step.
pub fn overheads(samples: &[&StepSample], provider: impl Fn(&str) -> Duration) -> Vec<f64> {
    samples
        .iter()
        .map(|s| micros(s.handle) - micros(s.tally.busy) - micros(provider(&s.step)))
        .collect()
}

/// Busy CPU time of the whole machine since boot (every core: user, nice,
/// system, irq, softirq and steal ticks of `/proc/stat`).
pub fn machine_busy() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks = parse_machine_busy_ticks(&stat)?;
    let per_second = rustix::param::clock_ticks_per_second().max(1);
    Some(Duration::from_secs_f64(ticks as f64 / per_second as f64))
}

fn parse_machine_busy_ticks(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal (guest is in user).
    let at = |i: usize| fields.get(i).copied().unwrap_or(0);
    Some(at(0) + at(1) + at(2) + at(5) + at(6) + at(7))
}

/// The CPU of this process and of the whole machine, to tell how much
/// other processes used while a scenario ran.
#[derive(Debug, Clone, Copy)]
pub struct CpuMark {
    at: Instant,
    own: Option<Duration>,
    machine: Option<Duration>,
}

/// What the CPU did between two marks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuUse {
    pub wall: Duration,
    /// This process's CPU time.
    pub own: Duration,
    /// Other processes' share of the machine (1.0: every core busy).
    pub others_share: f64,
}

impl CpuMark {
    pub fn now() -> CpuMark {
        CpuMark {
            at: Instant::now(),
            own: crate::chat::cpu_time(std::process::id()),
            machine: machine_busy(),
        }
    }

    pub fn since(&self, earlier: &CpuMark, cores: usize) -> Option<CpuUse> {
        let wall = self.at - earlier.at;
        let own = self.own?.saturating_sub(earlier.own?);
        let machine = self.machine?.saturating_sub(earlier.machine?);
        let capacity = wall.as_secs_f64() * cores.max(1) as f64;
        Some(CpuUse {
            wall,
            own,
            others_share: (machine.saturating_sub(own).as_secs_f64() / capacity).max(0.0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_busy_ticks_leave_idle_and_iowait_out() {
        let stat = "cpu  100 2 30 5000 40 6 7 8 0 0\ncpu0 50 1 15 2500 20 3 3 4 0 0\n";
        assert_eq!(
            parse_machine_busy_ticks(stat),
            Some(100 + 2 + 30 + 6 + 7 + 8)
        );
        assert_eq!(parse_machine_busy_ticks("intr 1 2\n"), None);
    }

    #[test]
    fn thousands_are_separated() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
    }

    #[test]
    fn histograms_and_means() {
        let mut three = Tally::default();
        three.calls[Call::Update.index()] = 1;
        three.calls[Call::Get.index()] = 1;
        three.calls[Call::Transact.index()] = 1;
        three.time[Call::Get.index()] = Duration::from_micros(10);
        let mut four = three.clone();
        four.calls[Call::Get.index()] = 2;
        four.time[Call::Get.index()] = Duration::from_micros(30);
        let all = [&three, &three, &four];
        let h = round_trip_histogram(&all);
        assert_eq!(describe_histogram(&h), "3 × 2; 4 × 1");
        let means = per_sample_means(&all);
        let get = means.iter().find(|(c, _, _)| *c == Call::Get).unwrap();
        assert!((get.1 - 4.0 / 3.0).abs() < 1e-9);
        assert_eq!(get.2, Duration::from_micros(50) / 4);
    }

    #[test]
    fn spreads_of_signed_values() {
        let values: Vec<f64> = (1..=100).map(|v| f64::from(v) - 10.0).collect();
        let s = Spread::of(&values).unwrap();
        assert_eq!(s.p50, 40.0);
        assert_eq!(s.p99, 89.0);
        assert_eq!(s.max, 90.0);
        assert!(Spread::of(&[]).is_none());
    }
}
