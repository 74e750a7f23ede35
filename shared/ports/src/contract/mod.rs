//! One contract suite per port (the `testkit` feature): every adapter of the
//! port must pass all of it. Lambent's own tests run them on the embedded
//! adapters and, against the emulator, on the AWS adapters (`backend_suites!`
//! in `tests/src/suites.rs`); an adapter of your own can run them too.

// A test suite: a failed expectation is a panic, as in any test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod cipher;
pub mod queue;
pub mod secrets;
pub mod store;
