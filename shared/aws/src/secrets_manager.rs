//! The secrets port on Secrets Manager: one secret whose SecretString is a
//! JSON object of string fields (`{"signing_key": "..."}`). Its current value
//! is the version staged `AWSCURRENT`; `put-secret-value` moves that stage to
//! the new version and `AWSPREVIOUS` to the one it replaced, which is what
//! [`Secrets::get_previous`] reads. Nothing is cached here: every call is one
//! GetSecretValue, and the caller (the server keys, `lambent_app::identity`)
//! decides how long what it derived is kept.

use std::collections::BTreeMap;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_secretsmanager::Client;

use super::sdk::error_text;
use lambent_core::secret::{ExposeSecret, SecretString};
use lambent_ports::secrets::{Secrets, SecretsError, SecretsResult};

/// The stage of the current version.
pub const CURRENT: &str = "AWSCURRENT";
/// The stage of the version the last rotation replaced.
pub const PREVIOUS: &str = "AWSPREVIOUS";

/// The Secrets Manager adapter of [`Secrets`].
#[derive(Debug)]
pub struct SecretsManagerSecrets {
    client: Client,
    secret_id: String,
}

impl SecretsManagerSecrets {
    /// An adapter on one secret (name or ARN).
    pub fn new(client: Client, secret_id: impl Into<String>) -> Self {
        SecretsManagerSecrets {
            client,
            secret_id: secret_id.into(),
        }
    }

    /// Builds the client from a loaded SDK configuration.
    pub fn from_conf(config: &SdkConfig, secret_id: impl Into<String>) -> Self {
        Self::new(Client::new(config), secret_id)
    }

    pub fn secret_id(&self) -> &str {
        &self.secret_id
    }

    /// The fields of the version in `stage`; `None` if no version has that
    /// stage (a secret never rotated has no `AWSPREVIOUS`).
    async fn fetch(&self, stage: &str) -> SecretsResult<Option<BTreeMap<String, SecretString>>> {
        let out = match self
            .client
            .get_secret_value()
            .secret_id(&self.secret_id)
            .version_stage(stage)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e)
                if stage != CURRENT
                    && e.as_service_error()
                        .is_some_and(|e| e.is_resource_not_found_exception()) =>
            {
                return Ok(None)
            }
            Err(e) => return Err(SecretsError::Unavailable(error_text(&e))),
        };
        let Some(text) = out.secret_string else {
            return Err(SecretsError::Malformed(format!(
                "secret {} ({stage}) has no SecretString",
                self.secret_id
            )));
        };
        let text = SecretString::from(text);
        parse_fields(text.expose_secret())
            .map(Some)
            .map_err(|reason| {
                SecretsError::Malformed(format!("secret {} ({stage}): {reason}", self.secret_id))
            })
    }
}

/// The fields of a JSON object of strings. Errors never quote the text.
fn parse_fields(text: &str) -> Result<BTreeMap<String, SecretString>, String> {
    let object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(text).map_err(|e| {
            format!(
                "not a JSON object (line {}, column {})",
                e.line(),
                e.column()
            )
        })?;
    object
        .into_iter()
        .map(|(name, value)| match value {
            serde_json::Value::String(s) => Ok((name, SecretString::from(s))),
            _ => Err(format!("field {name:?} is not a string")),
        })
        .collect()
}

#[async_trait]
impl Secrets for SecretsManagerSecrets {
    async fn get(&self, name: &str) -> SecretsResult<Option<SecretString>> {
        Ok(self
            .fetch(CURRENT)
            .await?
            .and_then(|mut fields| fields.remove(name)))
    }

    async fn get_previous(&self, name: &str) -> SecretsResult<Option<SecretString>> {
        Ok(self
            .fetch(PREVIOUS)
            .await?
            .and_then(|mut fields| fields.remove(name)))
    }

    /// Reads the current version: GetSecretValue is the only action a
    /// function's role is granted on the secret.
    async fn ping(&self) -> SecretsResult<()> {
        self.fetch(CURRENT).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_string_fields_only() -> Result<(), String> {
        let fields = parse_fields(r#"{"a":"x","b":""}"#)?;
        assert_eq!(fields.get("a").map(|s| s.expose_secret()), Some("x"));
        assert_eq!(fields.get("b").map(|s| s.expose_secret()), Some(""));
        for bad in [r#"{"a":"hunter2","n":1}"#, r#"["hunter2"]"#, r#""hunter2""#] {
            match parse_fields(bad) {
                Ok(_) => return Err(format!("{bad} parsed")),
                Err(e) => assert!(!e.contains("hunter2"), "{e}"),
            }
        }
        Ok(())
    }
}
