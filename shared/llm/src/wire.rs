//! What the two wire formats share: reading a provider's error object,
//! refusing malformed JSON without quoting it, merging usage reports, role
//! names, tool-call arguments and data URLs.

use crate::{ProviderError, Role, Usage};

/// The type of an error object: its `type`, else its `code`, else
/// `"unknown"`. Only a short identifier is kept: the rest of a provider's
/// body could contain anything.
pub fn error_detail(error: &serde_json::Value) -> String {
    let identifier = |v: Option<&serde_json::Value>| {
        v.and_then(serde_json::Value::as_str)
            .filter(|s| {
                !s.is_empty()
                    && s.len() <= 64
                    && s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
            })
            .map(str::to_owned)
    };
    identifier(error.get("type"))
        .or_else(|| identifier(error.get("code")))
        .unwrap_or_else(|| "unknown".to_owned())
}

/// A reply that is not the JSON its format defines. The message says where
/// and how it failed, never what the provider sent (serde's messages can
/// quote the input).
pub fn malformed_json(what: &str, e: &serde_json::Error) -> ProviderError {
    let kind = match e.classify() {
        serde_json::error::Category::Io => "unreadable",
        serde_json::error::Category::Syntax => "invalid JSON",
        serde_json::error::Category::Data => "unexpected JSON",
        serde_json::error::Category::Eof => "truncated JSON",
    };
    ProviderError::Protocol(format!(
        "malformed {what}: {kind} at line {} column {}",
        e.line(),
        e.column()
    ))
}

/// Merges `update` into `usage`, each field taking the update's value when
/// that is not zero; says whether anything changed.
pub fn merge_usage(usage: &mut Usage, update: &Usage) -> bool {
    let before = *usage;
    let take = |field: &mut u64, new: u64| {
        if new != 0 {
            *field = new;
        }
    };
    take(&mut usage.input_tokens, update.input_tokens);
    take(&mut usage.output_tokens, update.output_tokens);
    take(&mut usage.cache_read_tokens, update.cache_read_tokens);
    take(&mut usage.cache_write_tokens, update.cache_write_tokens);
    take(
        &mut usage.cache_write_1h_tokens,
        update.cache_write_1h_tokens,
    );
    *usage != before
}

/// A role's name: the same in both formats.
pub fn role(role: Role) -> &'static str {
    match role {
        Role::User => "user",
        Role::Assistant => "assistant",
    }
}

/// A tool call's arguments as JSON. Arguments that are not JSON (a model
/// can write anything) are kept as the string they were, so nothing is lost;
/// none at all are an empty object.
pub fn arguments(raw: &str) -> serde_json::Value {
    if raw.trim().is_empty() {
        return serde_json::Value::Object(Default::default());
    }
    serde_json::from_str(raw).unwrap_or_else(|_| serde_json::Value::String(raw.to_owned()))
}

/// The media type and base64 data of a `data:<type>;base64,<data>` URL.
pub fn data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    let media_type = meta.strip_suffix(";base64")?;
    (!media_type.is_empty()).then_some((media_type, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_merging_keeps_the_latest_non_zero_values() {
        let mut usage = Usage::default();
        assert!(merge_usage(
            &mut usage,
            &Usage {
                input_tokens: 10,
                output_tokens: 1,
                ..Usage::default()
            }
        ));
        assert!(!merge_usage(&mut usage, &Usage::default()));
        assert!(merge_usage(
            &mut usage,
            &Usage {
                output_tokens: 30,
                ..Usage::default()
            }
        ));
        assert_eq!(
            usage,
            Usage {
                input_tokens: 10,
                output_tokens: 30,
                ..Usage::default()
            }
        );
    }

    #[test]
    fn data_urls_give_their_media_type_and_data() {
        assert_eq!(
            data_url("data:image/png;base64,iVBOR="),
            Some(("image/png", "iVBOR="))
        );
        assert_eq!(data_url("data:image/png,raw"), None);
        assert_eq!(data_url("https://example.com/a.png"), None);
        assert_eq!(data_url("data:;base64,xx"), None);
    }

    #[test]
    fn malformed_json_messages_do_not_quote_the_reply() {
        #[derive(Debug, serde::Deserialize)]
        struct Counts {
            #[allow(dead_code)]
            tokens: u64,
        }
        let e = serde_json::from_str::<Counts>(r#"{"tokens":"private words"}"#).unwrap_err();
        let ProviderError::Protocol(message) = malformed_json("reply", &e) else {
            panic!("not a protocol error");
        };
        assert!(!message.contains("private"), "{message}");
        assert!(message.starts_with("malformed reply: unexpected JSON"));
    }
}
