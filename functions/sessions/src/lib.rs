//! Sessions and their history. A session belongs to one of the caller's
//! agents; it carries its totals and expires after the deployment's TTL
//! unless used again. Posting a message is the chat function's route.
//!
//! | method | route |
//! |---|---|
//! | GET POST | `/v1/sessions` |
//! | GET DELETE | `/v1/sessions/{id}` |
//! | GET | `/v1/sessions/{id}/messages` |
//! | GET | `/v1/sessions/{id}/messages/{message_id}` (a turn's status) |
//! | POST | `/v1/sessions/{id}/messages/{message_id}/cancel` |

use axum::extract::{Query, State as Extract};
use axum::http::StatusCode;
use axum::Json;
use lambent_app::state::State;
use lambent_core::auth::Principal;
use lambent_core::ids::{AgentId, MessageId, SessionId, TypedId};
use lambent_core::validate;
use lambent_core::Error;
use lambent_http::error::{ApiError, ApiResult};
use lambent_http::group::{self, RouteGroup, Routes};
use lambent_http::routes;
use lambent_http::Caller;
use lambent_http::{Body, ListPage, ListParams};
use lambent_http::{PathId, PathIds};
use lambent_ports::Order;
use lambent_store::messages::{self, Message, MessageStatus};
use lambent_store::sessions::{self, NewSession, Session};
use lambent_store::turns::{self, Turn, TurnStatus, TurnView};
use rust_decimal::Decimal;
use serde::Deserialize;

/// The routes, listed once: with their OpenAPI description for the
/// document, bare for serving.
pub fn routes() -> Routes<State> {
    Routes::new()
        .routes(routes!(list_sessions, create_session))
        .routes(routes!(get_session, delete_session))
        .routes(routes!(list_messages))
        .routes(routes!(get_message))
        .routes(routes!(cancel_turn))
}

/// The route group: these routes behind the API key check.
pub const GROUP: RouteGroup = RouteGroup {
    openapi: || group::openapi_of(routes()),
    routes: |state| Ok(group::protected(routes(), &state, state.clone())),
};

const TITLE_MAX: usize = 200;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateSession {
    /// One of your agents (`agt_...`).
    #[schema(pattern = "^agt_[0-9a-z]{1,64}$")]
    agent_id: String,
    #[schema(pattern = "\\S", max_length = 200)]
    title: Option<String>,
    /// Spending limit of the session, USD, as a decimal string.
    #[serde(default, with = "rust_decimal::serde::str_option")]
    #[schema(value_type = Option<String>, example = "1.50")]
    budget_usd: Option<Decimal>,
}

/// Open a session with one of your agents.
#[utoipa::path(post, path = "/v1/sessions", tag = "sessions", request_body = CreateSession,
    responses((status = 201, body = Session)))]
async fn create_session(
    Extract(state): Extract<State>,
    principal: Caller,
    Body(body): Body<CreateSession>,
) -> ApiResult<(StatusCode, Json<Session>)> {
    AgentId::parse(&body.agent_id)
        .map_err(|_| Error::BadRequest("agent_id: not an agent ID (`agt_...`)".into()))?;
    let new = NewSession {
        agent_id: body.agent_id,
        title: body
            .title
            .map(|t| validate::name("title", &t, TITLE_MAX))
            .transpose()?,
        budget_usd: body
            .budget_usd
            .map(|b| validate::money("budget_usd", b))
            .transpose()?,
    };
    let session = sessions::create(
        state.store.as_ref(),
        &principal.user_id,
        new,
        sessions::expiry(state.clock.now_secs(), state.config.session_ttl),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(session)))
}

/// List your sessions, newest first.
#[utoipa::path(get, path = "/v1/sessions", tag = "sessions", params(ListParams),
    responses((status = 200, body = ListPage<Session>)))]
async fn list_sessions(
    Extract(state): Extract<State>,
    principal: Caller,
    Query(params): Query<ListParams>,
) -> ApiResult<Json<ListPage<Session>>> {
    let scope = format!("sessions:{}", principal.user_id);
    let listed = params
        .list(&state, &scope, |page| {
            sessions::list(state.store.as_ref(), &principal.user_id, page)
        })
        .await?;
    Ok(Json(listed))
}

async fn own_session(state: &State, principal: &Principal, id: &SessionId) -> ApiResult<Session> {
    sessions::get(state.store.as_ref(), &principal.user_id, id)
        .await?
        .ok_or(Error::NotFound("session").into())
}

/// Read one of your sessions, with its totals.
#[utoipa::path(get, path = "/v1/sessions/{id}", tag = "sessions",
    params(("id" = String, Path, description = "session ID (`ses_...`)")),
    responses((status = 200, body = Session)))]
async fn get_session(
    Extract(state): Extract<State>,
    principal: Caller,
    PathId(id): PathId<SessionId>,
) -> ApiResult<Json<Session>> {
    Ok(Json(own_session(&state, &principal, &id).await?))
}

/// Delete one of your sessions and its messages. Its costs stay counted.
#[utoipa::path(delete, path = "/v1/sessions/{id}", tag = "sessions",
    params(("id" = String, Path, description = "session ID (`ses_...`)")),
    responses((status = 204, description = "deleted")))]
