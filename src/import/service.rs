//! What ImportService does beyond what every job kind shares (get, list, watch and
//! cancel are the queue's): take an upload (stored to a temp file with a size
//! limit, checked by pre-flight, stored, queued), page through an import's problems
//! and sign its error report.

use crate::audit::Actor;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::io::AsyncWriteExt;

use super::layout::Violation;
use super::preflight::{self, PreflightError};
use super::spec::{Import, ImportRequest, ImportResult, ImportSpec};
use super::table::Format;
use crate::config::Config;
use crate::db::import_errors::{self, ImportErrorRow};
use crate::db::{DbError, mappings, now_ms};
use crate::jobs::{Enqueued, Job, JobKind, NewJob, Queue, QueueError};
use crate::orgs::{Feature, Organization};
use crate::storage::{Download, Storage, StorageError};

/// Largest chunk of an upload message.
pub const MAX_CHUNK_BYTES: usize = 4 * 1024 * 1024;

/// What can go wrong with an import besides what every job shares ([`QueueError`]).
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("invalid import request")]
    Invalid(Vec<(String, String)>),
    #[error("the file did not pass pre-flight")]
    Preflight(Vec<Violation>),
    #[error("the organization does not have the bulk_automatic_entity_import feature")]
    FeatureDisabled,
    #[error("the upload is larger than {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("the organization already has {limit} imports queued or running")]
    TooManyActive { limit: u32 },
    #[error("the upload ended early: {0}")]
    Interrupted(String),
    /// One message of the upload was over the server's message size limit.
    #[error("an upload message was over the server's limit of {limit_bytes} bytes")]
    MessageTooLarge { limit_bytes: String },
    #[error("the import has no error report: {0}")]
    NoReport(String),
    /// The report passed `bulk_import.report_retention_days` and was deleted.
    #[error("the import's error report passed its retention and was deleted")]
    ReportExpired,
    /// `bulk_import.max_staged_per_org` files are already staged and unexpired.
    #[error("the organization already has {limit} files uploaded ahead of their import")]
    TooManyStaged { limit: u32 },
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Job(#[from] QueueError),
}

impl From<DbError> for ImportError {
    fn from(err: DbError) -> Self {
        ImportError::Job(QueueError::Db(err))
    }
}

/// The header mapping a preview applies.
#[derive(Debug, Clone)]
pub enum PreviewMapping {
    None,
    /// A saved mapping's id.
    Saved(String),
    /// A mapping being edited (custom header -> platform column), not saved yet.
    Draft(BTreeMap<String, String>),
}

/// A signed link to an import's error report.
#[derive(Debug, Clone)]
pub struct ReportLink {
    pub url: String,
    pub expires_at: i64,
    pub file_name: String,
    pub result: ImportResult,
}

/// One failed line of an import, as its error report holds it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FailedRow {
    /// The line in the uploaded file.
    pub line: String,
    /// The cells as uploaded, one per header column.
    pub cells: Vec<String>,
    /// The column of the (first) problem, and every problem's message.
    pub column: String,
    pub problem: String,
}

/// An error report's original header and its first `limit` rows.
fn read_report(path: &std::path::Path, limit: usize) -> Result<(Vec<String>, Vec<FailedRow>), ImportError> {
    let storage =
        |e: csv::Error| ImportError::Storage(StorageError::from(std::io::Error::other(e.to_string())));
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_path(path)
        .map_err(storage)?;
    let header: Vec<String> = reader
        .headers()
        .map_err(storage)?
        .iter()
        .map(str::to_string)
        .collect();
    let original = header.len().saturating_sub(super::headers::REPORT_COLUMNS.len());
    let mut rows = Vec::new();
    for record in reader.records().take(limit) {
        let record = record.map_err(storage)?;
        let cell = |i: usize| record.get(i).unwrap_or_default().to_string();
        rows.push(FailedRow {
            line: cell(original),
            cells: (0..original).map(cell).collect(),
            column: cell(original + 1),
            problem: cell(original + 3),
        });
    }
    Ok((header[..original].to_vec(), rows))
}

