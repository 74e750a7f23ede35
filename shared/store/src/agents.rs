//! Agents: `USER#<owner>/AGENT#<id>`. An agent names one of its owner's
//! providers and a catalog model of a matching kind; both are checked on
//! create and update. Listings join the model's prices from the per-process
//! catalog, so a page costs one query.
//!
//! An agent's tools are kept as JSON ([`AgentTools`]). A server tool's header
//! values are secrets: each is stored only as key-cipher ciphertext (KMS in
//! AWS) under the encryption context `{owner, agent, tool}`, beside the
//! masked form answers show (`****` and its last 4 characters).

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use futures::{StreamExt, TryStreamExt};
use lambent_core::chat::{
    looks_masked, masked_header_value, HttpToolSpec, ToolChoice, ToolSpec, DEFAULT_TOOL_TIMEOUT_MS,
};
use lambent_core::ids::{AgentId, TypedId};
use lambent_core::secret::{ExposeSecret, SecretString};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use super::models::{Catalog, Prices};
use super::providers::{self, ProviderKind};
use super::users;
use super::{json_text, opt_decimal, opt_json_attr, opt_text, text, whole, PageRequest, Paged};
use lambent_core::error::{Error, Result};
use lambent_core::ids;
use lambent_ports::{
    Condition, EncryptionContext, Item, ItemStore, Key, KeyCipher, Query, TxOp, Update,
};

pub const ID_PREFIX: &str = <AgentId as TypedId>::PREFIX;
pub const DEFAULT_MAX_TOKENS: i64 = 1024;
pub const DEFAULT_CONTEXT_TOKEN_BUDGET: i64 = 16_000;
/// How many rounds of server-tool calls one turn may take, unless the
/// agent says otherwise.
pub const DEFAULT_MAX_TOOL_ROUNDS: i64 = 8;
/// How many header values are encrypted or decrypted at once.
const CIPHER_CONCURRENCY: usize = 8;

/// A new agent's ID (its tools' header values are sealed under it before
/// [`create`] writes it).
pub fn new_id() -> String {
    ids::new_id(ID_PREFIX)
}

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
    /// The tools the model may call: client tools (the caller answers) and
    /// server tools (`http`: Lambent calls them), header values masked.
    #[schema(value_type = Vec<ToolSpec>)]
    pub tools: AgentTools,
    pub tool_choice: ToolChoice,
    /// The most rounds of server-tool calls in one turn, 1 to 32.
    pub max_tool_rounds: i64,
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
    /// Checked with [`lambent_core::chat::check_tools`] by the route, then
    /// sealed with [`seal_tools`].
    pub tools: AgentTools,
    pub tool_choice: ToolChoice,
    pub max_tool_rounds: i64,
}

/// The context a server tool's header values are encrypted under: a
/// ciphertext copied onto another tool, agent or owner does not decrypt.
pub fn tool_encryption_context(owner: &str, agent_id: &str, tool: &str) -> EncryptionContext {
    EncryptionContext::from([
        ("owner".to_owned(), owner.to_owned()),
        ("agent".to_owned(), agent_id.to_owned()),
        ("tool".to_owned(), tool.to_owned()),
    ])
}

/// A server tool's header as stored: never its value in plain text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SealedHeader {
    /// The value as key-cipher ciphertext, base64.
    ciphertext: String,
    /// What answers show of it ([`masked_header_value`]).
    masked: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredHttp {
    url: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    headers: BTreeMap<String, SealedHeader>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    timeout_ms: Option<u64>,
}

/// A tool as stored: a client tool's JSON is a `ToolSpec`'s.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredTool {
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    input_schema: Json,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    http: Option<StoredHttp>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    requires_approval: bool,
}

impl StoredTool {
    fn header(&self, name: &str) -> Option<&SealedHeader> {
        self.http.as_ref()?.headers.get(name)
    }
}

/// An agent's tools as stored: server tools' header values sealed. Serialised
/// (in answers) as `ToolSpec`s whose header values are masked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentTools(Vec<StoredTool>);

