//! Costs and budgets on the store port, run on both backends (`tests/integration`
//! on the embedded store, `tests/aws` on DynamoDB in the emulator): a call
//! settled again and again counts once, reservations never pass a limit under
//! concurrency, and usage reports read a date range from its first day.

use std::str::FromStr;
use std::time::Duration;

use futures::future::join_all;
use lambent_app::chat::{self, Outcome, Prepared, Record, ReplyText};
use lambent_core::provider::ProviderKind;
use lambent_core::secret::SecretString;
use lambent_core::Error;
use lambent_llm::{ChatRequest, Endpoint, Usage};
use lambent_store::agents::{self, AgentSpec};
use lambent_store::budgets;
use lambent_store::messages::{self, MessageStatus};
use lambent_store::models::{Catalog, Prices};
use lambent_store::sessions::{self, NewSession, Session};
use lambent_store::usage::{self, CallFacts, Dimension, Scope};
use rust_decimal::Decimal;

use crate::identity_storage::{provider, user, Storage};

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

fn prices() -> Prices {
    Prices {
        input_per_mtok: d("3"),
        output_per_mtok: d("15"),
        cache_read_per_mtok: d("0.3"),
        cache_write_per_mtok: d("3.75"),
    }
}

/// A member with an agent and a session (budget as given).
pub(crate) async fn session(s: &Storage, budget: Option<&str>) -> (String, String, Session) {
    let owner = user(s, "spender").await;
    let provider_id = provider(s, &owner, "p").await;
    let agent = agents::create(
        s.store.as_ref(),
        &Catalog::new(Duration::ZERO),
        &owner,
        &agents::new_id(),
        AgentSpec {
            name: "a".into(),
            provider_id,
            model: "claude-sonnet-4-5".into(),
            system_prompt: None,
            temperature: None,
            max_tokens: 100,
            context_token_budget: 1000,
            tools: Default::default(),
            tool_choice: Default::default(),
            max_tool_rounds: agents::DEFAULT_MAX_TOOL_ROUNDS,
        },
    )
    .await
    .unwrap();
    let session = sessions::create(
        s.store.as_ref(),
        &owner,
        NewSession {
            agent_id: agent.id.clone(),
            title: None,
            budget_usd: budget.map(d),
        },
        lambent_core::time::now_epoch_secs() + 3600,
    )
    .await
    .unwrap();
    (owner, agent.id, session)
}

/// A reservation for a new call, now.
async fn reserve(
    store: &dyn lambent_ports::ItemStore,
    owner: &str,
    month: &str,
    user_limit: Option<rust_decimal::Decimal>,
    session: Option<&Session>,
    worst: rust_decimal::Decimal,
) -> lambent_core::error::Result<budgets::Reservation> {
    budgets::reserve(
        store,
        &lambent_core::ids::new_sortable_id("call"),
        owner,
        month,
        user_limit,
        session,
        worst,
        lambent_core::time::now_epoch_millis(),
        |_| String::new(),
    )
    .await
}

fn turn(
    owner: &str,
    agent: &str,
    session: &Session,
    reservation: budgets::Reservation,
) -> Prepared {
    let (user_message_id, assistant_message_id) = messages::turn_ids();
    Prepared {
        owner: owner.into(),
        agent_id: Some(agent.into()),
        model: "claude-sonnet-4-5".into(),
        prices: prices(),
        endpoint: Endpoint {
            kind: ProviderKind::Anthropic,
            base_url: None,
            api_key: SecretString::from("unused".to_owned()),
        },
        request: ChatRequest {
            model: "claude-sonnet-4-5".into(),
            system: None,
            turns: Vec::new(),
            max_tokens: 100,
            temperature: None,
            ..ChatRequest::default()
        },
        reservation,
        record: Record::SessionTurn {
            session_id: session.id.clone(),
            turn_id: assistant_message_id.clone(),
            input_message_ids: vec![user_message_id],
            assistant_message_id,
            input: chat::UserInput::Content(vec![lambent_core::chat::Part::Text("hi".into())]),
        },
        day: lambent_core::time::today(),
        prepared_at: lambent_core::time::now_epoch_secs(),
        expires_at: lambent_core::time::now_epoch_secs() + 3600,
        prompt_tokens: 10,
        context: None,
        metrics: Default::default(),
    }
}

