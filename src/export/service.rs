//! What ExportService does, as plain Rust: create (with conflict and quota checks),
//! read, list, watch, cancel, delete, and sign downloads.

use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};

use super::delivery::{self, DeliveryError};
use super::job::{ExportResult, file_stem};
use super::spec::ExportSpec;
use crate::config::ExportsConfig;
use crate::db::email_deliveries::{self, DeliveryRow};
use crate::db::jobs::{self, JobPage, JobRow};
use crate::db::usage::{self, UsageEventRow};
use crate::db::{DbError, now_ms};
use crate::jobs::{Enqueued, NewJob, Queue, QueueError};
use crate::orgs::Organization;
use crate::storage::{Download, Storage, StorageError};

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("invalid export request")]
    Invalid(Vec<(String, String)>),
    #[error("an identical export is already queued or running ({job_id})")]
    InProgress { job_id: String },
    #[error("the organization already has {limit} exports queued or running")]
    TooManyActive { limit: u32 },
    #[error("export not found")]
    NotFound,
    #[error("the export is not finished yet ({state})")]
    NotReady { state: String },
    #[error("the export's file passed its retention and was deleted")]
    Expired,
    #[error("the export already ended ({state})")]
    AlreadyFinished { state: String },
    #[error(transparent)]
    Delivery(#[from] DeliveryError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    TooManyWatchers(#[from] crate::jobs::events::TooManyWatchers),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<QueueError> for ExportError {
    fn from(err: QueueError) -> Self {
        match err {
            QueueError::NotFound => ExportError::NotFound,
            QueueError::AlreadyFinished { state } => ExportError::AlreadyFinished { state },
            QueueError::TooManyWatchers(full) => ExportError::TooManyWatchers(full),
            QueueError::Db(db) => ExportError::Db(db),
        }
    }
}

impl From<diesel::result::Error> for ExportError {
    fn from(err: diesel::result::Error) -> Self {
        ExportError::Db(DbError::Query(err))
    }
}

/// A signed link to a finished export.
#[derive(Debug, Clone)]
pub struct DownloadLink {
    pub url: String,
    pub expires_at: i64,
    pub result: ExportResult,
}

#[derive(Clone)]
pub struct Exports {
    queue: Queue,
    storage: Storage,
    config: ExportsConfig,
}

impl Exports {
    pub fn new(queue: Queue, storage: Storage, config: ExportsConfig) -> Exports {
        Exports {
            queue,
            storage,
            config,
        }
    }

    /// Queues an export. The same `request_id` within 24 h returns the first export;
    /// an identical export still active is `InProgress`; more active exports than the
    /// limit is `TooManyActive`.
    pub async fn create(
        &self,
        org: &Organization,
        mut spec: ExportSpec,
        request_id: Option<String>,
    ) -> Result<JobRow, ExportError> {
        let organization_id = org.id.as_str();
        if let Some(requested) = &spec.delivery {
            let mut conn = self.queue.db().conn().await?;
            spec.delivery = Some(delivery::check(&mut conn, org, requested).await?);
        }
        let recipients = spec
            .delivery
            .as_ref()
            .map_or(0, |d| d.recipient_emails.len() as i64);
        let dedupe_key = spec.dedupe_key();
        let id = crate::db::new_id();
        let file_name = super::format::file_name_and_type(spec.format, spec.compression, &file_stem(&id)).0;
        let job = NewJob {
            id: Some(id),
            organization_id: organization_id.to_string(),
            kind: super::KIND.into(),
            payload: serde_json::to_value(&spec)
                .map_err(|e| ExportError::Invalid(vec![("request".into(), e.to_string())]))?,
            request_id,
            dedupe_key: Some(dedupe_key.clone()),
            search_text: file_name,
            rows_total: None,
        };
        let limit = self.config.max_active_per_org;
        let org = organization_id.to_string();
        let job_id = job.id.clone().unwrap_or_default();
        let outcome = self
            .queue
            .enqueue_guarded(job, move |conn| {
                Box::pin(async move {
                    if let Some(active) =
                        jobs::find_active_duplicate(conn, &org, super::KIND, &dedupe_key).await?
                    {
                        return Err(ExportError::InProgress { job_id: active.id });
                    }
                    if jobs::count_active(conn, &org, super::KIND).await? >= i64::from(limit) {
                        return Err(ExportError::TooManyActive { limit });
                    }
                    // Billing: one unit per recipient, once per export (keyed by its id).
                    if recipients > 0 {
                        let event = UsageEventRow {
                            id: crate::db::new_id(),
                            organization_id: org.clone(),
                            kind: super::USAGE_EMAIL_RECIPIENT.into(),
                            quantity: recipients,
                            job_id,
                            created_at: now_ms(),
                        };
                        usage::record_once(conn, &event).await?;
                    }
                    Ok(())
                })
            })
            .await?;
        let row = match outcome {
            Enqueued::Created(row) | Enqueued::Existing(row) => row,
        };
        Ok(row)
    }

