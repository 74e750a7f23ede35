//! `lambent serve` under test: in process on a random port with a fresh data
//! directory ([`spawn_app`]), or as the real binary ([`LambentProcess`]).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use lambent_local::serve::{self, Backend, Options};
use tokio::sync::oneshot;

pub struct TestApp {
    pub addr: SocketAddr,
    pub data_dir: tempfile::TempDir,
    pub client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stops the server and waits for it (and its queue consumers) to end.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.unwrap().unwrap();
        }
    }
}

/// Serves the whole app on the embedded backend in a fresh data directory.
pub async fn spawn_app() -> TestApp {
    let data_dir = tempfile::Builder::new()
        .prefix("lambent-app-")
        .tempdir()
        .unwrap();
    let options = Options {
        addr: "127.0.0.1:0".parse().unwrap(),
        data_dir: data_dir.path().to_path_buf(),
        backend: Backend::Embedded,
        prefix: "lambent".into(),
    };
    let (ready_tx, ready_rx) = oneshot::channel();
    let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
    let server = tokio::spawn(serve::run(
        options,
        async move {
            let _ = shutdown_rx.await;
        },
        move |addr| {
            let _ = ready_tx.send(addr);
        },
    ));
    let addr = ready_rx.await.expect("lambent serve failed to start");
    TestApp {
        addr,
        data_dir,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
        shutdown: Some(shutdown_tx),
        server: Some(server),
    }
}

/// The `lambent` binary next to this test binary (`target/<profile>/lambent`),
/// or `LAMBENT_BIN`. `scripts/test` builds it before the tests.
pub fn lambent_bin() -> PathBuf {
    if let Ok(path) = std::env::var("LAMBENT_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test binary> -> target/<profile>/lambent
    let path = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("lambent"))
        .unwrap();
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build -p lambent-local` (scripts/test does)",
        path.display()
    );
    path
}

/// The real `lambent` binary, killed on drop.
pub struct LambentProcess {
    pub child: Child,
    /// Everything it printed on stdout up to "listening".
    pub banner: Vec<String>,
    pub addr: SocketAddr,
}

impl LambentProcess {
    /// Runs `lambent <args>` with `envs`, waiting for its "listening" line.
    pub fn serve(args: &[&str], envs: &[(&str, &str)]) -> LambentProcess {
        let mut command = Command::new(lambent_bin());
        command
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in envs {
            command.env(k, v);
        }
        let mut child = command.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // Keep draining after the banner, so the child never blocks on a full pipe.
                let _ = tx.send(line);
            }
        });
        let mut banner = Vec::new();
        loop {
            let Ok(line) = rx.recv_timeout(Duration::from_secs(60)) else {
                let _ = child.kill();
                let _ = child.wait();
                panic!("lambent did not start; it printed {banner:?}");
            };
            if let Some(addr) = line.strip_prefix("lambent listening on http://") {
                let addr = addr.trim().parse().unwrap();
                banner.push(line);
                return LambentProcess {
                    child,
                    banner,
                    addr,
                };
            }
            banner.push(line);
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for LambentProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs `lambent <args>` to completion and returns its stdout.
pub fn run_lambent(args: &[&str], envs: &[(&str, &str)]) -> String {
    let mut command = Command::new(lambent_bin());
    command.args(args).env("RUST_LOG", "warn");
    for (k, v) in envs {
        command.env(k, v);
    }
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "lambent {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
