//! Lambent under store faults: writes that fail, conflict or lose their
//! answer, injected by a wrapper around the real embedded store.

use std::sync::Arc;
use std::time::Duration;

use lambent_testkit::app::{spawn_app_layered, TestApp};
use lambent_testkit::faults::{self, Fault, Faults};
use reqwest::Method;
use serde_json::json;

/// `lambent serve` whose store fails as `faults` say, with no key cache, so
/// every request reads what the store holds.
async fn faulty_app(faults: &Arc<Faults>) -> TestApp {
    spawn_app_layered(
        lambent_core::clock::system(),
        Some(faults::layer(faults.clone())),
        |c| c.auth_cache = Duration::ZERO,
    )
    .await
}

/// Creates a user of `role` with `n` keys; returns its ID and keys.
async fn user_with_keys(app: &TestApp, role: &str, n: usize) -> (String, Vec<String>) {
    let admin = app.admin_key();
    let (id, first) = app.user_with_key("target", role).await;
    let mut keys = vec![first];
    for _ in 1..n {
        let (status, key) = app
            .call(
                Method::POST,
                "/v1/keys",
                &admin,
                Some(json!({"user_id": id})),
            )
            .await;
        assert_eq!(status, 201, "{key}");
        keys.push(key["key"].as_str().unwrap().to_owned());
    }
    (id, keys)
}

fn is_key_record(key: &lambent_ports::Key) -> bool {
    key.pk.starts_with("KEY#")
}

