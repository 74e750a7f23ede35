//! `POST /v1/sessions/{id}/messages`: one agent turn of a session (see
//! `lambent_app::turns`), streamed as server-sent events, answered whole,
//! or run in the background.

use axum::extract::State as Extract;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use lambent_app::chat::{self, UserInput};
use lambent_app::streams::StreamSlot;
use lambent_app::turns::{self, answers::Answers, TurnRef};
use lambent_core::chat::{ContentPart, ImageSource, Part, ToolResult};
use lambent_core::ids::SessionId;
use lambent_core::Error;
use lambent_http::error::ApiResult;
use lambent_http::Body;
use lambent_http::Caller;
use lambent_http::PathId;
use lambent_store::messages::{self, Message, MAX_STORED_BYTES};
use lambent_store::turns::Approval;
use serde::{Deserialize, Serialize};

use crate::Chat;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PostMessage {
    /// The user's message: text, or a list of text and image parts (at most
    /// 256 KiB together). It starts a new turn. Send `content`, or the
    /// answers a waiting turn asks for (`tool_results`, `approvals`).
    content: Option<MessageContent>,
    /// The results of the client tool calls the session's waiting turn
    /// asked for, one for each.
    tool_results: Option<Vec<ToolResult>>,
    /// Decisions on the server tool calls the waiting turn asked approval
    /// for, one for each; a denial reaches the model as an `is_error` result.
    approvals: Option<Vec<Approval>>,
    /// `false` answers with the turn's last reply as one JSON message instead
    /// of a stream of events (default `true`).
    stream: Option<bool>,
    /// `true` runs the turn in the worker: the answer is 202
    /// `{"message_id"}` at once; follow it with `GET …/events`.
    background: Option<bool>,
}

/// A background turn's handle.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Accepted {
    /// The turn's ID (its first reply's): `GET …/messages/{message_id}`
    /// shows its status, `…/events` its events.
    message_id: String,
}

/// Start a turn of the session's agent. It runs until the model is done:
/// server tools are called and their results sent back to the model (up to
/// the agent's `max_tool_rounds`); it stops early to wait for client tools'
/// results or approvals. The turn's events stream as `text/event-stream`:
/// per model call `message_start`, `delta`s, `tool_call`s and `message_end`
/// (usage and cost), `tool_result`s, `approval_required`s, and last `done`,
/// each with an `id:`; they are stored too, and `GET …/events` replays them.
/// A disconnect never stops the turn; `POST …/cancel` does.
#[utoipa::path(post, path = "/v1/sessions/{id}/messages", tag = "chat",
    request_body = PostMessage,
    params(("id" = String, Path, description = "session ID (`ses_...`)")),
    responses(
        (status = 200, description = "the turn: server-sent events, or its last reply as one JSON message with `\"stream\": false`",
            content(
                (String = "text/event-stream"),
                (Message = "application/json"),
            )),
        (status = 202, description = "`\"background\": true`: the turn runs in the worker", body = Accepted),
        (status = 409, description = "the session's agent, its provider or its model was deleted; or no turn waits for these answers"),
        (status = 429, description = "rate limited, `too_many_streams`, or `budget_exceeded`: the first call's worst case does not fit a spending limit"),
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
    let background = body.background == Some(true);
    let input = user_input(body)?;
    let state = &chat.state;
    let owner = &principal.user_id;
    let request_id = lambent_http::current_request_id();
    let spawned = match input {
        Input::Content(parts) if background => {
            let turn_id = turns::background::begin(state, owner, &id, parts).await?;
            return Ok(accepted(turn_id));
        }
        Input::Content(parts) => {
            let prepare = chat::prepare_session_turn(state, owner, &id, UserInput::Content(parts));
            let (call, slot) = crate::prepare_with_slot(state, owner, stream, prepare).await?;
            let started = chat::start(state, &chat.llm, &call).await?;
            let turn = TurnRef {
                owner: owner.clone(),
                session_id: id.to_string(),
                turn_id: call.reply_id().to_owned(),
                first_message_id: call.first_input_id().unwrap_or_default().to_owned(),
                approvals: Vec::new(),
                answers: None,
                expires_at: call.expires_at,
                request_id,
            };
            let spawned = turns::spawn(
                state,
                &chat.llm,
                turn.clone(),
                Some((call, started)),
                stream,
                slot,
            );
            (turn, spawned)
        }
        Input::Answers(answers) => {
            let slot = match stream && !background {
                true => Some(StreamSlot::take(state, owner).await?),
                false => None,
            };
            let turn =
                turns::answers::begin(state, owner, &id, answers, background, &request_id).await?;
            if background {
                turns::background::hand_over(state, owner, &turn.session_id, &turn.turn_id).await;
                return Ok(accepted(turn.turn_id));
            }
            let spawned = turns::spawn(state, &chat.llm, turn.clone(), None, stream, slot);
            (turn, spawned)
        }
    };
    let (turn, spawned) = spawned;
    match spawned.live {
        Some(live) => Ok(crate::events::stream_live_turn(
            state,
            live,
            turn.session_id,
            turn.turn_id,
        )),
        None => {
            let ended = spawned
                .ended
                .await
                .map_err(|e| Error::Internal(format!("a turn's task failed: {e}")))?;
            // The reply as this process stored it; read back only when its
            // settle was finished elsewhere.
            let reply = match ended.last_reply {
                Some(reply) => reply,
                None => last_reply(state, &turn).await?,
            };
            Ok(Json(reply).into_response())
        }
    }
}

