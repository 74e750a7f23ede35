//! `POST /v1/sessions/{id}/messages`: one turn of a session, streamed as
//! server-sent events or answered whole.

use axum::extract::State as Extract;
use axum::response::{IntoResponse, Response};
use axum::Json;
use lambent_app::chat;
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
    /// The user's message (at most 256 KiB of UTF-8).
    #[schema(pattern = "\\S")]
    content: String,
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
    let content = message_content(body.content)?;
    let state = &chat.state;
    let call = chat::prepare_session_turn(state, &principal.user_id, &id, content).await?;
    if body.stream == Some(false) {
        chat::complete(state, &chat.llm, &call).await?;
        let reply = messages::get(state.store.as_ref(), &id, call.reply_id())
            .await?
            .ok_or_else(|| Error::Internal("a settled reply is not stored".into()))?;
        return Ok(Json::<Message>(reply).into_response());
    }
    let started = chat::start(state, &chat.llm, &call).await?;
    Ok(crate::events::stream_reply(
        chat.state.clone(),
        call,
        started,
        crate::events::LambentEvents::default(),
    ))
}

fn message_content(raw: String) -> ApiResult<String> {
    if raw.trim().is_empty() {
        return Err(Error::BadRequest("content: must not be empty".into()).into());
    }
    if raw.len() > MAX_STORED_BYTES {
        return Err(Error::BadRequest(format!(
            "content: must be at most {MAX_STORED_BYTES} bytes"
        ))
        .into());
    }
    Ok(raw)
}