    pub async fn get(&self, organization_id: &str, id: &str) -> Result<JobRow, ExportError> {
        Ok(self.queue.get(organization_id, super::KIND, id).await?)
    }

    pub async fn list(
        &self,
        organization_id: &str,
        page: &JobPage,
    ) -> Result<(Vec<JobRow>, i64), ExportError> {
        Ok(self.queue.list(organization_id, super::KIND, page).await?)
    }

    pub async fn watch(
        &self,
        organization_id: &str,
        id: &str,
    ) -> Result<impl Stream<Item = Result<Arc<JobRow>, ExportError>> + Send + 'static, ExportError> {
        let stream = self.queue.watch(organization_id, super::KIND, id).await?;
        Ok(stream.map(|item| item.map_err(ExportError::from)))
    }

    pub async fn cancel(&self, organization_id: &str, id: &str) -> Result<JobRow, ExportError> {
        Ok(self.queue.cancel(organization_id, super::KIND, id).await?)
    }

    /// Removes the job and its file; a queued or running job is cancelled first.
    pub async fn delete(&self, organization_id: &str, id: &str) -> Result<(), ExportError> {
        let job = self.get(organization_id, id).await?;
        if !job.is_terminal() {
            match self.queue.cancel(organization_id, super::KIND, id).await {
                Ok(_) | Err(QueueError::AlreadyFinished { .. }) => {}
                Err(err) => return Err(err.into()),
            }
        }
        let job = self.get(organization_id, id).await?;
        if let Some(result) = result_of(&job) {
            self.storage.delete(&result.object_key).await?;
        }
        let mut conn = self.queue.db().conn().await?;
        if !jobs::delete(&mut conn, organization_id, id).await? {
            return Err(ExportError::NotFound);
        }
        self.queue.events().publish(&mut conn, id).await;
        Ok(())
    }

    /// Per-recipient delivery states of an export (empty before any mail went out).
    pub async fn deliveries(&self, export_id: &str) -> Result<Vec<DeliveryRow>, ExportError> {
        Ok(email_deliveries::list(&mut self.queue.db().conn().await?, export_id).await?)
    }

    /// A URL signed now, valid for the configured TTL.
    pub async fn download(&self, organization_id: &str, id: &str) -> Result<DownloadLink, ExportError> {
        let job = self.get(organization_id, id).await?;
        let now = now_ms();
        let expired = job.state == jobs::EXPIRED || job.expires_at.is_some_and(|t| t <= now);
        if expired {
            return Err(ExportError::Expired);
        }
        if job.state != jobs::COMPLETED {
            return Err(ExportError::NotReady { state: job.state });
        }
        let result = result_of(&job).ok_or(ExportError::NotReady {
            state: job.state.clone(),
        })?;
        let ttl = Duration::from_secs(self.config.download_url_ttl_secs);
        let download = Download {
            file_name: &result.file_name,
            content_type: &result.content_type,
            ttl,
        };
        let url = self.storage.download_url(&result.object_key, &download).await?;
        Ok(DownloadLink {
            url,
            expires_at: now + ttl.as_millis() as i64,
            result,
        })
    }
}

/// The stored result of a completed export.
pub fn result_of(job: &JobRow) -> Option<ExportResult> {
    job.result.as_deref().and_then(|r| serde_json::from_str(r).ok())
}
