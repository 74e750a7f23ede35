//! A fake LLM provider: an HTTP server on loopback that speaks the Anthropic
//! Messages API (`POST /v1/messages`) and the OpenAI chat completions API
//! (`POST /v1/chat/completions`) wire formats, streamed (server-sent events)
//! and not, and answers scripted [`Reply`]s. Tests and benchmarks point the
//! real provider clients at it.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use lambent_fake_provider::{FakeProvider, FakeUsage, Reply};
//! let fake = FakeProvider::start().await?;
//! fake.push(Reply::text("Hi there").usage(FakeUsage { input: 5, output: 2, ..Default::default() }));
//! // point a client at fake.anthropic_base_url() or fake.openai_base_url() ...
//! let seen = fake.requests();
//! # drop(seen);
//! # Ok(())
//! # }
//! ```
//!
//! Replies may also be computed from each request ([`FakeProvider::set_responder`]):
//! with many requests at once, a FIFO queue cannot say which request gets
//! which reply, but a function of the request (its history, its tool results)
//! can.
//!
//! A reply may call tools ([`Reply::tool_calls`], [`Reply::with_tool_call`]):
//! Anthropic `tool_use` blocks (streamed as `input_json_delta` pieces),
//! OpenAI `tool_calls` (streamed as `delta.tool_calls` fragments), the
//! arguments cut where the test says ([`Reply::split_arguments_at`]).
//! [`Recorded`] shows what a request offered and answered (tools, tool calls
//! and results, images) the same way for both formats.
//!
//! Usage on the wire, for a reply's [`FakeUsage`]:
//! - Anthropic: `input_tokens` = `input` (cache excluded),
//!   `cache_read_input_tokens` = `cache_read`, `cache_creation_input_tokens`
//!   = `cache_write_5m + cache_write_1h`, and `cache_creation` =
//!   `{ephemeral_5m_input_tokens, ephemeral_1h_input_tokens}`; placed in the
//!   stream as [`UsageAt`] says. Whatever the placement, the latest non-zero
//!   value of each field is the truth.
//! - OpenAI: `prompt_tokens` = `input + cache_read`, `completion_tokens` =
//!   `output`, `prompt_tokens_details.cached_tokens` = `cache_read`; a stream
//!   reports it only when the request sets `stream_options.include_usage`,
//!   in the shape [`FinalChunk`] says.

mod recorded;
mod reply;
mod server;
mod wire;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::net::TcpListener;
use tokio::task::AbortHandle;

pub use recorded::{Recorded, SeenImage, SeenToolCall, SeenToolResult};
pub use reply::{
    FakeToolCall, FakeUsage, FinalChunk, Reply, UsageAt, ARGUMENT_PIECE_CHARS, TEXT_CHUNK_CHARS,
};

/// A function that computes the reply to a request.
type Responder = Arc<dyn Fn(&Recorded) -> Option<Reply> + Send + Sync>;

/// State shared by the server's tasks and the [`FakeProvider`] handle.
pub(crate) struct Shared {
    queue: Mutex<VecDeque<Reply>>,
    default: Mutex<Reply>,
    responder: Mutex<Option<Responder>>,
    requests: Mutex<Vec<Recorded>>,
    api_key: Mutex<Option<String>>,
    pub(crate) open_streams: AtomicUsize,
    pub(crate) completed_streams: AtomicUsize,
    /// Bytes written to client sockets (accepted by the kernel), all
    /// responses together.
    pub(crate) bytes_written: AtomicU64,
    seq: AtomicU64,
}