fn outcome() -> Outcome {
    let mut text = ReplyText::default();
    text.push("counted once");
    Outcome {
        tool_calls: Vec::new(),
        text,
        status: MessageStatus::Complete,
        usage: Usage {
            input_tokens: 100,
            output_tokens: 20,
            cache_read_tokens: 1000,
            cache_write_tokens: 40,
            cache_write_1h_tokens: 0,
        },
        stop_reason: Some("end_turn".into()),
    }
}

/// 100*3 + 20*15 + 1000*0.3 + 40*3.75 = 1050 micro-dollars.
const COST: &str = "0.00105";

pub async fn a_call_settled_again_and_again_counts_once(s: &Storage) {
    let (owner, agent, ses) = session(s, Some("1")).await;
    let store = s.store.as_ref();
    let worst = d("0.01");
    let month = lambent_core::time::today()[..7].to_owned();
    let reservation = reserve(store, &owner, &month, Some(d("5")), Some(&ses), worst)
        .await
        .unwrap();
    let call = turn(&owner, &agent, &ses, reservation);

    let first = chat::settle(store, &call, outcome()).await.unwrap();
    assert_eq!(first.cost_usd, d(COST));
    // A retry after an ambiguous failure, and racing retries.
    chat::settle(store, &call, outcome()).await.unwrap();
    for again in join_all((0..4).map(|_| chat::settle(store, &call, outcome()))).await {
        assert_eq!(again.unwrap().cost_usd, d(COST));
    }

    let after = sessions::get(store, &owner, &ses.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after.cost_usd, d(COST));
    assert_eq!(after.usage.cache_read_tokens, 1000);
    // The reply (the user's message counts itself where it is written).
    assert_eq!(after.message_count, 1);
    // The reservation was settled once: committed is the cost, nothing held.
    assert_eq!(after.committed_usd, d(COST));
    let scope = Scope::User(owner.clone());
    let today = lambent_core::time::today();
    for dimension in [
        Dimension::Day,
        Dimension::Agent,
        Dimension::Model,
        Dimension::Session,
    ] {
        let (groups, total) = usage::report(store, &scope, dimension, &today, &today)
            .await
            .unwrap();
        assert_eq!(groups.len(), 1, "{dimension:?}");
        assert_eq!(total.calls, 1, "{dimension:?}");
        assert_eq!(total.cost_usd, d(COST), "{dimension:?}");
    }
    let (groups, _) = usage::report(
        store,
        &Scope::User(owner.clone()),
        Dimension::Agent,
        &today,
        &today,
    )
    .await
    .unwrap();
    assert_eq!(groups[0].key.as_deref(), Some(agent.as_str()));
    let (users, everyone) = usage::report(store, &Scope::Everyone, Dimension::User, &today, &today)
        .await
        .unwrap();
    assert!(users
        .iter()
        .any(|g| g.key.as_deref() == Some(owner.as_str()) && g.totals.calls == 1));
    assert!(everyone.calls >= 1);
    let page = messages::page(
        store,
        &ses.id,
        lambent_ports::Order::Ascending,
        lambent_store::PageRequest {
            limit: 10,
            after: None,
        },
    )
    .await
    .unwrap();
    assert_eq!(
        page.items.len(),
        1,
        "only the assistant message was written here"
    );
    assert_eq!(page.items[0].cost_usd, Some(d(COST)));

    // Deleting the user deletes the session, its messages, its aggregates
    // and its month: nothing of theirs is left.
    lambent_store::users::delete(store, &owner).await.unwrap();
    for pk in [
        lambent_store::users::partition(&owner),
        sessions::messages_partition(&ses.id),
    ] {
        let left = store
            .query(lambent_ports::Query::partition(pk.as_str()))
            .await
            .unwrap();
        assert!(left.items.is_empty(), "{pk} keeps {:?}", left.items);
    }
}

