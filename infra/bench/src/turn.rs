//! The pure parts of the agent-turn benchmark, tested on their own: the
//! goals, the write specs of its command line, the split of a traced turn's
//! store calls into event-log writes and the rest, the reconnect points of
//! the resume phase and the overhead per loop round. The orchestration
//! lives in `src/bin/turnbench.rs`.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use lambent_testkit::counting::{Call, Traced};

/// Goal: store writes per streamed token (a delta of the fake is a token).
pub const GOAL_WRITES_PER_DELTA: f64 = 0.05;
/// Goal: time from a reconnect's request to its first replayed event, p99, µs.
pub const GOAL_RESUME_P99_US: f64 = 5_000.0;
/// Goal: Lambent's own time per loop round, beyond the model and tool calls,
/// p50, µs.
pub const GOAL_ROUND_OVERHEAD_P50_US: f64 = 200.0;

/// One turn of the writes phase: `deltas` text deltas, one every
/// `pace_ms`; read live by the client that started it (a streamed turn), or
/// (`followed`) a background turn read by a follower of its events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteSpec {
    pub deltas: u64,
    pub pace_ms: u64,
    pub followed: bool,
}

impl WriteSpec {
    /// `DELTAS:PACE_MS` or `DELTAS:PACE_MS:followed`, e.g. `1000:20:followed`.
    pub fn parse(spec: &str) -> Result<WriteSpec> {
        let parts: Vec<&str> = spec.split(':').map(str::trim).collect();
        let followed = match parts[..] {
            [_, _] => false,
            [_, _, "followed"] => true,
            _ => bail!("{spec:?}: DELTAS:PACE_MS[:followed]"),
        };
        let number = |part: &str| {
            part.parse::<u64>()
                .with_context(|| format!("{spec:?}: {part:?} is not a number"))
        };
        let (deltas, pace_ms) = (number(parts[0])?, number(parts[1])?);
        if deltas == 0 {
            bail!("{spec:?}: DELTAS must be above 0");
        }
        Ok(WriteSpec {
            deltas,
            pace_ms,
            followed,
        })
    }
}

/// Whether a store call writes: a put, update, delete or transaction
/// (each one round trip, however many items a transaction has).
pub fn is_write(call: Call) -> bool {
    matches!(
        call,
        Call::Put | Call::Update | Call::Delete | Call::Transact
    )
}

/// Whether a traced call writes a batch of a turn's events
/// (`SESSION#…/EVT#<turn>#<first id>`).
pub fn is_event_write(traced: &Traced) -> bool {
    is_write(traced.call) && traced.what.contains("/EVT#")
}

/// A traced call's description with every run of digits as `N`, so the
/// calls of the same kind group together (event ids, dates, item counts).
pub fn normalize(what: &str) -> String {
    let mut out = String::with_capacity(what.len());
    let mut in_digits = false;
    for c in what.chars() {
        if c.is_ascii_digit() {
            if !in_digits {
                out.push('N');
            }
            in_digits = true;
        } else {
            out.push(c);
            in_digits = false;
        }
    }
    out
}

/// The store calls of a traced turn, split.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WriteSplit {
    /// Writes of event batches.
    pub event_writes: u64,
    /// Every other write.
    pub other_writes: u64,
    /// Gets and queries.
    pub reads: u64,
    /// Time in the event writes and in the other writes.
    pub event_time: Duration,
    pub other_time: Duration,
    /// Each kind of write but the event batches (`store.transact N items:
    /// …`, digits as `N`) and how often it was made.
    pub others: BTreeMap<String, u64>,
}

impl WriteSplit {
    pub fn of(trace: &[Traced]) -> WriteSplit {
        let mut split = WriteSplit::default();
        for traced in trace {
            if !is_write(traced.call) {
                if matches!(traced.call, Call::Get | Call::Query) {
                    split.reads += 1;
                }
                continue;
            }
            if is_event_write(traced) {
                split.event_writes += 1;
                split.event_time += traced.took;
            } else {
                split.other_writes += 1;
                split.other_time += traced.took;
                let kind = format!("{} {}", traced.call.label(), normalize(&traced.what));
                *split.others.entry(kind).or_insert(0) += 1;
            }
        }
        split
    }

