//! The store from async code: its calls block (diesel), so they run on tokio's blocking pool.

use std::sync::Arc;
use std::time::Duration;

use nodepool_db::{Store, StoreError};
use nodepool_provider::Clock;

/// How long an executor keeps trying a step the store cannot take for now (a lock, a
/// deadlock, the database unreachable) before its work fails: long enough for a database
/// to fail over or restart.
pub const PATIENCE: Duration = Duration::from_secs(120);
/// The first wait before trying again; each next one doubles, up to [`MOST_BETWEEN`].
const FIRST_WAIT: Duration = Duration::from_millis(100);
const MOST_BETWEEN: Duration = Duration::from_secs(5);

/// Runs `f` with the store on the blocking pool.
pub async fn call<T, F>(store: &Store, f: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
{
    let store = store.clone();
    match tokio::task::spawn_blocking(move || f(&store)).await {
        Ok(result) => result,
        // A panic inside a store call is a bug; keep the daemon up and say what happened.
        Err(join) => Err(StoreError::Invalid(format!(
            "a store call panicked: {join}"
        ))),
    }
}

/// [`call`], tried again while the store fails in a way that may pass
/// ([`StoreError::is_retryable`]: a lock, a deadlock, a race, the database unreachable),
/// waiting longer each time (0.1 s, doubling up to 5 s), for at most `patience` of
/// `clock`'s time. Other errors, and the last one, are returned.
pub async fn call_patiently<T, F>(
    store: &Store,
    clock: &dyn Clock,
    patience: Duration,
    f: F,
) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: Fn(&Store) -> Result<T, StoreError> + Send + Sync + 'static,
{
    let f = Arc::new(f);
    let deadline = clock.now().saturating_add(patience);
    let mut wait = FIRST_WAIT;
    let mut tries = 0_u32;
    loop {
        let g = f.clone();
        match call(store, move |s| g(s)).await {
            Err(e) if e.is_retryable() && clock.now().saturating_add(wait) < deadline => {
                tries += 1;
                if tries == 1 {
                    tracing::warn!(
                        "the store cannot take a step for now ({e}); trying again for up to {}s",
                        patience.as_secs()
                    );
                }
                clock.sleep(wait).await;
                wait = (wait * 2).min(MOST_BETWEEN);
            }
            Err(e) => return Err(e),
            Ok(value) => {
                if tries > 0 {
                    tracing::info!("the store took the step after {} more tries", tries);
                }
                return Ok(value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use nodepool_config::DbUri;
    use nodepool_model::Timestamp;

    use super::*;
    use crate::TokioClock;

    fn store(dir: &std::path::Path) -> Store {
        let uri = DbUri::Sqlite(dir.join("store.sqlite"));
        Store::open_and_migrate(&uri, "test", Timestamp::from_unix_seconds(0)).unwrap()
    }

    fn unavailable() -> StoreError {
        StoreError::Unavailable {
            uri: "sqlite://store.sqlite".into(),
            message: "the database went away".into(),
        }
    }

    /// Calls `f` patiently; how many times it ran, and what came of it.
    async fn run(
        store: &Store,
        failures: usize,
        error: fn() -> StoreError,
    ) -> (usize, Result<u32, StoreError>) {
        let clock = TokioClock::starting_at(Timestamp::from_unix_seconds(1_000));
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let result = call_patiently(store, &clock, PATIENCE, move |_| {
            if counted.fetch_add(1, Ordering::SeqCst) < failures {
                Err(error())
            } else {
                Ok(7)
            }
        })
        .await;
        (calls.load(Ordering::SeqCst), result)
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn a_store_that_fails_for_a_while_is_tried_again_and_one_that_is_wrong_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let (calls, result) = run(&store, 5, unavailable).await;
        assert_eq!((calls, result.unwrap()), (6, 7), "an outage that passes");
        let (calls, result) = run(&store, 5, || StoreError::Invalid("bad".into())).await;
        assert_eq!(calls, 1, "not retryable: {result:?}");
        // An outage longer than the patience: about 30 tries in two minutes, then the error.
        let (calls, result) = run(&store, usize::MAX, unavailable).await;
        assert!(matches!(result, Err(StoreError::Unavailable { .. })));
        assert!((20..40).contains(&calls), "{calls} tries");
    }
}
