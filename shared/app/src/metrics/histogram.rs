//! A latency distribution in fixed buckets: what `/metrics` shows as a
//! Prometheus histogram. Fixed bounds keep recording to one comparison loop
//! and one addition, with nothing allocated.

use std::time::Duration;

use rust_decimal::Decimal;

/// Upper bounds of the buckets, in milliseconds (the last bucket has none):
/// from a fast first token to a reply near the stream deadline.
pub const BOUNDS_MS: [u64; 15] = [
    5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000, 120_000, 300_000,
];

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Histogram {
    /// Per bucket (not cumulative); the last is past every bound.
    counts: [u64; BOUNDS_MS.len() + 1],
    sum_us: u64,
}

impl Histogram {
    pub fn observe(&mut self, d: Duration) {
        let us = super::micros(d);
        let bucket = BOUNDS_MS
            .iter()
            .position(|&ms| us <= ms * 1_000)
            .unwrap_or(BOUNDS_MS.len());
        self.counts[bucket] += 1;
        self.sum_us = self.sum_us.saturating_add(us);
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The sum of every value, in seconds, exact to the microsecond.
    pub fn sum_secs(&self) -> Decimal {
        Decimal::from_i128_with_scale(i128::from(self.sum_us), 6).normalize()
    }

    /// Each bound in seconds with the count of values at or below it, then
    /// the count of all (`+Inf`): Prometheus's cumulative buckets.
    pub fn cumulative(&self) -> impl Iterator<Item = (Option<Decimal>, u64)> + '_ {
        let mut seen = 0;
        self.counts.iter().enumerate().map(move |(i, n)| {
            seen += n;
            let le = BOUNDS_MS
                .get(i)
                .map(|&ms| Decimal::from_i128_with_scale(i128::from(ms), 3).normalize());
            (le, seen)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_fall_in_their_bucket_and_sum_exactly() {
        let mut h = Histogram::default();
        h.observe(Duration::from_micros(5_000)); // on the bound: le 0.005
        h.observe(Duration::from_micros(5_001));
        h.observe(Duration::from_secs(400)); // past every bound
        let buckets: Vec<_> = h.cumulative().collect();
        assert_eq!(buckets.len(), BOUNDS_MS.len() + 1);
        assert_eq!(buckets[0], (Some("0.005".parse().unwrap()), 1));
        assert_eq!(buckets[1], (Some("0.01".parse().unwrap()), 2));
        assert_eq!(buckets[BOUNDS_MS.len() - 1].1, 2);
        assert_eq!(buckets[BOUNDS_MS.len()], (None, 3));
        assert_eq!(h.count(), 3);
        assert_eq!(h.sum_secs().to_string(), "400.010001");
    }
}
