//! What a running job sees: its row, the database, progress reporting fenced by its
//! lease, and the signal to stop (cancelled, lease lost, or shutting down).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::{JobError, JobEvents};
use crate::db::jobs::{self, JobRow};
use crate::db::{Db, now_ms};

/// Progress is written at most this often (watchers see at most 2 updates a second).
const PROGRESS_INTERVAL: Duration = Duration::from_millis(500);

/// Why a running job must stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    Cancelled,
    LeaseLost,
    Shutdown,
}

#[derive(Clone)]
pub struct JobContext {
    job: Arc<JobRow>,
    lease_id: Arc<str>,
    db: Db,
    events: JobEvents,
    stop: CancellationToken,
    /// The process's shutdown, read directly by [`JobContext::check`]: relayed by
    /// the heartbeat task alone, the signal reached a busy import late (on a
    /// loaded machine it wrote on for seconds after SIGTERM).
    shutdown: CancellationToken,
    reason: Arc<Mutex<Option<StopReason>>>,
    last_progress: Arc<Mutex<Option<Instant>>>,
    /// The latest rows and bytes reported (throttled writes included), for the
    /// run's metrics.
    reported: Arc<Mutex<(i64, i64)>>,
}

impl JobContext {
    pub(crate) fn new(job: JobRow, lease_id: &str, db: Db, events: JobEvents) -> JobContext {
        JobContext {
            job: Arc::new(job),
            lease_id: Arc::from(lease_id),
            db,
            events,
            stop: CancellationToken::new(),
            shutdown: CancellationToken::new(),
            reason: Arc::new(Mutex::new(None)),
            last_progress: Arc::new(Mutex::new(None)),
            reported: Arc::new(Mutex::new((0, 0))),
        }
    }

    /// Stops the job when `shutdown` is cancelled, seen at the job's next check.
    pub(crate) fn stops_on(mut self, shutdown: &CancellationToken) -> JobContext {
        self.shutdown = shutdown.clone();
        self
    }

    pub fn job(&self) -> &JobRow {
        &self.job
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    pub fn events(&self) -> &JobEvents {
        &self.events
    }

    pub fn lease_id(&self) -> &str {
        &self.lease_id
    }

    /// Resolves when the job must stop; use in `select!` around long waits.
    pub async fn stopped(&self) {
        tokio::select! {
            _ = self.stop.cancelled() => {}
            _ = self.shutdown.cancelled() => {}
        }
    }

    /// `Err` once the job must stop: call between batches.
    pub fn check(&self) -> Result<(), JobError> {
        match self.stop_reason() {
            None => Ok(()),
            Some(StopReason::Cancelled) => Err(JobError::Cancelled),
            Some(StopReason::LeaseLost) => Err(JobError::LeaseLost),
            Some(StopReason::Shutdown) => Err(JobError::Shutdown),
        }
    }

    /// Rows done, for the run's metrics only: for handlers whose progress is
    /// written by other means (the import's batch transactions).
    pub fn note_rows(&self, rows_done: i64) {
        self.reported.lock().unwrap_or_else(PoisonError::into_inner).0 = rows_done;
    }

    /// Rows and bytes this run reported last (zero when it reported nothing).
    pub fn reported(&self) -> (u64, u64) {
        let (rows, bytes) = *self.reported.lock().unwrap_or_else(PoisonError::into_inner);
        (
            u64::try_from(rows).unwrap_or(0),
            u64::try_from(bytes).unwrap_or(0),
        )
    }

    pub fn stop_reason(&self) -> Option<StopReason> {
        let reason = *self.reason.lock().unwrap_or_else(PoisonError::into_inner);
        reason.or_else(|| self.shutdown.is_cancelled().then_some(StopReason::Shutdown))
    }

    /// Asks the job to stop; the first reason wins.
    pub(crate) fn request_stop(&self, reason: StopReason) {
        let mut current = self.reason.lock().unwrap_or_else(PoisonError::into_inner);
        if current.is_none() {
            *current = Some(reason);
        }
        self.stop.cancel();
    }

    /// Reports progress; written at most every 500 ms unless `force`. Fails with
    /// `LeaseLost` when another worker owns the job.
    pub async fn progress(
        &self,
        rows_done: i64,
        rows_total: Option<i64>,
        bytes_done: i64,
        force: bool,
    ) -> Result<(), JobError> {
        *self.reported.lock().unwrap_or_else(PoisonError::into_inner) = (rows_done, bytes_done);
        {
            let mut last = self.last_progress.lock().unwrap_or_else(PoisonError::into_inner);
            if !force && last.is_some_and(|t| t.elapsed() < PROGRESS_INTERVAL) {
                return Ok(());
            }
            *last = Some(Instant::now());
        }
        let mut conn = self.db.conn().await?;
        let written = jobs::update_progress(
            &mut conn,
            &self.job.id,
            &self.lease_id,
            rows_done,
            rows_total,
            bytes_done,
            now_ms(),
        )
        .await?;
        if written == 0 {
            self.request_stop(StopReason::LeaseLost);
            return Err(JobError::LeaseLost);
        }
        self.events.publish(&mut conn, &self.job.id).await;
        Ok(())
    }

    /// Tells the watchers of job `id` (this one or another) that it changed; best
    /// effort, like every publish.
    pub async fn publish(&self, id: &str) {
        if let Ok(mut conn) = self.db.conn().await {
            self.events.publish(&mut conn, id).await;
        }
    }

    /// Another job's row, whatever its state (a notification reads the job it
    /// tells about).
    pub async fn find_job(&self, id: &str) -> Result<Option<JobRow>, JobError> {
        Ok(jobs::find(&mut self.db.conn().await?, id).await?)
    }

    /// Records where the job stands (rows done and its output so far), fenced by the
    /// lease: `LeaseLost` when another worker owns the job.
    pub async fn checkpoint(&self, rows_done: i64, output: &impl serde::Serialize) -> Result<(), JobError> {
        self.note_rows(rows_done);
        let json = serde_json::to_string(output).map_err(|e| JobError::Permanent {
            reason: "INVALID_RESULT".into(),
            message: e.to_string(),
        })?;
        let mut conn = self.db.conn().await?;
        if jobs::checkpoint(
            &mut conn,
            &self.job.id,
            &self.lease_id,
            rows_done,
            &json,
            now_ms(),
        )
        .await?
            == 0
        {
            self.request_stop(StopReason::LeaseLost);
            return Err(JobError::LeaseLost);
        }
        self.events.publish(&mut conn, &self.job.id).await;
        Ok(())
    }
}
