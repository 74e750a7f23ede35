//! Who answers a call, once resolved: an agent's provider, model, prices
//! and settings (`Target`), and the per-process cache of them (`Targets`).
//! Resolving one is `chat::Target::of_agent` / `of_provider_model`.

use std::time::Duration;

use rust_decimal::Decimal;

use lambent_core::ttl_cache::TtlCache;
use lambent_llm::Endpoint;
use lambent_store::models::Prices;

/// Agents resolved into targets (provider, decrypted key, prices), kept per
/// process for `LAMBENT_AUTH_CACHE_SECS`: a turn then skips three reads and a
/// KMS call. A change made through this process evicts its owner's entries at
/// once; other processes see it within the lifetime, as with API keys.
pub struct Targets {
    cache: TtlCache<(String, String), Target>,
}

impl Targets {
    pub fn new(ttl: Duration) -> Targets {
        Targets {
            cache: TtlCache::new(ttl),
        }
    }

    /// Forgets every agent (a model was repriced).
    pub fn clear(&self) {
        self.cache.evict_where(|_, _| true);
    }

    /// Forgets every agent of `owner` (an agent or a provider changed).
    pub fn evict_owner(&self, owner: &str) {
        self.cache.evict_where(|(o, _), _| o == owner);
    }

    pub(crate) fn get(&self, owner: &str, agent_id: &str) -> Option<Target> {
        self.cache.get(&(owner.to_owned(), agent_id.to_owned()))
    }

    pub(crate) fn keep(&self, owner: &str, agent_id: &str, target: &Target) {
        self.cache
            .insert((owner.to_owned(), agent_id.to_owned()), target.clone());
    }
}

#[derive(Clone)]
pub struct Target {
    pub agent_id: Option<String>,
    pub model: String,
    pub prices: Prices,
    pub endpoint: Endpoint,
    pub system: Option<String>,
    pub max_tokens: u32,
    pub temperature: Option<Decimal>,
    pub context_token_budget: u64,
    /// The agent's client tools, offered on every call but a workflow
    /// step's; set with [`Target::set_tools`], which prices them once.
    pub(crate) tools: Vec<lambent_core::chat::ToolSpec>,
    /// What the tools add to every prompt (they travel as their JSON):
    /// counted when they are set, not per call.
    pub(crate) tools_tokens: u64,
    pub tool_choice: lambent_core::chat::ToolChoice,
    /// Whether the model may call several tools at once (the provider's
    /// default when unset).
    pub parallel_tool_calls: Option<bool>,
    /// Texts that end the reply where the model writes them.
    pub stop_sequences: Vec<String>,
    /// The agent's server tools by name: Lambent calls them.
    pub server_tools: std::collections::HashMap<String, ServerTool>,
    /// How many times one turn may run server tools and call the model again.
    pub max_tool_rounds: u32,
}

/// A tool Lambent calls itself.
#[derive(Clone)]
pub struct ServerTool {
    pub http: lambent_llm::HttpTool,
    /// It waits for a person's approval first.
    pub requires_approval: bool,
}

impl Target {
    /// Replaces the tools the call offers.
    pub fn set_tools(&mut self, tools: Vec<lambent_core::chat::ToolSpec>) {
        self.tools_tokens = tools
            .iter()
            .map(|t| {
                lambent_store::messages::estimate_tokens(
                    &serde_json::to_string(t).unwrap_or_default(),
                )
            })
            .sum();
        self.tools = tools;
    }

    pub fn tools(&self) -> &[lambent_core::chat::ToolSpec] {
        &self.tools
    }

    /// A caller's system prompt, after the agent's own.
    pub fn add_system(&mut self, extra: String) {
        self.system = Some(match self.system.take() {
            Some(agent_prompt) => format!("{agent_prompt}\n\n{extra}"),
            None => extra,
        });
    }
}
