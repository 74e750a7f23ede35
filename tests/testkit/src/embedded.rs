//! Fresh embedded adapters, each in its own temporary data directory.

use lambent_embedded::write_secret_file;
use lambent_embedded::{Db, EmbeddedQueue, EmbeddedStore, FileSecrets, LocalCipher};
use lambent_ports::{ItemStore, KeyCipher, Queue, Secrets};

use crate::Held;
use lambent_ports::contract;

fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("lambent-test-")
        .tempdir()
        .unwrap()
}

pub async fn store() -> Held<dyn ItemStore> {
    let dir = temp_dir();
    let db = Db::open(&dir.path().join("lambent.sqlite3")).unwrap();
    Held::new(Box::new(EmbeddedStore::new(db)), Some(dir))
}

pub async fn queue() -> Held<dyn Queue> {
    let dir = temp_dir();
    let db = Db::open(&dir.path().join("lambent.sqlite3")).unwrap();
    let queue = EmbeddedQueue::new(db, contract::queue::MAX_RECEIVES);
    Held::new(Box::new(queue), Some(dir))
}

pub async fn cipher() -> Held<dyn KeyCipher> {
    let dir = temp_dir();
    let cipher = LocalCipher::open_or_create(&dir.path().join("master.key")).unwrap();
    Held::new(Box::new(cipher), Some(dir))
}

pub async fn secrets() -> Held<dyn Secrets> {
    let dir = temp_dir();
    write_secret_file(
        &dir.path().join("signing-key"),
        contract::secrets::SIGNING_KEY_VALUE.as_bytes(),
    )
    .unwrap();
    let secrets = FileSecrets::new(dir.path().to_path_buf());
    Held::new(Box::new(secrets), Some(dir))
}
