//! Agent turns' storage on both backends (`lambent_store::turns`): the
//! conditions that make a turn run by one runner at a time, end once,
//! answer once, and its events read back in order from any point.

use lambent_core::time::now_epoch_secs;
use lambent_store::messages;
use lambent_store::turns::{
    self, Ending, EventsCursor, Needs, NewTurn, Pending, StoredEvent, TurnStatus,
};
use rust_decimal::Decimal;
use serde_json::json;

use crate::identity_storage::Storage;

const NOW_MS: i64 = 1_800_000_000_000;

async fn session(s: &Storage) -> (String, String) {
    let (owner, _, session) = crate::chat_storage::session(s, None).await;
    (owner, session.id)
}

/// Starts turn `turn_id` with a user message: leased by its runner, or
/// (background) free for the first claim.
async fn start(s: &Storage, owner: &str, session_id: &str, turn_id: &str, background: bool) {
    let message_id = format!("msg_in{}", &turn_id[4..]);
    let mut ops = messages::user_message_ops(
        owner,
        session_id,
        &message_id,
        &[lambent_core::chat::Part::Text("hi".into())],
        now_epoch_secs() + 3600,
    );
    ops.extend(
        turns::start_ops(&NewTurn {
            owner,
            session_id,
            turn_id,
            first_message_id: &message_id,
            background,
            lease_until_ms: if background { NOW_MS } else { NOW_MS + 30_000 },
            approvals: &[],
            answers: None,
            expires_at: now_epoch_secs() + 3600,
        })
        .unwrap(),
    );
    s.store.transact(ops).await.unwrap();
}

async fn active(s: &Storage) -> Vec<String> {
    let mut found = Vec::new();
    for shard in 0..turns::ACTIVE_SHARDS {
        let (page, _) = turns::active_turns(s.store.as_ref(), shard, 100, None)
            .await
            .unwrap();
        found.extend(page.into_iter().map(|t| t.turn_id));
    }
    found
}

pub async fn one_runner_holds_a_turn_until_its_lease_runs_out(s: &Storage) {
    let store = s.store.as_ref();
    let (owner, ses) = session(s).await;
    start(s, &owner, &ses, "msg_t1", true).await;
    assert_eq!(active(s).await, ["msg_t1"]);

    // A background turn is free for the first claim, and only the first:
    // in the millisecond it was started, and by a worker whose clock is
    // behind the one that started it.
    let claimed = turns::claim(store, &ses, "msg_t1", NOW_MS + 30_000, 3, NOW_MS - 5)
        .await
        .unwrap()
        .expect("claimed");
    assert_eq!((claimed.attempts, claimed.status), (1, TurnStatus::Running));
    assert!(claimed.background);
    assert!(
        turns::claim(store, &ses, "msg_t1", NOW_MS + 60_000, 3, NOW_MS + 2)
            .await
            .unwrap()
            .is_none()
    );
    // Renewed, it stays held; once the lease is out, another runner takes it.
    let renewed = turns::renew(store, &ses, "msg_t1", NOW_MS + 40_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(renewed.lease_until_ms, NOW_MS + 40_000);
    assert!(
        turns::claim(store, &ses, "msg_t1", NOW_MS + 90_000, 3, NOW_MS + 35_000)
            .await
            .unwrap()
            .is_none()
    );
    let second = turns::claim(store, &ses, "msg_t1", NOW_MS + 90_000, 3, NOW_MS + 41_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.attempts, 2);
    // Given back at the end of an invocation: taken again at once, and the
    // giving back spends no attempt.
    assert!(turns::release(store, &ses, "msg_t1").await.unwrap());
    let again = turns::claim(store, &ses, "msg_t1", NOW_MS + 90_000, 3, NOW_MS + 41_001)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.attempts, 2);
    // Out of attempts: nobody takes it.
    turns::claim(store, &ses, "msg_t1", NOW_MS + 200_000, 3, NOW_MS + 91_000)
        .await
        .unwrap()
        .unwrap();
    assert!(
        turns::claim(store, &ses, "msg_t1", NOW_MS + 400_000, 3, NOW_MS + 300_000)
            .await
            .unwrap()
            .is_none()
    );
}

