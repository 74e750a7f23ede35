//! The queue contract (see `crate::queue`). The adapter under test
//! moves a message to the dead-letter queue after [`MAX_RECEIVES`] receives.

use std::time::Duration;

use crate::queue::*;

pub const MAX_RECEIVES: u32 = 2;

const NO_WAIT: Duration = Duration::ZERO;
const LONG: Duration = Duration::from_secs(30);

/// Receives until something arrives or `within` passes.
async fn receive_within(
    queue: &dyn Queue,
    name: QueueName,
    visibility: Duration,
    within: Duration,
) -> Vec<Received> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let got = queue
            .receive(name, 10, visibility, Duration::from_millis(200))
            .await
            .unwrap();
        if !got.is_empty() || tokio::time::Instant::now() >= deadline {
            return got;
        }
    }
}

pub async fn delivers_and_deletes(queue: &dyn Queue) {
    let body = r#"{"run_id":"run_1","step":"a"}"#;
    let id = queue
        .send(QueueName::Steps, body, Duration::ZERO)
        .await
        .unwrap();
    let got = receive_within(queue, QueueName::Steps, LONG, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].message_id, id);
    assert_eq!(got[0].body, body);
    assert_eq!(got[0].receive_count, 1);
    queue
        .delete(QueueName::Steps, &got[0].receipt)
        .await
        .unwrap();
    // Gone for good: not even after its visibility timeout.
    assert!(queue
        .receive(QueueName::Steps, 10, LONG, NO_WAIT)
        .await
        .unwrap()
        .is_empty());
    // Queues are separate.
    assert!(queue
        .receive(QueueName::Triggers, 10, LONG, NO_WAIT)
        .await
        .unwrap()
        .is_empty());
}

pub async fn hides_a_received_message_until_its_visibility_ends(queue: &dyn Queue) {
    queue
        .send(QueueName::Steps, "m", Duration::ZERO)
        .await
        .unwrap();
    let first = receive_within(
        queue,
        QueueName::Steps,
        Duration::from_secs(2),
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(first.len(), 1);
    assert!(
        queue
            .receive(QueueName::Steps, 10, LONG, NO_WAIT)
            .await
            .unwrap()
            .is_empty(),
        "a message in flight was delivered twice"
    );
    let again = receive_within(queue, QueueName::Steps, LONG, Duration::from_secs(6)).await;
    assert_eq!(
        again.len(),
        1,
        "the message did not come back after its visibility timeout"
    );
    assert_eq!(again[0].message_id, first[0].message_id);
    assert_eq!(again[0].receive_count, 2);

    queue
        .delete(QueueName::Steps, &again[0].receipt)
        .await
        .unwrap();

    // Releasing a message (visibility 0) makes it available at once.
    queue
        .send(QueueName::Triggers, "t", Duration::ZERO)
        .await
        .unwrap();
    let held = receive_within(queue, QueueName::Triggers, LONG, Duration::from_secs(5)).await;
    assert_eq!(held.len(), 1);
    queue
        .change_visibility(QueueName::Triggers, &held[0].receipt, Duration::ZERO)
        .await
        .unwrap();
    let released = receive_within(queue, QueueName::Triggers, LONG, Duration::from_secs(3)).await;
    assert_eq!(released.len(), 1);
    assert_eq!(released[0].message_id, held[0].message_id);
    queue
        .delete(QueueName::Triggers, &released[0].receipt)
        .await
        .unwrap();
}

pub async fn delays_a_message(queue: &dyn Queue) {
    queue
        .send(QueueName::Triggers, "later", Duration::from_secs(2))
        .await
        .unwrap();
    assert!(queue
        .receive(QueueName::Triggers, 10, LONG, NO_WAIT)
        .await
        .unwrap()
        .is_empty());
    let got = receive_within(queue, QueueName::Triggers, LONG, Duration::from_secs(6)).await;
    assert_eq!(
        got.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(),
        vec!["later"]
    );
}

pub async fn redrives_to_the_dead_letter_queue_after_max_receives(queue: &dyn Queue) {
    queue
        .send(QueueName::Steps, "poison", Duration::ZERO)
        .await
        .unwrap();
    for attempt in 1..=MAX_RECEIVES {
        let got = receive_within(queue, QueueName::Steps, LONG, Duration::from_secs(5)).await;
        assert_eq!(got.len(), 1, "receive {attempt}");
        assert_eq!(got[0].receive_count, attempt);
        // A failed attempt: release it for the next try.
        queue
            .change_visibility(QueueName::Steps, &got[0].receipt, Duration::ZERO)
            .await
            .unwrap();
    }
    // Received MAX_RECEIVES times: the next receive moves it instead.
    let after = queue
        .receive(QueueName::Steps, 10, LONG, Duration::from_secs(1))
        .await
        .unwrap();
    assert!(
        after.is_empty(),
        "delivered past its maximum receives: {after:?}"
    );
    let dead = receive_within(
        queue,
        QueueName::StepsDeadLetter,
        LONG,
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(
        dead.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(),
        vec!["poison"]
    );
}

pub async fn refuses_an_unknown_receipt(queue: &dyn Queue) {
    let err = queue
        .change_visibility(QueueName::Steps, "not-a-receipt", Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(matches!(err, QueueError::InvalidReceipt), "{err:?}");
    queue.ping().await.unwrap();
}

pub async fn refuses_what_sqs_refuses(queue: &dyn Queue) {
    for (body, delay) in [
        ("", Duration::ZERO),
        ("x", MAX_DELAY + Duration::from_secs(1)),
    ] {
        let err = queue.send(QueueName::Steps, body, delay).await.unwrap_err();
        assert!(
            matches!(err, QueueError::Invalid(_)),
            "{body:?} {delay:?}: {err:?}"
        );
    }
    for max in [0, MAX_RECEIVE + 1] {
        let err = queue
            .receive(QueueName::Steps, max, LONG, NO_WAIT)
            .await
            .unwrap_err();
        assert!(matches!(err, QueueError::Invalid(_)), "max {max}: {err:?}");
    }
    // Nothing refused was queued.
    assert!(queue
        .receive(QueueName::Steps, MAX_RECEIVE, LONG, NO_WAIT)
        .await
        .unwrap()
        .is_empty());
}
