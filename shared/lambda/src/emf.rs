//! Each response flushes the process's metrics as CloudWatch EMF lines
//! ([`State::flush_emf_to_stdout`]) once its body has been sent. Not
//! when the handler returns: a streamed chat reply is read, settled and
//! counted long after that, and its invocation lasts until the body ends.
//! A body dropped before its end (the client went away) flushes then.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::State as Extract;
use axum::middleware;
use axum::response::Response;
use axum::Router;
use bytes::Bytes;
use http_body::{Frame, SizeHint};

use lambent_app::state::State;

/// What a finished response calls.
type Flush = Arc<dyn Fn() + Send + Sync>;

/// `app` flushing the metrics to stdout after each response body.
pub(crate) fn flush_after_responses(app: Router, state: &State) -> Router {
    let state = state.clone();
    flush_with(app, Arc::new(move || state.flush_emf_to_stdout()))
}

/// `app` calling `flush` once after each response body has ended.
fn flush_with(app: Router, flush: Flush) -> Router {
    app.layer(middleware::map_response_with_state(flush, wrap_body))
}

async fn wrap_body(Extract(flush): Extract<Flush>, response: Response) -> Response {
    response.map(|inner| {
        Body::new(FlushAtEnd {
            inner,
            flush: Some(flush),
        })
    })
}

/// A body that calls its flush once: at its end, or when dropped before.
struct FlushAtEnd {
    inner: Body,
    flush: Option<Flush>,
}

impl FlushAtEnd {
    fn flush(&mut self) {
        if let Some(flush) = self.flush.take() {
            flush();
        }
    }
}

impl http_body::Body for FlushAtEnd {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            this.flush();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for FlushAtEnd {
    fn drop(&mut self) {
        self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    use axum::routing::get;
    use futures::StreamExt;
    use http::Request;
    use tokio::sync::mpsc;
    use tower::ServiceExt;

    type Pieces = Arc<Mutex<Option<mpsc::Receiver<&'static str>>>>;

    /// A router whose `/stream` body is what the test sends (to its end
    /// when the sender is dropped) and whose `/whole` body is one piece,
    /// flushing into the returned count.
    fn app() -> (Router, mpsc::Sender<&'static str>, Arc<AtomicUsize>) {
        let (tx, rx) = mpsc::channel::<&'static str>(4);
        let pieces: Pieces = Arc::new(Mutex::new(Some(rx)));
        let stream = move || {
            let rx = pieces.lock().unwrap().take().unwrap();
            async move {
                Body::from_stream(futures::stream::unfold(rx, |mut rx| async move {
                    let piece = rx.recv().await?;
                    Some((Ok::<_, std::io::Error>(Bytes::from(piece)), rx))
                }))
            }
        };
        let routes = Router::new()
            .route("/stream", get(stream))
            .route("/whole", get(|| async { "whole" }));
        let flushes = Arc::new(AtomicUsize::new(0));
        let counted = flushes.clone();
        let app = flush_with(
            routes,
            Arc::new(move || {
                counted.fetch_add(1, Ordering::SeqCst);
            }),
        );
        (app, tx, flushes)
    }

    fn get_request(path: &str) -> Request<Body> {
        Request::builder().uri(path).body(Body::empty()).unwrap()
    }

    #[tokio::test]
    async fn a_streamed_body_flushes_once_after_its_last_piece() {
        let (app, tx, flushes) = app();
        let response = app.oneshot(get_request("/stream")).await.unwrap();
        // The handler has returned; the body has not ended.
        assert_eq!(flushes.load(Ordering::SeqCst), 0);
        let mut body = response.into_body().into_data_stream();
        tx.send("one").await.unwrap();
        assert_eq!(body.next().await.unwrap().unwrap(), "one");
        tx.send("two").await.unwrap();
        assert_eq!(body.next().await.unwrap().unwrap(), "two");
        assert_eq!(flushes.load(Ordering::SeqCst), 0);
        drop(tx);
        assert!(body.next().await.is_none());
        assert_eq!(flushes.load(Ordering::SeqCst), 1);
        drop(body);
        assert_eq!(
            flushes.load(Ordering::SeqCst),
            1,
            "once, not again when dropped"
        );
    }

    #[tokio::test]
    async fn a_whole_body_flushes_once_and_a_dropped_one_too() {
        let (app, _tx, flushes) = app();
        let response = app.clone().oneshot(get_request("/whole")).await.unwrap();
        let bytes = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .unwrap();
        assert_eq!(bytes, "whole");
        assert_eq!(flushes.load(Ordering::SeqCst), 1);
        // A client gone before the end: the body is dropped unread.
        let response = app.oneshot(get_request("/stream")).await.unwrap();
        assert_eq!(flushes.load(Ordering::SeqCst), 1);
        drop(response);
        assert_eq!(flushes.load(Ordering::SeqCst), 2);
    }
}
