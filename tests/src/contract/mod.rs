//! One contract suite per port. Every adapter of the port must pass all of
//! it: `tests/integration` runs the suites on the embedded adapters,
//! `tests/aws` on the AWS adapters against the emulator.
//!
//! [`contract_tests!`](crate::contract_tests) expands a suite into one
//! `#[tokio::test]` per case, each on a fresh adapter.

pub mod cipher;
pub mod queue;
pub mod secrets;
pub mod store;

/// `contract_tests!(suite_module, async_factory_expr; case, case, ...)`:
/// one test per case, each calling `suite_module::case(&*factory.await)`.
#[macro_export]
macro_rules! contract_tests {
    ($suite:path, $make:expr; $($case:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                use $suite as suite;
                let adapter = $make.await;
                suite::$case(&*adapter).await;
            }
        )+
    };
}
