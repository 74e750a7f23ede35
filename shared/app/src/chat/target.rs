//! Who answers a call: an agent's provider, model and settings, or a
//! provider and model named directly (`<provider name>/<model>`). Anything
//! missing is a clear 4xx here, before a reservation or a provider call.

use std::collections::HashMap;
use std::time::Duration;

use crate::state::State;
pub use crate::targets::{ServerTool, Target, Targets};
use lambent_core::error::{Error, Result};
use lambent_core::secret::SecretString;
use lambent_llm::{Endpoint, HttpTool};
use lambent_store::agents::{
    self, OpenedServerTool, DEFAULT_CONTEXT_TOKEN_BUDGET, DEFAULT_MAX_TOKENS,
    DEFAULT_MAX_TOOL_ROUNDS,
};
use lambent_store::providers::{self, Provider};

fn endpoint(provider: &Provider, api_key: SecretString) -> Endpoint {
    Endpoint {
        kind: provider.kind,
        base_url: provider.base_url.clone(),
        api_key,
    }
}

fn server_tool(tool: OpenedServerTool) -> ServerTool {
    ServerTool {
        http: HttpTool {
            url: tool.url,
            headers: tool.headers,
            timeout: Duration::from_millis(tool.timeout_ms),
        },
        requires_approval: tool.requires_approval,
    }
}

impl Target {
    /// The agent `agent_id` of `owner`; `what` names it in errors ("the
    /// session's agent"). A deleted agent, provider or model is a 409 that
    /// says what to fix.
    pub async fn of_agent(
        state: &State,
        owner: &str,
        agent_id: &str,
        what: &str,
    ) -> Result<Target> {
        if let Some(cached) = state.targets.get(owner, agent_id) {
            return Ok(cached);
        }
        let target = Self::resolve(state, owner, agent_id, what).await?;
        state.targets.keep(owner, agent_id, &target);
        Ok(target)
    }

    /// [`Target::of_agent`] from the store: the agent, then its provider
    /// (with the key decrypted), its model and its server tools' header
    /// values (decrypted) at once.
    async fn resolve(state: &State, owner: &str, agent_id: &str, what: &str) -> Result<Target> {
        let store = state.store.as_ref();
        let Some(agent) = agents::get(store, owner, agent_id).await? else {
            return Err(Error::Conflict(format!(
                "{what} {agent_id} no longer exists"
            )));
        };
        let (provider, model, server_tools) = tokio::join!(
            providers::with_api_key(store, state.cipher.as_ref(), owner, &agent.provider_id),
            state.catalog.get(store, &agent.model),
            agents::open_server_tools(state.cipher.as_ref(), owner, &agent.id, &agent.tools),
        );
        let Some((provider, api_key)) = provider? else {
            return Err(Error::Conflict(format!(
                "the provider {} of agent {} no longer exists; give the agent another provider_id",
                agent.provider_id, agent.id
            )));
        };
        let Some(model) = model? else {
            return Err(Error::Conflict(format!(
                "the model {} of agent {} is no longer in the model catalog",
                agent.model, agent.id
            )));
        };
        let mut target = Target {
            agent_id: Some(agent.id),
            model: model.name,
            prices: model.prices,
            endpoint: endpoint(&provider, api_key),
            system: agent.system_prompt,
            max_tokens: u32::try_from(agent.max_tokens).unwrap_or(u32::MAX),
            temperature: agent.temperature,
            context_token_budget: agent.context_token_budget.max(0) as u64,
            tools: Vec::new(),
            tools_tokens: 0,
            server_tools: server_tools?
                .into_iter()
                .map(|tool| (tool.name.clone(), server_tool(tool)))
                .collect(),
            max_tool_rounds: u32::try_from(agent.max_tool_rounds).unwrap_or(1).max(1),
            tool_choice: agent.tool_choice,
            parallel_tool_calls: None,
            stop_sequences: Vec::new(),
        };
        // Every tool, client or server, is offered to the model (the server
        // tools' settings, masked here, stay out of what it is sent).
        target.set_tools(agent.tools.shown());
        Ok(target)
    }

    /// The provider named `provider_name` of `owner` and the catalog model
    /// `model`, with the default settings; `field` names the request field
    /// in errors.
    pub async fn of_provider_model(
        state: &State,
        owner: &str,
        provider_name: &str,
        model: &str,
        field: &str,
    ) -> Result<Target> {
        let store = state.store.as_ref();
        let Some(provider) = providers::find_by_name(store, owner, provider_name).await? else {
            return Err(Error::BadRequest(format!(
                "{field}: you have no provider named {provider_name:?}"
            )));
        };
        let Some(found) = state.catalog.get(store, model).await? else {
            return Err(Error::BadRequest(format!(
                "{field}: {model:?} is not in the model catalog (GET /v1/models)"
            )));
        };
        if !agents::kinds_match(provider.kind, found.provider_kind) {
            return Err(Error::BadRequest(format!(
                "{field}: {model} is for {} providers; {provider_name} is {}",
                found.provider_kind.as_str(),
                provider.kind.as_str()
            )));
        }
        let Some((provider, api_key)) =
            providers::with_api_key(store, state.cipher.as_ref(), owner, &provider.id).await?
        else {
            return Err(Error::BadRequest(format!(
                "{field}: you have no provider named {provider_name:?}"
            )));
        };
        Ok(Target {
            agent_id: None,
            model: found.name,
            prices: found.prices,
            endpoint: endpoint(&provider, api_key),
            system: None,
            max_tokens: DEFAULT_MAX_TOKENS as u32,
            temperature: None,
            context_token_budget: DEFAULT_CONTEXT_TOKEN_BUDGET as u64,
            tools: Vec::new(),
            tools_tokens: 0,
            server_tools: HashMap::new(),
            max_tool_rounds: DEFAULT_MAX_TOOL_ROUNDS as u32,
            tool_choice: Default::default(),
            parallel_tool_calls: None,
            stop_sequences: Vec::new(),
        })
    }
}
