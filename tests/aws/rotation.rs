//! The root secret on Secrets Manager (docs/SECRETS.md): `put-secret-value`
//! (AWSCURRENT moves to AWSPREVIOUS) under a running `lambent serve
//! --backend aws` keeps users' API keys and listing cursors working and
//! revokes the bootstrap admin key; legacy keyed hashes verify under either
//! version and are re-hashed on DynamoDB; the health function starts and
//! answers without reading the secret.

use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use lambent_app::bootstrap;
use lambent_app::config::Config;
use lambent_app::state::StartError;
use lambent_boot::AwsResources;
use lambent_core::api_key;
use lambent_core::auth::Role;
use lambent_core::secret::{ExposeSecret, SecretString};
use lambent_ports::{Key, Update, Value as StoreValue};
use lambent_store::{keys, users};
use lambent_testkit::app::{send_json, ServeOnEmulator};
use lambent_testkit::emulator;
use lambent_testkit::eventually;
use reqwest::Method;
use serde_json::{json, Value};
use tower::ServiceExt;

/// What an operator runs to rotate: a new `signing_key` as the current
/// version (`aws secretsmanager put-secret-value`).
async fn put_new_signing_key(sdk: &aws_config::SdkConfig, secret_id: &str) {
    let value = bootstrap::new_signing_key();
    aws_sdk_secretsmanager::Client::new(sdk)
        .put_secret_value()
        .secret_id(secret_id)
        .secret_string(json!({ "signing_key": value.expose_secret() }).to_string())
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn put_secret_value_keeps_keys_and_cursors_and_revokes_the_bootstrap_admin_key() {
    let aws = ServeOnEmulator::start_with("rot", &[("LAMBENT_SECRET_CACHE_SECS", "1")]);
    let sdk = emulator::sdk().await;
    let secret_id = format!("{}/bootstrap", aws.prefix);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let call = |method: Method, path: String, key: &str, body: Option<Value>| {
        send_json(&client, method, aws.server.url(&path), key.to_owned(), body)
    };
    let keys_page = |key: &str, cursor: Option<&str>| {
        let path = match cursor {
            Some(c) => format!("/v1/keys?limit=1&cursor={c}"),
            None => "/v1/keys?limit=1".to_owned(),
        };
        call(Method::GET, path, key, None)
    };
    let until_refused = |key: String| async move {
        eventually(
            "the old bootstrap admin key refused",
            Duration::from_secs(15),
            || async {
                let (status, _) = call(Method::GET, "/v1/users".into(), &key, None).await;
                (status == 401).then_some(())
            },
        )
        .await
    };
    let admin_key_now = || {
        aws.run(&["admin-key", "--secret-id", &secret_id])
            .trim()
            .to_owned()
    };

    let first_admin = aws.admin_key();
    let (status, user) = call(
        Method::POST,
        "/v1/users".into(),
        &first_admin,
        Some(json!({"name": "ana", "role": "member"})),
    )
    .await;
    assert_eq!(status, 201, "{user}");
    let (status, key) = call(
        Method::POST,
        "/v1/keys".into(),
        &first_admin,
        Some(json!({"user_id": user["id"]})),
    )
    .await;
    assert_eq!(status, 201, "{key}");
    let member = key["key"].as_str().unwrap().to_owned();
    for _ in 0..2 {
        let (status, body) = call(Method::POST, "/v1/keys".into(), &member, Some(json!({}))).await;
        assert_eq!(status, 201, "{body}");
    }
    let (status, first_page) = keys_page(&member, None).await;
    assert_eq!(status, 200, "{first_page}");
    let made_before = first_page["next_cursor"].as_str().unwrap().to_owned();

    // First rotation: `lambent admin-key` derives the new key; the old one is
    // refused within the secret cache time, the new one works.
    put_new_signing_key(&sdk, &secret_id).await;
    let second_admin = admin_key_now();
    assert_ne!(second_admin, first_admin);
    until_refused(first_admin.clone()).await;
    let (status, body) = call(Method::GET, "/v1/users".into(), &second_admin, None).await;
    assert_eq!(status, 200, "{body}");
    // The member's key and the cursor made before the rotation still work.
    let (status, second_page) = keys_page(&member, Some(&made_before)).await;
    assert_eq!(status, 200, "{second_page}");
    assert_ne!(second_page["items"][0]["id"], first_page["items"][0]["id"]);
    let made_between = second_page["next_cursor"].as_str().unwrap().to_owned();

    // Second rotation: the same for what was made after the first.
    put_new_signing_key(&sdk, &secret_id).await;
    let third_admin = admin_key_now();
    until_refused(second_admin.clone()).await;
    let (status, body) = call(Method::GET, "/v1/users".into(), &third_admin, None).await;
    assert_eq!(status, 200, "{body}");
    let (status, third_page) = keys_page(&member, Some(&made_between)).await;
    assert_eq!(status, 200, "{third_page}");
    assert!(third_page["next_cursor"].is_null(), "{third_page}");
    let (status, body) = call(Method::GET, "/v1/keys".into(), &member, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["items"].as_array().unwrap().len(), 3, "{body}");
}

#[tokio::test]
async fn legacy_keyed_hashes_verify_under_either_version_and_are_upgraded_on_dynamodb() {
    let sdk = emulator::sdk().await;
    let made = emulator::provision(&sdk).await;
    let secret_id = made.secret_id.clone();
    let config = Config {
        secret_cache: Duration::ZERO,
        auth_cache: Duration::ZERO,
        ..Config::default()
    };
    let state = lambent_boot::aws(&sdk, config, AwsResources::from(made))
        .await
        .unwrap();
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
    // Two keys stored as before hashes became unkeyed: under this root.
    let root_key = state
        .identity
        .keys()
        .await
        .unwrap()
        .legacy_api_key_hash
        .current;
    let mut legacy = Vec::new();
    for _ in 0..2 {
        let (info, full) = keys::create(store, &user.id, None).await.unwrap();
        let presented = api_key::parse(full.expose_secret()).unwrap();
        let hash = api_key::legacy_hash(&root_key, presented.key_id, presented.secret);
        store
            .update(
                &Key::new(format!("KEY#{}", info.id), "KEY"),
                Update::new().set("hash", StoreValue::B(hash.to_vec())),
                None,
            )
            .await
            .unwrap();
        legacy.push((info.id, full, hash));
    }
    let bearer = |full: &SecretString| format!("Bearer {}", full.expose_secret());
    let stored = |id: &str| {
        let id = id.to_owned();
        async move { keys::lookup(store, &id).await.unwrap().unwrap().hash }
    };

    // Current version: verified and upgraded.
    state
        .identity
        .authenticate(store, Some(&bearer(&legacy[0].1)))
        .await
        .unwrap();
    let presented = api_key::parse(legacy[0].1.expose_secret()).unwrap();
    assert_eq!(
        stored(&legacy[0].0).await,
        api_key::stored_hash(presented.key_id, presented.secret)
    );
    // After put-secret-value: the other verifies under AWSPREVIOUS, upgraded.
    put_new_signing_key(&sdk, &secret_id).await;
    state
        .identity
        .authenticate(store, Some(&bearer(&legacy[1].1)))
        .await
        .unwrap();
    assert_eq!(stored(&legacy[1].0).await.len(), 33);
    // The conditional write refuses a stale old hash.
    assert!(
        !keys::upgrade_hash(store, &legacy[1].0, &legacy[1].2, b"other")
            .await
            .unwrap()
    );
    for (_, full, _) in &legacy {
        state
            .identity
            .authenticate(store, Some(&bearer(full)))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn the_health_function_starts_and_answers_without_reading_the_secret() {
    let sdk = emulator::sdk().await;
    let made = emulator::provision(&sdk).await;
    // A secret that does not exist: any read of it would fail.
    let resources = AwsResources {
        secret_id: "no-such-secret".into(),
        ..AwsResources::from(made)
    };
    let err = lambent_boot::aws(&sdk, Config::default(), resources.clone())
        .await
        .err()
        .unwrap();
    assert!(
        matches!(&err, StartError::Dependency { name, .. } if name.contains("LAMBENT_SECRET_ID")),
        "{err}"
    );
    let state = lambent_boot::aws_without_secrets(&sdk, Config::default(), resources)
        .await
        .unwrap();
    assert!(state.secrets.get("signing_key").await.is_err());
    let router = lambent_fn_health::GROUP.router(state).unwrap();
    for _ in 0..2 {
        let request = Request::get("/health").body(Body::empty()).unwrap();
        let response = router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"], "ok", "{body}");
    }
}
