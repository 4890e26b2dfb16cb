//! Retention: finished files past their expiry are deleted from storage and their
//! jobs set EXPIRED; temp files a dead worker left behind are removed.

use std::path::Path;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::spec::Export;
use crate::jobs::Queue;
use crate::storage::Storage;

/// Jobs handled per pass.
const BATCH: i64 = 100;
/// Temp files older than this belong to no running job.
const STALE_TEMP: Duration = Duration::from_secs(24 * 3600);

/// Runs a pass every `every` until `stop`.
pub async fn run(
    queue: Queue,
    storage: Storage,
    temp_dir: std::path::PathBuf,
    every: Duration,
    stop: CancellationToken,
) {
    loop {
        match expire_once(&queue, &storage).await {
            Ok(n) if n > 0 => tracing::info!(expired = n, "expired export files"),
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "export janitor failed"),
        }
        remove_stale_temp_files(&temp_dir).await;
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// One pass: deletes the files of completed exports past their expiry and marks the
/// jobs EXPIRED. Returns how many expired.
pub async fn expire_once(queue: &Queue, storage: &Storage) -> Result<usize, String> {
    // A connection per step, none held while a file is deleted from storage.
    let due = queue
        .due_for_expiry::<Export>(BATCH)
        .await
        .map_err(|e| e.to_string())?;
    let mut expired = 0;
    for job in due {
        if let Some(result) = &job.output {
            // Keep the job COMPLETED if the file could not be deleted: next pass retries.
            if let Err(err) = storage.delete(&result.object_key).await {
                tracing::warn!(job.id = %job.id(), error = %err, "could not delete an expired export file");
                continue;
            }
        }
        if queue.mark_expired(job.id()).await.map_err(|e| e.to_string())? {
            expired += 1;
        }
    }
    Ok(expired)
}

async fn remove_stale_temp_files(dir: &Path) {
    let Ok(mut entries) = tokio::fs::read_dir(dir).await else {
        return;
    };
    while let Ok(Some(entry)) = entries.next_entry().await {
        let stale = entry
            .metadata()
            .await
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > STALE_TEMP);
        if stale {
            let _ = tokio::fs::remove_file(entry.path()).await;
        }
    }
}
