//! Server-sent events, read incrementally from a byte stream, and the driver
//! that turns a provider's event stream into [`Chunk`]s.
//!
//! The parser follows the event-stream format of the HTML standard: lines end
//! with `\n`, `\r\n` or `\r`; a blank line dispatches the event; `data:`
//! lines accumulate (joined with `\n`); `event:` names the event; `id:` sets
//! the last event ID, which every later event carries until the next `id:`;
//! lines that start with `:` are comments (keep-alives); `retry:` is ignored.
//! It is the one parser of Lambent's event streams: the provider clients
//! here, and the tests and benches that read Lambent's own streams.
//! Bytes arrive in whatever pieces the network delivers, so every state is
//! kept across [`SseParser::feed`] calls, and memory stays bounded: an event
//! larger than the parser's limit is refused.

use std::collections::VecDeque;

use bytes::Bytes;
use futures::{FutureExt, Stream, StreamExt};

use super::{Chunk, ChunkStream, ProviderError};

/// The largest event (its lines, field names included) the parser accepts.
pub const MAX_EVENT_BYTES: usize = 1024 * 1024;

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field; `None` when absent (the "message" type).
    pub event: Option<String>,
    /// The last event ID when the event was dispatched: the value of the
    /// latest `id:` line so far, in this event or an earlier one.
    pub id: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

/// An incremental event-stream parser with a bounded buffer.
#[derive(Debug)]
pub struct SseParser {
    limit: usize,
    /// The current, unfinished line.
    line: Vec<u8>,
    /// The previous byte ended a line with `\r`: a `\n` right after it
    /// belongs to the same line ending.
    after_cr: bool,
    /// No line has been completed yet (a leading byte-order mark is dropped).
    first_line: bool,
    event: Option<String>,
    last_id: Option<String>,
    data: String,
    has_data: bool,
    /// Bytes taken by the current event so far (its completed lines).
    event_bytes: usize,
    failed: bool,
}

impl Default for SseParser {
    fn default() -> Self {
        SseParser::new()
    }
}

impl SseParser {
    pub fn new() -> SseParser {
        SseParser::with_limit(MAX_EVENT_BYTES)
    }

    /// A parser that refuses events larger than `limit` bytes.
    pub fn with_limit(limit: usize) -> SseParser {
        SseParser {
            limit,
            line: Vec::new(),
            after_cr: false,
            first_line: true,
            event: None,
            last_id: None,
            data: String::new(),
            has_data: false,
            event_bytes: 0,
            failed: false,
        }
    }

    /// Feeds the next bytes and returns the events they complete, in order.
    /// After an error the parser refuses every further call.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<Vec<SseEvent>, ProviderError> {
        if self.failed {
            return Err(ProviderError::Protocol(
                "the event stream was already refused".into(),
            ));
        }
        let mut events = Vec::new();
        while !bytes.is_empty() {
            if self.after_cr {
                self.after_cr = false;
                if bytes[0] == b'\n' {
                    bytes = &bytes[1..];
                    continue;
                }
            }
            match bytes.iter().position(|&b| b == b'\n' || b == b'\r') {
                Some(end) => {
                    self.push_line_bytes(&bytes[..end])?;
                    self.after_cr = bytes[end] == b'\r';
                    bytes = &bytes[end + 1..];
                    if let Some(event) = self.end_line()? {
                        events.push(event);
                    }
                }
                None => {
                    self.push_line_bytes(bytes)?;
                    bytes = &[];
                }
            }
        }
        Ok(events)
    }

    fn push_line_bytes(&mut self, bytes: &[u8]) -> Result<(), ProviderError> {
        if self.event_bytes + self.line.len() + bytes.len() > self.limit {
            return Err(self.too_large());
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    fn too_large(&mut self) -> ProviderError {
        self.failed = true;
        self.line = Vec::new();
        self.data = String::new();
        ProviderError::Protocol(format!(
            "an event of the stream is larger than {} bytes",
            self.limit
        ))
    }

    /// Handles the line just completed; returns the event a blank line
    /// dispatches.
    fn end_line(&mut self) -> Result<Option<SseEvent>, ProviderError> {
        let mut line = std::mem::take(&mut self.line);
        if self.first_line {
            self.first_line = false;
            if line.starts_with(&[0xEF, 0xBB, 0xBF]) {
                line.drain(..3);
            }
        }
        if line.is_empty() {
            self.event_bytes = 0;
            let event = self.event.take();
            if !self.has_data {
                self.data.clear();
                return Ok(None);
            }
            self.has_data = false;
            let data = std::mem::take(&mut self.data);
            return Ok(Some(SseEvent {
                event,
                id: self.last_id.clone(),
                data,
            }));
        }
        // Each line costs at least one byte in the budget, so a flood of
        // empty `data:` lines is bounded too.
        self.event_bytes += line.len() + 1;
        if line[0] == b':' {
            // A comment (keep-alive).
            return Ok(None);
        }
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                let value = value.strip_prefix(b" ").unwrap_or(value);
                (&line[..colon], value)
            }
            None => (&line[..], &[][..]),
        };
        match name {
            b"data" => {
                let value = std::str::from_utf8(value).map_err(|_| {
                    self.failed = true;
                    ProviderError::Protocol("the event stream is not UTF-8".into())
                })?;
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            b"event" => {
                let value = std::str::from_utf8(value).map_err(|_| {
                    self.failed = true;
                    ProviderError::Protocol("the event stream is not UTF-8".into())
                })?;
                self.event = Some(value.to_owned());
            }
            // An ID with a NUL is ignored, as the format says.
            b"id" if !value.contains(&0) => {
                let value = std::str::from_utf8(value).map_err(|_| {
                    self.failed = true;
                    ProviderError::Protocol("the event stream is not UTF-8".into())
                })?;
                self.last_id = Some(value.to_owned());
            }
            // `retry` and unknown fields are ignored, as the format says.
            _ => {}
        }
        Ok(None)
    }
}

