//! The HTTP/1.1 server: connections, routing, checks, and the response
//! bodies (whole JSON, or server-sent events produced as the client reads).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{self, StreamExt};
use http::header::{HeaderName, HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinSet;

use crate::reply::{
    anthropic_error_kind, anthropic_stop_reason, default_error_message, openai_finish_reason,
    status_for_kind, Body as ReplyBody, Interrupt, Reply, Text,
};
use crate::wire::{
    anthropic_error_body, anthropic_message, openai_completion, openai_error_body,
    openai_error_body_raw, AnthropicStream, OpenAiStream, Wire,
};
use crate::{Recorded, Shared};

type Body = UnsyncBoxBody<Bytes, io::Error>;

/// How long a cut waits, after its last delta, for that delta to be flushed
/// to the socket before resetting the connection.
const CUT_FLUSH_GRACE: Duration = Duration::from_millis(20);

// ------------------------------------------------------------- connections

/// Per-connection control: lets a response body reset its own connection.
#[derive(Default)]
pub(crate) struct ConnCtl {
    cut: AtomicBool,
    kill: Notify,
}

impl ConnCtl {
    /// Resets the connection: it closes at once, with `SO_LINGER` 0, which
    /// makes the kernel send a TCP RST.
    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.kill.notify_one();
    }
}

/// The accepted socket; when its connection was cut, closing it resets.
/// Every byte the kernel accepts from it is counted in `written`.
struct ConnIo {
    inner: TcpStream,
    ctl: Arc<ConnCtl>,
    written: Arc<Shared>,
}

impl ConnIo {
    fn count(&self, polled: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        if let Poll::Ready(Ok(n)) = &polled {
            self.written
                .bytes_written
                .fetch_add(*n as u64, Ordering::SeqCst);
        }
        polled
    }
}

impl Drop for ConnIo {
    fn drop(&mut self) {
        if self.ctl.cut.load(Ordering::SeqCst) {
            // A zero linger never blocks: the close sends RST and returns.
            let _ = self.inner.set_zero_linger();
        }
    }
}

impl AsyncRead for ConnIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for ConnIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.count(polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.count(polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Accepts connections until aborted; aborting drops (and so closes) every
/// connection too.
pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut conns = JoinSet::new();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                // Out of file descriptors or the like: try again shortly.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        while conns.try_join_next().is_some() {}
        let _ = stream.set_nodelay(true);
        let ctl = Arc::new(ConnCtl::default());
        let io = TokioIo::new(ConnIo {
            inner: stream,
            ctl: ctl.clone(),
            written: shared.clone(),
        });
        let shared = shared.clone();
        conns.spawn(async move {
            let svc_ctl = ctl.clone();
            let svc = service_fn(move |req| handle(shared.clone(), svc_ctl.clone(), req));
            let conn = http1::Builder::new().serve_connection(io, svc);
            tokio::select! {
                _ = conn => {}
                _ = ctl.kill.notified() => {}
            }
        });
    }
}

// ----------------------------------------------------------------- requests

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Api {
    Anthropic,
    OpenAi,
}

/// What the reply needs to know about the request.
struct Ask {
    api: Api,
    model: String,
    stream: bool,
    include_usage: bool,
}