/// Locks a mutex, ignoring poisoning (a panicking test thread must not make
/// the server panic too).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    fn new() -> Shared {
        Shared {
            queue: Mutex::new(VecDeque::new()),
            default: Mutex::new(Reply::default()),
            responder: Mutex::new(None),
            requests: Mutex::new(Vec::new()),
            api_key: Mutex::new(None),
            open_streams: AtomicUsize::new(0),
            completed_streams: AtomicUsize::new(0),
            bytes_written: AtomicU64::new(0),
            seq: AtomicU64::new(1),
        }
    }

    pub(crate) fn record(&self, recorded: Recorded) {
        lock(&self.requests).push(recorded);
    }

    /// Whether replies may be computed from the request (so the server
    /// keeps a copy of it for the responder).
    pub(crate) fn has_responder(&self) -> bool {
        lock(&self.responder).is_some()
    }

    /// The reply to `request`: the oldest queued one, else the responder's
    /// (given the request), else the default.
    pub(crate) fn next_reply(&self, request: Option<&Recorded>) -> Reply {
        if let Some(reply) = lock(&self.queue).pop_front() {
            return reply;
        }
        let responder = lock(&self.responder).clone();
        if let (Some(responder), Some(request)) = (responder, request) {
            // Called without the lock held: it may take its time.
            if let Some(reply) = responder(request) {
                return reply;
            }
        }
        lock(&self.default).clone()
    }

    pub(crate) fn api_key(&self) -> Option<String> {
        lock(&self.api_key).clone()
    }

    /// A fresh identifier suffix: unique in this process, random-looking.
    pub(crate) fn next_id(&self) -> String {
        static PROCESS_SEQ: AtomicU64 = AtomicU64::new(0);
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let p = PROCESS_SEQ.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let mixed = splitmix64(nanos ^ splitmix64(p) ^ n.rotate_left(32));
        format!("{mixed:016x}{p:08x}")
    }
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The running fake provider. Dropping it stops the server and closes every
/// connection.
pub struct FakeProvider {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: AbortHandle,
}

impl FakeProvider {
    /// Binds `127.0.0.1:0` and starts serving on the current Tokio runtime.
    pub async fn start() -> std::io::Result<FakeProvider> {
        let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new());
        let server = tokio::spawn(server::serve(listener, shared.clone())).abort_handle();
        Ok(FakeProvider {
            addr,
            shared,
            server,
        })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The Anthropic base URL, `http://127.0.0.1:PORT`: the client posts to
    /// `{base}/v1/messages`.
    pub fn anthropic_base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The OpenAI base URL, `http://127.0.0.1:PORT/v1`: the client posts to
    /// `{base}/chat/completions`.
    pub fn openai_base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Queues a reply; each valid request takes the oldest one.
    pub fn push(&self, reply: Reply) {
        lock(&self.shared.queue).push_back(reply);
    }

    /// The reply used when the queue is empty (initially
    /// `Reply::text("Hello from the fake provider.")`).
    pub fn set_default(&self, reply: Reply) {
        *lock(&self.shared.default) = reply;
    }

    /// Computes the reply of every request that finds the queue empty from
    /// the request itself (its history, tool results, model...), e.g. a
    /// tool call on the first round of an agent turn and text once the
    /// tool's result is in the conversation; `None` falls back to the
    /// default. Replaces an earlier responder.
    pub fn set_responder(
        &self,
        responder: impl Fn(&Recorded) -> Option<Reply> + Send + Sync + 'static,
    ) {
        *lock(&self.shared.responder) = Some(Arc::new(responder));
    }

    /// Removes the responder: the default answers again.
    pub fn clear_responder(&self) {
        *lock(&self.shared.responder) = None;
    }

    /// How many queued replies are still waiting for a request.
    pub fn queued(&self) -> usize {
        lock(&self.shared.queue).len()
    }

    /// Require this exact API key (`x-api-key` for Anthropic, the bearer
    /// token for OpenAI); a wrong one is answered with the real 401. `None`
    /// (the default) accepts any non-empty key.
    pub fn set_api_key(&self, key: Option<&str>) {
        *lock(&self.shared.api_key) = key.map(str::to_owned);
    }

    /// Every request received, in order, including those answered with an
    /// error.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.shared.requests).clone()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        lock(&self.shared.requests).clear();
    }

    /// Streams whose body is being written now.
    pub fn open_streams(&self) -> usize {
        self.shared.open_streams.load(Ordering::SeqCst)
    }

    /// Streams written to their scripted end (including a scripted
    /// mid-stream error event, but not a cut or a client that went away).
    pub fn completed_streams(&self) -> usize {
        self.shared.completed_streams.load(Ordering::SeqCst)
    }

    /// Bytes written so far to the sockets of every response (headers
    /// included): what a client has taken, plus what the kernel buffers.
    pub fn bytes_written(&self) -> u64 {
        self.shared.bytes_written.load(Ordering::SeqCst)
    }
}

impl Drop for FakeProvider {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl std::fmt::Debug for FakeProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeProvider")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}
