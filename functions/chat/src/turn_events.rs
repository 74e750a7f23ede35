//! `GET /v1/sessions/{id}/messages/{message_id}/events`: a turn's events,
//! replayed from the store after the last one the client saw, then
//! followed live until `done`, whichever process runs the turn.

use axum::extract::{Query, State as Extract};
use axum::response::Response;
use http::HeaderMap;
use lambent_app::turns::follow;
use lambent_core::ids::{MessageId, SessionId};
use lambent_core::Error;
use lambent_http::error::ApiResult;
use lambent_http::{Caller, PathIds};
use lambent_store::sessions;
use serde::Deserialize;

use crate::Chat;

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct After {
    /// Replay the events after this id (what `Last-Event-ID` says, for
    /// clients that cannot set it).
    after: Option<u64>,
}

/// Replay a turn's events after `Last-Event-ID` (or `?after=`), then follow
/// the live turn until its `done` event. Without either, every event from
/// the first. Events are kept as long as the session.
#[utoipa::path(get, path = "/v1/sessions/{id}/messages/{message_id}/events", tag = "chat",
    params(
        ("id" = String, Path, description = "session ID (`ses_...`)"),
        ("message_id" = String, Path, description = "the turn's ID: its first reply's message ID (`msg_...`)"),
        ("Last-Event-ID" = Option<u64>, Header, description = "the id of the last event the client has"),
        After,
    ),
    responses(
        (status = 200, description = "the turn's events (`text/event-stream`), ending with `done`", content_type = "text/event-stream", body = String),
        (status = 400, description = "`Last-Event-ID` or `after` is not a number"),
        (status = 404, description = "no such session or turn"),
    ))]
pub async fn turn_events(
    Extract(chat): Extract<Chat>,
    principal: Caller,
    PathIds(session_id, turn_id): PathIds<SessionId, MessageId>,
    headers: HeaderMap,
    Query(query): Query<After>,
) -> ApiResult<Response> {
    let after = match headers.get("last-event-id") {
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    Error::BadRequest("Last-Event-ID: must be an event id (a number)".into())
                })?,
        ),
        None => query.after,
    };
    let state = &chat.state;
    if sessions::get(state.store.as_ref(), &principal.user_id, &session_id)
        .await?
        .is_none()
    {
        return Err(Error::NotFound("session").into());
    }
    // Ends before the function's own timeout; the client reconnects with
    // the last id it saw.
    let until = tokio::time::Instant::now() + state.config.stream_deadline;
    let events = follow::follow(state, &session_id, &turn_id, after, until).await?;
    Ok(crate::events::stream_turn(crate::events::received(events)))
}
