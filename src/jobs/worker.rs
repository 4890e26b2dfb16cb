//! The worker loop: claim a job, hold its lease by heartbeat, run its handler, and
//! record how it ended with writes fenced by the lease. Also the reaper, which
//! returns jobs of dead workers to the queue.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::context::StopReason;
use super::{JobContext, JobError, JobFailure, JobOutcome, NewJob, Queue, Registry};
use crate::db::jobs::{self, JobRow, JobState};
use crate::db::{Backend, liveness, new_id, now_ms};

pub struct Worker {
    queue: Queue,
    kinds: Registry,
    owner: String,
}

impl Worker {
    /// A worker for the given job kinds; `owner` names this process in leases.
    pub fn new(queue: Queue, kinds: Registry) -> Worker {
        // On PostgreSQL the owner announces its liveness with a lock (see `run`).
        let live = if queue.db().backend() == Backend::Postgres {
            liveness::LIVE_PREFIX
        } else {
            ""
        };
        let owner = format!(
            "{live}{}:{}:{}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "ferry".into()),
            std::process::id(),
            &new_id()[24..]
        );
        Worker { queue, kinds, owner }
    }

    /// Names the process instance (its temp folder, [`crate::scratch`]) in this
    /// worker's leases, so the next process on the same data folder can take its
    /// jobs back at once if it dies.
    pub fn in_instance(mut self, instance: &str) -> Worker {
        self.owner = format!("{}@{instance}", self.owner);
        self
    }

    /// Runs jobs until `shutdown`; then stops claiming, tells running jobs to stop and
    /// returns their leases so another replica can take them at once. Each lane
    /// ([`super::Lane`]) claims its own kinds with its own slots.
    pub async fn run(self, shutdown: CancellationToken) {
        let reaper = tokio::spawn(reap_forever(self.queue.clone(), shutdown.clone()));
        let live = self.hold_liveness(shutdown.clone());
        let lanes = self.kinds.lanes();
        let config = self.queue.config().clone();
        let this = Arc::new(self);
        let mut loops = JoinSet::new();
        for (lane, kinds) in lanes {
            let slots = lane.workers(&config) as usize;
            tracing::debug!(lane = lane.name(), slots, ?kinds, "worker lane starts");
            loops.spawn(
                this.clone()
                    .claim_loop(kinds, slots, live.clone(), shutdown.clone()),
            );
        }
        while loops.join_next().await.is_some() {}
        let _ = reaper.await;
    }

