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

use super::sessions::{self, Session};
use super::users;
use lambent_core::error::{Error, Result};
use lambent_ports::{Cmp, Condition, ItemStore, Key, StoreError, TxOp, Update};

/// Month items outlive their month by a year, for reference.
const MONTH_RETENTION_SECS: i64 = 400 * 86_400;

pub fn month_key(owner: &str, month: &str) -> Key {
    Key::new(users::partition(owner), format!("BUDGET#{month}"))
}

/// What a call holds until it settles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub owner: String,
    /// `yyyy-mm` the call counts in (the month it started).
    pub month: String,
    /// Reserved on the user's month.
    pub month_amount: Decimal,
    /// Reserved on the session (its ID and the amount).
    pub session: Option<(String, Decimal)>,
}

impl Reservation {
    /// Nothing reserved (no limit applies), for `owner` in `month`.
    pub fn none(owner: &str, month: &str) -> Reservation {
        Reservation {
            owner: owner.to_owned(),
            month: month.to_owned(),
            month_amount: Decimal::ZERO,
            session: None,
        }
    }

    /// The session's share of the reservation, if any.
    pub fn session_amount(&self) -> Decimal {
        self.session.as_ref().map_or(Decimal::ZERO, |(_, a)| *a)
    }
}

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
/// with 429 `budget_exceeded`. One conditional update per limit, all in one
/// transaction.
pub async fn reserve(
    store: &dyn ItemStore,
    owner: &str,
    month: &str,
    user_limit: Option<Decimal>,
    session: Option<&Session>,
    worst: Decimal,
) -> Result<Reservation> {
    let mut reservation = Reservation::none(owner, month);
    let mut ops = Vec::new();
    let mut limits = Vec::new();
    if let Some(limit) = user_limit {
        if worst > limit {
            return Err(refused("the monthly", limit, worst));
        }
        ops.push(TxOp::Update {
            key: month_key(owner, month),
            update: Update::new().add("committed_usd", worst).expire_at(Some(
                lambent_core::time::now_epoch_secs() + MONTH_RETENTION_SECS,
            )),
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
    // One limit is one conditional update: the same round trip as a
    // transaction, at half DynamoDB's write cost.
    if let [TxOp::Update {
        key,
        update,
        condition,
    }] = ops.as_slice()
    {
        return match store.update(key, update.clone(), condition.clone()).await {
            Ok(_) => Ok(reservation),
            Err(e) if e.is_condition_failure() => {
                let (what, limit) = limits[0];
                Err(refused(what, limit, worst))
            }
            Err(e) => Err(e.into()),
        };
    }
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

/// Gives a reservation back when its call never reached the provider.
pub async fn release(store: &dyn ItemStore, reservation: &Reservation) -> Result<()> {
    let mut ops = Vec::new();
    if !reservation.month_amount.is_zero() {
        ops.push(TxOp::Update {
            key: month_key(&reservation.owner, &reservation.month),
            update: Update::new().add("committed_usd", -reservation.month_amount),
            condition: None,
        });
    }
    if let Some((session, amount)) = &reservation.session {
        ops.push(TxOp::Update {
            key: sessions::item_key(&reservation.owner, session),
            update: Update::new().add("committed_usd", -*amount),
            condition: Some(sessions::live()),
        });
    }
    if ops.is_empty() {
        return Ok(());
    }
    match store.transact(ops).await {
        Ok(()) => Ok(()),
        // The session went away meanwhile: nothing of it is left to release,
        // but the month's share still is.
        Err(e) if e.is_condition_failure() => {
            if reservation.month_amount.is_zero() {
                return Ok(());
            }
            store
                .update(
                    &month_key(&reservation.owner, &reservation.month),
                    Update::new().add("committed_usd", -reservation.month_amount),
                    None,
                )
                .await?;
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}