async fn handle(
    shared: Arc<Shared>,
    ctl: Arc<ConnCtl>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let (parts, body) = req.into_parts();
    let bytes = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        // The client went away while sending: nobody will read an answer.
        Err(_) => Bytes::new(),
    };
    let parsed: Result<Value, _> = serde_json::from_slice(&bytes);
    let recorded_body = match &parsed {
        Ok(v) => v.clone(),
        Err(_) if bytes.is_empty() => Value::Null,
        Err(_) => Value::String(String::from_utf8_lossy(&bytes).into_owned()),
    };
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let recorded = Recorded {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_ascii_lowercase(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: recorded_body,
    };
    // A copy only when a responder will read it.
    let asked = shared.has_responder().then(|| recorded.clone());
    shared.record(recorded);

    let request_id = format!("req_{}", shared.next_id());
    let api = match (&parts.method, parts.uri.path()) {
        (&Method::POST, "/v1/messages") => Api::Anthropic,
        (&Method::POST, "/v1/chat/completions") => Api::OpenAi,
        (_, path) => {
            let api = if path.contains("/chat/") {
                Api::OpenAi
            } else {
                Api::Anthropic
            };
            let msg = format!("Not found: {} {}", parts.method, path);
            return Ok(error_response(
                api,
                404,
                "not_found_error",
                &msg,
                &request_id,
                None,
            ));
        }
    };

    // Authentication first, as the real APIs do.
    let expected_key = shared.api_key();
    match api {
        Api::Anthropic => {
            let Some(key) = header("x-api-key") else {
                return Ok(error_response(
                    api,
                    401,
                    "authentication_error",
                    "x-api-key header is required",
                    &request_id,
                    None,
                ));
            };
            if expected_key.as_deref().is_some_and(|k| k != key) {
                return Ok(error_response(
                    api,
                    401,
                    "authentication_error",
                    "invalid x-api-key",
                    &request_id,
                    None,
                ));
            }
            if header("anthropic-version").is_none() {
                return Ok(error_response(
                    api,
                    400,
                    "invalid_request_error",
                    "anthropic-version: header is required",
                    &request_id,
                    None,
                ));
            }
        }
        Api::OpenAi => {
            let token = header("authorization").and_then(|v| {
                let (scheme, token) = v.split_once(' ')?;
                let token = token.trim();
                (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
            });
            let Some(token) = token else {
                let body = openai_error_body_raw(
                    "invalid_request_error",
                    None,
                    "You didn't provide an API key. You need to provide your API key in an \
                     Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                );
                return Ok(json_response(401, &body, api, &request_id));
            };
            if expected_key.as_deref().is_some_and(|k| k != token) {
                let shown: String = token.chars().take(3).collect();
                let tail: String = {
                    let chars: Vec<char> = token.chars().collect();
                    chars[chars.len().saturating_sub(4)..].iter().collect()
                };
                let body = openai_error_body_raw(
                    "invalid_request_error",
                    Some("invalid_api_key"),
                    &format!(
                        "Incorrect API key provided: {shown}****{tail}. You can find your API \
                         key at https://platform.openai.com/account/api-keys."
                    ),
                );
                return Ok(json_response(401, &body, api, &request_id));
            }
        }
    }

    let body = match parsed {
        Ok(Value::Object(map)) => map,
        _ => {
            let msg = match api {
                Api::Anthropic => "There was an issue with the format of your request: the body is not a valid JSON object",
                Api::OpenAi => "We could not parse the JSON body of your request. (HINT: The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)",
            };
            return Ok(error_response(
                api,
                400,
                "invalid_request_error",
                msg,
                &request_id,
                None,
            ));
        }
    };
    let ask = Ask {
        api,
        model: body
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or("fake-model")
            .to_owned(),
        stream: body.get("stream").and_then(Value::as_bool).unwrap_or(false),
        include_usage: body
            .get("stream_options")
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            .unwrap_or(false),
    };

    let reply = shared.next_reply(asked.as_ref()).answering(&body);
    if reply.hang {
        std::future::pending::<()>().await;
    }
    if !reply.first_byte_delay.is_zero() {
        tokio::time::sleep(reply.first_byte_delay).await;
    }
    Ok(respond(&shared, ctl, &ask, reply, &request_id))
}

// ---------------------------------------------------------------- responses

fn set_header(resp: &mut Response<Body>, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        resp.headers_mut()
            .insert(HeaderName::from_static(name), value);
    }
}

fn response(status: u16, body: Body, api: Api, request_id: &str) -> Response<Body> {
    let mut resp = Response::new(body);
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match api {
        Api::Anthropic => set_header(&mut resp, "request-id", request_id),
        Api::OpenAi => {
            set_header(&mut resp, "x-request-id", request_id);
            set_header(&mut resp, "openai-processing-ms", "1");
        }
    }
    resp
}

fn full(bytes: Vec<u8>) -> Body {
    Full::new(Bytes::from(bytes))
        .map_err(|never| match never {})
        .boxed_unsync()
}

fn json_response(status: u16, value: &Value, api: Api, request_id: &str) -> Response<Body> {
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    let mut resp = response(status, full(bytes), api, request_id);
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

fn error_response(
    api: Api,
    status: u16,
    kind: &str,
    message: &str,
    request_id: &str,
    retry_after: Option<u64>,
) -> Response<Body> {
    let body = match api {
        Api::Anthropic => anthropic_error_body(anthropic_error_kind(kind), message, request_id),
        Api::OpenAi => openai_error_body(kind, message),
    };
    let mut resp = json_response(status, &body, api, request_id);
    let retry_after = retry_after.or((status == 429).then_some(1));
    if let Some(secs) = retry_after {
        resp.headers_mut()
            .insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn respond(
    shared: &Arc<Shared>,
    ctl: Arc<ConnCtl>,
    ask: &Ask,
    reply: Reply,
    request_id: &str,
) -> Response<Body> {
    let text = match &reply.body {
        ReplyBody::HttpError {
            status,
            kind,
            message,
        } => {
            return error_response(
                ask.api,
                *status,
                kind,
                message,
                request_id,
                reply.retry_after,
            )
        }
        ReplyBody::Text(text) => text.clone(),
        // Resolved by `answering` before; an echo of nothing is its prefix.
        ReplyBody::Echo(prefix) => crate::reply::text_chunks(prefix),
    };
    let usage = reply.effective_usage();
    let id = shared.next_id();
    let calls = reply.planned_calls();
    let stop_reason = reply.effective_stop_reason();

    if !ask.stream {
        let interrupt = reply.interrupt.clone();
        if let Some((_, Interrupt::Error(kind))) = &interrupt {
            let status = status_for_kind(kind, ask.api == Api::OpenAi);
            return error_response(
                ask.api,
                status,
                kind,
                &default_error_message(kind),
                request_id,
                reply.retry_after,
            );
        }
        let full_text = text.full();
        let value = match ask.api {
            Api::Anthropic => anthropic_message(
                &format!("msg_{id}"),
                &ask.model,
                &full_text,
                &calls,
                &anthropic_stop_reason(stop_reason),
                &usage,
            ),
            Api::OpenAi => openai_completion(
                &format!("chatcmpl-{id}"),
                unix_now(),
                &ask.model,
                &full_text,
                &calls,
                &openai_finish_reason(stop_reason),
                &usage,
            ),
        };
        if let Some((_, Interrupt::Cut)) = interrupt {
            // Half the body, then a reset.
            let bytes = serde_json::to_vec(&value).unwrap_or_default();
            let half_len = bytes.len() / 2;
            let half = Bytes::from(bytes).slice(..half_len);
            let body = stream::once(async move { Ok(Frame::data(half)) }).chain(stream::once(
                async move {
                    tokio::time::sleep(CUT_FLUSH_GRACE).await;
                    ctl.cut();
                    Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "fake provider: connection cut",
                    ))
                },
            ));
            let mut resp = response(
                200,
                StreamBody::new(body).boxed_unsync(),
                ask.api,
                request_id,
            );
            resp.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            return resp;
        }
        return json_response(200, &value, ask.api, request_id);
    }

    let guard = StreamGuard::new(shared.clone());
    // Text deltas open a text block; so does a reply of nothing at all.
    let has_text = text.len() > 0 || calls.is_empty();
    let body = match ask.api {
        Api::Anthropic => {
            let wire = AnthropicStream {
                id: format!("msg_{id}"),
                model: ask.model.clone(),
                usage,
                usage_at: reply.usage_at,
                stop_reason: anthropic_stop_reason(stop_reason),
                text_block: has_text,
                calls,
            };
            event_body(wire, text, &reply, guard, ctl)
        }
        Api::OpenAi => {
            let wire = OpenAiStream {
                id: format!("chatcmpl-{id}"),
                created: unix_now(),
                model: ask.model.clone(),
                usage,
                include_usage: ask.include_usage,
                final_chunk: reply.final_chunk,
                finish_reason: openai_finish_reason(stop_reason),
                has_text,
                calls,
                interleave: reply.interleave_tool_calls,
            };
            event_body(wire, text, &reply, guard, ctl)
        }
    };
    let mut resp = response(200, body, ask.api, request_id);
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    resp.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

// ------------------------------------------------------------------ streams

/// Counts a stream as open while it exists, and as completed if it reached
/// its scripted end.
struct StreamGuard {
    shared: Arc<Shared>,
    released: bool,
}

impl StreamGuard {
    fn new(shared: Arc<Shared>) -> StreamGuard {
        shared.open_streams.fetch_add(1, Ordering::SeqCst);
        StreamGuard {
            shared,
            released: false,
        }
    }

    fn release(&mut self, completed: bool) {
        if !self.released {
            self.released = true;
            self.shared.open_streams.fetch_sub(1, Ordering::SeqCst);
            if completed {
                self.shared.completed_streams.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.release(false);
    }
}

enum Phase {
    /// Text deltas, then the tool calls' steps.
    Deltas,
    Closing,
    Done,
}

/// The state of one event stream, advanced each time hyper wants the next
/// chunk: so nothing is produced faster than the client reads.
struct Gen<W: Wire> {
    wire: W,
    text: Text,
    /// For a repeated delta, its event, serialised once.
    repeated: Option<Bytes>,
    queue: VecDeque<Bytes>,
    /// The tool calls' events, a group a delta, sent after the text.
    tool_steps: VecDeque<Vec<Bytes>>,
    /// Deltas sent, text and tool steps together.
    sent: u64,
    limit: u64,
    interrupt: Option<Interrupt>,
    phase: Phase,
    first_token_delay: Duration,
    chunk_delay: Duration,
    guard: StreamGuard,
    ctl: Arc<ConnCtl>,
}

type Item = Result<Frame<Bytes>, io::Error>;

impl<W: Wire> Gen<W> {
    fn text_event(&self, i: u64) -> Bytes {
        if let Some(event) = &self.repeated {
            return event.clone();
        }
        match &self.text {
            Text::Chunks(chunks) => {
                let chunk = usize::try_from(i)
                    .ok()
                    .and_then(|i| chunks.get(i))
                    .map_or("", String::as_str);
                self.wire.text_event(chunk)
            }
            Text::Repeated { chunk, .. } => self.wire.text_event(chunk),
        }
    }

    async fn step(mut self) -> Option<(Item, Self)> {
        loop {
            if let Some(event) = self.queue.pop_front() {
                return Some((Ok(Frame::data(event)), self));
            }
            match self.phase {
                Phase::Deltas => {
                    if self.sent < self.limit {
                        let delay = if self.sent == 0 {
                            self.first_token_delay
                        } else {
                            self.chunk_delay
                        };
                        if !delay.is_zero() {
                            tokio::time::sleep(delay).await;
                        }
                        let i = self.sent;
                        self.sent += 1;
                        if i < self.text.len() {
                            let event = self.text_event(i);
                            return Some((Ok(Frame::data(event)), self));
                        }
                        // A tool step's events go out one chunk each.
                        let step = self.tool_steps.pop_front().unwrap_or_default();
                        self.queue.extend(step);
                        continue;
                    }
                    match self.interrupt.take() {
                        Some(Interrupt::Cut) => {
                            self.phase = Phase::Done;
                            // Let hyper flush the deltas already sent, then reset.
                            tokio::time::sleep(CUT_FLUSH_GRACE).await;
                            self.guard.release(false);
                            self.ctl.cut();
                            let err = io::Error::new(
                                io::ErrorKind::ConnectionAborted,
                                "fake provider: connection cut",
                            );
                            return Some((Err(err), self));
                        }
                        Some(Interrupt::Error(kind)) => {
                            let event = self.wire.error_event(&kind, &default_error_message(&kind));
                            self.queue.push_back(event);
                        }
                        None => self.queue.extend(self.wire.finale()),
                    }
                    self.phase = Phase::Closing;
                }
                Phase::Closing => {
                    self.phase = Phase::Done;
                    self.guard.release(true);
                    return None;
                }
                Phase::Done => return None,
            }
        }
    }
}

fn event_body<W: Wire>(
    wire: W,
    text: Text,
    reply: &Reply,
    guard: StreamGuard,
    ctl: Arc<ConnCtl>,
) -> Body {
    let tool_steps: VecDeque<Vec<Bytes>> = wire.tool_steps().into();
    let total = text.len().saturating_add(tool_steps.len() as u64);
    let (limit, interrupt) = match &reply.interrupt {
        Some((n, interrupt)) => ((*n).min(total), Some(interrupt.clone())),
        None => (total, None),
    };
    let repeated = match &text {
        Text::Repeated { chunk, .. } => Some(wire.text_event(chunk)),
        Text::Chunks(_) => None,
    };
    let queue: VecDeque<Bytes> = wire.preamble().into();
    let gen = Gen {
        wire,
        text,
        repeated,
        queue,
        tool_steps,
        sent: 0,
        limit,
        interrupt,
        phase: Phase::Deltas,
        first_token_delay: reply.first_token_delay,
        chunk_delay: reply.chunk_delay,
        guard,
        ctl,
    };
    StreamBody::new(stream::unfold(gen, Gen::step)).boxed_unsync()
}
