//! Agents: a provider, a model and their settings. Every caller reaches only
//! its own agents, each naming one of its own providers and a catalog model.
//!
//! | method | route |
//! |---|---|
//! | GET POST | `/v1/agents` |
//! | GET PATCH DELETE | `/v1/agents/{id}` |

use axum::extract::{Query, State as Extract};
use axum::http::StatusCode;
use axum::Json;
use lambent_app::state::State;
use lambent_core::chat::{check_tools, ToolChoice, ToolSpec};
use lambent_core::ids::{AgentId, ProviderId, TypedId};
use lambent_core::validate;
use lambent_core::Error;
use lambent_http::error::ApiResult;
use lambent_http::group::{self, RouteGroup, Routes};
use lambent_http::routes;
use lambent_http::Caller;
use lambent_http::PathId;
use lambent_http::{Body, ListPage, ListParams};
use lambent_store::agents::{self, AgentSpec, AgentTools, AgentView};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::Number;

/// The routes, listed once: with their OpenAPI description for the
/// document, bare for serving.
pub fn routes() -> Routes<State> {
    Routes::new()
        .routes(routes!(list_agents, create_agent))
        .routes(routes!(get_agent, update_agent, delete_agent))
}

/// The route group: these routes behind the API key check.
pub const GROUP: RouteGroup = RouteGroup {
    openapi: || group::openapi_of(routes()),
    routes: |state| Ok(group::protected(routes(), &state, state.clone())),
};

const NAME_MAX: usize = 200;
const MODEL_MAX: usize = 100;
const SYSTEM_PROMPT_MAX: usize = 100_000;
const MAX_TOKENS: std::ops::RangeInclusive<i64> = 1..=200_000;
const CONTEXT_TOKEN_BUDGET: std::ops::RangeInclusive<i64> = 1..=2_000_000;
const MAX_TOOL_ROUNDS: std::ops::RangeInclusive<i64> = 1..=32;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateAgent {
    #[schema(pattern = "\\S")]
    name: String,
    /// One of your providers (`prv_...`).
    #[schema(pattern = "^prv_[0-9a-z]{1,64}$")]
    provider_id: String,
    /// A catalog model (`GET /v1/models`) of the provider's kind.
    #[schema(example = "claude-sonnet-4-5", pattern = "^[A-Za-z0-9_.:-]{1,100}$")]
    model: String,
    #[schema(max_length = 100000)]
    system_prompt: Option<String>,
    /// 0 to 2; the provider's default when absent.
    #[schema(value_type = Option<f64>, example = 0.7, minimum = 0, maximum = 2)]
    temperature: Option<Number>,
    /// 1 to 200000 (default 1024).
    #[schema(minimum = 1, maximum = 200000)]
    max_tokens: Option<i64>,
    /// The most history tokens sent to the model per call, 1 to 2000000
    /// (default 16000).
    #[schema(minimum = 1, maximum = 2000000)]
    context_token_budget: Option<i64>,
    /// Tools the model may call (up to 128). A client tool stops the turn
    /// with `stop_reason: "tool_use"` and the caller sends the results; a
    /// server tool (`http`) is called by Lambent, its header values
    /// encrypted at rest and answered masked.
    tools: Option<Vec<ToolSpec>>,
    /// `"auto"` (default), `"any"`, `"none"` or `{"name": "<tool>"}`.
    tool_choice: Option<ToolChoice>,
    /// The most rounds of server-tool calls in one turn, 1 to 32 (default 8).
    #[schema(minimum = 1, maximum = 32)]
    max_tool_rounds: Option<i64>,
}

/// The fields to change; the others keep their values.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct UpdateAgent {
    #[schema(pattern = "\\S")]
    name: Option<String>,
    #[schema(pattern = "^prv_[0-9a-z]{1,64}$")]
    provider_id: Option<String>,
    #[schema(pattern = "^[A-Za-z0-9_.:-]{1,100}$")]
    model: Option<String>,
    /// `null` removes it.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, max_length = 100000)]
    system_prompt: Option<Option<String>>,
    /// 0 to 2; `null` returns to the provider's default.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<f64>, example = 0.7, minimum = 0, maximum = 2)]
    temperature: Option<Option<Number>>,
    #[schema(minimum = 1, maximum = 200000)]
    max_tokens: Option<i64>,
    #[schema(minimum = 1, maximum = 2000000)]
    context_token_budget: Option<i64>,
    /// Replaces every tool; `[]` removes them. A header value sent back
    /// masked, as read, keeps the value stored for that tool and header.
    tools: Option<Vec<ToolSpec>>,
    tool_choice: Option<ToolChoice>,
    /// 1 to 32; `null` returns to the default (8).
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<i64>, minimum = 1, maximum = 32)]
    max_tool_rounds: Option<Option<i64>>,
}

