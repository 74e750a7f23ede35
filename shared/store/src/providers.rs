//! Model providers: `USER#<owner>/PROVIDER#<id>`, plus `USER#<owner>/PROVNAME#<name>`
//! keeping names unique per owner (chat addresses `<provider name>/<model>`).
//! The provider's API key is stored only as key-cipher ciphertext (KMS in
//! AWS) under the encryption context `{owner, provider}`, so a ciphertext
//! copied onto another provider or owner does not decrypt.

use lambent_core::ids::{ProviderId, TypedId};
use serde::Serialize;

use super::users;
use super::{bytes, opt_text, text, whole, PageRequest, Paged};
use lambent_core::error::{Error, Result};
use lambent_core::ids;
use lambent_core::secret::{ExposeSecret, SecretString};
use lambent_ports::{
    Condition, EncryptionContext, Item, ItemStore, Key, KeyCipher, Query, TxOp, Update, Value,
};

pub const ID_PREFIX: &str = <ProviderId as TypedId>::PREFIX;

pub use lambent_core::provider::ProviderKind;

/// A provider as the API shows it: the key only as its last four characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Provider {
    pub id: String,
    pub kind: ProviderKind,
    pub name: String,
    pub base_url: Option<String>,
    pub api_key_last4: String,
    pub created_at: String,
    pub updated_at: String,
}

pub struct NewProvider {
    pub kind: ProviderKind,
    pub name: String,
    pub api_key: SecretString,
    /// Already checked by the SSRF guard.
    pub base_url: Option<String>,
}

#[derive(Default)]
pub struct ProviderChange {
    pub name: Option<String>,
    /// Rotates the key.
    pub api_key: Option<SecretString>,
    /// `Some(None)` returns to the kind's default URL.
    pub base_url: Option<Option<String>>,
}

fn item_key(owner: &str, id: &str) -> Key {
    Key::new(users::partition(owner), format!("PROVIDER#{id}"))
}

fn name_key(owner: &str, name: &str) -> Key {
    Key::new(users::partition(owner), format!("PROVNAME#{name}"))
}

/// The context a provider's key is encrypted under.
pub fn encryption_context(owner: &str, provider_id: &str) -> EncryptionContext {
    EncryptionContext::from([
        ("owner".to_owned(), owner.to_owned()),
        ("provider".to_owned(), provider_id.to_owned()),
    ])
}

/// The last four characters, shown to recognise a key. A key shorter than
/// 12 characters shows nothing: four would be too much of it.
fn last4(key: &SecretString) -> String {
    let chars: Vec<char> = key.expose_secret().chars().collect();
    if chars.len() < 12 {
        return String::new();
    }
    chars[chars.len().saturating_sub(4)..].iter().collect()
}

async fn encrypt(
    cipher: &dyn KeyCipher,
    owner: &str,
    id: &str,
    key: &SecretString,
) -> Result<Vec<u8>> {
    Ok(cipher
        .encrypt(
            key.expose_secret().as_bytes(),
            &encryption_context(owner, id),
        )
        .await?)
}

fn from_item(item: &Item) -> Result<Provider> {
    let kind = text(item, "kind")?;
    Ok(Provider {
        id: super::id_after(item, "PROVIDER#")?.to_owned(),
        kind: ProviderKind::parse(&kind)
            .ok_or_else(|| Error::Internal(format!("provider kind {kind:?}")))?,
        name: text(item, "name")?,
        base_url: opt_text(item, "base_url"),
        api_key_last4: text(item, "api_key_last4")?,
        created_at: text(item, "created_at")?,
        updated_at: text(item, "updated_at")?,
    })
}

fn name_taken(name: &str) -> Error {
    Error::Conflict(format!("name: a provider named {name:?} exists"))
}

pub async fn create(
    store: &dyn ItemStore,
    cipher: &dyn KeyCipher,
    owner: &str,
    new: NewProvider,
) -> Result<Provider> {
    let id = ids::new_id(ID_PREFIX);
    let ciphertext = encrypt(cipher, owner, &id, &new.api_key).await?;
    let now = lambent_core::time::now_rfc3339();
    let provider = Provider {
        id: id.clone(),
        kind: new.kind,
        name: new.name,
        base_url: new.base_url,
        api_key_last4: last4(&new.api_key),
        created_at: now.clone(),
        updated_at: now,
    };
    let mut item = Item::new(item_key(owner, &id))
        .with("kind", provider.kind.as_str())
        .with("name", provider.name.as_str())
        .with("api_key_ciphertext", Value::B(ciphertext))
        .with("api_key_last4", provider.api_key_last4.as_str())
        .with("created_at", provider.created_at.as_str())
        .with("updated_at", provider.updated_at.as_str())
        .with("version", 1i64);
    if let Some(url) = &provider.base_url {
        item = item.with("base_url", url.as_str());
    }
    let ops = vec![
        TxOp::Put {
            item,
            condition: Some(Condition::NotExists),
        },
        TxOp::Put {
            item: Item::new(name_key(owner, &provider.name)).with("provider_id", id.as_str()),
            condition: Some(Condition::NotExists),
        },
    ];
    users::write_owned(store, owner, ops, |failed| {
        (failed == 1).then(|| name_taken(&provider.name))
    })
    .await?;
    Ok(provider)
}

