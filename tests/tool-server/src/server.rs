//! The HTTP/1.1 server: connections, recording, and the scripted answers.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::reply::{large_text, Body as ReplyBody};
use crate::{Shared, ToolRequest};

const JSON: &str = "application/json";
const TEXT: &str = "text/plain; charset=utf-8";

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
        let io = TokioIo::new(stream);
        let shared = shared.clone();
        conns.spawn(async move {
            let svc = service_fn(move |req| handle(shared.clone(), req));
            let _ = http1::Builder::new().serve_connection(io, svc).await;
        });
    }
}

async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    // Counted from arrival until the response is handed to hyper, or until
    // hyper drops this future (its client went away).
    let _in_flight = shared.begin();
    let (parts, body) = req.into_parts();
    let bytes = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        // The client went away while sending: nobody will read an answer.
        Err(_) => Bytes::new(),
    };
    let parsed: Option<Value> = serde_json::from_slice(&bytes).ok();
    let body = match parsed {
        Some(v) => v,
        None if bytes.is_empty() => Value::Null,
        None => Value::String(String::from_utf8_lossy(&bytes).into_owned()),
    };
    let path = parts.uri.path().to_owned();
    let idempotency_key = parts
        .headers
        .get("idempotency-key")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let input = body.get("input").cloned().unwrap_or(Value::Null);
    shared.record(ToolRequest {
        method: parts.method.to_string(),
        path: path.clone(),
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
        idempotency_key,
        body,
    });

    if parts.method != Method::POST {
        let mut resp = response(405, TEXT, "only POST is served".into());
        resp.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("POST"));
        return Ok(resp);
    }

    let reply = shared.next_reply(&path);
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let resp = match reply.body {
        ReplyBody::Json(value) => response(200, JSON, to_json(&value)),
        ReplyBody::Text(text) => response(200, TEXT, text.into()),
        ReplyBody::Status(code, text) => {
            let kind = if serde_json::from_str::<Value>(&text).is_ok() {
                JSON
            } else {
                TEXT
            };
            response(code, kind, text.into())
        }
        ReplyBody::Echo => response(200, JSON, to_json(&json!({ "echo": input }))),
        ReplyBody::Large(n) => response(200, TEXT, large_text(n).into()),
        ReplyBody::Hang => std::future::pending().await,
    };
    Ok(resp)
}

fn to_json(value: &Value) -> Bytes {
    serde_json::to_vec(value).unwrap_or_default().into()
}

fn response(status: u16, content_type: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}
