//! The id of the request a task is serving: minted by the gate, returned to
//! the caller as `x-request-id`, and written in the audit line and in every
//! log line the request causes.

use std::future::Future;

tokio::task_local! {
    static REQUEST_ID: uuid::Uuid;
}

/// The id of the request this task is serving, for log lines written
/// without the debug-level request span.
pub fn current() -> Option<uuid::Uuid> {
    REQUEST_ID.try_with(|id| *id).ok()
}

/// Runs `f` with `id` as the current request id.
pub(super) async fn scope<F: Future>(id: uuid::Uuid, f: F) -> F::Output {
    REQUEST_ID.scope(id, f).await
}

/// Runs `f` synchronously with `id` as the current request id.
pub(super) fn sync_scope<R>(id: uuid::Uuid, f: impl FnOnce() -> R) -> R {
    REQUEST_ID.sync_scope(id, f)
}
