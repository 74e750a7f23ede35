//! API keys: the lookup record `KEY#<id>/KEY` that authentication reads (owner,
//! role, keyed hash), and the owner's masked copy `USER#<owner>/KEY#<id>`,
//! written and deleted together.

use serde::Serialize;

use super::users::{self, alive};
use super::{bytes, cascade, opt_text, text, PageRequest, Paged};
use lambent_core::api_key::{self, NewKey};
use lambent_core::auth::Role;
use lambent_core::error::{Error, Result};
use lambent_core::secret::SecretString;
use lambent_ports::{Condition, Item, ItemStore, Key, Query, TxOp, Update};

fn lookup_key(key_id: &str) -> Key {
    Key::new(format!("KEY#{key_id}"), "KEY")
}

fn listing_key(user_id: &str, key_id: &str) -> Key {
    Key::new(users::partition(user_id), format!("KEY#{key_id}"))
}

/// What authentication needs of a key. Cached per process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    pub key_id: String,
    pub user_id: String,
    pub role: Role,
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
    let role = text(&item, "role")?;
    Ok(Some(KeyRecord {
        key_id: key_id.to_owned(),
        user_id: text(&item, "user_id")?,
        role: Role::parse(&role)
            .ok_or_else(|| Error::Internal(format!("key {key_id} has role {role:?}")))?,
        hash: bytes(&item, "hash")?,
    }))
}

/// Creates a key for `user_id`; the full key is in the result only.
pub async fn create(
    store: &dyn ItemStore,
    hash_key: &[u8; 32],
    user_id: &str,
    name: Option<String>,
) -> Result<(ApiKeyInfo, SecretString)> {
    let Some(user) = users::get(store, user_id).await? else {
        return Err(Error::NotFound("user"));
    };
    let NewKey {
        key_id,
        full,
        hash,
        last4,
    } = api_key::mint(hash_key);
    let info = ApiKeyInfo {
        prefix: api_key::prefix(&key_id),
        masked: api_key::masked(&key_id, &last4),
        id: key_id,
        user_id: user.id.clone(),
        name,
        last4,
        created_at: lambent_core::time::now_rfc3339(),
    };
    let lookup = Item::new(lookup_key(&info.id))
        .with("user_id", user.id.as_str())
        .with("role", user.role.as_str())
        .with("hash", lambent_ports::Value::B(hash.to_vec()));
    let mut listing = cascade::owns_item(Item::new(listing_key(&user.id, &info.id)), &lookup.key)
        .with("last4", info.last4.as_str())
        .with("created_at", info.created_at.as_str());
    if let Some(name) = &info.name {
        listing = listing.with("name", name.as_str());
    }
    // The owner must still exist with the role copied into the key.
    let owner_unchanged = Condition::And(vec![alive(), Condition::eq("role", user.role.as_str())]);
    let result = store
        .transact(vec![
            TxOp::Check {
                key: users::profile_key(&user.id),
                condition: owner_unchanged,
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
        Err(e) if e.is_condition_failure() => Err(Error::Conflict(
            "the user changed or was deleted meanwhile; try again".into(),
        )),
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

/// Copies a user's new role into each of its keys' lookup records.
pub async fn set_role_of_all(store: &dyn ItemStore, user_id: &str, role: Role) -> Result<()> {
    let mut after = None;
    loop {
        let page = list(
            store,
            user_id,
            PageRequest {
                limit: 100,
                after: after.take(),
            },
        )
        .await?;
        for key in &page.items {
            match store
                .update(
                    &lookup_key(&key.id),
                    Update::new().set("role", role.as_str()),
                    Some(Condition::Exists),
                )
                .await
            {
                Ok(_) => {}
                // Revoked meanwhile: nothing to change.
                Err(e) if e.is_condition_failure() => {}
                Err(e) => return Err(e.into()),
            }
        }
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(()),
        }
    }
}
