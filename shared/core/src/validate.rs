//! Checks of request fields beyond their types. Each error names its field.

use rust_decimal::Decimal;

use crate::error::Error;

fn bad(field: &str, why: impl std::fmt::Display) -> Error {
    Error::BadRequest(format!("{field}: {why}"))
}

/// A display name: trimmed, 1 to `max` characters, no control characters.
pub fn name(field: &str, raw: &str, max: usize) -> Result<String, Error> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(bad(field, "must not be empty"));
    }
    if trimmed.chars().count() > max {
        return Err(bad(field, format!("must be at most {max} characters")));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(bad(field, "must not contain control characters"));
    }
    Ok(trimmed.to_owned())
}

/// An identifier-like name (provider names, model names): letters, digits and
/// `-_.:`, 1 to `max` characters.
pub fn slug(field: &str, raw: &str, max: usize) -> Result<String, Error> {
    if raw.is_empty() || raw.len() > max {
        return Err(bad(field, format!("must be 1 to {max} characters")));
    }
    if !raw
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
    {
        return Err(bad(field, "may contain only letters, digits and - _ . :"));
    }
    Ok(raw.to_owned())
}

/// Free text up to `max` characters.
pub fn text(field: &str, raw: &str, max: usize) -> Result<String, Error> {
    if raw.chars().count() > max {
        return Err(bad(field, format!("must be at most {max} characters")));
    }
    Ok(raw.to_owned())
}

/// A non-negative amount of money with at most 10 decimal places.
pub fn money(field: &str, amount: Decimal) -> Result<Decimal, Error> {
    if amount.is_sign_negative() {
        return Err(bad(field, "must not be negative"));
    }
    if amount.scale() > 10 {
        return Err(bad(field, "has more than 10 decimal places"));
    }
    if amount > Decimal::from(1_000_000_000i64) {
        return Err(bad(field, "is too large"));
    }
    Ok(amount.normalize())
}

/// A sampling temperature: a JSON number from 0 to 2, as an exact decimal.
pub fn temperature(n: &serde_json::Number) -> Result<Decimal, Error> {
    let raw = n.to_string();
    let t = raw
        .parse::<Decimal>()
        .or_else(|_| Decimal::from_scientific(&raw))
        .map_err(|_| bad("temperature", "must be 0 to 2"))?;
    if t < Decimal::ZERO || t > Decimal::TWO {
        return Err(bad("temperature", "must be 0 to 2"));
    }
    Ok(t.normalize())
}

/// A whole number within `range`.
pub fn whole(field: &str, n: i64, range: std::ops::RangeInclusive<i64>) -> Result<i64, Error> {
    if range.contains(&n) {
        Ok(n)
    } else {
        Err(bad(
            field,
            format!("must be {} to {}", range.start(), range.end()),
        ))
    }
}