pub async fn reservations_never_pass_a_limit_under_concurrency(s: &Storage) {
    // A session budget of 0.05 fits five reservations of 0.01, never six.
    let (owner, _, ses) = session(s, Some("0.05")).await;
    let store = s.store.as_ref();
    let month = lambent_core::time::today()[..7].to_owned();
    let results =
        join_all((0..16).map(|_| reserve(store, &owner, &month, None, Some(&ses), d("0.01"))))
            .await;
    let granted = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(granted, 5, "{results:?}");
    for refused in results.iter().filter_map(|r| r.as_ref().err()) {
        assert!(matches!(refused, Error::BudgetExceeded(_)), "{refused:?}");
    }
    let after = sessions::get(store, &owner, &ses.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after.committed_usd, d("0.05"));

    // The same for a user's month, with the month's item created by the race.
    let (owner, _, _) = session(s, None).await;
    let results =
        join_all((0..16).map(|_| reserve(store, &owner, &month, Some(d("0.03")), None, d("0.01"))))
            .await;
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        3,
        "{results:?}"
    );
    // Releasing gives the room back.
    let granted = results.into_iter().find_map(Result::ok).unwrap();
    budgets::release(store, &granted).await.unwrap();
    assert!(
        reserve(store, &owner, &month, Some(d("0.03")), None, d("0.01"))
            .await
            .is_ok()
    );
    assert!(
        reserve(store, &owner, &month, Some(d("0.03")), None, d("0.01"))
            .await
            .is_err()
    );

    // A reservation on a session deleted meanwhile still gives the month's
    // share back.
    let (owner, _, ses) = session(s, Some("1")).await;
    let held = reserve(
        store,
        &owner,
        &month,
        Some(d("0.02")),
        Some(&ses),
        d("0.02"),
    )
    .await
    .unwrap();
    sessions::delete(store, &owner, &ses.id).await.unwrap();
    budgets::release(store, &held).await.unwrap();
    assert!(
        reserve(store, &owner, &month, Some(d("0.02")), None, d("0.02"))
            .await
            .is_ok(),
        "the month's share was not released"
    );
}

pub async fn usage_reports_cover_exactly_their_days(s: &Storage) {
    let owner = user(s, "dated").await;
    let store = s.store.as_ref();
    for (day, agent) in [
        ("2026-10-31", "agt_a"),
        ("2026-11-01", "agt_a"),
        ("2026-11-01", "agt_b"),
        ("2026-11-15", "agt_b"),
        ("2026-11-30", "agt_a"),
        ("2026-12-01", "agt_a"),
    ] {
        let facts = CallFacts {
            call_id: &format!("call_{day}_{agent}"),
            owner: &owner,
            agent_id: Some(agent),
            session_id: None,
            model: "m",
            day,
            usage: Usage {
                output_tokens: 1,
                ..Usage::default()
            },
            cost_usd: d("0.25"),
        };
        count_call(store, &facts).await;
        // The first three folded into the aggregates, the rest still
        // pending: a report reads both.
        if day == "2026-11-01" && agent == "agt_b" {
            fold_everything(store).await;
        }
    }
    let scope = Scope::User(owner.clone());
    let (days, total) = usage::report(store, &scope, Dimension::Day, "2026-11-01", "2026-11-30")
        .await
        .unwrap();
    let keys: Vec<_> = days.iter().map(|g| g.key.clone().unwrap()).collect();
    assert_eq!(keys, ["2026-11-01", "2026-11-15", "2026-11-30"]);
    assert_eq!(days[0].totals.calls, 2);
    assert_eq!(total.calls, 4);
    assert_eq!(total.cost_usd, d("1"));
    let (agents, total) =
        usage::report(store, &scope, Dimension::Agent, "2026-11-01", "2026-11-01")
            .await
            .unwrap();
    assert_eq!(agents.len(), 2);
    assert_eq!(total.calls, 2);
    let (_, total) = usage::report(store, &scope, Dimension::Model, "2026-12-01", "2026-12-31")
        .await
        .unwrap();
    assert_eq!(total.calls, 1);
    let (none, total) = usage::report(store, &scope, Dimension::Day, "2025-01-01", "2025-12-31")
        .await
        .unwrap();
    assert!(none.is_empty());
    assert_eq!(total.calls, 0);
}

