//! The sweeper on both backends: each stranded state it must repair is
//! made here, by a fault injected into the real store or by writing the
//! state directly, then one pass (or two) must repair it exactly once.

use std::sync::Arc;
use std::time::Duration;

use lambent_app::chat::{self, Outcome, ReplyText, Target};
use lambent_app::state::State;
use lambent_app::sweeper;
use lambent_core::chat::{Role, Turn, Usage};
use lambent_core::clock::ManualClock;
use lambent_ports::queue::QueueName;
use lambent_ports::ItemStore;
use lambent_store::budgets;
use lambent_store::messages::MessageStatus;
use lambent_store::runs::RunStatus;
use lambent_store::users::{self, UserChange};
use lambent_testkit::faults::{Fault, Faults, FaultyStore};
use rust_decimal::Decimal;
use serde_json::json;

use crate::workflow_storage::{Flow, STEP_COST};

/// The flow's state with time moved `ahead` (the sweeper judges ages by it).
fn later(flow: &Flow, ahead: Duration) -> State {
    let clock = ManualClock::starting_now();
    clock.advance(ahead);
    State {
        clock,
        ..flow.state.clone()
    }
}

/// Takes every message off the steps queue, as if lost; returns how many.
async fn lose_step_messages(flow: &Flow) -> usize {
    let lost = flow
        .state
        .queue
        .receive(
            QueueName::Steps,
            10,
            Duration::from_secs(60),
            Duration::from_millis(300),
        )
        .await
        .unwrap();
    for message in &lost {
        flow.state
            .queue
            .delete(QueueName::Steps, &message.receipt)
            .await
            .unwrap();
    }
    lost.len()
}

/// The owner's month: (committed, spent).
async fn month(flow: &Flow) -> (Decimal, Decimal) {
    let today = lambent_core::time::today();
    let item = flow
        .state
        .store
        .get(&budgets::month_key(
            &flow.owner,
            lambent_core::time::month_of(&today),
        ))
        .await
        .unwrap()
        .unwrap_or_else(|| lambent_ports::Item::new(lambent_ports::Key::new("-", "-")));
    let get = |name| item.get_decimal(name).unwrap_or_default().normalize();
    (get("committed_usd"), get("spent_usd"))
}

/// Puts the flow's owner under a monthly limit, so calls hold reservations.
async fn limited(flow: &Flow) {
    users::update(
        flow.state.store.as_ref(),
        &flow.owner,
        UserChange {
            monthly_budget_usd: Some(Some(Decimal::from(100))),
            ..Default::default()
        },
    )
    .await
    .unwrap();
}

/// A call of the flow's agent under a monthly limit, reserved and ready.
async fn prepared(flow: &Flow) -> chat::Prepared {
    limited(flow).await;
    let target = Target::of_agent(&flow.state, &flow.owner, &flow.agent, "the agent")
        .await
        .unwrap();
    chat::prepare_call(
        &flow.state,
        &flow.owner,
        target,
        vec![Turn::text(Role::User, "hello")],
    )
    .await
    .unwrap()
}

fn outcome() -> Outcome {
    let mut text = ReplyText::default();
    text.push("hi there");
    Outcome {
        text,
        tool_calls: Vec::new(),
        status: MessageStatus::Complete,
        usage: Usage {
            input_tokens: 100,
            output_tokens: 20,
            ..Usage::default()
        },
        stop_reason: Some("end_turn".into()),
    }
}

pub async fn a_settle_left_by_an_outage_is_finished_once_by_the_sweeper(flow: &Flow) {
    let call = prepared(flow).await;
    let (reserved, _) = month(flow).await;
    assert!(reserved > Decimal::ZERO);

    // The call's usage cannot be written: every try of the settle fails.
    let faults = Faults::new();
    faults.fail_writes(
        |k| k.sk.starts_with("PENDING#"),
        0,
        u64::MAX,
        Fault::Unavailable,
    );
    let faulty = FaultyStore::new(flow.state.store.clone(), faults.clone());
    let settled = chat::settle(&faulty, &call, outcome()).await.unwrap();
    assert_eq!(
        settled.cost_usd,
        Decimal::from_str_exact(STEP_COST).unwrap()
    );
    assert_eq!(flow.billed_today().await, (Decimal::ZERO, 0));
    assert_eq!(month(flow).await, (reserved, Decimal::ZERO));

    // A pass within the grace leaves a settle that may be in progress.
    let swept = sweeper::sweep(&later(flow, Duration::ZERO)).await;
    assert_eq!(swept.settled, 0, "{swept:?}");
    let swept = sweeper::sweep(&later(flow, Duration::from_secs(11))).await;
    assert_eq!(swept.settled, 1, "{swept:?}");
    assert_eq!(flow.billed_today().await, (settled.cost_usd, 1));
    assert_eq!(month(flow).await, (settled.cost_usd, settled.cost_usd));

    // Idempotent: nothing is left for another pass.
    let swept = sweeper::sweep(&later(flow, Duration::from_secs(11))).await;
    assert_eq!(swept, sweeper::Swept::default());
    assert_eq!(flow.billed_today().await, (settled.cost_usd, 1));
}

