//! Who is calling: API keys, roles and the per-process key cache. The same
//! [`Identity::authenticate`] runs in the API Gateway authorizer, inside every
//! function's router (axum middleware), and in `lambent serve`.

mod cache;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, OnceCell};

use crate::bootstrap::{self, Derived, Roots};
use crate::config::Config;
use lambent_core::error::Error;
use lambent_core::secret::SecretString;
use lambent_ports::{ItemStore, Secrets};
use lambent_store::keys;
use lambent_store::users;

pub use cache::{KeyCache, KeyHolder};
use lambent_core::api_key::{self, PresentedKey, Verified};
pub use lambent_core::auth::{Principal, Role, BOOTSTRAP_ADMIN_USER};
use std::borrow::Cow;

/// Server-side secrets derived from the deployment's root secret, current
/// and previous (see `docs/SECRETS.md`).
pub struct ServerKeys {
    /// The HMAC keys legacy API-key hashes verify under: the current root's,
    /// then the previous one's.
    pub legacy_api_key_hash: Derived,
    /// Seals pagination cursors (current) and opens them (either).
    pub cursor: Derived,
    /// The bootstrap admin key, from the current root only (a rotation
    /// revokes the old one); `None` when it is switched off
    /// (`LAMBENT_BOOTSTRAP_ADMIN=off`).
    pub admin_key: Option<SecretString>,
    /// Whether the previous root was read for these keys. When it was not,
    /// the `previous` subkeys are `None` for want of reading, not because
    /// no previous root is kept: what fails under the current subkeys is
    /// checked again under [`Identity::keys_with_previous`].
    pub with_previous: bool,
}

impl ServerKeys {
    /// The keys under both roots as read.
    pub fn derive(roots: &Roots, bootstrap_admin: bool) -> ServerKeys {
        ServerKeys {
            legacy_api_key_hash: Derived::of(roots, "lambent/v1/api-key-hash"),
            cursor: Derived::of(roots, "lambent/v1/cursor"),
            admin_key: bootstrap_admin.then(|| bootstrap::admin_api_key(&roots.current)),
            with_previous: true,
        }
    }

    /// The keys under the current root only (the previous one not read).
    pub fn derive_current(current: SecretString, bootstrap_admin: bool) -> ServerKeys {
        let roots = Roots {
            current,
            previous: None,
        };
        ServerKeys {
            with_previous: false,
            ..ServerKeys::derive(&roots, bootstrap_admin)
        }
    }
}

/// When the root secret cannot be read as the keys fall due, the keys in
/// hand are kept and the read is tried again after this long.
const RETRY_UNREADABLE: Duration = Duration::from_secs(5);

/// Derived keys in hand, and when the root secret is next read.
struct Loaded {
    keys: Arc<ServerKeys>,
    due: Instant,
}

/// Authentication for one process: the derived keys (re-read from the
/// secrets port once they are older than the secret cache time, so a
/// rotation reaches every process within it) and the short-lived cache of
/// key records.
pub struct Identity {
    secrets: Arc<dyn Secrets>,
    /// How long derived keys are used before the root secret is read again.
    secret_cache: Duration,
    /// Whether the bootstrap admin key authenticates at all.
    bootstrap_admin: bool,
    loaded: RwLock<Option<Loaded>>,
    /// One reader of the root secret at a time; the others wait for it.
    reading: Mutex<()>,
    /// Set once something needed the previous root: from then on it is read
    /// with the current one. Until then only the current root is read (one
    /// read at start instead of two: docs/PERFORMANCE.md).
    wants_previous: AtomicBool,
    cache: KeyCache,
    bootstrap_admin_ready: OnceCell<()>,
}

impl Identity {
    /// An identity configured as `config` says: the key cache's lifetime
    /// (`LAMBENT_AUTH_CACHE_SECS`), the secret's (`LAMBENT_SECRET_CACHE_SECS`)
    /// and whether the bootstrap admin key works (`LAMBENT_BOOTSTRAP_ADMIN`).
    pub fn for_config(secrets: Arc<dyn Secrets>, config: &Config) -> Identity {
        Identity {
            secrets,
            secret_cache: config.secret_cache,
            bootstrap_admin: config.bootstrap_admin,
            loaded: RwLock::new(None),
            reading: Mutex::new(()),
            wants_previous: AtomicBool::new(false),
            cache: KeyCache::new(config.auth_cache),
            bootstrap_admin_ready: OnceCell::new(),
        }
    }

    /// The derived keys. The root secret is read on first use and again
    /// once the secret cache time has passed; if it cannot be read then,
    /// the keys in hand are kept (and the read retried shortly) rather than
    /// failing every request. Only the current root is read until something
    /// has needed the previous one ([`Identity::keys_with_previous`]); then
    /// both are, at once.
    pub async fn keys(&self) -> Result<Arc<ServerKeys>, Error> {
        self.load(false).await
    }

    /// The derived keys under the current root and the previous one: for
    /// what failed under [`Identity::keys`]'s keys when they were read
    /// without the previous root (`with_previous` false). Reads both roots
    /// (at once) unless the keys in hand have both.
    pub async fn keys_with_previous(&self) -> Result<Arc<ServerKeys>, Error> {
        self.wants_previous.store(true, Ordering::Relaxed);
        self.load(true).await
    }

