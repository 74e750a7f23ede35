//! Identity on the storage ports, run on both backends (`tests/integration`
//! on the embedded adapters, `tests/aws` on DynamoDB and KMS in the
//! emulator): provider keys at rest, encryption-context binding, deleting a
//! user, and rate limits shared by every process.

use std::path::PathBuf;
use std::time::Duration;

use aws_config::SdkConfig;
use aws_sdk_dynamodb::types::AttributeValue;
use lambent_core::auth::Role;
use lambent_core::secret::{ExposeSecret, SecretString};
use lambent_core::Error;
use lambent_ports::{Item, ItemStore, Key, KeyCipher, Query};
use lambent_store::agents::{self, AgentSpec};
use lambent_store::models::Catalog;
use lambent_store::providers::{self, NewProvider, ProviderKind};
use lambent_store::rate_limits::{self, Limit};
use lambent_store::users::{self, NewUser};
use lambent_store::{cascade, keys};

const CANARY: &str = "sk-CANARY-9d8c7b6a5f4e3d2c1b0a";

/// The adapters under test and a way to read every byte they stored.
pub struct Storage {
    pub store: std::sync::Arc<dyn ItemStore>,
    pub cipher: Box<dyn KeyCipher>,
    raw: Raw,
    _dir: Option<tempfile::TempDir>,
}

enum Raw {
    Files(PathBuf),
    Table { sdk: Box<SdkConfig>, table: String },
}

impl Storage {
    pub async fn embedded() -> Storage {
        let dir = tempfile::Builder::new()
            .prefix("lambent-id-")
            .tempdir()
            .unwrap();
        let db = lambent_embedded::Db::open(&dir.path().join("lambent.sqlite3")).unwrap();
        let cipher =
            lambent_embedded::LocalCipher::open_or_create(&dir.path().join("master.key")).unwrap();
        Storage {
            store: std::sync::Arc::new(lambent_embedded::EmbeddedStore::new(db)),
            cipher: Box::new(cipher),
            raw: Raw::Files(dir.path().to_path_buf()),
            _dir: Some(dir),
        }
    }

    pub async fn emulator() -> Storage {
        let sdk = lambent_testkit::emulator::sdk().await;
        let made = lambent_testkit::emulator::provision(&sdk).await;
        Storage {
            store: std::sync::Arc::new(lambent_aws::DynamoStore::from_conf(&sdk, &made.table)),
            cipher: Box::new(lambent_aws::KmsCipher::from_conf(&sdk, &made.kms_key_id)),
            raw: Raw::Table {
                sdk: Box::new(sdk),
                table: made.table,
            },
            _dir: None,
        }
    }

