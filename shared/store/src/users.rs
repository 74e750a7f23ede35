//! Users: `USER#<id>/PROFILE`, with a copy in the admin listing
//! `USERS/USER#<id>` written in the same transaction.

use lambent_core::ids::{TypedId, UserId};
use rust_decimal::Decimal;
use serde::Serialize;

use super::{cascade, opt_decimal, text, PageRequest, Paged};
use lambent_core::auth::{Role, BOOTSTRAP_ADMIN_USER};
use lambent_core::error::{Error, Result};
use lambent_core::ids;
use lambent_ports::{Condition, Item, ItemStore, Key, Query, StoreError, TxOp, Update};

pub const ID_PREFIX: &str = <UserId as TypedId>::PREFIX;
const LISTING_PK: &str = "USERS";
/// Set on a profile while its owner's items are being deleted: the user is
/// gone for every read, and nothing new can be attached to it.
pub(crate) const DELETING: &str = "deleting";

pub fn partition(user_id: &str) -> String {
    format!("USER#{user_id}")
}

pub fn profile_key(user_id: &str) -> Key {
    Key::new(partition(user_id), "PROFILE")
}

fn listing_key(user_id: &str) -> Key {
    Key::new(LISTING_PK, format!("USER#{user_id}"))
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct User {
    pub id: String,
    pub name: String,
    pub role: Role,
    /// Spending limit per calendar month (UTC), USD; none when absent.
    #[serde(with = "rust_decimal::serde::str_option")]
    #[schema(value_type = Option<String>, example = "25.00")]
    pub monthly_budget_usd: Option<Decimal>,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Clone)]
pub struct NewUser {
    pub name: String,
    pub role: Role,
    pub monthly_budget_usd: Option<Decimal>,
}

/// A change to a user; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct UserChange {
    pub name: Option<String>,
    pub role: Option<Role>,
    /// `Some(None)` removes the budget.
    pub monthly_budget_usd: Option<Option<Decimal>>,
}

/// Condition: the profile exists and is not being deleted.
pub(crate) fn alive() -> Condition {
    Condition::And(vec![
        Condition::Exists,
        Condition::AttrNotExists(DELETING.into()),
    ])
}

/// Writes `ops` in one transaction that also checks that `owner` is alive,
/// so nothing new is created for a user who is gone or being deleted.
/// `refused(i)` names what a failed condition of `ops[i]` means; any other
/// failed condition means the user is gone.
pub(crate) async fn write_owned(
    store: &dyn ItemStore,
    owner: &str,
    ops: Vec<TxOp>,
    refused: impl Fn(usize) -> Option<Error>,
) -> Result<()> {
    let mut all = Vec::with_capacity(ops.len() + 1);
    all.push(TxOp::Check {
        key: profile_key(owner),
        condition: alive(),
    });
    all.extend(ops);
    match store.transact(all).await {
        Ok(()) => Ok(()),
        Err(StoreError::TransactionCancelled { failed }) => Err(failed
            .iter()
            .filter_map(|&i| i.checked_sub(1))
            .find_map(refused)
            .unwrap_or(Error::NotFound("user"))),
        Err(e) if e.is_condition_failure() => Err(Error::NotFound("user")),
        Err(e) => Err(e.into()),
    }
}

fn to_items(user: &User) -> (Item, Item) {
    let mut profile = Item::new(profile_key(&user.id))
        .with("name", user.name.as_str())
        .with("role", user.role.as_str())
        .with("created_at", user.created_at.as_str())
        .with("updated_at", user.updated_at.as_str());
    if let Some(budget) = user.monthly_budget_usd {
        profile = profile.with("monthly_budget_usd", budget);
    }
    let mut listing = profile.clone();
    listing.key = listing_key(&user.id);
    (profile, listing)
}

fn from_item(id: &str, item: &Item) -> Result<User> {
    let role = text(item, "role")?;
    Ok(User {
        id: id.to_owned(),
        name: text(item, "name")?,
        role: Role::parse(&role)
            .ok_or_else(|| Error::Internal(format!("user {id} has role {role:?}")))?,
        monthly_budget_usd: opt_decimal(item, "monthly_budget_usd"),
        created_at: text(item, "created_at")?,
        updated_at: text(item, "updated_at")?,
    })
}

