//! `lambent serve` under test: in process on a random port with a fresh data
//! directory ([`spawn_app`]), or as the real binary ([`LambentProcess`]).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use lambent_app::config::Config;
use lambent_core::clock::Clock;
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

    /// The bootstrap admin key that the first start saved.
    pub fn admin_key(&self) -> String {
        std::fs::read_to_string(self.data_dir.path().join("admin-key")).unwrap()
    }

    /// A request with `key` as its bearer token (none when empty).
    pub fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        key: &str,
    ) -> reqwest::RequestBuilder {
        let request = self.client.request(method, self.url(path));
        if key.is_empty() {
            request
        } else {
            request.bearer_auth(key)
        }
    }

    /// Sends a JSON request and returns the status and the JSON body
    /// (`Null` when there is none).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        key: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        send_json(&self.client, method, self.url(path), key.to_owned(), body).await
    }

    /// Creates a user (as the bootstrap admin) and a key for it; returns
    /// (user id, full key).
    pub async fn user_with_key(&self, name: &str, role: &str) -> (String, String) {
        let admin = self.admin_key();
        let (status, user) = self
            .call(
                reqwest::Method::POST,
                "/v1/users",
                &admin,
                Some(serde_json::json!({"name": name, "role": role})),
            )
            .await;
        assert_eq!(status, 201, "{user}");
        let user_id = user["id"].as_str().unwrap().to_owned();
        let (status, key) = self
            .call(
                reqwest::Method::POST,
                "/v1/keys",
                &admin,
                Some(serde_json::json!({"user_id": user_id, "name": "test"})),
            )
            .await;
        assert_eq!(status, 201, "{key}");
        (user_id, key["key"].as_str().unwrap().to_owned())
    }

    /// A handle on a server this process did not start (the real binary,
    /// [`LambentProcess`]) serving `data_dir` at `addr`; [`TestApp::stop`]
    /// then only forgets it.
    pub fn attached(addr: SocketAddr, data_dir: tempfile::TempDir) -> TestApp {
        TestApp {
            addr,
            data_dir,
            client: client(),
            shutdown: None,
            server: None,
        }
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

/// Sends `body` (if any) as JSON with `key` as the bearer token (none when
/// empty); returns the status and the JSON answer (`Null` when empty, a
/// string when not JSON).
pub async fn send_json(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    key: String,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let mut request = client.request(method, url);
    if !key.is_empty() {
        request = request.bearer_auth(key);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let json = if text.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))
    };
    (status, json)
}

/// The client a test speaks to `lambent serve` with: no call hangs a test
/// for longer than 30 s.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Serves the whole app on the embedded backend in a fresh data directory.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Like [`spawn_app`], with settings changed by `configure`.
pub async fn spawn_app_with(configure: impl FnOnce(&mut Config)) -> TestApp {
    spawn_app_on(lambent_core::clock::system(), configure).await
}

/// Like [`spawn_app_with`], deciding expiry and days by `clock` (a
/// [`lambent_core::clock::ManualClock`] lets a test move time instead of
/// sleeping).
pub async fn spawn_app_on(clock: Arc<dyn Clock>, configure: impl FnOnce(&mut Config)) -> TestApp {
    spawn_app_layered(clock, None, configure).await
}

/// Like [`spawn_app_on`], with the store wrapped by `store_layer` (fault
/// injection: [`crate::faults::layer`]).
pub async fn spawn_app_layered(
    clock: Arc<dyn Clock>,
    store_layer: Option<serve::StoreLayer>,
    configure: impl FnOnce(&mut Config),
) -> TestApp {
    let mut config = Config {
        // Tests run provider servers on loopback.
        allow_private_provider_urls: true,
        ..Config::default()
    };
    configure(&mut config);
    let data_dir = tempfile::Builder::new()
        .prefix("lambent-app-")
        .tempdir()
        .unwrap();
    let options = Options {
        addr: "127.0.0.1:0".parse().unwrap(),
        data_dir: data_dir.path().to_path_buf(),
        backend: Backend::Embedded,
        prefix: "lambent".into(),
        config,
        clock,
        store_layer,
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
        client: client(),
        shutdown: Some(shutdown_tx),
        server: Some(server),
    }
}

