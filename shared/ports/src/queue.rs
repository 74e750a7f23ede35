//! The queue port: at-least-once delivery with a visibility timeout and a
//! dead-letter queue after a number of receives, like SQS.

use std::time::Duration;

use async_trait::async_trait;

/// The queues Lambent uses. Each work queue redrives to its dead-letter queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QueueName {
    /// Workflow steps, consumed by the worker.
    Steps,
    /// Workflow triggers (external events), consumed by the trigger function.
    Triggers,
    StepsDeadLetter,
    TriggersDeadLetter,
}

impl QueueName {
    pub const ALL: [QueueName; 4] = [
        QueueName::Steps,
        QueueName::Triggers,
        QueueName::StepsDeadLetter,
        QueueName::TriggersDeadLetter,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            QueueName::Steps => "steps",
            QueueName::Triggers => "triggers",
            QueueName::StepsDeadLetter => "steps-dlq",
            QueueName::TriggersDeadLetter => "triggers-dlq",
        }
    }

    /// The environment variable that holds its URL in a Lambda function.
    pub fn url_variable(self) -> &'static str {
        match self {
            QueueName::Steps => "LAMBENT_STEPS_QUEUE_URL",
            QueueName::Triggers => "LAMBENT_TRIGGERS_QUEUE_URL",
            QueueName::StepsDeadLetter => "LAMBENT_STEPS_DLQ_URL",
            QueueName::TriggersDeadLetter => "LAMBENT_TRIGGERS_DLQ_URL",
        }
    }

    /// The dead-letter queue this queue redrives to, if any.
    pub fn dead_letter(self) -> Option<QueueName> {
        match self {
            QueueName::Steps => Some(QueueName::StepsDeadLetter),
            QueueName::Triggers => Some(QueueName::TriggersDeadLetter),
            QueueName::StepsDeadLetter | QueueName::TriggersDeadLetter => None,
        }
    }
}

/// A received message. It stays invisible to other receivers until its
/// visibility timeout ends; deleting it with the receipt acknowledges it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub message_id: String,
    pub receipt: String,
    pub body: String,
    /// How many times it has been received, this time included.
    pub receive_count: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The receipt is unknown or stale (the message was received again since).
    #[error("receipt is no longer valid")]
    InvalidReceipt,
    #[error("queue {0} is not configured")]
    NotConfigured(&'static str),
    #[error("invalid queue request: {0}")]
    Invalid(String),
    #[error("queue unavailable: {0}")]
    Unavailable(String),
}

pub type QueueResult<T> = Result<T, QueueError>;

/// Longest delay a message may be sent with (SQS's limit).
pub const MAX_DELAY: Duration = Duration::from_secs(900);
/// Largest batch one receive returns (SQS's limit).
pub const MAX_RECEIVE: usize = 10;

/// What every adapter refuses before it sends, as SQS does: an empty body,
/// a delay beyond [`MAX_DELAY`].
pub fn check_send(body: &str, delay: Duration) -> QueueResult<()> {
    if delay > MAX_DELAY {
        return Err(QueueError::Invalid(format!(
            "delay must be at most {} s",
            MAX_DELAY.as_secs()
        )));
    }
    if body.is_empty() {
        return Err(QueueError::Invalid(
            "a message body must not be empty".into(),
        ));
    }
    Ok(())
}

/// What every adapter refuses before it receives: a batch of none, or of
/// more than [`MAX_RECEIVE`].
pub fn check_receive(max: usize) -> QueueResult<()> {
    if max == 0 || max > MAX_RECEIVE {
        return Err(QueueError::Invalid(format!(
            "receive 1 to {MAX_RECEIVE} messages"
        )));
    }
    Ok(())
}

#[async_trait]
pub trait Queue: Send + Sync + 'static {
    /// Enqueues a body, visible after `delay`. Returns the message id.
    async fn send(&self, queue: QueueName, body: &str, delay: Duration) -> QueueResult<String>;

    /// Up to `max` visible messages, each hidden for `visibility` afterwards.
    /// Waits up to `wait` for one to arrive. A message received more often than
    /// the queue's maximum moves to its dead-letter queue instead.
    async fn receive(
        &self,
        queue: QueueName,
        max: usize,
        visibility: Duration,
        wait: Duration,
    ) -> QueueResult<Vec<Received>>;

    /// Acknowledges a message.
    async fn delete(&self, queue: QueueName, receipt: &str) -> QueueResult<()>;

    /// Hides (or, with zero, releases) a received message for `visibility` from now.
    async fn change_visibility(
        &self,
        queue: QueueName,
        receipt: &str,
        visibility: Duration,
    ) -> QueueResult<()>;

    /// A cheap round trip proving the queue is reachable (health checks).
    async fn ping(&self) -> QueueResult<()>;
}
