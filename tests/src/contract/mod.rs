//! One contract suite per port. Every adapter of the port must pass all of
//! it: `tests/integration` runs the suites on the embedded adapters,
//! `tests/aws` on the AWS adapters against the emulator, each with one
//! [`backend_suites!`](crate::backend_suites) call (`crate::suites`).

pub mod cipher;
pub mod queue;
pub mod secrets;
pub mod store;

/// `each_case!(suite_module, async_factory_expr; case, case, ...)`: one test
/// per case, each calling `suite_module::case(&factory.await)` on a fresh
/// storage; `each_case!(adapter suite_module, ...)` lends the adapter inside
/// its holder (`&*held`) instead.
#[macro_export]
macro_rules! each_case {
    (adapter $suite:path, $make:expr; $($case:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                use $suite as suite;
                let adapter = $make.await;
                suite::$case(&*adapter).await;
            }
        )+
    };
    ($suite:path, $make:expr; $($case:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                use $suite as suite;
                let subject = $make.await;
                suite::$case(&subject).await;
            }
        )+
    };
}
