//! `POST /v1/sessions/{id}/messages`: one turn of a session, streamed as
//! server-sent events or answered whole.

use axum::extract::State as Extract;
use axum::response::{IntoResponse, Response};
use axum::Json;
use lambent_app::chat::{self, UserInput};
use lambent_core::chat::{ContentPart, ImageSource, Part, ToolResult};
use lambent_core::ids::SessionId;
use lambent_core::Error;
use lambent_http::error::ApiResult;
use lambent_http::Body;
use lambent_http::Caller;
use lambent_http::PathId;
use lambent_store::messages::{self, Message, MAX_STORED_BYTES};
use serde::Deserialize;

use crate::Chat;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PostMessage {
    /// The user's message: text, or a list of text and image parts (at most
    /// 256 KiB together). Exactly one of `content` and `tool_results`.
    content: Option<MessageContent>,
    /// The results of the tool calls of the session's last message, one
    /// for each call.
    tool_results: Option<Vec<ToolResult>>,
    /// `false` answers with the whole reply as one JSON message instead of a
    /// stream of events (default `true`).
    stream: Option<bool>,
}

/// Send a message to the session's agent. The reply streams as
/// `text/event-stream`: `message_start`, then `delta` events as the provider
/// sends text, then `message_end` with the usage and cost (or `error`), each
/// with an `id:`. The user's message and the reply are stored; if the client
/// goes away, the reply is still read, stored as `incomplete` and billed.
#[utoipa::path(post, path = "/v1/sessions/{id}/messages", tag = "chat",
    request_body = PostMessage,
    params(("id" = String, Path, description = "session ID (`ses_...`)")),
    responses(
        (status = 200, description = "the reply: server-sent events, or one JSON message with `\"stream\": false`",
            content(
                (String = "text/event-stream"),
                (Message = "application/json"),
            )),
        (status = 409, description = "the session's agent, its provider or its model was deleted"),
        (status = 429, description = "rate limited, or `budget_exceeded`: the call's worst case does not fit a spending limit"),
        (status = 502, description = "the provider failed before replying"),
        (status = 504, description = "the provider did not answer in time"),
    ))]
pub async fn post_message(
    Extract(chat): Extract<Chat>,
    principal: Caller,
    PathId(id): PathId<SessionId>,
    Body(body): Body<PostMessage>,
) -> ApiResult<Response> {
    let stream = body.stream != Some(false);
    let input = user_input(body)?;
    let state = &chat.state;
    let prepare = chat::prepare_session_turn(state, &principal.user_id, &id, input);
    let (call, slot) = crate::prepare_with_slot(state, &principal.user_id, stream, prepare).await?;
    let Some(slot) = slot else {
        let settled = chat::complete(state, &chat.llm, &call).await?;
        // The stored message (its parts read back); if the store cannot
        // show it yet (its settle was left to the sweeper), as it will be.
        let reply = match messages::get(state.store.as_ref(), &id, call.reply_id()).await {
            Ok(Some(stored)) => stored,
            _ => chat::reply_message(&call, &settled)?,
        };
        return Ok(Json::<Message>(reply).into_response());
    };
    let started = chat::start(state, &chat.llm, &call).await?;
    Ok(crate::events::stream_reply(
        chat.state.clone(),
        call,
        started,
        crate::events::LambentEvents::default(),
        slot,
    ))
}

/// A message's content: its text, or a list of parts.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum MessageContent {
    Text(String),
    Parts(Vec<ContentPart>),
}

/// Media types both providers take inline.
const IMAGE_TYPES: [&str; 4] = ["image/png", "image/jpeg", "image/gif", "image/webp"];

/// What the caller says: checked here, so the store and the provider only
/// see what they can take.
fn user_input(body: PostMessage) -> ApiResult<UserInput> {
    let bad = |message: String| -> ApiResult<UserInput> { Err(Error::BadRequest(message).into()) };
    match (body.content, body.tool_results) {
        (Some(content), None) => content_input(content),
        (None, Some(results)) => {
            if results.is_empty() {
                return bad("tool_results: must not be empty".into());
            }
            for (i, result) in results.iter().enumerate() {
                if result.tool_call_id.trim().is_empty() {
                    return bad(format!("tool_results[{i}].tool_call_id: must not be empty"));
                }
            }
            let size: usize = results.iter().map(|r| r.content.len()).sum();
            if size > MAX_STORED_BYTES {
                return bad(format!(
                    "tool_results: the results must be at most {MAX_STORED_BYTES} bytes together"
                ));
            }
            Ok(UserInput::ToolResults(results))
        }
        _ => bad("content: send exactly one of content or tool_results".into()),
    }
}

fn content_input(content: MessageContent) -> ApiResult<UserInput> {
    let bad = |message: String| -> ApiResult<UserInput> { Err(Error::BadRequest(message).into()) };
    let parts = match content {
        MessageContent::Text(text) => vec![ContentPart::Text { text }],
        MessageContent::Parts(parts) => parts,
    };
    if parts.is_empty() {
        return bad("content: must not be empty".into());
    }
    let mut has_text = false;
    for (i, part) in parts.iter().enumerate() {
        match part {
            ContentPart::Text { text } => has_text |= !text.trim().is_empty(),
            ContentPart::Image {
                source: ImageSource::Base64 { media_type, data },
            } => {
                if !IMAGE_TYPES.contains(&media_type.as_str()) {
                    return bad(format!(
                        "content[{i}].source.media_type: must be one of {}",
                        IMAGE_TYPES.join(", ")
                    ));
                }
                let base64 = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=');
                if data.is_empty() || !data.bytes().all(base64) {
                    return bad(format!("content[{i}].source.data: must be base64"));
                }
            }
            ContentPart::Image {
                source: ImageSource::Url { url },
            } => {
                if !(url.starts_with("https://") || url.starts_with("data:image/")) {
                    return bad(format!(
                        "content[{i}].source.url: must be an https or a data:image URL"
                    ));
                }
            }
        }
    }
    if !has_text && parts.iter().all(|p| matches!(p, ContentPart::Text { .. })) {
        return bad("content: must not be empty".into());
    }
    // Text is stored up to 256 KiB, like a reply; images go to items of
    // their own when large, so only the request body limit bounds them.
    let text: usize = parts
        .iter()
        .map(|p| match p {
            ContentPart::Text { text } => text.len(),
            ContentPart::Image { .. } => 0,
        })
        .sum();
    if text > MAX_STORED_BYTES {
        return bad(format!(
            "content: the text must be at most {MAX_STORED_BYTES} bytes"
        ));
    }
    Ok(UserInput::Content(
        parts.into_iter().map(Part::from).collect(),
    ))
}
