//! Conditions and updates evaluated in memory, with DynamoDB's semantics, for
//! the embedded store. An expired item is passed in as `None` (absent).

use std::cmp::Ordering;

use lambent_ports::store::{Cmp, Condition, Item, Key, StoreError, StoreResult, Update, Value};

pub fn holds(condition: &Condition, item: Option<&Item>) -> bool {
    let attr = |name: &str| item.and_then(|i| i.attrs.get(name));
    match condition {
        Condition::NotExists => item.is_none(),
        Condition::Exists => item.is_some(),
        Condition::AttrNotExists(name) => attr(name).is_none(),
        Condition::AttrExists(name) => attr(name).is_some(),
        Condition::Compare(name, op, value) => attr(name).is_some_and(|a| compare(a, *op, value)),
        Condition::And(all) => all.iter().all(|c| holds(c, item)),
        Condition::Or(any) => any.iter().any(|c| holds(c, item)),
        Condition::Not(c) => !holds(c, item),
    }
}

/// DynamoDB compares values of the same type only: strings and binaries by
/// bytes, numbers by value. Values of different types are only "not equal".
fn compare(a: &Value, op: Cmp, b: &Value) -> bool {
    let ordering = match (a, b) {
        (Value::S(x), Value::S(y)) => Some(x.as_bytes().cmp(y.as_bytes())),
        (Value::N(x), Value::N(y)) => Some(x.cmp(y)),
        (Value::B(x), Value::B(y)) => Some(x.cmp(y)),
        _ => None,
    };
    match (op, ordering) {
        (Cmp::Eq, _) => a == b,
        (Cmp::Ne, _) => a != b,
        (_, None) => false,
        (Cmp::Lt, Some(o)) => o == Ordering::Less,
        (Cmp::Le, Some(o)) => o != Ordering::Greater,
        (Cmp::Gt, Some(o)) => o == Ordering::Greater,
        (Cmp::Ge, Some(o)) => o != Ordering::Less,
    }
}

/// The item after `update`, starting from `existing` (or an empty item).
pub fn apply(existing: Option<Item>, key: &Key, update: &Update) -> StoreResult<Item> {
    let mut item = existing.unwrap_or_else(|| Item::new(key.clone()));
    for (name, value) in &update.set {
        item.attrs.insert(name.clone(), value.clone());
    }
    for (name, value) in &update.set_if_absent {
        item.attrs
            .entry(name.clone())
            .or_insert_with(|| value.clone());
    }
    for name in &update.remove {
        item.attrs.remove(name);
    }
    for (name, by) in &update.add {
        let sum = match item.attrs.get(name) {
            None => *by,
            Some(Value::N(current)) => current
                .checked_add(*by)
                .ok_or_else(|| StoreError::Invalid(format!("ADD on {name:?} overflows")))?,
            Some(_) => {
                return Err(StoreError::Invalid(format!(
                    "ADD on {name:?}, which is not a number"
                )))
            }
        };
        item.attrs.insert(name.clone(), Value::N(sum));
    }
    if let Some(expiry) = update.expires_at {
        item.expires_at = expiry;
    }
    Ok(item)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal::Decimal;

    fn item() -> Item {
        Item::new(Key::new("p", "s"))
            .with("n", Decimal::new(15, 1))
            .with("s", "b")
    }

    #[test]
    fn comparisons_follow_dynamodb() {
        let i = item();
        assert!(holds(
            &Condition::cmp("n", Cmp::Ge, Decimal::new(15, 1)),
            Some(&i)
        ));
        assert!(!holds(
            &Condition::cmp("n", Cmp::Lt, Decimal::ONE),
            Some(&i)
        ));
        assert!(holds(&Condition::cmp("s", Cmp::Gt, "a"), Some(&i)));
        // Different types: never ordered, always "not equal".
        assert!(!holds(
            &Condition::cmp("s", Cmp::Gt, Decimal::ONE),
            Some(&i)
        ));
        assert!(holds(&Condition::cmp("s", Cmp::Ne, Decimal::ONE), Some(&i)));
        // An absent attribute fails every comparison, even "not equal".
        assert!(!holds(&Condition::cmp("x", Cmp::Ne, "a"), Some(&i)));
        assert!(holds(&Condition::NotExists, None));
        assert!(holds(&Condition::AttrNotExists("n".into()), None));
    }

    #[test]
    fn updates_add_exactly_and_refuse_non_numbers() {
        let key = Key::new("p", "s");
        let u = Update::new()
            .add("n", Decimal::new(1, 1))
            .add("fresh", Decimal::TWO);
        let out =
            apply(Some(item()), &key, &u).map(|i| (i.get_decimal("n"), i.get_decimal("fresh")));
        assert_eq!(
            out.ok(),
            Some((Some(Decimal::new(16, 1)), Some(Decimal::TWO)))
        );
        let bad = apply(Some(item()), &key, &Update::new().add("s", Decimal::ONE));
        assert!(matches!(bad, Err(StoreError::Invalid(_))));
    }
}
