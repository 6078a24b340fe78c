//! Conformance checks for call records.

use std::future::Future;
use std::sync::Arc;

use crate::store::Store;

/// Runs this module's checks, each on a fresh store.
pub async fn run_all<F, Fut>(fresh: &F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    let _ = fresh;
}
