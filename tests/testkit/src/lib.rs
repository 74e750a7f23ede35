//! `lambent-testkit`: what Lambent's tests and benchmarks share. `lambent
//! serve` in process or as the real binary ([`app`]), a chat world with a
//! fake provider and the one SSE parser's events ([`chat`]), the AWS emulator
//! and fresh adapters on it ([`emulator`]) or on embedded storage
//! ([`embedded`]), ports that count and time their calls ([`counting`]) or
//! fail on purpose ([`faults`]), a store that conflicts on contention as
//! DynamoDB does ([`contention`]), the store round trips a turn waits for
//! before its provider request ([`first_token`]), the DynamoDB capacity
//! units a store's calls would cost ([`units`]), and [`eventually`]
//! polling with a deadline.

pub mod app;
pub mod chat;
pub mod contention;
pub mod counting;
pub mod embedded;
pub mod emulator;
mod eventually;
pub mod faults;
pub mod first_token;
pub mod units;

pub use eventually::eventually;

/// A workflow of steps `(id, prompt, needs)`: a diamond with a join, plus an
/// independent branch (two sinks). The worker suites and the workflow
/// benchmark run it.
pub const DIAMOND: &[(&str, &str, &[&str])] = &[
    ("research", "Research {{input.topic}}", &[]),
    (
        "summary",
        "Summarise: {{steps.research.output}}",
        &["research"],
    ),
    (
        "critique",
        "Critique: {{steps.research.output}}",
        &["research"],
    ),
    (
        "merge",
        "Merge [{{steps.summary.output}}] with [{{steps.critique.output}}]",
        &["summary", "critique"],
    ),
    ("title", "Title for {{input.topic}}", &[]),
];

use std::ops::Deref;

/// An adapter together with whatever must live as long as it (a temporary
/// data directory).
pub struct Held<T: ?Sized> {
    inner: Box<T>,
    _guard: Option<tempfile::TempDir>,
}

impl<T: ?Sized> Held<T> {
    pub fn new(inner: Box<T>, guard: Option<tempfile::TempDir>) -> Self {
        Held {
            inner,
            _guard: guard,
        }
    }
}

impl<T: ?Sized> Deref for Held<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.inner
    }
}