/// Absent: unchanged; `null`: cleared; a value: set.
fn nullable<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// A JSON number from 0 to 2, as an exact decimal.
fn temperature(n: &Number) -> ApiResult<Decimal> {
    Ok(validate::temperature(n)?)
}

/// A provider ID that cannot exist is refused here, before the store sees it.
fn provider_id(raw: String) -> ApiResult<String> {
    ProviderId::parse(&raw)
        .map_err(|_| Error::BadRequest("provider_id: not a provider ID (`prv_...`)".into()))?;
    Ok(raw)
}

fn system_prompt(raw: &str) -> ApiResult<String> {
    Ok(validate::text("system_prompt", raw, SYSTEM_PROMPT_MAX)?)
}

/// The most an agent's system prompt and tools (as stored: the prompt's
/// UTF-8 bytes, the tools and the tool choice as JSON) may take together: the
/// store holds 400 KB a record, and the agent's other settings stay well under
/// the 50 KB left. 100,000 characters of prompt can be 400,000 bytes, and 128
/// tools of 74 KB each far more.
const MAX_STORED_BYTES: usize = 350 * 1024;

/// Refuses, as a 400 naming the field, an agent too large for one record:
/// `system_prompt` when the prompt alone is, else `tools`. `tools_bytes` is
/// what the tools take as stored (ciphertexts included).
fn fits_in_a_record(
    system_prompt: Option<&str>,
    tools_bytes: usize,
    tool_choice: &ToolChoice,
) -> ApiResult<()> {
    let prompt = system_prompt.map_or(0, str::len);
    validate::stored_size(
        "system_prompt",
        "the system prompt",
        prompt,
        MAX_STORED_BYTES,
        "an agent",
    )?;
    // As the store keeps them: no tools and the "auto" choice take nothing.
    let choice = match tool_choice {
        ToolChoice::Auto => 0,
        choice => serde_json::to_string(choice)
            .map(|json| json.len())
            .map_err(|e| Error::Internal(format!("encoding the tool choice: {e}")))?,
    };
    validate::stored_size(
        "tools",
        "the agent's system prompt with its tools",
        prompt + tools_bytes + choice,
        MAX_STORED_BYTES,
        "an agent",
    )?;
    Ok(())
}

/// The tools as sent, in JSON: less than they take once sealed (a
/// ciphertext is longer than its value), so a request too large even so is
/// refused before anything is encrypted.
fn plain_tools_bytes(tools: &[ToolSpec]) -> ApiResult<usize> {
    if tools.is_empty() {
        return Ok(0);
    }
    serde_json::to_string(tools)
        .map(|json| json.len())
        .map_err(|e| Error::Internal(format!("encoding tools: {e}")).into())
}

/// The SSRF guard on every server tool's URL (as for providers' base URLs:
/// https, or http and private addresses where the deployment allows them;
/// never link-local or metadata addresses). Each URL is kept as parsed.
fn guard_tool_urls(state: &State, tools: &mut [ToolSpec]) -> ApiResult<()> {
    let allow_private = state.config.allow_private_provider_urls;
    for (i, tool) in tools.iter_mut().enumerate() {
        if let Some(http) = tool.http.as_mut() {
            let url =
                lambent_llm::net_guard::check_url(&http.url, allow_private).map_err(|refused| {
                    Error::BadRequest(format!("tools[{i}].http.url: {}", refused.0))
                })?;
            http.url = url.as_str().to_owned();
        }
    }
    Ok(())
}

/// New tools of the agent `agent_id`, checked (with `tool_choice`), guarded
/// and sealed; a header value sent back masked keeps `current`'s.
async fn sealed_tools(
    state: &State,
    owner: &str,
    agent_id: &str,
    mut tools: Vec<ToolSpec>,
    current: &AgentTools,
    system_prompt: Option<&str>,
    tool_choice: &ToolChoice,
) -> ApiResult<AgentTools> {
    check_tools(&tools, tool_choice)?;
    guard_tool_urls(state, &mut tools)?;
    fits_in_a_record(system_prompt, plain_tools_bytes(&tools)?, tool_choice)?;
    Ok(agents::seal_tools(state.cipher.as_ref(), owner, agent_id, tools, current).await?)
}