/// A temp file removed when dropped, whatever ended the upload (an error, or the
/// client going away, which drops the handler's future).
pub struct TempFile(pub PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[derive(Clone)]
pub struct Imports {
    queue: Queue,
    storage: Storage,
    config: Arc<Config>,
    /// This process's temp folder ([`crate::scratch`]).
    temp_dir: PathBuf,
}

impl Imports {
    pub fn new(queue: Queue, storage: Storage, config: Arc<Config>, temp_dir: PathBuf) -> Imports {
        Imports {
            queue,
            storage,
            config,
            temp_dir,
        }
    }

    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    /// This process's temp folder, where uploads wait for pre-flight.
    pub fn temp_dir(&self) -> PathBuf {
        self.temp_dir.clone()
    }

    /// The most bytes an upload may hold (`bulk_import.max_upload_bytes`).
    pub fn max_upload_bytes(&self) -> u64 {
        self.config.bulk_import.max_upload_bytes
    }

    /// A saved mapping's header -> column map; an unknown id is the caller's error.
    async fn column_map(
        &self,
        organization_id: &str,
        mapping_id: &str,
    ) -> Result<BTreeMap<String, String>, ImportError> {
        let mut conn = self.queue.db().conn().await?;
        let mapping = mappings::find(&mut conn, organization_id, mapping_id)
            .await
            .map_err(DbError::from)?
            .ok_or_else(|| {
                ImportError::Invalid(vec![(
                    "options.mapping_id".into(),
                    "no saved mapping with this id".into(),
                )])
            })?;
        // A stored mapping this build cannot read is the server's fault (INTERNAL),
        // not a reason to import with no mapping at all.
        super::mappings::columns_of(&mapping)
    }

    /// The header and the first `limit` rows of an import's error report (one row
    /// per failed line: its cells as uploaded and its problems), for a person to fix
    /// them in place and import them again.
    pub async fn failed_rows(
        &self,
        organization_id: &str,
        id: &str,
        limit: usize,
    ) -> Result<(Vec<String>, Vec<FailedRow>), ImportError> {
        let job = self.queue.get::<Import>(organization_id, id).await?;
        if job.output.as_ref().is_some_and(|o| o.report_expired_at.is_some()) {
            return Err(ImportError::ReportExpired);
        }
        let Some(key) = job.output.as_ref().and_then(|o| o.report_key.clone()) else {
            return Err(ImportError::NoReport(
                "no row failed, or the import is not finished".into(),
            ));
        };
        tokio::fs::create_dir_all(self.temp_dir())
            .await
            .map_err(StorageError::from)?;
        let temp = TempFile(self.temp_dir().join(format!("report-{}", crate::db::new_id())));
        self.storage.fetch_to_file(&key, &temp.0).await?;
        let read = tokio::task::spawn_blocking(move || read_report(&temp.0, limit));
        read.await.map_err(|e| ImportError::Interrupted(e.to_string()))?
    }

    /// What an import would make of the file at `path` (the beginning of a file
    /// is enough; see [`super::preview`]), with the header mapping `mapping`.
    pub async fn preview(
        &self,
        organization_id: &str,
        mapping: PreviewMapping,
        format: Format,
        path: PathBuf,
    ) -> Result<super::preview::Preview, ImportError> {
        let column_map = match mapping {
            PreviewMapping::None => BTreeMap::new(),
            PreviewMapping::Saved(id) => self.column_map(organization_id, &id).await?,
            PreviewMapping::Draft(columns) => {
                super::mapping::check_columns(&columns).map_err(ImportError::Invalid)?
            }
        };
        let read = tokio::task::spawn_blocking(move || {
            let file = std::fs::File::open(&path).map_err(StorageError::from)?;
            super::preview::preview(format, std::io::BufReader::new(file), &column_map).map_err(|e| match e {
                super::table::TableError::Refused(v) => ImportError::Preflight(vec![v]),
                super::table::TableError::Io(e) => ImportError::Storage(e.into()),
            })
        });
        read.await.map_err(|e| ImportError::Interrupted(e.to_string()))?
    }

    /// Stores the file at `path` (already received within the upload limits) as a
    /// staged upload of the organization, kept for `bulk_import.staged_minutes`.
    pub async fn stage(
        &self,
        organization_id: &str,
        file_name: &str,
        path: &std::path::Path,
    ) -> Result<crate::db::staged_uploads::StagedRow, ImportError> {
        use crate::db::staged_uploads;
        let limits = &self.config.bulk_import;
        let now = now_ms();
        let held = {
            let mut conn = self.queue.db().conn().await?;
            staged_uploads::held(&mut conn, organization_id, now)
                .await
                .map_err(DbError::from)?
        };
        if held >= i64::from(limits.max_staged_per_org) {
            return Err(ImportError::TooManyStaged {
                limit: limits.max_staged_per_org,
            });
        }
        let size = tokio::fs::metadata(path).await.map_err(StorageError::from)?.len();
        let id = crate::db::new_id();
        let row = staged_uploads::StagedRow {
            object_key: super::staged::object_key(organization_id, &id),
            id,
            organization_id: organization_id.to_string(),
            file_name: file_name.to_string(),
            size_bytes: i64::try_from(size).unwrap_or(i64::MAX),
            created_at: now,
            expires_at: now + crate::db::millis(Duration::from_secs(limits.staged_minutes * 60)),
        };
        self.storage
            .put_new_file(&row.object_key, path, "application/octet-stream")
            .await?;
        let saved = {
            let mut conn = self.queue.db().conn().await?;
            staged_uploads::insert(&mut conn, &row)
                .await
                .map_err(DbError::from)
        };
        if let Err(err) = saved {
            // No row, no sweep: the object goes now.
            let _ = self.storage.delete(&row.object_key).await;
            return Err(err.into());
        }
        Ok(row)
    }

    /// Claims the organization's unexpired staged upload `id` for an upload that
    /// names it and copies its file to `path`: of two uploads naming it, one gets
    /// it. Another organization's, a used or an expired one is the caller's error
    /// (`field` names it). The upload then calls [`Imports::forget_staged`] when it
    /// was accepted, or [`Imports::restore_staged`] when it was refused.
    pub async fn claim_staged(
        &self,
        organization_id: &str,
        id: &str,
        field: &str,
        path: &std::path::Path,
    ) -> Result<crate::db::staged_uploads::StagedRow, ImportError> {
        let row = {
            let mut conn = self.queue.db().conn().await?;
            crate::db::staged_uploads::take(&mut conn, organization_id, id.trim(), now_ms())
                .await
                .map_err(DbError::from)?
        };
        let Some(row) = row else {
            return Err(ImportError::Invalid(vec![(
                field.to_string(),
                "no file uploaded ahead with this id: it expired, was imported already, or is another organization's"
                    .into(),
            )]));
        };
        if let Err(err) = self.storage.fetch_to_file(&row.object_key, path).await {
            self.restore_staged(&row).await;
            return Err(err.into());
        }
        Ok(row)
    }

    /// A claimed staged upload whose import was refused: usable again until it
    /// expires (the person corrects step 2 and imports it).
    pub async fn restore_staged(&self, row: &crate::db::staged_uploads::StagedRow) {
        let restored = match self.queue.db().conn().await {
            Ok(mut conn) => crate::db::staged_uploads::insert(&mut conn, row)
                .await
                .map_err(DbError::from),
            Err(err) => Err(err),
        };
        if let Err(err) = restored {
            // Without its row the sweep cannot see the file: it goes now.
            tracing::warn!(staged.id = %row.id, error = %err, "cannot restore a staged upload; its file is removed");
            let _ = self.storage.delete(&row.object_key).await;
        }
    }

    /// The file of a staged upload an accepted import used. Should the store
    /// refuse, the row comes back already expired, so the sweep retries.
    pub async fn forget_staged(&self, row: &crate::db::staged_uploads::StagedRow) {
        if self.storage.delete(&row.object_key).await.is_ok() {
            return;
        }
        let expired = crate::db::staged_uploads::StagedRow {
            expires_at: now_ms(),
            ..row.clone()
        };
        self.restore_staged(&expired).await;
    }

    /// The most bytes an XLSX upload may hold (it is read whole).
    pub fn max_xlsx_bytes(&self) -> u64 {
        let limits = &self.config.bulk_import;
        limits.max_xlsx_bytes.min(limits.max_upload_bytes)
    }

    /// The most bytes an upload of `format` may hold.
    pub fn max_bytes_of(&self, format: Format) -> u64 {
        match format {
            Format::Xlsx => self.max_xlsx_bytes(),
            Format::Csv | Format::Ndjson => self.max_upload_bytes(),
        }
    }

    /// Takes an upload: checks the options, writes the chunks to a temp file (at most
    /// `bulk_import.max_upload_bytes`), runs pre-flight, stores the file and queues
    /// the job. Nothing is left behind when any step fails.
    pub async fn upload<S>(
        &self,
        org: &Organization,
        request: ImportRequest,
        request_id: Option<String>,
        chunks: S,
        actor: Option<Actor>,
    ) -> Result<Job<Import>, ImportError>
    where
        S: Stream<Item = Result<Vec<u8>, ImportError>> + Send + Unpin,
    {
        if !org.has(Feature::BulkAutomaticEntityImport) {
            return Err(ImportError::FeatureDisabled);
        }
        let fixes = request.fixes_import_id.clone();
        let mut spec = ImportSpec::from_request(request).map_err(ImportError::Invalid)?;
        if !fixes.is_empty() {
            match self.queue.get::<Import>(&org.id, &fixes).await {
                Ok(_) => {}
                Err(QueueError::NotFound { .. }) => {
                    return Err(ImportError::Invalid(vec![(
                        "options.fixes_import_id".into(),
                        "no import of this organization has this id".into(),
                    )]));
                }
                Err(err) => return Err(err.into()),
            }
        }
        if let Some(request_id) = &request_id
            && let Some(job) = self
                .queue
                .find_by_request_id::<Import>(&org.id, request_id)
                .await?
        {
            return Ok(job);
        }
        if let Some(mapping_id) = &spec.mapping_id {
            spec.column_map = self.column_map(&org.id, mapping_id).await?;
        }

        tokio::fs::create_dir_all(self.temp_dir())
            .await
            .map_err(StorageError::from)?;
        let temp = TempFile(self.temp_dir().join(format!(
            "upload-{}.{}",
            crate::db::new_id(),
            spec.format.extension()
        )));
        spec.size_bytes = self
            .receive(&temp.0, chunks, spec.size_bytes, spec.format)
            .await?;
        self.queue.metrics().record_upload(spec.size_bytes);
        let limit = org.import_row_limit(&self.config);
        let (path, checked_spec) = (temp.0.clone(), spec.clone());
        let file = std::fs::File::open(&path).map_err(StorageError::from)?;
        let checked = tokio::task::spawn_blocking(move || {
            preflight::check(std::io::BufReader::new(file), &checked_spec.preflight(), limit)
        })
        .await
        .map_err(|e| ImportError::Interrupted(e.to_string()))?
        .map_err(|e| match e {
            PreflightError::Invalid(violations) => ImportError::Preflight(violations),
            PreflightError::Io(message) => {
                ImportError::Storage(StorageError::Io(std::io::Error::other(message)))
            }
        })?;
        spec.total_items = checked.rows as i64;
        spec.notices = checked.notices;

        // Storing and queueing run to the end even if the client goes away now, so
        // an object is never left without its job.
        let this = self.clone();
        let org_id = org.id.clone();
        tokio::spawn(async move {
            let _temp = temp;
            this.store_and_queue(&org_id, spec, request_id, &path, actor)
                .await
        })
        .await
        .map_err(|e| ImportError::Interrupted(e.to_string()))?
    }

    /// Writes the chunks to `path`; the size limit (and the declared size, when not
    /// 0) is checked as they arrive.
    async fn receive<S>(
        &self,
        path: &std::path::Path,
        mut chunks: S,
        declared: u64,
        format: Format,
    ) -> Result<u64, ImportError>
    where
        S: Stream<Item = Result<Vec<u8>, ImportError>> + Send + Unpin,
    {
        let limit = self.max_bytes_of(format);
        let mut file =
            tokio::io::BufWriter::new(tokio::fs::File::create(path).await.map_err(StorageError::from)?);
        let mut size = 0u64;
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk?;
            if chunk.len() > MAX_CHUNK_BYTES {
                return Err(ImportError::Invalid(vec![(
                    "chunk".into(),
                    format!("a chunk holds {} bytes; at most {MAX_CHUNK_BYTES}", chunk.len()),
                )]));
            }
            size += chunk.len() as u64;
            if size > limit {
                return Err(ImportError::TooLarge { limit });
            }
            if declared > 0 && size > declared {
                return Err(ImportError::Invalid(vec![(
                    "options.size_bytes".into(),
                    format!("the upload is longer than the {declared} bytes declared"),
                )]));
            }
            file.write_all(&chunk).await.map_err(StorageError::from)?;
        }
        if declared > 0 && size < declared {
            return Err(ImportError::Interrupted(format!(
                "the stream ended after {size} of the {declared} bytes declared in options.size_bytes"
            )));
        }
        file.flush().await.map_err(StorageError::from)?;
        Ok(size)
    }

    async fn store_and_queue(
        &self,
        organization_id: &str,
        mut spec: ImportSpec,
        request_id: Option<String>,
        path: &std::path::Path,
        actor: Option<Actor>,
    ) -> Result<Job<Import>, ImportError> {
        let id = crate::db::new_id();
        spec.object_key = format!(
            "imports/{organization_id}/{id}/upload.{}",
            spec.format.extension()
        );
        self.storage
            .put_new_file(&spec.object_key, path, "text/csv")
            .await?;
        let job = NewJob {
            id: Some(id),
            request_id,
            search_text: spec.file_name.clone(),
            rows_total: Some(spec.total_items),
            ..Import::new_job(organization_id, &spec)
                .map_err(|e| ImportError::Invalid(vec![("options".into(), e.to_string())]))?
        };
        let limit = self.config.bulk_import.max_active_per_org;
        let org = organization_id.to_string();
        let queued = self
            .queue
            .enqueue_guarded(job, actor, move |conn| {
                Box::pin(async move {
                    if Queue::count_active::<Import>(conn, &org).await? >= i64::from(limit) {
                        return Err(ImportError::TooManyActive { limit });
                    }
                    Ok(())
                })
            })
            .await;
        match queued {
            Ok(Enqueued::Created(row)) => Ok(Job::decode(row).map_err(QueueError::from)?),
            // The same request_id won a race: this upload's copy is not needed.
            Ok(Enqueued::Existing(row)) => {
                self.storage.delete(&spec.object_key).await?;
                Ok(Job::decode(row).map_err(QueueError::from)?)
            }
            Err(err) => {
                let _ = self.storage.delete(&spec.object_key).await;
                Err(err)
            }
        }
    }

    /// Problems of an import in file order after `(line, seq)`, and how many in all.
    pub async fn errors(
        &self,
        organization_id: &str,
        id: &str,
        after: Option<(i64, i32)>,
        limit: i64,
    ) -> Result<(Vec<ImportErrorRow>, i64), ImportError> {
        let job = self.queue.get::<Import>(organization_id, id).await?;
        let mut conn = self.queue.db().conn().await?;
        let rows = import_errors::page(&mut conn, job.id(), after, false, limit)
            .await
            .map_err(DbError::from)?;
        let total = import_errors::count(&mut conn, job.id())
            .await
            .map_err(DbError::from)?;
        Ok((rows, total))
    }

    /// Deletes an import's data on request: its stored files (upload, error
    /// report), its error rows (they go with the job) and the job; a queued or
    /// running import is cancelled first. The entities it wrote stay. Recorded
    /// once, as a delete, with the job's removal.
    pub async fn delete(&self, organization_id: &str, id: &str, actor: &Actor) -> Result<(), ImportError> {
        match self.queue.cancel::<Import>(organization_id, id, None).await {
            Ok(_) | Err(QueueError::AlreadyFinished { .. }) => {}
            Err(err) => return Err(err.into()),
        }
        let job = self.queue.get::<Import>(organization_id, id).await?;
        for key in <Import as crate::jobs::JobKind>::stored_files(&job) {
            self.storage.delete(&key).await?;
        }
        if !self
            .queue
            .delete::<Import>(organization_id, id, Some(actor))
            .await?
        {
            return Err(QueueError::NotFound { kind: super::KIND }.into());
        }
        Ok(())
    }

    /// A URL to the failed rows, signed now, recorded as handed to `actor` before
    /// it is.
    pub async fn report(
        &self,
        organization_id: &str,
        id: &str,
        actor: &Actor,
    ) -> Result<ReportLink, ImportError> {
        let job = self.queue.get::<Import>(organization_id, id).await?;
        let result = job.output.clone().unwrap_or_default();
        if result.report_expired_at.is_some() {
            return Err(ImportError::ReportExpired);
        }
        let Some(key) = result.report_key.clone() else {
            let why = if job.row.is_terminal() {
                "no row failed".to_string()
            } else {
                format!("the import is not finished ({})", job.row.state)
            };
            return Err(ImportError::NoReport(why));
        };
        let ttl = Duration::from_secs(self.config.exports.download_url_ttl_secs);
        let file_name = super::report::file_name(job.id());
        let download = Download {
            file_name: &file_name,
            content_type: "text/csv",
            ttl,
        };
        let url = self.storage.download_url(&key, &download).await?;
        actor
            .record_now(self.queue.db(), id, crate::audit::OK, "")
            .await?;
        Ok(ReportLink {
            url,
            expires_at: now_ms() + ttl.as_millis() as i64,
            file_name,
            result,
        })
    }
}
