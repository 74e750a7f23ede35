//! Creating (or finding) Lambent's AWS resources on an endpoint: the table,
//! the queues and their dead-letter queues, the KMS key and the bootstrap
//! secret. `ensure_all` is idempotent: a second run finds and reuses what the
//! first one made. `resolve` only looks resources up, and names the first one
//! that is missing.
//!
//! In a real deployment SAM (`template.yaml`) owns these resources; this
//! module serves `lambent bootstrap` against an emulator or a sandbox account,
//! and `lambent serve` with the AWS backends.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aws_config::SdkConfig;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType, TableStatus,
    TimeToLiveSpecification, TimeToLiveStatus,
};
use aws_sdk_kms::types::{KeySpec, KeyUsageType};
use aws_sdk_sqs::types::QueueAttributeName;

use lambent_aws::dynamodb::{PK, SK};
use lambent_aws::sdk::error_text;
use lambent_core::secret::{ExposeSecret, SecretString};
use lambent_ports::queue::QueueName;
use lambent_ports::store::TTL_ATTRIBUTE;

/// The name of the bootstrap secret's field holding the signing key.
pub const SIGNING_KEY_FIELD: &str = "signing_key";
/// Length of a generated signing key (alphanumeric characters, ~381 bits).
pub const SIGNING_KEY_LENGTH: usize = 64;
/// How long `ensure_all` waits for a new table to become ACTIVE.
pub const TABLE_ACTIVE_TIMEOUT: Duration = Duration::from_secs(300);
/// Retention of the dead-letter queues (SQS's maximum, 14 days), longer than
/// the work queues' so a message never expires there before it is looked at.
pub const DEAD_LETTER_RETENTION_SECS: u32 = 14 * 24 * 60 * 60;

/// The names of Lambent's resources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    pub table: String,
    pub steps_queue: String,
    pub triggers_queue: String,
    /// `alias/...`.
    pub kms_alias: String,
    pub secret_name: String,
    /// Receives after which SQS moves a message to the dead-letter queue.
    pub max_receives: u32,
}

impl Names {
    /// `prefix` → table `prefix`, queues `prefix-steps`, `prefix-triggers`
    /// (and `-dlq` for each), alias `alias/prefix`, secret `prefix/bootstrap`,
    /// 5 receives before the dead-letter queue.
    pub fn with_prefix(prefix: &str) -> Self {
        Names {
            table: prefix.to_owned(),
            steps_queue: format!("{prefix}-steps"),
            triggers_queue: format!("{prefix}-triggers"),
            kms_alias: format!("alias/{prefix}"),
            secret_name: format!("{prefix}/bootstrap"),
            max_receives: 5,
        }
    }

    /// The SQS queue name of a queue (dead-letter queues: the work queue's
    /// name with `-dlq`).
    pub fn queue(&self, queue: QueueName) -> String {
        match queue {
            QueueName::Steps => self.steps_queue.clone(),
            QueueName::Triggers => self.triggers_queue.clone(),
            QueueName::StepsDeadLetter => format!("{}-dlq", self.steps_queue),
            QueueName::TriggersDeadLetter => format!("{}-dlq", self.triggers_queue),
        }
    }
}

impl Default for Names {
    fn default() -> Self {
        Names::with_prefix("lambent")
    }
}

/// What the adapters need to reach the resources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provisioned {
    pub table: String,
    pub queue_urls: BTreeMap<QueueName, String>,
    /// The key's ARN.
    pub kms_key_id: String,
    /// The secret's ARN.
    pub secret_id: String,
}

