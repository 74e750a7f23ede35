//! Who answers a call, once resolved: an agent's provider, model, prices
//! and settings (`Target`), its server tools (`ServerTool`), and the
//! per-process cache of them (`Targets`). Resolving one is
//! `chat::Target::of_agent` / `of_provider_model`.

use std::collections::HashMap;
use std::time::Duration;

use rust_decimal::Decimal;

use lambent_core::ttl_cache::TtlCache;
use lambent_llm::{Endpoint, HttpTool};
use lambent_store::models::Prices;

/// Agents resolved into targets (provider, decrypted key, server tools'
/// decrypted headers, prices), kept per
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

/// A server tool of an agent, ready to call: where and how (its header
/// values decrypted), and whether a person must approve each call.
#[derive(Debug, Clone)]
pub struct ServerTool {
    pub http: HttpTool,
    pub requires_approval: bool,
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
    /// The tools offered to the model (the agent's client and server tools,
    /// or a request's), as the provider gets them: name, description and
    /// schema. Set with [`Target::set_tools`], which prices them once.
    pub(crate) tools: Vec<lambent_core::chat::ToolSpec>,
    /// What the tools add to every prompt (they travel as their JSON):
    /// counted when they are set, not per call.
    pub(crate) tools_tokens: u64,
    /// The agent's server tools by name: a call of one of these is Lambent's
    /// to make (the others are the caller's). Empty for a provider and model
    /// named directly.
    pub server_tools: HashMap<String, ServerTool>,
    /// The most rounds of server-tool calls in one turn.
    pub max_tool_rounds: u32,
    pub tool_choice: lambent_core::chat::ToolChoice,
    /// Whether the model may call several tools at once (the provider's
    /// default when unset).
    pub parallel_tool_calls: Option<bool>,
    /// Texts that end the reply where the model writes them.
    pub stop_sequences: Vec<String>,
}

impl Target {
    /// Replaces the tools the call offers. Only what a provider is sent is
    /// kept and priced (name, description, schema); a server tool's
    /// settings live in [`Target::server_tools`], which keeps only the tools
    /// `tools` still offers with `http`: tools given without it (a request's
    /// own, which replace the agent's) are the caller's to answer.
    pub fn set_tools(&mut self, tools: Vec<lambent_core::chat::ToolSpec>) {
        let served: Vec<&str> = tools
            .iter()
            .filter(|t| t.http.is_some())
            .map(|t| t.name.as_str())
            .collect();
        self.server_tools
            .retain(|name, _| served.contains(&name.as_str()));
        let tools: Vec<_> = tools
            .into_iter()
            .map(|t| match t.http.is_some() || t.requires_approval {
                true => t.offered(),
                false => t,
            })
            .collect();
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

    /// Offers only the server tools (a workflow step: nobody is there to
    /// answer a client tool); a `tool_choice` that needs another (or any,
    /// with none left) becomes `auto`.
    pub fn keep_server_tools(&mut self) {
        let tools: Vec<_> = std::mem::take(&mut self.tools)
            .into_iter()
            .filter(|t| self.server_tools.contains_key(&t.name))
            .collect();
        let kept = match &self.tool_choice {
            lambent_core::chat::ToolChoice::Tool(name) => self.server_tools.contains_key(name),
            lambent_core::chat::ToolChoice::Any => !self.server_tools.is_empty(),
            _ => true,
        };
        if !kept {
            self.tool_choice = lambent_core::chat::ToolChoice::Auto;
        }
        let server_tools = std::mem::take(&mut self.server_tools);
        self.set_tools(tools);
        self.server_tools = server_tools;
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

#[cfg(test)]
mod tests {
    use super::*;
    use lambent_core::chat::ToolSpec;
    use lambent_core::secret::SecretString;

    fn target() -> Target {
        Target {
            agent_id: Some("agt_1".into()),
            model: "m".into(),
            prices: Prices {
                input_per_mtok: Decimal::ONE,
                output_per_mtok: Decimal::ONE,
                cache_read_per_mtok: Decimal::ONE,
                cache_write_per_mtok: Decimal::ONE,
            },
            endpoint: Endpoint {
                kind: lambent_core::provider::ProviderKind::Anthropic,
                base_url: None,
                api_key: SecretString::from("k".to_owned()),
            },
            system: None,
            max_tokens: 1,
            temperature: None,
            context_token_budget: 1,
            tools: Vec::new(),
            tools_tokens: 0,
            server_tools: HashMap::from([(
                "search".to_owned(),
                ServerTool {
                    http: HttpTool {
                        url: "https://tools.example/search".into(),
                        headers: vec![("X-Key".into(), SecretString::from("v".to_owned()))],
                        timeout: Duration::from_secs(1),
                    },
                    requires_approval: false,
                },
            )]),
            max_tool_rounds: 8,
            tool_choice: Default::default(),
            parallel_tool_calls: None,
            stop_sequences: Vec::new(),
        }
    }

    fn search(with_http: bool) -> ToolSpec {
        serde_json::from_value(match with_http {
            true => serde_json::json!({
                "name": "search", "description": "Search the web", "input_schema": {"type": "object"},
                "http": {"url": "https://tools.example/search/with/a/long/path",
                         "headers": {"X-Key": "****", "X-Other-Long-Header-Name": "****abcd"},
                         "timeout_ms": 30000},
                "requires_approval": true,
            }),
            false => serde_json::json!({
                "name": "search", "description": "Search the web", "input_schema": {"type": "object"},
            }),
        })
        .unwrap()
    }

    #[test]
    fn offered_tools_carry_and_price_only_what_the_provider_gets() {
        let mut with_http = target();
        with_http.set_tools(vec![search(true)]);
        let mut client = target();
        client.set_tools(vec![search(false)]);
        // The same tool is offered and priced, whatever its server settings.
        assert_eq!(with_http.tools(), client.tools());
        assert_eq!(with_http.tools()[0].http, None);
        assert!(!with_http.tools()[0].requires_approval);
        assert_eq!(with_http.tools_tokens, client.tools_tokens);
        assert_eq!(
            client.tools_tokens,
            lambent_store::messages::estimate_tokens(
                &serde_json::to_string(&search(false)).unwrap()
            )
        );
        // Offered with `http`, it stays a server tool; given without (a
        // request's own tools), it is the caller's.
        assert!(with_http.server_tools.contains_key("search"));
        assert!(client.server_tools.is_empty());
        let mut none = target();
        none.set_tools(Vec::new());
        assert!(none.server_tools.is_empty());
    }
}
