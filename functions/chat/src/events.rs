//! The reply as server-sent events. A task reads the provider
//! (`lambent_app::chat::ReplyReader`) and forwards each piece through a
//! small bounded channel to the response body, so a slow client holds the
//! provider read (backpressure) and memory per stream stays flat. If the
//! client goes away, the task reads on to the reply's end, so the reply is
//! stored whole and billed for what the provider used.

use std::convert::Infallible;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use lambent_app::chat::{self, Piece, Prepared, ReplyReader, Settled, Started};
use lambent_app::state::State;
use lambent_app::streams::StreamSlot;
use lambent_app::turns::follow;
use lambent_http::error::ApiError;
use lambent_llm::{Chunk, ToolCall};
use lambent_store::turns::StoredEvent;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::Instrument;

/// Events buffered between the provider read and the client: enough to
/// smooth scheduling, small enough that a stalled client stops the read.
const BUFFERED_EVENTS: usize = 8;

/// How a stateless call's reply looks on the wire: OpenAI's chat
/// completion chunks (`crate::completions`) or Anthropic's message events
/// (`crate::messages_api`). (A session turn's events are
/// `lambent_app::turns`'s, streamed by [`stream_live_turn`].)
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

/// The response that streams a turn run here to the client that asked for
/// it: live, and from the store if it falls behind (a client too slow to
/// take an event in time is left behind by the turn, which never waits
/// for it long), so it gets every event once, in order, to `done`. The
/// body reads the turn's channel itself: no task between them, so an event
/// costs one wake-up, not two.
pub fn stream_live_turn(
    state: &State,
    live: mpsc::Receiver<StoredEvent>,
    session_id: String,
    turn_id: String,
) -> Response {
    let source = Source::Live {
        live,
        last: None,
        state: Box::new(state.clone()),
        session_id,
        turn_id,
    };
    let events = futures::stream::unfold(source, |source| source.next());
    stream_turn(events)
}

/// Where the next event of a live turn's response comes from.
enum Source {
    /// The turn, as it runs.
    Live {
        live: mpsc::Receiver<StoredEvent>,
        /// The last event sent.
        last: Option<u64>,
        /// Boxed: the other variants are a pointer or nothing.
        state: Box<State>,
        session_id: String,
        turn_id: String,
    },
    /// The store, after the turn left this client behind.
    Stored(mpsc::Receiver<StoredEvent>),
    Ended,
}

impl Source {
    async fn next(self) -> Option<(StoredEvent, Source)> {
        let mut source = self;
        loop {
            source = match source {
                Source::Live {
                    mut live,
                    last,
                    state,
                    session_id,
                    turn_id,
                } => match live.recv().await {
                    Some(event) => {
                        let next = if event.event == "done" {
                            Source::Ended
                        } else {
                            Source::Live {
                                live,
                                last: Some(event.id),
                                state,
                                session_id,
                                turn_id,
                            }
                        };
                        return Some((event, next));
                    }
                    None => {
                        let until = Instant::now() + state.config.stream_deadline;
                        match follow::follow(&state, &session_id, &turn_id, last, until).await {
                            Ok(stored) => Source::Stored(stored),
                            Err(e) => {
                                tracing::warn!(error = %e, "could not catch a client up with its turn");
                                Source::Ended
                            }
                        }
                    }
                },
                Source::Stored(mut stored) => {
                    let event = stored.recv().await?;
                    return Some((event, Source::Stored(stored)));
                }
                Source::Ended => return None,
            }
        }
    }
}

/// The response that streams a turn's events (as `lambent_app::turns`
/// emits them, or replays them) to its client, each with its `id:`.
/// Comments keep the connection open while a long tool call runs.
pub fn stream_turn(events: impl Stream<Item = StoredEvent> + Send + 'static) -> Response {
    let body = events.map(|event| {
        let event = Event::default()
            .event(event.event)
            .id(event.id.to_string())
            .data(event.data);
        Ok::<_, Infallible>(event)
    });
    let mut response = Sse::new(body)
        .keep_alive(KeepAlive::default())
        .into_response();
    response
        .headers_mut()
        .insert("x-accel-buffering", http::HeaderValue::from_static("no"));
    response
}

/// A channel's events as a stream.
pub fn received(events: mpsc::Receiver<StoredEvent>) -> impl Stream<Item = StoredEvent> {
    futures::stream::unfold(events, |mut rx| async move {
        rx.recv().await.map(|event| (event, rx))
    })
}

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

    // Cut before the function's own timeout could end it unstored and
    // unbilled. A client that leaves does not stop the read.
    let deadline = Instant::now() + state.config.stream_deadline;
    let mut reader = ReplyReader::new(started.stream, deadline, None);
    while let Some(piece) = reader.next().await {
        if client.gone() {
            continue;
        }
        let events = match &piece {
            Piece::Text(text) => wire.text(text),
            Piece::ToolPiece(chunk) => wire.tool_piece(chunk),
            Piece::ToolCall(index, call) => wire.tool_call(*index, call),
        };
        client.send_all(events).await;
    }
    // The user's message goes before the reply. If it could not be stored
    // (its session was deleted meanwhile) the settle still counts the cost.
    match started.user_message.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "the user's message was not stored"),
        Err(e) => tracing::error!(error = %e, "storing the user's message failed"),
    }
    let read = reader.finish(&call);
    let settled = chat::settle(state.store.as_ref(), &call, read.outcome).await;
    match (read.failure, settled) {
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
