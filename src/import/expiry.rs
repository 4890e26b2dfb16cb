//! Error reports expire like export files: once `bulk_import.report_retention_days`
//! have passed since the import completed, the report (the customer's rows, as
//! uploaded) is deleted from the store. The import stays COMPLETED with its
//! counters and error rows; its report download answers 410
//! `IMPORT_REPORT_EXPIRED`.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::spec::Import;
use crate::jobs::Queue;
use crate::storage::Storage;

/// Imports handled per pass.
const BATCH: i64 = 100;

/// Runs a pass every `every` until `stop`.
pub async fn run(queue: Queue, storage: Storage, every: Duration, stop: CancellationToken) {
    loop {
        match expire_once(&queue, &storage).await {
            Ok(n) if n > 0 => tracing::info!(expired = n, "expired import error reports"),
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "import report expiry failed; next pass"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// One pass: deletes the reports of completed imports past their expiry and
/// records that on each import. Returns how many expired.
pub async fn expire_once(queue: &Queue, storage: &Storage) -> Result<usize, String> {
    // A connection per step, none held while a file is deleted from storage.
    let due = queue
        .due_for_expiry::<Import>(BATCH)
        .await
        .map_err(|e| e.to_string())?;
    let mut expired = 0;
    for job in due {
        let mut output = job.output.clone().unwrap_or_default();
        if let Some(key) = output.report_key.take() {
            // Keep the expiry if the file could not be deleted: the next pass retries.
            if let Err(err) = storage.delete(&key).await {
                tracing::warn!(job.id = %job.id(), error = %err, "could not delete an expired import report");
                continue;
            }
        }
        output.report_expired_at = Some(crate::db::now_ms());
        if queue
            .replace_output::<Import>(job.id(), &output)
            .await
            .map_err(|e| e.to_string())?
        {
            expired += 1;
        }
    }
    Ok(expired)
}
