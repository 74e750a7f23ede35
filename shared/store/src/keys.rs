//! API keys: the lookup record `KEY#<id>/KEY` that authentication reads (owner
//! and hash: `api_key::stored_hash`, or a legacy keyed hash until the key's
//! first use re-hashes it, [`upgrade_hash`]), and the owner's masked copy `USER#<owner>/KEY#<id>`,
//! written and deleted together. A key holds no copy of its owner's role:
//! authentication reads the role from the owner's profile, so a role change
//! or a deletion is one write that every key obeys at once.

use serde::Serialize;

use super::users::{self, alive};
use super::{bytes, cascade, opt_text, text, PageRequest, Paged};
use lambent_core::api_key::{self, NewKey};
use lambent_core::error::{Error, Result};
use lambent_core::secret::SecretString;
use lambent_ports::{Condition, Item, ItemStore, Key, Query, TxOp, Update, Value};

fn lookup_key(key_id: &str) -> Key {
    Key::new(format!("KEY#{key_id}"), "KEY")
}

fn listing_key(user_id: &str, key_id: &str) -> Key {
    Key::new(users::partition(user_id), format!("KEY#{key_id}"))
}

/// What authentication needs of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    pub key_id: String,
    pub user_id: String,
    pub hash: Vec<u8>,
}

/// A key as listings show it: never the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ApiKeyInfo {
    pub id: String,
    pub user_id: String,
    pub name: Option<String>,
    /// What every use of the key starts with: `lmb_<id>`.
    pub prefix: String,
    /// The key with its secret hidden: `lmb_<id>_…<last 4>`.
    pub masked: String,
    pub last4: String,
    pub created_at: String,
}

pub async fn lookup(store: &dyn ItemStore, key_id: &str) -> Result<Option<KeyRecord>> {
    let Some(item) = store.get(&lookup_key(key_id)).await? else {
        return Ok(None);
    };
    Ok(Some(KeyRecord {
        key_id: key_id.to_owned(),
        user_id: text(&item, "user_id")?,
        hash: bytes(&item, "hash")?,
    }))
}

/// Creates a key for `user_id` (404 unless the user is alive, checked in the
/// key's own transaction); the full key is in the result only. Its hash is
/// unkeyed (`api_key::stored_hash`): no rotation of the root secret touches it.
pub async fn create(
    store: &dyn ItemStore,
    user_id: &str,
    name: Option<String>,
) -> Result<(ApiKeyInfo, SecretString)> {
    let NewKey {
        key_id,
        full,
        hash,
        last4,
    } = api_key::mint();
    let info = ApiKeyInfo {
        prefix: api_key::prefix(&key_id),
        masked: api_key::masked(&key_id, &last4),
        id: key_id,
        user_id: user_id.to_owned(),
        name,
        last4,
        created_at: lambent_core::time::now_rfc3339(),
    };
    let lookup = Item::new(lookup_key(&info.id))
        .with("user_id", user_id)
        .with("hash", Value::B(hash));
    let mut listing = cascade::owns_item(Item::new(listing_key(user_id, &info.id)), &lookup.key)
        .with("last4", info.last4.as_str())
        .with("created_at", info.created_at.as_str());
    if let Some(name) = &info.name {
        listing = listing.with("name", name.as_str());
    }
    let result = store
        .transact(vec![
            // The owner must still exist: no key outlives its user's deletion.
            TxOp::Check {
                key: users::profile_key(user_id),
                condition: alive(),
            },
            TxOp::Put {
                item: lookup,
                condition: Some(Condition::NotExists),
            },
            TxOp::Put {
                item: listing,
                condition: Some(Condition::NotExists),
            },
        ])
        .await;
    match result {
        Ok(()) => Ok((info, full)),
        Err(e) if e.is_condition_failure() => Err(Error::NotFound("user")),
        Err(e) => Err(e.into()),
    }
}

/// Replaces a key's hash `old` with `new` (a legacy keyed hash with the
/// stored form, after the key verified against it), only if it is still
/// `old`: false when it changed meanwhile (another process upgraded it) or
/// the key is gone. Never creates a key.
pub async fn upgrade_hash(
    store: &dyn ItemStore,
    key_id: &str,
    old: &[u8],
    new: &[u8],
) -> Result<bool> {
    let result = store
        .update(
            &lookup_key(key_id),
            Update::new().set("hash", Value::B(new.to_vec())),
            Some(Condition::eq("hash", Value::B(old.to_vec()))),
        )
        .await;
    match result {
        Ok(_) => Ok(true),
        Err(e) if e.is_condition_failure() => Ok(false),
        Err(e) => Err(e.into()),
    }
}

fn info_from_listing(user_id: &str, item: &Item) -> Result<ApiKeyInfo> {
    let id = super::id_after(item, "KEY#")?.to_owned();
    let last4 = text(item, "last4")?;
    Ok(ApiKeyInfo {
        prefix: api_key::prefix(&id),
        masked: api_key::masked(&id, &last4),
        id,
        user_id: user_id.to_owned(),
        name: opt_text(item, "name"),
        last4,
        created_at: text(item, "created_at")?,
    })
}

pub async fn list(
    store: &dyn ItemStore,
    user_id: &str,
    page: PageRequest,
) -> Result<Paged<ApiKeyInfo>> {
    super::page_of(
        store,
        Query::partition(users::partition(user_id)).prefix("KEY#"),
        page,
        |item| info_from_listing(user_id, item),
    )
    .await
}

/// Revokes a key. `owner`: only a key of this user (404 otherwise); `None`
/// for an admin, who may revoke any key.
pub async fn revoke(store: &dyn ItemStore, owner: Option<&str>, key_id: &str) -> Result<()> {
    let Some(record) = lookup(store, key_id).await? else {
        return Err(Error::NotFound("key"));
    };
    if owner.is_some_and(|o| o != record.user_id) {
        return Err(Error::NotFound("key"));
    }
    let result = store
        .transact(vec![
            TxOp::Delete {
                key: lookup_key(key_id),
                condition: Some(Condition::eq("user_id", record.user_id.as_str())),
            },
            TxOp::Delete {
                key: listing_key(&record.user_id, key_id),
                condition: None,
            },
        ])
        .await;
    match result {
        Ok(()) => Ok(()),
        Err(e) if e.is_condition_failure() => Err(Error::NotFound("key")),
        Err(e) => Err(e.into()),
    }
}