/// The deployment's aggregates (and the pending entries they are folded
/// from) are spread over shards by call ID, so no item is written by every
/// call, and summed when read, with those kept in the one partition of
/// before.
pub async fn a_deployment_report_sums_every_shard_and_the_unsharded_partition(s: &Storage) {
    use lambent_ports::{Key, Update};
    let store = s.store.as_ref();
    // A day no other test writes: the deployment's report sees every user.
    let day = "2001-02-03";
    let mut shards = std::collections::BTreeSet::new();
    let owner = user(s, "sharded").await;
    for n in 0..40 {
        let call_id = format!("call_sharded_{n}");
        let op = usage::pending_op(&CallFacts {
            call_id: &call_id,
            owner: &owner,
            agent_id: Some("agt_sharded"),
            session_id: None,
            model: "m",
            day,
            usage: Usage {
                output_tokens: 2,
                ..Usage::default()
            },
            cost_usd: d("0.01"),
        });
        assert!(op.key().pk.starts_with("USAGE#"), "{}", op.key());
        shards.insert(op.key().pk.clone());
        store.transact(vec![op]).await.unwrap();
    }
    assert!(shards.len() > 4, "40 calls in {} shards", shards.len());
    // Half folded (into the deployment's aggregates of some shard), half
    // still pending in theirs.
    assert_eq!(usage::fold(store, 20).await.unwrap(), 20);
    // An aggregate from before the shards.
    store
        .update(
            &Key::new("USAGE", format!("USAGE#DAY#{day}#-")),
            Update::new()
                .add("calls", Decimal::from(3))
                .add("output_tokens", Decimal::from(6))
                .add("cost_usd", d("0.5")),
            None,
        )
        .await
        .unwrap();
    let (days, total) = usage::report(store, &Scope::Everyone, Dimension::Day, day, day)
        .await
        .unwrap();
    assert_eq!(days.len(), 1);
    assert_eq!(total.calls, 43);
    assert_eq!(total.output_tokens, 86);
    assert_eq!(total.cost_usd, d("0.9"));
    let (users, _) = usage::report(store, &Scope::Everyone, Dimension::User, day, day)
        .await
        .unwrap();
    assert_eq!(users.len(), 1);
    assert_eq!(users[0].key.as_deref(), Some(owner.as_str()));
    assert_eq!(users[0].totals.calls, 40);
    assert_eq!(users[0].totals.cost_usd, d("0.4"));
    // The user's own report is not sharded.
    let (_, mine) = usage::report(store, &Scope::User(owner), Dimension::Agent, day, day)
        .await
        .unwrap();
    assert_eq!(mine.calls, 40);
}

/// Counts one call as its settle does: its pending usage entry.
async fn count_call(store: &dyn lambent_ports::ItemStore, facts: &CallFacts<'_>) {
    store
        .transact(vec![usage::pending_op(facts)])
        .await
        .unwrap();
}

/// Folds every shard's pending usage entries into the aggregates.
async fn fold_everything(store: &dyn lambent_ports::ItemStore) -> usize {
    usage::fold(store, usize::MAX).await.unwrap()
}

fn a_call<'a>(call_id: &'a str, owner: &'a str, session: &'a str, day: &'a str) -> CallFacts<'a> {
    CallFacts {
        call_id,
        owner,
        agent_id: Some("agt_folded"),
        session_id: Some(session),
        model: "m",
        day,
        usage: Usage {
            input_tokens: 10,
            output_tokens: 3,
            cache_read_tokens: 2,
            cache_write_tokens: 1,
            cache_write_1h_tokens: 0,
        },
        cost_usd: d("0.0000001"),
    }
}

/// Every report of a user and of the deployment, by each dimension.
async fn every_report(
    store: &dyn lambent_ports::ItemStore,
    owner: &str,
    day: &str,
) -> Vec<(Vec<usage::Group>, usage::Totals)> {
    let mut all = Vec::new();
    for scope in [Scope::User(owner.to_owned()), Scope::Everyone] {
        for dimension in [
            Dimension::Day,
            Dimension::Agent,
            Dimension::Model,
            Dimension::Session,
            Dimension::User,
        ] {
            all.push(
                usage::report(store, &scope, dimension, day, day)
                    .await
                    .unwrap(),
            );
        }
    }
    all
}

/// A call's pending usage counts in every report at once, and the same
/// once folded into the aggregates: the fold moves it, exactly once (a
/// second fold finds nothing; the entries are gone).
pub async fn pending_usage_counts_the_same_before_and_after_its_fold(s: &Storage) {
    let store = s.store.as_ref();
    let owner = user(s, "folded").await;
    // A day no other test writes.
    let day = "2001-03-04";
    for n in 0..30 {
        let call_id = format!("call_folded_{n}");
        let session = format!("ses_folded_{}", n % 3);
        let facts = a_call(&call_id, &owner, &session, day);
        count_call(store, &facts).await;
    }
    let pending = every_report(store, &owner, day).await;
    let (sessions, total) = &pending[3];
    assert_eq!(total.calls, 30);
    assert_eq!(total.input_tokens, 300);
    assert_eq!(total.cost_usd, d("0.000003"));
    assert_eq!(sessions.len(), 3);
    assert_eq!(
        pending[0].1, pending[5].1,
        "the user's and the deployment's days differ"
    );
    assert_eq!(
        pending[9].0.len(),
        1,
        "one user in the deployment's report by user"
    );

    assert_eq!(fold_everything(store).await, 30);
    assert_eq!(every_report(store, &owner, day).await, pending);
    assert_eq!(fold_everything(store).await, 0);
    assert_eq!(every_report(store, &owner, day).await, pending);
}