/// Create an agent.
#[utoipa::path(post, path = "/v1/agents", tag = "agents", request_body = CreateAgent,
    responses((status = 201, body = AgentView)))]
async fn create_agent(
    Extract(state): Extract<State>,
    principal: Caller,
    Body(body): Body<CreateAgent>,
) -> ApiResult<(StatusCode, Json<AgentView>)> {
    let name = validate::name("name", &body.name, NAME_MAX)?;
    let provider_id = provider_id(body.provider_id)?;
    let model = validate::slug("model", &body.model, MODEL_MAX)?;
    let system_prompt = body
        .system_prompt
        .as_deref()
        .map(system_prompt)
        .transpose()?;
    let temperature = body.temperature.as_ref().map(temperature).transpose()?;
    let max_tokens = validate::whole(
        "max_tokens",
        body.max_tokens.unwrap_or(agents::DEFAULT_MAX_TOKENS),
        MAX_TOKENS,
    )?;
    let context_token_budget = validate::whole(
        "context_token_budget",
        body.context_token_budget
            .unwrap_or(agents::DEFAULT_CONTEXT_TOKEN_BUDGET),
        CONTEXT_TOKEN_BUDGET,
    )?;
    let max_tool_rounds = validate::whole(
        "max_tool_rounds",
        body.max_tool_rounds
            .unwrap_or(agents::DEFAULT_MAX_TOOL_ROUNDS),
        MAX_TOOL_ROUNDS,
    )?;
    let tool_choice = body.tool_choice.unwrap_or_default();
    let id = agents::new_id();
    let tools = sealed_tools(
        &state,
        &principal.user_id,
        &id,
        body.tools.unwrap_or_default(),
        &AgentTools::default(),
        system_prompt.as_deref(),
        &tool_choice,
    )
    .await?;
    let spec = AgentSpec {
        name,
        provider_id,
        model,
        system_prompt,
        temperature,
        max_tokens,
        context_token_budget,
        tools,
        tool_choice,
        max_tool_rounds,
    };
    fits_in_a_record(
        spec.system_prompt.as_deref(),
        spec.tools.stored_len()?,
        &spec.tool_choice,
    )?;
    let store = state.store.as_ref();
    let agent = agents::create(store, &state.catalog, &principal.user_id, &id, spec).await?;
    let view = agents::view(store, &state.catalog, agent).await?;
    Ok((StatusCode::CREATED, Json(view)))
}

/// List your agents, a page at a time, with their models' prices.
#[utoipa::path(get, path = "/v1/agents", tag = "agents", params(ListParams),
    responses((status = 200, body = ListPage<AgentView>)))]
async fn list_agents(
    Extract(state): Extract<State>,
    principal: Caller,
    Query(params): Query<ListParams>,
) -> ApiResult<Json<ListPage<AgentView>>> {
    let scope = format!("agents:{}", principal.user_id);
    let store = state.store.as_ref();
    let listed = params
        .list(&state, &scope, |page| {
            agents::list(store, &state.catalog, &principal.user_id, page)
        })
        .await?;
    Ok(Json(listed))
}

/// Read one of your agents, with its model's prices.
#[utoipa::path(get, path = "/v1/agents/{id}", tag = "agents",
    params(("id" = String, Path, description = "agent ID (`agt_...`)")),
    responses((status = 200, body = AgentView)))]
async fn get_agent(
    Extract(state): Extract<State>,
    principal: Caller,
    PathId(id): PathId<AgentId>,
) -> ApiResult<Json<AgentView>> {
    let store = state.store.as_ref();
    let agent = agents::get(store, &principal.user_id, &id)
        .await?
        .ok_or(Error::NotFound("agent"))?;
    Ok(Json(agents::view(store, &state.catalog, agent).await?))
}

/// Change some of an agent's settings. The provider and the model are
/// checked again, even when unchanged.
#[utoipa::path(patch, path = "/v1/agents/{id}", tag = "agents", request_body = UpdateAgent,
    params(("id" = String, Path, description = "agent ID (`agt_...`)")),
    responses((status = 200, body = AgentView)))]
