//! The import's PostgreSQL write path: parts of batches written on two dedicated
//! connections in turn ([`crate::db::import_copy`]), each with its lease-fenced
//! checkpoint, committed in order.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

use super::entity::{self, Prepared, Ready};
use super::job::{Batches, Position, Written, publish, settle, write_rejected};
use super::spec::{ImportResult, ImportSpec};
use crate::db::entities::{EntityRow, EntityView};
use crate::db::import_copy::{BatchEnd, CopyWriter};
use crate::db::import_errors::ImportErrorRow;
use crate::db::jobs::JobRow;
use crate::db::now_ms;
use crate::jobs::{JobContext, JobError};

/// Writes every batch, part by part, then waits for the parts in flight.
pub(super) async fn write_all(
    ctx: &JobContext,
    spec: &ImportSpec,
    mut batches: Batches,
    position: &mut Position,
) -> Result<(), JobError> {
    let mut pipeline = PgPipeline::connect(ctx, spec, position).await?;
    while let Some(batch) = batches.next().await? {
        if let Err(stop) = ctx.check() {
            // What is on its way is finished first: the rows written stay.
            pipeline.drain(position).await?;
            return Err(stop);
        }
        for part in split_on_repeated_keys(batch) {
            pipeline.push(part, position).await?;
        }
        publish(ctx, position).await;
    }
    pipeline.drain(position).await
}

/// Connections writing on PostgreSQL in turn.
const PG_CONNECTIONS: usize = 2;

/// The PostgreSQL write path: parts are written on [`PG_CONNECTIONS`] connections
/// in turn, so PostgreSQL upserts one part while the next is looked up, assembled,
/// copied and upserted on the other connection. With one connection its backend
/// was busy ~90 % of the time and the second core mostly idle. Order is kept three
/// ways: a part naming an entity that a part in flight writes waits for it (so its
/// lookup and merge see that row); parts are assembled in order (counters, ids);
/// and a part writes its checkpoint only once the part before has committed (and
/// the checkpoint only applies on top of that part's: a `rows_done` fence), so
/// parts commit in order and a retry after a crash resumes after a committed
/// prefix.
struct PgPipeline<'a> {
    ctx: &'a JobContext,
    skip_rules: bool,
    idle: Vec<CopyWriter>,
    in_flight: std::collections::VecDeque<InFlight>,
    /// Where the parts handed out so far end.
    queued_rows: i64,
    queued_counters: ImportResult,
    /// Fires when the last part handed out has committed.
    last_commit: Option<tokio::sync::oneshot::Receiver<()>>,
}

