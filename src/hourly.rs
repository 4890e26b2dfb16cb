//! Housekeeping that runs at start and then once an hour until the server stops
//! (the audit trail's and the ended jobs' retention purges).

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Runs `pass` now and then every hour until `stop`.
pub async fn until_stopped<F, Fut>(stop: CancellationToken, mut pass: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    loop {
        pass().await;
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
        }
    }
}
