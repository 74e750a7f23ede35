//! The reply as server-sent events. A task reads the provider and forwards
//! each chunk through a small bounded channel to the response body, so a
//! slow client holds the provider read (backpressure) and memory per stream
//! stays flat. If the client goes away, the task keeps reading (for at most
//! `LAMBENT_STREAM_DRAIN_SECS`) so the reply is stored, marked
//! `incomplete`, and billed for what the provider used.

use std::convert::Infallible;
use std::time::Duration;

use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use lambent_app::chat::{self, Outcome, Prepared, ReplyText, Settled, Started};
use lambent_app::state::State;
use lambent_app::streams::StreamSlot;
use lambent_http::error::ApiError;
use lambent_llm::{Chunk, ProviderError, ToolCall, ToolCallAssembler, Usage};
use lambent_store::messages::MessageStatus;
use lambent_store::sessions::TokenCounts;
use serde_json::json;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::Instrument;

/// Events buffered between the provider read and the client: enough to
/// smooth scheduling, small enough that a stalled client stops the read.
const BUFFERED_EVENTS: usize = 8;

/// How a reply's events look on the wire: Lambent's own events
/// ([`LambentEvents`]) or OpenAI's chat completion chunks
/// (`crate::completions`).
pub trait Wire: Send + 'static {
    /// Sent before the first text.
    fn start(&mut self, call: &Prepared) -> Vec<Event>;
    fn text(&mut self, piece: &str) -> Vec<Event>;
    /// A piece of a tool call as the provider streamed it (a call's start
    /// or a piece of its arguments), for wires that stream calls in pieces.
    fn tool_piece(&mut self, _chunk: &Chunk) -> Vec<Event> {
        Vec::new()
    }
    /// A tool call, whole, for wires that show each call once.
    fn tool_call(&mut self, _index: usize, _call: &ToolCall) -> Vec<Event> {
        Vec::new()
    }
    /// Sent after the reply was stored and counted.
    fn end(&mut self, settled: &Settled) -> Vec<Event>;
    fn error(&mut self, error: &ApiError, request_id: &str) -> Vec<Event>;
}

/// Lambent's events: `message_start`, `delta`..., then `message_end` or
/// `error`, each with an `id:` (its position in the stream).
#[derive(Default)]
pub struct LambentEvents {
    next_id: u64,
}

impl LambentEvents {
    fn event(&mut self, name: &str, data: serde_json::Value) -> Event {
        let event = Event::default()
            .event(name)
            .id(self.next_id.to_string())
            .data(data.to_string());
        self.next_id += 1;
        event
    }
}

impl Wire for LambentEvents {
    fn start(&mut self, call: &Prepared) -> Vec<Event> {
        vec![self.event(
            "message_start",
            json!({
                "message_id": call.reply_id(),
                "session_id": call.session_id(),
                "model": call.model,
            }),
        )]
    }

    fn text(&mut self, piece: &str) -> Vec<Event> {
        vec![self.event("delta", json!({ "text": piece }))]
    }

    fn tool_call(&mut self, index: usize, call: &ToolCall) -> Vec<Event> {
        vec![self.event(
            "tool_call",
            json!({ "index": index, "id": call.id, "name": call.name, "input": call.input }),
        )]
    }

    fn end(&mut self, settled: &Settled) -> Vec<Event> {
        vec![self.event(
            "message_end",
            json!({
                "message_id": settled.reply_id,
                "stop_reason": settled.stop_reason,
                "usage": TokenCounts::from(settled.usage),
                "cost_usd": settled.cost_usd.to_string(),
            }),
        )]
    }

    fn error(&mut self, error: &ApiError, request_id: &str) -> Vec<Event> {
        vec![self.event(
            "error",
            json!({ "code": error.code(), "message": error.public_message(), "request_id": request_id }),
        )]
    }
}

/// The stop reason of a reply Lambent cut at its stream deadline.
pub const DEADLINE: &str = "deadline";

/// The response that streams `call`'s reply from `upstream` in `wire`'s format.
/// The stream holds `slot`, one of its user's stream slots, until its last
/// event.
pub fn stream_reply(
    state: State,
    call: Prepared,
    started: Started,
    wire: impl Wire,
    slot: StreamSlot,
) -> Response {
    let (tx, rx) = mpsc::channel::<Event>(BUFFERED_EVENTS);
    let request_id = lambent_http::current_request_id();
    let pumped = async move {
        pump(state, call, started, tx, request_id, wire).await;
        drop(slot);
    };
    tokio::spawn(pumped.in_current_span());
    let body = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|event| (Ok::<_, Infallible>(event), rx))
    });
    let mut response = Sse::new(body).into_response();
    response
        .headers_mut()
        .insert("x-accel-buffering", http::HeaderValue::from_static("no"));
    response
}

