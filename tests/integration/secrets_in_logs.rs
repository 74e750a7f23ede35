//! No secret reaches the logs: the real `lambent` binary, logging everything
//! down to `debug` as JSON, driven through every identity route; then its
//! whole log output is searched for every API key and provider key used.

use lambent_tests::app::{send_json, LambentProcess};
use serde_json::{json, Value};

const PROVIDER_KEY: &str = "sk-ant-LOGCANARY-0123456789abcdef";
const ROTATED_KEY: &str = "sk-ant-LOGCANARY-rotated-fedcba98";

#[tokio::test]
async fn no_api_key_or_provider_key_appears_in_the_logs() {
    let dir = tempfile::Builder::new()
        .prefix("lambent-logs-")
        .tempdir()
        .unwrap();
    let log_path = dir.path().join("lambent.log");
    let data_dir = dir.path().join("data");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut server = LambentProcess::serve_with_stderr(
        &[
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--data-dir",
            data_dir.to_str().unwrap(),
        ],
        &[
            ("RUST_LOG", "debug"),
            ("LAMBENT_LOG_FORMAT", "json"),
            ("LAMBENT_ALLOW_PRIVATE_PROVIDER_URLS", "1"),
        ],
        log,
    );
    let admin = std::fs::read_to_string(data_dir.join("admin-key")).unwrap();
    let client = reqwest::Client::new();
    let call = |method: reqwest::Method, path: &str, key: &str, body: Option<Value>| {
        send_json(&client, method, server.url(path), key.to_owned(), body)
    };
    use reqwest::Method as M;

    let (_, user) = call(
        M::POST,
        "/v1/users",
        &admin,
        Some(json!({"name": "ana", "role": "member"})),
    )
    .await;
    let user_id = user["id"].as_str().unwrap().to_owned();
    let (_, key) = call(
        M::POST,
        "/v1/keys",
        &admin,
        Some(json!({"user_id": user_id})),
    )
    .await;
    let member = key["key"].as_str().unwrap().to_owned();
    let (status, provider) = call(
        M::POST,
        "/v1/providers",
        &member,
        Some(
            json!({"kind": "openai_compatible", "name": "local", "api_key": PROVIDER_KEY,
                    "base_url": "http://127.0.0.1:9/v1"}),
        ),
    )
    .await;
    assert_eq!(status, 201, "{provider}");
    let provider_id = provider["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/providers/{provider_id}");
    call(
        M::PATCH,
        &path,
        &member,
        Some(json!({"api_key": ROTATED_KEY})),
    )
    .await;
    // Invalid input that carries a key: the 400 must not echo it either.
    call(
        M::POST,
        "/v1/providers",
        &member,
        Some(json!({"kind": "openai", "name": "x y", "api_key": PROVIDER_KEY})),
    )
    .await;
    call(
        M::POST,
        "/v1/providers",
        &member,
        Some(json!({"kind": "openai", "name": "z", "api_key": 12345, "extra": PROVIDER_KEY})),
    )
    .await;
    call(
        M::POST,
        "/v1/agents",
        &member,
        Some(json!({"name": "a", "provider_id": provider_id, "model": "gpt-4o"})),
    )
    .await;
    call(M::GET, "/v1/agents", &member, None).await;
    call(M::GET, "/v1/providers", &member, None).await;
    call(M::GET, "/v1/keys", &member, None).await;
    // A wrong secret for a real key ID, and the admin key with a typo.
    let last = if member.ends_with('0') { '1' } else { '0' };
    let wrong = format!("{}{last}", &member[..member.len() - 1]);
    call(M::GET, "/v1/keys", &wrong, None).await;
    call(M::GET, "/v1/keys", &format!("{admin}x"), None).await;
    call(M::DELETE, &format!("/v1/users/{user_id}"), &admin, None).await;
    call(M::GET, "/v1/audit", &admin, None).await;
    server.stop();

    let logs = std::fs::read_to_string(&log_path).unwrap();
    // The capture works: there are request lines with principals in them.
    assert!(logs.contains("request served"), "no request logs captured");
    assert!(logs.contains(&user_id), "principals are not logged");
    let secret_of = |key: &str| key.rsplit('_').next().unwrap().to_owned();
    for needle in [
        admin.clone(),
        secret_of(&admin),
        member.clone(),
        secret_of(&member),
        secret_of(&wrong),
        PROVIDER_KEY.to_owned(),
        ROTATED_KEY.to_owned(),
        "LOGCANARY".to_owned(),
    ] {
        assert!(
            !logs.contains(&needle),
            "the logs contain a secret ({} chars)",
            needle.len()
        );
    }
}
