//! What this process counts of its model calls, server tools and start,
//! in one place ([`Metrics`], in the [`State`](crate::state::State)), read
//! two ways: `lambent serve` shows the running totals as Prometheus text
//! ([`prometheus`]), a Lambda function writes what it counted since the
//! last flush as CloudWatch EMF lines ([`emf`]). The two never disturb each
//! other: each series keeps its totals and, apart, what the next EMF flush
//! takes.
//!
//! Dimensions are bounded: the model (the catalog's name, set by an
//! operator) and the provider kind, never a user, session, agent or key.
//! Past [`MAX_MODELS`] distinct models (or a name longer than
//! [`MAX_MODEL_LEN`]) a model is counted as [`OTHER_MODEL`], so no caller
//! can make the series grow without end. Recording takes one short lock and
//! allocates only for a model's first call (and, on Lambda, one latency
//! value per call).
//!
//! See docs/METRICS.md for every metric and where it is recorded.

pub mod emf;
mod histogram;
pub mod prometheus;

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use lambent_core::chat::Usage;
use lambent_core::provider::ProviderKind;
use rust_decimal::Decimal;

pub use histogram::{Histogram, BOUNDS_MS};

/// Distinct models counted apart; the others are [`OTHER_MODEL`].
pub const MAX_MODELS: usize = 50;
/// Longest model name counted under its own name.
pub const MAX_MODEL_LEN: usize = 200;
/// Where models past [`MAX_MODELS`] (or with too long a name) are counted.
pub const OTHER_MODEL: &str = "other";
/// Latency values kept per series between two EMF flushes; past it only
/// the counters go on (a Lambda invocation makes far fewer calls).
pub const MAX_PENDING_VALUES: usize = 1_000;

/// Something that happened to a model call, counted under its model and
/// provider kind.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// A call was billed: its tokens and cost.
    Billed { usage: &'a Usage, cost_usd: Decimal },
    /// The provider failed: before answering, mid-stream, or too slowly.
    ProviderFailed,
    /// The pipeline refused the call: it did not fit a spending limit.
    BudgetRefused,
    /// The whole provider call, from the request to the reply's end.
    Latency(Duration),
    /// From the request to the first piece of a streamed reply.
    FirstToken(Duration),
}

/// The counters of one series (or of what one flush takes of it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub calls: u64,
    pub provider_errors: u64,
    pub budget_refusals: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
    /// Exact: the sum of the billed calls' costs.
    pub cost_usd: Decimal,
}

impl Counts {
    fn add(&mut self, event: &Event<'_>) {
        match event {
            Event::Billed { usage, cost_usd } => {
                self.calls += 1;
                self.input_tokens += usage.input_tokens;
                self.output_tokens += usage.output_tokens;
                self.cache_read_tokens += usage.cache_read_tokens;
                self.cache_write_tokens += usage.cache_write_tokens;
                self.cost_usd += *cost_usd;
            }
            Event::ProviderFailed => self.provider_errors += 1,
            Event::BudgetRefused => self.budget_refusals += 1,
            Event::Latency(_) | Event::FirstToken(_) => {}
        }
    }

    pub fn is_zero(&self) -> bool {
        *self == Counts::default()
    }
}

/// The running totals of one (model, provider kind).
#[derive(Debug, Clone)]
pub struct Totals {
    pub model: String,
    pub kind: ProviderKind,
    pub counts: Counts,
    pub latency: Histogram,
    pub first_token: Histogram,
}

/// What one EMF flush takes of a series: the counters since the last
/// flush, and each latency (in microseconds) as measured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub model: String,
    pub kind: ProviderKind,
    pub counts: Counts,
    pub latency_us: Vec<u64>,
    pub first_token_us: Vec<u64>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.counts.is_zero() && self.latency_us.is_empty() && self.first_token_us.is_empty()
    }
}

/// The process's own counters: they belong to no model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcessCounts {
    pub cold_starts: u64,
    /// Server tool calls run to an answer, by outcome.
    pub tool_calls_ok: u64,
    pub tool_calls_error: u64,
    /// Whether the last sweeper pass left work for the next one (1) or not
    /// (0), as that pass reported it; `None` in a process that sweeps not.
    pub sweep_behind: Option<u64>,
}

impl ProcessCounts {
    pub fn is_zero(&self) -> bool {
        *self == ProcessCounts::default()
    }
}

/// Everything since the last EMF flush.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Drained {
    pub series: Vec<Pending>,
    pub process: ProcessCounts,
}

impl Drained {
    pub fn is_empty(&self) -> bool {
        self.series.is_empty() && self.process.is_zero()
    }
}

/// The running totals, as `/metrics` shows them: series in (model, kind)
/// order.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub series: Vec<Totals>,
    pub process: ProcessCounts,
}

