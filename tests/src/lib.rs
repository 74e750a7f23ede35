//! Lambent's integration and end-to-end test suites: the identity, chat and
//! workflow storage suites, and [`backend_suites!`] which runs them and the
//! port contracts on one backend. The helpers they share with the benchmarks
//! are `lambent-testkit`.

pub mod chat_storage;
pub mod identity_storage;
pub mod suites;
pub mod sweeper_storage;
pub mod turn_storage;
pub mod workflow_storage;