    /// Claims and runs jobs of `kinds`, at most `slots` at once, until `shutdown`;
    /// then waits for its running jobs to hand back.
    async fn claim_loop(
        self: Arc<Self>,
        kinds: Vec<String>,
        slots: usize,
        live: watch::Receiver<bool>,
        shutdown: CancellationToken,
    ) {
        let slots = Arc::new(Semaphore::new(slots));
        let poll = Duration::from_millis(self.queue.config().poll_millis);
        let mut running = JoinSet::new();
        loop {
            // Claim only while the liveness lock is held: without it another replica
            // would take the job back at once.
            if !wait_until_live(&live, &shutdown).await {
                break;
            }
            let permit = tokio::select! {
                _ = shutdown.cancelled() => break,
                permit = slots.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
            };
            // Register for wake-ups before looking, so a job queued meanwhile is seen.
            let events = self.queue.events().clone();
            let wakeup = events.wakeup();
            tokio::pin!(wakeup);
            wakeup.as_mut().enable();
            match self.claim(&kinds).await {
                Ok(Some((job, lease_id))) => {
                    let worker = self.clone();
                    let stop = shutdown.clone();
                    running.spawn(async move {
                        worker.run_job(job, lease_id, stop).await;
                        drop(permit);
                    });
                    continue;
                }
                Ok(None) => {}
                Err(err) => tracing::warn!(error = %err, "could not claim a job"),
            }
            drop(permit);
            while running.try_join_next().is_some() {}
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = &mut wakeup => {}
                _ = tokio::time::sleep(poll) => {}
            }
        }
        while running.join_next().await.is_some() {}
    }

    /// On PostgreSQL, holds this worker's liveness lock until `shutdown`; the flag
    /// says whether it is held now. Losing it stops every running job and hands it
    /// back, as a shutdown does: another replica may take them from that moment.
    /// Elsewhere always live.
    fn hold_liveness(&self, shutdown: CancellationToken) -> watch::Receiver<bool> {
        if self.queue.db().backend() != Backend::Postgres {
            return watch::channel(true).1;
        }
        let (live, receiver) = watch::channel(false);
        let (url, owner, events) = (
            self.queue.db().url().to_string(),
            self.owner.clone(),
            self.queue.events().clone(),
        );
        tokio::spawn(async move {
            liveness::hold(
                &url,
                &owner,
                shutdown,
                || {
                    live.send_replace(true);
                },
                || {
                    live.send_replace(false);
                    // Handed back like at shutdown (fenced by the lease, so a
                    // replica that took a job meanwhile keeps it).
                    events.stop_all_local(StopReason::Shutdown);
                },
            )
            .await
        });
        receiver
    }

    async fn claim(&self, kinds: &[String]) -> Result<Option<(JobRow, String)>, crate::db::DbError> {
        // Between losing the liveness lock and noticing it, a claim would be taken
        // back by the next reaper at once, burning an attempt each time.
        if liveness::is_live_owner(&self.owner)
            && !liveness::is_alive(&mut self.queue.db().conn().await?, &self.owner).await?
        {
            return Ok(None);
        }
        let lease_id = new_id();
        let lease_for_ms = self.queue.config().lease_secs as i64 * 1000;
        let job = jobs::claim_next(
            self.queue.db(),
            kinds,
            &self.owner,
            &lease_id,
            lease_for_ms,
            now_ms(),
        )
        .await?;
        if let Some(job) = &job {
            let mut conn = self.queue.db().conn().await?;
            self.queue.events().publish(&mut conn, &job.id).await;
        }
        Ok(job.map(|j| (j, lease_id)))
    }

    /// Runs one claimed job to its end, however it ends, inside the job's span: every
    /// line it logs (the job's own task and its heartbeat included) carries `job.id`.
    /// The span is attached with `instrument`, never entered across an await: an
    /// entered guard would stay on the worker thread and mark whatever else runs
    /// there (unrelated gRPC calls) as part of the job.
    async fn run_job(&self, job: JobRow, lease_id: String, shutdown: CancellationToken) {
        let span = tracing::info_span!("job", job.id = %job.id, job.kind = %job.kind, org.id = %job.organization_id, attempt = job.attempts);
        self.run_in_span(job, lease_id, shutdown, span.clone())
            .instrument(span)
            .await
    }

    async fn run_in_span(
        &self,
        job: JobRow,
        lease_id: String,
        shutdown: CancellationToken,
        span: tracing::Span,
    ) {
        tracing::info!("job started");
        let started = std::time::Instant::now();
        let ctx = JobContext::new(
            job.clone(),
            &lease_id,
            self.queue.db().clone(),
            self.queue.events().clone(),
        )
        .stops_on(&shutdown);
        if job.cancel_requested {
            ctx.request_stop(StopReason::Cancelled);
        }
        let Some(run) = self.kinds.run(ctx.clone()) else {
            return;
        };
        self.queue.events().running(&ctx);
        let heartbeat =
            tokio::spawn(heartbeat(self.queue.clone(), ctx.clone(), shutdown).instrument(span.clone()));
        let task = tokio::spawn(run.instrument(span));
        let result = match task.await {
            Ok(result) => result,
            Err(join) => Err(JobError::Transient(format!("the job's task failed: {join}"))),
        };
        heartbeat.abort();
        self.queue.events().finished_running(&job.id);
        // A handler that finished its work after a stop was asked still counts as done.
        let result = match (result, ctx.stop_reason()) {
            (Err(JobError::Transient(_)), Some(StopReason::Cancelled)) => Err(JobError::Cancelled),
            (Err(JobError::Transient(_)), Some(StopReason::Shutdown)) => Err(JobError::Shutdown),
            (other, _) => other,
        };
        let (rows, bytes) = ctx.reported();
        let outcome = outcome_name(&result, job.attempts < job.max_attempts);
        self.queue
            .metrics()
            .record_job_run(&job.kind, outcome, started.elapsed(), rows, bytes);
        if let Err(err) = self.record(&job, &lease_id, result).await {
            tracing::error!(error = %err, "could not record how the job ended; its lease will expire and it will run again");
        }
    }

    async fn record(
        &self,
        job: &JobRow,
        lease_id: &str,
        result: Result<JobOutcome, JobError>,
    ) -> Result<(), crate::db::DbError> {
        // Each step checks out its own connection and returns it: holding one here
        // while `finish` took a second (and a third for the follow-up's event) let
        // workers ending jobs together exhaust the pool and wait out its timeout.
        let now = now_ms();
        let written = match result {
            Ok(outcome) => {
                tracing::info!("job completed");
                let end = Ending {
                    state: JobState::Completed,
                    result: outcome.result.map(|v| v.to_string()),
                    error: None,
                    expires_at: outcome.expires_at,
                    follow_up: outcome.follow_up,
                };
                self.finish(job, lease_id, end, now).await?
            }
            Err(JobError::Cancelled) => {
                tracing::info!("job cancelled");
                let end = Ending {
                    state: JobState::Cancelled,
                    result: None,
                    error: None,
                    expires_at: None,
                    follow_up: None,
                };
                self.finish(job, lease_id, end, now).await?
            }
            Err(JobError::Shutdown) => {
                tracing::info!("job returned to the queue for another worker");
                let mut conn = self.queue.db().conn().await?;
                jobs::requeue(&mut conn, &job.id, lease_id, 0, None, true, now).await?
            }
            Err(JobError::LeaseLost) => {
                tracing::warn!("job lost its lease to another worker; its result is dropped");
                0
            }
            Err(JobError::Deferred { after, why }) => {
                let delay = crate::db::millis(after);
                tracing::info!(reason = %why, retry_in_ms = delay, "job deferred; the attempt is not counted");
                let error = failure_json(tonic::Code::Unavailable, "DEFERRED", &why);
                let mut conn = self.queue.db().conn().await?;
                jobs::requeue(&mut conn, &job.id, lease_id, delay, Some(&error), true, now).await?
            }
            Err(JobError::Transient(message)) if job.attempts < job.max_attempts => {
                let delay = backoff(self.queue.config(), job.attempts);
                tracing::warn!(error = %message, retry_in_ms = delay, "job failed; will retry");
                let error = failure_json(tonic::Code::Unavailable, "TRANSIENT_ERROR", &message);
                let mut conn = self.queue.db().conn().await?;
                jobs::requeue(&mut conn, &job.id, lease_id, delay, Some(&error), false, now).await?
            }
            Err(err @ (JobError::Transient(_) | JobError::Permanent { .. })) => {
                let (code, reason, message) = match err {
                    JobError::Permanent { reason, message } => {
                        (tonic::Code::FailedPrecondition, reason, message)
                    }
                    other => (
                        tonic::Code::Unavailable,
                        "RETRIES_EXHAUSTED".to_string(),
                        other.to_string(),
                    ),
                };
                tracing::error!(error = %message, reason = %reason, "job failed");
                let end = Ending {
                    state: JobState::Failed,
                    result: None,
                    error: Some(failure_json(code, &reason, &message)),
                    expires_at: None,
                    follow_up: self.kinds.on_failure(job),
                };
                self.finish(job, lease_id, end, now).await?
            }
        };
        if written > 0 {
            let mut conn = self.queue.db().conn().await?;
            self.queue.events().publish(&mut conn, &job.id).await;
        }
        Ok(())
    }
}

