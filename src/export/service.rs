//! What ExportService does beyond what every job kind shares (get, list, watch and
//! cancel are the queue's): create (with conflict and quota checks), delete, and
//! sign downloads.

use crate::audit::Actor;
use std::time::Duration;

use super::delivery::{self, DeliveryError};
use super::job::file_stem;
use super::spec::{Export, ExportResult, ExportSpec};
use crate::config::ExportsConfig;
use crate::db::email_deliveries::{self, DeliveryRow};
use crate::db::usage::{self, UsageEventRow};
use crate::db::{DbError, now_ms};
use crate::jobs::{Job, JobKind, JobState, NewJob, Queue, QueueError};
use crate::orgs::Organization;
use crate::storage::{Download, Storage, StorageError};

/// What can go wrong with an export besides what every job shares ([`QueueError`]).
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("invalid export request")]
    Invalid(Vec<(String, String)>),
    #[error("an identical export is already queued or running ({job_id})")]
    InProgress { job_id: String },
    #[error("the organization already has {limit} exports queued or running")]
    TooManyActive { limit: u32 },
    #[error("the export is not finished yet ({state})")]
    NotReady { state: JobState },
    #[error("the export's file passed its retention and was deleted")]
    Expired,
    #[error(transparent)]
    Delivery(#[from] DeliveryError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Job(#[from] QueueError),
}

impl From<DbError> for ExportError {
    fn from(err: DbError) -> Self {
        ExportError::Job(QueueError::Db(err))
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

    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    /// Queues an export. The same `request_id` within 24 h returns the first export;
    /// an identical export still active is `InProgress`; more active exports than the
    /// limit is `TooManyActive`.
    /// A new export is recorded as `actor`'s in the transaction that queues it.
    pub async fn create(
        &self,
        org: &Organization,
        mut spec: ExportSpec,
        request_id: Option<String>,
        actor: Option<Actor>,
    ) -> Result<Job<Export>, ExportError> {
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
            request_id,
            dedupe_key: Some(dedupe_key.clone()),
            search_text: file_name,
            ..Export::new_job(organization_id, &spec)
                .map_err(|e| ExportError::Invalid(vec![("request".into(), e.to_string())]))?
        };
        let limit = self.config.max_active_per_org;
        let org = organization_id.to_string();
        let job_id = job.id.clone().unwrap_or_default();
        let outcome = self
            .queue
            .enqueue_guarded(job, actor, move |conn| {
                Box::pin(async move {
                    if let Some(active) = Queue::active_duplicate::<Export>(conn, &org, &dedupe_key).await? {
                        return Err(ExportError::InProgress { job_id: active.id });
                    }
                    if Queue::count_active::<Export>(conn, &org).await? >= i64::from(limit) {
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
                        usage::record_once(conn, &event).await.map_err(DbError::from)?;
                    }
                    Ok(())
                })
            })
            .await?;
        Ok(Job::decode(outcome.into_row()).map_err(QueueError::from)?)
    }

    /// Removes the job and its file; a queued or running job is cancelled first.
    /// Recorded once, as a delete, with the job's removal.
    pub async fn delete(&self, organization_id: &str, id: &str, actor: &Actor) -> Result<(), ExportError> {
        match self.queue.cancel::<Export>(organization_id, id, None).await {
            Ok(_) | Err(QueueError::AlreadyFinished { .. }) => {}
            Err(err) => return Err(err.into()),
        }
        let job = self.queue.get::<Export>(organization_id, id).await?;
        if let Some(result) = &job.output {
            self.storage.delete(&result.object_key).await?;
        }
        if !self
            .queue
            .delete::<Export>(organization_id, id, Some(actor))
            .await?
        {
            return Err(QueueError::NotFound { kind: super::KIND }.into());
        }
        Ok(())
    }

    /// Per-recipient delivery states of an export (empty before any mail went out).
    pub async fn deliveries(&self, export_id: &str) -> Result<Vec<DeliveryRow>, ExportError> {
        let mut conn = self.queue.db().conn().await?;
        Ok(email_deliveries::list(&mut conn, export_id)
            .await
            .map_err(DbError::from)?)
    }

    /// A URL signed now, valid for the configured TTL, recorded as handed to
    /// `actor` before it is (no record, no link).
    pub async fn download(
        &self,
        organization_id: &str,
        id: &str,
        actor: &Actor,
    ) -> Result<DownloadLink, ExportError> {
        let job = self.queue.get::<Export>(organization_id, id).await?;
        let now = now_ms();
        let state = job.row.state;
        if state == JobState::Expired || job.row.expires_at.is_some_and(|t| t <= now) {
            return Err(ExportError::Expired);
        }
        let (JobState::Completed, Some(result)) = (state, job.output) else {
            return Err(ExportError::NotReady { state });
        };
        let ttl = Duration::from_secs(self.config.download_url_ttl_secs);
        let download = Download {
            file_name: &result.file_name,
            content_type: &result.content_type,
            ttl,
        };
        let url = self.storage.download_url(&result.object_key, &download).await?;
        actor
            .record_now(self.queue.db(), id, crate::audit::OK, "")
            .await?;
        Ok(DownloadLink {
            url,
            expires_at: now + ttl.as_millis() as i64,
            result,
        })
    }
}
