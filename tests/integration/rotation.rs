//! The root secret on the embedded backend (docs/SECRETS.md): `lambent
//! rotate-secret` under a running `lambent serve` keeps users' API keys and
//! listing cursors working and revokes the bootstrap admin key; keys stored
//! with the legacy keyed hash verify under the current or previous root and
//! are re-hashed on first use; `GET /health` reads no secret and checks its
//! dependencies once per 10 s.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use lambent_app::config::Config;
use lambent_core::api_key;
use lambent_core::auth::Role;
use lambent_core::clock::ManualClock;
use lambent_core::secret::{ExposeSecret, SecretString};
use lambent_embedded::{write_secret_file, FileSecrets};
use lambent_ports::secrets::NoSecrets;
use lambent_ports::{Key, Ports, Update, Value as StoreValue};
use lambent_store::{keys, users};
use lambent_testkit::app::{run_lambent, spawn_app_with, LambentProcess, TestApp};
use lambent_testkit::counting::{Call, CountingStore, Meter};
use lambent_testkit::eventually;
use reqwest::Method;
use serde_json::{json, Value};
use tower::ServiceExt;

/// One page of the caller's keys, one key per page.
async fn keys_page(app: &TestApp, key: &str, cursor: Option<&str>) -> (u16, Value) {
    let path = match cursor {
        Some(c) => format!("/v1/keys?limit=1&cursor={c}"),
        None => "/v1/keys?limit=1".to_owned(),
    };
    app.call(Method::GET, &path, key, None).await
}

