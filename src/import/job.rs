//! The import job. A blocking thread reads the stored upload and applies the column
//! contract; the async side writes each batch in one transaction: the entity
//! upserts, the batch's problems and the checkpoint (rows done and counters, fenced
//! by the lease). A retried job resumes after its last committed batch, so it never
//! writes an entity or a problem twice and its counters stay exact.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::csv_file::{self, Layout};
use super::entity::{self, Prepared, Ready};
use super::plan::Catalogue;
use super::report;
use super::row::RowIssue;
use super::spec::{Import, ImportResult, ImportSpec};
use crate::db::entities::{EntityRow, EntityView};
use crate::db::import_copy::{BatchEnd, CopyWriter};
use crate::db::import_errors::{self, ImportErrorRow};
use crate::db::import_sqlite::SqliteWriter;
use crate::db::jobs::JobRow;
use crate::db::{Backend, Db, enrichments, now_ms};
use crate::jobs::{Job, JobContext, JobError, NewJob, Outcome, RunJob};
use crate::storage::Storage;

/// Watchers see at most two progress events a second.
const PUBLISH_INTERVAL: Duration = Duration::from_millis(500);

#[derive(Clone)]
pub struct ImportJob {
    pub storage: Storage,
    pub temp_dir: PathBuf,
    /// Rows written per transaction.
    pub batch_rows: usize,
}

impl RunJob for ImportJob {
    type Kind = Import;

    async fn run(&self, job: Job<Import>, ctx: JobContext) -> Result<Outcome<ImportResult>, JobError> {
        self.import(&job, &ctx).await
    }

    /// A failed import with report recipients tells them too.
    fn on_failure(&self, job: &Job<Import>) -> Option<NewJob> {
        super::notice::follow_up(job)
    }
}

/// Where the job is: rows done (data rows, in file order) and counters.
struct Position {
    rows_done: i64,
    counters: ImportResult,
    last_publish: Option<Instant>,
}

impl ImportJob {
    async fn import(&self, job: &Job<Import>, ctx: &JobContext) -> Result<Outcome<ImportResult>, JobError> {
        tokio::fs::create_dir_all(&self.temp_dir)
            .await
            .map_err(|e| JobError::Transient(format!("cannot create {}: {e}", self.temp_dir.display())))?;
        let stem = format!("{}-{}", ctx.job().id, ctx.job().attempts);
        let upload = self.temp_dir.join(format!("{stem}.import.csv"));
        let report = self.temp_dir.join(format!("{stem}.errors.csv"));
        let result = self.import_file(ctx, job, &upload, &report).await;
        let _ = tokio::fs::remove_file(&upload).await;
        let _ = tokio::fs::remove_file(&report).await;
        result
    }

    async fn import_file(
        &self,
        ctx: &JobContext,
        job: &Job<Import>,
        upload: &Path,
        report_path: &Path,
    ) -> Result<Outcome<ImportResult>, JobError> {
        let spec = &job.spec;
        self.storage
            .fetch_to_file(&spec.object_key, upload)
            .await
            .map_err(|e| JobError::Transient(e.to_string()))?;
        let catalogue = catalogue(ctx.db(), &job.row.organization_id).await?;
        let layout = read_layout(upload, spec).await?;
        let mut position = Position {
            rows_done: job.row.rows_done,
            counters: job.output.clone().unwrap_or_default(),
            last_publish: None,
        };
        if spec.stop_on_first_error && position.rows_done == 0 {
            self.validate(ctx, spec, &catalogue, upload, &layout, report_path)
                .await?;
        }
        self.write_all(ctx, spec, &catalogue, upload, &layout, &mut position)
            .await?;
        ctx.check()?;
        if position.counters.failed > 0 {
            let (key, size, rows) = report::store(ctx, &self.storage, &layout, report_path).await?;
            position.counters.report_key = Some(key);
            position.counters.report_size = size;
            position.counters.report_rows = rows;
        }
        Ok(Outcome {
            output: Some(position.counters),
            expires_at: None,
            follow_up: super::notice::follow_up(job),
        })
    }