/// The run's ending as the metrics label it (the same split as `record`).
fn outcome_name(result: &Result<JobOutcome, JobError>, may_retry: bool) -> &'static str {
    match result {
        Ok(_) => "completed",
        Err(JobError::Cancelled) => "cancelled",
        Err(JobError::Shutdown) => "handed_back",
        Err(JobError::Deferred { .. }) => "deferred",
        Err(JobError::LeaseLost) => "lease_lost",
        Err(JobError::Transient(_)) if may_retry => "retry",
        Err(JobError::Transient(_) | JobError::Permanent { .. }) => "failed",
    }
}

/// How a held job ends.
struct Ending {
    state: JobState,
    result: Option<String>,
    error: Option<String>,
    expires_at: Option<i64>,
    follow_up: Option<NewJob>,
}

impl Worker {
    /// Ends a held job and queues its follow-up in the same transaction: the
    /// follow-up exists exactly when the job ended, even if this process dies.
    async fn finish(
        &self,
        job: &JobRow,
        lease_id: &str,
        end: Ending,
        now: i64,
    ) -> Result<usize, crate::db::DbError> {
        let (id, lease_id) = (job.id.clone(), lease_id.to_string());
        let max_attempts = self.queue.config().max_attempts as i32;
        let follow_up_row = end.follow_up.map(|f| super::queue::new_row(f, max_attempts, now));
        let follow_up_id = follow_up_row.as_ref().map(|r| r.id.clone());
        let written = self
            .queue
            .db()
            .transaction(move |conn| {
                Box::pin(async move {
                    let written = jobs::finish(
                        conn,
                        &id,
                        &lease_id,
                        end.state,
                        end.result.as_deref(),
                        end.error.as_deref(),
                        end.expires_at,
                        now,
                    )
                    .await?;
                    if written > 0
                        && let Some(row) = &follow_up_row
                    {
                        jobs::insert(conn, row).await?;
                    }
                    Ok::<_, crate::db::DbError>(written)
                })
            })
            .await?;
        if written > 0 {
            self.queue.ended(job);
        }
        if written > 0
            && let Some(id) = follow_up_id
        {
            let mut conn = self.queue.db().conn().await?;
            self.queue.events().publish(&mut conn, &id).await;
        }
        Ok(written)
    }
}

