//! Files uploaded ahead of their import. The hub uploads a file as soon as a
//! person picks it, while they read its check and fill step 2; the import then
//! names it (`stagedId`) and starts without the file crossing the network again.
//! A staged file is stored like an import's own file (the storage backend, so any
//! replica can use it), belongs to one organization, is used by the first import
//! that is accepted with it, and expires after `bulk_import.staged_minutes`; the
//! sweep here removes expired ones, object first, so nothing outlives its time.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::db::staged_uploads;
use crate::db::{Db, DbError, now_ms};
use crate::storage::Storage;

/// Expired staged uploads removed per pass of the sweep.
const SWEEP_BATCH: i64 = 200;
/// How often the sweep looks.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// Where a staged upload's file is stored.
pub fn object_key(organization_id: &str, id: &str) -> String {
    format!("staged/{organization_id}/{id}/upload")
}

/// Removes the staged uploads expired at `now` (their objects, then their rows);
/// returns how many went. An object that cannot be deleted keeps its row, so the
/// next pass tries again.
pub async fn sweep(db: &Db, storage: &Storage, now: i64) -> Result<usize, DbError> {
    let mut gone = 0;
    loop {
        let expired = {
            let mut conn = db.conn().await?;
            staged_uploads::expired(&mut conn, now, SWEEP_BATCH).await?
        };
        let batch = expired.len() as i64;
        let mut removed_here = 0;
        for row in expired {
            if let Err(err) = storage.delete(&row.object_key).await {
                tracing::warn!(staged.id = %row.id, error = %err, "cannot delete an expired staged upload's file; retried later");
                continue;
            }
            let mut conn = db.conn().await?;
            staged_uploads::delete(&mut conn, &row.id).await?;
            removed_here += 1;
        }
        gone += removed_here;
        if batch < SWEEP_BATCH || removed_here == 0 {
            return Ok(gone);
        }
    }
}

/// Sweeps every minute (and at start) until `stop`.
pub async fn keep_tidy(db: Db, storage: Storage, stop: CancellationToken) {
    loop {
        match sweep(&db, &storage, now_ms()).await {
            Ok(0) => {}
            Ok(gone) => tracing::info!(staged = gone, "expired staged uploads removed"),
            Err(err) => tracing::warn!(error = %err, "cannot sweep expired staged uploads"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(SWEEP_EVERY) => {}
        }
    }
}