pub async fn get(store: &dyn ItemStore, owner: &str, id: &str) -> Result<Option<Provider>> {
    match store.get(&item_key(owner, id)).await? {
        Some(item) => Ok(Some(from_item(&item)?)),
        None => Ok(None),
    }
}

/// The provider named `name` of `owner`.
pub async fn find_by_name(
    store: &dyn ItemStore,
    owner: &str,
    name: &str,
) -> Result<Option<Provider>> {
    let Some(lock) = store.get(&name_key(owner, name)).await? else {
        return Ok(None);
    };
    get(store, owner, &text(&lock, "provider_id")?).await
}

pub async fn list(
    store: &dyn ItemStore,
    owner: &str,
    page: PageRequest,
) -> Result<Paged<Provider>> {
    super::page_of(
        store,
        Query::partition(users::partition(owner)).prefix("PROVIDER#"),
        page,
        from_item,
    )
    .await
}

pub async fn update(
    store: &dyn ItemStore,
    cipher: &dyn KeyCipher,
    owner: &str,
    id: &str,
    change: ProviderChange,
) -> Result<Provider> {
    let key = item_key(owner, id);
    let Some(item) = store.get(&key).await? else {
        return Err(Error::NotFound("provider"));
    };
    let version = whole(&item, "version")?;
    let mut provider = from_item(&item)?;
    let mut update = Update::new().add("version", 1.into());
    let mut ops = Vec::new();

    if let Some(name) = change.name.filter(|n| *n != provider.name) {
        ops.push(TxOp::Delete {
            key: name_key(owner, &provider.name),
            condition: None,
        });
        ops.push(TxOp::Put {
            item: Item::new(name_key(owner, &name)).with("provider_id", id),
            condition: Some(Condition::NotExists),
        });
        update = update.set("name", name.as_str());
        provider.name = name;
    }
    if let Some(api_key) = change.api_key {
        let ciphertext = encrypt(cipher, owner, id, &api_key).await?;
        provider.api_key_last4 = last4(&api_key);
        update = update
            .set("api_key_ciphertext", Value::B(ciphertext))
            .set("api_key_last4", provider.api_key_last4.as_str());
    }
    if let Some(base_url) = change.base_url {
        update = match &base_url {
            Some(url) => update.set("base_url", url.as_str()),
            None => update.remove("base_url"),
        };
        provider.base_url = base_url;
    }
    provider.updated_at = lambent_core::time::now_rfc3339();
    update = update.set("updated_at", provider.updated_at.as_str());
    let new_name_op = ops.len().checked_sub(1);
    ops.insert(
        0,
        TxOp::Update {
            key,
            update,
            condition: Some(Condition::eq("version", version)),
        },
    );
    match store.transact(ops).await {
        Ok(()) => Ok(provider),
        Err(lambent_ports::StoreError::TransactionCancelled { failed })
            if new_name_op.is_some_and(|i| failed.contains(&(i + 1))) =>
        {
            Err(name_taken(&provider.name))
        }
        Err(e) if e.is_condition_failure() => Err(Error::Conflict(
            "the provider changed meanwhile; read it again".into(),
        )),
        Err(e) => Err(e.into()),
    }
}

pub async fn delete(store: &dyn ItemStore, owner: &str, id: &str) -> Result<()> {
    let Some(provider) = get(store, owner, id).await? else {
        return Err(Error::NotFound("provider"));
    };
    store
        .transact(vec![
            TxOp::Delete {
                key: item_key(owner, id),
                condition: Some(Condition::Exists),
            },
            TxOp::Delete {
                key: name_key(owner, &provider.name),
                condition: None,
            },
        ])
        .await
        .map_err(|e| match e.is_condition_failure() {
            true => Error::NotFound("provider"),
            false => e.into(),
        })
}

/// The provider and its API key in plain text, for the one place that calls
/// the model: one read and one decryption. Never log or return the key.
pub async fn with_api_key(
    store: &dyn ItemStore,
    cipher: &dyn KeyCipher,
    owner: &str,
    id: &str,
) -> Result<Option<(Provider, SecretString)>> {
    let Some(item) = store.get(&item_key(owner, id)).await? else {
        return Ok(None);
    };
    let plain = cipher
        .decrypt(
            &bytes(&item, "api_key_ciphertext")?,
            &encryption_context(owner, id),
        )
        .await?;
    let key = String::from_utf8(plain)
        .map(SecretString::from)
        .map_err(|_| Error::Internal(format!("provider {id}: key is not UTF-8")))?;
    Ok(Some((from_item(&item)?, key)))
}

/// The provider's API key in plain text. Never log or return it.
pub async fn decrypt_api_key(
    store: &dyn ItemStore,
    cipher: &dyn KeyCipher,
    owner: &str,
    id: &str,
) -> Result<SecretString> {
    match with_api_key(store, cipher, owner, id).await? {
        Some((_, key)) => Ok(key),
        None => Err(Error::NotFound("provider")),
    }
}
