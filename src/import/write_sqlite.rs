//! The import's SQLite write path: each batch one transaction on the import's own
//! connection ([`crate::db::import_sqlite`]), written on a blocking thread while
//! the reader prepares the next.

use std::time::Instant;

use super::entity::{self, Prepared};
use super::job::{Batches, Position, Written, publish, settle, write_rejected};
use super::spec::{ImportResult, ImportSpec};
use crate::db::import_copy::BatchEnd;
use crate::db::import_sqlite::SqliteWriter;
use crate::db::jobs::JobRow;
use crate::db::now_ms;
use crate::jobs::{JobContext, JobError};

/// SQLite: each batch is one transaction on the import's own connection
/// ([`SqliteWriter`]), written on a blocking thread while the reader prepares the
/// next. Rows are written one by one inside the transaction, so a row sees (and
/// merges over) an earlier row of its batch naming the same entity.
pub(super) async fn write_all(
    ctx: &JobContext,
    spec: &ImportSpec,
    mut batches: Batches,
    position: &mut Position,
) -> Result<(), JobError> {
    let path = crate::db::sqlite_path(ctx.db().url()).to_string();
    let opened = tokio::task::spawn_blocking(move || SqliteWriter::open(&path))
        .await
        .map_err(|e| JobError::Transient(e.to_string()))?;
    let mut writer = Some(
        opened.map_err(|e| JobError::Transient(format!("cannot open the database for the import: {e}")))?,
    );
    let shared = std::sync::Arc::new(SqliteBatchContext {
        job: ctx.job().clone(),
        lease_id: ctx.lease_id().to_string(),
        skip_rules: spec.batch.skip_rules_execution,
    });
    let mut waited = Instant::now();
    while let Some(batch) = batches.next().await? {
        // Time spent waiting for the reader: near zero while the writer is the
        // bottleneck.
        let wait_ms = waited.elapsed().as_millis() as u64;
        let writing = Instant::now();
        ctx.check()?;
        let Some(mut taken) = writer.take() else {
            return Err(JobError::Transient("the import connection was lost".into()));
        };
        let (shared, rows_before, counters) = (shared.clone(), position.rows_done, position.counters.clone());
        let (returned, written) = tokio::task::spawn_blocking(move || {
            let written = write_sqlite_batch(&mut taken, &shared, batch, rows_before, counters);
            (taken, written)
        })
        .await
        .map_err(|e| JobError::Transient(format!("an import write stopped: {e}")))?;
        writer = Some(returned);
        let written = written?;
        tracing::debug!(
            rows = written.rows_done,
            wait_ms,
            write_ms = writing.elapsed().as_millis() as u64,
            "import batch committed"
        );
        position.rows_done = written.rows_done;
        position.counters = written.counters;
        publish(ctx, position).await;
        waited = Instant::now();
    }
    Ok(())
}

/// What every SQLite batch of one run needs.
struct SqliteBatchContext {
    job: JobRow,
    lease_id: String,
    skip_rules: bool,
}

/// One batch in one transaction: each row inserted, or, when its key is stored,
/// merged over the stored entity and updated; the problems; the checkpoint fenced
/// by the lease and `rows_before`.
fn write_sqlite_batch(
    writer: &mut SqliteWriter,
    shared: &SqliteBatchContext,
    batch: Vec<Prepared>,
    rows_before: i64,
    mut counters: ImportResult,
) -> Result<Written, JobError> {
    let job = &shared.job;
    let rows_done = rows_before + batch.len() as i64;
    let now = now_ms();
    let tx = writer.begin().map_err(sqlite_error)?;
    let mut problems = Vec::new();
    let organization_id = job.organization_id.as_str();
    for prepared in batch {
        let Some(ready) = settle(prepared, &mut counters, &job.id, &mut problems) else {
            continue;
        };
        if tx
            .insert_new(&ready.as_new(organization_id, shared.skip_rules, now))
            .map_err(sqlite_error)?
        {
            counters.created += 1;
            continue;
        }
        let (country, tax_id) = ready.key();
        let Some(stored) = tx
            .stored(organization_id, country, tax_id)
            .map_err(sqlite_error)?
        else {
            return Err(JobError::Transient(format!(
                "the entity {country} {tax_id} was neither inserted nor found"
            )));
        };
        counters.updated += 1;
        tx.update(&entity::merge(ready, shared.skip_rules, &stored, now).view())
            .map_err(sqlite_error)?;
    }
    tx.problems(&problems).map_err(sqlite_error)?;
    let end = BatchEnd {
        job_id: job.id.clone(),
        lease_id: shared.lease_id.clone(),
        rows_before,
        rows_done,
        result: serde_json::to_string(&counters).unwrap_or_default(),
        now,
    };
    if !tx.finish(&end).map_err(sqlite_error)? {
        return Err(JobError::LeaseLost);
    }
    Ok(Written { rows_done, counters })
}

/// A failed SQLite write: constraint, type and size errors fail the same way on
/// every attempt (`IMPORT_WRITE_REJECTED` at once, like PostgreSQL's data errors);
/// busy, locked, I/O and the rest are retried.
fn sqlite_error(err: rusqlite::Error) -> JobError {
    use rusqlite::ErrorCode::{ConstraintViolation, TooBig, TypeMismatch};
    let message = format!("import write failed: {err}");
    match err.sqlite_error_code() {
        Some(ConstraintViolation | TooBig | TypeMismatch) => {
            tracing::error!("{message}");
            write_rejected(message)
        }
        _ => JobError::Transient(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_data_errors_are_permanent_and_lock_errors_transient() {
        let failure =
            |code| rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), Some("x".into()));
        assert!(matches!(
            sqlite_error(failure(rusqlite::ffi::SQLITE_CONSTRAINT)),
            JobError::Permanent { .. }
        ));
        assert!(matches!(
            sqlite_error(failure(rusqlite::ffi::SQLITE_BUSY)),
            JobError::Transient(_)
        ));
    }
}
