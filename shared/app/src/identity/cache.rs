//! The per-process cache of API key records. A revoked key or a deleted user
//! stops working in this process at once (the revoking request evicts it) and
//! in every other process within the cache's lifetime
//! (`LAMBENT_AUTH_CACHE_SECS`).

use std::time::Duration;

use lambent_core::ttl_cache::TtlCache;
use lambent_store::keys::KeyRecord;

/// A key record with its owner's role as read with it.
#[derive(Debug, Clone)]
pub struct KeyHolder {
    pub key: KeyRecord,
    pub role: lambent_core::auth::Role,
}

/// Key holders by key ID.
pub struct KeyCache {
    entries: TtlCache<String, KeyHolder>,
}

impl KeyCache {
    pub fn new(ttl: Duration) -> KeyCache {
        KeyCache {
            entries: TtlCache::new(ttl),
        }
    }

    /// The record if it was read within the cache's lifetime. The caller
    /// still verifies the presented secret against its hash.
    pub fn get(&self, key_id: &str) -> Option<KeyHolder> {
        self.entries.get(&key_id.to_owned())
    }

    pub fn insert(&self, holder: KeyHolder) {
        self.entries.insert(holder.key.key_id.clone(), holder);
    }

    /// Forgets every key of a user (deleted, or its role changed).
    pub fn evict_user(&self, user_id: &str) {
        self.entries
            .evict_where(|_, holder| holder.key.user_id == user_id);
    }

    pub fn evict(&self, key_id: &str) {
        self.entries.remove(&key_id.to_owned());
    }
}
