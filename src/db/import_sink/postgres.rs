//! The PostgreSQL import sink: parts are written on [`CONNECTIONS`] connections in
//! turn, so PostgreSQL upserts one part while the next is looked up, assembled,
//! copied and upserted on the other connection. With one connection its backend
//! was busy ~90 % of the time and the second core mostly idle. Order is kept three
//! ways: a part naming an entity that a part in flight writes waits for it (so its
//! lookup and merge see that row); parts are assembled in order (counters, ids);
//! and a part writes its checkpoint only once the part before has committed (and
//! the checkpoint only applies on top of that part's: a `rows_done` fence), so
//! parts commit in order and a retry after a crash resumes after a committed
//! prefix.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::oneshot;

use super::pg_writer::CopyWriter;
use super::{BatchEnd, Committed, DryRun, Fence, ImportRules, SinkError, Start, Tally};
use crate::db::entities::{EntityRow, EntityView};
use crate::db::import_errors::ImportErrorRow;
use crate::db::now_ms;

/// Connections writing in turn.
const CONNECTIONS: usize = 2;

type Key = (String, String);

pub struct PgSink<R: ImportRules> {
    rules: Arc<R>,
    fence: Fence,
    idle: Vec<CopyWriter>,
    in_flight: VecDeque<InFlight<R::Tally>>,
    /// Where the parts handed out so far end.
    queued_rows: i64,
    queued_tally: R::Tally,
    /// Fires when the last part handed out has committed.
    last_commit: Option<oneshot::Receiver<()>>,
    committed: Committed<R::Tally>,
    /// Set for a validate-only import: rows are counted, not written.
    dry_run: Option<DryRun>,
}

/// A part being written; aborted if dropped unfinished (the import stopped on an
/// error), which rolls its transaction back.
struct InFlight<T> {
    keys: HashSet<Key>,
    task: tokio::task::JoinHandle<(CopyWriter, Result<Committed<T>, SinkError>)>,
}

impl<T> Drop for InFlight<T> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A row to write: new, or merged over the stored entity.
#[allow(
    clippy::large_enum_variant,
    reason = "the import's ready row is as large as a stored one; the lint only sees a type parameter"
)]
enum ToWrite<Ready> {
    New(Ready),
    Merged(EntityRow),
}

impl<R: ImportRules> PgSink<R> {
    pub(super) async fn open(url: &str, start: Start<R>) -> Result<Self, SinkError> {
        let mut idle = Vec::with_capacity(CONNECTIONS);
        for _ in 0..CONNECTIONS {
            idle.push(
                CopyWriter::connect(url)
                    .await
                    .map_err(|e| SinkError::Transient(format!("cannot connect for the import: {e}")))?,
            );
        }
        Ok(PgSink {
            dry_run: start.rules.dry_run().then(DryRun::default),
            rules: start.rules,
            fence: start.fence,
            idle,
            in_flight: VecDeque::new(),
            queued_rows: start.committed.rows_done,
            queued_tally: start.committed.tally.clone(),
            last_commit: None,
            committed: start.committed,
        })
    }

    pub(super) fn committed(&self) -> &Committed<R::Tally> {
        &self.committed
    }

    pub(super) async fn write(&mut self, batch: Vec<R::Row>) -> Result<(), SinkError> {
        for part in split_on_repeated_keys::<R>(batch) {
            self.push(part).await?;
        }
        Ok(())
    }

    /// Waits until a connection is free for the next part.
    pub(super) async fn ready(&mut self) -> Result<(), SinkError> {
        while self.idle.is_empty() {
            self.finish_oldest().await?;
        }
        Ok(())
    }

    /// Looks up and assembles `part`, then writes it on an idle connection in the
    /// background.
    async fn push(&mut self, part: Vec<R::Row>) -> Result<(), SinkError> {
        let keys: HashSet<Key> = part
            .iter()
            .filter_map(R::key)
            .map(|(country, tax_id)| (country.to_string(), tax_id.to_string()))
            .collect();
        while self.idle.is_empty() || self.in_flight.iter().any(|f| !f.keys.is_disjoint(&keys)) {
            self.finish_oldest().await?;
        }
        let Some(mut writer) = self.idle.pop() else {
            return Err(SinkError::Transient("no import connection is free".into()));
        };
        let started = Instant::now();
        let mut stored = HashMap::new();
        for (country, tax_ids) in keys_by_country::<R>(&part) {
            writer
                .stored(self.rules.organization_id(), &country, &tax_ids, &mut stored)
                .await
                .map_err(pg_error)?;
        }
        let looked_up = started.elapsed();
        if self.rules.stopping() {
            self.idle.push(writer);
            return Err(SinkError::Stopped);
        }
        let now = now_ms();
        let rows_before = self.queued_rows;
        self.queued_rows += part.len() as i64;
        let (rows, problems) = self.assemble(part, &stored, now);
        let end = BatchEnd::new(
            &self.fence,
            rows_before,
            self.queued_rows,
            &self.queued_tally,
            now,
        )?;
        let tally = self.queued_tally.clone();
        let previous = self.last_commit.take();
        let (committed, commit_signal) = oneshot::channel::<()>();
        self.last_commit = Some(commit_signal);
        let rules = self.rules.clone();
        let task = tokio::spawn(async move {
            let writing = Instant::now();
            let views: Vec<EntityView<'_>> = rows
                .iter()
                .map(|row| match row {
                    ToWrite::New(ready) => rules.as_new(ready, now),
                    ToWrite::Merged(row) => row.view(),
                })
                .collect();
            // The part before must have committed before this checkpoint: a dropped
            // sender means it failed.
            let previous_committed = async move {
                match previous {
                    Some(signal) => signal.await.is_ok(),
                    None => true,
                }
            };
            let result = match writer
                .write_batch(&views, &problems, &end, previous_committed)
                .await
            {
                Ok(true) => {
                    let _ = committed.send(());
                    Ok(Committed {
                        rows_done: end.rows_done,
                        tally,
                    })
                }
                Ok(false) => Err(SinkError::LeaseLost),
                Err(err) => Err(pg_error(err)),
            };
            tracing::debug!(
                rows = end.rows_done,
                lookup_ms = looked_up.as_millis() as u64,
                write_ms = writing.elapsed().as_millis() as u64,
                "import batch committed"
            );
            (writer, result)
        });
        self.in_flight.push_back(InFlight { keys, task });
        Ok(())
    }

