//! The AWS emulator the test command starts (moto in server mode), and fresh
//! AWS adapters on it: every test provisions its own resources under a
//! random prefix, so tests run in parallel without resets.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_dynamodb::config::Credentials;
use lambent_aws::{DynamoStore, KmsCipher, SecretsManagerSecrets, SqsQueue};
use lambent_local::resources::{ensure_all, Names, Provisioned};
use lambent_ports::{ItemStore, KeyCipher, Queue, Secrets};

use crate::Held;
use lambent_ports::contract;

pub const REGION: &str = "us-east-1";

/// The emulator's URL, from `LAMBENT_TEST_AWS_ENDPOINT` (set by `scripts/test`).
pub fn endpoint() -> String {
    std::env::var("LAMBENT_TEST_AWS_ENDPOINT").unwrap_or_else(|_| {
        panic!(
            "LAMBENT_TEST_AWS_ENDPOINT is not set: run the AWS adapter tests through \
             scripts/test, which starts the emulator"
        )
    })
}

/// SDK configuration for an emulator at `endpoint`, with dummy credentials.
pub async fn sdk_for(endpoint: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new(REGION))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "tests"))
        .timeout_config(lambent_aws::sdk::timeout_config())
        .load()
        .await
}

pub async fn sdk() -> SdkConfig {
    sdk_for(&endpoint()).await
}

/// A fresh set of resources (table, queues, key, secret) under a random
/// prefix, the queues redriving after the queue contract's receives.
pub async fn provision(sdk: &SdkConfig) -> Provisioned {
    provision_with(sdk, contract::queue::MAX_RECEIVES).await
}

/// Like [`provision`], with queues that redrive after `max_receives`.
pub async fn provision_with(sdk: &SdkConfig, max_receives: u32) -> Provisioned {
    let prefix = lambent_core::ids::new_id("t").replace('_', "-");
    let mut names = Names::with_prefix(&prefix);
    names.max_receives = max_receives;
    ensure_all(sdk, &names).await.unwrap()
}

pub async fn store() -> Held<dyn ItemStore> {
    let sdk = sdk().await;
    let made = provision(&sdk).await;
    Held::new(Box::new(DynamoStore::from_conf(&sdk, &made.table)), None)
}

pub async fn queue() -> Held<dyn Queue> {
    let sdk = sdk().await;
    let made = provision(&sdk).await;
    Held::new(Box::new(SqsQueue::from_conf(&sdk, made.queue_urls)), None)
}

pub async fn cipher() -> Held<dyn KeyCipher> {
    let sdk = sdk().await;
    let made = provision(&sdk).await;
    Held::new(Box::new(KmsCipher::from_conf(&sdk, &made.kms_key_id)), None)
}

pub async fn secrets() -> Held<dyn Secrets> {
    let sdk = sdk().await;
    let name = lambent_core::ids::new_id("secret");
    let body = serde_json::json!({ "signing_key": contract::secrets::SIGNING_KEY_VALUE });
    let created = aws_sdk_secretsmanager::Client::new(&sdk)
        .create_secret()
        .name(&name)
        .secret_string(body.to_string())
        .send()
        .await
        .unwrap();
    let id = created.arn().unwrap_or(&name).to_owned();
    Held::new(Box::new(SecretsManagerSecrets::from_conf(&sdk, &id)), None)
}

/// A private emulator process, for tests that stop it. Killed on drop.
pub struct PrivateEmulator {
    pub endpoint: String,
    child: Child,
}

impl PrivateEmulator {
    /// Starts `moto_server` (from `LAMBENT_TEST_MOTO_SERVER` or the PATH) on
    /// a free loopback port and waits until it answers.
    pub fn start() -> PrivateEmulator {
        let program =
            std::env::var("LAMBENT_TEST_MOTO_SERVER").unwrap_or_else(|_| "moto_server".into());
        let port = free_port();
        let child = Command::new(&program)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e} (run through scripts/test)"));
        let emulator = PrivateEmulator {
            endpoint: format!("http://127.0.0.1:{port}"),
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto_server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        emulator
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PrivateEmulator {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