pub async fn a_settle_whose_answer_is_lost_counts_once(flow: &Flow) {
    let call = prepared(flow).await;
    let faults = Faults::new();
    // The settle lands, but its caller hears a timeout and tries again.
    faults.fail_writes(|k| k.sk.starts_with("PENDING#"), 0, 1, Fault::LostAnswer);
    let faulty = FaultyStore::new(flow.state.store.clone(), faults.clone());
    let settled = chat::settle(&faulty, &call, outcome()).await.unwrap();
    assert_eq!(faults.injected(), 1);
    assert_eq!(flow.billed_today().await, (settled.cost_usd, 1));
    assert_eq!(month(flow).await, (settled.cost_usd, settled.cost_usd));
    // Nothing was left for the sweeper but to fold the call's usage, once.
    let swept = sweeper::sweep(&later(flow, Duration::from_secs(3600))).await;
    assert_eq!(swept, folded_one());
    assert_eq!(flow.billed_today().await, (settled.cost_usd, 1));
}

/// A pass that only folded one call's pending usage.
fn folded_one() -> sweeper::Swept {
    sweeper::Swept {
        folded: 1,
        ..sweeper::Swept::default()
    }
}

pub async fn a_settle_that_conflicts_on_contention_is_retried_and_counts_once(flow: &Flow) {
    let call = prepared(flow).await;
    let faults = Faults::new();
    // Twice cancelled as DynamoDB cancels a transaction racing another on
    // the same items; the third try lands.
    faults.fail_writes(|k| k.sk.starts_with("PENDING#"), 0, 2, Fault::Conflict);
    let faulty = FaultyStore::new(flow.state.store.clone(), faults.clone());
    let settled = chat::settle(&faulty, &call, outcome()).await.unwrap();
    assert_eq!(faults.injected(), 2);
    assert_eq!(flow.billed_today().await, (settled.cost_usd, 1));
    assert_eq!(month(flow).await, (settled.cost_usd, settled.cost_usd));
    // Nothing was left for the sweeper but to fold the call's usage.
    let swept = sweeper::sweep(&later(flow, Duration::from_secs(3600))).await;
    assert_eq!(swept, folded_one());
    assert_eq!(flow.billed_today().await, (settled.cost_usd, 1));
}

pub async fn an_abandoned_reservation_is_released_after_the_stale_time(flow: &Flow) {
    // Reserved, then its process died: no outcome, ever.
    let call = prepared(flow).await;
    drop(call);
    let (reserved, _) = month(flow).await;
    assert!(reserved > Decimal::ZERO);

    let stale = flow.state.config.sweep_stale;
    let swept = sweeper::sweep(&later(flow, stale / 2)).await;
    assert_eq!(swept.released, 0, "a call that may still run was released");
    let swept = sweeper::sweep(&later(flow, stale + Duration::from_secs(1))).await;
    assert_eq!(swept.released, 1, "{swept:?}");
    assert_eq!(month(flow).await, (Decimal::ZERO, Decimal::ZERO));
    let swept = sweeper::sweep(&later(flow, stale * 2)).await;
    assert_eq!(swept, sweeper::Swept::default());
}

pub async fn a_call_that_outlives_its_release_is_still_counted_once(flow: &Flow) {
    let call = prepared(flow).await;
    let stale = flow.state.config.sweep_stale;
    let swept = sweeper::sweep(&later(flow, stale + Duration::from_secs(1))).await;
    assert_eq!(swept.released, 1);
    // The call was alive after all: its settle counts its cost, and only it.
    let settled = chat::settle(flow.state.store.as_ref(), &call, outcome())
        .await
        .unwrap();
    assert_eq!(flow.billed_today().await, (settled.cost_usd, 1));
    assert_eq!(month(flow).await, (settled.cost_usd, settled.cost_usd));
}