/// Serves the whole app on a state built elsewhere (on AWS services in the
/// emulator, say, with a wrapped store), with a fresh data directory for
/// the admin key. Routes only: no queue consumers and no sweeper.
pub async fn spawn_app_on_state(state: lambent_app::state::State) -> TestApp {
    let data_dir = tempfile::Builder::new()
        .prefix("lambent-app-")
        .tempdir()
        .unwrap();
    lambent_local::admin_key::ensure(&state, data_dir.path())
        .await
        .unwrap();
    let app = lambent_local::app::app(state).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, app.into_make_service())
            .with_graceful_shutdown(async move {
                let _ = shutdown_rx.await;
            })
            .await?;
        Ok(())
    });
    TestApp {
        addr,
        data_dir,
        client: client(),
        shutdown: Some(shutdown_tx),
        server: Some(server),
    }
}

/// The Python of scripts/test's venv, which has the official SDKs
/// (`LAMBENT_TEST_PYTHON`, default `~/.cache/lambent/venv/bin/python`).
pub fn test_python() -> String {
    std::env::var("LAMBENT_TEST_PYTHON").unwrap_or_else(|_| {
        let home = std::env::var("HOME").unwrap_or_default();
        format!("{home}/.cache/lambent/venv/bin/python")
    })
}

/// Runs a script with the test venv's Python and `envs`, and parses the
/// one JSON object it prints.
pub fn run_python_json(script: &str, envs: &[(&str, &str)]) -> serde_json::Value {
    let output = Command::new(test_python())
        .arg(script)
        .envs(envs.iter().copied())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "could not run {} ({e}); scripts/test installs it with the SDKs",
                test_python()
            )
        });
    assert!(
        output.status.success(),
        "{script} failed (scripts/test installs the SDKs):\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "{script} printed no JSON ({e}):\n{}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
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
        Self::serve_with_stderr(args, envs, Stdio::inherit())
    }

    /// Like [`LambentProcess::serve`], with its logs (stderr) sent to `stderr`.
    pub fn serve_with_stderr(
        args: &[&str],
        envs: &[(&str, &str)],
        stderr: impl Into<Stdio>,
    ) -> LambentProcess {
        Self::serve_bin(&lambent_bin(), args, envs, stderr)
    }

    /// Like [`LambentProcess::serve_with_stderr`], running the binary at
    /// `bin` (a benchmark measures a release build wherever it was built).
    pub fn serve_bin(
        bin: &Path,
        args: &[&str],
        envs: &[(&str, &str)],
        stderr: impl Into<Stdio>,
    ) -> LambentProcess {
        let mut command = Command::new(bin);
        command
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(stderr);
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

/// `lambent bootstrap` then `lambent serve --backend aws` on the emulator,
/// with a fresh resource prefix and data directory.
pub struct ServeOnEmulator {
    pub server: LambentProcess,
    pub data: tempfile::TempDir,
    /// The resource prefix (`<prefix>/bootstrap` is the secret's name).
    pub prefix: String,
    /// The environment the commands ran with (endpoint, region, credentials).
    pub env: Vec<(&'static str, String)>,
}

impl ServeOnEmulator {
    pub fn start(tag: &str) -> ServeOnEmulator {
        Self::start_with(tag, &[])
    }

    /// Like [`ServeOnEmulator::start`], with `extra` added to the
    /// environment of every command (settings such as `LAMBENT_*`).
    pub fn start_with(tag: &str, extra: &[(&'static str, &str)]) -> ServeOnEmulator {
        let prefix = lambent_core::ids::new_id(tag).replace('_', "-");
        let mut env = vec![
            ("AWS_ENDPOINT_URL", crate::emulator::endpoint()),
            ("AWS_REGION", crate::emulator::REGION.to_owned()),
            ("AWS_ACCESS_KEY_ID", "testing".to_owned()),
            ("AWS_SECRET_ACCESS_KEY", "testing".to_owned()),
            ("LAMBENT_ALLOW_PRIVATE_PROVIDER_URLS", "1".to_owned()),
        ];
        env.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
        let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        run_lambent(&["bootstrap", "--prefix", &prefix], &pairs);
        let data = tempfile::tempdir().unwrap();
        let data_dir = data.path().display().to_string();
        let server = LambentProcess::serve(
            &[
                "serve",
                "--addr",
                "127.0.0.1:0",
                "--data-dir",
                &data_dir,
                "--backend",
                "aws",
                "--prefix",
                &prefix,
            ],
            &pairs,
        );
        ServeOnEmulator {
            server,
            data,
            prefix,
            env,
        }
    }

    /// Runs another `lambent` command with the same environment.
    pub fn run(&self, args: &[&str]) -> String {
        let pairs: Vec<(&str, &str)> = self.env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        run_lambent(args, &pairs)
    }

    /// The bootstrap admin key the first start saved.
    pub fn admin_key(&self) -> String {
        std::fs::read_to_string(self.data.path().join("admin-key")).unwrap()
    }
}
