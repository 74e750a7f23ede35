//! The queue on SQS: one standard queue per [`QueueName`], each work queue
//! with a RedrivePolicy to its dead-letter queue (SQS moves a message there
//! after `maxReceiveCount` receives; see `provision`).

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use aws_sdk_sqs::Client;

use super::sdk::{error_text, CONNECT_TIMEOUT};
use lambent_ports::queue::{
    check_receive, check_send, Queue, QueueError, QueueName, QueueResult, Received,
};

/// Longest long-poll wait SQS allows.
pub const MAX_WAIT: Duration = Duration::from_secs(20);
/// Longest visibility timeout SQS allows.
pub const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 60 * 60);

/// The SQS adapter of [`Queue`].
#[derive(Debug, Clone)]
pub struct SqsQueue {
    client: Client,
    urls: BTreeMap<QueueName, String>,
}

impl SqsQueue {
    /// An adapter on the queues in `urls`; a queue missing from the map
    /// fails with `NotConfigured`.
    pub fn new(client: Client, urls: BTreeMap<QueueName, String>) -> Self {
        SqsQueue { client, urls }
    }

    /// Builds the client from a loaded SDK configuration.
    pub fn from_conf(config: &SdkConfig, urls: BTreeMap<QueueName, String>) -> Self {
        Self::new(Client::new(config), urls)
    }

    pub fn urls(&self) -> &BTreeMap<QueueName, String> {
        &self.urls
    }

    fn url(&self, queue: QueueName) -> QueueResult<&str> {
        self.urls
            .get(&queue)
            .map(String::as_str)
            .ok_or(QueueError::NotConfigured(queue.as_str()))
    }
}

/// Whole seconds, rounded up, as SQS's integer parameters.
fn seconds(d: Duration) -> i32 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    i32::try_from(secs).unwrap_or(i32::MAX)
}

fn unavailable<E: std::error::Error>(err: &E) -> QueueError {
    QueueError::Unavailable(error_text(err))
}

#[async_trait]
impl Queue for SqsQueue {
    async fn send(&self, queue: QueueName, body: &str, delay: Duration) -> QueueResult<String> {
        let url = self.url(queue)?;
        check_send(body, delay)?;
        let out = self
            .client
            .send_message()
            .queue_url(url)
            .message_body(body)
            .delay_seconds(seconds(delay))
            .send()
            .await
            .map_err(|e| unavailable(&e))?;
        out.message_id
            .ok_or_else(|| QueueError::Unavailable("SQS returned no message id".into()))
    }

    async fn receive(
        &self,
        queue: QueueName,
        max: usize,
        visibility: Duration,
        wait: Duration,
    ) -> QueueResult<Vec<Received>> {
        let url = self.url(queue)?;
        check_receive(max)?;
        if visibility > MAX_VISIBILITY || wait > MAX_WAIT {
            return Err(QueueError::Invalid(format!(
                "visibility must be at most {} s and wait at most {} s",
                MAX_VISIBILITY.as_secs(),
                MAX_WAIT.as_secs()
            )));
        }
        // A long poll lasts as long as its wait: give the attempt that much
        // more than the default.
        let timeouts = aws_sdk_sqs::config::timeout::TimeoutConfig::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .operation_attempt_timeout(wait + Duration::from_secs(5))
            .operation_timeout(wait * 2 + Duration::from_secs(10))
            .build();
        let out = self
            .client
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(i32::try_from(max).unwrap_or(1))
            .visibility_timeout(seconds(visibility))
            .wait_time_seconds(seconds(wait))
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .customize()
            .config_override(aws_sdk_sqs::config::Builder::default().timeout_config(timeouts))
            .send()
            .await
            .map_err(|e| unavailable(&e))?;
        out.messages
            .unwrap_or_default()
            .into_iter()
            .map(|m| {
                let receive_count = m
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|c| c.parse::<u32>().ok())
                    .unwrap_or(1);
                match (m.message_id, m.receipt_handle) {
                    (Some(message_id), Some(receipt)) => Ok(Received {
                        message_id,
                        receipt,
                        body: m.body.unwrap_or_default(),
                        receive_count,
                    }),
                    _ => Err(QueueError::Unavailable(
                        "SQS returned a message without id or receipt".into(),
                    )),
                }
            })
            .collect()
    }

    async fn delete(&self, queue: QueueName, receipt: &str) -> QueueResult<()> {
        let url = self.url(queue)?;
        match self
            .client
            .delete_message()
            .queue_url(url)
            .receipt_handle(receipt)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(err) => match err.as_service_error() {
                Some(e) if e.is_receipt_handle_is_invalid() || e.is_invalid_id_format() => {
                    Err(QueueError::InvalidReceipt)
                }
                _ => Err(unavailable(&err)),
            },
        }
    }

    async fn change_visibility(
        &self,
        queue: QueueName,
        receipt: &str,
        visibility: Duration,
    ) -> QueueResult<()> {
        let url = self.url(queue)?;
        if visibility > MAX_VISIBILITY {
            return Err(QueueError::Invalid(format!(
                "visibility must be at most {} s",
                MAX_VISIBILITY.as_secs()
            )));
        }
        match self
            .client
            .change_message_visibility()
            .queue_url(url)
            .receipt_handle(receipt)
            .visibility_timeout(seconds(visibility))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(err) => match err.as_service_error() {
                Some(e) if e.is_receipt_handle_is_invalid() || e.is_message_not_inflight() => {
                    Err(QueueError::InvalidReceipt)
                }
                _ => Err(unavailable(&err)),
            },
        }
    }

    async fn ping(&self) -> QueueResult<()> {
        let Some(url) = self.urls.values().next() else {
            return Err(QueueError::NotConfigured("any"));
        };
        self.client
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(|e| unavailable(&e))?;
        Ok(())
    }
}
