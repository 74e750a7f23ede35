//! The per-process cache of API key records. A revoked key or a deleted user
//! stops working in this process at once (the revoking request evicts it) and
//! in every other process within the cache's lifetime
//! (`LAMBENT_AUTH_CACHE_SECS`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::repos::keys::KeyRecord;

/// Bound on entries, so a flood of distinct key IDs cannot grow memory.
const MAX_ENTRIES: usize = 10_000;

pub struct KeyCache {
    ttl: Duration,
    entries: Mutex<HashMap<String, (KeyRecord, Instant)>>,
}

impl KeyCache {
    pub fn new(ttl: Duration) -> KeyCache {
        KeyCache {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The record if it was read within the cache's lifetime. The caller
    /// still verifies the presented secret against its hash.
    pub fn get(&self, key_id: &str) -> Option<KeyRecord> {
        if self.ttl.is_zero() {
            return None;
        }
        let entries = self.entries.lock().ok()?;
        entries
            .get(key_id)
            .filter(|(_, at)| at.elapsed() < self.ttl)
            .map(|(record, _)| record.clone())
    }

    pub fn insert(&self, record: KeyRecord) {
        if self.ttl.is_zero() {
            return;
        }
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if entries.len() >= MAX_ENTRIES {
            let ttl = self.ttl;
            entries.retain(|_, (_, at)| at.elapsed() < ttl);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(record.key_id.clone(), (record, Instant::now()));
    }

    /// Forgets every key of a user (deleted, or its role changed).
    pub fn evict_user(&self, user_id: &str) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.retain(|_, (record, _)| record.user_id != user_id);
        }
    }

    pub fn evict(&self, key_id: &str) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.remove(key_id);
        }
    }
}