pub async fn create(store: &dyn ItemStore, new: NewUser) -> Result<User> {
    let now = lambent_core::time::now_rfc3339();
    let user = User {
        id: ids::new_id(ID_PREFIX),
        name: new.name,
        role: new.role,
        monthly_budget_usd: new.monthly_budget_usd,
        created_at: now.clone(),
        updated_at: now,
    };
    create_with_id(store, &user).await?;
    Ok(user)
}

/// The user, unless absent or being deleted.
pub async fn get(store: &dyn ItemStore, user_id: &str) -> Result<Option<User>> {
    match store.get(&profile_key(user_id)).await? {
        Some(item) if item.get(DELETING).is_none() => Ok(Some(from_item(user_id, &item)?)),
        _ => Ok(None),
    }
}

pub async fn list(store: &dyn ItemStore, page: PageRequest) -> Result<Paged<User>> {
    super::page_of(
        store,
        Query::partition(LISTING_PK).prefix("USER#"),
        page,
        |item| from_item(super::id_after(item, "USER#")?, item),
    )
    .await
}

/// Changes the profile and its listing copy in one transaction. Only the
/// fields the change names are written, so concurrent changes of different
/// fields both land. Keys carry no copy of the role: the change reaches
/// every key with this one write.
pub async fn update(store: &dyn ItemStore, user_id: &str, change: UserChange) -> Result<User> {
    let Some(mut user) = get(store, user_id).await? else {
        return Err(Error::NotFound("user"));
    };
    user.updated_at = lambent_core::time::now_rfc3339();
    let mut update = Update::new().set("updated_at", user.updated_at.as_str());
    if let Some(name) = change.name {
        update = update.set("name", name.as_str());
        user.name = name;
    }
    if let Some(role) = change.role {
        update = update.set("role", role.as_str());
        user.role = role;
    }
    if let Some(budget) = change.monthly_budget_usd {
        update = match budget {
            Some(b) => update.set("monthly_budget_usd", b),
            None => update.remove("monthly_budget_usd"),
        };
        user.monthly_budget_usd = budget;
    }
    let result = store
        .transact(vec![
            TxOp::Update {
                key: profile_key(user_id),
                update: update.clone(),
                condition: Some(alive()),
            },
            TxOp::Update {
                key: listing_key(user_id),
                update,
                condition: Some(Condition::Exists),
            },
        ])
        .await;
    match result {
        Ok(()) => Ok(user),
        Err(e) if e.is_condition_failure() => Err(Error::NotFound("user")),
        Err(e) => Err(e.into()),
    }
}

/// Deletes the user and everything it owns. Its keys go first, so they fail
/// at once; then every other item of its partition with what it points to.
/// Safe to repeat after a crash: it resumes where it stopped.
pub async fn delete(store: &dyn ItemStore, user_id: &str) -> Result<()> {
    if user_id == BOOTSTRAP_ADMIN_USER {
        return Err(Error::BadRequest(
            "id: the bootstrap admin cannot be deleted".into(),
        ));
    }
    match store
        .update(
            &profile_key(user_id),
            Update::new().set(DELETING, true),
            Some(Condition::Exists),
        )
        .await
    {
        Ok(_) => {}
        Err(e) if e.is_condition_failure() => return Err(Error::NotFound("user")),
        Err(e) => return Err(e.into()),
    }
    cascade::delete_owned(store, &partition(user_id), &["KEY#", ""]).await?;
    store.delete(&listing_key(user_id), None).await?;
    store.delete(&profile_key(user_id), None).await?;
    Ok(())
}

/// The bootstrap admin's profile, created on the first use of its key.
pub async fn ensure_bootstrap_admin(store: &dyn ItemStore) -> Result<()> {
    let now = lambent_core::time::now_rfc3339();
    let admin = User {
        id: BOOTSTRAP_ADMIN_USER.to_owned(),
        name: "bootstrap admin".to_owned(),
        role: Role::Admin,
        monthly_budget_usd: None,
        created_at: now.clone(),
        updated_at: now,
    };
    match create_with_id(store, &admin).await {
        Ok(()) => Ok(()),
        Err(Error::Conflict(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

async fn create_with_id(store: &dyn ItemStore, user: &User) -> Result<()> {
    let (profile, listing) = to_items(user);
    let result = store
        .transact(vec![
            TxOp::Put {
                item: profile,
                condition: Some(Condition::NotExists),
            },
            TxOp::Put {
                item: listing,
                condition: Some(Condition::NotExists),
            },
        ])
        .await;
    match result {
        Err(e) if e.is_condition_failure() => Err(Error::Conflict("user exists".into())),
        other => Ok(other?),
    }
}
