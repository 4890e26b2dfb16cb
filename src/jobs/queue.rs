//! Enqueueing and reading jobs: what the services call. Workers live in `worker.rs`.

use std::collections::HashMap;
use std::sync::Arc;

use futures::Stream;
use futures::future::BoxFuture;
use tokio::sync::broadcast::error::RecvError;

use super::events::Latest;
use super::{Job, JobEvents, JobKind};
use crate::audit::{self, Actor};
use crate::config::JobsConfig;
use crate::db::jobs::{self, JobPage, JobRow, JobState};
use crate::db::{Conn, Db, DbError, new_id, now_ms};
use crate::metrics::Metrics;

/// An idempotency key is honoured this long.
pub const REQUEST_ID_WINDOW_MS: i64 = 24 * 3600 * 1000;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// No job of this kind (named) with this id in the organization.
    #[error("{kind} not found")]
    NotFound { kind: &'static str },
    #[error("the {kind} already ended ({state})")]
    AlreadyFinished { kind: &'static str, state: JobState },
    #[error(transparent)]
    TooManyWatchers(#[from] super::events::TooManyWatchers),
    #[error(transparent)]
    Undecodable(#[from] super::Undecodable),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<diesel::result::Error> for QueueError {
    fn from(err: diesel::result::Error) -> Self {
        QueueError::Db(DbError::Query(err))
    }
}

/// A job to enqueue.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// A chosen id (so payloads or search text can name it); `None`: a new UUIDv7.
    pub id: Option<String>,
    pub organization_id: String,
    pub kind: String,
    /// Versioned payload (`{"v":1,...}`).
    pub payload: serde_json::Value,
    pub request_id: Option<String>,
    pub dedupe_key: Option<String>,
    /// Text that `search` in listings matches besides the id (a file name).
    pub search_text: String,
    pub rows_total: Option<i64>,
}

/// The outcome of an enqueue: a new job, or the one created earlier with the same
/// idempotency key.
#[derive(Debug, Clone)]
pub enum Enqueued {
    Created(JobRow),
    Existing(JobRow),
}

impl Enqueued {
    pub fn into_row(self) -> JobRow {
        match self {
            Enqueued::Created(row) | Enqueued::Existing(row) => row,
        }
    }
}

#[derive(Clone)]
pub struct Queue {
    db: Db,
    events: JobEvents,
    config: JobsConfig,
    metrics: Arc<Metrics>,
    /// What each kind does once one of its jobs has ended (see [`Queue::when_ended`]).
    end_hooks: Arc<std::sync::RwLock<HashMap<&'static str, EndHook>>>,
}

/// Runs after a job's end is recorded, given its row (an import removes its upload).
pub type EndHook = Arc<dyn Fn(JobRow) -> futures::future::BoxFuture<'static, ()> + Send + Sync>;

/// The row of a new queued job.
pub(crate) fn new_row(job: NewJob, max_attempts: i32, now: i64) -> JobRow {
    JobRow {
        id: job.id.unwrap_or_else(new_id),
        organization_id: job.organization_id,
        kind: job.kind,
        state: JobState::Queued,
        payload: job.payload.to_string(),
        result: None,
        error: None,
        request_id: job.request_id,
        dedupe_key: job.dedupe_key,
        search_text: job.search_text,
        attempts: 0,
        max_attempts,
        run_after: now,
        lease_id: None,
        lease_owner: None,
        lease_expires_at: None,
        cancel_requested: false,
        rows_done: 0,
        rows_total: job.rows_total,
        bytes_done: 0,
        version: 0,
        created_at: now,
        started_at: None,
        finished_at: None,
        updated_at: now,
        expires_at: None,
        created_by: None,
    }
}

impl Queue {
    pub fn new(db: Db, events: JobEvents, config: JobsConfig, metrics: Arc<Metrics>) -> Queue {
        Queue {
            db,
            events,
            config,
            metrics,
            end_hooks: Arc::default(),
        }
    }

    /// Registers what happens once a job of `kind` has ended (completed, failed or
    /// cancelled), on every path that records an end: the worker's, and a cancel of
    /// a job that never ran. Best effort and in the background: the end itself is
    /// already recorded, and the retention purge removes what a hook could not.
    pub fn when_ended(&self, kind: &'static str, hook: EndHook) {
        let mut hooks = self
            .end_hooks
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        hooks.insert(kind, hook);
    }

    /// Runs the end hook of the row's kind, if any, in a task of its own.
    pub(crate) fn ended(&self, row: &JobRow) {
        let hook = self
            .end_hooks
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(row.kind.as_str())
            .cloned();
        if let Some(hook) = hook {
            tokio::spawn(hook(row.clone()));
        }
    }

    /// Where job runs and uploads are counted.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    pub fn events(&self) -> &JobEvents {
        &self.events
    }

    pub fn config(&self) -> &JobsConfig {
        &self.config
    }

    /// Queues a job, or returns the job created with the same `request_id` in the last
    /// 24 hours.
    pub async fn enqueue(&self, job: NewJob) -> Result<Enqueued, QueueError> {
        self.enqueue_guarded(job, None, |_| Box::pin(async { Ok(()) }))
            .await
    }

    /// Like [`Queue::enqueue`], with `guard` run first in the same transaction, while
    /// the organization's creations of this kind are serialised (an advisory lock on
    /// PostgreSQL, the write lock on SQLite): conflict and quota checks cannot race.
    /// A new job is recorded in the audit trail as `actor`'s, in the same
    /// transaction (a retry answered with the first job changes nothing and records
    /// nothing).
    pub async fn enqueue_guarded<E, G>(
        &self,
        job: NewJob,
        actor: Option<Actor>,
        guard: G,
    ) -> Result<Enqueued, E>
    where
        E: From<QueueError> + From<DbError> + Send + 'static,
        G: for<'c> FnOnce(&'c mut Conn) -> BoxFuture<'c, Result<(), E>> + Send + 'static,
    {
        let max_attempts = self.config.max_attempts as i32;
        let outcome = self
            .db
            .transaction(move |conn| {
                Box::pin(async move {
                    let now = now_ms();
                    jobs::lock_creations(conn, &job.organization_id, &job.kind)
                        .await
                        .map_err(QueueError::from)?;
                    if let Some(request_id) = &job.request_id {
                        let since = now - REQUEST_ID_WINDOW_MS;
                        let existing = jobs::find_by_request_id(
                            conn,
                            &job.organization_id,
                            &job.kind,
                            request_id,
                            since,
                        )
                        .await
                        .map_err(QueueError::from)?;
                        if let Some(existing) = existing {
                            return Ok(Enqueued::Existing(existing));
                        }
                    }
                    guard(conn).await?;
                    let row = JobRow {
                        created_by: actor.as_ref().map(|a| a.principal.clone()),
                        ..new_row(job, max_attempts, now)
                    };
                    jobs::insert(conn, &row).await.map_err(QueueError::from)?;
                    if let Some(actor) = &actor {
                        actor.record(conn, &row.id, audit::OK).await?;
                    }
                    Ok::<_, E>(Enqueued::Created(row))
                })
            })
            .await?;
        if let Enqueued::Created(row) = &outcome {
            let mut conn = self.db.conn().await?;
            self.events.publish(&mut conn, &row.id).await;
        }
        Ok(outcome)
    }

    /// A job of the organization; another organization's job is `NotFound`.
    pub async fn get<K: JobKind>(&self, organization_id: &str, id: &str) -> Result<Job<K>, QueueError> {
        Ok(Job::decode(self.get_row(organization_id, K::KIND, id).await?)?)
    }

    async fn get_row(
        &self,
        organization_id: &str,
        kind: &'static str,
        id: &str,
    ) -> Result<JobRow, QueueError> {
        let mut conn = self.db.conn().await?;
        jobs::find_for_org(&mut conn, organization_id, kind, id)
            .await?
            .ok_or(QueueError::NotFound { kind })
    }

    /// The job of this kind created with `request_id` in the last 24 hours.
    pub async fn find_by_request_id<K: JobKind>(
        &self,
        organization_id: &str,
        request_id: &str,
    ) -> Result<Option<Job<K>>, QueueError> {
        let since = now_ms() - REQUEST_ID_WINDOW_MS;
        let mut conn = self.db.conn().await?;
        match jobs::find_by_request_id(&mut conn, organization_id, K::KIND, request_id, since).await? {
            Some(row) => Ok(Some(Job::decode(row)?)),
            None => Ok(None),
        }
    }

    /// Removes an ended job of the organization, recorded as `actor`'s in the same
    /// transaction; `false` when there was none.
    pub async fn delete<K: JobKind>(
        &self,
        organization_id: &str,
        id: &str,
        actor: Option<&Actor>,
    ) -> Result<bool, QueueError> {
        let (organization, job, actor) = (organization_id.to_string(), id.to_string(), actor.cloned());
        let deleted = self
            .db
            .transaction(move |conn| {
                Box::pin(async move {
                    if !jobs::delete(conn, &organization, &job).await? {
                        return Ok::<_, QueueError>(false);
                    }
                    if let Some(actor) = &actor {
                        actor.record(conn, &job, audit::OK).await?;
                    }
                    Ok(true)
                })
            })
            .await?;
        if deleted {
            let mut conn = self.db.conn().await?;
            self.events.publish(&mut conn, id).await;
        }
        Ok(deleted)
    }

    /// Cancels a queued job at once; a running job is flagged and its worker stops it
    /// within a heartbeat (at once when this process runs it). A job that already
    /// ended is `AlreadyFinished`. The cancel is recorded as `actor`'s in the same
    /// transaction.
    pub async fn cancel<K: JobKind>(
        &self,
        organization_id: &str,
        id: &str,
        actor: Option<&Actor>,
    ) -> Result<Job<K>, QueueError> {
        let job = self.get_row(organization_id, K::KIND, id).await?;
        if job.is_terminal() {
            return Err(QueueError::AlreadyFinished {
                kind: K::KIND,
                state: job.state,
            });
        }
        // Run here: it stops at its next check whatever the write below waits for
        // (on SQLite, the job's own batch holds the write lock).
        self.events.stop_local(id, super::context::StopReason::Cancelled);
        let (organization, job, actor) = (organization_id.to_string(), id.to_string(), actor.cloned());
        let row = self
            .db
            .transaction(move |conn| {
                Box::pin(async move {
                    let row = jobs::request_cancel(conn, &organization, &job, now_ms())
                        .await?
                        .ok_or(QueueError::NotFound { kind: K::KIND })?;
                    if matches!(row.state, JobState::Completed | JobState::Failed) {
                        // It ended between the read and the cancel.
                        return Err(QueueError::AlreadyFinished {
                            kind: K::KIND,
                            state: row.state,
                        });
                    }
                    if let Some(actor) = &actor {
                        actor.record(conn, &job, audit::OK).await?;
                    }
                    Ok(row)
                })
            })
            .await?;
        if row.is_terminal() {
            self.ended(&row);
        }
        let mut conn = self.db.conn().await?;
        self.events.publish(&mut conn, id).await;
        Ok(Job::decode(row)?)
    }

    /// One page of the organization's jobs of a kind, and the total count.
    pub async fn list<K: JobKind>(
        &self,
        organization_id: &str,
        page: &JobPage,
    ) -> Result<(Vec<Job<K>>, i64), QueueError> {
        let mut conn = self.db.conn().await?;
        let rows = jobs::list(&mut conn, organization_id, K::KIND, page).await?;
        let total = jobs::count(&mut conn, organization_id, K::KIND, &page.filter).await?;
        let jobs = rows.into_iter().map(Job::decode).collect::<Result<_, _>>()?;
        Ok((jobs, total))
    }

    /// Up to `limit` completed jobs of a kind whose output expired by now, each
    /// decoded (one that cannot be is logged and skipped: it is not this build's).
    pub async fn due_for_expiry<K: JobKind>(&self, limit: i64) -> Result<Vec<Job<K>>, QueueError> {
        let rows = jobs::due_for_expiry(&mut self.db.conn().await?, K::KIND, now_ms(), limit).await?;
        Ok(rows
            .into_iter()
            .filter_map(|row| {
                Job::decode(row)
                    .inspect_err(|e| tracing::error!(error = %e, "cannot expire a job"))
                    .ok()
            })
            .collect())
    }

    /// A completed job's output, replaced (its expiry cleared); `false` if it is no
    /// longer completed. Watchers hear of it.
    pub async fn replace_output<K: JobKind>(&self, id: &str, output: &K::Output) -> Result<bool, QueueError> {
        let result = serde_json::to_string(output)
            .map_err(|e| QueueError::from(diesel::result::Error::SerializationError(Box::new(e))))?;
        let mut conn = self.db.conn().await?;
        if jobs::replace_output(&mut conn, id, &result, now_ms()).await? == 0 {
            return Ok(false);
        }
        self.events.publish(&mut conn, id).await;
        Ok(true)
    }

    /// COMPLETED -> EXPIRED once the job's output is gone; `false` if it changed
    /// meanwhile.
    pub async fn mark_expired(&self, id: &str) -> Result<bool, QueueError> {
        let mut conn = self.db.conn().await?;
        if jobs::mark_expired(&mut conn, id, now_ms()).await? == 0 {
            return Ok(false);
        }
        self.events.publish(&mut conn, id).await;
        Ok(true)
    }

    /// How many jobs of a kind the organization has queued or running, on the
    /// caller's connection (an enqueue guard counts inside its transaction).
    pub async fn count_active<K: JobKind>(conn: &mut Conn, organization_id: &str) -> Result<i64, DbError> {
        Ok(jobs::count_active(conn, organization_id, K::KIND).await?)
    }

    /// A queued or running job of a kind with this dedupe key, on the caller's
    /// connection.
    pub async fn active_duplicate<K: JobKind>(
        conn: &mut Conn,
        organization_id: &str,
        dedupe_key: &str,
    ) -> Result<Option<JobRow>, DbError> {
        Ok(jobs::find_active_duplicate(conn, organization_id, K::KIND, dedupe_key).await?)
    }

    /// The job's current state, then every change, ending after a terminal state.
    /// Subscribes before reading, so no change is lost in between; the first state
    /// comes from the job's topic, read once for all watchers that arrive together.
    /// Each stream holds one of the server's watcher slots while it lives. Rows
    /// come undecoded: the watchers of one job share one decoding of each state
    /// ([`Job::decode`], by whoever renders it first).
    pub async fn watch<K: JobKind>(
        &self,
        organization_id: &str,
        id: &str,
    ) -> Result<impl Stream<Item = Result<Arc<JobRow>, QueueError>> + Send + 'static, QueueError> {
        let permit = self.events.watcher_permit()?;
        let (receiver, latest) = self.events.subscribe(id);
        let first = latest
            .current(&self.db, id)
            .await?
            .filter(|row| row.organization_id == organization_id && row.kind == K::KIND)
            .ok_or(QueueError::NotFound { kind: K::KIND })?;
        let state = WatchState {
            pending: Some(first),
            receiver,
            latest,
            last_version: -1,
            done: false,
            _permit: permit,
        };
        Ok(futures::stream::unfold(state, |mut st| async move {
            if st.done {
                return None;
            }
            let item = match st.pending.take() {
                Some(row) => Ok(row),
                None => st.next_change().await?,
            };
            match &item {
                Ok(row) => {
                    st.last_version = row.version;
                    st.done = row.is_terminal();
                }
                Err(_) => st.done = true,
            }
            Some((item, st))
        }))
    }
}

