//! The root secret's reads (docs/PERFORMANCE.md, cold start): deriving the
//! server keys, as every function does at start, reads only the current
//! root; the previous one is read when something first needs it, and from
//! then on with the current one. Counted on the embedded secrets adapter.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lambent_app::config::Config;
use lambent_app::state::{StartError, State};
use lambent_core::secret::SecretString;
use lambent_embedded::{write_secret_file, FileSecrets};
use lambent_ports::secrets::{Secrets, SecretsResult};

/// The embedded secrets adapter, its reads counted.
struct Counted {
    inner: FileSecrets,
    current: AtomicUsize,
    previous: AtomicUsize,
}

type Read<'a> = Pin<Box<dyn Future<Output = SecretsResult<Option<SecretString>>> + Send + 'a>>;

// `Secrets` is an `async_trait`; this is what the attribute would write.
impl Secrets for Counted {
    fn get<'a, 'b, 'r>(&'a self, name: &'b str) -> Read<'r>
    where
        'a: 'r,
        'b: 'r,
        Self: 'r,
    {
        self.current.fetch_add(1, Ordering::SeqCst);
        self.inner.get(name)
    }

    fn get_previous<'a, 'b, 'r>(&'a self, name: &'b str) -> Read<'r>
    where
        'a: 'r,
        'b: 'r,
        Self: 'r,
    {
        self.previous.fetch_add(1, Ordering::SeqCst);
        self.inner.get_previous(name)
    }

    fn ping<'a, 'r>(&'a self) -> Pin<Box<dyn Future<Output = SecretsResult<()>> + Send + 'r>>
    where
        'a: 'r,
        Self: 'r,
    {
        self.inner.ping()
    }
}

/// A state over the embedded adapters in `dir`, its secrets counted.
fn state(
    dir: &std::path::Path,
    secret_cache: Duration,
) -> Result<(State, Arc<Counted>), StartError> {
    let config = Config {
        secret_cache,
        ..Config::default()
    };
    let mut ports = lambent_embedded::open(
        dir,
        lambent_embedded::DEFAULT_MAX_RECEIVES,
        lambent_embedded::Durability::Normal,
        lambent_core::clock::system(),
    )?;
    let counted = Arc::new(Counted {
        inner: FileSecrets::new(dir.to_path_buf()),
        current: AtomicUsize::new(0),
        previous: AtomicUsize::new(0),
    });
    ports.secrets = counted.clone();
    Ok((State::from_ports(config, ports), counted))
}

fn reads(counted: &Counted) -> (usize, usize) {
    (
        counted.current.load(Ordering::SeqCst),
        counted.previous.load(Ordering::SeqCst),
    )
}

#[tokio::test]
async fn the_keys_at_start_read_the_current_root_only_and_the_previous_on_need() {
    let dir = tempfile::tempdir().unwrap();
    write_secret_file(&dir.path().join("signing-key"), b"root-a").unwrap();
    let files = FileSecrets::new(dir.path().to_path_buf());
    // Read again on every use, to count each read.
    let (state, counted) = state(dir.path(), Duration::ZERO).unwrap();

    let first = state.identity.keys().await.unwrap();
    assert_eq!(reads(&counted), (1, 0));
    assert!(!first.with_previous);
    assert_eq!(first.cursor.previous, None);

    files
        .rotate("signing_key", &SecretString::from("root-b".to_owned()))
        .unwrap();
    let rotated = state.identity.keys().await.unwrap();
    assert_eq!(reads(&counted), (2, 0));
    assert_ne!(rotated.cursor.current, first.cursor.current);
    assert_eq!(rotated.cursor.previous, None);

    // Needed: both roots, read at once, the previous one's subkeys kept.
    let both = state.identity.keys_with_previous().await.unwrap();
    assert_eq!(reads(&counted), (3, 1));
    assert!(both.with_previous);
    assert_eq!(both.cursor.current, rotated.cursor.current);
    assert_eq!(both.cursor.previous, Some(first.cursor.current));
    assert_eq!(
        both.legacy_api_key_hash.previous,
        Some(first.legacy_api_key_hash.current)
    );
    // From then on, every read of the keys reads both.
    let again = state.identity.keys().await.unwrap();
    assert_eq!(reads(&counted), (4, 2));
    assert!(again.with_previous);
    assert_eq!(again.cursor.previous, Some(first.cursor.current));
}

#[tokio::test]
async fn keys_in_hand_with_both_roots_are_not_read_again() {
    let dir = tempfile::tempdir().unwrap();
    write_secret_file(&dir.path().join("signing-key"), b"root-a").unwrap();
    let (state, counted) = state(dir.path(), Duration::from_secs(600)).unwrap();

    // Never rotated: the previous root is read as absent.
    state.identity.keys().await.unwrap();
    state.identity.keys().await.unwrap();
    assert_eq!(reads(&counted), (1, 0));
    let both = state.identity.keys_with_previous().await.unwrap();
    assert!(both.with_previous);
    assert_eq!(both.cursor.previous, None);
    assert_eq!(reads(&counted), (2, 1));
    for _ in 0..2 {
        assert!(state.identity.keys().await.unwrap().with_previous);
        assert!(
            state
                .identity
                .keys_with_previous()
                .await
                .unwrap()
                .with_previous
        );
    }
    assert_eq!(reads(&counted), (2, 1));
}
