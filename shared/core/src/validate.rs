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

/// Kilobytes (1024 bytes), rounded up, for messages.
fn kilobytes(bytes: usize) -> usize {
    bytes.div_ceil(1024)
}

/// What a route stores in one record must fit in `max` bytes (the store
/// holds 400 KB a record; each route keeps a margin under it for the
/// record's other attributes). `what` is the thing measured, `holder` what
/// holds it: "steps: the workflow's definition is 512 KB, more than the
/// 350 KB a workflow can hold".
pub fn stored_size(
    field: &str,
    what: &str,
    bytes: usize,
    max: usize,
    holder: &str,
) -> Result<(), Error> {
    if bytes > max {
        return Err(bad(
            field,
            format!(
                "{what} is {} KB, more than the {} KB {holder} can hold",
                kilobytes(bytes),
                max / 1024
            ),
        ));
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_size_names_its_field_and_both_sizes() {
        let max = 350 * 1024;
        assert!(stored_size("steps", "the workflow's definition", max, max, "a workflow").is_ok());
        let err = stored_size(
            "steps",
            "the workflow's definition",
            512 * 1024,
            max,
            "a workflow",
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "steps: the workflow's definition is 512 KB, more than the 350 KB a workflow can hold"
        );
        // A byte over is one KB more, never "350 KB, more than 350 KB".
        let err = stored_size("x", "it", max + 1, max, "a thing").unwrap_err();
        assert!(err.to_string().contains("is 351 KB"), "{err}");
    }
}