struct WatchState {
    pending: Option<Arc<JobRow>>,
    receiver: tokio::sync::broadcast::Receiver<Arc<JobRow>>,
    latest: Arc<Latest>,
    last_version: i64,
    done: bool,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl WatchState {
    /// The next newer state of the job; `None` when the event source closed. States
    /// that queued up while this watcher was busy are skipped for the newest one: a
    /// watcher behind by three progress steps sends one message, not three, which
    /// keeps 10,000 watchers of one job from building a backlog.
    async fn next_change(&mut self) -> Option<Result<Arc<JobRow>, QueueError>> {
        loop {
            match self.receiver.recv().await {
                Ok(row) if row.version > self.last_version => return Some(Ok(self.newest_queued(row))),
                Ok(_) => continue,
                Err(RecvError::Lagged(_)) => {
                    // Too slow to see every step: the newest state read will do.
                    match self.latest.get().await {
                        Some(row) if row.version > self.last_version => return Some(Ok(row)),
                        _ => continue,
                    }
                }
                Err(RecvError::Closed) => return None,
            }
        }
    }

    /// `row`, or a newer state already waiting behind it.
    fn newest_queued(&mut self, mut row: Arc<JobRow>) -> Arc<JobRow> {
        loop {
            match self.receiver.try_recv() {
                Ok(next) if next.version > row.version => row = next,
                Ok(_) => {}
                // Lagged: the next recv reports it; empty or closed: nothing newer.
                Err(_) => return row,
            }
        }
    }
}