pub async fn a_run_whose_messages_were_lost_is_finished_after_the_sweeper_requeues_it(flow: &Flow) {
    let workflow = flow.workflow(lambent_testkit::DIAMOND).await;
    let run_id = flow.start(&workflow, json!({"topic": "owls"}), None).await;
    // Its root steps' messages are lost.
    assert_eq!(lose_step_messages(flow).await, 2);
    // The first look notes the stranded steps; the next, a stale time
    // later, enqueues them again.
    let stale = flow.state.config.sweep_stale;
    let first = sweeper::sweep(&later(flow, Duration::ZERO)).await;
    assert_eq!(first.requeued, 0, "{first:?}");
    let second = sweeper::sweep(&later(flow, stale + Duration::from_secs(1))).await;
    assert_eq!(second.requeued, 2, "{second:?}");
    flow.drive(&flow.worker, &[&run_id], 1).await;
    assert_eq!(flow.run(&run_id).await.status, RunStatus::Succeeded);
    // A finished run leaves the index.
    let done = sweeper::sweep(&later(flow, stale * 3)).await;
    assert_eq!(done.forgotten_runs, 1, "{done:?}");
    assert_eq!(
        sweeper::sweep(&later(flow, stale * 4)).await,
        sweeper::Swept::default()
    );
}

pub async fn a_run_whose_step_used_up_its_attempts_is_failed_by_the_sweeper(flow: &Flow) {
    let workflow = flow.workflow(&[("only", "Say {{input.x}}", &[])]).await;
    let run_id = flow.start(&workflow, json!({"x": "y"}), None).await;
    // Its worker claimed it on its last attempt and died; the message went
    // to the dead-letter queue.
    let store: Arc<dyn ItemStore> = flow.state.store.clone();
    store
        .update(
            &lambent_store::runs::step_key(&run_id, "only"),
            lambent_ports::Update::new()
                .set("status", "running")
                .set("attempts", i64::from(flow.state.config.step_max_attempts))
                .set("lease", "dead-worker")
                .set("lease_until", 1_i64),
            None,
        )
        .await
        .unwrap();
    lose_step_messages(flow).await;
    let stale = flow.state.config.sweep_stale;
    sweeper::sweep(&later(flow, Duration::ZERO)).await;
    let swept = sweeper::sweep(&later(flow, stale + Duration::from_secs(1))).await;
    assert_eq!((swept.failed_runs, swept.requeued), (1, 0), "{swept:?}");
    let run = flow.run(&run_id).await;
    assert_eq!(run.status, RunStatus::Failed);
}

pub async fn a_failed_checkpoint_bills_each_provider_call_once(flow: &Flow) {
    use lambent_app::workflows::Worker;
    limited(flow).await;
    let workflow = flow.workflow(&[("only", "Say {{input.x}}", &[])]).await;
    for (fault, calls) in [(Fault::Unavailable, 2), (Fault::LostAnswer, 1)] {
        let (billed_before, calls_before) = flow.billed_today().await;
        let asked_before = flow.provider_calls();
        let faults = Faults::new();
        // The step's checkpoint is the transaction that writes its record.
        faults.fail_writes(|k| k.sk == "STEP#only", 1, 1, fault);
        let faulty = State {
            store: Arc::new(FaultyStore::new(flow.state.store.clone(), faults.clone())),
            ..flow.state.clone()
        };
        let worker = Worker::new(faulty).unwrap();
        let run_id = flow.start(&workflow, json!({"x": "y"}), None).await;
        flow.drive(&worker, &[&run_id], 1).await;
        assert_eq!(faults.injected(), 1, "{fault:?}");
        assert_eq!(flow.run(&run_id).await.status, RunStatus::Succeeded);
        // Every call the provider answered is billed, once.
        assert_eq!(flow.provider_calls() - asked_before, calls, "{fault:?}");
        let (billed, counted) = flow.billed_today().await;
        assert_eq!(counted - calls_before, calls as u64, "{fault:?}");
        assert_eq!(
            billed - billed_before,
            Decimal::from_str_exact(STEP_COST).unwrap() * Decimal::from(calls as u64),
            "{fault:?}"
        );
    }
    // No reservation is left behind: all that was reserved was settled.
    let (committed, spent) = month(flow).await;
    assert_eq!(committed, spent);
}