struct Series {
    totals: Totals,
    pending: Pending,
}

#[derive(Default)]
struct Live {
    /// By model name, then one entry per provider kind seen with it.
    series: HashMap<String, Vec<Series>>,
    process: ProcessCounts,
    pending_process: ProcessCounts,
}

/// A process's metrics. Cheap to record into from any task.
#[derive(Default)]
pub struct Metrics {
    /// Whether EMF flushes take what is recorded (on Lambda only): the
    /// latency values are kept for them only then.
    emf: bool,
    live: Mutex<Live>,
}

impl Metrics {
    /// Metrics whose EMF flushes take what is recorded when `emf` (a
    /// Lambda function); otherwise only the running totals are kept.
    pub fn new(emf: bool) -> Metrics {
        Metrics {
            emf,
            live: Mutex::default(),
        }
    }

    fn live(&self) -> MutexGuard<'_, Live> {
        // A panic while counting leaves counters, never a broken invariant.
        self.live
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts `event` under `model` and `kind`.
    pub fn record(&self, model: &str, kind: ProviderKind, event: Event<'_>) {
        let emf = self.emf;
        self.live()
            .with_series(model, kind, |series| series.count(&event, emf));
    }

    /// One start of this process (a Lambda cold start).
    pub fn cold_start(&self) {
        self.process(|p| p.cold_starts += 1);
    }

    /// A server tool call answered: `ok` unless its answer is an error.
    pub fn tool_call(&self, ok: bool) {
        self.process(|p| {
            if ok {
                p.tool_calls_ok += 1
            } else {
                p.tool_calls_error += 1
            }
        });
    }

    /// A sweeper pass ended, `behind` if it stopped at its bounds with work
    /// left for the next pass.
    pub fn sweep_pass(&self, behind: bool) {
        self.process(|p| p.sweep_behind = Some(behind as u64));
    }

    fn process(&self, count: impl Fn(&mut ProcessCounts)) {
        let emf = self.emf;
        let mut live = self.live();
        count(&mut live.process);
        if emf {
            count(&mut live.pending_process);
        }
    }

    /// Takes what was recorded since the last call (for an EMF flush); the
    /// running totals stay.
    pub fn drain(&self) -> Drained {
        let mut live = self.live();
        let mut series: Vec<Pending> = live
            .series
            .values_mut()
            .flatten()
            .filter(|s| !s.pending.is_empty())
            .map(|s| {
                let empty = Pending {
                    model: s.pending.model.clone(),
                    kind: s.pending.kind,
                    counts: Counts::default(),
                    latency_us: Vec::new(),
                    first_token_us: Vec::new(),
                };
                std::mem::replace(&mut s.pending, empty)
            })
            .collect();
        series.sort_by(|a, b| (&a.model, a.kind.as_str()).cmp(&(&b.model, b.kind.as_str())));
        let process = std::mem::take(&mut live.pending_process);
        Drained { series, process }
    }

    /// The running totals.
    pub fn snapshot(&self) -> Snapshot {
        let live = self.live();
        let mut series: Vec<Totals> = live
            .series
            .values()
            .flatten()
            .map(|s| s.totals.clone())
            .collect();
        series.sort_by(|a, b| (&a.model, a.kind.as_str()).cmp(&(&b.model, b.kind.as_str())));
        Snapshot {
            series,
            process: live.process,
        }
    }
}

impl Live {
    /// Hands `count` the series of `model` and `kind`, made on its first
    /// event; past the cap, [`OTHER_MODEL`]'s.
    fn with_series(&mut self, model: &str, kind: ProviderKind, count: impl FnOnce(&mut Series)) {
        let own_name = self.series.len() < MAX_MODELS && model.len() <= MAX_MODEL_LEN;
        let model = if own_name || self.series.contains_key(model) {
            model
        } else {
            OTHER_MODEL
        };
        let of_kind =
            |kinds: &mut Vec<Series>| match kinds.iter().position(|s| s.totals.kind == kind) {
                Some(at) => count(&mut kinds[at]),
                None => {
                    let mut series = Series::new(model, kind);
                    count(&mut series);
                    kinds.push(series);
                }
            };
        match self.series.get_mut(model) {
            Some(kinds) => of_kind(kinds),
            None => {
                let mut kinds = Vec::with_capacity(1);
                of_kind(&mut kinds);
                self.series.insert(model.to_owned(), kinds);
            }
        }
    }
}