/// What a wire format does with each event of its stream.
pub(crate) trait EventDecoder: Send + 'static {
    /// The chunks an event yields, in order; an error ends the stream.
    fn on_event(&mut self, event: SseEvent) -> Result<Vec<Chunk>, ProviderError>;

    /// Whether the format's terminal event has been seen: the reply is whole
    /// and nothing more is read.
    fn finished(&self) -> bool;
}

struct Driver<S, D> {
    body: S,
    parser: SseParser,
    decoder: D,
    pending: VecDeque<Result<Chunk, ProviderError>>,
    done: bool,
}

/// Turns a byte stream into the stream of chunks `decoder` reads from its
/// events. The stream ends after the terminal event; if the bytes end before
/// it, the last item is `Err(Connection("stream ended early"))`; after any
/// `Err` item nothing follows.
pub(crate) fn decode<S, D>(body: S, decoder: D) -> ChunkStream
where
    S: Stream<Item = Result<Bytes, ProviderError>> + Send + Unpin + 'static,
    D: EventDecoder,
{
    let driver = Driver {
        body,
        parser: SseParser::new(),
        decoder,
        pending: VecDeque::new(),
        done: false,
    };
    Box::pin(futures::stream::unfold(driver, |mut d| async move {
        loop {
            if let Some(item) = d.pending.pop_front() {
                return Some((item, d));
            }
            if d.done {
                return None;
            }
            if d.decoder.finished() {
                d.drain_ready();
                return None;
            }
            match d.body.next().await {
                Some(Ok(bytes)) => d.absorb(&bytes),
                Some(Err(e)) => {
                    d.done = true;
                    d.pending.push_back(Err(e));
                }
                None => {
                    d.done = true;
                    if !d.decoder.finished() {
                        d.pending
                            .push_back(Err(ProviderError::Connection("stream ended early".into())));
                    }
                }
            }
        }
    }))
}

