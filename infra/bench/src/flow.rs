//! The summaries of the workflow benchmark's report, over the tallies of
//! the test kit's counting ports. The orchestration lives in
//! `src/bin/flowbench.rs`.

use std::collections::BTreeMap;
use std::time::Duration;

pub use lambent_testkit::counting::*;

/// Goal: store round trips per step of a chain.
pub const GOAL_ROUND_TRIPS_PER_STEP: f64 = 3.0;
/// Goal: the worker's own time per step (beyond I/O and the model call), µs.
pub const GOAL_OVERHEAD_US: f64 = 100.0;

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

/// The sum of some tallies.
pub fn total<'a>(tallies: impl IntoIterator<Item = &'a Tally>) -> Tally {
    tallies
        .into_iter()
        .fold(Tally::default(), |sum, t| sum.plus(t))
}

/// Mean calls of each kind per sample, and the mean time of one call of
/// each kind. Only kinds that occurred.
pub fn per_sample_means(tallies: &[&Tally]) -> Vec<(Call, f64, Duration)> {
    let sum = total(tallies.iter().copied());
    Call::ALL
        .into_iter()
        .filter(|c| sum.count(*c) > 0)
        .map(|c| {
            let n = sum.count(c);
            let mean = sum.time_of(c) / u32::try_from(n).unwrap_or(u32::MAX);
            (c, n as f64 / tallies.len() as f64, mean)
        })
        .collect()
}

/// `4 × 1,998; 5 × 2`: how many samples made each number of store round trips.
pub fn round_trip_histogram(tallies: &[&Tally]) -> String {
    let mut histogram = BTreeMap::new();
    for t in tallies {
        *histogram.entry(t.round_trips()).or_insert(0u64) += 1;
    }
    let cells: Vec<String> = histogram
        .iter()
        .map(|(trips, n)| format!("{trips} × {}", thousands(*n)))
        .collect();
    cells.join("; ")
}

/// 12345 → `12,345`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Microseconds of a duration, as a float.
pub fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// The worker's own time in a sample, µs: the wall time of `handle` minus
/// the time some port call was in flight minus the model call (`provider`).
pub fn overhead(sample: &StepSample, provider: Duration) -> f64 {
    micros(sample.handle) - micros(sample.tally.busy) - micros(provider)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_are_separated() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
    }

    #[test]
    fn histograms_means_and_overheads() {
        let mut three = Tally::default();
        three.calls[Call::Update.index()] = 1;
        three.calls[Call::Get.index()] = 1;
        three.calls[Call::Transact.index()] = 1;
        three.time[Call::Get.index()] = Duration::from_micros(10);
        let mut four = three.clone();
        four.calls[Call::Get.index()] = 2;
        four.time[Call::Get.index()] = Duration::from_micros(30);
        let all = [&three, &three, &four];
        assert_eq!(round_trip_histogram(&all), "3 × 2; 4 × 1");
        let means = per_sample_means(&all);
        let get = means.iter().find(|(c, _, _)| *c == Call::Get).unwrap();
        assert!((get.1 - 4.0 / 3.0).abs() < 1e-9);
        assert_eq!(get.2, Duration::from_micros(50) / 4);
        four.busy = Duration::from_micros(300);
        let sample = StepSample {
            step: "s1".into(),
            tally: four,
            handle: Duration::from_micros(1000),
        };
        assert_eq!(overhead(&sample, Duration::from_micros(650)).round(), 50.0);
    }
}
