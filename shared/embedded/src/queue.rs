//! The embedded queue: messages in the SQLite database with SQS's semantics:
//! a visibility timeout per receive, a receive count, and a move to the
//! dead-letter queue when a message is received more than `max_receives` times.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::params;
use tokio::sync::Notify;

use super::db::{Db, DbError};
use lambent_core::ids;
use lambent_core::time::now_epoch_millis;
use lambent_ports::queue::{
    check_receive, check_send, Queue, QueueError, QueueName, QueueResult, Received,
};

pub struct EmbeddedQueue {
    db: Db,
    max_receives: u32,
    /// Wakes long-polling receivers when a message is sent.
    arrived: Arc<Notify>,
}

impl EmbeddedQueue {
    pub fn new(db: Db, max_receives: u32) -> Self {
        EmbeddedQueue {
            db,
            max_receives: max_receives.max(1),
            arrived: Arc::new(Notify::new()),
        }
    }

    async fn receive_now(
        &self,
        queue: QueueName,
        max: usize,
        visibility: Duration,
    ) -> QueueResult<Vec<Received>> {
        let max_receives = self.max_receives;
        self.db
            .write(move |tx| {
                let now = now_epoch_millis();
                let mut received = Vec::new();
                loop {
                    let candidates: Vec<(i64, String, String, u32)> = {
                        let mut stmt = tx
                            .prepare_cached(
                                "SELECT seq, id, body, receive_count FROM queue_messages
                                 WHERE queue = ?1 AND visible_at_ms <= ?2
                                 ORDER BY visible_at_ms, seq LIMIT ?3",
                            )
                            .map_err(sql)?;
                        let rows = stmt
                            .query_map(
                                params![queue.as_str(), now, (max - received.len()) as i64],
                                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                            )
                            .map_err(sql)?;
                        rows.collect::<Result<_, _>>().map_err(sql)?
                    };
                    if candidates.is_empty() {
                        break;
                    }
                    for (seq, id, body, count) in candidates {
                        match queue.dead_letter() {
                            Some(dlq) if count >= max_receives => {
                                // Received too often: redrive instead of delivering.
                                tx.execute(
                                    "UPDATE queue_messages SET queue = ?1, receive_count = 0,
                                     receipt = NULL, visible_at_ms = ?2 WHERE seq = ?3",
                                    params![dlq.as_str(), now, seq],
                                )
                                .map_err(sql)?;
                            }
                            _ => {
                                let receipt = ids::new_id("rcpt");
                                let visible_at = now + visibility.as_millis() as i64;
                                tx.execute(
                                    "UPDATE queue_messages SET receive_count = receive_count + 1,
                                     receipt = ?1, visible_at_ms = ?2 WHERE seq = ?3",
                                    params![receipt, visible_at, seq],
                                )
                                .map_err(sql)?;
                                received.push(Received {
                                    message_id: id,
                                    receipt,
                                    body,
                                    receive_count: count + 1,
                                });
                            }
                        }
                    }
                    if received.len() >= max {
                        break;
                    }
                }
                Ok(received)
            })
            .await
    }
}

impl From<DbError> for QueueError {
    fn from(e: DbError) -> Self {
        QueueError::Unavailable(e.to_string())
    }
}

fn sql(e: rusqlite::Error) -> QueueError {
    QueueError::Unavailable(format!("sqlite: {e}"))
}

#[async_trait]
impl Queue for EmbeddedQueue {
    async fn send(&self, queue: QueueName, body: &str, delay: Duration) -> QueueResult<String> {
        check_send(body, delay)?;
        let id = ids::new_id("qmsg");
        let body = body.to_owned();
        let message_id = id.clone();
        self.db
            .write(move |conn| {
                conn.execute(
                    "INSERT INTO queue_messages (id, queue, body, visible_at_ms) VALUES (?1, ?2, ?3, ?4)",
                    params![
                        message_id,
                        queue.as_str(),
                        body,
                        now_epoch_millis() + delay.as_millis() as i64
                    ],
                )
                .map_err(sql)
            })
            .await?;
        self.arrived.notify_waiters();
        Ok(id)
    }

    async fn receive(
        &self,
        queue: QueueName,
        max: usize,
        visibility: Duration,
        wait: Duration,
    ) -> QueueResult<Vec<Received>> {
        check_receive(max)?;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Register interest before looking, so a send in between is not missed.
            let arrived = self.arrived.notified();
            let got = self.receive_now(queue, max, visibility).await?;
            let now = tokio::time::Instant::now();
            if !got.is_empty() || now >= deadline {
                return Ok(got);
            }
            // Delayed or re-visible messages do not notify: poll at least every 100 ms.
            let nap = (deadline - now).min(Duration::from_millis(100));
            let _ = tokio::time::timeout(nap, arrived).await;
        }
    }

    async fn delete(&self, queue: QueueName, receipt: &str) -> QueueResult<()> {
        let receipt = receipt.to_owned();
        let deleted = self
            .db
            .write(move |conn| {
                conn.execute(
                    "DELETE FROM queue_messages WHERE queue = ?1 AND receipt = ?2",
                    params![queue.as_str(), receipt],
                )
                .map_err(sql)
            })
            .await?;
        if deleted == 0 {
            return Err(QueueError::InvalidReceipt);
        }
        Ok(())
    }

    async fn change_visibility(
        &self,
        queue: QueueName,
        receipt: &str,
        visibility: Duration,
    ) -> QueueResult<()> {
        if visibility > Duration::from_secs(12 * 3600) {
            return Err(QueueError::Invalid("visibility is at most 12 hours".into()));
        }
        let receipt = receipt.to_owned();
        let changed = self
            .db
            .write(move |conn| {
                conn.execute(
                    "UPDATE queue_messages SET visible_at_ms = ?1 WHERE queue = ?2 AND receipt = ?3",
                    params![
                        now_epoch_millis() + visibility.as_millis() as i64,
                        queue.as_str(),
                        receipt
                    ],
                )
                .map_err(sql)
            })
            .await?;
        if changed == 0 {
            return Err(QueueError::InvalidReceipt);
        }
        if visibility.is_zero() {
            self.arrived.notify_waiters();
        }
        Ok(())
    }

    async fn ping(&self) -> QueueResult<()> {
        self.db
            .with(|conn| {
                conn.query_row(
                    "SELECT count(*) FROM queue_messages WHERE queue = ''",
                    [],
                    |r| r.get::<_, i64>(0),
                )
                .map_err(sql)
                .map(|_| ())
            })
            .await
    }
}
