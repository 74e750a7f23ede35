//! Who is calling: API keys, roles and the per-process key cache. The same
//! [`Identity::authenticate`] runs in the API Gateway authorizer, inside every
//! function's router (axum middleware), and in `lambent serve`.

mod cache;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OnceCell;

use crate::bootstrap;
use lambent_core::error::Error;
use lambent_core::secret::SecretString;
use lambent_ports::{ItemStore, Secrets};
use lambent_store::keys;
use lambent_store::users;

pub use cache::{KeyCache, KeyHolder};
use lambent_core::api_key;
pub use lambent_core::auth::{Principal, Role, BOOTSTRAP_ADMIN_USER};

/// Server-side secrets derived from the deployment's root secret.
pub struct ServerKeys {
    /// Keys the stored hashes of API keys.
    pub api_key_hash: [u8; 32],
    /// Seals pagination cursors.
    pub cursor: [u8; 32],
    /// The bootstrap admin key.
    pub admin_key: SecretString,
}

impl ServerKeys {
    pub fn derive(root: &SecretString) -> ServerKeys {
        ServerKeys {
            api_key_hash: bootstrap::derive(root, "lambent/v1/api-key-hash"),
            cursor: bootstrap::derive(root, "lambent/v1/cursor"),
            admin_key: bootstrap::admin_api_key(root),
        }
    }
}

/// Authentication for one process: the derived keys (loaded once from the
/// secrets port) and the short-lived cache of key records.
pub struct Identity {
    secrets: Arc<dyn Secrets>,
    keys: OnceCell<Arc<ServerKeys>>,
    cache: KeyCache,
    bootstrap_admin_ready: OnceCell<()>,
}

impl Identity {
    pub fn new(secrets: Arc<dyn Secrets>, cache_ttl: Duration) -> Identity {
        Identity {
            secrets,
            keys: OnceCell::new(),
            cache: KeyCache::new(cache_ttl),
            bootstrap_admin_ready: OnceCell::new(),
        }
    }

    /// The derived keys; the root secret is read once per process.
    pub async fn keys(&self) -> Result<Arc<ServerKeys>, Error> {
        self.keys
            .get_or_try_init(|| async {
                let root = bootstrap::signing_key(self.secrets.as_ref()).await?;
                Ok::<_, Error>(Arc::new(ServerKeys::derive(&root)))
            })
            .await
            .cloned()
    }

    pub fn cache(&self) -> &KeyCache {
        &self.cache
    }

    /// Checks an `Authorization` header value. Every failure is the same 401:
    /// a caller learns nothing about which part was wrong.
    pub async fn authenticate(
        &self,
        store: &dyn ItemStore,
        authorization: Option<&str>,
    ) -> Result<Principal, Error> {
        let raw = authorization
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or(Error::Unauthenticated)?;
        let presented = api_key::parse(raw).ok_or(Error::Unauthenticated)?;
        let keys = self.keys().await?;

        if presented.key_id == bootstrap::ADMIN_KEY_ID {
            if !api_key::same_key(raw, &keys.admin_key) {
                return Err(Error::Unauthenticated);
            }
            self.ensure_bootstrap_admin(store).await?;
            return Ok(Principal {
                user_id: BOOTSTRAP_ADMIN_USER.to_owned(),
                key_id: bootstrap::ADMIN_KEY_ID.to_owned(),
                role: Role::Admin,
            });
        }

        let holder = match self.cache.get(presented.key_id) {
            Some(holder) => holder,
            None => {
                let holder = key_holder(store, presented.key_id).await?;
                self.cache.insert(holder.clone());
                holder
            }
        };
        if !api_key::verify(&keys.api_key_hash, &presented, &holder.key.hash) {
            return Err(Error::Unauthenticated);
        }
        Ok(Principal {
            user_id: holder.key.user_id,
            key_id: holder.key.key_id,
            role: holder.role,
        })
    }

    /// The bootstrap admin acts as a real user, so it can own keys and
    /// providers like anyone else. Its profile is created on first use.
    async fn ensure_bootstrap_admin(&self, store: &dyn ItemStore) -> Result<(), Error> {
        self.bootstrap_admin_ready
            .get_or_try_init(|| users::ensure_bootstrap_admin(store))
            .await
            .map(|_| ())
    }
}

/// A key and the role its owner has now. The role is read from the owner's
/// profile, never copied into the key, so a demotion or a deletion (which
/// marks the profile first) is obeyed by every key of the user at once; a
/// key whose owner is gone or being deleted does not authenticate.
async fn key_holder(store: &dyn ItemStore, key_id: &str) -> Result<KeyHolder, Error> {
    let key = keys::lookup(store, key_id)
        .await?
        .ok_or(Error::Unauthenticated)?;
    let owner = users::get(store, &key.user_id)
        .await?
        .ok_or(Error::Unauthenticated)?;
    Ok(KeyHolder {
        key,
        role: owner.role,
    })
}