/// The resources as the adapters are built on them.
impl From<Provisioned> for lambent_aws::AwsResources {
    fn from(made: Provisioned) -> Self {
        lambent_aws::AwsResources {
            table: made.table,
            secret_id: made.secret_id,
            kms_key_id: Some(made.kms_key_id),
            queue_urls: made.queue_urls,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    /// `resolve` found no such resource.
    #[error("{kind} {name:?} does not exist (run `lambent bootstrap` or deploy the stack)")]
    Missing { kind: &'static str, name: String },
    /// The resource exists but cannot be used as it is.
    #[error("{kind} {name:?} is not usable: {reason}")]
    NotUsable {
        kind: &'static str,
        name: String,
        reason: String,
    },
    /// An AWS call failed.
    #[error("{kind} {name:?}: {message}")]
    Aws {
        kind: &'static str,
        name: String,
        message: String,
    },
    /// The OS random number generator failed.
    #[error("random number generator failed: {0}")]
    Random(String),
}

const TABLE: &str = "DynamoDB table";
const QUEUE: &str = "SQS queue";
const KEY: &str = "KMS key";
const SECRET: &str = "secret";

fn aws<'a, E: std::error::Error>(
    kind: &'static str,
    name: &'a str,
) -> impl FnOnce(E) -> ProvisionError + 'a {
    move |err| ProvisionError::Aws {
        kind,
        name: name.to_owned(),
        message: error_text(&err),
    }
}

fn missing(kind: &'static str, name: &str) -> ProvisionError {
    ProvisionError::Missing {
        kind,
        name: name.to_owned(),
    }
}

fn not_usable(kind: &'static str, name: &str, reason: impl Into<String>) -> ProvisionError {
    ProvisionError::NotUsable {
        kind,
        name: name.to_owned(),
        reason: reason.into(),
    }
}

/// Creates whatever is missing and returns where everything is.
pub async fn ensure_all(config: &SdkConfig, names: &Names) -> Result<Provisioned, ProvisionError> {
    let dynamo = aws_sdk_dynamodb::Client::new(config);
    let sqs = aws_sdk_sqs::Client::new(config);
    let kms = aws_sdk_kms::Client::new(config);
    let secrets = aws_sdk_secretsmanager::Client::new(config);

    ensure_table(&dynamo, &names.table).await?;
    let queue_urls = ensure_queues(&sqs, names).await?;
    let kms_key_id = ensure_key(&kms, &names.kms_alias).await?;
    let secret_id = ensure_secret(&secrets, &names.secret_name).await?;
    tracing::info!(
        table = %names.table,
        kms_alias = %names.kms_alias,
        secret = %names.secret_name,
        "AWS resources ready"
    );
    Ok(Provisioned {
        table: names.table.clone(),
        queue_urls,
        kms_key_id,
        secret_id,
    })
}

/// Finds every resource without creating anything; the error names the first
/// missing one.
pub async fn resolve(config: &SdkConfig, names: &Names) -> Result<Provisioned, ProvisionError> {
    let dynamo = aws_sdk_dynamodb::Client::new(config);
    let sqs = aws_sdk_sqs::Client::new(config);
    let kms = aws_sdk_kms::Client::new(config);
    let secrets = aws_sdk_secretsmanager::Client::new(config);

    match table_status(&dynamo, &names.table).await? {
        None => return Err(missing(TABLE, &names.table)),
        Some(TableStatus::Active) | Some(TableStatus::Updating) => {}
        Some(other) => {
            return Err(not_usable(TABLE, &names.table, format!("status {other}")));
        }
    }
    let mut queue_urls = BTreeMap::new();
    for queue in QueueName::ALL {
        let name = names.queue(queue);
        let url = queue_url(&sqs, &name)
            .await?
            .ok_or_else(|| missing(QUEUE, &name))?;
        queue_urls.insert(queue, url);
    }
    let kms_key_id = find_key(&kms, &names.kms_alias)
        .await?
        .ok_or_else(|| missing(KEY, &names.kms_alias))?;
    let secret_id = find_secret(&secrets, &names.secret_name)
        .await?
        .ok_or_else(|| missing(SECRET, &names.secret_name))?;
    Ok(Provisioned {
        table: names.table.clone(),
        queue_urls,
        kms_key_id,
        secret_id,
    })
}

// ---------------------------------------------------------------------------
// DynamoDB

async fn table_status(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
) -> Result<Option<TableStatus>, ProvisionError> {
    match client.describe_table().table_name(table).send().await {
        Ok(out) => Ok(Some(
            out.table()
                .and_then(|t| t.table_status())
                .cloned()
                .unwrap_or(TableStatus::Creating),
        )),
        Err(err)
            if err
                .as_service_error()
                .is_some_and(|e| e.is_resource_not_found_exception()) =>
        {
            Ok(None)
        }
        Err(err) => Err(aws(TABLE, table)(err)),
    }
}

fn build_error(
    table: &str,
) -> impl FnOnce(aws_sdk_dynamodb::error::BuildError) -> ProvisionError + '_ {
    move |err| not_usable(TABLE, table, err.to_string())
}

