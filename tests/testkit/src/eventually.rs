//! Waiting for something another task or process does, without sleeping a
//! fixed time: poll until it holds, fail loudly at a deadline.

use std::future::Future;
use std::time::Duration;

/// Polls `check` every few milliseconds until it yields `Some`, and returns
/// that; panics, naming `what`, if `within` passes first.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    let mut pause = Duration::from_millis(2);
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {within:?}"
        );
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn returns_what_the_check_finds() {
        let calls = AtomicU32::new(0);
        let found = eventually("the third call", Duration::from_secs(5), || async {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            (n == 3).then_some(n)
        })
        .await;
        assert_eq!(found, 3);
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "never: not within")]
    async fn fails_at_the_deadline() {
        eventually("never", Duration::from_secs(1), || async { None::<()> }).await;
    }
}
