//! A user's open streams, capped at `LAMBENT_MAX_STREAMS_PER_USER`: a
//! stream holds a slot ([`lambent_store::stream_slots`]), taken while its
//! call is prepared, until its last event, renewing the slot's lease while
//! it runs. A process that dies frees its slots when their leases run out,
//! within [`LEASE`].

use std::time::Duration;

use lambent_core::error::Result;
use lambent_store::stream_slots::{self, Slot};
use tracing::Instrument;

use crate::state::State;

/// How long a slot is held without a renewal.
pub const LEASE: Duration = Duration::from_secs(60);
/// How often a running stream renews its lease.
const RENEW_EVERY: Duration = Duration::from_secs(20);

/// A slot held for as long as this value lives; dropping it gives the slot
/// back.
pub struct StreamSlot {
    state: State,
    slot: Option<Slot>,
    renewing: Option<tokio::task::JoinHandle<()>>,
}

impl StreamSlot {
    /// Takes one of the user's stream slots, or answers 429
    /// `too_many_streams`. With no cap configured, holds nothing.
    pub async fn take(state: &State, user_id: &str) -> Result<StreamSlot> {
        let max = state.config.max_streams_per_user;
        if max == 0 {
            return Ok(StreamSlot {
                state: state.clone(),
                slot: None,
                renewing: None,
            });
        }
        let now = state.clock.now_millis();
        let slot = stream_slots::acquire(
            state.store.as_ref(),
            user_id,
            max,
            now,
            now + LEASE.as_millis() as i64,
        )
        .await?;
        let renewing = tokio::spawn(renew(state.clone(), slot.clone()).in_current_span());
        Ok(StreamSlot {
            state: state.clone(),
            slot: Some(slot),
            renewing: Some(renewing),
        })
    }
}

async fn renew(state: State, slot: Slot) {
    loop {
        tokio::time::sleep(RENEW_EVERY).await;
        let until = state.clock.now_millis() + LEASE.as_millis() as i64;
        if let Err(e) = stream_slots::renew(state.store.as_ref(), &slot, until).await {
            tracing::warn!(error = %e, "could not renew a stream slot's lease");
        }
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        if let Some(renewing) = self.renewing.take() {
            renewing.abort();
        }
        let Some(slot) = self.slot.take() else { return };
        let store = self.state.store.clone();
        // Released in the background: a drop cannot wait. If the process
        // ends first, the lease runs out instead.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(e) = stream_slots::release(store.as_ref(), &slot).await {
                    tracing::warn!(error = %e, "could not release a stream slot");
                }
            });
        }
    }
}