async fn ensure_table(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
) -> Result<(), ProvisionError> {
    if table_status(client, table).await?.is_none() {
        let attribute = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(build_error(table))
        };
        let key = |name: &str, key_type: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(key_type)
                .build()
                .map_err(build_error(table))
        };
        let created = client
            .create_table()
            .table_name(table)
            .attribute_definitions(attribute(PK)?)
            .attribute_definitions(attribute(SK)?)
            .key_schema(key(PK, KeyType::Hash)?)
            .key_schema(key(SK, KeyType::Range)?)
            .billing_mode(BillingMode::PayPerRequest)
            .send()
            .await;
        match created {
            Ok(_) => tracing::info!(table, "created DynamoDB table"),
            // Created concurrently by someone else: fine.
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_resource_in_use_exception()) => {}
            Err(err) => return Err(aws(TABLE, table)(err)),
        }
    }
    wait_until_active(client, table).await?;
    ensure_ttl(client, table).await
}

async fn wait_until_active(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
) -> Result<(), ProvisionError> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(200);
    loop {
        match table_status(client, table).await? {
            Some(TableStatus::Active) => return Ok(()),
            None | Some(TableStatus::Creating) | Some(TableStatus::Updating) => {}
            Some(other) => return Err(not_usable(TABLE, table, format!("status {other}"))),
        }
        if started.elapsed() > TABLE_ACTIVE_TIMEOUT {
            return Err(not_usable(
                TABLE,
                table,
                format!("not ACTIVE after {} s", TABLE_ACTIVE_TIMEOUT.as_secs()),
            ));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}

async fn ensure_ttl(client: &aws_sdk_dynamodb::Client, table: &str) -> Result<(), ProvisionError> {
    let out = client
        .describe_time_to_live()
        .table_name(table)
        .send()
        .await
        .map_err(aws(TABLE, table))?;
    if let Some(ttl) = out.time_to_live_description() {
        let on = matches!(
            ttl.time_to_live_status(),
            Some(TimeToLiveStatus::Enabled) | Some(TimeToLiveStatus::Enabling)
        );
        match ttl.attribute_name() {
            Some(TTL_ATTRIBUTE) if on => return Ok(()),
            Some(other) if on => {
                return Err(not_usable(
                    TABLE,
                    table,
                    format!("TTL is enabled on {other:?}, not {TTL_ATTRIBUTE:?}"),
                ))
            }
            _ => {}
        }
    }
    let spec = TimeToLiveSpecification::builder()
        .attribute_name(TTL_ATTRIBUTE)
        .enabled(true)
        .build()
        .map_err(build_error(table))?;
    match client
        .update_time_to_live()
        .table_name(table)
        .time_to_live_specification(spec)
        .send()
        .await
    {
        Ok(_) => {
            tracing::info!(table, attribute = TTL_ATTRIBUTE, "enabled TTL");
            Ok(())
        }
        Err(err) if error_text(&err).contains("already enabled") => Ok(()),
        Err(err) => Err(aws(TABLE, table)(err)),
    }
}

// ---------------------------------------------------------------------------
// SQS

async fn queue_url(
    client: &aws_sdk_sqs::Client,
    name: &str,
) -> Result<Option<String>, ProvisionError> {
    match client.get_queue_url().queue_name(name).send().await {
        Ok(out) => Ok(out.queue_url),
        Err(err)
            if err
                .as_service_error()
                .is_some_and(|e| e.is_queue_does_not_exist()) =>
        {
            Ok(None)
        }
        Err(err) => Err(aws(QUEUE, name)(err)),
    }
}

async fn queue_arn(
    client: &aws_sdk_sqs::Client,
    name: &str,
    url: &str,
) -> Result<String, ProvisionError> {
    let out = client
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(aws(QUEUE, name))?;
    out.attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn))
        .cloned()
        .ok_or_else(|| not_usable(QUEUE, name, "no QueueArn attribute"))
}