/// A user deleted before their last calls were folded: the fold counts
/// those calls in the deployment's aggregates and puts nothing back in the
/// partition the deletion emptied.
pub async fn a_deleted_users_pending_usage_is_folded_for_the_deployment_only(s: &Storage) {
    let store = s.store.as_ref();
    let owner = user(s, "leaving").await;
    let day = "2001-05-06";
    for n in 0..3 {
        let call_id = format!("call_leaving_{n}");
        let facts = a_call(&call_id, &owner, "ses_leaving", day);
        count_call(store, &facts).await;
    }
    lambent_store::users::delete(store, &owner).await.unwrap();
    assert_eq!(fold_everything(store).await, 3);
    let left = store
        .query(lambent_ports::Query::partition(
            lambent_store::users::partition(&owner),
        ))
        .await
        .unwrap();
    assert!(left.items.is_empty(), "{:#?}", left.items);
    let (users, total) = usage::report(store, &Scope::Everyone, Dimension::User, day, day)
        .await
        .unwrap();
    assert_eq!(total.calls, 3);
    assert_eq!(users.len(), 1);
    assert_eq!(users[0].key.as_deref(), Some(owner.as_str()));
}

/// A store that, once, folds every pending entry just before it answers a
/// report's first read of pending entries: the fold lands between the
/// report's read of the aggregates and its read of what is pending.
struct FoldingMidReport {
    inner: std::sync::Arc<dyn lambent_ports::ItemStore>,
    folded: tokio::sync::Mutex<Option<usize>>,
}

#[async_trait::async_trait]
impl lambent_ports::ItemStore for FoldingMidReport {
    async fn get(
        &self,
        key: &lambent_ports::Key,
    ) -> lambent_ports::store::StoreResult<Option<lambent_ports::Item>> {
        self.inner.get(key).await
    }
    async fn put(
        &self,
        item: lambent_ports::Item,
        condition: Option<lambent_ports::Condition>,
    ) -> lambent_ports::store::StoreResult<()> {
        self.inner.put(item, condition).await
    }
    async fn update(
        &self,
        key: &lambent_ports::Key,
        update: lambent_ports::Update,
        condition: Option<lambent_ports::Condition>,
    ) -> lambent_ports::store::StoreResult<lambent_ports::Item> {
        self.inner.update(key, update, condition).await
    }
    async fn delete(
        &self,
        key: &lambent_ports::Key,
        condition: Option<lambent_ports::Condition>,
    ) -> lambent_ports::store::StoreResult<Option<lambent_ports::Item>> {
        self.inner.delete(key, condition).await
    }
    async fn query(
        &self,
        query: lambent_ports::Query,
    ) -> lambent_ports::store::StoreResult<lambent_ports::Page> {
        if query.sk_prefix.starts_with("PENDING#") {
            let mut folded = self.folded.lock().await;
            if folded.is_none() {
                *folded = Some(fold_everything(self.inner.as_ref()).await);
            }
        }
        self.inner.query(query).await
    }
    async fn transact(
        &self,
        ops: Vec<lambent_ports::TxOp>,
    ) -> lambent_ports::store::StoreResult<()> {
        self.inner.transact(ops).await
    }
    async fn ping(&self) -> lambent_ports::store::StoreResult<()> {
        self.inner.ping().await
    }
}

