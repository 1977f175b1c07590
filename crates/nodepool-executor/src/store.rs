//! The store from async code: its calls block (diesel), so they run on tokio's blocking pool.

use nodepool_db::{Store, StoreError};

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
