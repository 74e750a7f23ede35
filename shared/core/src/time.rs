//! Wall-clock helpers. Timestamps leave Lambent as RFC 3339; expiries are
//! epoch seconds (DynamoDB's TTL format).

use std::time::{SystemTime, UNIX_EPOCH};

pub fn now_epoch_secs() -> i64 {
    now_epoch_millis() / 1000
}

pub fn now_epoch_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The current time as RFC 3339 (UTC, second precision or finer).
pub fn now_rfc3339() -> String {
    rfc3339(time::OffsetDateTime::now_utc())
}

pub fn rfc3339(at: time::OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| at.unix_timestamp().to_string())
}

/// An epoch-seconds instant (an expiry) as RFC 3339.
pub fn rfc3339_from_epoch(epoch_secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(epoch_secs)
        .map(rfc3339)
        .unwrap_or_else(|_| epoch_secs.to_string())
}

/// The UTC day of an instant, `yyyy-mm-dd`: the unit of usage aggregates.
pub fn day_of(at: time::OffsetDateTime) -> String {
    let d = at.date();
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

/// The UTC day of an epoch-seconds instant, `yyyy-mm-dd`.
pub fn day_of_epoch_secs(epoch_secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(epoch_secs)
        .map(day_of)
        .unwrap_or_else(|_| today())
}

/// Today (UTC), `yyyy-mm-dd`.
pub fn today() -> String {
    day_of(time::OffsetDateTime::now_utc())
}

/// The UTC month of a day (`yyyy-mm-dd` -> `yyyy-mm`): the unit of user budgets.
pub fn month_of(day: &str) -> &str {
    day.get(..7).unwrap_or(day)
}

/// A `yyyy-mm-dd` day given by a client, normalised; `None` if it is not one.
pub fn parse_day(raw: &str) -> Option<String> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(raw, &format)
        .ok()
        .map(|d| format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day()))
}
