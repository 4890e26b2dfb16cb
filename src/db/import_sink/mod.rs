//! Where an import's batches go: each batch's entities upserted (new, or merged over
//! the stored entity), its problems recorded and its lease-fenced checkpoint
//! (rows done and counters) written in one transaction, so a retried import resumes
//! after its last committed batch and never writes a row or a problem twice. The
//! import decides what each row means ([`ImportRules`]); the sink decides how it
//! is written, each backend its fastest way:
//! - PostgreSQL ([`postgres`]): parts of batches pipelined over two dedicated
//!   connections, binary COPY into a staging table and one set-based upsert;
//! - SQLite ([`sqlite`]): one transaction per batch on a dedicated connection,
//!   row by row with cached statements, on a blocking thread.

pub mod pg_writer;
mod postgres;
mod sqlite;
mod sqlite_writer;

use std::collections::HashSet;
use std::sync::Arc;

use serde::Serialize;

use super::entities::{EntityRow, EntityView};
use super::import_errors::ImportErrorRow;
use super::{Backend, Db};

/// What the import decides about its rows; the sink asks, in file order.
pub trait ImportRules: Send + Sync + 'static {
    /// A row as read from the file, valid or not.
    type Row: Send + 'static;
    /// A valid row's values.
    type Ready: Send + 'static;
    /// The counters kept in the job's checkpoint.
    type Tally: Tally;

    fn organization_id(&self) -> &str;
    /// A validate-only import: rows are checked and counted, no entity written.
    fn dry_run(&self) -> bool;
    /// (country, tax ID) of a valid row; `None` for an invalid one.
    fn key(row: &Self::Row) -> Option<(&str, &str)>;
    /// Counts the row's problems into `tally` and collects them; its values when it
    /// is valid.
    fn settle(
        &self,
        row: Self::Row,
        tally: &mut Self::Tally,
        problems: &mut Vec<ImportErrorRow>,
    ) -> Option<Self::Ready>;
    fn ready_key(ready: &Self::Ready) -> (&str, &str);
    /// The row as a new entity.
    fn as_new<'a>(&'a self, ready: &'a Self::Ready, now: i64) -> EntityView<'a>;
    /// The row merged over the stored entity; `None` when that changes nothing
    /// (the entity is not written, and counts as unchanged).
    fn merged(&self, ready: Self::Ready, stored: &EntityRow, now: i64) -> Option<EntityRow>;
    /// The import was asked to stop: a part looked up meanwhile is not sent
    /// ([`SinkError::Stopped`]), so no batch starts after the stop.
    fn stopping(&self) -> bool {
        false
    }
}

/// Counters a checkpoint carries; the sink counts created, updated and unchanged
/// entities.
pub trait Tally: Serialize + Clone + Send + Sync + 'static {
    fn created(&mut self);
    fn updated(&mut self);
    fn unchanged(&mut self);
}

/// What the rows of a dry run ([`ImportRules::dry_run`]) would do, counted as the
/// import would count them. A key new to the database that the file names again
/// counts as created once, then updated (its first row is not stored to merge over).
#[derive(Default)]
pub(crate) struct DryRun {
    created: HashSet<(String, String)>,
}

impl DryRun {
    fn count<R: ImportRules>(
        &mut self,
        rules: &R,
        ready: R::Ready,
        stored: Option<&EntityRow>,
        now: i64,
        tally: &mut R::Tally,
    ) {
        match stored {
            Some(stored) => match rules.merged(ready, stored, now) {
                Some(_) => tally.updated(),
                None => tally.unchanged(),
            },
            None => {
                let (country, tax_id) = R::ready_key(&ready);
                if self.created.insert((country.to_string(), tax_id.to_string())) {
                    tally.created();
                } else {
                    tally.updated();
                }
            }
        }
    }
}

/// Which job the checkpoints belong to, and the lease that fences them.
#[derive(Debug, Clone)]
pub struct Fence {
    pub job_id: String,
    pub lease_id: String,
}

/// What a sink starts from: the import's rules, the fence of its checkpoints and
/// what has committed before (a retried import resumes there).
pub(crate) struct Start<R: ImportRules> {
    rules: Arc<R>,
    fence: Fence,
    committed: Committed<R::Tally>,
}

