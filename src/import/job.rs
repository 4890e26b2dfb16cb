//! The import job. A blocking thread reads the stored upload and applies the column
//! contract; the import sink ([`ImportSink`]) writes each batch in one transaction:
//! the entity upserts, the batch's problems and the checkpoint (rows done and
//! counters, fenced by the lease). A retried job resumes after its last committed
//! batch, so it never writes an entity or a problem twice and its counters stay
//! exact.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::plan::Catalogue;
use super::reader::{Upload, read_batches, read_layout};
use super::report;
use super::row::RowIssue;
use super::rules::{Rules, problem_rows};
use super::spec::{Import, ImportResult};
use crate::db::import_errors;
use crate::db::import_sink::{Committed, Fence, ImportSink, SinkError};
use crate::db::{Db, enrichments};
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
    /// How long an error report is kept after the import completed (0: as long
    /// as the import).
    pub report_retention: Duration,
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

impl Position {
    fn reached(&mut self, ctx: &JobContext, committed: &Committed<ImportResult>) {
        self.rows_done = committed.rows_done;
        self.counters = committed.tally.clone();
        ctx.note_rows(self.rows_done);
    }
}

/// A write the database refused for its data fails the import at once
/// (`IMPORT_WRITE_REJECTED`): it would fail the same way again; so does a full
/// disk (`STORAGE_FULL`). The rest retries.
fn sink_error(err: SinkError) -> JobError {
    match err {
        SinkError::Rejected(message) => JobError::Permanent {
            reason: "IMPORT_WRITE_REJECTED".into(),
            message,
        },
        SinkError::Full(message) => JobError::Permanent {
            reason: "STORAGE_FULL".into(),
            message: format!("{message}; free space where the database lives, then import again"),
        },
        SinkError::Transient(message) => JobError::Transient(message),
        SinkError::LeaseLost => JobError::LeaseLost,
        SinkError::Stopped => JobError::Shutdown,
    }
}

impl ImportJob {
    async fn import(&self, job: &Job<Import>, ctx: &JobContext) -> Result<Outcome<ImportResult>, JobError> {
        tokio::fs::create_dir_all(&self.temp_dir)
            .await
            .map_err(|e| JobError::Transient(format!("cannot create {}: {e}", self.temp_dir.display())))?;
        let stem = format!("{}-{}", ctx.job().id, ctx.job().attempts);
        let upload = self
            .temp_dir
            .join(format!("{stem}.import.{}", job.spec.format.extension()));
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
        self.storage.fetch_to_file(&spec.object_key, upload).await?;
        let upload = Arc::new(Upload {
            catalogue: catalogue(ctx.db(), &job.row.organization_id).await?,
            layout: read_layout(upload, spec).await?,
            path: upload.to_path_buf(),
            spec: spec.clone(),
            batch_rows: self.batch_rows,
        });
        let mut position = Position {
            rows_done: job.row.rows_done,
            counters: job.output.clone().unwrap_or_default(),
            last_publish: None,
        };
        if spec.stop_on_first_error && !spec.validate_only && position.rows_done == 0 {
            self.validate(ctx, &upload, report_path).await?;
        }
        self.write_all(ctx, &upload, &mut position).await?;
        // Every row is written: a shutdown now lets the import end COMPLETED (its
        // report and counters take a moment) rather than run again.
        match ctx.check() {
            Ok(()) | Err(JobError::Shutdown) => {}
            Err(stop) => return Err(stop),
        }
        refresh_statistics_after(ctx.db(), &position.counters);
        if position.counters.failed > 0 {
            let (key, size, rows) = report::store(ctx, &self.storage, &upload.layout, report_path).await?;
            position.counters.report_key = Some(key);
            position.counters.report_size = size;
            position.counters.report_rows = rows;
        }
        // A report expires like an export's file (`bulk_import.report_retention_days`).
        let expires_at = (position.counters.report_key.is_some() && !self.report_retention.is_zero())
            .then(|| crate::db::now_ms().saturating_add(crate::db::millis(self.report_retention)));
        Ok(Outcome {
            output: Some(position.counters),
            expires_at,
            follow_up: super::notice::follow_up(job),
        })
    }