/// The client side of the stream: numbers events and notices when the
/// client is gone (the body was dropped, or it stopped reading for longer
/// than the provider idle timeout).
struct Client {
    tx: Option<mpsc::Sender<Event>>,
    patience: Duration,
}

impl Client {
    fn gone(&self) -> bool {
        self.tx.is_none()
    }

    async fn send_all(&mut self, events: Vec<Event>) {
        for event in events {
            self.send(event).await;
        }
    }

    async fn send(&mut self, event: Event) {
        let Some(tx) = &self.tx else { return };
        let delivered = matches!(
            tokio::time::timeout(self.patience, tx.send(event)).await,
            Ok(Ok(()))
        );
        if !delivered {
            self.tx = None;
        }
    }
}

async fn pump(
    state: State,
    call: Prepared,
    started: Started,
    tx: mpsc::Sender<Event>,
    request_id: String,
    mut wire: impl Wire,
) {
    let mut client = Client {
        tx: Some(tx),
        patience: state.config.provider_idle_timeout,
    };
    client.send_all(wire.start(&call)).await;

    let mut text = ReplyText::default();
    let mut tool_calls = ToolCallAssembler::default();
    let mut usage = Usage::default();
    let mut stop_reason = None;
    let mut failure: Option<ProviderError> = None;
    let mut drain_until: Option<Instant> = None;
    // Cut before the function's own timeout could end it unstored and
    // unbilled.
    let deadline = Instant::now() + state.config.stream_deadline;
    let mut cut = false;
    let mut upstream = started.stream;
    loop {
        if client.gone() && drain_until.is_none() {
            drain_until = Some(Instant::now() + state.config.stream_drain_timeout);
        }
        let until = drain_until.map_or(deadline, |drain| drain.min(deadline));
        let next = match tokio::time::timeout_at(until, upstream.next()).await {
            Ok(next) => next,
            Err(_) => {
                if Instant::now() >= deadline {
                    tracing::warn!("cut a reply at the stream deadline");
                    stop_reason = Some(DEADLINE.to_owned());
                } else {
                    tracing::warn!("stopped reading a reply whose client left: drain time is up");
                }
                cut = true;
                break;
            }
        };
        match next {
            None => break,
            Some(Ok(Chunk::Text(piece))) => {
                text.push(&piece);
                if !client.gone() {
                    let events = wire.text(&piece);
                    client.send_all(events).await;
                }
            }
            Some(Ok(Chunk::Usage(latest))) => usage = latest,
            Some(Ok(Chunk::Stop(reason))) => stop_reason = Some(reason),
            // Kept and stored with the reply, and shown as the wire shows
            // tool calls (pieces, or each whole call).
            Some(Ok(chunk @ (Chunk::ToolCallStart { .. } | Chunk::ToolCallArguments { .. }))) => {
                // A call is whole when the next begins (or the reply ends).
                let begun = tool_calls.len();
                tool_calls.push(&chunk);
                let mut events = wire.tool_piece(&chunk);
                if tool_calls.len() > begun && begun > 0 {
                    if let Some(call) = tool_calls.call(begun - 1) {
                        events.extend(wire.tool_call(begun - 1, &call));
                    }
                }
                if !client.gone() {
                    client.send_all(events).await;
                }
            }
            Some(Err(e)) => {
                failure = Some(e);
                break;
            }
        }
    }
    drop(upstream);
    if failure.is_none() && !tool_calls.is_empty() {
        let last = tool_calls.len() - 1;
        if let Some(call) = tool_calls.call(last) {
            let events = wire.tool_call(last, &call);
            client.send_all(events).await;
        }
    }
    // The user's message goes before the reply. If it could not be stored
    // (its session was deleted meanwhile) the settle still counts the cost.
    match started.user_message.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "the user's message was not stored"),
        Err(e) => tracing::error!(error = %e, "storing the user's message failed"),
    }

    let status = if client.gone() || cut {
        MessageStatus::Incomplete
    } else if failure.is_some() {
        MessageStatus::Failed
    } else {
        MessageStatus::Complete
    };
    let tool_calls = tool_calls.finish();
    if cut {
        // The provider's own count never came; it bills what it generated.
        usage = chat::usage_when_cut(&call, usage, &text, &tool_calls);
    }
    let outcome = Outcome {
        text,
        tool_calls,
        status,
        usage,
        stop_reason,
    };
    let settled = chat::settle(state.store.as_ref(), &call, outcome).await;
    match (failure, settled) {
        (None, Ok(settled)) => client.send_all(wire.end(&settled)).await,
        (Some(e), settled) => {
            if let Err(store_error) = settled {
                tracing::error!(error = %store_error, "could not store a failed reply");
            }
            let error = ApiError::from(chat::provider_error(e));
            client.send_all(wire.error(&error, &request_id)).await;
        }
        (None, Err(e)) => {
            tracing::error!(error = %e, "could not store a reply");
            client
                .send_all(wire.error(&ApiError::from(e), &request_id))
                .await;
        }
    }
}
