//! The SQLite import sink: each batch is one transaction on the import's own
//! connection ([`SqliteWriter`]), written on a blocking thread while the import
//! reads the next. Rows are written one by one inside the transaction, so a row
//! sees (and merges over) an earlier row of its batch naming the same entity.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::sqlite_writer::SqliteWriter;
use super::{BatchEnd, Committed, DryRun, Fence, ImportRules, SinkError, Start, Tally};
use crate::db::{now_ms, sqlite_reserve};

pub struct SqliteSink<R: ImportRules> {
    shared: Arc<Shared<R>>,
    /// Lent to the blocking thread while a batch is written.
    writer: Option<SqliteWriter>,
    committed: Committed<R::Tally>,
    /// When the last batch ended: the wait for the next shows whether the reader
    /// or the writer is the bottleneck.
    waited: Instant,
}

/// What every batch of one run needs.
struct Shared<R> {
    rules: Arc<R>,
    fence: Fence,
    /// Set for a validate-only import: rows are counted, not written.
    dry_run: Option<Mutex<DryRun>>,
    /// The database file's path, whose disk reserve a full disk frees.
    database: String,
}

impl<R: ImportRules> SqliteSink<R> {
    pub(super) async fn open(url: &str, start: Start<R>) -> Result<Self, SinkError> {
        let path = crate::db::sqlite_path(url).to_string();
        let database = path.clone();
        let writer = tokio::task::spawn_blocking(move || {
            sqlite_reserve::keep(&path);
            SqliteWriter::open(&path)
        })
        .await
        .map_err(|e| SinkError::Transient(e.to_string()))?
        .map_err(|e| SinkError::Transient(format!("cannot open the database for the import: {e}")))?;
        Ok(SqliteSink {
            shared: Arc::new(Shared {
                dry_run: start.rules.dry_run().then(|| Mutex::new(DryRun::default())),
                rules: start.rules,
                fence: start.fence,
                database,
            }),
            writer: Some(writer),
            committed: start.committed,
            waited: Instant::now(),
        })
    }

    pub(super) fn committed(&self) -> &Committed<R::Tally> {
        &self.committed
    }

    pub(super) async fn write(&mut self, batch: Vec<R::Row>) -> Result<(), SinkError> {
        let wait_ms = self.waited.elapsed().as_millis() as u64;
        let writing = Instant::now();
        let Some(mut writer) = self.writer.take() else {
            return Err(SinkError::Transient("the import connection was lost".into()));
        };
        let (shared, committed) = (self.shared.clone(), self.committed.clone());
        let (writer, written) = tokio::task::spawn_blocking(move || {
            let written = write_batch(&mut writer, &shared, batch, committed);
            if let Err(SinkError::Full(_)) = &written {
                // Room for the failure's record: the reserve first, then what
                // the write-ahead log can give back.
                sqlite_reserve::release(&shared.database);
                writer.free_wal();
            }
            (writer, written)
        })
        .await
        .map_err(|e| SinkError::Transient(format!("an import write stopped: {e}")))?;
        self.writer = Some(writer);
        self.committed = written?;
        tracing::debug!(
            rows = self.committed.rows_done,
            wait_ms,
            write_ms = writing.elapsed().as_millis() as u64,
            "import batch committed"
        );
        self.waited = Instant::now();
        Ok(())
    }
}

/// One batch in one transaction: each row inserted, or, when its key is stored,
/// merged over the stored entity and updated; the problems; the checkpoint fenced
/// by the lease and the rows done before.
fn write_batch<R: ImportRules>(
    writer: &mut SqliteWriter,
    shared: &Shared<R>,
    batch: Vec<R::Row>,
    before: Committed<R::Tally>,
) -> Result<Committed<R::Tally>, SinkError> {
    let rules = &shared.rules;
    let organization_id = rules.organization_id();
    let mut tally = before.tally;
    let rows_done = before.rows_done + batch.len() as i64;
    let now = now_ms();
    let tx = writer.begin().map_err(sqlite_error)?;
    let mut problems = Vec::new();
    for row in batch {
        let Some(ready) = rules.settle(row, &mut tally, &mut problems) else {
            continue;
        };
        if let Some(dry_run) = &shared.dry_run {
            let (country, tax_id) = R::ready_key(&ready);
            let stored = tx
                .stored(organization_id, country, tax_id)
                .map_err(sqlite_error)?;
            let mut dry_run = dry_run
                .lock()
                .map_err(|_| SinkError::Transient("a dry run's counter was poisoned".into()))?;
            dry_run.count(&**rules, ready, stored.as_ref(), now, &mut tally);
            continue;
        }
        if tx.insert_new(&rules.as_new(&ready, now)).map_err(sqlite_error)? {
            tally.created();
            continue;
        }
        let (country, tax_id) = R::ready_key(&ready);
        let Some(stored) = tx
            .stored(organization_id, country, tax_id)
            .map_err(sqlite_error)?
        else {
            return Err(SinkError::Transient(format!(
                "the entity {country} {tax_id} was neither inserted nor found"
            )));
        };
        match rules.merged(ready, &stored, now) {
            Some(merged) => {
                tally.updated();
                tx.update(&merged.view()).map_err(sqlite_error)?;
            }
            None => tally.unchanged(),
        }
    }
    tx.problems(&problems).map_err(sqlite_error)?;
    let end = BatchEnd::new(&shared.fence, before.rows_done, rows_done, &tally, now)?;
    if !tx.finish(&end).map_err(sqlite_error)? {
        return Err(SinkError::LeaseLost);
    }
    Ok(Committed { rows_done, tally })
}

/// A failed write: constraint, type and size errors fail the same way on every
/// attempt (`Rejected`, like PostgreSQL's data errors); busy, locked, I/O and the
/// rest are transient.
fn sqlite_error(err: rusqlite::Error) -> SinkError {
    use rusqlite::ErrorCode::{ConstraintViolation, DiskFull, TooBig, TypeMismatch};
    let message = format!("import write failed: {err}");
    match err.sqlite_error_code() {
        Some(DiskFull) => {
            tracing::error!("{message}");
            SinkError::Full(message)
        }
        Some(ConstraintViolation | TooBig | TypeMismatch) => {
            tracing::error!("{message}");
            SinkError::Rejected(message)
        }
        _ => SinkError::Transient(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_data_errors_are_rejected_and_lock_errors_transient() {
        let failure =
            |code| rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), Some("x".into()));
        assert!(matches!(
            sqlite_error(failure(rusqlite::ffi::SQLITE_CONSTRAINT)),
            SinkError::Rejected(_)
        ));
        assert!(matches!(
            sqlite_error(failure(rusqlite::ffi::SQLITE_BUSY)),
            SinkError::Transient(_)
        ));
    }
}
