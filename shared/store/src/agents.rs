//! Agents: `USER#<owner>/AGENT#<id>`. An agent names one of its owner's
//! providers and a catalog model of a matching kind; both are checked on
//! create and update. Listings join the model's prices from the per-process
//! catalog, so a page costs one query.

use lambent_core::ids::{AgentId, TypedId};
use rust_decimal::Decimal;
use serde::Serialize;

use super::models::{Catalog, Prices};
use super::providers::{self, ProviderKind};
use super::users;
use super::{json_text, opt_decimal, opt_json_attr, opt_text, text, whole, PageRequest, Paged};
use lambent_core::chat::{ToolChoice, ToolSpec};
use lambent_core::error::{Error, Result};
use lambent_core::ids;
use lambent_ports::{Condition, Item, ItemStore, Key, Query, TxOp, Update};

pub const ID_PREFIX: &str = <AgentId as TypedId>::PREFIX;
pub const DEFAULT_MAX_TOKENS: i64 = 1024;
pub const DEFAULT_CONTEXT_TOKEN_BUDGET: i64 = 16_000;

pub fn item_key(owner: &str, id: &str) -> Key {
    Key::new(users::partition(owner), format!("AGENT#{id}"))
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Agent {
    pub id: String,
    pub name: String,
    pub provider_id: String,
    pub model: String,
    pub system_prompt: Option<String>,
    /// Sampling temperature, 0 to 2; the provider's default when absent.
    #[serde(with = "rust_decimal::serde::float_option")]
    #[schema(value_type = Option<f64>, example = 0.7)]
    pub temperature: Option<Decimal>,
    pub max_tokens: i64,
    /// The most history tokens sent to the model per call.
    pub context_token_budget: i64,
    /// The tools the model may call (client tools: the caller answers).
    pub tools: Vec<ToolSpec>,
    pub tool_choice: ToolChoice,
    /// Bumped by every change; caches compare it.
    pub version: i64,
    pub created_at: String,
    pub updated_at: String,
}

/// An agent with the current prices of its model.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AgentView {
    #[serde(flatten)]
    pub agent: Agent,
    /// Absent when the model left the catalog.
    pub prices: Option<Prices>,
}

/// The settings of an agent, validated by the route.
#[derive(Debug, Clone)]
pub struct AgentSpec {
    pub name: String,
    pub provider_id: String,
    pub model: String,
    pub system_prompt: Option<String>,
    pub temperature: Option<Decimal>,
    pub max_tokens: i64,
    pub context_token_budget: i64,
    /// Checked with [`lambent_core::chat::check_tools`] by the route.
    pub tools: Vec<ToolSpec>,
    pub tool_choice: ToolChoice,
}

fn from_item(item: &Item) -> Result<Agent> {
    Ok(Agent {
        id: super::id_after(item, "AGENT#")?.to_owned(),
        name: text(item, "name")?,
        provider_id: text(item, "provider_id")?,
        model: text(item, "model")?,
        system_prompt: opt_text(item, "system_prompt"),
        temperature: opt_decimal(item, "temperature"),
        max_tokens: whole(item, "max_tokens")?,
        context_token_budget: whole(item, "context_token_budget")?,
        // Kept as JSON, absent when none / "auto".
        tools: opt_json_attr(item, "tools")?.unwrap_or_default(),
        tool_choice: opt_json_attr(item, "tool_choice")?.unwrap_or_default(),
        version: whole(item, "version")?,
        created_at: text(item, "created_at")?,
        updated_at: text(item, "updated_at")?,
    })
}

/// Whether a model of kind `model` can be served by a provider of kind `provider`.
pub fn kinds_match(provider: ProviderKind, model: ProviderKind) -> bool {
    provider == model
        || (provider == ProviderKind::OpenaiCompatible && model != ProviderKind::Anthropic)
}

/// Checks that the provider is the owner's and that the model exists and
/// suits the provider's kind.
async fn validate(
    store: &dyn ItemStore,
    catalog: &Catalog,
    owner: &str,
    spec: &AgentSpec,
) -> Result<()> {
    let Some(provider) = providers::get(store, owner, &spec.provider_id).await? else {
        return Err(Error::BadRequest(format!(
            "provider_id: no provider {:?}",
            spec.provider_id
        )));
    };
    let Some(model) = catalog.get(store, &spec.model).await? else {
        return Err(Error::BadRequest(format!(
            "model: {:?} is not in the model catalog (GET /v1/models)",
            spec.model
        )));
    };
    if !kinds_match(provider.kind, model.provider_kind) {
        return Err(Error::BadRequest(format!(
            "model: {} is for {} providers; provider {} is {}",
            model.name,
            model.provider_kind.as_str(),
            provider.id,
            provider.kind.as_str()
        )));
    }
    Ok(())
}

