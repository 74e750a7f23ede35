//! The real `lambent` binary, as a new user runs it.

use std::os::unix::fs::PermissionsExt;

use lambent_ports::{Item, Key};
use lambent_testkit::app::LambentProcess;
use serde_json::Value;

fn serve_args(dir: &std::path::Path) -> Vec<String> {
    vec![
        "serve".into(),
        "--addr".into(),
        "127.0.0.1:0".into(),
        "--data-dir".into(),
        dir.display().to_string(),
    ]
}

#[tokio::test]
async fn first_start_prints_the_admin_key_once_and_later_starts_reuse_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let args = serve_args(&data);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();

    let mut first = LambentProcess::serve(&args, &[]);
    let printed: Vec<&String> = first
        .banner
        .iter()
        .filter(|l| l.starts_with("lmb_admin_"))
        .collect();
    assert_eq!(printed.len(), 1, "banner: {:?}", first.banner);
    let key_file = data.join("admin-key");
    let saved = std::fs::read_to_string(&key_file).unwrap();
    assert_eq!(&saved, printed[0]);
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    for secret_file in ["signing-key", "master.key"] {
        let mode = std::fs::metadata(data.join(secret_file))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{secret_file}");
    }
    let health: Value = reqwest::get(first.url("/health"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok", "{health}");
    first.stop();

    let second = LambentProcess::serve(&args, &[]);
    assert!(
        second.banner.iter().all(|l| !l.contains("lmb_")),
        "the key was printed again: {:?}",
        second.banner
    );
    assert_eq!(std::fs::read_to_string(&key_file).unwrap(), saved);
}

#[tokio::test]
async fn data_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = lambent_app::config::Config::default();
    let key = Key::new("USR#1", "PROFILE");
    {
        let state = lambent_boot::embedded(dir.path(), config.clone()).unwrap();
        state
            .store
            .put(Item::new(key.clone()).with("name", "Ada"), None)
            .await
            .unwrap();
        state
            .queue
            .send(
                lambent_ports::QueueName::Steps,
                "step",
                std::time::Duration::ZERO,
            )
            .await
            .unwrap();
    }
    let state = lambent_boot::embedded(dir.path(), config).unwrap();
    let item = state.store.get(&key).await.unwrap().unwrap();
    assert_eq!(item.get_str("name"), Some("Ada"));
    let got = state
        .queue
        .receive(
            lambent_ports::QueueName::Steps,
            10,
            std::time::Duration::from_secs(30),
            std::time::Duration::ZERO,
        )
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, "step");
}

#[tokio::test]
async fn a_world_readable_master_key_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    drop(lambent_boot::embedded(&data, Default::default()).unwrap());
    let key = data.join("master.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = lambent_boot::embedded(&data, Default::default())
        .err()
        .unwrap();
    assert!(err.to_string().contains("chmod 600"), "{err}");
}

/// A second `lambent serve` on the same data directory would take up the
/// first one's running turns as its own: it is refused at start, and the
/// directory is free again once the first has stopped.
#[tokio::test]
async fn a_second_serve_on_the_same_data_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let args = serve_args(&data);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut first = LambentProcess::serve(&args, &[]);

    let mut second = std::process::Command::new(lambent_testkit::app::lambent_bin())
        .args(&args)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(status) = second.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            second.kill().unwrap();
            panic!("a second lambent serve started on the same data directory");
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(!status.success());
    let mut said = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().unwrap(), &mut said).unwrap();
    assert!(
        said.contains("another `lambent serve` is using the data directory"),
        "{said}"
    );
    // The first one still serves.
    let health = reqwest::get(first.url("/health")).await.unwrap();
    assert_eq!(health.status(), 200);

    first.stop();
    let mut again = LambentProcess::serve(&args, &[]);
    let health = reqwest::get(again.url("/health")).await.unwrap();
    assert_eq!(health.status(), 200);
    again.stop();
}