/// Renews the lease every heartbeat; turns cancellation, lease loss and shutdown into
/// the job's stop signal.
async fn heartbeat(queue: Queue, ctx: JobContext, shutdown: CancellationToken) {
    let config = queue.config().clone();
    let every = Duration::from_millis(config.heartbeat_millis);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => {
                ctx.request_stop(StopReason::Shutdown);
                return;
            }
            _ = tokio::time::sleep(every) => {}
        }
        let lease_for_ms = config.lease_secs as i64 * 1000;
        let renew = async {
            let mut conn = queue.db().conn().await?;
            Ok::<_, crate::db::DbError>(
                jobs::renew_lease(&mut conn, &ctx.job().id, ctx.lease_id(), lease_for_ms).await,
            )
        };
        // The renewal can wait for the database (on SQLite, behind the job's own
        // batch); a shutdown meanwhile must still stop the job at once.
        let renewed = tokio::select! {
            _ = shutdown.cancelled() => {
                ctx.request_stop(StopReason::Shutdown);
                return;
            }
            renewed = renew => match renewed {
                Ok(renewed) => renewed,
                Err(err) => {
                    tracing::warn!(error = %err, "heartbeat could not reach the database");
                    continue;
                }
            },
        };
        match renewed {
            Ok(Some(true)) => ctx.request_stop(StopReason::Cancelled),
            Ok(Some(false)) => {}
            Ok(None) => {
                ctx.request_stop(StopReason::LeaseLost);
                return;
            }
            Err(err) => tracing::warn!(error = %err, "heartbeat failed"),
        }
    }
}

/// Waits until the worker holds its liveness lock; false when shutting down first.
async fn wait_until_live(live: &watch::Receiver<bool>, shutdown: &CancellationToken) -> bool {
    let mut live = live.clone();
    tokio::select! {
        _ = shutdown.cancelled() => false,
        held = live.wait_for(|held| *held) => held.is_ok(),
    }
}

/// Returns expired leases (and on PostgreSQL those of dead owners) to the queue and
/// frees old idempotency keys, every poll (on PostgreSQL at least every second, the
/// bound on rescuing a dead replica's jobs).
async fn reap_forever(queue: Queue, shutdown: CancellationToken) {
    let poll = queue.config().poll_millis;
    let every = Duration::from_millis(match queue.db().backend() {
        Backend::Postgres => poll.min(1000),
        Backend::Sqlite => poll,
    });
    loop {
        if let Err(err) = reap_once(&queue).await {
            tracing::warn!(error = %err, "reaper failed");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// One pass of the reaper; returns the ids of the jobs it changed.
pub async fn reap_once(queue: &Queue) -> Result<Vec<String>, crate::db::DbError> {
    let mut conn = queue.db().conn().await?;
    let now = now_ms();
    let lost = failure_json(
        tonic::Code::Aborted,
        "WORKER_LOST",
        "the worker running the job stopped responding",
    );
    // On PostgreSQL: a job whose owner's process is gone needs no lease to expire.
    let live_owners = match queue.db().backend() {
        Backend::Postgres => jobs::live_owners_of_running_jobs(&mut conn).await?,
        Backend::Sqlite => Vec::new(),
    };
    for owner in live_owners {
        if !liveness::is_alive(&mut conn, &owner).await? {
            let expired = jobs::expire_leases_of(&mut conn, &owner).await?;
            tracing::warn!(owner = %owner, jobs = expired, "the worker holding these jobs is gone; taking them back");
        }
    }
    let ids = jobs::reap_expired_leases(&mut conn, now, &lost).await?;
    for id in &ids {
        tracing::warn!(job.id = %id, "reclaimed a job whose worker stopped renewing its lease");
        queue.events().publish(&mut conn, id).await;
    }
    jobs::release_request_ids(&mut conn, now - super::queue::REQUEST_ID_WINDOW_MS).await?;
    Ok(ids)
}

/// Delay before retry `attempt` (1-based): base × 2^(attempt-1), capped.
pub fn backoff(config: &crate::config::JobsConfig, attempt: i32) -> i64 {
    let exponent = attempt.clamp(1, 20) as u32 - 1;
    let delay = config.retry_base_millis.saturating_mul(1 << exponent);
    delay.min(config.retry_max_secs * 1000) as i64
}

pub fn failure_json(code: tonic::Code, reason: &str, message: &str) -> String {
    serde_json::to_string(&JobFailure {
        code: code as i32,
        reason: reason.to_string(),
        message: message.to_string(),
    })
    .unwrap_or_default()
}
