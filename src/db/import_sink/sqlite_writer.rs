//! The import's SQLite connection (rusqlite, its own), used from one blocking
//! thread: per batch, one `BEGIN IMMEDIATE` transaction holding
//! each row's `INSERT … ON CONFLICT DO NOTHING` (a new key: done) or, when its key
//! is stored, the lookup and an `UPDATE` by id; the batch's problems; and the
//! lease-fenced checkpoint ([`super::CHECKPOINT`]). Every
//! statement is prepared once and cached.
//!
//! Why not diesel here: diesel builds and binds each row's query through its AST
//! (a third of the writer's time), and it cannot cache `ON CONFLICT` statements;
//! the `REPLACE` used instead made SQLite open a statement journal per row (a
//! `REPLACE` may delete), another seventh of the time. Single-row INSERT and
//! UPDATE statements need none.

use std::sync::LazyLock;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::{BatchEnd, CHECKPOINT};
use crate::db::SQLITE_SETTINGS;
use crate::db::entities::{ENTITY_COLUMN_NAMES, ENTITY_COLUMNS, EntityRow, EntityView, KEPT_ON_UPDATE};
use crate::db::import_errors::ImportErrorRow;

/// `INSERT … ON CONFLICT DO NOTHING` binding every column (`?1` … in table order).
static INSERT_NEW: LazyLock<String> = LazyLock::new(|| {
    let values: Vec<String> = (1..=ENTITY_COLUMN_NAMES.len()).map(|i| format!("?{i}")).collect();
    format!(
        "INSERT INTO entities ({ENTITY_COLUMNS}) VALUES ({}) \
         ON CONFLICT (organization_id, country, tax_id) DO NOTHING",
        values.join(", ")
    )
});

/// `UPDATE … WHERE id = ?1` of every column but [`KEPT_ON_UPDATE`], bound with the
/// INSERT's values (unused positions are allowed).
static UPDATE_BY_ID: LazyLock<String> = LazyLock::new(|| {
    let sets: Vec<String> = ENTITY_COLUMN_NAMES
        .iter()
        .enumerate()
        .filter(|(_, name)| !KEPT_ON_UPDATE.contains(name))
        .map(|(i, name)| format!("{name} = ?{}", i + 1))
        .collect();
    format!("UPDATE entities SET {} WHERE id = ?1", sets.join(", "))
});

/// Page cache of the import connection (KiB); SQLite's default is 2 MiB, which
/// makes an import into a large organization re-read its unique-index pages.
const CACHE_KIB: i64 = 16 * 1024;

/// Commits during this pause after a checkpoint pass wait for the next pass: a
/// pass per commit rewrote the same index pages again and again.
const CHECKPOINT_PAUSE: std::time::Duration = std::time::Duration::from_millis(250);

/// A dedicated connection for one import run, and a thread copying what it
/// commits from the WAL into the database file.
pub struct SqliteWriter {
    conn: Connection,
    /// Asks the checkpointer for a pass; dropping it ends the thread.
    checkpoint: std::sync::mpsc::SyncSender<()>,
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error("cannot start the checkpoint thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// One batch's transaction: look up, write, record problems, then [`Batch::finish`].
/// Dropped unfinished, it rolls back.
pub struct Batch<'c> {
    tx: rusqlite::Transaction<'c>,
    checkpoint: &'c std::sync::mpsc::SyncSender<()>,
}

impl SqliteWriter {
    /// Opens `path` with the settings of the pool's connections (WAL, busy timeout),
    /// except two, both to keep work off the writer, the import's
    /// bottleneck. Foreign keys are not checked (one index probe a row less): the
    /// organization of every row is the job's, and the job's checkpoint commits in
    /// the same transaction, fenced on the job's row, which an organization's
    /// deletion removes with it. And the connection does not checkpoint the WAL
    /// itself (a seventh of its time): a thread of its own does, on a second
    /// connection, after commits and at most every [`CHECKPOINT_PAUSE`] (SQLite's
    /// passive checkpoints run beside a writer).
    pub fn open(path: &str) -> Result<SqliteWriter, OpenError> {
        let conn = Connection::open(path)?;
        conn.execute_batch(&format!(
            "{SQLITE_SETTINGS} PRAGMA foreign_keys = OFF; PRAGMA wal_autocheckpoint = 0; \
             PRAGMA cache_size = -{CACHE_KIB};"
        ))?;
        conn.set_prepared_statement_cache_capacity(8);
        let checkpointer = Connection::open(path)?;
        checkpointer.execute_batch(SQLITE_SETTINGS)?;
        let (checkpoint, passes) = std::sync::mpsc::sync_channel::<()>(1);
        std::thread::Builder::new()
            .name("import-checkpoint".into())
            .spawn(move || {
                while passes.recv().is_ok() {
                    let pass = checkpointer.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
                    if let Err(err) = pass {
                        tracing::warn!(error = %err, "WAL checkpoint failed");
                    }
                    std::thread::sleep(CHECKPOINT_PAUSE);
                }
            })?;
        Ok(SqliteWriter { conn, checkpoint })
    }

