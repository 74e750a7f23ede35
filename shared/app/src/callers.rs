//! What a model call reads about its caller before it starts, kept briefly
//! per process (as long as the key cache, `LAMBENT_AUTH_CACHE_SECS`), so a
//! warm turn's only store round trip before its provider request is its
//! history page:
//!
//! - a session's agent and budget, which never change (a session has no
//!   update). A session deleted elsewhere meanwhile is caught by the write of
//!   the turn's input, which requires the session; the call is then counted
//!   without it, as a call whose session went during it;
//! - a user's monthly limit. A change made in another process is obeyed
//!   within the cache's lifetime, as a change of role is; the limit itself
//!   is enforced by the reservation's conditional write, never by this copy.

use std::time::Duration;

use rust_decimal::Decimal;

use lambent_core::error::{Error, Result};
use lambent_core::ttl_cache::TtlCache;
use lambent_ports::ItemStore;
use lambent_store::sessions::{self, Session};
use lambent_store::users;

pub struct Callers {
    sessions: TtlCache<(String, String), Session>,
    monthly_limits: TtlCache<String, Option<Decimal>>,
}

impl Callers {
    pub fn new(ttl: Duration) -> Callers {
        Callers {
            sessions: TtlCache::new(ttl),
            monthly_limits: TtlCache::new(ttl),
        }
    }

    /// `owner`'s session `session_id`, or 404.
    pub async fn session(
        &self,
        store: &dyn ItemStore,
        owner: &str,
        session_id: &str,
    ) -> Result<Session> {
        let key = (owner.to_owned(), session_id.to_owned());
        if let Some(session) = self.sessions.get(&key) {
            return Ok(session);
        }
        let session = sessions::get(store, owner, session_id)
            .await?
            .ok_or(Error::NotFound("session"))?;
        self.sessions.insert(key, session.clone());
        Ok(session)
    }

    /// `owner`'s monthly spending limit (none when unset), or 404 for a
    /// user that is gone.
    pub async fn monthly_limit(
        &self,
        store: &dyn ItemStore,
        owner: &str,
    ) -> Result<Option<Decimal>> {
        if let Some(limit) = self.monthly_limits.get(&owner.to_owned()) {
            return Ok(limit);
        }
        let user = users::get(store, owner)
            .await?
            .ok_or(Error::NotFound("user"))?;
        self.monthly_limits
            .insert(owner.to_owned(), user.monthly_budget_usd);
        Ok(user.monthly_budget_usd)
    }

    /// Forgets a deleted session.
    pub fn evict_session(&self, owner: &str, session_id: &str) {
        self.sessions
            .remove(&(owner.to_owned(), session_id.to_owned()));
    }

    /// Forgets what is kept of a user changed or deleted in this process.
    pub fn evict_user(&self, owner: &str) {
        self.monthly_limits.remove(&owner.to_owned());
        self.sessions.evict_where(|(o, _), _| o == owner);
    }
}