async fn delete_session(
    Extract(state): Extract<State>,
    principal: Caller,
    PathId(id): PathId<SessionId>,
) -> ApiResult<StatusCode> {
    sessions::delete(state.store.as_ref(), &principal.user_id, &id).await?;
    state.callers.evict_session(&principal.user_id, &id);
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Clone, Copy, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
enum HistoryOrder {
    /// Oldest first.
    #[default]
    Asc,
    /// Newest first.
    Desc,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct HistoryParams {
    /// Messages per page, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page (of the same session and order).
    cursor: Option<String>,
    /// `asc` (oldest first, the default) or `desc` (newest first).
    #[param(inline)]
    order: Option<HistoryOrder>,
}

/// A page of a session's history, by an opaque cursor bound to the session
/// and the order. A page costs the same whatever the session's length.
#[utoipa::path(get, path = "/v1/sessions/{id}/messages", tag = "sessions",
    params(("id" = String, Path, description = "session ID (`ses_...`)"), HistoryParams),
    responses((status = 200, body = ListPage<Message>)))]
async fn list_messages(
    Extract(state): Extract<State>,
    principal: Caller,
    PathId(id): PathId<SessionId>,
    Query(params): Query<HistoryParams>,
) -> ApiResult<Json<ListPage<Message>>> {
    let order = params.order.unwrap_or_default();
    let scope = format!("messages:{}:{id}:{order:?}", principal.user_id);
    let order = match order {
        HistoryOrder::Asc => Order::Ascending,
        HistoryOrder::Desc => Order::Descending,
    };
    let list = ListParams {
        limit: params.limit,
        cursor: params.cursor,
    };
    let listed = list
        .list(&state, &scope, |page| async {
            let session = own_session(&state, &principal, &id).await?;
            Ok::<_, ApiError>(messages::page(state.store.as_ref(), &session.id, order, page).await?)
        })
        .await?;
    Ok(Json(listed))
}

/// A message, and for a turn's ID (its first reply's) the turn.
#[derive(serde::Serialize, utoipa::ToSchema)]
struct MessageWithTurn {
    #[serde(flatten)]
    message: Message,
    /// The turn this ID names, if it names one: its status, stop reason,
    /// model calls, cost, and what it waits for.
    #[serde(skip_serializing_if = "Option::is_none")]
    turn: Option<TurnView>,
}

/// A message's status, or for a turn's ID the turn's.
fn status_of(turn: &Turn) -> MessageStatus {
    match turn.status {
        TurnStatus::Running => MessageStatus::Running,
        TurnStatus::Waiting => MessageStatus::Waiting,
        TurnStatus::Complete => MessageStatus::Complete,
        TurnStatus::Incomplete => MessageStatus::Incomplete,
        TurnStatus::Cancelled => MessageStatus::Cancelled,
        TurnStatus::Failed => MessageStatus::Failed,
    }
}

async fn message_view(
    state: &State,
    session_id: &str,
    message_id: &str,
    turn: Option<Turn>,
) -> ApiResult<MessageWithTurn> {
    let stored = messages::get(state.store.as_ref(), session_id, message_id).await?;
    let (mut message, turn) = match (stored, turn) {
        (Some(message), turn) => (message, turn),
        (None, Some(turn)) => (
            messages::placeholder(session_id, message_id, &turn.created_at),
            Some(turn),
        ),
        (None, None) => return Err(Error::NotFound("message").into()),
    };
    if let Some(turn) = &turn {
        message.status = status_of(turn);
        if message.stop_reason.is_none() || turn.status.is_final() {
            message.stop_reason = turn.stop_reason.clone().or(message.stop_reason);
        }
    }
    Ok(MessageWithTurn {
        message,
        turn: turn.as_ref().map(TurnView::from),
    })
}

/// Read one message of a session. For a turn's ID (the `message_id` of its
/// first `message_start`, or of a background turn's 202) `status` is the
/// turn's: `running`, `waiting` (for tool results or approvals), `complete`,
/// `incomplete`, `cancelled` or `failed`, and `turn` tells more.
#[utoipa::path(get, path = "/v1/sessions/{id}/messages/{message_id}", tag = "sessions",
    params(
        ("id" = String, Path, description = "session ID (`ses_...`)"),
        ("message_id" = String, Path, description = "message ID (`msg_...`)"),
    ),
    responses((status = 200, body = MessageWithTurn)))]
async fn get_message(
    Extract(state): Extract<State>,
    principal: Caller,
    PathIds(id, message_id): PathIds<SessionId, MessageId>,
) -> ApiResult<Json<MessageWithTurn>> {
    let session = own_session(&state, &principal, &id).await?;
    let turn = turns::get(state.store.as_ref(), &session.id, &message_id).await?;
    Ok(Json(
        message_view(&state, &session.id, &message_id, turn).await?,
    ))
}

/// Cancel a turn (idempotent): a running turn closes its provider stream,
/// drops its tool calls, bills what was used and ends with `stop_reason:
/// "cancelled"`; a waiting turn ends at once. A final turn is left as it
/// is. Answers the turn as `GET` does, once it has ended (or after 3 s).
#[utoipa::path(post, path = "/v1/sessions/{id}/messages/{message_id}/cancel", tag = "sessions",
    params(
        ("id" = String, Path, description = "session ID (`ses_...`)"),
        ("message_id" = String, Path, description = "the turn's ID (`msg_...`)"),
    ),
    responses(
        (status = 200, body = MessageWithTurn),
        (status = 404, description = "no such session or turn"),
    ))]
async fn cancel_turn(
    Extract(state): Extract<State>,
    principal: Caller,
    PathIds(id, message_id): PathIds<SessionId, MessageId>,
) -> ApiResult<Json<MessageWithTurn>> {
    let turn =
        lambent_app::turns::cancel::cancel(&state, &principal.user_id, &id, &message_id).await?;
    Ok(Json(
        message_view(&state, &id, &message_id, Some(turn)).await?,
    ))
}