/// What has committed: data rows done (in file order) and the counters.
#[derive(Debug, Clone)]
pub struct Committed<T> {
    pub rows_done: i64,
    pub tally: T,
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The database refused the data (constraint, type, size): it would fail the
    /// same way on every attempt.
    #[error("{0}")]
    Rejected(String),
    /// Connection, lock or resource trouble: worth another attempt.
    #[error("{0}")]
    Transient(String),
    /// The database's disk is full (SQLite's `SQLITE_FULL`, PostgreSQL's SQLSTATE
    /// 53100): retries seconds apart would not free it.
    #[error("{0}")]
    Full(String),
    /// Another worker owns the job: nothing was written.
    #[error("the job's lease was lost")]
    LeaseLost,
    /// The import is stopping ([`ImportRules::stopping`]): the batch was not
    /// sent; what was sent before it commits with [`ImportSink::finish`].
    #[error("the import is stopping")]
    Stopped,
}

/// One checkpoint: where the batch starts and ends, the counters after it.
pub(crate) struct BatchEnd {
    pub job_id: String,
    pub lease_id: String,
    /// The job's `rows_done` before this batch: the checkpoint only applies on top
    /// of the batch before it, so batches written on two connections can never
    /// commit out of order or over a gap.
    pub rows_before: i64,
    pub rows_done: i64,
    pub result: String,
    pub now: i64,
}

impl BatchEnd {
    fn new<T: Tally>(
        fence: &Fence,
        rows_before: i64,
        rows_done: i64,
        tally: &T,
        now: i64,
    ) -> Result<BatchEnd, SinkError> {
        Ok(BatchEnd {
            job_id: fence.job_id.clone(),
            lease_id: fence.lease_id.clone(),
            rows_before,
            rows_done,
            result: serde_json::to_string(tally).map_err(|e| SinkError::Rejected(e.to_string()))?,
            now,
        })
    }
}

/// The one fenced checkpoint both raw writers run inside their batch's transaction
/// (`$1` … bind in order on both backends): it applies only while the lease holds
/// and only on top of the batch before (`rows_done = $6`).
const CHECKPOINT: &str = "UPDATE jobs SET rows_done = $1, result = $2, updated_at = $3, version = version + 1 \
     WHERE id = $4 AND lease_id = $5 AND state = 'running' AND rows_done = $6";

/// An import's writer for one run.
pub enum ImportSink<R: ImportRules> {
    Postgres(postgres::PgSink<R>),
    Sqlite(sqlite::SqliteSink<R>),
}

impl<R: ImportRules> ImportSink<R> {
    /// Opens the backend's own connections; writing resumes after `committed`.
    pub async fn open(
        db: &Db,
        rules: Arc<R>,
        fence: Fence,
        committed: Committed<R::Tally>,
    ) -> Result<Self, SinkError> {
        let start = Start {
            rules,
            fence,
            committed,
        };
        Ok(match db.backend() {
            Backend::Postgres => ImportSink::Postgres(postgres::PgSink::open(db.url(), start).await?),
            Backend::Sqlite => ImportSink::Sqlite(sqlite::SqliteSink::open(db.url(), start).await?),
        })
    }

    /// Writes a batch (rows in file order). On PostgreSQL it may still be in flight
    /// when this returns; [`ImportSink::finish`] waits for it.
    pub async fn write(&mut self, batch: Vec<R::Row>) -> Result<(), SinkError> {
        match self {
            ImportSink::Postgres(sink) => sink.write(batch).await,
            ImportSink::Sqlite(sink) => sink.write(batch).await,
        }
    }

    /// Waits until the next [`ImportSink::write`] can start at once (on
    /// PostgreSQL, until a connection is free). The import checks for a stop after
    /// this wait, so a stop asked meanwhile does not send one more batch.
    pub async fn ready(&mut self) -> Result<(), SinkError> {
        match self {
            ImportSink::Postgres(sink) => sink.ready().await,
            ImportSink::Sqlite(_) => Ok(()),
        }
    }

    /// Waits until everything written so far has committed.
    pub async fn finish(&mut self) -> Result<(), SinkError> {
        match self {
            ImportSink::Postgres(sink) => sink.drain().await,
            ImportSink::Sqlite(_) => Ok(()),
        }
    }

    pub fn committed(&self) -> &Committed<R::Tally> {
        match self {
            ImportSink::Postgres(sink) => sink.committed(),
            ImportSink::Sqlite(sink) => sink.committed(),
        }
    }
}
