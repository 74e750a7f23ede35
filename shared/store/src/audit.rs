//! The audit log: one entry per successful write, in a partition per UTC day
//! (`AUDIT#<yyyy-mm-dd>`, sort key time-ordered), so writes spread over
//! partitions and a day reads as pages. Entries expire after the deployment's
//! audit retention (`LAMBENT_AUDIT_TTL_DAYS`).

use serde::Serialize;

use super::{text, whole, PageRequest, Paged};
use lambent_core::error::{Error, Result};
use lambent_core::ids;
use lambent_ports::{Condition, Item, ItemStore, Key, Order, Query};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub id: String,
    pub at: String,
    /// Who: the user and the key it used.
    pub user_id: String,
    pub key_id: String,
    /// What: method, route template and the path as requested.
    pub method: String,
    pub route: String,
    pub path: String,
    pub status: u16,
    pub request_id: String,
    /// Whom the write was about, when not the caller (e.g. the user a new
    /// API key is for).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject_user_id: Option<String>,
    /// What the write created, when its path does not say (e.g. the new
    /// API key's ID).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_id: Option<String>,
}

pub struct NewEntry<'a> {
    pub user_id: &'a str,
    pub key_id: &'a str,
    pub method: &'a str,
    pub route: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub request_id: &'a str,
    pub subject_user_id: Option<&'a str>,
    pub resource_id: Option<&'a str>,
}

fn partition(day: &str) -> String {
    format!("AUDIT#{day}")
}

pub async fn record(store: &dyn ItemStore, entry: NewEntry<'_>, ttl_days: u64) -> Result<()> {
    let now = time::OffsetDateTime::now_utc();
    let id = ids::new_sortable_id("aud");
    let item = Item::new(Key::new(partition(&lambent_core::time::day_of(now)), id))
        .with("at", lambent_core::time::rfc3339(now))
        .with("user_id", entry.user_id)
        .with("key_id", entry.key_id)
        .with("method", entry.method)
        .with("route", entry.route)
        .with("path", entry.path)
        .with("status", i64::from(entry.status))
        .with("request_id", entry.request_id)
        .expiring_at(now.unix_timestamp() + (ttl_days as i64) * 86_400);
    let item = match entry.subject_user_id {
        Some(subject) => item.with("subject_user_id", subject),
        None => item,
    };
    let item = match entry.resource_id {
        Some(resource) => item.with("resource_id", resource),
        None => item,
    };
    Ok(store.put(item, Some(Condition::NotExists)).await?)
}

fn from_item(item: &Item) -> Result<AuditEntry> {
    Ok(AuditEntry {
        id: item.key.sk.clone(),
        at: text(item, "at")?,
        user_id: text(item, "user_id")?,
        key_id: text(item, "key_id")?,
        method: text(item, "method")?,
        route: text(item, "route")?,
        path: text(item, "path")?,
        status: u16::try_from(whole(item, "status")?)
            .map_err(|_| Error::Internal("audit status out of range".into()))?,
        request_id: text(item, "request_id")?,
        subject_user_id: super::opt_text(item, "subject_user_id"),
        resource_id: super::opt_text(item, "resource_id"),
    })
}

/// A page of one day's entries, newest first.
pub async fn list(
    store: &dyn ItemStore,
    day: &str,
    page: PageRequest,
) -> Result<Paged<AuditEntry>> {
    let query = Query::partition(partition(day)).order(Order::Descending);
    super::page_of(store, query, page, from_item).await
}
