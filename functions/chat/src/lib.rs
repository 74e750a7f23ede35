//! Streamed chat and the OpenAI-compatible endpoint: the routes that call
//! model providers. Replies stream as server-sent events, chunk by chunk as
//! the provider sends them; in AWS this function sits behind a function URL
//! with response streaming, since API Gateway HTTP APIs cannot stream.
//!
//! | method | route |
//! |---|---|
//! | POST | `/v1/sessions/{id}/messages` |
//! | POST | `/v1/chat/completions` |

mod completions;
mod events;
mod turn;

use axum::extract::FromRef;
use axum::Router;
use lambent_app::state::{StartError, State};
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
}

/// The bare routes, for merging into the local runner's single app.
pub fn routes(chat: Chat) -> Router {
    let (routes, _) = documented().split_for_parts();
    let state = chat.state.clone();
    lambent_http::protect(routes, &state).with_state(chat)
}

/// The routes with the shared layers, as this function's Lambda serves them.
pub fn router(chat: Chat) -> Router {
    let config = chat.state.config.clone();
    lambent_http::service(routes(chat), &config)
}