async fn update_agent(
    Extract(state): Extract<State>,
    principal: Caller,
    PathId(id): PathId<AgentId>,
    Body(body): Body<UpdateAgent>,
) -> ApiResult<Json<AgentView>> {
    let name = body
        .name
        .map(|n| validate::name("name", &n, NAME_MAX))
        .transpose()?;
    let provider = body.provider_id.map(provider_id).transpose()?;
    let model = body
        .model
        .map(|m| validate::slug("model", &m, MODEL_MAX))
        .transpose()?;
    let prompt = match &body.system_prompt {
        Some(Some(p)) => Some(Some(system_prompt(p)?)),
        Some(None) => Some(None),
        None => None,
    };
    let temp = match &body.temperature {
        Some(Some(t)) => Some(Some(temperature(t)?)),
        Some(None) => Some(None),
        None => None,
    };
    let max_tokens = body
        .max_tokens
        .map(|n| validate::whole("max_tokens", n, MAX_TOKENS))
        .transpose()?;
    let budget = body
        .context_token_budget
        .map(|n| validate::whole("context_token_budget", n, CONTEXT_TOKEN_BUDGET))
        .transpose()?;

    let rounds = match body.max_tool_rounds {
        Some(Some(n)) => Some(validate::whole("max_tool_rounds", n, MAX_TOOL_ROUNDS)?),
        Some(None) => Some(agents::DEFAULT_MAX_TOOL_ROUNDS),
        None => None,
    };

    let store = state.store.as_ref();
    let current = agents::get(store, &principal.user_id, &id)
        .await?
        .ok_or(Error::NotFound("agent"))?;
    let system_prompt = prompt.unwrap_or(current.system_prompt);
    let tool_choice = body.tool_choice.unwrap_or(current.tool_choice);
    let tools = match body.tools {
        Some(tools) => {
            sealed_tools(
                &state,
                &principal.user_id,
                &id,
                tools,
                &current.tools,
                system_prompt.as_deref(),
                &tool_choice,
            )
            .await?
        }
        None => {
            // The stored tools were checked when saved: only the choice is new.
            check_tools(&current.tools.offered(), &tool_choice)?;
            current.tools
        }
    };
    let spec = AgentSpec {
        name: name.unwrap_or(current.name),
        provider_id: provider.unwrap_or(current.provider_id),
        model: model.unwrap_or(current.model),
        system_prompt,
        temperature: temp.unwrap_or(current.temperature),
        max_tokens: max_tokens.unwrap_or(current.max_tokens),
        context_token_budget: budget.unwrap_or(current.context_token_budget),
        tools,
        tool_choice,
        max_tool_rounds: rounds.unwrap_or(current.max_tool_rounds),
    };
    fits_in_a_record(
        spec.system_prompt.as_deref(),
        spec.tools.stored_len()?,
        &spec.tool_choice,
    )?;
    let agent = agents::update(
        store,
        &state.catalog,
        &principal.user_id,
        &id,
        current.version,
        spec,
    )
    .await?;
    state.targets.evict_owner(&principal.user_id);
    Ok(Json(agents::view(store, &state.catalog, agent).await?))
}

/// Delete one of your agents.
#[utoipa::path(delete, path = "/v1/agents/{id}", tag = "agents",
    params(("id" = String, Path, description = "agent ID (`agt_...`)")),
    responses((status = 204, description = "deleted")))]