    /// Whether any stored byte sequence contains `needle`.
    async fn raw_contains(&self, needle: &str) -> bool {
        let mut blobs: Vec<Vec<u8>> = Vec::new();
        match &self.raw {
            Raw::Files(dir) => {
                for entry in std::fs::read_dir(dir).unwrap() {
                    blobs.push(std::fs::read(entry.unwrap().path()).unwrap());
                }
            }
            Raw::Table { sdk, table } => {
                let client = aws_sdk_dynamodb::Client::new(sdk);
                let mut start = None;
                loop {
                    let page = client
                        .scan()
                        .table_name(table)
                        .set_exclusive_start_key(start)
                        .send()
                        .await
                        .unwrap();
                    for item in page.items() {
                        for value in item.values() {
                            collect_bytes(value, &mut blobs);
                        }
                    }
                    start = page.last_evaluated_key().cloned();
                    if start.is_none() {
                        break;
                    }
                }
            }
        }
        blobs
            .iter()
            .any(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
    }
}

fn collect_bytes(value: &AttributeValue, out: &mut Vec<Vec<u8>>) {
    match value {
        AttributeValue::S(s) => out.push(s.as_bytes().to_vec()),
        AttributeValue::B(b) => out.push(b.as_ref().to_vec()),
        AttributeValue::L(list) => list.iter().for_each(|v| collect_bytes(v, out)),
        AttributeValue::M(map) => map.values().for_each(|v| collect_bytes(v, out)),
        other => out.push(format!("{other:?}").into_bytes()),
    }
}

pub(crate) async fn user(s: &Storage, name: &str) -> String {
    users::create(
        s.store.as_ref(),
        NewUser {
            name: name.into(),
            role: Role::Member,
            monthly_budget_usd: None,
        },
    )
    .await
    .unwrap()
    .id
}

pub(crate) async fn provider(s: &Storage, owner: &str, name: &str) -> String {
    providers::create(
        s.store.as_ref(),
        s.cipher.as_ref(),
        owner,
        NewProvider {
            kind: ProviderKind::Anthropic,
            name: name.into(),
            api_key: SecretString::from(CANARY.to_owned()),
            base_url: None,
        },
    )
    .await
    .unwrap()
    .id
}

fn provider_key(owner: &str, id: &str) -> Key {
    Key::new(users::partition(owner), format!("PROVIDER#{id}"))
}

pub async fn provider_keys_are_ciphertext_bound_to_owner_and_provider(s: &Storage) {
    let alice = user(s, "alice").await;
    let bob = user(s, "bob").await;
    let a = provider(s, &alice, "a").await;
    let b = provider(s, &alice, "b").await;
    let c = provider(s, &bob, "c").await;
    assert!(
        !s.raw_contains(CANARY).await,
        "the provider key is stored in plain text"
    );
    assert!(!s.raw_contains("CANARY").await);

    let plain = providers::decrypt_api_key(s.store.as_ref(), s.cipher.as_ref(), &alice, &a)
        .await
        .unwrap();
    assert_eq!(plain.expose_secret(), CANARY);

    // Copy a's ciphertext onto b (same owner) and onto c (another owner).
    let stolen = s
        .store
        .get(&provider_key(&alice, &a))
        .await
        .unwrap()
        .unwrap();
    let ciphertext = stolen.get("api_key_ciphertext").unwrap().clone();
    for (owner, id) in [(&alice, &b), (&bob, &c)] {
        let mut victim: Item = s
            .store
            .get(&provider_key(owner, id))
            .await
            .unwrap()
            .unwrap();
        victim
            .attrs
            .insert("api_key_ciphertext".into(), ciphertext.clone());
        s.store.put(victim, None).await.unwrap();
        let result =
            providers::decrypt_api_key(s.store.as_ref(), s.cipher.as_ref(), owner, id).await;
        assert!(
            result.is_err(),
            "a moved ciphertext decrypted for {owner}/{id}"
        );
    }
    // And under the right owner but the wrong provider ID.
    let result = providers::decrypt_api_key(s.store.as_ref(), s.cipher.as_ref(), &bob, &a).await;
    assert!(matches!(result, Err(Error::NotFound(_))));
}

pub async fn deleting_a_user_leaves_nothing_of_theirs(s: &Storage) {
    let store = s.store.as_ref();
    let leaver = user(s, "leaver").await;
    let stayer = user(s, "stayer").await;
    let (key, _) = keys::create(store, &leaver, None).await.unwrap();
    let (kept_key, _) = keys::create(store, &stayer, None).await.unwrap();
    let prv = provider(s, &leaver, "p").await;
    provider(s, &stayer, "p").await;
    let catalog = Catalog::new(Duration::ZERO);
    agents::create(
        store,
        &catalog,
        &leaver,
        &agents::new_id(),
        AgentSpec {
            name: "a".into(),
            provider_id: prv,
            model: "claude-haiku-4-5".into(),
            system_prompt: Some("be brief".into()),
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
    // Something owning a whole partition, as a session owns its messages:
    // more items than one page of the walk.
    let owner_item = cascade::owns_partition(
        Item::new(Key::new(users::partition(&leaver), "SESSION#ses_1")),
        "SESSION#ses_1",
    );
    store.put(owner_item, None).await.unwrap();
    for i in 0..60 {
        let msg = Item::new(Key::new("SESSION#ses_1", format!("MSG#{i:03}"))).with("n", i as i64);
        store.put(msg, None).await.unwrap();
    }

    users::delete(store, &leaver).await.unwrap();

    for partition in [users::partition(&leaver), "SESSION#ses_1".to_owned()] {
        let page = store
            .query(Query::partition(&partition).limit(10))
            .await
            .unwrap();
        assert!(page.items.is_empty(), "{partition} keeps {:?}", page.items);
    }
    assert!(keys::lookup(store, &key.id).await.unwrap().is_none());
    assert!(users::get(store, &leaver).await.unwrap().is_none());
    // The other user is untouched.
    assert!(keys::lookup(store, &kept_key.id).await.unwrap().is_some());
    let theirs = store
        .query(Query::partition(users::partition(&stayer)).limit(10))
        .await
        .unwrap();
    assert_eq!(theirs.items.len(), 4, "{:?}", theirs.items); // profile, key, provider, its name
                                                             // A second delete finds nothing.
    assert!(matches!(
        users::delete(store, &leaver).await,
        Err(Error::NotFound(_))
    ));
    // Nothing can be attached to a deleted user.
    assert!(keys::create(store, &leaver, None).await.is_err());
}

pub async fn rate_limits_hold_across_processes(s: &Storage) {
    let limit = Limit {
        requests: 3,
        window_secs: 60,
    };
    let take = |user: &'static str, at_secs: f64| {
        rate_limits::take(
            s.store.as_ref(),
            user,
            limit,
            (1_800_000_010.0 * 1000.0 + at_secs * 1000.0) as i64,
            None,
        )
    };
    // Two "processes" share nothing but the store: the whole burst at once.
    for _ in 0..3 {
        take("usr_a", 0.0).await.unwrap();
    }
    // Then one request per 20 s, the steady rate.
    match take("usr_a", 5.0).await {
        Err(Error::RateLimited { retry_after_secs }) => assert_eq!(retry_after_secs, 15),
        other => panic!("expected 429, got {other:?}"),
    }
    take("usr_b", 5.0).await.unwrap();
    take("usr_a", 20.0).await.unwrap();
    assert!(take("usr_a", 20.5).await.is_err());
    // Where a fixed window would start afresh, a bucket has refilled only
    // what the time since allows.
    take("usr_a", 60.0).await.unwrap();
    take("usr_a", 60.0).await.unwrap();
    assert!(take("usr_a", 60.1).await.is_err());
    // Idle for a whole window: the whole burst again.
    for _ in 0..3 {
        take("usr_a", 200.0).await.unwrap();
    }
    assert!(take("usr_a", 200.0).await.is_err());
}