impl AgentTools {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The tools as answers show them: each header value masked.
    pub fn shown(&self) -> Vec<ToolSpec> {
        self.0
            .iter()
            .map(|t| ToolSpec {
                name: t.name.clone(),
                description: t.description.clone(),
                input_schema: t.input_schema.clone(),
                http: t.http.as_ref().map(|h| HttpToolSpec {
                    url: h.url.clone(),
                    headers: h
                        .headers
                        .iter()
                        .map(|(name, sealed)| (name.clone(), sealed.masked.clone()))
                        .collect(),
                    timeout_ms: h.timeout_ms,
                }),
                requires_approval: t.requires_approval,
            })
            .collect()
    }

    /// The tools as the model is offered them: name, description and schema.
    pub fn offered(&self) -> Vec<ToolSpec> {
        self.0
            .iter()
            .map(|t| {
                ToolSpec::client(
                    t.name.clone(),
                    t.description.clone(),
                    t.input_schema.clone(),
                )
            })
            .collect()
    }

    /// The bytes the tools take as stored (ciphertexts included).
    pub fn stored_len(&self) -> Result<usize> {
        if self.0.is_empty() {
            return Ok(0);
        }
        json_text(&self.0).map(|json| json.len())
    }

    /// Whether some tool is a server tool.
    pub fn has_server_tools(&self) -> bool {
        self.0.iter().any(|t| t.http.is_some())
    }
}

impl Serialize for AgentTools {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.shown().serialize(s)
    }
}

/// Seals `tools` (checked by the route) for the agent `agent_id` of
/// `owner`: each header value is encrypted, except one that equals the
/// masked form of the value `current` stores for the same tool and header,
/// which keeps that value (so a client can send back what it read). A
/// masked-looking value that matches nothing is refused: it is not a secret.
/// Errors name the field and never carry a value.
pub async fn seal_tools(
    cipher: &dyn KeyCipher,
    owner: &str,
    agent_id: &str,
    tools: Vec<ToolSpec>,
    current: &AgentTools,
) -> Result<AgentTools> {
    let mut stored = Vec::with_capacity(tools.len());
    // (tool index, header name, value) to encrypt.
    let mut to_seal: Vec<(usize, String, SecretString)> = Vec::new();
    for (i, tool) in tools.into_iter().enumerate() {
        let kept_tool = current.0.iter().find(|t| t.name == tool.name);
        let http = match tool.http {
            None => None,
            Some(http) => {
                let mut headers = BTreeMap::new();
                for (name, value) in http.headers {
                    let kept = kept_tool
                        .and_then(|t| t.header(&name))
                        .filter(|sealed| sealed.masked == value);
                    match kept {
                        Some(sealed) => {
                            headers.insert(name, sealed.clone());
                        }
                        None if looks_masked(&value) => {
                            return Err(Error::BadRequest(format!(
                                "tools[{i}].http.headers.{name}: a masked value that matches \
                                 no stored value of this tool's header; send the value itself"
                            )));
                        }
                        None => to_seal.push((i, name, SecretString::from(value))),
                    }
                }
                Some(StoredHttp {
                    url: http.url,
                    headers,
                    timeout_ms: http.timeout_ms,
                })
            }
        };
        stored.push(StoredTool {
            name: tool.name,
            description: tool.description,
            input_schema: tool.input_schema,
            http,
            requires_approval: tool.requires_approval,
        });
    }
    let sealed: Vec<(usize, String, SealedHeader)> = futures::stream::iter(to_seal)
        .map(|(i, name, value)| {
            let context = tool_encryption_context(owner, agent_id, &stored[i].name);
            async move {
                let ciphertext = cipher
                    .encrypt(value.expose_secret().as_bytes(), &context)
                    .await?;
                let header = SealedHeader {
                    ciphertext: BASE64.encode(ciphertext),
                    masked: masked_header_value(value.expose_secret()),
                };
                Ok::<_, Error>((i, name, header))
            }
        })
        .buffered(CIPHER_CONCURRENCY)
        .try_collect()
        .await?;
    for (i, name, header) in sealed {
        if let Some(http) = stored[i].http.as_mut() {
            http.headers.insert(name, header);
        }
    }
    Ok(AgentTools(stored))
}