impl<S, D> Driver<S, D>
where
    S: Stream<Item = Result<Bytes, ProviderError>> + Unpin,
    D: EventDecoder,
{
    fn absorb(&mut self, bytes: &[u8]) {
        let events = match self.parser.feed(bytes) {
            Ok(events) => events,
            Err(e) => {
                self.fail(e);
                return;
            }
        };
        for event in events {
            if self.decoder.finished() {
                // Anything after the terminal event is not part of the reply.
                return;
            }
            match self.decoder.on_event(event) {
                Ok(chunks) => self.pending.extend(chunks.into_iter().map(Ok)),
                Err(e) => {
                    self.fail(e);
                    return;
                }
            }
        }
    }

    /// After the terminal event, reads whatever of the body has already
    /// arrived, without waiting: a body read to its end returns its
    /// connection to the pool, one dropped early does not.
    fn drain_ready(&mut self) {
        for _ in 0..4 {
            match self.body.next().now_or_never() {
                Some(Some(Ok(_))) => continue,
                _ => return,
            }
        }
    }

    fn fail(&mut self, e: ProviderError) {
        self.done = true;
        self.pending.push_back(Err(e));
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Feeds `input` one byte at a time.
    pub(crate) fn parse_bytewise(input: &[u8]) -> Result<Vec<SseEvent>, ProviderError> {
        let mut parser = SseParser::new();
        let mut events = Vec::new();
        for b in input {
            events.extend(parser.feed(std::slice::from_ref(b))?);
        }
        Ok(events)
    }

    fn ev(event: Option<&str>, data: &str) -> SseEvent {
        SseEvent {
            event: event.map(str::to_owned),
            id: None,
            data: data.to_owned(),
        }
    }

    #[test]
    fn an_id_holds_until_the_next_id() {
        let input = b"id: 7\nevent: a\ndata: 1\n\nevent: b\ndata: 2\n\nid: 8\ndata: 3\n\nid: x\0y\ndata: 4\n\n";
        let ids: Vec<Option<String>> = parse_bytewise(input)
            .unwrap()
            .into_iter()
            .map(|e| e.id)
            .collect();
        let at = |s: &str| Some(s.to_owned());
        assert_eq!(ids, [at("7"), at("7"), at("8"), at("8")]);
    }

    #[test]
    fn parses_events_fed_byte_by_byte_and_whole() {
        let input = b"event: message_start\ndata: {\"a\":1}\n\n: keep-alive\n\nevent: ping\ndata: {}\n\ndata: x\n\n";
        let expected = vec![
            ev(Some("message_start"), "{\"a\":1}"),
            ev(Some("ping"), "{}"),
            ev(None, "x"),
        ];
        assert_eq!(parse_bytewise(input).unwrap(), expected);
        assert_eq!(SseParser::new().feed(input).unwrap(), expected);
    }

    #[test]
    fn every_split_point_gives_the_same_events() {
        let input = b"event: a\r\ndata: one\r\ndata: two\r\n\r\n:c\r\ndata:three\r\n\r\n";
        let expected = vec![ev(Some("a"), "one\ntwo"), ev(None, "three")];
        for split in 0..=input.len() {
            let mut parser = SseParser::new();
            let mut events = parser.feed(&input[..split]).unwrap();
            events.extend(parser.feed(&input[split..]).unwrap());
            assert_eq!(events, expected, "split at {split}");
        }
    }

    #[test]
    fn crlf_and_cr_and_lf_line_endings() {
        assert_eq!(
            parse_bytewise(b"data: a\r\n\r\ndata: b\r\rdata: c\n\n").unwrap(),
            vec![ev(None, "a"), ev(None, "b"), ev(None, "c")]
        );
    }

    #[test]
    fn multi_line_data_and_field_without_space_or_value() {
        assert_eq!(
            parse_bytewise(b"data:a\ndata\ndata:  b\n\n").unwrap(),
            vec![ev(None, "a\n\n b")]
        );
    }

    #[test]
    fn comments_ids_retries_and_empty_events_dispatch_nothing() {
        assert_eq!(
            parse_bytewise(b": hello\n\nid: 3\nretry: 10\n\nevent: x\n\n").unwrap(),
            vec![]
        );
        // The event name of a dispatch-less block does not leak into the next.
        assert_eq!(
            parse_bytewise(b"event: x\n\ndata: y\n\n").unwrap(),
            vec![ev(None, "y")]
        );
    }

    #[test]
    fn an_unfinished_event_is_not_dispatched() {
        assert_eq!(parse_bytewise(b"data: a\n").unwrap(), vec![]);
        assert_eq!(parse_bytewise(b"data: a").unwrap(), vec![]);
    }

    #[test]
    fn a_leading_byte_order_mark_is_dropped() {
        assert_eq!(
            parse_bytewise(b"\xEF\xBB\xBFdata: a\n\n").unwrap(),
            vec![ev(None, "a")]
        );
    }

    #[test]
    fn multi_byte_characters_split_across_reads() {
        let input = "data: h\u{e9}llo \u{1F600}\n\n".as_bytes();
        assert_eq!(
            parse_bytewise(input).unwrap(),
            vec![ev(None, "h\u{e9}llo \u{1F600}")]
        );
    }

    #[test]
    fn invalid_utf8_is_a_protocol_error() {
        assert!(matches!(
            parse_bytewise(b"data: \xFF\xFE\n\n"),
            Err(ProviderError::Protocol(_))
        ));
    }

    #[test]
    fn oversized_events_are_refused_in_one_line_or_many() {
        let mut parser = SseParser::with_limit(64);
        let big = vec![b'a'; 100];
        assert!(matches!(parser.feed(&big), Err(ProviderError::Protocol(_))));
        // Once refused, always refused.
        assert!(parser.feed(b"\n\n").is_err());

        let mut parser = SseParser::with_limit(64);
        let mut failed = false;
        for _ in 0..100 {
            if parser.feed(b"data: 0123456789\n").is_err() {
                failed = true;
                break;
            }
        }
        assert!(failed);

        let mut parser = SseParser::with_limit(64);
        for _ in 0..100 {
            assert!(parser.feed(b"data: 0123456789\n\n").unwrap().len() == 1);
        }
    }

    #[test]
    fn the_default_limit_is_one_mebibyte() {
        let mut parser = SseParser::new();
        let chunk = vec![b'x'; 64 * 1024];
        let mut result = parser.feed(b"data: ");
        for _ in 0..17 {
            if result.is_err() {
                break;
            }
            result = parser.feed(&chunk);
        }
        assert!(matches!(result, Err(ProviderError::Protocol(_))));
    }

    struct Echo {
        finished: bool,
    }

    impl EventDecoder for Echo {
        fn on_event(&mut self, event: SseEvent) -> Result<Vec<Chunk>, ProviderError> {
            if event.data == "end" {
                self.finished = true;
                return Ok(vec![]);
            }
            if event.data == "bad" {
                return Err(ProviderError::Protocol("bad".into()));
            }
            Ok(vec![Chunk::Text(event.data)])
        }
        fn finished(&self) -> bool {
            self.finished
        }
    }

    fn byte_stream(
        input: &[u8],
        tail: Option<ProviderError>,
    ) -> impl Stream<Item = Result<Bytes, ProviderError>> + Send + Unpin + 'static {
        let mut items: Vec<Result<Bytes, ProviderError>> = input
            .iter()
            .map(|b| Ok(Bytes::copy_from_slice(std::slice::from_ref(b))))
            .collect();
        if let Some(e) = tail {
            items.push(Err(e));
        }
        futures::stream::iter(items)
    }

    async fn collect(stream: ChunkStream) -> Vec<Result<Chunk, ProviderError>> {
        stream.collect().await
    }

    #[tokio::test]
    async fn the_driver_stops_at_the_terminal_event() {
        let out = collect(decode(
            byte_stream(b"data: a\n\ndata: b\n\ndata: end\n\ndata: c\n\n", None),
            Echo { finished: false },
        ))
        .await;
        assert_eq!(
            out,
            vec![Ok(Chunk::Text("a".into())), Ok(Chunk::Text("b".into()))]
        );
    }

    #[tokio::test]
    async fn the_driver_reports_a_stream_cut_before_the_terminal_event() {
        let out = collect(decode(
            byte_stream(b"data: a\n\ndata: b", None),
            Echo { finished: false },
        ))
        .await;
        assert_eq!(
            out,
            vec![
                Ok(Chunk::Text("a".into())),
                Err(ProviderError::Connection("stream ended early".into()))
            ]
        );
    }

    #[tokio::test]
    async fn nothing_follows_an_error() {
        let out = collect(decode(
            byte_stream(b"data: a\n\ndata: bad\n\ndata: c\n\n", None),
            Echo { finished: false },
        ))
        .await;
        assert_eq!(
            out,
            vec![
                Ok(Chunk::Text("a".into())),
                Err(ProviderError::Protocol("bad".into()))
            ]
        );
        let out = collect(decode(
            byte_stream(b"data: a\n\n", Some(ProviderError::Timeout)),
            Echo { finished: false },
        ))
        .await;
        assert_eq!(
            out,
            vec![Ok(Chunk::Text("a".into())), Err(ProviderError::Timeout)]
        );
    }
}
