//! Reading a streamed reply from the provider: the one loop every stream
//! goes through (native turns, the OpenAI- and Anthropic-compatible
//! endpoints, background turns). The caller pulls what to show
//! ([`Piece`]s) and forwards them in its own format; the reader keeps the
//! text, the tool calls, the usage and the stop reason for the settle, and
//! stops at the stream deadline or when the turn is cancelled.
//!
//! A client that goes away does not stop the read: the reply is read to
//! its end, stored and billed like any other.

use std::collections::VecDeque;

use futures::StreamExt;
use tokio::time::Instant;

use super::{Outcome, Prepared, ReplyText};
use lambent_llm::{Chunk, ChunkStream, ProviderError, ToolCall, ToolCallAssembler, Usage};
use lambent_store::messages::MessageStatus;

/// The stop reason of a reply Lambent cut at its stream deadline.
pub const DEADLINE: &str = "deadline";
/// The stop reason of a reply (and a turn) stopped by a cancel.
pub const CANCELLED: &str = "cancelled";

/// Something to show the client as it arrives.
#[derive(Debug)]
pub enum Piece {
    Text(String),
    /// A piece of a tool call as the provider streamed it (its start, or a
    /// piece of its arguments), for wires that stream calls in pieces.
    ToolPiece(Chunk),
    /// A tool call, whole (when the next begins, or the reply ends), for
    /// wires that show each call once.
    ToolCall(usize, ToolCall),
}

/// Why a read stopped before the provider's end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    Deadline,
    Cancelled,
}

/// A stop signal a reader watches: set to `true` to stop.
pub type Stop = tokio::sync::watch::Receiver<bool>;

/// A provider's reply being read.
pub struct ReplyReader {
    upstream: Option<ChunkStream>,
    text: ReplyText,
    tool_calls: ToolCallAssembler,
    usage: Usage,
    stop_reason: Option<String>,
    failure: Option<ProviderError>,
    cut: Option<Cut>,
    deadline: Instant,
    stop: Option<Stop>,
    /// Pieces to hand out before reading on.
    queued: VecDeque<Piece>,
    /// Whether the last call, whole, was handed out (once the reply ended).
    last_call_shown: bool,
}

/// A whole read: how the call ended, for its settle.
pub struct Read {
    pub outcome: Outcome,
    /// The provider failed mid-stream.
    pub failure: Option<ProviderError>,
    pub cut: Option<Cut>,
}

impl ReplyReader {
    /// Reads `upstream` until it ends, `deadline` passes, or `stop` is set.
    pub fn new(upstream: ChunkStream, deadline: Instant, stop: Option<Stop>) -> ReplyReader {
        ReplyReader {
            upstream: Some(upstream),
            text: ReplyText::default(),
            tool_calls: ToolCallAssembler::default(),
            usage: Usage::default(),
            stop_reason: None,
            failure: None,
            cut: None,
            deadline,
            stop,
            queued: VecDeque::new(),
            last_call_shown: false,
        }
    }

    /// The next thing to show, or `None` once the read is over.
    pub async fn next(&mut self) -> Option<Piece> {
        loop {
            if let Some(piece) = self.queued.pop_front() {
                return Some(piece);
            }
            let Some(upstream) = self.upstream.as_mut() else {
                return self.last_call();
            };
            let stopped = async {
                match self.stop.as_mut() {
                    Some(stop) => {
                        if stop.wait_for(|s| *s).await.is_err() {
                            // Nobody can stop it any more.
                            std::future::pending::<()>().await;
                        }
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            let next = tokio::select! {
                biased;
                _ = stopped => {
                    tracing::info!("a reply was stopped by a cancel");
                    self.cut = Some(Cut::Cancelled);
                    self.stop_reason = Some(CANCELLED.to_owned());
                    self.upstream = None;
                    continue;
                }
                next = tokio::time::timeout_at(self.deadline, upstream.next()) => next,
            };
            match next {
                Err(_) => {
                    tracing::warn!("cut a reply at the stream deadline");
                    self.cut = Some(Cut::Deadline);
                    self.stop_reason = Some(DEADLINE.to_owned());
                    self.upstream = None;
                }
                Ok(None) => self.upstream = None,
                Ok(Some(Ok(Chunk::Text(piece)))) => {
                    self.text.push(&piece);
                    return Some(Piece::Text(piece));
                }
                Ok(Some(Ok(Chunk::Usage(latest)))) => self.usage = latest,
                Ok(Some(Ok(Chunk::Stop(reason)))) => self.stop_reason = Some(reason),
                Ok(Some(Ok(
                    chunk @ (Chunk::ToolCallStart { .. } | Chunk::ToolCallArguments { .. }),
                ))) => {
                    // A call is whole when the next begins: shown before it.
                    let begun = self.tool_calls.len();
                    self.tool_calls.push(&chunk);
                    if self.tool_calls.len() > begun && begun > 0 {
                        if let Some(call) = self.tool_calls.call(begun - 1) {
                            self.queued.push_back(Piece::ToolCall(begun - 1, call));
                        }
                    }
                    self.queued.push_back(Piece::ToolPiece(chunk));
                }
                Ok(Some(Err(e))) => {
                    self.failure = Some(e);
                    self.upstream = None;
                }
            }
        }
    }

    /// Once the reply has ended well, its last tool call, whole.
    fn last_call(&mut self) -> Option<Piece> {
        if self.last_call_shown || self.failure.is_some() || self.tool_calls.is_empty() {
            return None;
        }
        self.last_call_shown = true;
        let last = self.tool_calls.len() - 1;
        self.tool_calls
            .call(last)
            .map(|call| Piece::ToolCall(last, call))
    }

    /// How the call ended. A reply cut short is billed at least what it
    /// can have cost (see [`super::usage_when_cut`]); its status is
    /// `incomplete` (`cancelled` for a cancel), `failed` if the provider
    /// failed.
    pub fn finish(self, call: &Prepared) -> Read {
        let tool_calls = self.tool_calls.finish();
        let status = match (self.cut, &self.failure) {
            (Some(Cut::Cancelled), _) => MessageStatus::Cancelled,
            (Some(Cut::Deadline), _) => MessageStatus::Incomplete,
            (None, Some(_)) => MessageStatus::Failed,
            (None, None) => MessageStatus::Complete,
        };
        let usage = if self.cut.is_some() {
            // The provider's own count never came; it bills what it generated.
            super::usage_when_cut(call, self.usage, &self.text, &tool_calls)
        } else {
            self.usage
        };
        Read {
            outcome: Outcome {
                text: self.text,
                tool_calls,
                status,
                usage,
                stop_reason: self.stop_reason,
            },
            failure: self.failure,
            cut: self.cut,
        }
    }
}
