//! Streamed chat and the OpenAI-compatible endpoint: the routes that call
//! model providers. Replies stream as server-sent events, chunk by chunk as
//! the provider sends them; in AWS this function sits behind a function URL
//! with response streaming, since API Gateway HTTP APIs cannot stream.
//!
//! | method | route |
//! |---|---|
//! | POST | `/v1/sessions/{id}/messages` |
//! | POST | `/v1/chat/completions` |
//! | POST | `/v1/messages` (Anthropic-compatible) |

mod completions;
mod events;
mod messages_api;
mod turn;

use axum::extract::FromRef;
use lambent_app::state::{StartError, State};
use lambent_http::group::{self, RouteGroup};
use lambent_llm::LlmClient;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

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

/// The routes with their OpenAPI description.
pub fn documented() -> OpenApiRouter<Chat> {
    OpenApiRouter::new()
        .routes(routes!(turn::post_message))
        .routes(routes!(completions::create_completion))
        .routes(routes!(messages_api::create_message))
}

/// The route group: these routes behind the API key check, with the
/// provider client beside the state.
pub const GROUP: RouteGroup = RouteGroup {
    openapi: || group::openapi_of(documented()),
    routes: |state| {
        let chat = Chat::new(state.clone())?;
        Ok(group::protected(documented(), &state, chat)
            .layer(axum::middleware::from_fn(messages_api::anthropic_errors)))
    },
};