/// Waits until `key` is refused (the server re-read the root secret).
async fn until_refused(app: &TestApp, key: &str) {
    eventually(
        "the old bootstrap admin key refused",
        Duration::from_secs(10),
        || async {
            let (status, _) = app.call(Method::GET, "/v1/users", key, None).await;
            (status == 401).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn rotate_secret_keeps_keys_and_cursors_and_revokes_the_bootstrap_admin_key() {
    let app = spawn_app_with(|c| c.secret_cache = Duration::from_secs(1)).await;
    let data_dir = app.data_dir.path().display().to_string();
    let rotate = || {
        let out = run_lambent(&["rotate-secret", "--data-dir", &data_dir], &[]);
        let key = out.lines().find(|l| l.starts_with("lmb_admin_"));
        key.unwrap_or_else(|| panic!("no admin key printed: {out}"))
            .to_owned()
    };
    let first_admin = app.admin_key();
    let (_, member) = app.user_with_key("ana", "member").await;
    for _ in 0..2 {
        let (status, body) = app
            .call(Method::POST, "/v1/keys", &member, Some(json!({})))
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let (status, first_page) = keys_page(&app, &member, None).await;
    assert_eq!(status, 200, "{first_page}");
    let made_before = first_page["next_cursor"].as_str().unwrap().to_owned();

    // First rotation: the new admin key is saved and printed, the old one
    // is refused within the secret cache time.
    let second_admin = rotate();
    assert_ne!(second_admin, first_admin);
    assert_eq!(app.admin_key(), second_admin);
    until_refused(&app, &first_admin).await;
    let (status, body) = app
        .call(Method::GET, "/v1/users", &second_admin, None)
        .await;
    assert_eq!(status, 200, "{body}");
    // The member's key and the cursor made before still work.
    let (status, second_page) = keys_page(&app, &member, Some(&made_before)).await;
    assert_eq!(status, 200, "{second_page}");
    assert_ne!(second_page["items"][0]["id"], first_page["items"][0]["id"]);
    let made_between = second_page["next_cursor"].as_str().unwrap().to_owned();

    // Second rotation: the same for what was made after the first.
    let third_admin = rotate();
    until_refused(&app, &second_admin).await;
    assert_eq!(
        app.call(Method::GET, "/v1/users", &third_admin, None)
            .await
            .0,
        200
    );
    let (status, third_page) = keys_page(&app, &member, Some(&made_between)).await;
    assert_eq!(status, 200, "{third_page}");
    assert!(third_page["next_cursor"].is_null(), "{third_page}");
    let (status, body) = app.call(Method::GET, "/v1/keys", &member, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["items"].as_array().unwrap().len(), 3, "{body}");
    // A cursor outlives one rotation, not two: its root is no longer kept.
    assert_eq!(keys_page(&app, &member, Some(&made_before)).await.0, 400);
    app.stop().await;
}

#[tokio::test]
async fn the_bootstrap_admin_key_can_be_switched_off() {
    let app = spawn_app_with(|c| c.bootstrap_admin = false).await;
    // Nothing saved, and the key the root gives is refused.
    assert!(!app.data_dir.path().join("admin-key").exists());
    let secrets = FileSecrets::new(app.data_dir.path().to_path_buf());
    let root = lambent_app::bootstrap::signing_key(&secrets).await.unwrap();
    let admin = lambent_app::bootstrap::admin_api_key(&root);
    let (status, _) = app
        .call(Method::GET, "/v1/users", admin.expose_secret(), None)
        .await;
    assert_eq!(status, 401);
    app.stop().await;

    // The same from the environment: `lambent serve` prints and saves no key.
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().display().to_string();
    let server = LambentProcess::serve(
        &["serve", "--addr", "127.0.0.1:0", "--data-dir", &data_dir],
        &[("LAMBENT_BOOTSTRAP_ADMIN", "off")],
    );
    assert!(
        server.banner.iter().all(|l| !l.contains("lmb_")),
        "{:?}",
        server.banner
    );
    assert!(!data.path().join("admin-key").exists());
}

/// Stores `key_id`'s hash in the legacy keyed form under `hash_key`.
async fn make_legacy(
    store: &dyn lambent_ports::ItemStore,
    hash_key: &[u8; 32],
    full: &SecretString,
) -> Vec<u8> {
    let presented = api_key::parse(full.expose_secret()).unwrap();
    let legacy = api_key::legacy_hash(hash_key, presented.key_id, presented.secret).to_vec();
    store
        .update(
            &Key::new(format!("KEY#{}", presented.key_id), "KEY"),
            Update::new().set("hash", StoreValue::B(legacy.clone())),
            None,
        )
        .await
        .unwrap();
    legacy
}

#[tokio::test]
async fn legacy_keyed_hashes_verify_under_either_root_and_are_upgraded_on_first_use() {
    let dir = tempfile::tempdir().unwrap();
    write_secret_file(&dir.path().join("signing-key"), b"legacy-root-a").unwrap();
    let config = Config {
        secret_cache: Duration::ZERO,
        auth_cache: Duration::ZERO,
        ..Config::default()
    };
    let state = lambent_boot::embedded(dir.path(), config).unwrap();
    let store = state.store.as_ref();
    let user = users::create(
        store,
        users::NewUser {
            name: "ana".into(),
            role: Role::Member,
            monthly_budget_usd: None,
        },
    )
    .await
    .unwrap();
    let mut made = Vec::new();
    for _ in 0..3 {
        let (info, full) = keys::create(store, &user.id, None).await.unwrap();
        made.push((info.id, full));
    }
    // Stored as keys were before hashes became unkeyed: under root A.
    let root_a = state
        .identity
        .keys()
        .await
        .unwrap()
        .legacy_api_key_hash
        .current;
    let mut legacy = Vec::new();
    for (_, full) in &made {
        legacy.push(make_legacy(store, &root_a, full).await);
    }
    let bearer = |full: &SecretString| format!("Bearer {}", full.expose_secret());
    let hash_of = |id: String| async move { keys::lookup(store, &id).await.unwrap().unwrap().hash };

    // Under the current root: verified, then re-hashed to the stored form.
    let principal = state
        .identity
        .authenticate(store, Some(&bearer(&made[0].1)))
        .await
        .unwrap();
    assert_eq!(principal.user_id, user.id);
    let upgraded = hash_of(made[0].0.clone()).await;
    let presented = api_key::parse(made[0].1.expose_secret()).unwrap();
    assert_eq!(
        upgraded,
        api_key::stored_hash(presented.key_id, presented.secret)
    );

    // Rotated: the second verifies under the previous root, and is upgraded.
    let secrets = FileSecrets::new(dir.path().to_path_buf());
    secrets
        .rotate(
            "signing_key",
            &SecretString::from("legacy-root-b".to_owned()),
        )
        .unwrap();
    state
        .identity
        .authenticate(store, Some(&bearer(&made[1].1)))
        .await
        .unwrap();
    assert_eq!(hash_of(made[1].0.clone()).await.len(), 33);
    assert_ne!(hash_of(made[1].0.clone()).await, legacy[1]);
    // The upgraded ones need no root at all.
    for (_, full) in &made[..2] {
        state
            .identity
            .authenticate(store, Some(&bearer(full)))
            .await
            .unwrap();
    }
    // A wrong secret never upgrades anything.
    let wrong = format!("Bearer lmb_{}_{}", made[2].0, "A".repeat(52));
    assert!(state
        .identity
        .authenticate(store, Some(&wrong))
        .await
        .is_err());
    assert_eq!(hash_of(made[2].0.clone()).await, legacy[2]);

    // The upgrade is conditional on the old hash and never creates a key.
    assert!(
        !keys::upgrade_hash(store, &made[2].0, b"not the hash", b"new")
            .await
            .unwrap()
    );
    assert!(!keys::upgrade_hash(store, "key_gone", &legacy[2], b"new")
        .await
        .unwrap());
    assert!(keys::lookup(store, "key_gone").await.unwrap().is_none());

    // Unused over two rotations, a legacy key's root is gone: refused.
    secrets
        .rotate(
            "signing_key",
            &SecretString::from("legacy-root-c".to_owned()),
        )
        .unwrap();
    assert!(state
        .identity
        .authenticate(store, Some(&bearer(&made[2].1)))
        .await
        .is_err());
    for (_, full) in &made[..2] {
        state
            .identity
            .authenticate(store, Some(&bearer(full)))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn health_reads_no_secret_and_checks_once_per_ten_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::starting_now();
    let embedded = lambent_boot::embedded_on(dir.path(), Config::default(), clock.clone()).unwrap();
    let meter = Meter::new();
    // Every read of a secret fails: health must not need one.
    let state = lambent_app::state::State::from_ports(
        Config::default(),
        Ports {
            store: Arc::new(CountingStore::new(embedded.store.clone(), meter.clone())),
            cipher: embedded.cipher.clone(),
            queue: embedded.queue.clone(),
            secrets: Arc::new(NoSecrets),
            clock: clock.clone(),
        },
    );
    let router = lambent_fn_health::GROUP.router(state).unwrap();
    let health = || async {
        let request = Request::get("/health").body(Body::empty()).unwrap();
        let response = router.clone().oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap();
        (status, body)
    };
    let checks = || meter.snapshot().count(Call::StorePing);

    let (status, first) = health().await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["status"], "ok");
    assert_eq!(checks(), 1);
    // Within 10 s: the same answer, no new check.
    clock.advance(Duration::from_secs(9));
    let (status, second) = health().await;
    assert_eq!((status, &second), (200, &first));
    assert_eq!(checks(), 1);
    // Past 10 s: checked again.
    clock.advance(Duration::from_secs(2));
    assert_eq!(health().await.0, 200);
    assert_eq!(checks(), 2);
}
