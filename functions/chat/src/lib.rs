//! Streamed chat and the OpenAI-compatible endpoint: the routes that call
//! model providers. Replies stream as server-sent events, chunk by chunk as
//! the provider sends them; in AWS this function sits behind the API Gateway
//! REST API with response streaming (`ResponseTransferMode: RESPONSE_STREAM`).
//!
//! | method | route |
//! |---|---|
//! | POST | `/v1/sessions/{id}/messages` |
//! | POST | `/v1/chat/completions` |
//! | POST | `/v1/messages` (Anthropic-compatible) |
//! | GET | `/v1/sessions/{id}/messages/{message_id}/events` |

mod completions;
mod events;
mod messages_api;
mod turn;
mod turn_events;

use axum::extract::FromRef;
use lambent_app::chat::{self, Target};
use lambent_app::state::{StartError, State};
use lambent_app::streams::StreamSlot;
use lambent_core::ids::{AgentId, TypedId};
use lambent_core::Error;
use lambent_http::error::{ApiError, ApiResult};
use lambent_http::group::{self, RouteGroup, Routes};
use lambent_http::routes;
use lambent_llm::LlmClient;

/// What the chat handlers share: the state and the provider HTTP client,
/// built once per cold start.
#[derive(Clone, FromRef)]
pub struct Chat {
    pub state: State,
    pub llm: LlmClient,
}

impl Chat {
    /// Builds the provider client from the configuration.
    pub fn new(state: State) -> Result<Chat, StartError> {
        let llm =
            LlmClient::new(state.config.llm_client()).map_err(|e| StartError::Dependency {
                name: "provider HTTP client",
                detail: e.to_string(),
            })?;
        Ok(Chat { state, llm })
    }
}

/// The routes, listed once: with their OpenAPI description for the
/// document, bare for serving.
pub fn routes() -> Routes<Chat> {
    Routes::new()
        .routes(routes!(turn::post_message))
        .routes(routes!(completions::create_completion))
        .routes(routes!(messages_api::create_message))
        .routes(routes!(turn_events::turn_events))
}

/// The route group: these routes behind the API key check, with the
/// provider client beside the state.
pub const GROUP: RouteGroup = RouteGroup {
    openapi: || group::openapi_of(routes()),
    routes: |state| {
        let chat = Chat::new(state.clone())?;
        Ok(group::protected(routes(), &state, chat)
            .layer(axum::middleware::from_fn(messages_api::anthropic_errors)))
    },
};

/// Who answers a stateless call (the OpenAI- and Anthropic-compatible
/// endpoints): one of the caller's agents (`agt_...`) or
/// `<provider name>/<catalog model>`.
pub(crate) async fn target(chat: &Chat, owner: &str, model: &str) -> ApiResult<Target> {
    if model.starts_with("agt_") {
        AgentId::parse(model).map_err(|_| bad(format!("model: {model:?} is not an agent ID")))?;
        return match Target::of_agent(&chat.state, owner, model, "the agent").await {
            Err(lambent_core::Error::Conflict(m)) if m.starts_with("the agent ") => {
                Err(bad(format!("model: you have no agent {model:?}")))
            }
            other => Ok(other?),
        };
    }
    match model.split_once('/') {
        Some((provider, name)) if !provider.is_empty() && !name.is_empty() => {
            Ok(Target::of_provider_model(&chat.state, owner, provider, name, "model").await?)
        }
        _ => Err(bad(format!(
            "model: {model:?} is neither an agent ID (agt_...) nor <provider name>/<model>"
        ))),
    }
}

/// Prepares a call and, if its reply streams, takes one of the user's
/// stream slots meanwhile, so the slot's write adds nothing to the time to
/// the first token (429 `too_many_streams` when all are taken: the
/// prepared call's reservation is then given back).
pub(crate) async fn prepare_with_slot(
    state: &State,
    user_id: &str,
    streams: bool,
    prepare: impl std::future::Future<Output = lambent_core::Result<chat::Prepared>>,
) -> ApiResult<(chat::Prepared, Option<StreamSlot>)> {
    if !streams {
        return Ok((prepare.await?, None));
    }
    match tokio::join!(StreamSlot::take(state, user_id), prepare) {
        (Ok(slot), Ok(call)) => Ok((call, Some(slot))),
        (Err(refused), Ok(call)) => {
            chat::release(state, &call).await;
            Err(refused.into())
        }
        // A slot taken for a call that cannot be made goes back on drop.
        (_, Err(e)) => Err(e.into()),
    }
}

/// A 400 whose message starts with the field it is about.
pub(crate) fn bad(message: String) -> ApiError {
    Error::BadRequest(message).into()
}