    /// Starts a batch; waits (busy timeout) while another connection writes.
    /// After a write failed on a full disk: folds the write-ahead log into the
    /// database and truncates it, best effort, so the few pages that record the
    /// import's failure fit (the rolled-back batch's frames held that space).
    pub fn free_wal(&mut self) {
        if let Err(err) = self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)") {
            tracing::warn!(error = %err, "cannot truncate the write-ahead log after a full disk");
        }
    }

    pub fn begin(&mut self) -> rusqlite::Result<Batch<'_>> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        Ok(Batch {
            tx,
            checkpoint: &self.checkpoint,
        })
    }
}

impl Batch<'_> {
    /// The stored entity under (organization, country, tax ID), including one this
    /// batch wrote.
    pub fn stored(
        &self,
        organization_id: &str,
        country: &str,
        tax_id: &str,
    ) -> rusqlite::Result<Option<EntityRow>> {
        let mut statement = self.tx.prepare_cached(&format!(
            "SELECT {ENTITY_COLUMNS} FROM entities WHERE organization_id = ?1 AND country = ?2 AND tax_id = ?3"
        ))?;
        statement
            .query_row(params![organization_id, country, tax_id], EntityRow::from_sqlite)
            .optional()
    }

    /// Inserts `r` unless an entity is stored under its key; `false` when one is
    /// (nothing written). Trying the insert first spares new keys, the usual case,
    /// a lookup.
    pub fn insert_new(&self, r: &EntityView<'_>) -> rusqlite::Result<bool> {
        let mut statement = self.tx.prepare_cached(&INSERT_NEW)?;
        let inserted = statement.execute(r.sqlite_values().as_slice())?;
        Ok(inserted == 1)
    }

    /// A stored entity (found by [`Batch::stored`]) takes every value of `r`
    /// except its id, key and creation time. Bound as the INSERT is (unused
    /// positions are allowed), so both share one list of values.
    pub fn update(&self, r: &EntityView<'_>) -> rusqlite::Result<()> {
        let mut statement = self.tx.prepare_cached(&UPDATE_BY_ID)?;
        statement.execute(r.sqlite_values().as_slice())?;
        Ok(())
    }

    /// Records problems; one already recorded (same job, line and order) is left
    /// as is.
    pub fn problems(&self, problems: &[ImportErrorRow]) -> rusqlite::Result<()> {
        if problems.is_empty() {
            return Ok(());
        }
        let mut statement = self.tx.prepare_cached(
            "INSERT OR IGNORE INTO import_errors (job_id, line, seq, severity, column_name, code, message, \
             raw_value, raw_record) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?;
        for p in problems {
            statement.execute(params![
                p.job_id,
                p.line,
                p.seq,
                p.severity,
                p.column_name,
                p.code,
                p.message,
                p.raw_value,
                p.raw_record,
            ])?;
        }
        Ok(())
    }

    /// Writes the lease-fenced checkpoint and commits; `false` (rolled back, nothing
    /// written) when the lease was lost.
    pub fn finish(self, end: &BatchEnd) -> rusqlite::Result<bool> {
        let fenced = self.tx.execute(
            CHECKPOINT,
            params![
                end.rows_done,
                end.result,
                end.now,
                end.job_id,
                end.lease_id,
                end.rows_before
            ],
        )?;
        if fenced == 0 {
            self.tx.rollback()?;
            return Ok(false);
        }
        self.tx.commit()?;
        // A pass already asked for will copy this commit too.
        let _ = self.checkpoint.try_send(());
        Ok(true)
    }
}