/// A server tool with its header values in plain text, for the one place
/// that calls it. Never log or return the values.
#[derive(Debug, Clone)]
pub struct OpenedServerTool {
    pub name: String,
    pub url: String,
    /// Header names and their decrypted values.
    pub headers: Vec<(String, SecretString)>,
    /// The tool's timeout, or the default one.
    pub timeout_ms: u64,
    pub requires_approval: bool,
}

/// The server tools of the agent `agent_id` of `owner`, their header values
/// decrypted (concurrently).
pub async fn open_server_tools(
    cipher: &dyn KeyCipher,
    owner: &str,
    agent_id: &str,
    tools: &AgentTools,
) -> Result<Vec<OpenedServerTool>> {
    let servers: Vec<(&StoredTool, &StoredHttp)> = tools
        .0
        .iter()
        .filter_map(|t| Some((t, t.http.as_ref()?)))
        .collect();
    // Owned, so the futures below borrow nothing but the cipher and the IDs.
    let sealed: Vec<(usize, String, String, EncryptionContext)> = servers
        .iter()
        .enumerate()
        .flat_map(|(n, (tool, http))| {
            http.headers.iter().map(move |(name, header)| {
                (
                    n,
                    name.clone(),
                    header.ciphertext.clone(),
                    tool_encryption_context(owner, agent_id, &tool.name),
                )
            })
        })
        .collect();
    let opened: Vec<(usize, String, SecretString)> = futures::stream::iter(sealed)
        .map(|(n, name, ciphertext, context)| async move {
            let unreadable = |what: &str| {
                Error::Internal(format!(
                    "agent {agent_id}: a header of tool {} is {what}",
                    context.get("tool").map_or("?", String::as_str)
                ))
            };
            let ciphertext = BASE64
                .decode(&ciphertext)
                .map_err(|_| unreadable("not base64"))?;
            let plain = cipher.decrypt(&ciphertext, &context).await?;
            let value = String::from_utf8(plain)
                .map(SecretString::from)
                .map_err(|_| unreadable("not UTF-8"))?;
            Ok::<_, Error>((n, name, value))
        })
        .buffered(CIPHER_CONCURRENCY)
        .try_collect()
        .await?;
    let mut result: Vec<OpenedServerTool> = servers
        .iter()
        .map(|(tool, http)| OpenedServerTool {
            name: tool.name.clone(),
            url: http.url.clone(),
            headers: Vec::with_capacity(http.headers.len()),
            timeout_ms: http.timeout_ms.unwrap_or(DEFAULT_TOOL_TIMEOUT_MS),
            requires_approval: tool.requires_approval,
        })
        .collect();
    for (n, name, value) in opened {
        result[n].headers.push((name, value));
    }
    Ok(result)
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
        tools: AgentTools(opt_json_attr(item, "tools")?.unwrap_or_default()),
        tool_choice: opt_json_attr(item, "tool_choice")?.unwrap_or_default(),
        // Absent on agents saved before server tools.
        max_tool_rounds: match item.get("max_tool_rounds") {
            Some(_) => whole(item, "max_tool_rounds")?,
            None => DEFAULT_MAX_TOOL_ROUNDS,
        },
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
        .set("context_token_budget", spec.context_token_budget)
        .set("max_tool_rounds", spec.max_tool_rounds);
    update = if spec.tools.is_empty() {
        update.remove("tools")
    } else {
        update.set("tools", json_text(&spec.tools.0)?)
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

/// Creates the agent `id` (from [`new_id`]; its tools sealed under it).
pub async fn create(
    store: &dyn ItemStore,
    catalog: &Catalog,
    owner: &str,
    id: &str,
    spec: AgentSpec,
) -> Result<Agent> {
    validate(store, catalog, owner, &spec).await?;
    let now = lambent_core::time::now_rfc3339();
    let agent = Agent {
        id: id.to_owned(),
        name: spec.name,
        provider_id: spec.provider_id,
        model: spec.model,
        system_prompt: spec.system_prompt,
        temperature: spec.temperature,
        max_tokens: spec.max_tokens,
        context_token_budget: spec.context_token_budget,
        tools: spec.tools,
        tool_choice: spec.tool_choice,
        max_tool_rounds: spec.max_tool_rounds,
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
        .with("max_tool_rounds", agent.max_tool_rounds)
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
        item = item.with("tools", json_text(&agent.tools.0)?);
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

#[cfg(test)]
mod tests {
    use super::*;
    use lambent_ports::cipher::CipherResult;
    use lambent_ports::CipherError;
    use serde_json::json;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A cipher that binds its "ciphertext" to the context (the context's
    /// JSON, then the plaintext reversed), and counts encryptions.
    #[derive(Default)]
    struct FakeCipher {
        encryptions: AtomicUsize,
    }

    #[async_trait::async_trait]
    impl KeyCipher for FakeCipher {
        async fn encrypt(
            &self,
            plain: &[u8],
            context: &EncryptionContext,
        ) -> CipherResult<Vec<u8>> {
            self.encryptions.fetch_add(1, Ordering::SeqCst);
            let mut out = serde_json::to_vec(context).unwrap_or_default();
            out.push(0);
            out.extend(plain.iter().rev().map(|b| b ^ 0x5a));
            Ok(out)
        }

        async fn decrypt(
            &self,
            sealed: &[u8],
            context: &EncryptionContext,
        ) -> CipherResult<Vec<u8>> {
            let bound = serde_json::to_vec(context).unwrap_or_default();
            let rest = sealed
                .strip_prefix(bound.as_slice())
                .and_then(|r| r.strip_prefix(&[0]))
                .ok_or(CipherError::Rejected)?;
            Ok(rest.iter().rev().map(|b| b ^ 0x5a).collect())
        }

        async fn ping(&self) -> CipherResult<()> {
            Ok(())
        }
    }

    const SECRET: &str = "Bearer tool-SECRET-0123456789";

    fn tools(secret: &str) -> Vec<ToolSpec> {
        serde_json::from_value(json!([
            {"name": "now", "input_schema": {"type": "object"}},
            {"name": "search", "description": "Search", "input_schema": {"type": "object"},
             "http": {"url": "https://tools.example/search",
                      "headers": {"Authorization": secret, "X-Team": "blue"},
                      "timeout_ms": 5000},
             "requires_approval": true},
            {"name": "plain_http", "input_schema": {}, "http": {"url": "https://tools.example/p"}},
        ]))
        .unwrap()
    }

    #[tokio::test]
    async fn header_values_are_sealed_masked_and_opened_under_their_tool() {
        let cipher = FakeCipher::default();
        let sealed = seal_tools(
            &cipher,
            "usr_1",
            "agt_1",
            tools(SECRET),
            &AgentTools::default(),
        )
        .await
        .unwrap();
        assert_eq!(cipher.encryptions.load(Ordering::SeqCst), 2);
        // Stored: no plain text; answered: masked.
        let stored = json_text(&sealed.0).unwrap();
        assert!(
            !stored.contains("SECRET") && !stored.contains("blue"),
            "{stored}"
        );
        assert_eq!(sealed.stored_len().unwrap(), stored.len());
        let shown = serde_json::to_value(&sealed).unwrap();
        assert_eq!(
            shown[1]["http"],
            json!({"url": "https://tools.example/search",
                   "headers": {"Authorization": "****6789", "X-Team": "****"},
                   "timeout_ms": 5000})
        );
        assert_eq!(shown[1]["requires_approval"], true);
        assert_eq!(
            shown[0],
            json!({"name": "now", "input_schema": {"type": "object"}})
        );
        assert!(!format!("{sealed:?}").contains("SECRET"));
        // Offered to the model: names, descriptions and schemas only.
        let offered = serde_json::to_string(&sealed.offered()).unwrap();
        assert!(
            !offered.contains("\"http\"") && !offered.contains("approval"),
            "{offered}"
        );
        assert!(sealed.has_server_tools());

        let opened = open_server_tools(&cipher, "usr_1", "agt_1", &sealed)
            .await
            .unwrap();
        assert_eq!(opened.len(), 2);
        assert_eq!(
            (
                opened[0].name.as_str(),
                opened[0].url.as_str(),
                opened[0].timeout_ms
            ),
            ("search", "https://tools.example/search", 5000)
        );
        assert!(opened[0].requires_approval);
        let headers: Vec<(&str, &str)> = opened[0]
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.expose_secret()))
            .collect();
        assert_eq!(headers, [("Authorization", SECRET), ("X-Team", "blue")]);
        assert_eq!(
            (
                opened[1].timeout_ms,
                opened[1].headers.len(),
                opened[1].requires_approval
            ),
            (DEFAULT_TOOL_TIMEOUT_MS, 0, false)
        );
        // Bound to owner and agent: another agent's record does not open.
        assert!(open_server_tools(&cipher, "usr_1", "agt_2", &sealed)
            .await
            .is_err());
        assert!(open_server_tools(&cipher, "usr_2", "agt_1", &sealed)
            .await
            .is_err());
    }

    #[tokio::test]
    async fn a_masked_value_sent_back_keeps_the_stored_one() {
        let cipher = FakeCipher::default();
        let current = seal_tools(
            &cipher,
            "usr_1",
            "agt_1",
            tools(SECRET),
            &AgentTools::default(),
        )
        .await
        .unwrap();
        let before = cipher.encryptions.load(Ordering::SeqCst);
        // What a GET answered, sent back unchanged: nothing is re-encrypted.
        let read: Vec<ToolSpec> =
            serde_json::from_value(serde_json::to_value(&current).unwrap()).unwrap();
        let again = seal_tools(&cipher, "usr_1", "agt_1", read.clone(), &current)
            .await
            .unwrap();
        assert_eq!(again, current);
        assert_eq!(cipher.encryptions.load(Ordering::SeqCst), before);

        // A new value for one header seals only that one.
        let mut changed = read.clone();
        if let Some(http) = changed[1].http.as_mut() {
            http.headers
                .insert("X-Team".into(), "red-team-rotated".into());
        }
        let rotated = seal_tools(&cipher, "usr_1", "agt_1", changed, &current)
            .await
            .unwrap();
        assert_eq!(cipher.encryptions.load(Ordering::SeqCst), before + 1);
        let opened = open_server_tools(&cipher, "usr_1", "agt_1", &rotated)
            .await
            .unwrap();
        let values: Vec<&str> = opened[0]
            .headers
            .iter()
            .map(|(_, v)| v.expose_secret())
            .collect();
        assert_eq!(values, [SECRET, "red-team-rotated"]);

        // A masked value under another tool name, or another header name,
        // matches nothing: refused, naming the field, not the value.
        let mut renamed = read.clone();
        renamed[1].name = "find".into();
        let mut moved = read;
        if let Some(http) = moved[1].http.as_mut() {
            let value = http.headers.remove("Authorization").unwrap_or_default();
            http.headers.insert("X-Auth".into(), value);
        }
        for (tools, field) in [
            (renamed, "tools[1].http.headers.Authorization: "),
            (moved, "tools[1].http.headers.X-Auth: "),
        ] {
            let Err(Error::BadRequest(message)) =
                seal_tools(&cipher, "usr_1", "agt_1", tools, &current).await
            else {
                panic!("{field}accepted");
            };
            assert!(message.starts_with(field), "{message}");
        }
    }

    #[test]
    fn agents_saved_before_server_tools_read_as_before() {
        let item = Item::new(item_key("usr_1", "agt_1"))
            .with("name", "a")
            .with("provider_id", "prv_1")
            .with("model", "m")
            .with("max_tokens", 1i64)
            .with("context_token_budget", 1i64)
            .with(
                "tools",
                r#"[{"name":"now","input_schema":{"type":"object"}}]"#,
            )
            .with("version", 1i64)
            .with("created_at", "t")
            .with("updated_at", "t");
        let agent = from_item(&item).unwrap();
        assert_eq!(agent.max_tool_rounds, DEFAULT_MAX_TOOL_ROUNDS);
        assert_eq!(
            serde_json::to_value(&agent.tools).unwrap(),
            json!([{"name": "now", "input_schema": {"type": "object"}}])
        );
    }
}