pub async fn a_turn_ends_once_and_a_cancel_is_seen_by_its_runner(s: &Storage) {
    let store = s.store.as_ref();
    let (owner, ses) = session(s).await;
    start(s, &owner, &ses, "msg_t2", false).await;
    // A follower marks it (its runner then stores events more often).
    assert!(
        !turns::get(store, &ses, "msg_t2")
            .await
            .unwrap()
            .unwrap()
            .followed
    );
    turns::mark_followed(store, &ses, "msg_t2").await.unwrap();
    let followed = turns::get(store, &ses, "msg_t2").await.unwrap().unwrap();
    assert!(followed.followed);
    assert_eq!(followed.status, TurnStatus::Running);
    let cancelled = turns::request_cancel(store, &ses, "msg_t2")
        .await
        .unwrap()
        .unwrap();
    assert!(cancelled.cancel_requested);
    // The runner's renewal shows it.
    let seen = turns::renew(store, &ses, "msg_t2", NOW_MS + 60_000)
        .await
        .unwrap()
        .unwrap();
    assert!(seen.cancel_requested);
    let ending = Ending {
        status: TurnStatus::Cancelled,
        stop_reason: Some("cancelled".into()),
        model_calls: 2,
        cost_usd: Decimal::new(123, 6),
        waiting: Vec::new(),
    };
    assert!(turns::finish(store, &ses, "msg_t2", &ending).await.unwrap());
    // Once: a second ending (another runner) changes nothing.
    let late = Ending {
        status: TurnStatus::Complete,
        ..ending.clone()
    };
    assert!(!turns::finish(store, &ses, "msg_t2", &late).await.unwrap());
    let turn = turns::get(store, &ses, "msg_t2").await.unwrap().unwrap();
    assert_eq!(turn.status, TurnStatus::Cancelled);
    assert_eq!(turn.cost_usd, Decimal::new(123, 6));
    assert_eq!(turn.model_calls, 2);
    assert!(active(s).await.is_empty(), "out of the index once final");
    // A final turn is neither renewed nor cancelled again.
    assert!(turns::renew(store, &ses, "msg_t2", NOW_MS)
        .await
        .unwrap()
        .is_none());
    let again = turns::request_cancel(store, &ses, "msg_t2")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.status, TurnStatus::Cancelled);
    // Marking a final turn, or none, as followed does nothing.
    turns::mark_followed(store, &ses, "msg_t2").await.unwrap();
    turns::mark_followed(store, &ses, "msg_nope").await.unwrap();
    assert!(turns::get(store, &ses, "msg_nope").await.unwrap().is_none());
    assert!(turns::request_cancel(store, &ses, "msg_nope")
        .await
        .unwrap()
        .is_none());
}

