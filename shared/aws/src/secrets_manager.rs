//! The secrets port on Secrets Manager: one secret whose SecretString is a
//! JSON object of string fields (`{"signing_key": "..."}`). It is fetched
//! once, on first use, and kept (parsed) for the life of the process.

use std::collections::BTreeMap;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_secretsmanager::Client;
use tokio::sync::OnceCell;

use super::sdk::error_text;
use lambent_core::secret::{ExposeSecret, SecretString};
use lambent_ports::secrets::{Secrets, SecretsError, SecretsResult};

/// The Secrets Manager adapter of [`Secrets`].
#[derive(Debug)]
pub struct SecretsManagerSecrets {
    client: Client,
    secret_id: String,
    fields: OnceCell<BTreeMap<String, SecretString>>,
}

impl SecretsManagerSecrets {
    /// An adapter on one secret (name or ARN).
    pub fn new(client: Client, secret_id: impl Into<String>) -> Self {
        SecretsManagerSecrets {
            client,
            secret_id: secret_id.into(),
            fields: OnceCell::new(),
        }
    }

    /// Builds the client from a loaded SDK configuration.
    pub fn from_conf(config: &SdkConfig, secret_id: impl Into<String>) -> Self {
        Self::new(Client::new(config), secret_id)
    }

    pub fn secret_id(&self) -> &str {
        &self.secret_id
    }

    async fn fetch(&self) -> SecretsResult<BTreeMap<String, SecretString>> {
        let out = self
            .client
            .get_secret_value()
            .secret_id(&self.secret_id)
            .send()
            .await
            .map_err(|e| SecretsError::Unavailable(error_text(&e)))?;
        let Some(text) = out.secret_string else {
            return Err(SecretsError::Malformed(format!(
                "secret {} has no SecretString",
                self.secret_id
            )));
        };
        let text = SecretString::from(text);
        parse_fields(text.expose_secret()).map_err(|reason| {
            SecretsError::Malformed(format!("secret {}: {reason}", self.secret_id))
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
        let fields = self.fields.get_or_try_init(|| self.fetch()).await?;
        Ok(fields.get(name).cloned())
    }

    /// Fetches (and caches) the secret: GetSecretValue is the only action a
    /// function's role is granted, and the value is needed anyway.
    async fn ping(&self) -> SecretsResult<()> {
        self.fields.get_or_try_init(|| self.fetch()).await?;
        Ok(())
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