fn accepted(turn_id: String) -> Response {
    (
        StatusCode::ACCEPTED,
        Json(Accepted {
            message_id: turn_id,
        }),
    )
        .into_response()
}

/// A turn answered whole: its last stored reply (its parts read too).
async fn last_reply(state: &lambent_app::state::State, turn: &TurnRef) -> ApiResult<Message> {
    let store = state.store.as_ref();
    let stored = messages::of_turn(
        store,
        &turn.session_id,
        &turn.turn_id,
        turn.answers.as_deref().unwrap_or(&turn.first_message_id),
    )
    .await?;
    let last = stored
        .iter()
        .rev()
        .find(|m| {
            m.role == messages::MessageRole::Assistant
                && m.turn_id.as_deref() == Some(&turn.turn_id)
        })
        // Its reply could not be stored (the store failed meanwhile).
        .ok_or_else(|| Error::Unavailable("a turn ended without a stored reply".into()))?;
    Ok(messages::get(store, &turn.session_id, &last.id)
        .await?
        .ok_or_else(|| Error::Internal("a turn's reply is gone".into()))?)
}

/// What the caller sends: a message, or answers to a waiting turn.
enum Input {
    Content(Vec<Part>),
    Answers(Answers),
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
fn user_input(body: PostMessage) -> ApiResult<Input> {
    let bad = |message: String| -> ApiResult<Input> { Err(Error::BadRequest(message).into()) };
    match (body.content, body.tool_results, body.approvals) {
        (Some(content), None, None) => Ok(Input::Content(content_input(content)?)),
        (None, results, approvals) if results.is_some() || approvals.is_some() => {
            let results = results.unwrap_or_default();
            let approvals = approvals.unwrap_or_default();
            if results.is_empty() && approvals.is_empty() {
                return bad("tool_results: must not be empty".into());
            }
            for (i, result) in results.iter().enumerate() {
                if result.tool_call_id.trim().is_empty() {
                    return bad(format!("tool_results[{i}].tool_call_id: must not be empty"));
                }
            }
            for (i, approval) in approvals.iter().enumerate() {
                if approval.tool_call_id.trim().is_empty() {
                    return bad(format!("approvals[{i}].tool_call_id: must not be empty"));
                }
                if approval
                    .reason
                    .as_ref()
                    .is_some_and(|r| r.len() > MAX_REASON_BYTES)
                {
                    return bad(format!(
                        "approvals[{i}].reason: at most {MAX_REASON_BYTES} bytes"
                    ));
                }
            }
            let size: usize = results.iter().map(|r| r.content.len()).sum();
            if size > MAX_STORED_BYTES {
                return bad(format!(
                    "tool_results: the results must be at most {MAX_STORED_BYTES} bytes together"
                ));
            }
            Ok(Input::Answers(Answers { results, approvals }))
        }
        _ => bad("content: send exactly one of content or tool_results/approvals".into()),
    }
}

/// The most bytes of a denial's reason.
const MAX_REASON_BYTES: usize = 4 * 1024;

fn content_input(content: MessageContent) -> ApiResult<Vec<Part>> {
    let bad = |message: String| -> ApiResult<Vec<Part>> { Err(Error::BadRequest(message).into()) };
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
    Ok(parts.into_iter().map(Part::from).collect())
}