    /// All or nothing: every row is checked before any is written. With a failed
    /// row, its problems (and every other failed row's) are recorded with the
    /// report, and the job fails with the first one.
    async fn validate(
        &self,
        ctx: &JobContext,
        spec: &ImportSpec,
        catalogue: &Catalogue,
        upload: &Path,
        layout: &Layout,
        report_path: &Path,
    ) -> Result<(), JobError> {
        let job = ctx.job().clone();
        let mut failed = 0;
        let mut first: Option<String> = None;
        let mut batches = read_batches(upload, layout, spec, catalogue, 0, self.batch_rows);
        while let Some(batch) = batches.next().await? {
            ctx.check()?;
            let mut problems = Vec::new();
            for prepared in batch {
                let Err(issues) = &prepared.outcome else { continue };
                failed += 1;
                if first.is_none()
                    && let Some(issue) = issues.first()
                {
                    first = Some(describe(prepared.line, issue));
                }
                problems.extend(problem_rows(&job.id, &prepared, issues, 0, import_errors::ERROR));
            }
            if !problems.is_empty() {
                import_errors::insert(&mut ctx.db().conn().await?, &problems).await?;
            }
        }
        let Some(first) = first else { return Ok(()) };
        let (key, size, rows) = report::store(ctx, &self.storage, layout, report_path).await?;
        let counters = ImportResult {
            failed,
            report_key: Some(key),
            report_size: size,
            report_rows: rows,
            ..Default::default()
        };
        ctx.checkpoint(0, &counters).await?;
        Err(JobError::Permanent {
            reason: "IMPORT_ROW_INVALID".into(),
            message: format!(
                "{first}; nothing was written (stop_on_first_error); {failed} row(s) failed, see the error report"
            ),
        })
    }