    /// All or nothing: every row is checked before any is written. With a failed
    /// row, its problems (and every other failed row's) are recorded with the
    /// report, and the job fails with the first one.
    async fn validate(
        &self,
        ctx: &JobContext,
        upload: &Arc<Upload>,
        report_path: &Path,
    ) -> Result<(), JobError> {
        let job = ctx.job().clone();
        let mut failed = 0;
        let mut first: Option<String> = None;
        let mut batches = read_batches(upload, 0);
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
        let (key, size, rows) = report::store(ctx, &self.storage, &upload.layout, report_path).await?;
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
        upload: &Arc<Upload>,
        position: &mut Position,
    ) -> Result<(), JobError> {
        let mut batches = read_batches(upload, position.rows_done as u64);
        let job = ctx.job();
        let rules = Arc::new(Rules {
            job_id: job.id.clone(),
            organization_id: job.organization_id.clone(),
            skip_rules: upload.spec.batch.skip_rules_execution,
            validate_only: upload.spec.validate_only,
            job: Some(ctx.clone()),
        });
        let fence = Fence {
            job_id: job.id.clone(),
            lease_id: ctx.lease_id().to_string(),
        };
        let committed = Committed {
            rows_done: position.rows_done,
            tally: position.counters.clone(),
        };
        let mut sink = ImportSink::open(ctx.db(), rules, fence, committed)
            .await
            .map_err(sink_error)?;
        while let Some(batch) = batches.next().await? {
            sink.ready().await.map_err(sink_error)?;
            if let Err(stop) = ctx.check() {
                // What is on its way is finished first: the rows written stay.
                sink.finish().await.map_err(sink_error)?;
                position.reached(ctx, sink.committed());
                return Err(stop);
            }
            match sink.write(batch).await {
                // Asked to stop while the batch was looked up: it was not sent.
                Err(SinkError::Stopped) => {
                    sink.finish().await.map_err(sink_error)?;
                    position.reached(ctx, sink.committed());
                    return Err(ctx.check().err().unwrap_or(JobError::Shutdown));
                }
                written => written.map_err(sink_error)?,
            }
            position.reached(ctx, sink.committed());
            publish(ctx, position).await;
        }
        sink.finish().await.map_err(sink_error)?;
        position.reached(ctx, sink.committed());
        Ok(())
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
        // A group this build cannot read must not silently enrich nothing.
        let codes: Vec<String> = serde_json::from_str(&group.codes).map_err(|e| JobError::Permanent {
            reason: "INVALID_ENRICHMENT_GROUP".into(),
            message: format!("the enrichment group `{}` cannot be read: {e}", group.slug),
        })?;
        catalogue.groups.insert(group.slug, codes);
    }
    Ok(catalogue)
}

/// New rows after which an import refreshes the planner's statistics of
/// `entities` (PostgreSQL).
const ROWS_WORTH_NEW_STATISTICS: i64 = 10_000;

/// After a big import, ANALYZE in the background (the job's end does not wait):
/// plans and listing estimates then know the organization's new rows.
fn refresh_statistics_after(db: &Db, counters: &ImportResult) {
    if db.backend() == crate::db::Backend::Postgres && counters.created >= ROWS_WORTH_NEW_STATISTICS {
        let url = db.url().to_string();
        tokio::spawn(async move { crate::db::entities::refresh_statistics(&url).await });
    }
}

/// Once an import has ended (completed, failed or cancelled) no retry reads its
/// upload again: the file, the customer's tax IDs, names and KYC data, leaves the
/// store at once instead of waiting for the job's retention. What this cannot
/// delete now (a store outage) the retention purge deletes later.
pub fn upload_leaves_when_done(storage: Storage) -> crate::jobs::queue::EndHook {
    Arc::new(move |row| {
        let storage = storage.clone();
        Box::pin(async move {
            let Ok(job) = Job::<Import>::decode(row) else {
                return;
            };
            if job.spec.object_key.is_empty() {
                return;
            }
            match storage.delete(&job.spec.object_key).await {
                Ok(()) => {
                    tracing::info!(job.id = %job.id(), "the ended import's upload was removed from the store")
                }
                Err(err) => {
                    tracing::warn!(job.id = %job.id(), error = %err, "cannot remove the ended import's upload now; the retention purge will")
                }
            }
        })
    })
}
