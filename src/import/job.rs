//! The import job. A blocking thread reads the stored upload and applies the column
//! contract; the async side writes each batch in one transaction: the entity
//! upserts, the batch's problems and the checkpoint (rows done and counters, fenced
//! by the lease). A retried job resumes after its last committed batch, so it never
//! writes an entity or a problem twice and its counters stay exact.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::csv_file::{self, Layout};
use super::entity::{self, Prepared, Ready};
use super::plan::Catalogue;
use super::report;
use super::row::RowIssue;
use super::spec::{Import, ImportResult, ImportSpec};
use super::{write_pg, write_sqlite};
use crate::db::import_errors::{self, ImportErrorRow};
use crate::db::{Backend, Db, enrichments};
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

/// Where the job stands once a batch (or a PostgreSQL part) has committed.
pub(super) struct Written {
    pub(super) rows_done: i64,
    pub(super) counters: ImportResult,
}

/// Where the job is: rows done (data rows, in file order) and counters.
pub(super) struct Position {
    pub(super) rows_done: i64,
    pub(super) counters: ImportResult,
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
        let batches = read_batches(upload, layout, spec, catalogue, skip, self.batch_rows);
        match ctx.db().backend() {
            Backend::Sqlite => write_sqlite::write_all(ctx, spec, batches, position).await,
            Backend::Postgres => write_pg::write_all(ctx, spec, batches, position).await,
        }
    }
}

/// A write the database refuses for its data: it would fail the same way again.
pub(super) fn write_rejected(message: String) -> JobError {
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

/// Counts a row's problems and collects them; the row's values when it is valid.
pub(super) fn settle(
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

/// Tells watchers about progress, at most every [`PUBLISH_INTERVAL`].
pub(super) async fn publish(ctx: &JobContext, position: &mut Position) {
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
        // A group this build cannot read must not silently enrich nothing.
        let codes: Vec<String> = serde_json::from_str(&group.codes).map_err(|e| JobError::Permanent {
            reason: "INVALID_ENRICHMENT_GROUP".into(),
            message: format!("the enrichment group `{}` cannot be read: {e}", group.slug),
        })?;
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
pub(super) struct Batches {
    receiver: mpsc::Receiver<Vec<Prepared>>,
    reader: Option<tokio::task::JoinHandle<Result<(), String>>>,
}

impl Batches {
    /// The next batch; `None` at the end of the file. A read error fails the run
    /// (transient: the stored file did pass pre-flight).
    pub(super) async fn next(&mut self) -> Result<Option<Vec<Prepared>>, JobError> {
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