    /// Writes every row after the checkpoint, batch by batch.
    async fn write_all(
        &self,
        ctx: &JobContext,
        spec: &ImportSpec,
        catalogue: &Catalogue,
        upload: &Path,
        layout: &Layout,
        position: &mut Position,
    ) -> Result<(), JobError> {
        let skip = position.rows_done as u64;
        let mut batches = read_batches(upload, layout, spec, catalogue, skip, self.batch_rows);
        if ctx.db().backend() == Backend::Sqlite {
            return write_sqlite(ctx, spec, batches, position).await;
        }
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

/// Where the job stands once a part has committed.
struct Written {
    rows_done: i64,
    counters: ImportResult,
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

/// A write the database refuses for its data: it would fail the same way again.
fn write_rejected(message: String) -> JobError {
    JobError::Permanent {
        reason: "IMPORT_WRITE_REJECTED".into(),
        message,
    }
}

/// `line 7, column tax_id: INVALID_TAX_ID: …`
fn describe(line: u64, issue: &RowIssue) -> String {
    if issue.column.is_empty() {
        format!("line {line}: {}: {}", issue.code, issue.message)
    } else {
        format!(
            "line {line}, column {}: {}: {}",
            issue.column, issue.code, issue.message
        )
    }
}

/// The rows recording `issues` of one CSV row, numbered from `first_seq` within
/// its line; `severity` is `import_errors::ERROR` or `WARNING`.
fn problem_rows(
    job_id: &str,
    prepared: &Prepared,
    issues: &[RowIssue],
    first_seq: i32,
    severity: &str,
) -> Vec<ImportErrorRow> {
    let raw = serde_json::to_string(&prepared.raw).unwrap_or_else(|_| "[]".into());
    issues
        .iter()
        .enumerate()
        .map(|(i, issue)| ImportErrorRow {
            job_id: job_id.to_string(),
            line: prepared.line as i64,
            seq: first_seq + i as i32,
            severity: severity.to_string(),
            column_name: issue.column.clone(),
            code: issue.code.to_string(),
            message: issue.message.clone(),
            raw_value: issue.raw_value.clone(),
            raw_record: raw.clone(),
        })
        .collect()
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

/// Counts a row's problems and collects them; the row's values when it is valid.
fn settle(
    prepared: Prepared,
    counters: &mut ImportResult,
    job_id: &str,
    problems: &mut Vec<ImportErrorRow>,
) -> Option<Ready> {
    let mut seq = 0;
    if let Err(issues) = &prepared.outcome {
        counters.failed += 1;
        problems.extend(problem_rows(job_id, &prepared, issues, 0, import_errors::ERROR));
        seq = issues.len() as i32;
    }
    if !prepared.warnings.is_empty() {
        counters.warnings += prepared.warnings.len() as i64;
        problems.extend(problem_rows(
            job_id,
            &prepared,
            &prepared.warnings,
            seq,
            import_errors::WARNING,
        ));
    }
    prepared.outcome.ok()
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

/// SQLite: each batch is one transaction on the import's own connection
/// ([`SqliteWriter`]), written on a blocking thread while the reader prepares the
/// next. Rows are written one by one inside the transaction, so a row sees (and
/// merges over) an earlier row of its batch naming the same entity.
async fn write_sqlite(
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

/// Tells watchers about progress, at most every [`PUBLISH_INTERVAL`].
async fn publish(ctx: &JobContext, position: &mut Position) {
    if position
        .last_publish
        .is_some_and(|t| t.elapsed() < PUBLISH_INTERVAL)
    {
        return;
    }
    position.last_publish = Some(Instant::now());
    if let Ok(mut conn) = ctx.db().conn().await {
        ctx.events().publish(&mut conn, &ctx.job().id).await;
    }
}

/// The organization's active enrichments and groups.
async fn catalogue(db: &Db, organization_id: &str) -> Result<Catalogue, JobError> {
    let mut conn = db.conn().await?;
    let mut catalogue = Catalogue::default();
    for row in enrichments::list(&mut conn, organization_id).await? {
        if row.active {
            catalogue.active.insert(row.code, row.entity_type);
        }
    }
    for group in enrichments::list_groups(&mut conn, organization_id).await? {
        let codes: Vec<String> = serde_json::from_str(&group.codes).unwrap_or_default();
        catalogue.groups.insert(group.slug, codes);
    }
    Ok(catalogue)
}

/// The header row of the stored upload.
async fn read_layout(upload: &Path, spec: &ImportSpec) -> Result<Layout, JobError> {
    let (path, column_map) = (upload.to_path_buf(), spec.column_map.clone());
    tokio::task::spawn_blocking(move || {
        let file = std::fs::File::open(&path).map_err(|e| JobError::Transient(e.to_string()))?;
        let mut reader = csv_file::reader(file);
        let mut record = csv::ByteRecord::new();
        let read = reader
            .read_byte_record(&mut record)
            .map_err(|e| JobError::Transient(e.to_string()))?;
        let invalid = |message: String| JobError::Permanent {
            reason: "INVALID_IMPORT_FILE".into(),
            message,
        };
        if !read {
            return Err(invalid("the stored file is empty".into()));
        }
        Layout::from_header(&record, &column_map).map_err(|v| {
            invalid(
                v.first()
                    .map(|v| v.message.clone())
                    .unwrap_or_else(|| "the header row cannot be read".into()),
            )
        })
    })
    .await
    .map_err(|e| JobError::Transient(e.to_string()))?
}

/// Batches of prepared rows from a blocking reader thread.
struct Batches {
    receiver: mpsc::Receiver<Vec<Prepared>>,
    reader: Option<tokio::task::JoinHandle<Result<(), String>>>,
}

impl Batches {
    /// The next batch; `None` at the end of the file. A read error fails the run
    /// (transient: the stored file did pass pre-flight).
    async fn next(&mut self) -> Result<Option<Vec<Prepared>>, JobError> {
        if let Some(batch) = self.receiver.recv().await {
            return Ok(Some(batch));
        }
        if let Some(reader) = self.reader.take() {
            reader
                .await
                .map_err(|e| JobError::Transient(e.to_string()))?
                .map_err(JobError::Transient)?;
        }
        Ok(None)
    }
}

fn read_batches(
    upload: &Path,
    layout: &Layout,
    spec: &ImportSpec,
    catalogue: &Catalogue,
    skip: u64,
    batch_rows: usize,
) -> Batches {
    let (sender, receiver) = mpsc::channel(2);
    let (path, layout, spec, catalogue) = (
        upload.to_path_buf(),
        layout.clone(),
        spec.clone(),
        catalogue.clone(),
    );
    let batch_rows = batch_rows.max(1);
    let reader = tokio::task::spawn_blocking(move || {
        let file = std::fs::File::open(&path).map_err(|e| e.to_string())?;
        let mut reader = csv_file::reader(std::io::BufReader::new(file));
        let mut record = csv::ByteRecord::new();
        // The header row.
        reader.read_byte_record(&mut record).map_err(|e| e.to_string())?;
        let mut index = 0u64;
        let mut batch = Vec::with_capacity(batch_rows);
        while reader.read_byte_record(&mut record).map_err(|e| e.to_string())? {
            if csv_file::is_blank(&record) {
                continue;
            }
            index += 1;
            if index <= skip {
                continue;
            }
            batch.push(entity::prepare(&record, &layout, &spec, &catalogue));
            // A closed channel means the job stopped: stop reading too.
            if batch.len() >= batch_rows && sender.blocking_send(std::mem::take(&mut batch)).is_err() {
                return Ok(());
            }
        }
        if !batch.is_empty() {
            let _ = sender.blocking_send(batch);
        }
        Ok(())
    });
    Batches {
        receiver,
        reader: Some(reader),
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