/// A fold that lands while a report reads would move calls from what the
/// report reads second to what it read first (counted in neither) or the
/// other way (counted twice); the shards' fold counts, read before and
/// after, make the report read again, so it is exact all the same.
pub async fn a_report_that_meets_a_fold_stays_exact(s: &Storage) {
    let owner = user(s, "raced").await;
    let day = "2001-04-05";
    for n in 0..20 {
        let call_id = format!("call_raced_{n}");
        let facts = a_call(&call_id, &owner, "ses_raced", day);
        count_call(s.store.as_ref(), &facts).await;
    }
    for (scope, calls) in [(Scope::User(owner.clone()), 20), (Scope::Everyone, 40)] {
        let racing = FoldingMidReport {
            inner: s.store.clone(),
            folded: tokio::sync::Mutex::new(None),
        };
        let (groups, total) = usage::report(&racing, &scope, Dimension::Session, day, day)
            .await
            .unwrap();
        assert!(
            racing.folded.lock().await.is_some(),
            "no fold met the report"
        );
        assert_eq!(total.calls, calls, "{scope:?}");
        assert_eq!(total.input_tokens, calls * 10, "{scope:?}");
        assert_eq!(groups.len(), 1, "{scope:?}");
        // Another 20 pending (and 20 folded) for the deployment's report.
        if calls == 20 {
            for n in 20..40 {
                let call_id = format!("call_raced_{n}");
                let facts = a_call(&call_id, &owner, "ses_raced", day);
                count_call(s.store.as_ref(), &facts).await;
            }
        }
    }
}

pub async fn a_tool_conversation_is_stored_and_read_back_as_turns(s: &Storage) {
    use lambent_core::chat::{
        ContentPart, Image, ImageSource, Part, Role, ToolCall, ToolResult, Turn,
    };
    use lambent_store::messages::MessageRole;

    let (owner, _agent, ses) = session(s, None).await;
    let store = s.store.as_ref();
    let expires = lambent_core::time::now_epoch_secs() + 3600;
    let start = lambent_core::time::now_epoch_millis();
    // Time-ordered IDs, made once (each call of sortable_id_at is unique).
    let ids: Vec<String> = (0..5)
        .map(|k| lambent_core::ids::sortable_id_at(messages::ID_PREFIX, start + k))
        .collect();
    let id = |k: usize| ids[k].clone();
    let question = vec![
        Part::Text("Weather here and there?".into()),
        Part::Image(Image::Base64 {
            media_type: "image/png".into(),
            data: "iVBOR".into(),
        }),
    ];
    let calls = vec![
        ToolCall {
            id: "call_1".into(),
            name: "weather".into(),
            input: serde_json::json!({"city": "Zürich"}),
        },
        ToolCall {
            id: "call_2".into(),
            name: "weather".into(),
            input: serde_json::json!({"city": "Oslo"}),
        },
    ];
    let results = vec![
        ToolResult {
            tool_call_id: "call_1".into(),
            content: "12 °C".into(),
            is_error: false,
        },
        ToolResult {
            tool_call_id: "call_2".into(),
            content: "no station".into(),
            is_error: true,
        },
    ];
    let reply = |text: &str, tool_calls: Vec<ToolCall>| messages::Reply {
        text: text.into(),
        tool_calls,
        truncated: false,
        status: MessageStatus::Complete,
        model: "claude-sonnet-4-5".into(),
        stop_reason: Some("tool_use".into()),
        usage: Usage::default(),
        cost_usd: Decimal::ZERO,
        prices: prices(),
    };
    store
        .transact(messages::user_message_ops(
            &owner,
            &ses.id,
            &id(0),
            &question,
            expires,
        ))
        .await
        .unwrap();
    store
        .transact(vec![messages::assistant_message_op(
            &ses.id,
            &id(1),
            &reply("Checking.", calls.clone()),
            expires,
        )])
        .await
        .unwrap();
    store
        .transact(messages::tool_result_ops(
            &owner,
            &ses.id,
            &id(1),
            &[id(2), id(3)],
            &results,
            expires,
        ))
        .await
        .unwrap();
    // The same calls cannot be answered twice, even under new message IDs.
    let again = store
        .transact(messages::tool_result_ops(
            &owner,
            &ses.id,
            &id(1),
            &[
                lambent_core::ids::sortable_id_at(messages::ID_PREFIX, start + 20),
                lambent_core::ids::sortable_id_at(messages::ID_PREFIX, start + 21),
            ],
            &results,
            expires,
        ))
        .await
        .unwrap_err();
    assert!(again.is_condition_failure(), "{again:?}");
    store
        .transact(vec![messages::assistant_message_op(
            &ses.id,
            &id(4),
            &reply("Sunny here; no station there.", Vec::new()),
            expires,
        )])
        .await
        .unwrap();

    // The model sees it again as it was said: all results of the calls in
    // one user turn, after the assistant turn that made them.
    let (turns, _) = messages::recent_turns(store, &ses.id, 100_000)
        .await
        .unwrap();
    let mut assistant = vec![Part::Text("Checking.".into())];
    assistant.extend(calls.iter().cloned().map(Part::ToolCall));
    assert_eq!(
        turns,
        vec![
            Turn {
                role: Role::User,
                parts: question.clone(),
            },
            Turn {
                role: Role::Assistant,
                parts: assistant,
            },
            Turn {
                role: Role::User,
                parts: results.iter().cloned().map(Part::ToolResult).collect(),
            },
            Turn::text(Role::Assistant, "Sunny here; no station there."),
        ]
    );

    // History shows the calls on the assistant's message and one message
    // per result.
    let page = messages::page(
        store,
        &ses.id,
        lambent_ports::Order::Ascending,
        lambent_store::PageRequest {
            limit: 10,
            after: None,
        },
    )
    .await
    .unwrap();
    let roles: Vec<MessageRole> = page.items.iter().map(|m| m.role).collect();
    assert_eq!(
        roles,
        [
            MessageRole::User,
            MessageRole::Assistant,
            MessageRole::Tool,
            MessageRole::Tool,
            MessageRole::Assistant
        ]
    );
    let user = &page.items[0];
    assert_eq!(user.content, "Weather here and there?");
    assert_eq!(
        user.parts,
        vec![
            ContentPart::Text {
                text: "Weather here and there?".into()
            },
            ContentPart::Image {
                source: ImageSource::Base64 {
                    media_type: "image/png".into(),
                    data: "iVBOR".into()
                }
            },
        ]
    );
    assert_eq!(page.items[1].tool_calls, calls);
    let answers: Vec<(Option<&str>, &str, Option<bool>)> = page.items[2..4]
        .iter()
        .map(|m| (m.tool_call_id.as_deref(), m.content.as_str(), m.is_error))
        .collect();
    assert_eq!(
        answers,
        [
            (Some("call_1"), "12 °C", Some(false)),
            (Some("call_2"), "no station", Some(true))
        ]
    );
    assert!(page.items[4].tool_calls.is_empty());

    // Results whose calls no longer fit the context cannot open it.
    let (turns, _) = messages::recent_turns(store, &ses.id, 60).await.unwrap();
    assert!(
        turns
            .first()
            .is_none_or(|t| t.role == Role::User
                && !t.parts.iter().any(|p| matches!(p, Part::ToolResult(_)))),
        "{turns:?}"
    );
}

