//! Messages: `SESSION#<session>/MSG#<time-ordered id>`, so a page of history
//! is one query with a limit, whatever the session's length. A user message
//! is written when its call starts; the assistant message, with its usage,
//! cost and the prices used, when the call ends (see [`super::usage`]).
//! Each message expires `LAMBENT_SESSION_TTL_DAYS` after it was written.

use lambent_core::ids::{MessageId, TypedId};
use rust_decimal::Decimal;
use serde::Serialize;

use super::models::Prices;
use super::sessions::{self, TokenCounts};
use super::{count, opt_decimal, opt_text, text, PageRequest, Paged};
use lambent_core::chat::{Role, Turn, Usage};
use lambent_core::error::{Error, Result};
use lambent_core::ids;
use lambent_ports::{Condition, Item, ItemStore, Key, Order, Query, TxOp};

pub const ID_PREFIX: &str = <MessageId as TypedId>::PREFIX;
/// The most text one message stores. A reply that goes on (the stream is
/// still forwarded whole) is stored up to here and marked `truncated`; this
/// keeps an item under DynamoDB's 400 KB and memory per stream bounded.
pub const MAX_STORED_BYTES: usize = 256 * 1024;

pub fn item_key(session_id: &str, message_id: &str) -> Key {
    Key::new(
        sessions::messages_partition(session_id),
        format!("MSG#{message_id}"),
    )
}

/// How a reply ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MessageStatus {
    /// The whole reply, delivered.
    Complete,
    /// The client went away before the end: what the provider sent is
    /// stored and billed.
    Incomplete,
    /// The provider failed; the text received before the failure is kept.
    Failed,
}

