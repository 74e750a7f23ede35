//! Identity through the HTTP API of `lambent serve --backend aws` on the
//! emulator: the bootstrap admin key as `lambent admin-key` derives it from
//! the deployment's secret, and no provider key in the DynamoDB table.

use std::time::Duration;

use lambent_testkit::app::{send_json, ServeOnEmulator};
use lambent_testkit::emulator;
use serde_json::{json, Value};

const PROVIDER_KEY: &str = "sk-ant-AWSCANARY-5e6f7a8b9c0d1e2f";

#[tokio::test]
async fn identity_on_aws_services_keeps_provider_keys_encrypted() {
    let aws = ServeOnEmulator::start("id");
    let server = &aws.server;
    let admin = aws.admin_key();
    // The operator's way to the same key: from the secret alone.
    let secret_id = format!("{}/bootstrap", aws.prefix);
    let derived = aws.run(&["admin-key", "--secret-id", &secret_id]);
    assert_eq!(derived.trim(), admin);

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let call = |method: reqwest::Method, path: &str, key: &str, body: Option<Value>| {
        send_json(&client, method, server.url(path), key.to_owned(), body)
    };
    use reqwest::Method as M;
    let (status, user) = call(
        M::POST,
        "/v1/users",
        &admin,
        Some(json!({"name": "ana", "role": "member"})),
    )
    .await;
    assert_eq!(status, 201, "{user}");
    let (status, key) = call(
        M::POST,
        "/v1/keys",
        &admin,
        Some(json!({"user_id": user["id"]})),
    )
    .await;
    assert_eq!(status, 201, "{key}");
    let member = key["key"].as_str().unwrap().to_owned();
    let (status, provider) = call(
        M::POST,
        "/v1/providers",
        &member,
        Some(json!({"kind": "anthropic", "name": "claude", "api_key": PROVIDER_KEY})),
    )
    .await;
    assert_eq!(status, 201, "{provider}");
    assert_eq!(provider["api_key_last4"], "1e2f");
    // Another member cannot see it; the owner can, masked.
    let (status, _) = call(
        M::GET,
        &format!("/v1/providers/{}", provider["id"].as_str().unwrap()),
        &admin,
        None,
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(call(M::GET, "/v1/providers", &member, None).await.0, 200);

    // Every byte of every item in the table: no provider key.
    let sdk = emulator::sdk().await;
    let scanned = aws_sdk_dynamodb::Client::new(&sdk)
        .scan()
        .table_name(&aws.prefix)
        .send()
        .await
        .unwrap();
    let dump = format!("{:?}", scanned.items());
    assert!(
        dump.contains("api_key_ciphertext"),
        "the provider is not in the table"
    );
    assert!(
        !dump.contains("AWSCANARY"),
        "a provider key is stored in plain text"
    );
    // Blobs print as byte lists; look in them too.
    for item in scanned.items() {
        for value in item.values() {
            if let Ok(blob) = value.as_b() {
                let bytes = blob.as_ref();
                assert!(!bytes.windows(9).any(|w| w == b"AWSCANARY"));
            }
        }
    }
}
