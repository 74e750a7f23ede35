//! A provider's stream, timed for the metrics: the first piece of the reply
//! (time to first token), the end (the whole call's latency) or a failure,
//! each counted once. Whoever reads the stream (the one reader, whatever
//! the wire) is timed the same way without knowing it; a chunk costs one
//! comparison.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures::Stream;

use crate::metrics::{Event, Metrics};
use lambent_core::provider::ProviderKind;
use lambent_llm::{Chunk, ChunkStream, ProviderError};

/// `stream`, whose request was sent at `asked`, counted under `model` and
/// `kind`. A stream dropped before its end (a cut, a cancel) counts no
/// latency: the call did not run its course.
pub(super) fn timed(
    stream: ChunkStream,
    metrics: Arc<Metrics>,
    model: String,
    kind: ProviderKind,
    asked: Instant,
) -> ChunkStream {
    Box::pin(Timed {
        inner: stream,
        metrics,
        model,
        kind,
        asked,
        first_seen: false,
        ended: false,
    })
}

struct Timed {
    inner: ChunkStream,
    metrics: Arc<Metrics>,
    model: String,
    kind: ProviderKind,
    asked: Instant,
    first_seen: bool,
    ended: bool,
}

impl Timed {
    fn count(&self, event: Event<'_>) {
        self.metrics.record(&self.model, self.kind, event);
    }
}

impl Stream for Timed {
    type Item = Result<Chunk, ProviderError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let polled = this.inner.as_mut().poll_next(cx);
        if let Poll::Ready(item) = &polled {
            match item {
                Some(Ok(Chunk::Text(_) | Chunk::ToolCallStart { .. })) if !this.first_seen => {
                    this.first_seen = true;
                    this.count(Event::FirstToken(this.asked.elapsed()));
                }
                Some(Err(_)) if !this.ended => {
                    this.ended = true;
                    this.count(Event::ProviderFailed);
                }
                None if !this.ended => {
                    this.ended = true;
                    this.count(Event::Latency(this.asked.elapsed()));
                }
                _ => {}
            }
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn stream(items: Vec<Result<Chunk, ProviderError>>) -> ChunkStream {
        Box::pin(futures::stream::iter(items))
    }

    #[tokio::test]
    async fn the_first_piece_the_end_and_a_failure_are_counted_once() {
        let metrics = Arc::new(Metrics::new(true));
        let time = |items| {
            timed(
                stream(items),
                metrics.clone(),
                "m".into(),
                ProviderKind::Anthropic,
                Instant::now(),
            )
        };
        let whole = time(vec![
            Ok(Chunk::Usage(Default::default())),
            Ok(Chunk::Text("a".into())),
            Ok(Chunk::Text("b".into())),
            Ok(Chunk::Stop("end_turn".into())),
        ]);
        assert_eq!(whole.collect::<Vec<_>>().await.len(), 4);
        let failed = time(vec![
            Ok(Chunk::Text("a".into())),
            Err(ProviderError::Timeout),
        ]);
        assert_eq!(failed.collect::<Vec<_>>().await.len(), 2);
        // Dropped before its end: only its first piece counts.
        let mut cut = time(vec![
            Ok(Chunk::Text("a".into())),
            Ok(Chunk::Text("b".into())),
        ]);
        cut.next().await;
        drop(cut);

        let drained = metrics.drain();
        let series = &drained.series[0];
        assert_eq!(series.first_token_us.len(), 3);
        assert_eq!(series.latency_us.len(), 1);
        assert_eq!(series.counts.provider_errors, 1);
    }
}