    /// The rows to write and the problems to record for `part`, counting them.
    fn assemble(
        &mut self,
        part: Vec<R::Row>,
        stored: &HashMap<Key, EntityRow>,
        now: i64,
    ) -> (Vec<ToWrite<R::Ready>>, Vec<ImportErrorRow>) {
        let mut rows = Vec::with_capacity(part.len());
        let mut problems = Vec::new();
        for row in part {
            let Some(ready) = self.rules.settle(row, &mut self.queued_tally, &mut problems) else {
                continue;
            };
            let (country, tax_id) = R::ready_key(&ready);
            let existing = stored.get(&(country.to_string(), tax_id.to_string()));
            if let Some(dry_run) = self.dry_run.as_mut() {
                dry_run.count(&*self.rules, ready, existing, now, &mut self.queued_tally);
                continue;
            }
            match existing {
                Some(existing) => match self.rules.merged(ready, existing, now) {
                    Some(merged) => {
                        self.queued_tally.updated();
                        rows.push(ToWrite::Merged(merged));
                    }
                    None => self.queued_tally.unchanged(),
                },
                None => {
                    self.queued_tally.created();
                    rows.push(ToWrite::New(ready));
                }
            }
        }
        (rows, problems)
    }

    /// Waits for the oldest part in flight; its end becomes what has committed.
    async fn finish_oldest(&mut self) -> Result<(), SinkError> {
        let Some(mut oldest) = self.in_flight.pop_front() else {
            return Ok(());
        };
        let (writer, result) = (&mut oldest.task)
            .await
            .map_err(|e| SinkError::Transient(format!("an import write stopped: {e}")))?;
        self.idle.push(writer);
        self.committed = result?;
        Ok(())
    }

    /// Waits for every part in flight, in order.
    pub(super) async fn drain(&mut self) -> Result<(), SinkError> {
        while !self.in_flight.is_empty() {
            self.finish_oldest().await?;
        }
        Ok(())
    }
}

/// A failed write, with the server's own message. Data and constraint errors
/// (SQLSTATE classes 22, 23, 42) fail the same way on every attempt: `Rejected`,
/// instead of being retried as if the database had hiccupped. Anything else
/// (connection, deadlock, resources) is transient.
fn pg_error(err: tokio_postgres::Error) -> SinkError {
    let Some(db) = err.as_db_error() else {
        return SinkError::Transient(format!("import write failed: {err}"));
    };
    let code = db.code().code();
    let message = format!("import write failed: {} (SQLSTATE {code})", db.message());
    tracing::error!(
        sqlstate = code,
        detail = db.detail().unwrap_or_default(),
        "{message}"
    );
    if code == "53100" {
        SinkError::Full(message)
    } else if ["22", "23", "42"].iter().any(|class| code.starts_with(class)) {
        SinkError::Rejected(message)
    } else {
        SinkError::Transient(message)
    }
}

/// A batch may name the same entity twice; each run of rows without a repeat is
/// written on its own, so the later row sees (and overrides) the earlier one (its
/// stored entities are looked up for the whole part at once).
fn split_on_repeated_keys<R: ImportRules>(batch: Vec<R::Row>) -> Vec<Vec<R::Row>> {
    let mut parts = Vec::new();
    let mut current = Vec::new();
    let mut keys: HashSet<Key> = HashSet::new();
    for row in batch {
        if let Some((country, tax_id)) = R::key(&row) {
            let key = (country.to_string(), tax_id.to_string());
            if keys.contains(&key) {
                parts.push(std::mem::take(&mut current));
                keys.clear();
            }
            keys.insert(key);
        }
        current.push(row);
    }
    if !current.is_empty() {
        parts.push(current);
    }
    parts
}

/// (country, tax IDs) of the part's valid rows.
fn keys_by_country<R: ImportRules>(part: &[R::Row]) -> BTreeMap<String, Vec<String>> {
    let mut by_country: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (country, tax_id) in part.iter().filter_map(R::key) {
        by_country
            .entry(country.to_string())
            .or_default()
            .push(tax_id.to_string());
    }
    by_country
}