/// Creates a queue with these attributes, or brings an existing one to them.
async fn ensure_queue(
    client: &aws_sdk_sqs::Client,
    name: &str,
    attributes: &[(QueueAttributeName, String)],
) -> Result<String, ProvisionError> {
    let mut create = client.create_queue().queue_name(name);
    for (k, v) in attributes {
        create = create.attributes(k.clone(), v.clone());
    }
    match create.send().await {
        Ok(out) => out
            .queue_url
            .ok_or_else(|| not_usable(QUEUE, name, "CreateQueue returned no URL")),
        // It exists with other attributes: keep it and set ours.
        Err(err)
            if err
                .as_service_error()
                .is_some_and(|e| e.is_queue_name_exists()) =>
        {
            let url = queue_url(client, name)
                .await?
                .ok_or_else(|| missing(QUEUE, name))?;
            let mut set = client.set_queue_attributes().queue_url(&url);
            for (k, v) in attributes {
                set = set.attributes(k.clone(), v.clone());
            }
            set.send().await.map_err(aws(QUEUE, name))?;
            tracing::info!(queue = name, "updated SQS queue attributes");
            Ok(url)
        }
        Err(err) => Err(aws(QUEUE, name)(err)),
    }
}

async fn ensure_queues(
    client: &aws_sdk_sqs::Client,
    names: &Names,
) -> Result<BTreeMap<QueueName, String>, ProvisionError> {
    let mut urls = BTreeMap::new();
    for queue in [QueueName::Steps, QueueName::Triggers] {
        let Some(dead_letter) = queue.dead_letter() else {
            continue;
        };
        let dlq_name = names.queue(dead_letter);
        let dlq_url = ensure_queue(
            client,
            &dlq_name,
            &[(
                QueueAttributeName::MessageRetentionPeriod,
                DEAD_LETTER_RETENTION_SECS.to_string(),
            )],
        )
        .await?;
        let dlq_arn = queue_arn(client, &dlq_name, &dlq_url).await?;
        let redrive = serde_json::json!({
            "deadLetterTargetArn": dlq_arn,
            "maxReceiveCount": names.max_receives,
        })
        .to_string();
        let name = names.queue(queue);
        let url = ensure_queue(
            client,
            &name,
            &[(QueueAttributeName::RedrivePolicy, redrive)],
        )
        .await?;
        urls.insert(dead_letter, dlq_url);
        urls.insert(queue, url);
    }
    Ok(urls)
}

// ---------------------------------------------------------------------------
// KMS

/// The ARN of the key behind an alias, `None` if the alias does not exist.
async fn find_key(
    client: &aws_sdk_kms::Client,
    alias: &str,
) -> Result<Option<String>, ProvisionError> {
    match client.describe_key().key_id(alias).send().await {
        Ok(out) => out
            .key_metadata()
            .and_then(|m| m.arn().map(str::to_owned))
            .map(Some)
            .ok_or_else(|| not_usable(KEY, alias, "DescribeKey returned no ARN")),
        Err(err)
            if err
                .as_service_error()
                .is_some_and(|e| e.is_not_found_exception()) =>
        {
            Ok(None)
        }
        Err(err) => Err(aws(KEY, alias)(err)),
    }
}

async fn ensure_key(client: &aws_sdk_kms::Client, alias: &str) -> Result<String, ProvisionError> {
    if let Some(arn) = find_key(client, alias).await? {
        return Ok(arn);
    }
    let created = client
        .create_key()
        .description("Lambent: encrypts provider API keys")
        .key_usage(KeyUsageType::EncryptDecrypt)
        .key_spec(KeySpec::SymmetricDefault)
        .send()
        .await
        .map_err(aws(KEY, alias))?;
    let key_id = created
        .key_metadata()
        .map(|m| m.key_id().to_owned())
        .ok_or_else(|| not_usable(KEY, alias, "CreateKey returned no key id"))?;
    match client
        .create_alias()
        .alias_name(alias)
        .target_key_id(&key_id)
        .send()
        .await
    {
        Ok(_) => {
            tracing::info!(alias, "created KMS key");
            if let Err(err) = client.enable_key_rotation().key_id(&key_id).send().await {
                tracing::warn!(alias, error = %error_text(&err), "could not enable key rotation");
            }
        }
        // Another bootstrap won the race: use its key, retire ours.
        Err(err)
            if err
                .as_service_error()
                .is_some_and(|e| e.is_already_exists_exception()) =>
        {
            if let Err(err) = client
                .schedule_key_deletion()
                .key_id(&key_id)
                .pending_window_in_days(7)
                .send()
                .await
            {
                tracing::warn!(alias, error = %error_text(&err), "could not retire a spare KMS key");
            }
        }
        Err(err) => return Err(aws(KEY, alias)(err)),
    }
    find_key(client, alias)
        .await?
        .ok_or_else(|| missing(KEY, alias))
}