#[tokio::test]
async fn a_demotion_is_obeyed_by_every_key_whatever_fails() {
    let faults = Faults::new();
    let app = faulty_app(&faults).await;
    let admin = app.admin_key();
    let (id, keys) = user_with_keys(&app, "admin", 3).await;
    for key in &keys {
        assert_eq!(app.call(Method::GET, "/v1/users", key, None).await.0, 200);
    }

    // Any write to a key's record fails from now on: a demotion must not
    // need one.
    faults.fail_writes(is_key_record, 0, u64::MAX, Fault::Unavailable);
    let (status, body) = app
        .call(
            Method::PATCH,
            &format!("/v1/users/{id}"),
            &admin,
            Some(json!({"role": "member"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    for key in &keys {
        let (status, body) = app.call(Method::GET, "/v1/users", key, None).await;
        assert_eq!(
            status, 403,
            "a demoted user's key still acts as admin: {body}"
        );
    }

    // A PATCH that fails leaves the user as it was, wholly.
    faults.clear();
    let profile = format!("USER#{id}");
    faults.fail_writes(
        move |k| k.pk == profile && k.sk == "PROFILE",
        0,
        1,
        Fault::Unavailable,
    );
    let (status, _) = app
        .call(
            Method::PATCH,
            &format!("/v1/users/{id}"),
            &admin,
            Some(json!({"role": "admin"})),
        )
        .await;
    assert_eq!(status, 503);
    for key in &keys {
        assert_eq!(app.call(Method::GET, "/v1/users", key, None).await.0, 403);
    }
    // Its retry lands, for every key at once.
    let (status, _) = app
        .call(
            Method::PATCH,
            &format!("/v1/users/{id}"),
            &admin,
            Some(json!({"role": "admin"})),
        )
        .await;
    assert_eq!(status, 200);
    for key in &keys {
        assert_eq!(app.call(Method::GET, "/v1/users", key, None).await.0, 200);
    }
    app.stop().await;
}

#[tokio::test]
async fn a_deletion_that_fails_part_way_leaves_no_working_key_and_a_retry_finishes_it() {
    let faults = Faults::new();
    let app = faulty_app(&faults).await;
    let admin = app.admin_key();
    let (id, keys) = user_with_keys(&app, "member", 3).await;

    // The deletion stops at the first key it removes.
    faults.fail_writes(is_key_record, 0, 1, Fault::Unavailable);
    let (status, _) = app
        .call(Method::DELETE, &format!("/v1/users/{id}"), &admin, None)
        .await;
    assert_eq!(status, 503);
    for key in &keys {
        let (status, body) = app.call(Method::GET, "/v1/keys", key, None).await;
        assert_eq!(status, 401, "a key of a user being deleted works: {body}");
    }

    let (status, _) = app
        .call(Method::DELETE, &format!("/v1/users/{id}"), &admin, None)
        .await;
    assert_eq!(status, 204);
    let (status, _) = app
        .call(Method::GET, &format!("/v1/users/{id}"), &admin, None)
        .await;
    assert_eq!(status, 404);
    for key in &keys {
        assert_eq!(app.call(Method::GET, "/v1/keys", key, None).await.0, 401);
    }
    app.stop().await;
}

#[tokio::test]
async fn a_session_deletion_that_fails_part_way_is_finished_by_a_retry() {
    let faults = Faults::new();
    let w = lambent_testkit::chat::ChatWorld::seed(faulty_app(&faults).await, "anthropic").await;
    w.fake
        .set_default(lambent_fake_provider::Reply::text("noted"));
    let session = w.session(json!({})).await;
    for said in ["one", "two", "three"] {
        let (status, _) = w.chat_whole(&session, said).await;
        assert_eq!(status, 200);
    }
    // The deletion stops while removing the messages.
    let messages = format!("SESSION#{session}");
    faults.fail_writes(move |k| k.pk == messages, 0, 1, Fault::Unavailable);
    let path = format!("/v1/sessions/{session}");
    let (status, _) = w.call(Method::DELETE, &path, None).await;
    assert_eq!(status, 503);
    // Gone for every read already, and a retry finishes it.
    assert_eq!(w.call(Method::GET, &path, None).await.0, 404);
    let (status, body) = w.call(Method::DELETE, &path, None).await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(w.call(Method::DELETE, &path, None).await.0, 404);
    let (status, _) = w.call(Method::GET, &format!("{path}/messages"), None).await;
    assert_eq!(status, 404);
}

/// Each user message of `session` has its reply, and the replies' costs
/// add up to the session's usage; `None` while not so.
async fn reconciled(w: &lambent_testkit::chat::ChatWorld, session: &str) -> Option<String> {
    let (status, page) = w
        .call(
            Method::GET,
            &format!("/v1/sessions/{session}/messages?limit=100"),
            None,
        )
        .await;
    if status != 200 {
        return None;
    }
    let messages = page["items"].as_array()?;
    let said = messages.iter().filter(|m| m["role"] == "user").count();
    let replies: Vec<_> = messages
        .iter()
        .filter(|m| m["role"] == "assistant")
        .collect();
    if said != replies.len() {
        return None;
    }
    let replied: rust_decimal::Decimal = replies
        .iter()
        .map(|m| {
            m["cost_usd"]
                .as_str()
                .unwrap_or("0")
                .parse::<rust_decimal::Decimal>()
                .unwrap()
        })
        .sum();
    let (_, usage) = w.call(Method::GET, "/v1/usage", None).await;
    let total: rust_decimal::Decimal = usage["total"]["cost_usd"].as_str()?.parse().ok()?;
    (replied == total).then(|| total.to_string())
}

#[tokio::test]
async fn whichever_write_of_a_turn_fails_the_turn_is_stored_or_marked_and_billed_once() {
    let faults = Faults::new();
    let clock = lambent_core::clock::ManualClock::starting_now();
    let app = spawn_app_layered(clock.clone(), Some(faults::layer(faults.clone())), |c| {
        c.sweep_every = Duration::from_millis(200);
        c.sweep_stale = Duration::from_secs(2);
        // A turn whose runner could not finish it is taken up by the worker
        // a lease after its lease ran out.
        c.turn_lease = Duration::from_secs(1);
    })
    .await;
    let w = lambent_testkit::chat::ChatWorld::seed(app, "anthropic").await;
    w.fake
        .set_default(lambent_fake_provider::Reply::text("noted"));
    w.set_monthly_budget("100").await;
    let session = w.session(json!({})).await;

    // How many writes one turn makes, when none fails.
    let before = faults.writes();
    let (status, _) = w.chat_whole(&session, "count").await;
    assert_eq!(status, 200);
    let writes = faults.writes() - before;
    assert!(writes >= 5, "a turn wrote {writes} times");

    // The Nth write fails once, or the store goes down from the Nth write
    // on (until the request is over).
    for (fault, times) in [
        (Fault::Unavailable, 1),
        (Fault::LostAnswer, 1),
        (Fault::Unavailable, u64::MAX),
        (Fault::LostAnswer, u64::MAX),
    ] {
        for (n, stream) in (1..=writes).flat_map(|n| [(n, false), (n, true)]) {
            faults.fail_writes(|_| true, n - 1, times, fault);
            let said = format!("{fault:?} x{times} from {n}, stream {stream}");
            let response = w
                .app
                .request(
                    Method::POST,
                    &format!("/v1/sessions/{session}/messages"),
                    &w.key,
                )
                .json(&json!({"content": said, "stream": stream}))
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let body = response.text().await.unwrap();
            assert!(status == 200 || status == 503, "{said}: {status} {body}");
            faults.clear();
            // Past the stale time: the sweeper closes what was left.
            clock.advance(Duration::from_secs(3));
            // Time goes on while the sweeper and the worker finish it.
            lambent_testkit::eventually(
                &format!("the turn with {said} reconciled"),
                Duration::from_secs(10),
                || {
                    clock.advance(Duration::from_millis(500));
                    reconciled(&w, &session)
                },
            )
            .await;
        }
    }
}
