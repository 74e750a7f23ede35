//! Spending limits: `budget_usd` on a session and `monthly_budget_usd` on a
//! user. Each counts `committed_usd`: what was spent plus what calls in
//! flight have reserved. A call reserves its worst case before it starts,
//! with one conditional ADD per limit (`committed_usd <= limit - worst case`,
//! the right side computed here because DynamoDB conditions cannot add), all
//! in one transaction; it settles to its real cost when it ends. So
//! concurrent calls cannot pass a limit together: each sees the others'
//! reservations.
//!
//! A user's month is the item `USER#<owner>/BUDGET#<yyyy-mm>`, written by
//! every call (with or without a limit) so that a limit set mid-month counts
//! what was already spent.

use rust_decimal::Decimal;

use super::ledger;
use super::sessions::{self, Session};
use super::users;
use lambent_core::error::{Error, Result};
use lambent_ports::{Cmp, Condition, ItemStore, Key, StoreError, TxOp, Update};

/// Month items outlive their month by a year, for reference.
const MONTH_RETENTION_SECS: i64 = 400 * 86_400;

pub fn month_key(owner: &str, month: &str) -> Key {
    Key::new(users::partition(owner), format!("BUDGET#{month}"))
}

pub use super::ledger::Reservation;

fn within(limit: Decimal, worst: Decimal) -> Condition {
    Condition::cmp("committed_usd", Cmp::Le, limit - worst)
}

fn refused(what: &str, limit: Decimal, worst: Decimal) -> Error {
    Error::BudgetExceeded(format!(
        "{what} budget of {limit} USD would be exceeded: this call may cost up to {worst} USD \
         (its prompt plus max_tokens of output)"
    ))
}

/// Reserves `worst` USD under every limit that applies, or refuses the call
/// with 429 `budget_exceeded`: one conditional update per limit and the
/// call's ledger entry (with `bill`, the call's bill as JSON, made for the
/// reservation), in one transaction.
#[allow(clippy::too_many_arguments)]
pub async fn reserve(
    store: &dyn ItemStore,
    call_id: &str,
    owner: &str,
    month: &str,
    user_limit: Option<Decimal>,
    session: Option<&Session>,
    worst: Decimal,
    now_ms: i64,
    bill: impl FnOnce(&Reservation) -> String,
) -> Result<Reservation> {
    let mut reservation = Reservation::none(call_id, owner, month);
    let mut ops = Vec::new();
    let mut limits = Vec::new();
    if let Some(limit) = user_limit {
        if worst > limit {
            return Err(refused("the monthly", limit, worst));
        }
        ops.push(TxOp::Update {
            key: month_key(owner, month),
            update: Update::new()
                .add("committed_usd", worst)
                .expire_at(Some(now_ms / 1_000 + MONTH_RETENTION_SECS)),
            condition: Some(Condition::Or(vec![
                Condition::AttrNotExists("committed_usd".into()),
                within(limit, worst),
            ])),
        });
        limits.push(("the monthly", limit));
        reservation.month_amount = worst;
    }
    if let Some(session) = session {
        if let Some(limit) = session.budget_usd {
            if worst > limit {
                return Err(refused("the session's", limit, worst));
            }
            ops.push(TxOp::Update {
                key: sessions::item_key(owner, &session.id),
                update: Update::new().add("committed_usd", worst),
                condition: Some(Condition::And(vec![sessions::live(), within(limit, worst)])),
            });
            limits.push(("the session's", limit));
            reservation.session = Some((session.id.clone(), worst));
        }
    }
    if ops.is_empty() {
        return Ok(reservation);
    }
    ops.push(TxOp::Put {
        item: ledger::reserved_entry(&reservation, &bill(&reservation), now_ms),
        condition: Some(Condition::NotExists),
    });
    match store.transact(ops).await {
        Ok(()) => Ok(reservation),
        Err(StoreError::TransactionCancelled { failed }) => {
            let (what, limit) = failed
                .first()
                .and_then(|i| limits.get(*i))
                .copied()
                .unwrap_or(("a", Decimal::ZERO));
            Err(refused(what, limit, worst))
        }
        Err(e) => Err(e.into()),
    }
}

/// The user's month settled from the reservation to `actual`; the session's
/// share is settled by the session's own update (one op per item).
pub fn settle_month_op(reservation: &Reservation, actual: Decimal) -> TxOp {
    TxOp::Update {
        key: month_key(&reservation.owner, &reservation.month),
        update: Update::new()
            .add("committed_usd", actual - reservation.month_amount)
            .add("spent_usd", actual)
            .expire_at(Some(
                lambent_core::time::now_epoch_secs() + MONTH_RETENTION_SECS,
            )),
        condition: None,
    }
}

/// Gives a reservation back when its call never reached the provider, and
/// consumes its ledger entry in the same transaction: a reservation is
/// settled or released once, whoever tries.
pub async fn release(store: &dyn ItemStore, reservation: &Reservation) -> Result<()> {
    give_back(store, reservation, ledger::present()).await
}

/// Gives back the reservation of a call that never reported an outcome
/// (its process died): the sweeper's release of an old ledger entry.
pub async fn release_abandoned(store: &dyn ItemStore, reservation: &Reservation) -> Result<()> {
    give_back(store, reservation, ledger::abandoned()).await
}

async fn give_back(
    store: &dyn ItemStore,
    reservation: &Reservation,
    entry_condition: Condition,
) -> Result<()> {
    if !reservation.holds() {
        // Nothing held; the entry a session turn wrote with its message
        // goes (if it is still there as it was).
        return match store
            .delete(
                &ledger::entry_key(&reservation.call_id),
                Some(entry_condition),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.is_condition_failure() => Ok(()),
            Err(e) => Err(e.into()),
        };
    }
    let mut with_session = true;
    loop {
        let mut ops = vec![TxOp::Delete {
            key: ledger::entry_key(&reservation.call_id),
            condition: Some(entry_condition.clone()),
        }];
        if !reservation.month_amount.is_zero() {
            ops.push(TxOp::Update {
                key: month_key(&reservation.owner, &reservation.month),
                update: Update::new().add("committed_usd", -reservation.month_amount),
                condition: None,
            });
        }
        if let (Some((session, amount)), true) = (&reservation.session, with_session) {
            ops.push(TxOp::Update {
                key: sessions::item_key(&reservation.owner, session),
                update: Update::new().add("committed_usd", -*amount),
                condition: Some(sessions::live()),
            });
        }
        match super::transact_retrying(store, ops).await {
            Ok(()) => return Ok(()),
            // Settled or released already.
            Err(StoreError::TransactionCancelled { failed }) if failed.contains(&0) => {
                return Ok(())
            }
            // The session went away meanwhile: nothing of it is left to
            // release, but the month's share still is.
            Err(e) if e.is_condition_failure() && with_session => with_session = false,
            Err(e) => return Err(e.into()),
        }
    }
}

/// The op that consumes a call's ledger entry in the transaction that
/// accounts for it. With a reservation held, the entry must still be
/// there (else the reservation was released, and the transaction must be
/// redone without it: [`Reservation::released`]); without one, it is the
/// settle intent if any, removed whatever it holds.
pub fn consume_entry_op(reservation: &Reservation) -> TxOp {
    TxOp::Delete {
        key: ledger::entry_key(&reservation.call_id),
        condition: reservation.holds().then(ledger::present),
    }
}
