//! `lambent serve` on the embedded backend with a store that fails a share
//! of its writes at random (`LAMBENT_CHAOS_WRITE_FAILURE_PERCENT`), for the
//! chaos test (`tests/integration/chaos.rs`), which also kills it with
//! SIGKILL. Test-only: the product binary has no fault injection.
//!
//! Usage: chaos-serve <addr> <data dir>

use std::sync::Arc;

use lambent_local::serve::{self, Backend, Options};
use lambent_testkit::faults::{self, Faults};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    lambent_boot::telemetry::init(lambent_boot::telemetry::format_from_env());
    let mut args = std::env::args().skip(1);
    let (Some(addr), Some(data_dir)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: chaos-serve <addr> <data dir>");
    };
    let percent: f64 = std::env::var("LAMBENT_CHAOS_WRITE_FAILURE_PERCENT")
        .ok()
        .map(|p| p.parse())
        .transpose()?
        .unwrap_or(0.0);
    let faults: Arc<Faults> = Faults::new();
    faults.fail_randomly(percent);
    let options = Options {
        addr: addr.parse()?,
        data_dir: data_dir.into(),
        backend: Backend::Embedded,
        prefix: "lambent".into(),
        config: lambent_app::config::Config::from_env(&lambent_core::env::ProcessEnv)?,
        clock: lambent_core::clock::system(),
        store_layer: Some(faults::layer(faults)),
    };
    serve::run(options, std::future::pending(), |bound| {
        println!("lambent listening on http://{bound}");
    })
    .await
}
