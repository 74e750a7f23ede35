//! Scripted answers: what the tool server sends back for one request.

use std::time::Duration;

use serde_json::Value;

/// What a reply's body is.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Body {
    /// `200`, `application/json`.
    Json(Value),
    /// `200`, `text/plain; charset=utf-8`.
    Text(String),
    /// Any status; `application/json` if the body parses as JSON, else text.
    Status(u16, String),
    /// `200`, `{"echo": <the request's input>}`.
    Echo,
    /// `200`, a text body of this many bytes ([`large_text`]).
    Large(usize),
    /// No answer at all; the connection stays open.
    Hang,
}

/// A scripted answer of the tool server. Build one with [`ToolReply::json`],
/// [`ToolReply::text`], [`ToolReply::status`], [`ToolReply::echo`],
/// [`ToolReply::large`] or [`ToolReply::hang`]; [`ToolReply::delay`] makes
/// any of them wait before answering.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolReply {
    pub(crate) body: Body,
    pub(crate) delay: Duration,
}

impl ToolReply {
    fn with_body(body: Body) -> ToolReply {
        ToolReply {
            body,
            delay: Duration::ZERO,
        }
    }

    /// `200 OK` with this JSON body (`content-type: application/json`).
    pub fn json(value: Value) -> ToolReply {
        ToolReply::with_body(Body::Json(value))
    }

    /// `200 OK` with this text body (`content-type: text/plain;
    /// charset=utf-8`).
    pub fn text(text: impl Into<String>) -> ToolReply {
        ToolReply::with_body(Body::Text(text.into()))
    }

    /// This status (any, 2xx included) with this body: `content-type:
    /// application/json` when the body parses as JSON, text otherwise. A
    /// status outside 100..=999 is sent as 500.
    pub fn status(code: u16, body: impl Into<String>) -> ToolReply {
        ToolReply::with_body(Body::Status(code, body.into()))
    }

    /// `200 OK` with `{"echo": <the request's "input">}` (`null` when the
    /// request has no input or is not JSON). The default answer.
    pub fn echo() -> ToolReply {
        ToolReply::with_body(Body::Echo)
    }

    /// `200 OK` with a text body of exactly `bytes` bytes, [`large_text`]`(bytes)`
    /// (with a `content-length`), to test a client's cut of large results.
    pub fn large(bytes: usize) -> ToolReply {
        ToolReply::with_body(Body::Large(bytes))
    }

    /// Accepts the request and never answers; the connection stays open
    /// until the client goes away or the server is dropped.
    pub fn hang() -> ToolReply {
        ToolReply::with_body(Body::Hang)
    }

    /// Waits this long (after reading the request) before answering.
    pub fn delay(mut self, delay: Duration) -> ToolReply {
        self.delay = delay;
        self
    }
}

impl Default for ToolReply {
    /// [`ToolReply::echo`].
    fn default() -> ToolReply {
        ToolReply::echo()
    }
}

/// The body of [`ToolReply::large`]: `bytes` ASCII bytes, byte `i` being
/// `b'a' + i % 26` (`abc...xyzabc...`), so a test can tell where a cut fell.
pub fn large_text(bytes: usize) -> String {
    (0..bytes)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_text_cycles_the_alphabet() {
        assert_eq!(large_text(0), "");
        assert_eq!(large_text(28), "abcdefghijklmnopqrstuvwxyzab");
        assert_eq!(large_text(65_537).len(), 65_537);
    }

    #[test]
    fn builders() {
        assert_eq!(ToolReply::default(), ToolReply::echo());
        let reply = ToolReply::hang().delay(Duration::from_millis(5));
        assert_eq!(reply.body, Body::Hang);
        assert_eq!(reply.delay, Duration::from_millis(5));
        assert_eq!(ToolReply::text("x").delay, Duration::ZERO);
        assert_eq!(
            ToolReply::status(502, "bad gateway").body,
            Body::Status(502, "bad gateway".to_owned())
        );
    }
}