/// A part being written; aborted if dropped unfinished (the job stopped on an
/// error), which rolls its transaction back.
struct InFlight {
    keys: HashSet<(String, String)>,
    task: tokio::task::JoinHandle<(CopyWriter, Result<Written, JobError>)>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl<'a> PgPipeline<'a> {
    async fn connect(ctx: &'a JobContext, spec: &ImportSpec, position: &Position) -> Result<Self, JobError> {
        let mut idle = Vec::with_capacity(PG_CONNECTIONS);
        for _ in 0..PG_CONNECTIONS {
            idle.push(
                CopyWriter::connect(ctx.db().url())
                    .await
                    .map_err(|e| JobError::Transient(format!("cannot connect for the import: {e}")))?,
            );
        }
        Ok(PgPipeline {
            ctx,
            skip_rules: spec.batch.skip_rules_execution,
            idle,
            in_flight: Default::default(),
            queued_rows: position.rows_done,
            queued_counters: position.counters.clone(),
            last_commit: None,
        })
    }

    /// Looks up and assembles `part`, then writes it on an idle connection in the
    /// background.
    async fn push(&mut self, part: Vec<Prepared>, position: &mut Position) -> Result<(), JobError> {
        let keys: HashSet<(String, String)> = part
            .iter()
            .filter_map(Prepared::key)
            .map(|(country, tax_id)| (country.to_string(), tax_id.to_string()))
            .collect();
        while self.idle.is_empty() || self.in_flight.iter().any(|f| !f.keys.is_disjoint(&keys)) {
            self.finish_oldest(position).await?;
        }
        let job = self.ctx.job();
        let Some(mut writer) = self.idle.pop() else {
            return Err(JobError::Transient("no import connection is free".into()));
        };
        let started = Instant::now();
        let mut stored = HashMap::new();
        for (country, tax_ids) in keys_by_country(&part) {
            writer
                .stored(&job.organization_id, &country, &tax_ids, &mut stored)
                .await
                .map_err(pg_error)?;
        }
        let looked_up = started.elapsed();
        let now = now_ms();
        let rows_before = self.queued_rows;
        self.queued_rows += part.len() as i64;
        let (rows, problems) = assemble(
            part,
            &stored,
            &mut self.queued_counters,
            job,
            self.skip_rules,
            now,
        );
        let end = BatchEnd {
            job_id: job.id.clone(),
            lease_id: self.ctx.lease_id().to_string(),
            rows_before,
            rows_done: self.queued_rows,
            result: serde_json::to_string(&self.queued_counters).unwrap_or_default(),
            now,
        };
        let counters = self.queued_counters.clone();
        let previous = self.last_commit.take();
        let (committed, commit_signal) = tokio::sync::oneshot::channel::<()>();
        self.last_commit = Some(commit_signal);
        let (organization_id, skip_rules) = (job.organization_id.clone(), self.skip_rules);
        let task = tokio::spawn(async move {
            let writing = Instant::now();
            let views: Vec<EntityView<'_>> = rows
                .iter()
                .map(|r| r.view(&organization_id, skip_rules, now))
                .collect();
            // The batch before must have committed before this checkpoint: a
            // dropped sender means it failed.
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
                    Ok(Written {
                        rows_done: end.rows_done,
                        counters,
                    })
                }
                Ok(false) => Err(JobError::LeaseLost),
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

    /// Waits for the oldest part in flight; its end becomes the job's position.
    async fn finish_oldest(&mut self, position: &mut Position) -> Result<(), JobError> {
        let Some(mut oldest) = self.in_flight.pop_front() else {
            return Ok(());
        };
        let (writer, result) = (&mut oldest.task)
            .await
            .map_err(|e| JobError::Transient(format!("an import write stopped: {e}")))?;
        self.idle.push(writer);
        let written = result?;
        position.rows_done = written.rows_done;
        position.counters = written.counters;
        Ok(())
    }

    /// Waits for every part in flight, in order.
    async fn drain(&mut self, position: &mut Position) -> Result<(), JobError> {
        while !self.in_flight.is_empty() {
            self.finish_oldest(position).await?;
        }
        Ok(())
    }
}

/// A failed PostgreSQL write, with the server's own message. Data and constraint
/// errors (SQLSTATE classes 22, 23, 42) fail the same way on every attempt: the job
/// fails at once with `IMPORT_WRITE_REJECTED` instead of being retried as if the
/// database had hiccupped. Anything else (connection, deadlock, resources) retries.
fn pg_error(err: tokio_postgres::Error) -> JobError {
    let Some(db) = err.as_db_error() else {
        return JobError::Transient(format!("import write failed: {err}"));
    };
    let code = db.code().code();
    let message = format!("import write failed: {} (SQLSTATE {code})", db.message());
    tracing::error!(
        sqlstate = code,
        detail = db.detail().unwrap_or_default(),
        "{message}"
    );
    if ["22", "23", "42"].iter().any(|class| code.starts_with(class)) {
        write_rejected(message)
    } else {
        JobError::Transient(message)
    }
}

/// PostgreSQL: a batch may name the same entity twice; each run of rows without a
/// repeat is written on its own, so the later row sees (and overrides) the earlier
/// one (its stored entities are looked up for the whole part at once).
fn split_on_repeated_keys(batch: Vec<Prepared>) -> Vec<Vec<Prepared>> {
    let mut parts = Vec::new();
    let mut current = Vec::new();
    let mut keys: HashSet<(String, String)> = HashSet::new();
    for prepared in batch {
        if let Some((country, tax_id)) = prepared.key() {
            let key = (country.to_string(), tax_id.to_string());
            if keys.contains(&key) {
                parts.push(std::mem::take(&mut current));
                keys.clear();
            }
            keys.insert(key);
        }
        current.push(prepared);
    }
    if !current.is_empty() {
        parts.push(current);
    }
    parts
}

/// A row to write on PostgreSQL: new, or merged over the stored entity.
enum ToWrite {
    New(Ready),
    Merged(EntityRow),
}

impl ToWrite {
    fn view<'a>(&'a self, organization_id: &'a str, skip_rules: bool, now: i64) -> EntityView<'a> {
        match self {
            ToWrite::New(ready) => ready.as_new(organization_id, skip_rules, now),
            ToWrite::Merged(row) => row.view(),
        }
    }
}

/// The rows to write and the problems to record for `part`, counting them.
fn assemble(
    part: Vec<Prepared>,
    stored: &HashMap<(String, String), EntityRow>,
    counters: &mut ImportResult,
    job: &JobRow,
    skip_rules: bool,
    now: i64,
) -> (Vec<ToWrite>, Vec<ImportErrorRow>) {
    let mut rows = Vec::with_capacity(part.len());
    let mut problems = Vec::new();
    for prepared in part {
        let Some(ready) = settle(prepared, counters, &job.id, &mut problems) else {
            continue;
        };
        let (country, tax_id) = ready.key();
        match stored.get(&(country.to_string(), tax_id.to_string())) {
            Some(existing) => {
                counters.updated += 1;
                rows.push(ToWrite::Merged(entity::merge(ready, skip_rules, existing, now)));
            }
            None => {
                counters.created += 1;
                rows.push(ToWrite::New(ready));
            }
        }
    }
    (rows, problems)
}

/// (country, tax IDs) of the part's valid rows.
fn keys_by_country(part: &[Prepared]) -> BTreeMap<String, Vec<String>> {
    let mut by_country: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (country, tax_id) in part.iter().filter_map(Prepared::key) {
        by_country
            .entry(country.to_string())
            .or_default()
            .push(tax_id.to_string());
    }
    by_country
}
