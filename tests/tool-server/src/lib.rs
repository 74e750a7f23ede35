//! A fake server-tool endpoint for tests: an HTTP/1.1 server on loopback
//! that plays the tool side of Lambent's server tools. Lambent POSTs
//! `{"tool_call_id","name","input","session_id"?,"run_id"?}` with an
//! `Idempotency-Key: <tool_call_id>` header to a tool's URL; this server
//! accepts a POST to any path, records it, and answers with the scripted
//! [`ToolReply`] for that path (so one server hosts several tools).
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use lambent_tool_server::{ToolReply, ToolServer};
//! use serde_json::json;
//! let tools = ToolServer::start().await?;
//! tools.push("/tools/weather", ToolReply::json(json!({ "temp_c": 21 })));
//! tools.set_default("/tools/slow", ToolReply::echo().delay(std::time::Duration::from_secs(2)));
//! // configure the agent's tool with `http: {"url": tools.url("/tools/weather")}` ...
//! let seen = tools.requests_to("/tools/weather");
//! # drop(seen);
//! # Ok(())
//! # }
//! ```

mod recorded;
mod reply;
mod server;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::net::TcpListener;
use tokio::task::AbortHandle;

pub use recorded::ToolRequest;
pub use reply::{large_text, ToolReply};

/// The scripted answers of one path.
#[derive(Default)]
struct Script {
    queue: VecDeque<ToolReply>,
    default: Option<ToolReply>,
}

/// State shared by the server's tasks and the [`ToolServer`] handle.
pub(crate) struct Shared {
    scripts: Mutex<HashMap<String, Script>>,
    requests: Mutex<Vec<ToolRequest>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

/// Locks a mutex, ignoring poisoning (a panicking test thread must not make
/// the server panic too).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A path as the server sees it: with a leading `/`.
fn normalize(path: &str) -> String {
    if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    }
}

impl Shared {
    fn new() -> Shared {
        Shared {
            scripts: Mutex::new(HashMap::new()),
            requests: Mutex::new(Vec::new()),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        }
    }

    pub(crate) fn record(&self, request: ToolRequest) {
        lock(&self.requests).push(request);
    }

    /// The answer for a request to `path`: its oldest queued reply, else its
    /// default, else [`ToolReply::echo`].
    pub(crate) fn next_reply(&self, path: &str) -> ToolReply {
        let mut scripts = lock(&self.scripts);
        let Some(script) = scripts.get_mut(path) else {
            return ToolReply::echo();
        };
        if let Some(reply) = script.queue.pop_front() {
            return reply;
        }
        script.default.clone().unwrap_or_default()
    }

    /// Counts a request as being answered until the guard drops.
    pub(crate) fn begin(self: &Arc<Self>) -> InFlight {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight {
            shared: self.clone(),
        }
    }
}

/// A request being answered; dropped when its response is handed to hyper
/// (before the client can read it) or when the request is abandoned.
pub(crate) struct InFlight {
    shared: Arc<Shared>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.shared.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The running tool server. Dropping it stops the server and closes every
/// connection.
pub struct ToolServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: AbortHandle,
}

impl ToolServer {
    /// Binds `127.0.0.1:0` and starts serving on the current Tokio runtime.
    pub async fn start() -> std::io::Result<ToolServer> {
        let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new());
        let server = tokio::spawn(server::serve(listener, shared.clone())).abort_handle();
        Ok(ToolServer {
            addr,
            shared,
            server,
        })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL of a path on this server, e.g. `url("/tools/weather")` is
    /// `http://127.0.0.1:PORT/tools/weather` (a missing leading `/` is
    /// added).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, normalize(path))
    }

    /// Queues a one-shot answer for requests to `path`; each request takes
    /// the oldest one queued for its path.
    pub fn push(&self, path: &str, reply: ToolReply) {
        lock(&self.shared.scripts)
            .entry(normalize(path))
            .or_default()
            .queue
            .push_back(reply);
    }

    /// The answer for every request to `path` that finds nothing queued for
    /// it. Without one, such a request gets [`ToolReply::echo`].
    pub fn set_default(&self, path: &str, reply: ToolReply) {
        lock(&self.shared.scripts)
            .entry(normalize(path))
            .or_default()
            .default = Some(reply);
    }

    /// How many queued answers for `path` are still waiting for a request.
    pub fn queued(&self, path: &str) -> usize {
        lock(&self.shared.scripts)
            .get(&normalize(path))
            .map_or(0, |script| script.queue.len())
    }

    /// Every request received, in order of arrival (recorded as soon as its
    /// body is read, before any delay, so hung requests are included).
    pub fn requests(&self) -> Vec<ToolRequest> {
        lock(&self.shared.requests).clone()
    }

    /// The requests to one path, in order of arrival.
    pub fn requests_to(&self, path: &str) -> Vec<ToolRequest> {
        let path = normalize(path);
        lock(&self.shared.requests)
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    /// How many requests (to any path) carried this `Idempotency-Key`.
    pub fn count_with_key(&self, key: &str) -> usize {
        lock(&self.shared.requests)
            .iter()
            .filter(|r| r.idempotency_key.as_deref() == Some(key))
            .count()
    }

    /// Requests being answered now: received, and their response not yet
    /// handed over (delayed and hung ones included, until their client goes
    /// away). A response counts out before the client can read it, so once
    /// a client has its answer, its request no longer counts.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::SeqCst)
    }

    /// The most requests ever in flight at once (since the start or the
    /// last [`clear`](Self::clear)).
    pub fn max_in_flight(&self) -> usize {
        self.shared.max_in_flight.load(Ordering::SeqCst)
    }

    /// Forgets the recorded requests and resets
    /// [`max_in_flight`](Self::max_in_flight) to the requests in flight now.
    /// Scripted answers are kept.
    pub fn clear(&self) {
        lock(&self.shared.requests).clear();
        let now = self.shared.in_flight.load(Ordering::SeqCst);
        self.shared.max_in_flight.store(now, Ordering::SeqCst);
    }
}

impl Drop for ToolServer {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl std::fmt::Debug for ToolServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToolServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}