pub async fn a_large_image_is_stored_across_items(s: &Storage) {
    use lambent_core::chat::{ContentPart, Image, ImageSource, Part, Role};

    let (owner, _agent, ses) = session(s, None).await;
    let store = s.store.as_ref();
    let expires = lambent_core::time::now_epoch_secs() + 3600;
    // ~700 KB of base64: more than one item may hold.
    let data: String = "iVBORw0KGgo".repeat(64 * 1024);
    let parts = vec![
        Part::Text("What is in this picture?".into()),
        Part::Image(Image::Base64 {
            media_type: "image/png".into(),
            data: data.clone(),
        }),
    ];
    let (message_id, _) = messages::turn_ids();
    let ops = messages::user_message_ops(&owner, &ses.id, &message_id, &parts, expires);
    assert!(ops.len() > 3, "the parts take items of their own");
    store.transact(ops).await.unwrap();

    let read = messages::get(store, &ses.id, &message_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read.content, "What is in this picture?");
    assert_eq!(
        read.parts[1],
        ContentPart::Image {
            source: ImageSource::Base64 {
                media_type: "image/png".into(),
                data: data.clone()
            }
        }
    );
    let page = messages::page(
        store,
        &ses.id,
        lambent_ports::Order::Ascending,
        lambent_store::PageRequest {
            limit: 10,
            after: None,
        },
    )
    .await
    .unwrap();
    assert_eq!(page.items.len(), 1, "part items are not messages");
    assert_eq!(page.items[0].parts, read.parts);
    let (turns, _) = messages::recent_turns(store, &ses.id, 100_000)
        .await
        .unwrap();
    assert_eq!(turns.len(), 1);
    assert_eq!((turns[0].role, &turns[0].parts), (Role::User, &parts));
}
