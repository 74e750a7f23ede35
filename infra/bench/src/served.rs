//! What the benchmarks that measure the release `lambent serve` share: the
//! runtime they measure from, finding the binary, starting it on a data
//! directory, and the requests that must succeed.

use std::future::Future;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Result};
use lambent_testkit::app::LambentProcess;
use reqwest::{RequestBuilder, Response};

/// Runs `run` on two Tokio workers, as many as the cores of the machine the
/// figures were taken on: the harness's client, fake provider and tool
/// server share them.
pub fn on_two_workers(run: impl Future<Output = Result<()>>) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run)
}

/// The `lambent` binary to measure: `given`, or the release build in
/// `$CARGO_TARGET_DIR` (default `target`).
pub fn lambent_binary(given: Option<&Path>) -> Result<PathBuf> {
    let bin = match given {
        Some(bin) => bin.to_path_buf(),
        None => {
            let target = std::env::var_os("CARGO_TARGET_DIR").unwrap_or_else(|| "target".into());
            Path::new(&target).join("release/lambent")
        }
    };
    ensure!(
        bin.is_file(),
        "no {} (build it or pass --lambent)",
        bin.display()
    );
    Ok(bin)
}

/// `lambent serve` on embedded storage in `data_dir`, logging to
/// `lambent.log` there (one line per request, as a deployment logs), with
/// the provider on loopback, a provider idle timeout long enough for held
/// streams, and `envs` besides; killed when dropped. `bench` names the
/// benchmark in its progress lines.
pub fn serve(
    bench: &str,
    bin: &Path,
    data_dir: &Path,
    envs: &[(&str, &str)],
) -> Result<LambentProcess> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(data_dir.join("lambent.log"))?;
    let dir = data_dir.display().to_string();
    let mut args: Vec<&str> = "serve --backend embedded --addr 127.0.0.1:0 --data-dir"
        .split(' ')
        .collect();
    args.push(&dir);
    let mut all = vec![
        ("LAMBENT_ALLOW_PRIVATE_PROVIDER_URLS", "1"),
        ("LAMBENT_PROVIDER_IDLE_TIMEOUT_MS", "900000"),
        ("RUST_LOG", "info"),
        ("LAMBENT_LOG_FORMAT", "text"),
    ];
    all.extend_from_slice(envs);
    let process = LambentProcess::serve_bin(bin, &args, &all, log);
    eprintln!(
        "{bench}: lambent (pid {}) on {}",
        process.child.id(),
        process.addr
    );
    Ok(process)
}

/// The response to `request`, unless its status is not 2xx.
pub async fn ok(request: RequestBuilder) -> Result<Response> {
    let response = request.send().await?;
    let status = response.status();
    if !status.is_success() {
        bail!("{status}: {}", response.text().await.unwrap_or_default());
    }
    Ok(response)
}