// ---------------------------------------------------------------------------
// Secrets Manager

/// The ARN of a secret, `None` if it does not exist.
async fn find_secret(
    client: &aws_sdk_secretsmanager::Client,
    name: &str,
) -> Result<Option<String>, ProvisionError> {
    match client.describe_secret().secret_id(name).send().await {
        Ok(out) => {
            if out.deleted_date().is_some() {
                return Err(not_usable(
                    SECRET,
                    name,
                    "it is scheduled for deletion (restore it, or choose another name)",
                ));
            }
            out.arn()
                .map(|a| Some(a.to_owned()))
                .ok_or_else(|| not_usable(SECRET, name, "DescribeSecret returned no ARN"))
        }
        Err(err)
            if err
                .as_service_error()
                .is_some_and(|e| e.is_resource_not_found_exception()) =>
        {
            Ok(None)
        }
        Err(err) => Err(aws(SECRET, name)(err)),
    }
}

async fn ensure_secret(
    client: &aws_sdk_secretsmanager::Client,
    name: &str,
) -> Result<String, ProvisionError> {
    if let Some(arn) = find_secret(client, name).await? {
        return Ok(arn);
    }
    let signing_key = SecretString::from(random_alphanumeric(SIGNING_KEY_LENGTH)?);
    let value = SecretString::from(
        serde_json::json!({ SIGNING_KEY_FIELD: signing_key.expose_secret() }).to_string(),
    );
    let created = client
        .create_secret()
        .name(name)
        .description("Lambent bootstrap secrets (JSON object of named values)")
        .secret_string(value.expose_secret())
        .send()
        .await;
    match created {
        Ok(out) => {
            tracing::info!(secret = name, "created secret");
            out.arn
                .ok_or_else(|| not_usable(SECRET, name, "CreateSecret returned no ARN"))
        }
        Err(err)
            if err
                .as_service_error()
                .is_some_and(|e| e.is_resource_exists_exception()) =>
        {
            find_secret(client, name)
                .await?
                .ok_or_else(|| missing(SECRET, name))
        }
        Err(err) => Err(aws(SECRET, name)(err)),
    }
}

/// `len` characters from `[A-Za-z0-9]`, uniformly, from the OS CSPRNG.
pub fn random_alphanumeric(len: usize) -> Result<String, ProvisionError> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    // 248 = 4 * 62: bytes at or above it are dropped, so every character is
    // equally likely.
    const LIMIT: u8 = 248;
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        getrandom::fill(&mut buf).map_err(|e| ProvisionError::Random(e.to_string()))?;
        for &b in buf.iter().filter(|&&b| b < LIMIT) {
            if out.len() == len {
                break;
            }
            out.push(char::from(ALPHABET[usize::from(b) % ALPHABET.len()]));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_prefix() {
        let n = Names::with_prefix("lambent");
        assert_eq!(n.table, "lambent");
        assert_eq!(n.queue(QueueName::Steps), "lambent-steps");
        assert_eq!(n.queue(QueueName::StepsDeadLetter), "lambent-steps-dlq");
        assert_eq!(n.queue(QueueName::Triggers), "lambent-triggers");
        assert_eq!(
            n.queue(QueueName::TriggersDeadLetter),
            "lambent-triggers-dlq"
        );
        assert_eq!(n.kms_alias, "alias/lambent");
        assert_eq!(n.secret_name, "lambent/bootstrap");
        assert_eq!(n.max_receives, 5);
    }

    #[test]
    fn random_keys_are_alphanumeric() -> Result<(), ProvisionError> {
        let a = random_alphanumeric(SIGNING_KEY_LENGTH)?;
        let b = random_alphanumeric(SIGNING_KEY_LENGTH)?;
        assert_eq!(a.len(), SIGNING_KEY_LENGTH);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
        Ok(())
    }
}
