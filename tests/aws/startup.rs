//! Start-up on AWS services: bootstrap, a healthy `lambent serve`, loud
//! failure when a dependency is missing, and a 503 naming the store when the
//! emulator goes away.

use std::time::Duration;

use lambent_app::state::StartError;
use lambent_boot::AwsResources;
use lambent_testkit::app::{run_lambent, LambentProcess};
use lambent_testkit::emulator::{self, PrivateEmulator};
use serde_json::Value;

#[tokio::test]
async fn a_missing_table_fails_the_start_and_names_it() {
    let sdk = emulator::sdk().await;
    let made = emulator::provision(&sdk).await;
    let resources = AwsResources {
        table: "no-such-table".into(),
        secret_id: made.secret_id.clone(),
        kms_key_id: Some(made.kms_key_id.clone()),
        queue_urls: made.queue_urls.clone(),
    };
    let err = lambent_boot::aws(&sdk, Default::default(), resources)
        .await
        .err()
        .unwrap();
    assert!(
        matches!(&err, StartError::Dependency { name, .. } if name.contains("LAMBENT_TABLE")),
        "{err}"
    );

    let resources = AwsResources {
        table: made.table.clone(),
        secret_id: made.secret_id.clone(),
        kms_key_id: Some("alias/no-such-key".into()),
        queue_urls: made.queue_urls.clone(),
    };
    let err = lambent_boot::aws(&sdk, Default::default(), resources)
        .await
        .err()
        .unwrap();
    assert!(
        matches!(&err, StartError::Dependency { name, .. } if name.contains("LAMBENT_KMS_KEY_ID")),
        "{err}"
    );

    // With everything present, the state builds and is healthy.
    let resources = AwsResources::from(made);
    let state = lambent_boot::aws(&sdk, Default::default(), resources)
        .await
        .unwrap();
    assert!(lambent_app::health::check(&state).await.is_ok());
}

#[tokio::test]
async fn serve_on_aws_is_healthy_then_names_the_store_when_the_emulator_stops() {
    let mut moto = PrivateEmulator::start();
    let data = tempfile::tempdir().unwrap();
    let env = [
        ("AWS_ENDPOINT_URL", moto.endpoint.as_str()),
        ("AWS_REGION", emulator::REGION),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("LAMBENT_HEALTH_TIMEOUT_MS", "2000"),
    ];
    // Bootstrap twice: the second run finds everything and changes nothing.
    let first = run_lambent(&["bootstrap"], &env);
    let second = run_lambent(&["bootstrap"], &env);
    assert!(first.contains("LAMBENT_TABLE=lambent"), "{first}");
    assert_eq!(first, second);

    let mut serve_env = env.to_vec();
    serve_env.push(("LAMBENT_BACKEND", "aws"));
    let data_dir = data.path().display().to_string();
    let lambent = LambentProcess::serve(
        &["serve", "--addr", "127.0.0.1:0", "--data-dir", &data_dir],
        &serve_env,
    );
    assert!(lambent.banner.iter().any(|l| l.starts_with("lmb_admin_")));

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let response = client.get(lambent.url("/health")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "ok", "{body}");

    moto.stop();
    // `/health` answers from a report cached for 10 s: the failure shows
    // within that time.
    let body: Value = lambent_testkit::eventually(
        "/health names the store",
        Duration::from_secs(30),
        || async {
            let response = client.get(lambent.url("/health")).send().await.unwrap();
            if response.status() != 503 {
                return None;
            }
            Some(response.json().await.unwrap())
        },
    )
    .await;
    assert_eq!(body["status"], "degraded", "{body}");
    assert_eq!(body["checks"]["store"]["status"], "failed", "{body}");
}
