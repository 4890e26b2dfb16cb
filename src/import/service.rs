//! What ImportService does, as plain Rust: take an upload (stored to a temp file
//! with a size limit, checked by pre-flight, stored, queued), read, list, watch and
//! cancel imports, page through their problems and sign their error reports.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::io::AsyncWriteExt;

use super::csv_file::Violation;
use super::job::{ImportResult, result_of};
use super::preflight::{self, PreflightError};
use super::spec::{ImportRequest, ImportSpec};
use crate::config::Config;
use crate::db::import_errors::{self, ImportErrorRow};
use crate::db::jobs::{self, JobPage, JobRow};
use crate::db::{DbError, mappings, now_ms};
use crate::jobs::{Enqueued, NewJob, Queue, QueueError};
use crate::orgs::{Feature, Organization};
use crate::storage::{Download, Storage, StorageError};

/// Largest chunk of an upload message.
pub const MAX_CHUNK_BYTES: usize = 4 * 1024 * 1024;

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
    #[error("import not found")]
    NotFound,
    #[error("the import already ended ({state})")]
    AlreadyFinished { state: String },
    #[error("the import has no error report: {0}")]
    NoReport(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    TooManyWatchers(#[from] crate::jobs::events::TooManyWatchers),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<QueueError> for ImportError {
    fn from(err: QueueError) -> Self {
        match err {
            QueueError::NotFound => ImportError::NotFound,
            QueueError::AlreadyFinished { state } => ImportError::AlreadyFinished { state },
            QueueError::TooManyWatchers(full) => ImportError::TooManyWatchers(full),
            QueueError::Db(db) => ImportError::Db(db),
        }
    }
}

impl From<diesel::result::Error> for ImportError {
    fn from(err: diesel::result::Error) -> Self {
        ImportError::Db(DbError::Query(err))
    }
}

/// A signed link to an import's error report.
#[derive(Debug, Clone)]
pub struct ReportLink {
    pub url: String,
    pub expires_at: i64,
    pub file_name: String,
    pub result: ImportResult,
}

/// A temp file removed when dropped, whatever ended the upload (an error, or the
/// client going away, which drops the handler's future).
struct TempFile(PathBuf);

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

    fn temp_dir(&self) -> PathBuf {
        self.temp_dir.clone()
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
    ) -> Result<JobRow, ImportError>
    where
        S: Stream<Item = Result<Vec<u8>, ImportError>> + Send + Unpin,
    {
        if !org.has(Feature::BulkAutomaticEntityImport) {
            return Err(ImportError::FeatureDisabled);
        }
        let mut spec = ImportSpec::from_request(request).map_err(ImportError::Invalid)?;
        let mut conn = self.queue.db().conn().await?;
        if let Some(request_id) = &request_id {
            let since = now_ms() - crate::jobs::queue::REQUEST_ID_WINDOW_MS;
            if let Some(job) =
                jobs::find_by_request_id(&mut conn, &org.id, super::KIND, request_id, since).await?
            {
                return Ok(job);
            }
        }
        if let Some(mapping_id) = &spec.mapping_id {
            let mapping = mappings::find(&mut conn, &org.id, mapping_id)
                .await?
                .ok_or_else(|| {
                    ImportError::Invalid(vec![(
                        "options.mapping_id".into(),
                        "no saved mapping with this id".into(),
                    )])
                })?;
            spec.column_map = serde_json::from_str(&mapping.column_map).unwrap_or_default();
        }
        drop(conn);

        tokio::fs::create_dir_all(self.temp_dir())
            .await
            .map_err(StorageError::from)?;
        let temp = TempFile(
            self.temp_dir()
                .join(format!("upload-{}.csv", crate::db::new_id())),
        );
        spec.size_bytes = self.receive(&temp.0, chunks, spec.size_bytes).await?;
        let limit = org.import_row_limit(&self.config);
        let (path, checked_spec) = (temp.0.clone(), spec.clone());
        let file = std::fs::File::open(&path).map_err(StorageError::from)?;
        let total = tokio::task::spawn_blocking(move || {
            preflight::check(std::io::BufReader::new(file), &checked_spec, limit)
        })
        .await
        .map_err(|e| ImportError::Interrupted(e.to_string()))?
        .map_err(|e| match e {
            PreflightError::Invalid(violations) => ImportError::Preflight(violations),
            PreflightError::Io(message) => {
                ImportError::Storage(StorageError::Io(std::io::Error::other(message)))
            }
        })?;
        spec.total_items = total as i64;

        // Storing and queueing run to the end even if the client goes away now, so
        // an object is never left without its job.
        let this = self.clone();
        let org_id = org.id.clone();
        tokio::spawn(async move {
            let _temp = temp;
            this.store_and_queue(&org_id, spec, request_id, &path).await
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
    ) -> Result<u64, ImportError>
    where
        S: Stream<Item = Result<Vec<u8>, ImportError>> + Send + Unpin,
    {
        let limit = self.config.bulk_import.max_upload_bytes;
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
    ) -> Result<JobRow, ImportError> {
        let id = crate::db::new_id();
        spec.object_key = format!("imports/{organization_id}/{id}/upload.csv");
        self.storage.put_file(&spec.object_key, path, "text/csv").await?;
        let job = NewJob {
            id: Some(id),
            organization_id: organization_id.to_string(),
            kind: super::KIND.into(),
            payload: serde_json::to_value(&spec)
                .map_err(|e| ImportError::Invalid(vec![("options".into(), e.to_string())]))?,
            request_id,
            dedupe_key: None,
            search_text: spec.file_name.clone(),
            rows_total: Some(spec.total_items),
        };
        let limit = self.config.bulk_import.max_active_per_org;
        let org = organization_id.to_string();
        let queued = self
            .queue
            .enqueue_guarded(job, move |conn| {
                Box::pin(async move {
                    if jobs::count_active(conn, &org, super::KIND).await? >= i64::from(limit) {
                        return Err(ImportError::TooManyActive { limit });
                    }
                    Ok(())
                })
            })
            .await;
        match queued {
            Ok(Enqueued::Created(row)) => Ok(row),
            // The same request_id won a race: this upload's copy is not needed.
            Ok(Enqueued::Existing(row)) => {
                self.storage.delete(&spec.object_key).await?;
                Ok(row)
            }
            Err(err) => {
                let _ = self.storage.delete(&spec.object_key).await;
                Err(err)
            }
        }
    }

    pub async fn get(&self, organization_id: &str, id: &str) -> Result<JobRow, ImportError> {
        Ok(self.queue.get(organization_id, super::KIND, id).await?)
    }

    pub async fn list(
        &self,
        organization_id: &str,
        page: &JobPage,
    ) -> Result<(Vec<JobRow>, i64), ImportError> {
        Ok(self.queue.list(organization_id, super::KIND, page).await?)
    }

    pub async fn watch(
        &self,
        organization_id: &str,
        id: &str,
    ) -> Result<impl Stream<Item = Result<Arc<JobRow>, ImportError>> + Send + 'static, ImportError> {
        let stream = self.queue.watch(organization_id, super::KIND, id).await?;
        Ok(stream.map(|item| item.map_err(ImportError::from)))
    }

    /// A queued import never runs; a running one stops before its next batch (the
    /// rows already written stay).
    pub async fn cancel(&self, organization_id: &str, id: &str) -> Result<JobRow, ImportError> {
        Ok(self.queue.cancel(organization_id, super::KIND, id).await?)
    }

    /// Problems of an import in file order after `(line, seq)`, and how many in all.
    pub async fn errors(
        &self,
        organization_id: &str,
        id: &str,
        after: Option<(i64, i32)>,
        limit: i64,
    ) -> Result<(Vec<ImportErrorRow>, i64), ImportError> {
        let job = self.get(organization_id, id).await?;
        let mut conn = self.queue.db().conn().await?;
        let rows = import_errors::page(&mut conn, &job.id, after, false, limit).await?;
        let total = import_errors::count(&mut conn, &job.id).await?;
        Ok((rows, total))
    }

    /// A URL to the failed rows, signed now.
    pub async fn report(&self, organization_id: &str, id: &str) -> Result<ReportLink, ImportError> {
        let job = self.get(organization_id, id).await?;
        let result = result_of(&job);
        let Some(key) = result.report_key.clone() else {
            let why = if job.is_terminal() {
                "no row failed".to_string()
            } else {
                format!("the import is not finished ({})", job.state)
            };
            return Err(ImportError::NoReport(why));
        };
        let ttl = Duration::from_secs(self.config.exports.download_url_ttl_secs);
        let file_name = super::report::file_name(&job.id);
        let download = Download {
            file_name: &file_name,
            content_type: "text/csv",
            ttl,
        };
        let url = self.storage.download_url(&key, &download).await?;
        Ok(ReportLink {
            url,
            expires_at: now_ms() + ttl.as_millis() as i64,
            file_name,
            result,
        })
    }
}
