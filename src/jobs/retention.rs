//! Ended jobs are kept `jobs.retention_days`, then removed with what they own: their
//! stored files (an import's upload and error report, an export's file), their
//! import errors and their e-mail ledger. Without this, `jobs` and `import_errors`
//! grow with every call for as long as the service runs.
//!
//! The purge runs in small batches, each its own short transaction, ordered by end
//! time through the `jobs_ended` partial index: it never holds locks on the hot
//! tables for long, and imports and exports beside it keep their pace.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Registry;
use crate::db::{Db, DbError, jobs, now_ms};
use crate::storage::Storage;

/// Jobs removed per transaction.
pub const BATCH: i64 = 500;

/// Removes the jobs that ended before `before`, batch by batch; how many went. A
/// job whose files cannot be deleted now (storage unreachable), or whose kind this
/// build does not know, is kept for a later pass.
pub async fn purge(db: &Db, storage: &Storage, kinds: &Registry, before: i64) -> Result<usize, DbError> {
    let mut removed = 0;
    let mut after = None;
    loop {
        let batch = jobs::ended_before(&mut db.conn().await?, before, after.clone(), BATCH).await?;
        let Some(last) = batch.last() else {
            return Ok(removed);
        };
        after = last.finished_at.map(|at| (at, last.id.clone()));
        let full = batch.len() as i64 == BATCH;
        let mut gone = Vec::with_capacity(batch.len());
        // No connection is held while files are deleted from storage.
        for row in &batch {
            if delete_files(storage, kinds, row).await {
                gone.push(row.id.clone());
            }
        }
        if !gone.is_empty() {
            removed += db
                .transaction(|conn| {
                    Box::pin(async move { Ok::<_, DbError>(jobs::delete_ended(conn, &gone).await?) })
                })
                .await?;
        }
        if !full || after.is_none() {
            return Ok(removed);
        }
    }
}

/// Deletes a job's stored files; `false` (keep the job) when that failed or the
/// job cannot be read by this build.
async fn delete_files(storage: &Storage, kinds: &Registry, row: &jobs::JobRow) -> bool {
    let files = match kinds.stored_files(row) {
        Some(Ok(files)) => files,
        Some(Err(err)) => {
            tracing::warn!(job.id = %row.id, error = %err, "an ended job past its retention cannot be read; kept");
            return false;
        }
        None => return false,
    };
    for key in files {
        if let Err(err) = storage.delete(&key).await {
            tracing::warn!(job.id = %row.id, error = %err, "cannot delete the file of a job past its retention; retried later");
            return false;
        }
    }
    true
}

/// Purges once an hour (and at start) until `stop`; `retention` zero keeps every
/// job.
pub async fn keep_for(
    db: Db,
    storage: Storage,
    kinds: Registry,
    retention: Duration,
    stop: CancellationToken,
) {
    if retention.is_zero() {
        return;
    }
    crate::hourly::until_stopped(stop, || async {
        let before = now_ms().saturating_sub(crate::db::millis(retention));
        match purge(&db, &storage, &kinds, before).await {
            Ok(0) => {}
            Ok(gone) => tracing::info!(jobs = gone, "ended jobs past their retention removed"),
            Err(err) => tracing::warn!(error = %err, "cannot purge ended jobs"),
        }
    })
    .await;
}