async fn delete_agent(
    Extract(state): Extract<State>,
    principal: Caller,
    PathId(id): PathId<AgentId>,
) -> ApiResult<StatusCode> {
    agents::delete(state.store.as_ref(), &principal.user_id, &id).await?;
    state.targets.evict_owner(&principal.user_id);
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(json: &str) -> Option<String> {
        let n: Number = serde_json::from_str(json).ok()?;
        temperature(&n).ok().map(|d| d.to_string())
    }

    #[test]
    fn temperatures_from_0_to_2_are_exact_decimals() {
        assert_eq!(temp("0").as_deref(), Some("0"));
        assert_eq!(temp("-0.0").as_deref(), Some("0"));
        assert_eq!(temp("0.7").as_deref(), Some("0.7"));
        assert_eq!(temp("1.0").as_deref(), Some("1"));
        assert_eq!(temp("2").as_deref(), Some("2"));
        assert_eq!(temp("2.0").as_deref(), Some("2"));
        assert_eq!(temp("1e-7").as_deref(), Some("0.0000001"));
        assert_eq!(temp("1.5e0").as_deref(), Some("1.5"));
    }

    #[test]
    fn temperatures_outside_0_to_2_are_refused() {
        for json in ["-0.1", "2.0000001", "3", "-1", "1e300", "-1e300"] {
            assert_eq!(temp(json), None, "{json}");
        }
        let n: Option<Number> = serde_json::from_str("2.5").ok();
        let message = n
            .and_then(|n| temperature(&n).err())
            .map(|e| e.public_message());
        assert_eq!(message.as_deref(), Some("temperature: must be 0 to 2"));
    }

    #[test]
    fn null_clears_and_absent_keeps() {
        let parse = |raw: &str| {
            serde_json::from_str::<UpdateAgent>(raw).ok().map(|u| {
                (
                    u.system_prompt,
                    u.temperature.map(|t| t.map(|n| n.to_string())),
                )
            })
        };
        assert_eq!(parse("{}"), Some((None, None)));
        assert_eq!(
            parse(r#"{"system_prompt":null,"temperature":null}"#),
            Some((Some(None), Some(None)))
        );
        assert_eq!(
            parse(r#"{"system_prompt":"be brief","temperature":0.5}"#),
            Some((
                Some(Some("be brief".to_owned())),
                Some(Some("0.5".to_owned()))
            ))
        );
        let rounds = |raw: &str| {
            serde_json::from_str::<UpdateAgent>(raw)
                .map(|u| u.max_tool_rounds)
                .ok()
        };
        assert_eq!(rounds("{}"), Some(None));
        assert_eq!(rounds(r#"{"max_tool_rounds":null}"#), Some(Some(None)));
        assert_eq!(rounds(r#"{"max_tool_rounds":4}"#), Some(Some(Some(4))));
        assert!(serde_json::from_str::<UpdateAgent>(r#"{"temperature":"0.5"}"#).is_err());
        assert!(serde_json::from_str::<UpdateAgent>(r#"{"version":3}"#).is_err());
    }

    fn tools(n: usize, description_bytes: usize) -> Vec<ToolSpec> {
        (0..n)
            .map(|i| {
                ToolSpec::client(
                    format!("tool_{i}"),
                    Some("d".repeat(description_bytes)),
                    serde_json::json!({"type": "object"}),
                )
            })
            .collect()
    }

    #[test]
    fn an_agent_too_large_for_a_record_is_refused_naming_the_field() {
        let message = |prompt: Option<String>, tools: Vec<ToolSpec>| {
            let bytes = plain_tools_bytes(&tools).unwrap_or_default();
            fits_in_a_record(prompt.as_deref(), bytes, &ToolChoice::Auto)
                .err()
                .map(|e| e.public_message())
        };
        assert_eq!(message(Some("be brief".into()), tools(3, 100)), None);
        assert_eq!(
            message(Some("x".repeat(MAX_STORED_BYTES)), Vec::new()),
            None
        );

        // 100,000 characters (within SYSTEM_PROMPT_MAX) of 4 bytes each.
        let wide = "\u{1F600}".repeat(SYSTEM_PROMPT_MAX);
        assert!(system_prompt(&wide).is_ok());
        let refused = message(Some(wide), Vec::new()).unwrap_or_default();
        assert_eq!(
            refused,
            "system_prompt: the system prompt is 391 KB, more than the 350 KB an agent can hold"
        );

        // Tools that check_tools accepts, too many bytes together.
        let many = tools(40, 9_000);
        assert!(check_tools(&many, &ToolChoice::Auto).is_ok());
        let refused = message(None, many).unwrap_or_default();
        assert!(refused.starts_with("tools: "), "{refused}");
        assert!(refused.contains("350 KB an agent can hold"), "{refused}");
        // Or a prompt that fits with tools that would fit alone.
        let refused = message(Some("x".repeat(300_000)), tools(10, 9_000)).unwrap_or_default();
        assert!(refused.starts_with("tools: "), "{refused}");
    }

    #[test]
    fn provider_ids_must_look_like_one() {
        assert!(provider_id("prv_abc123".into()).is_ok());
        for raw in ["", "prv_", "agt_abc", "prv_a/b", &"prv_".repeat(40)] {
            let err = provider_id(raw.to_owned())
                .err()
                .map(|e| e.public_message());
            assert!(err.is_some_and(|e| e.starts_with("provider_id: ")), "{raw}");
        }
    }
}