    async fn load(&self, previous: bool) -> Result<Arc<ServerKeys>, Error> {
        let usable = |keys: &Arc<ServerKeys>| !previous || keys.with_previous;
        if let Some(keys) = self.in_hand(true).filter(usable) {
            return Ok(keys);
        }
        let _reading = self.reading.lock().await;
        // Another task may have read it while this one waited.
        if let Some(keys) = self.in_hand(true).filter(usable) {
            return Ok(keys);
        }
        let secrets = self.secrets.as_ref();
        let read = if previous || self.wants_previous.load(Ordering::Relaxed) {
            bootstrap::roots(secrets)
                .await
                .map(|roots| ServerKeys::derive(&roots, self.bootstrap_admin))
        } else {
            bootstrap::signing_key(secrets)
                .await
                .map(|current| ServerKeys::derive_current(current, self.bootstrap_admin))
        };
        match read {
            Ok(keys) => {
                let keys = Arc::new(keys);
                self.hold(keys.clone(), self.secret_cache);
                Ok(keys)
            }
            Err(e) => {
                // Keys not yet due (only the previous root was wanted): kept
                // as they are.
                if let Some(keys) = self.in_hand(true) {
                    tracing::warn!(error = %e, "root secret unreadable; the previous root is not read");
                    return Ok(keys);
                }
                match self.in_hand(false) {
                    Some(keys) => {
                        tracing::warn!(error = %e, "root secret unreadable; keeping the keys in hand");
                        self.hold(keys.clone(), RETRY_UNREADABLE.min(self.secret_cache));
                        Ok(keys)
                    }
                    None => Err(e.into()),
                }
            }
        }
    }

    /// The keys in hand; only if not yet due when `fresh`.
    fn in_hand(&self, fresh: bool) -> Option<Arc<ServerKeys>> {
        let loaded = self.loaded.read().unwrap_or_else(|e| e.into_inner());
        loaded
            .as_ref()
            .filter(|l| !fresh || Instant::now() < l.due)
            .map(|l| l.keys.clone())
    }

    fn hold(&self, keys: Arc<ServerKeys>, for_: Duration) {
        let mut loaded = self.loaded.write().unwrap_or_else(|e| e.into_inner());
        *loaded = Some(Loaded {
            keys,
            due: Instant::now() + for_,
        });
    }

    pub fn cache(&self) -> &KeyCache {
        &self.cache
    }

    /// Checks the key a request's headers present ([`presented_authorization`]).
    pub async fn authenticate_headers(
        &self,
        store: &dyn ItemStore,
        headers: &http::HeaderMap,
    ) -> Result<Principal, Error> {
        self.authenticate(store, presented_authorization(headers).as_deref())
            .await
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
            // Switched off, or not the current root's: the same 401.
            let admin_key = keys.admin_key.as_ref().ok_or(Error::Unauthenticated)?;
            if !api_key::same_key(raw, admin_key) {
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
        let mut verified = api_key::verify(
            &presented,
            &holder.key.hash,
            keys.legacy_api_key_hash.iter(),
        );
        // A legacy hash may be the previous root's, which was not read.
        if verified.is_none() && !keys.with_previous && is_legacy_form(&holder.key.hash) {
            let keys = self.keys_with_previous().await?;
            verified = api_key::verify(
                &presented,
                &holder.key.hash,
                keys.legacy_api_key_hash.iter(),
            );
        }
        match verified {
            None => return Err(Error::Unauthenticated),
            Some(Verified::Stored) => {}
            Some(Verified::Legacy) => self.upgrade(store, &holder, &presented).await,
        }
        Ok(Principal {
            user_id: holder.key.user_id,
            key_id: holder.key.key_id,
            role: holder.role,
        })
    }

    /// Re-hashes a key that verified against a legacy keyed hash to the
    /// stored form, which no rotation affects. The write is conditional on
    /// the old hash; a failed one changes nothing (the key still
    /// authenticated) and is tried again on the key's next use.
    async fn upgrade(
        &self,
        store: &dyn ItemStore,
        holder: &KeyHolder,
        presented: &PresentedKey<'_>,
    ) {
        let new = api_key::stored_hash(presented.key_id, presented.secret);
        match keys::upgrade_hash(store, &holder.key.key_id, &holder.key.hash, &new).await {
            Ok(true) => {
                let mut upgraded = holder.clone();
                upgraded.key.hash = new;
                self.cache.insert(upgraded);
            }
            // Upgraded by another process, or revoked: read it afresh next time.
            Ok(false) => self.cache.evict(&holder.key.key_id),
            Err(e) => tracing::warn!(
                key_id = %holder.key.key_id,
                error = %e,
                "legacy API key hash not upgraded; tried again on its next use"
            ),
        }
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

/// Whether a stored hash has the legacy keyed form ([`api_key::legacy_hash`]:
/// an HMAC-SHA256, 32 bytes; the stored form is a version byte and 32).
fn is_legacy_form(stored: &[u8]) -> bool {
    stored.len() == 32
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

/// The `Authorization` value a request presents: the header itself, or
/// `Bearer <key>` for a key sent alone in `x-api-key`, as Anthropic's clients
/// send it. The routes' middleware and the API Gateway authorizer read a
/// request's key through this one function.
pub fn presented_authorization(headers: &http::HeaderMap) -> Option<Cow<'_, str>> {
    match headers.get(http::header::AUTHORIZATION) {
        Some(value) => value.to_str().ok().map(Cow::Borrowed),
        None => headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .map(|key| Cow::Owned(format!("Bearer {key}"))),
    }
}