impl MessageStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageStatus::Complete => "complete",
            MessageStatus::Incomplete => "incomplete",
            MessageStatus::Failed => "failed",
        }
    }
    fn parse(s: &str) -> Option<Self> {
        match s {
            "complete" => Some(MessageStatus::Complete),
            "incomplete" => Some(MessageStatus::Incomplete),
            "failed" => Some(MessageStatus::Failed),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MessageRole {
    User,
    Assistant,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Message {
    pub id: String,
    pub session_id: String,
    pub role: MessageRole,
    pub content: String,
    pub status: MessageStatus,
    /// The stored text stops at 256 KiB; the reply went on.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    /// Assistant messages: the model that answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<TokenCounts>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "rust_decimal::serde::str_option"
    )]
    #[schema(value_type = Option<String>, example = "0.000321")]
    pub cost_usd: Option<Decimal>,
    /// The prices the cost was computed with (USD per million tokens).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prices: Option<Prices>,
    pub created_at: String,
}

/// An estimate of a text's tokens that errs high: about 4 bytes of English
/// or one CJK character per token, counted as 3 bytes each, plus the
/// per-message framing.
pub fn estimate_tokens(text: &str) -> u64 {
    (text.len() as u64).div_ceil(3) + 4
}

/// Two IDs that sort in the order of a turn: the user's message, then the reply.
pub fn turn_ids() -> (String, String) {
    let now = lambent_core::time::now_epoch_millis();
    (
        ids::sortable_id_at(ID_PREFIX, now),
        ids::sortable_id_at(ID_PREFIX, now + 1),
    )
}

/// The user's message, written only while the session is live.
pub fn user_message_ops(
    owner: &str,
    session_id: &str,
    message_id: &str,
    content: &str,
    expires_at: i64,
) -> Vec<TxOp> {
    let item = Item::new(item_key(session_id, message_id))
        .with("role", "user")
        .with("content", content)
        .with("status", MessageStatus::Complete.as_str())
        .with("tokens", estimate_tokens(content) as i64)
        .with("created_at", lambent_core::time::now_rfc3339())
        .expiring_at(expires_at);
    vec![
        TxOp::Check {
            key: sessions::item_key(owner, session_id),
            condition: sessions::live(),
        },
        TxOp::Put {
            item,
            condition: Some(Condition::NotExists),
        },
    ]
}

/// What a finished call stores as the assistant's message.
#[derive(Debug, Clone)]
pub struct Reply {
    pub text: String,
    pub truncated: bool,
    pub status: MessageStatus,
    pub model: String,
    pub stop_reason: Option<String>,
    pub usage: Usage,
    pub cost_usd: Decimal,
    pub prices: Prices,
}

/// The assistant's message, create-only: it doubles as the record that the
/// call was counted, so a retried write cannot count it twice.
pub fn assistant_message_op(
    session_id: &str,
    message_id: &str,
    reply: &Reply,
    expires_at: i64,
) -> TxOp {
    let u = reply.usage;
    let mut item = Item::new(item_key(session_id, message_id))
        .with("role", "assistant")
        .with("content", reply.text.as_str())
        .with("status", reply.status.as_str())
        .with("model", reply.model.as_str())
        .with(
            "tokens",
            (u.output_tokens.max(estimate_tokens(&reply.text))) as i64,
        )
        .with("input_tokens", u.input_tokens as i64)
        .with("output_tokens", u.output_tokens as i64)
        .with("cache_read_tokens", u.cache_read_tokens as i64)
        .with("cache_write_tokens", u.cache_write_tokens as i64)
        .with("cache_write_1h_tokens", u.cache_write_1h_tokens as i64)
        .with("cost_usd", reply.cost_usd)
        .with("input_per_mtok", reply.prices.input_per_mtok)
        .with("output_per_mtok", reply.prices.output_per_mtok)
        .with("cache_read_per_mtok", reply.prices.cache_read_per_mtok)
        .with("cache_write_per_mtok", reply.prices.cache_write_per_mtok)
        .with("created_at", lambent_core::time::now_rfc3339())
        .expiring_at(expires_at);
    if reply.truncated {
        item = item.with("truncated", true);
    }
    if let Some(reason) = &reply.stop_reason {
        item = item.with("stop_reason", reason.as_str());
    }
    TxOp::Put {
        item,
        condition: Some(Condition::NotExists),
    }
}

fn from_item(session_id: &str, item: &Item) -> Result<Message> {
    let role = match text(item, "role")?.as_str() {
        "user" => MessageRole::User,
        "assistant" => MessageRole::Assistant,
        other => return Err(Error::Internal(format!("message role {other:?}"))),
    };
    let status = text(item, "status")?;
    let status = MessageStatus::parse(&status)
        .ok_or_else(|| Error::Internal(format!("message status {status:?}")))?;
    let (usage, prices) = match role {
        MessageRole::User => (None, None),
        MessageRole::Assistant => (
            Some(TokenCounts {
                input_tokens: count(item, "input_tokens")?,
                output_tokens: count(item, "output_tokens")?,
                cache_read_tokens: count(item, "cache_read_tokens")?,
                cache_write_tokens: count(item, "cache_write_tokens")?,
            }),
            Some(Prices {
                input_per_mtok: super::decimal(item, "input_per_mtok")?,
                output_per_mtok: super::decimal(item, "output_per_mtok")?,
                cache_read_per_mtok: super::decimal(item, "cache_read_per_mtok")?,
                cache_write_per_mtok: super::decimal(item, "cache_write_per_mtok")?,
            }),
        ),
    };
    Ok(Message {
        id: super::id_after(item, "MSG#")?.to_owned(),
        session_id: session_id.to_owned(),
        role,
        content: text(item, "content")?,
        status,
        truncated: item.get("truncated").is_some(),
        model: opt_text(item, "model"),
        stop_reason: opt_text(item, "stop_reason"),
        usage,
        cost_usd: opt_decimal(item, "cost_usd"),
        prices,
        created_at: text(item, "created_at")?,
    })
}

/// One page of a session's history. The caller has checked the session is its own.
pub async fn page(
    store: &dyn ItemStore,
    session_id: &str,
    order: Order,
    page: PageRequest,
) -> Result<Paged<Message>> {
    super::page_of(
        store,
        Query::partition(sessions::messages_partition(session_id))
            .prefix("MSG#")
            .order(order),
        page,
        |item| from_item(session_id, item),
    )
    .await
}

pub async fn get(
    store: &dyn ItemStore,
    session_id: &str,
    message_id: &str,
) -> Result<Option<Message>> {
    match store.get(&item_key(session_id, message_id)).await? {
        Some(item) => Ok(Some(from_item(session_id, &item)?)),
        None => Ok(None),
    }
}

/// Messages read per query while filling the context.
const CONTEXT_PAGE: usize = 50;

/// The newest history that fits `budget` tokens, oldest first, as turns for
/// the model. Reading stops at the first message that does not fit, so the
/// cost of a call grows with the budget, never with the session's length.
/// Failed replies with no text are left out, and so is a leading assistant
/// turn (a conversation starts with the user).
pub async fn recent_turns(
    store: &dyn ItemStore,
    session_id: &str,
    budget: u64,
) -> Result<(Vec<Turn>, u64)> {
    let mut turns = Vec::new();
    let mut used = 0u64;
    let mut after = None;
    'pages: loop {
        let found = store
            .query(
                Query::partition(sessions::messages_partition(session_id))
                    .prefix("MSG#")
                    .order(Order::Descending)
                    .limit(CONTEXT_PAGE)
                    .after(after),
            )
            .await?;
        for item in &found.items {
            let content = text(item, "content")?;
            if content.is_empty() {
                continue;
            }
            let tokens = count(item, "tokens")?;
            if used + tokens > budget {
                break 'pages;
            }
            used += tokens;
            let role = match item.get_str("role") {
                Some("assistant") => Role::Assistant,
                _ => Role::User,
            };
            turns.push((Turn::text(role, content), tokens));
        }
        match found.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    turns.reverse();
    let first_user = turns
        .iter()
        .position(|(t, _)| t.role == Role::User)
        .unwrap_or(turns.len());
    let dropped: u64 = turns.drain(..first_user).map(|(_, tokens)| tokens).sum();
    Ok((turns.into_iter().map(|(t, _)| t).collect(), used - dropped))
}