    pub fn writes(&self) -> u64 {
        self.event_writes + self.other_writes
    }
}

/// The `Last-Event-ID`s of `count` reconnects to a finished turn of
/// `events` events (ids 0 to `events` − 1), spread over 0 to `events` − 2 so
/// that every reconnect has at least `done` to replay; `shift` moves the
/// sequence (a different one per repetition).
pub fn resume_points(events: u64, count: usize, shift: u64) -> Vec<u64> {
    let span = events.saturating_sub(1).max(1);
    (0..count as u64)
        .map(|i| (i.wrapping_add(shift)).wrapping_mul(7_919) % span)
        .collect()
}

/// µs of a duration.
pub fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Lambent's own time per loop round of one turn, µs: the turn through
/// Lambent less the same model and tool calls made directly, divided by
/// the rounds.
pub fn overhead_per_round(through: Duration, direct: Duration, rounds: u32) -> f64 {
    (micros(through) - micros(direct)) / f64::from(rounds.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn traced(call: Call, what: &str, micros: u64) -> Traced {
        Traced {
            call,
            what: what.into(),
            took: Duration::from_micros(micros),
        }
    }

    #[test]
    fn write_specs_parse() {
        let spec = WriteSpec::parse("1000:5").unwrap();
        assert_eq!((spec.deltas, spec.pace_ms, spec.followed), (1000, 5, false));
        let spec = WriteSpec::parse("10000:20:followed").unwrap();
        assert_eq!(
            (spec.deltas, spec.pace_ms, spec.followed),
            (10000, 20, true)
        );
        assert!(WriteSpec::parse("0:5").is_err());
        assert!(WriteSpec::parse("10:5:1000").is_err());
        assert!(WriteSpec::parse("ten:5").is_err());
        assert!(WriteSpec::parse("10").is_err());
    }

    #[test]
    fn event_batches_are_told_from_other_writes() {
        let trace = [
            traced(Call::Put, "SESSION#ses_…/EVT#msg_…#0000000000 (if)", 900),
            traced(Call::Put, "SESSION#ses_…/EVT#msg_…#0000000205 (if)", 1100),
            traced(
                Call::Transact,
                "4 items: put SESSION#ses_…/MSG#msg_… (if); put USER#usr_…/SLOT#3",
                700,
            ),
            traced(Call::Delete, "USER#usr_…/SLOT#3", 300),
            traced(Call::Delete, "USER#usr_…/SLOT#4", 300),
            traced(Call::Get, "USER#usr_…/SESSION#ses_…", 40),
            traced(Call::Query, "SESSION#ses_… prefix \"MSG#\", limit 50", 60),
            traced(Call::StorePing, "", 10),
        ];
        let split = WriteSplit::of(&trace);
        assert_eq!(split.event_writes, 2);
        assert_eq!(split.other_writes, 3);
        assert_eq!(split.writes(), 5);
        assert_eq!(split.reads, 2);
        assert_eq!(split.event_time, Duration::from_micros(2000));
        assert_eq!(split.others.get("store.delete USER#usr_…/SLOT#N"), Some(&2));
        assert_eq!(split.others.len(), 2);
    }

    #[test]
    fn digits_group() {
        assert_eq!(normalize("EVT#msg_…#0000000205"), "EVT#msg_…#N");
        assert_eq!(normalize("DAY#2026-12-01"), "DAY#N-N-N");
        assert_eq!(normalize("no digits"), "no digits");
    }

    #[test]
    fn resume_points_stay_before_done() {
        let points = resume_points(200, 1000, 0);
        assert_eq!(points.len(), 1000);
        assert!(points.iter().all(|&k| k <= 198));
        // Spread: every id 0..=198 is used (7919 is prime to 199).
        let mut seen = points.clone();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 199);
        assert_ne!(resume_points(200, 5, 1), resume_points(200, 5, 0));
        assert_eq!(resume_points(1, 3, 0), vec![0, 0, 0]);
    }

    #[test]
    fn overhead_is_per_round() {
        let through = Duration::from_micros(10_000);
        let direct = Duration::from_micros(4_000);
        assert_eq!(overhead_per_round(through, direct, 3), 2_000.0);
        assert_eq!(overhead_per_round(direct, through, 0), -6_000.0);
    }
}