impl Series {
    fn count(&mut self, event: &Event<'_>, emf: bool) {
        self.totals.counts.add(event);
        match event {
            Event::Latency(d) => self.totals.latency.observe(*d),
            Event::FirstToken(d) => self.totals.first_token.observe(*d),
            _ => {}
        }
        if !emf {
            return;
        }
        self.pending.counts.add(event);
        let (values, d) = match event {
            Event::Latency(d) => (&mut self.pending.latency_us, d),
            Event::FirstToken(d) => (&mut self.pending.first_token_us, d),
            _ => return,
        };
        if values.len() < MAX_PENDING_VALUES {
            values.push(micros(*d));
        }
    }

    fn new(model: &str, kind: ProviderKind) -> Series {
        Series {
            totals: Totals {
                model: model.to_owned(),
                kind,
                counts: Counts::default(),
                latency: Histogram::default(),
                first_token: Histogram::default(),
            },
            pending: Pending {
                model: model.to_owned(),
                kind,
                counts: Counts::default(),
                latency_us: Vec::new(),
                first_token_us: Vec::new(),
            },
        }
    }
}

/// A duration in whole microseconds (saturating).
pub(crate) fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(input: u64, output: u64) -> Usage {
        Usage {
            input_tokens: input,
            output_tokens: output,
            ..Usage::default()
        }
    }

    #[test]
    fn totals_and_pending_are_kept_apart() {
        let m = Metrics::new(true);
        let u = usage(10, 2);
        let billed = Event::Billed {
            usage: &u,
            cost_usd: Decimal::new(15, 3),
        };
        m.record("m1", ProviderKind::Anthropic, billed);
        m.record("m1", ProviderKind::Anthropic, billed);
        m.record(
            "m1",
            ProviderKind::Anthropic,
            Event::Latency(Duration::from_millis(7)),
        );
        let drained = m.drain();
        assert_eq!(drained.series.len(), 1);
        assert_eq!(drained.series[0].counts.calls, 2);
        assert_eq!(drained.series[0].counts.cost_usd, Decimal::new(30, 3));
        assert_eq!(drained.series[0].latency_us, [7_000]);
        // Drained once; the totals stay.
        assert!(m.drain().is_empty());
        let totals = m.snapshot();
        assert_eq!(totals.series[0].counts.calls, 2);
        assert_eq!(totals.series[0].latency.count(), 1);
        m.record("m1", ProviderKind::Anthropic, billed);
        assert_eq!(m.drain().series[0].counts.calls, 1);
        assert_eq!(m.snapshot().series[0].counts.calls, 3);
    }

    #[test]
    fn without_emf_nothing_waits_for_a_flush() {
        let m = Metrics::new(false);
        m.record("m1", ProviderKind::Openai, Event::BudgetRefused);
        m.record(
            "m1",
            ProviderKind::Openai,
            Event::FirstToken(Duration::from_millis(3)),
        );
        m.cold_start();
        m.tool_call(true);
        assert!(m.drain().is_empty());
        let totals = m.snapshot();
        assert_eq!(totals.series[0].counts.budget_refusals, 1);
        assert_eq!(totals.process.cold_starts, 1);
        assert_eq!(totals.process.tool_calls_ok, 1);
    }

    #[test]
    fn models_past_the_cap_are_counted_as_other() {
        let m = Metrics::new(false);
        for i in 0..MAX_MODELS + 20 {
            m.record(
                &format!("model-{i}"),
                ProviderKind::Openai,
                Event::ProviderFailed,
            );
        }
        m.record(
            &"x".repeat(MAX_MODEL_LEN + 1),
            ProviderKind::Anthropic,
            Event::ProviderFailed,
        );
        // A model counted before the cap keeps its own series.
        m.record("model-0", ProviderKind::Anthropic, Event::ProviderFailed);
        let totals = m.snapshot();
        let models: std::collections::BTreeSet<&str> =
            totals.series.iter().map(|s| s.model.as_str()).collect();
        assert_eq!(models.len(), MAX_MODELS + 1);
        assert!(models.contains(OTHER_MODEL));
        let other: u64 = totals
            .series
            .iter()
            .filter(|s| s.model == OTHER_MODEL)
            .map(|s| s.counts.provider_errors)
            .sum();
        assert_eq!(other, 21);
        let model_0: Vec<_> = totals
            .series
            .iter()
            .filter(|s| s.model == "model-0")
            .collect();
        assert_eq!(model_0.len(), 2, "one series per provider kind");
    }

    #[test]
    fn pending_values_are_bounded() {
        let m = Metrics::new(true);
        for _ in 0..MAX_PENDING_VALUES + 5 {
            m.record(
                "m",
                ProviderKind::Openai,
                Event::Latency(Duration::from_millis(1)),
            );
        }
        let drained = m.drain();
        assert_eq!(drained.series[0].latency_us.len(), MAX_PENDING_VALUES);
        assert_eq!(
            m.snapshot().series[0].latency.count(),
            MAX_PENDING_VALUES as u64 + 5
        );
    }
}