pub async fn a_waiting_turn_is_answered_once(s: &Storage) {
    let store = s.store.as_ref();
    let (owner, ses) = session(s).await;
    start(s, &owner, &ses, "msg_t3", false).await;
    let waiting = Ending {
        status: TurnStatus::Waiting,
        stop_reason: Some("approval_required".into()),
        model_calls: 1,
        cost_usd: Decimal::ZERO,
        waiting: vec![Pending {
            tool_call_id: "call_1".into(),
            name: "deploy".into(),
            input: json!({"env": "prod"}),
            needs: Needs::Approval,
            message_id: "msg_t3".into(),
        }],
    };
    assert!(turns::finish(store, &ses, "msg_t3", &waiting)
        .await
        .unwrap());
    let latest = turns::latest(store, &ses).await.unwrap().unwrap();
    assert_eq!(latest.id, "msg_t3");
    assert_eq!(latest.waiting, waiting.waiting);
    // Two answers at once: one goes on, the other is refused.
    let answer = || vec![turns::answered_op(&ses, "msg_t3")];
    let (first, second) = tokio::join!(store.transact(answer()), store.transact(answer()));
    assert!(first.is_ok() != second.is_ok(), "{first:?} {second:?}");
    let turn = turns::get(store, &ses, "msg_t3").await.unwrap().unwrap();
    assert_eq!(turn.status, TurnStatus::Complete);
    // A cancelled waiting turn takes no answer.
    start(s, &owner, &ses, "msg_t4", false).await;
    assert!(turns::finish(store, &ses, "msg_t4", &waiting)
        .await
        .unwrap());
    turns::request_cancel(store, &ses, "msg_t4").await.unwrap();
    let refused = store
        .transact(vec![turns::answered_op(&ses, "msg_t4")])
        .await;
    assert!(refused.unwrap_err().is_condition_failure());
}

pub async fn events_read_back_in_order_from_any_point(s: &Storage) {
    let store = s.store.as_ref();
    let (owner, ses) = session(s).await;
    start(s, &owner, &ses, "msg_t5", false).await;
    let event = |id: u64| StoredEvent {
        id,
        event: if id == 24 { "done" } else { "delta" }.into(),
        data: json!({"text": format!("piece {id}")}).to_string(),
    };
    let expires = now_epoch_secs() + 3600;
    assert_eq!(
        turns::next_event_id(store, &ses, "msg_t5").await.unwrap(),
        0
    );
    // Batches of uneven sizes; one written twice (a retried write).
    for batch in [0..3, 3..10, 10..11, 11..25] {
        let events: Vec<_> = batch.map(event).collect();
        turns::append_events(store, &ses, "msg_t5", &events, expires)
            .await
            .unwrap();
        if events[0].id == 3 {
            turns::append_events(store, &ses, "msg_t5", &events, expires)
                .await
                .unwrap();
        }
    }
    let (all, cursor) = turns::events_after(store, &ses, "msg_t5", &EventsCursor::default())
        .await
        .unwrap();
    assert_eq!(all, (0..25).map(event).collect::<Vec<_>>());
    assert_eq!(
        turns::next_event_id(store, &ses, "msg_t5").await.unwrap(),
        25
    );
    // Read on from the cursor: only what came since.
    let (none, cursor) = turns::events_after(store, &ses, "msg_t5", &cursor)
        .await
        .unwrap();
    assert!(none.is_empty());
    turns::append_events(store, &ses, "msg_t5", &[event(25)], expires)
        .await
        .unwrap();
    let (new, _) = turns::events_after(store, &ses, "msg_t5", &cursor)
        .await
        .unwrap();
    assert_eq!(new, [event(25)]);
    // A reconnect reads from the batch that holds the event it wants
    // first, not from the start: event 12 is in the batch of 11..25.
    for (wanted, first) in [(0, 0), (3, 3), (5, 3), (10, 10), (12, 11), (25, 25)] {
        let cursor = turns::cursor_at(store, &ses, "msg_t5", wanted)
            .await
            .unwrap();
        let (from, _) = turns::events_after(store, &ses, "msg_t5", &cursor)
            .await
            .unwrap();
        assert_eq!(from.first().map(|e| e.id), Some(first), "event {wanted}");
        assert_eq!(from.last().map(|e| e.id), Some(25));
    }
    let cursor = turns::cursor_at(store, &ses, "msg_t5", 26).await.unwrap();
    let (past, _) = turns::events_after(store, &ses, "msg_t5", &cursor)
        .await
        .unwrap();
    assert!(past.iter().all(|e| e.id == 25), "{past:?}");
    // Another turn's events are its own.
    let (other, _) = turns::events_after(store, &ses, "msg_t6", &EventsCursor::default())
        .await
        .unwrap();
    assert!(other.is_empty());
}
