//! Sessions: `USER#<owner>/SESSION#<id>`, owning the partition of their
//! messages (`SESSION#<id>`). A session carries its running totals (tokens,
//! `cost_usd`) and `committed_usd`, the spending its budget counts: the cost
//! so far plus the reservations of calls in flight (see [`super::budgets`]).
//! It expires `LAMBENT_SESSION_TTL_DAYS` after its last activity.

use lambent_core::ids::{SessionId, TypedId};
use rust_decimal::Decimal;
use serde::Serialize;

use super::users;
use super::{cascade, count, opt_decimal, opt_text, text, PageRequest, Paged};
use lambent_core::chat::Usage;
use lambent_core::error::{Error, Result};
use lambent_core::ids;
use lambent_ports::{Condition, Item, ItemStore, Key, Order, Query, TxOp, Update};

pub const ID_PREFIX: &str = <SessionId as TypedId>::PREFIX;
/// Set while a session's messages are being deleted: it reads as gone.
const DELETING: &str = "deleting";

pub fn item_key(owner: &str, id: &str) -> Key {
    Key::new(users::partition(owner), format!("SESSION#{id}"))
}

/// The partition of a session's messages.
pub fn messages_partition(id: &str) -> String {
    format!("SESSION#{id}")
}

/// Token counts, as clients see them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, utoipa::ToSchema)]
pub struct TokenCounts {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    /// 5-minute and 1-hour cache writes together.
    pub cache_write_tokens: u64,
}

impl From<Usage> for TokenCounts {
    fn from(u: Usage) -> Self {
        TokenCounts {
            input_tokens: u.input_tokens,
            output_tokens: u.output_tokens,
            cache_read_tokens: u.cache_read_tokens,
            cache_write_tokens: u.cache_write_tokens,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Session {
    pub id: String,
    pub agent_id: String,
    pub title: Option<String>,
    /// Spending limit of the session, USD; none when absent.
    #[serde(with = "rust_decimal::serde::str_option")]
    #[schema(value_type = Option<String>, example = "1.50")]
    pub budget_usd: Option<Decimal>,
    /// Tokens of every model call in the session.
    pub usage: TokenCounts,
    /// What the session's calls cost, USD.
    #[serde(with = "rust_decimal::serde::str")]
    #[schema(value_type = String, example = "0.004215")]
    pub cost_usd: Decimal,
    /// Messages stored (user and assistant).
    pub message_count: u64,
    pub created_at: String,
    pub updated_at: String,
    /// When the session and its newest messages expire unless used again (RFC 3339).
    pub expires_at: String,
    /// Spending counted against the budget: cost plus calls in flight.
    #[serde(skip)]
    pub committed_usd: Decimal,
}

#[derive(Debug, Clone)]
pub struct NewSession {
    pub agent_id: String,
    pub title: Option<String>,
    pub budget_usd: Option<Decimal>,
}

fn from_item(item: &Item) -> Result<Session> {
    let expires_at = item
        .expires_at
        .map(lambent_core::time::rfc3339_from_epoch)
        .unwrap_or_default();
    Ok(Session {
        id: super::id_after(item, "SESSION#")?.to_owned(),
        agent_id: text(item, "agent_id")?,
        title: opt_text(item, "title"),
        budget_usd: opt_decimal(item, "budget_usd"),
        usage: TokenCounts {
            input_tokens: count(item, "input_tokens")?,
            output_tokens: count(item, "output_tokens")?,
            cache_read_tokens: count(item, "cache_read_tokens")?,
            cache_write_tokens: count(item, "cache_write_tokens")?,
        },
        cost_usd: super::decimal(item, "cost_usd")?,
        message_count: count(item, "message_count")?,
        created_at: text(item, "created_at")?,
        updated_at: text(item, "updated_at")?,
        expires_at,
        committed_usd: super::decimal(item, "committed_usd")?,
    })
}

/// Condition: the session exists and is not being deleted.
pub fn live() -> Condition {
    Condition::And(vec![
        Condition::Exists,
        Condition::AttrNotExists(DELETING.into()),
    ])
}

/// When something written at `now` (epoch seconds) expires after `ttl`.
pub fn expiry(now: i64, ttl: std::time::Duration) -> i64 {
    now + ttl.as_secs() as i64
}

pub async fn create(
    store: &dyn ItemStore,
    owner: &str,
    new: NewSession,
    expires_at: i64,
) -> Result<Session> {
    let id = ids::new_sortable_id(ID_PREFIX);
    let now = lambent_core::time::now_rfc3339();
    let mut item = Item::new(item_key(owner, &id))
        .with("agent_id", new.agent_id.as_str())
        .with("input_tokens", 0)
        .with("output_tokens", 0)
        .with("cache_read_tokens", 0)
        .with("cache_write_tokens", 0)
        .with("cost_usd", Decimal::ZERO)
        .with("committed_usd", Decimal::ZERO)
        .with("message_count", 0)
        .with("created_at", now.as_str())
        .with("updated_at", now.as_str())
        .expiring_at(expires_at);
    if let Some(title) = &new.title {
        item = item.with("title", title.as_str());
    }
    if let Some(budget) = new.budget_usd {
        item = item.with("budget_usd", budget);
    }
    let item = cascade::owns_partition(item, &messages_partition(&id));
    let session = from_item(&item)?;
    let ops = vec![
        TxOp::Check {
            key: super::agents::item_key(owner, &new.agent_id),
            condition: Condition::Exists,
        },
        TxOp::Put {
            item,
            condition: Some(Condition::NotExists),
        },
    ];
    users::write_owned(store, owner, ops, |failed| {
        (failed == 0).then(|| Error::BadRequest(format!("agent_id: no agent {:?}", new.agent_id)))
    })
    .await?;
    Ok(session)
}

pub async fn get(store: &dyn ItemStore, owner: &str, id: &str) -> Result<Option<Session>> {
    match store.get(&item_key(owner, id)).await? {
        Some(item) if item.get(DELETING).is_none() => Ok(Some(from_item(&item)?)),
        _ => Ok(None),
    }
}

/// The caller's sessions, newest first.
pub async fn list(store: &dyn ItemStore, owner: &str, page: PageRequest) -> Result<Paged<Session>> {
    let mut paged = super::page_of(
        store,
        Query::partition(users::partition(owner))
            .prefix("SESSION#")
            .order(Order::Descending),
        page,
        |item| Ok((item.get(DELETING).is_none(), from_item(item)?)),
    )
    .await?;
    Ok(Paged {
        items: paged
            .items
            .drain(..)
            .filter(|(live, _)| *live)
            .map(|(_, s)| s)
            .collect(),
        next: paged.next,
    })
}

/// Deletes the session and its messages. The session is marked first, so it
/// reads as gone at once; its messages follow, then the session itself. A
/// crash midway leaves a marked session that a retry finishes (a marked
/// session is gone for every read, but not for its deletion), and messages
/// that expire by their TTL in any case.
pub async fn delete(store: &dyn ItemStore, owner: &str, id: &str) -> Result<()> {
    let key = item_key(owner, id);
    match store
        .update(
            &key,
            Update::new().set(DELETING, true),
            Some(Condition::Exists),
        )
        .await
    {
        Ok(_) => {}
        Err(e) if e.is_condition_failure() => return Err(Error::NotFound("session")),
        Err(e) => return Err(e.into()),
    }
    cascade::delete_partition(store, &messages_partition(id)).await?;
    store.delete(&key, None).await?;
    Ok(())
}