fn apply(mut update: Update, spec: &AgentSpec) -> Result<Update> {
    update = update
        .set("name", spec.name.as_str())
        .set("provider_id", spec.provider_id.as_str())
        .set("model", spec.model.as_str())
        .set("max_tokens", spec.max_tokens)
        .set("context_token_budget", spec.context_token_budget);
    update = if spec.tools.is_empty() {
        update.remove("tools")
    } else {
        update.set("tools", json_text(&spec.tools)?)
    };
    update = match &spec.tool_choice {
        ToolChoice::Auto => update.remove("tool_choice"),
        choice => update.set("tool_choice", json_text(choice)?),
    };
    update = match &spec.system_prompt {
        Some(p) => update.set("system_prompt", p.as_str()),
        None => update.remove("system_prompt"),
    };
    Ok(match spec.temperature {
        Some(t) => update.set("temperature", t),
        None => update.remove("temperature"),
    })
}

pub async fn create(
    store: &dyn ItemStore,
    catalog: &Catalog,
    owner: &str,
    spec: AgentSpec,
) -> Result<Agent> {
    validate(store, catalog, owner, &spec).await?;
    let now = lambent_core::time::now_rfc3339();
    let agent = Agent {
        id: ids::new_id(ID_PREFIX),
        name: spec.name,
        provider_id: spec.provider_id,
        model: spec.model,
        system_prompt: spec.system_prompt,
        temperature: spec.temperature,
        max_tokens: spec.max_tokens,
        context_token_budget: spec.context_token_budget,
        tools: spec.tools,
        tool_choice: spec.tool_choice,
        version: 1,
        created_at: now.clone(),
        updated_at: now,
    };
    let mut item = Item::new(item_key(owner, &agent.id))
        .with("name", agent.name.as_str())
        .with("provider_id", agent.provider_id.as_str())
        .with("model", agent.model.as_str())
        .with("max_tokens", agent.max_tokens)
        .with("context_token_budget", agent.context_token_budget)
        .with("version", agent.version)
        .with("created_at", agent.created_at.as_str())
        .with("updated_at", agent.updated_at.as_str());
    if let Some(p) = &agent.system_prompt {
        item = item.with("system_prompt", p.as_str());
    }
    if let Some(t) = agent.temperature {
        item = item.with("temperature", t);
    }
    if !agent.tools.is_empty() {
        item = item.with("tools", json_text(&agent.tools)?);
    }
    if agent.tool_choice != ToolChoice::Auto {
        item = item.with("tool_choice", json_text(&agent.tool_choice)?);
    }
    let put = TxOp::Put {
        item,
        condition: Some(Condition::NotExists),
    };
    users::write_owned(store, owner, vec![put], |_| None).await?;
    Ok(agent)
}

pub async fn get(store: &dyn ItemStore, owner: &str, id: &str) -> Result<Option<Agent>> {
    match store.get(&item_key(owner, id)).await? {
        Some(item) => Ok(Some(from_item(&item)?)),
        None => Ok(None),
    }
}

pub async fn view(store: &dyn ItemStore, catalog: &Catalog, agent: Agent) -> Result<AgentView> {
    let prices = catalog.get(store, &agent.model).await?.map(|m| m.prices);
    Ok(AgentView { agent, prices })
}

pub async fn list(
    store: &dyn ItemStore,
    catalog: &Catalog,
    owner: &str,
    page: PageRequest,
) -> Result<Paged<AgentView>> {
    let models = catalog.all(store).await?;
    super::page_of(
        store,
        Query::partition(users::partition(owner)).prefix("AGENT#"),
        page,
        |item| {
            let agent = from_item(item)?;
            let prices = models.get(&agent.model).map(|m| m.prices.clone());
            Ok(AgentView { agent, prices })
        },
    )
    .await
}

/// Replaces an agent's settings (the route merges a PATCH into the current
/// ones first). Fails with 409 if someone changed it since `expected_version`.
pub async fn update(
    store: &dyn ItemStore,
    catalog: &Catalog,
    owner: &str,
    id: &str,
    expected_version: i64,
    spec: AgentSpec,
) -> Result<Agent> {
    validate(store, catalog, owner, &spec).await?;
    let update = apply(Update::new(), &spec)?
        .add("version", Decimal::ONE)
        .set("updated_at", lambent_core::time::now_rfc3339());
    match store
        .update(
            &item_key(owner, id),
            update,
            Some(Condition::eq("version", expected_version)),
        )
        .await
    {
        Ok(item) => from_item(&item),
        Err(e) if e.is_condition_failure() => Err(Error::Conflict(
            "the agent changed or was deleted meanwhile; read it again".into(),
        )),
        Err(e) => Err(e.into()),
    }
}

pub async fn delete(store: &dyn ItemStore, owner: &str, id: &str) -> Result<()> {
    match store
        .delete(&item_key(owner, id), Some(Condition::Exists))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.is_condition_failure() => Err(Error::NotFound("agent")),
        Err(e) => Err(e.into()),
    }
}
